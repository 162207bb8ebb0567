"""Engine selection: one call builds the Hugging Face or the vLLM engine.

    engine = make_engine("auto", "tiny")   # vLLM on a CUDA machine with vLLM, else HF

`functools.partial(make_engine, kind, model, ...)` is the picklable factory an engine
pool takes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import torch

from lmrl_ray.engines.base import Engine
from lmrl_ray.models import TINY

ENGINE_KINDS = ("auto", "hf", "vllm")
VLLM_EXTRA = "pip install 'lmrl-ray[vllm]'"


def vllm_installed() -> bool:
    """Whether vLLM can be imported here. Checked without importing it (an import takes
    seconds and initialises CUDA state)."""
    return importlib.util.find_spec("vllm") is not None


def select_engine_kind(kind: str, *, vllm_available: bool, cuda_available: bool) -> Literal["hf", "vllm"]:
    """The back end `kind` resolves to: "auto" takes vLLM when it is installed and a CUDA
    GPU is visible, and the Hugging Face engine otherwise; "vllm" without either is an
    error that names what is missing (whoever asked for it is relying on it)."""
    if kind not in ENGINE_KINDS:
        raise ValueError(f"unknown engine kind {kind!r}; expected one of {', '.join(ENGINE_KINDS)}")
    if kind == "hf":
        return "hf"
    if kind == "auto":
        return "vllm" if vllm_available and cuda_available else "hf"
    missing = []
    if not vllm_available:
        missing.append(f"vLLM is not installed ({VLLM_EXTRA})")
    if not cuda_available:
        missing.append("no CUDA GPU is visible (torch.cuda.is_available() is False)")
    if missing:
        raise RuntimeError(f"the vLLM engine cannot run here: {'; '.join(missing)}. Use engine kind 'hf' or 'auto'.")
    return "vllm"


def make_engine(
    kind: str = "auto",
    model: str | Path = TINY,
    *,
    device: str | torch.device | None = None,
    vllm_available: bool | None = None,
    cuda_available: bool | None = None,
    **kwargs,
) -> Engine:
    """An engine of `kind` ("auto", "hf" or "vllm") over `model` ("tiny" or a local
    Hugging Face folder).

    `device` places the HF engine (default: CUDA when visible, else CPU); vLLM places
    itself on the GPU, so for it `device` must be None or a CUDA device, and "auto" with
    a non-CUDA device means the HF engine there. `kwargs` go to
    `HFEngine.load` (`guidance`) or `VLLMEngine.load` (`dtype`, `vllm.LLM` arguments).
    `vllm_available` / `cuda_available` default to this machine's; tests pass them.
    """
    if vllm_available is None:
        vllm_available = vllm_installed()
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    off_gpu = device is not None and torch.device(device).type != "cuda"
    # An explicit non-CUDA device is a request for the HF engine there, whatever "auto" finds.
    if kind == "auto" and off_gpu:
        chosen = "hf"
    else:
        chosen = select_engine_kind(kind, vllm_available=vllm_available, cuda_available=cuda_available)
    if chosen == "vllm":
        if off_gpu:
            raise ValueError(f"the vLLM engine runs on a CUDA GPU, not on device {str(device)!r}")
        from lmrl_ray.engines.vllm_engine import VLLMEngine

        return VLLMEngine.load(model, **kwargs)
    from lmrl_ray.engines.hf_engine import HFEngine

    if device is None:
        device = "cuda" if cuda_available else "cpu"
    return HFEngine.load(str(model) if isinstance(model, Path) else model, device=str(device), **kwargs)


__all__ = ["ENGINE_KINDS", "make_engine", "select_engine_kind", "vllm_installed"]
