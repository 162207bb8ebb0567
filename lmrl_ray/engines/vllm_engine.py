"""The vLLM engine: the `Engine` interface on a CUDA GPU, around `vllm.LLM`.

vLLM is an optional extra (`pip install 'lmrl-ray[vllm]'` on a machine with a CUDA GPU).
It is imported inside `VLLMEngine.load` only, so this module imports anywhere, and the
conversions between our types and vLLM's are plain functions of plain data, tested
without vLLM (`tests/test_vllm_engine.py`).

Written against vLLM's documentation and source of the v0.2x-v0.3x series
(docs.vllm.ai "latest", v0.32.0; `vllm/config/model.py`, `vllm/v1/serial_utils.py`):

- **Token ids in, token ids out.** Prompts are tokenized here, with the policy's own
  tokenizer and the same left truncation as `HFEngine`, and handed to vLLM as
  `{"prompt_token_ids": ...}`; completions are decoded here. vLLM never re-tokenizes,
  so its ids are the ones the learners' collate builds.
- **Stopping.** The newline is vLLM's `stop_token_ids`; vLLM appends a stop token to
  `CompletionOutput.token_ids` (and gives it a log-prob) but leaves it out of the text,
  which is our convention. `ignore_eos=True`: like `HFEngine`, only the newline or the
  length cap ends an utterance, not the model's end-of-text token.
- **Log-probs.** `SamplingParams.logprobs=0` returns the sampled token's log-prob at
  each step. What it is depends on the engine-wide `logprobs_mode`; ModelConfig's
  docstring: "raw means the values before applying any logit processors ... processed
  means the values after applying all processors, including temperature and
  top_k/top_p". `raw_logprobs` (the default, set explicitly here) is the model's own
  distribution at temperature 1, our convention (`base.py`).
- **Choice.** `choose` scores `prompt + candidate + "\\n"` with `prompt_logprobs=0`: vLLM
  returns, for each prompt position after the first, the log-prob of the token there
  given its prefix, so a candidate's score is the sum over its own positions.
- **Weights.** vLLM's weight-transfer API (`WeightTransferConfig`, backends "nccl" and
  "ipc") moves tensors from a trainer's GPU to the engine's; `set_weights` receives a
  state dict in host memory (the object-store transport of `weights.py`), which fits
  `LLM.collective_rpc(method, args=...)` on a worker extension (`worker_extension_cls`)
  that calls the model's own `load_weights`. The arguments of a collective RPC cross
  vLLM's msgpack boundary, where tensors in untyped arguments arrive as raw
  (dtype, shape, buffer) triples, so the state dict travels as one safetensors blob
  (bytes, which msgpack carries as they are; no pickle). The prefix cache is reset
  after every load, or prompts cached under the old weights would be reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from lmrl_ray.engines.base import (
    Completion,
    Engine,
    SamplingParams,
    candidate_sequences,
    check_version,
    encode_prompts,
)
from lmrl_ray.models import TINY, newline_id

# The import path vLLM's workers load the weight-loading extension from.
WORKER_EXTENSION = "lmrl_ray.engines.vllm_engine.WeightLoaderExtension"


# -- Plain conversions (no vLLM) ---------------------------------------------------------


def row_seeds(seed: int | None, rows: int) -> list[int | None]:
    """One seed per request. vLLM seeds each request's generator on its own, so one
    shared seed would make identical prompts in a batch sample identical completions;
    seeds derived from (seed, row) keep the batch reproducible and its rows independent."""
    if seed is None:
        return [None] * rows
    return [int(np.random.SeedSequence([seed, row]).generate_state(1)[0]) for row in range(rows)]


def sampling_kwargs(sampling: SamplingParams, newline: int, rows: int) -> list[dict[str, Any]]:
    """Keyword arguments of `vllm.SamplingParams`, one dict per prompt.

    Temperature 0 is greedy in both (vLLM also treats temperatures below 1e-5 as greedy
    and raises those below 0.01 to 0.01, so near-zero temperatures differ slightly
    from `HFEngine`'s); top-p is ignored when greedy and passed as 1.0 then.
    """
    common = {
        "n": 1,
        "max_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": 1.0 if sampling.greedy else sampling.top_p,
        "stop_token_ids": [newline],
        "ignore_eos": True,
        "logprobs": 0,
        # The text is decoded here from the ids (`completion_from_output`).
        "detokenize": False,
    }
    return [{**common, "seed": seed} for seed in row_seeds(sampling.seed, rows)]


def completion_from_output(
    output, *, newline: int, decode: Callable[[list[int]], str], prompt_truncated: bool = False
) -> Completion:
    """Our `Completion` from one vLLM `RequestOutput` (anything with its attributes:
    `.outputs[0].token_ids`, `.logprobs` (one {token id: obj with .logprob} per step) and
    `.finish_reason`).

    The finish reason follows our convention, "stop" exactly when the last token is the
    newline: vLLM checks the length cap before the stop tokens, so a newline produced
    at the last allowed step comes back as "length" there and as "stop" here, as from
    `HFEngine`.
    """
    if len(output.outputs) != 1:
        raise ValueError(f"expected one completion per prompt, got {len(output.outputs)}")
    (out,) = output.outputs
    if out.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM ended the request with finish_reason={out.finish_reason!r}")
    ids = [int(t) for t in out.token_ids]
    if out.logprobs is None or len(out.logprobs) != len(ids):
        raise ValueError(
            f"{len(ids)} tokens but {'no' if out.logprobs is None else len(out.logprobs)} log-prob entries; "
            "request logprobs=0"
        )
    logprobs = []
    for step, (token, candidates) in enumerate(zip(ids, out.logprobs)):
        if token not in candidates:
            raise ValueError(f"step {step}: no log-prob for the sampled token {token}")
        logprobs.append(float(candidates[token].logprob))
    stopped = bool(ids) and ids[-1] == newline
    if out.finish_reason == "stop" and not stopped:
        raise ValueError(f"vLLM stopped at token {ids[-1] if ids else None}, not at the newline {newline}")
    return Completion(
        text=decode(ids[:-1] if stopped else ids),
        token_ids=ids,
        logprobs=logprobs,
        finish_reason="stop" if stopped else "length",
        prompt_truncated=prompt_truncated,
    )


def candidate_logprob(prompt_logprobs: Sequence, token_ids: Sequence[int], candidate_tokens: int) -> float:
    """log pi(candidate | prompt) from vLLM's `RequestOutput.prompt_logprobs` of the
    sequence `token_ids` = prompt + candidate, the candidate being its last
    `candidate_tokens` ids.

    `prompt_logprobs[j]` maps token ids to objects with `.logprob`: log pi(token_j |
    token_<j); entry 0 is None (the first token has no prefix).
    """
    if len(prompt_logprobs) != len(token_ids):
        raise ValueError(f"{len(prompt_logprobs)} prompt log-prob entries for {len(token_ids)} tokens")
    start = len(token_ids) - candidate_tokens
    if candidate_tokens < 1 or start < 1:
        raise ValueError(
            f"a candidate of {candidate_tokens} tokens in a sequence of {len(token_ids)} needs "
            "at least one prompt token before it"
        )
    return float(sum(prompt_logprobs[j][token_ids[j]].logprob for j in range(start, len(token_ids))))


def pack_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bytes:
    """A state dict as one safetensors blob (tensors copied to host memory)."""
    tensors, storages = {}, set()
    for name, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage().data_ptr()
        # safetensors refuses tensors that share memory (a tied embedding and LM head):
        # the repeats travel as copies and the model's loader sorts out the tying.
        if storage in storages:
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    return save_safetensors(tensors)


def unpack_state_dict(blob: bytes) -> dict[str, torch.Tensor]:
    return load_safetensors(bytes(blob))


class WeightLoaderExtension:
    """Mixed into each vLLM worker (`worker_extension_cls`): `self` is the worker.

    Called through `LLM.collective_rpc("lmrl_load_weights", args=(blob,))`.
    """

    def lmrl_load_weights(self, blob: bytes) -> list[str]:
        """Load a packed Hugging Face state dict into the worker's model with the model's
        own `load_weights` (which maps checkpoint names and layouts, e.g. GPT-2's
        transposed Conv1D weights, to vLLM's); returns the parameters it did not fill."""
        model = self.model_runner.get_model()
        loaded = model.load_weights(weights=unpack_state_dict(blob).items())
        if loaded is None:  # models whose loader does not report what it loaded
            return []
        return sorted(name for name, _ in model.named_parameters() if name not in loaded)


def model_folder(model: str | Path) -> Path:
    """The local Hugging Face folder of `model`: "tiny" (built and cached on first use)
    or a path."""
    if isinstance(model, str) and model == TINY:
        from lmrl_ray.models.tiny import build_tiny

        return build_tiny()
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model {str(path)!r} is not a Hugging Face model folder (no config.json)")
    return path


# -- The engine ------------------------------------------------------------------------------


class VLLMEngine(Engine):
    """An `Engine` over a `vllm.LLM` (no Ray: the pools wrap it).

    `llm` must be built with `worker_extension_cls=WORKER_EXTENSION` for `set_weights`
    to work and with `logprobs_mode="raw_logprobs"` for the recorded log-probs to be the
    model's own; `load` does both. `tokenizer` is the policy's Hugging Face tokenizer.
    """

    def __init__(self, llm, tokenizer, *, version: int = 0):
        self.llm = llm
        self.tokenizer = tokenizer
        self.newline_id = newline_id(tokenizer)
        self.max_positions = int(llm.llm_engine.model_config.max_model_len)
        self._version = int(version)

    @classmethod
    def load(cls, model: str | Path = TINY, *, dtype: str = "float32", seed: int = 0, **llm_kwargs) -> "VLLMEngine":
        """An engine over `model` ("tiny" or a local Hugging Face folder).

        `dtype` defaults to float32, as `load_policy` does, so the recorded log-probs
        match the learner's; "bfloat16" halves memory and is what larger models want.
        `llm_kwargs` go to `vllm.LLM` (e.g. `gpu_memory_utilization`, `enforce_eager`).
        """
        try:
            import vllm
        except ImportError as err:
            raise ImportError(
                "the vLLM engine needs vLLM: pip install 'lmrl-ray[vllm]' (on a machine with a CUDA GPU)"
            ) from err
        from transformers import AutoTokenizer

        path = model_folder(model)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        try:
            llm = vllm.LLM(
                model=str(path),
                dtype=dtype,
                seed=seed,
                logprobs_mode="raw_logprobs",
                worker_extension_cls=WORKER_EXTENSION,
                **llm_kwargs,
            )
        except TypeError as err:
            if "logprobs_mode" not in str(err):
                raise
            raise RuntimeError(
                f"vLLM {vllm.__version__} has no logprobs_mode: this engine needs a vLLM that can return "
                "raw (temperature-1) log-probs, the 0.10 series or newer"
            ) from err
        return cls(llm, tokenizer)

    @property
    def version(self) -> int:
        return self._version

    def generate(self, prompts: list[str], sampling: SamplingParams) -> list[Completion]:
        if not prompts:
            return []
        import vllm

        context = self.max_positions - sampling.max_new_tokens
        if context < 1:
            raise ValueError(
                f"max_new_tokens={sampling.max_new_tokens} leaves no room for a prompt in a context of "
                f"{self.max_positions} tokens"
            )
        prompt_ids, truncated = encode_prompts(self.tokenizer, prompts, context)
        params = [vllm.SamplingParams(**kwargs) for kwargs in sampling_kwargs(sampling, self.newline_id, len(prompts))]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        return [
            completion_from_output(out, newline=self.newline_id, decode=self._decode, prompt_truncated=cut)
            for out, cut in zip(outputs, truncated)
        ]

    def _decode(self, ids: list[int]) -> str:
        # As HFEngine: exactly what was generated, no special-token skipping or clean-up.
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def choose(self, prompts: list[str], candidates: list[list[str]]) -> list[int]:
        scores = self.candidate_logprobs(prompts, candidates)
        return [max(range(len(row)), key=row.__getitem__) for row in scores]

    def candidate_logprobs(self, prompts: list[str], candidates: list[list[str]]) -> list[list[float]]:
        """log pi(candidate + "\\n" | prompt) for every candidate of every prompt, one
        request per (prompt, candidate) pair in one `generate` call."""
        # One position fewer than HFEngine keeps: vLLM generates (and we discard) one
        # token after the sequence, which must fit in the context too.
        sequences, action_lengths = candidate_sequences(self.tokenizer, prompts, candidates, self.max_positions - 1)
        if not sequences:
            return []
        import vllm

        params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in sequences], params, use_tqdm=False)
        totals = [
            candidate_logprob(out.prompt_logprobs, ids, n) for out, ids, n in zip(outputs, sequences, action_lengths)
        ]
        scores, start = [], 0
        for actions in candidates:
            scores.append(totals[start : start + len(actions)])
            start += len(actions)
        return scores

    def set_weights(self, state_dict: Mapping[str, torch.Tensor], version: int) -> None:
        """Load a Hugging Face state dict (the learner's names) as policy `version`.

        A state dict that leaves parameters of the served model unfilled is an error, as
        `load_state_dict` is for `HFEngine`; the weights are then part old, part new, and
        the version stays where it was.
        """
        check_version(self._version, version)
        missing = self.llm.collective_rpc("lmrl_load_weights", args=(pack_state_dict(state_dict),))
        unfilled = sorted({name for worker in missing for name in worker})
        if unfilled:
            raise ValueError(
                f"the state dict left {len(unfilled)} parameter(s) of the vLLM model unloaded, e.g. {unfilled[:5]}"
            )
        self.llm.reset_prefix_cache()
        self._version = int(version)


__all__ = [
    "VLLMEngine",
    "WORKER_EXTENSION",
    "WeightLoaderExtension",
    "candidate_logprob",
    "completion_from_output",
    "encode_prompts",
    "model_folder",
    "pack_state_dict",
    "row_seeds",
    "sampling_kwargs",
    "unpack_state_dict",
]
