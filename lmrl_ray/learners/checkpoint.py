"""Training checkpoints: a Hugging Face folder plus what the run needs to go on.

    RUN/checkpoints/step-00000120/
        config.json, model.safetensors, tokenizer files   the policy (`save_pretrained`)
        heads.safetensors                                  ILQL and MC Returns: `ILQLHeads`
        lmrl_ray.json                                      what this is (`CheckpointMeta`)
        training_state.safetensors                         optimizer moments, RNG states
        training_state.json                                step, scheduler, sampler, config

Transformers and vLLM load the folder directly (they ignore our extra files). Every
tensor is safetensors and everything else JSON: nothing is ever pickled. A checkpoint
folder appears whole or not at all (`lmrl_ray.io.write_atomically`), so a run killed at any
moment resumes from the last complete one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

META_FILE = "lmrl_ray.json"
CHECKPOINTS_DIR = "checkpoints"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or not what the caller needs."""


@dataclass(frozen=True)
class CheckpointMeta:
    """The description written beside the weights as `lmrl_ray.json`."""

    algo: str
    """The algorithm that trained it: bc, filtered-bc, mc, ilql (later ppo, online-filtered-bc)."""
    task: str
    """The task of the training data."""
    step: int
    """Optimizer updates taken when it was written."""
    decoding: str = "sample"
    """How its policy acts: "sample" from the language model, or "value-guided", i.e.
    sample from logits + beta * (Q - V) with the heads in `heads.safetensors`."""
    beta: float = 0.0
    """The value-guidance strength for "value-guided" decoding."""
    heads: dict[str, Any] | None = None
    """The heads' class and sizes (`{"class": "ILQLHeads", "width": 256}`), None without heads."""
    config: dict[str, Any] = field(default_factory=dict)
    """The training configuration, for the record."""
    format: int = FORMAT_VERSION


def write_meta(folder: str | os.PathLike, meta: CheckpointMeta) -> None:
    """Write `meta` into a checkpoint folder that is being assembled (not yet renamed)."""
    Path(folder, META_FILE).write_text(json.dumps(asdict(meta), indent=2, sort_keys=True))


def read_meta(folder: str | os.PathLike) -> CheckpointMeta:
    """The `CheckpointMeta` of a checkpoint folder; a clear error naming the file when it
    is missing or malformed."""
    path = Path(folder, META_FILE)
    if not Path(folder).is_dir():
        raise CheckpointError(f"checkpoint {str(folder)!r} does not exist or is not a folder")
    if not path.is_file():
        raise CheckpointError(f"{str(folder)!r} is not an lmrl-ray checkpoint: it has no {META_FILE}")
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format {raw.get('format')!r}, this version reads {FORMAT_VERSION}")
        return CheckpointMeta(**raw)
    except CheckpointError:
        raise
    except (json.JSONDecodeError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: corrupt checkpoint description ({err})") from None


def step_dir(run: str | os.PathLike, step: int) -> Path:
    return Path(run, CHECKPOINTS_DIR, f"step-{step:08d}")


def list_checkpoints(run: str | os.PathLike) -> list[Path]:
    """A run's complete checkpoints, oldest first (temporary folders are never listed)."""
    folder = Path(run, CHECKPOINTS_DIR)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder from either a checkpoint folder or a run folder (its latest)."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    found = list_checkpoints(path)
    if found:
        return found[-1]
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    raise CheckpointError(f"{str(path)!r} is neither a checkpoint (no {META_FILE}) nor a run folder with {CHECKPOINTS_DIR}/step-*")
