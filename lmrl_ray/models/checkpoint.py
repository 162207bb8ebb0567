"""Loading a policy (the embedded "tiny" or a local Hugging Face folder) and saving checkpoints.

A checkpoint is a Hugging Face folder: `save_pretrained` of the model and the tokenizer,
weights as safetensors only (nothing is ever pickled or unpickled), plus `heads.safetensors`
when the learner has heads. Folders are written atomically: into a temporary sibling
folder, renamed into place once complete.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from lmrl_ray.io import write_atomically
from lmrl_ray.models.heads import HEADS_FILE, save_heads
from lmrl_ray.models.tiny import TINY, build_tiny
from lmrl_ray.models.tokenizer import newline_id

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def save_checkpoint(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    path: str | os.PathLike,
    *,
    heads: nn.Module | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write `model` and `tokenizer` (and `heads`, as `heads.safetensors`) to the folder
    `path` atomically; `load_policy(path)` loads the model and tokenizer back. `extra(tmp)`
    writes more files (a learner's training state) into the folder before it appears."""

    def write(tmp: Path) -> None:
        # transformers 5 writes safetensors only; the check keeps it that way.
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if heads is not None:
            save_heads(heads, tmp / HEADS_FILE)
        if extra is not None:
            extra(tmp)
        pickled = sorted(p.name for p in tmp.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            raise RuntimeError(f"save_pretrained wrote pickle file(s) {', '.join(pickled)}; checkpoints are safetensors only")

    return write_atomically(path, write, folder=True)


def _is_causal_lm(config) -> bool:
    # Encoders such as BERT also register a causal-LM class, usable only as a decoder
    # (`is_decoder=True`); a plain encoder config is not a causal language model.
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return False
    return config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES or bool(getattr(config, "is_decoder", False))


def _load_config(path: Path):
    if not path.is_dir():
        raise FileNotFoundError(
            f"model {str(path)!r}: no such folder; --model takes {TINY!r} or a local Hugging Face causal-LM folder"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model folder {str(path)!r} has no config.json; is it a Hugging Face model folder?")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"model folder {str(path)!r}: cannot read config.json: {err}") from err
    if not _is_causal_lm(config):
        raise ValueError(
            f"model folder {str(path)!r}: config.json describes a {config.model_type!r} model, "
            "which is not a causal language model (a policy generates text left to right: GPT-2, Llama, ...)"
        )
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(
            f"model folder {str(path)!r} has no {' or '.join(WEIGHT_FILES)}; lmrl-ray loads safetensors weights only "
            "(never unpickles .bin/.pt files): convert them with save_pretrained"
        )
    return config


def _load_tokenizer(path: Path, pad_with_eos: bool) -> PreTrainedTokenizerFast:
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"model folder {str(path)!r}: cannot load its tokenizer: {err}") from err
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ValueError(
            f"model folder {str(path)!r}: its tokenizer ({type(tokenizer).__name__}) is not a fast (tokenizers) tokenizer; "
            "add a tokenizer.json"
        )
    if tokenizer.pad_token is None:
        if not pad_with_eos or tokenizer.eos_token is None:
            raise ValueError(
                f"model folder {str(path)!r}: the tokenizer has no pad token; add one to the folder "
                "(tokenizer.pad_token = ..., save_pretrained) or load with pad_with_eos=True to pad with its eos token"
                + ("" if tokenizer.eos_token is None else f" {tokenizer.eos_token!r}")
            )
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("%s: padding with the eos token %r (pad_with_eos=True)", path, tokenizer.eos_token)
    return tokenizer


def load_policy(
    model: str | os.PathLike = TINY,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    pad_with_eos: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A causal language model and its fast tokenizer, ready to generate on `device`.

    `model` is "tiny" (the embedded default, built on first use into the cache; a folder
    named tiny is "./tiny") or the path of a local Hugging Face causal-LM folder with
    safetensors weights and a fast tokenizer. Nothing is downloaded.

    `dtype` is float32 unless asked (transformers 5 would otherwise keep the checkpoint's
    dtype): RL's log-prob ratios want full precision on CPU. A tokenizer without a pad
    token is an error unless `pad_with_eos` (GPT-2's own tokenizer has none), since
    padding with eos would silently mask the eos tokens of any sequence built from
    `input_ids == pad_token_id`. The newline must be one token (`newline_id`).
    """
    if isinstance(model, str) and model == TINY:
        path = build_tiny()
    else:
        path = Path(model).expanduser()
    config = _load_config(path)
    tokenizer = _load_tokenizer(path, pad_with_eos)
    newline_id(tokenizer)
    lm = AutoModelForCausalLM.from_pretrained(path, config=config, local_files_only=True, use_safetensors=True, dtype=dtype)
    rows = lm.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ValueError(f"model folder {str(path)!r}: the tokenizer has {len(tokenizer)} tokens but the model embeds only {rows}")
    # generate() and the collate read the pad id from the model's configs.
    lm.config.pad_token_id = tokenizer.pad_token_id
    if lm.generation_config is not None:
        lm.generation_config.pad_token_id = tokenizer.pad_token_id
    return lm.to(device), tokenizer
