"""The vLLM engine and engine selection.

Without vLLM (any machine): the conversions between our types and vLLM's, checked by
hand and against the HF engine on the embedded tiny model, the weight blob, and every
branch of engine selection. With vLLM and a CUDA GPU: the engine itself against
`HFEngine` on the same tiny checkpoint (skipped elsewhere, with the reason).

The vLLM-shaped inputs below are `SimpleNamespace`s with the attribute names of
vLLM's `RequestOutput` / `CompletionOutput` / `Logprob` (docs.vllm.ai, vllm.outputs and
vllm.logprobs): data handed to the conversions, as vLLM would hand it.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmrl_ray import envs
from lmrl_ray.engines.base import SamplingParams, StaleWeightsError, encode_prompts
from lmrl_ray.engines.factory import (
    ENGINE_KINDS,
    make_engine,
    select_engine_kind,
    vllm_installed,
)
from lmrl_ray.engines.hf_engine import HFEngine
from lmrl_ray.engines.vllm_engine import (
    VLLMEngine,
    candidate_logprob,
    completion_from_output,
    model_folder,
    pack_state_dict,
    row_seeds,
    sampling_kwargs,
    unpack_state_dict,
)
from lmrl_ray.envs.play import rollout
from lmrl_ray.models import load_policy, newline_id, save_checkpoint

NL = 99  # the newline id of the hand-made outputs


def lp(value: float) -> SimpleNamespace:
    """A stand-in for vllm.logprobs.Logprob."""
    return SimpleNamespace(logprob=value, rank=1, decoded_token=None)


def request_output(token_ids, logprobs, finish_reason, prompt_logprobs=None) -> SimpleNamespace:
    """A stand-in for vllm.outputs.RequestOutput with one CompletionOutput."""
    out = SimpleNamespace(token_ids=tuple(token_ids), logprobs=logprobs, finish_reason=finish_reason)
    return SimpleNamespace(outputs=[out], prompt_logprobs=prompt_logprobs)


def decode_stub(ids: list[int]) -> str:
    return ",".join(map(str, ids))


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load_policy("tiny")
    return model.eval(), tokenizer


def task_prompts(task: str, episodes: int, seed: int = 0) -> list[str]:
    """Policy prompts from real episodes: the task's view at several turns of each."""
    env = envs.make(task)
    prompts = []
    for episode in rollout(task, "behaviour", episodes, seed=seed):
        transcript = episode.transcript
        for k in sorted({0, len(transcript) // 2, len(transcript) - 1}):
            if k % 2 == 0:  # environment turns: where the policy speaks next
                prompts.append(envs.render_prompt(env.view(transcript[: k + 1])))
    return prompts


# -- Sampling parameters -------------------------------------------------------------------


def test_greedy_sampling_kwargs():
    [kwargs] = sampling_kwargs(SamplingParams(max_new_tokens=7, temperature=0, top_p=0.5), NL, 1)
    assert kwargs == {
        "n": 1,
        "max_tokens": 7,
        "temperature": 0,
        "top_p": 1.0,  # ignored when greedy
        "stop_token_ids": [NL],
        "ignore_eos": True,
        "logprobs": 0,
        "detokenize": False,
        "seed": None,
    }


def test_sampled_kwargs_carry_temperature_top_p_and_one_seed_per_row():
    rows = sampling_kwargs(SamplingParams(max_new_tokens=5, temperature=0.7, top_p=0.9, seed=3), NL, 4)
    assert [(r["temperature"], r["top_p"], r["max_tokens"]) for r in rows] == [(0.7, 0.9, 5)] * 4
    seeds = [r["seed"] for r in rows]
    assert len(set(seeds)) == 4 and all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
    # Reproducible: the same seed gives the same per-row seeds; another seed others.
    assert seeds == row_seeds(3, 4)
    assert row_seeds(3, 2) == seeds[:2]
    assert set(row_seeds(4, 4)).isdisjoint(seeds)
    assert row_seeds(None, 3) == [None, None, None]


# -- Completions -----------------------------------------------------------------------------


def test_completion_stopped_at_the_newline():
    out = request_output([5, 6, NL], [{5: lp(-0.5)}, {6: lp(-1.0), 7: lp(-0.1)}, {NL: lp(-0.25)}], "stop")
    c = completion_from_output(out, newline=NL, decode=decode_stub, prompt_truncated=True)
    assert c.token_ids == [5, 6, NL]
    assert c.logprobs == [-0.5, -1.0, -0.25]  # the sampled token's, not the top-ranked one
    assert c.text == "5,6"  # the newline is in the ids, not in the text
    assert c.finish_reason == "stop" and c.prompt_truncated


def test_completion_at_the_length_cap():
    out = request_output([5, 6], [{5: lp(-0.5)}, {6: lp(-1.0)}], "length")
    c = completion_from_output(out, newline=NL, decode=decode_stub)
    assert (c.text, c.token_ids, c.finish_reason, c.prompt_truncated) == ("5,6", [5, 6], "length", False)


def test_newline_at_the_last_allowed_step_is_a_stop():
    # vLLM checks the length cap first and reports "length"; HFEngine (and we) say "stop".
    out = request_output([5, NL], [{5: lp(-0.5)}, {NL: lp(-0.1)}], "length")
    c = completion_from_output(out, newline=NL, decode=decode_stub)
    assert (c.text, c.finish_reason) == ("5", "stop")


def test_malformed_outputs_are_errors():
    with pytest.raises(RuntimeError, match="abort"):
        completion_from_output(request_output([5], [{5: lp(0.0)}], "abort"), newline=NL, decode=decode_stub)
    with pytest.raises(ValueError, match="log-prob"):
        completion_from_output(request_output([5], None, "length"), newline=NL, decode=decode_stub)
    with pytest.raises(ValueError, match="no log-prob for the sampled token 5"):
        completion_from_output(request_output([5], [{6: lp(0.0)}], "length"), newline=NL, decode=decode_stub)
    with pytest.raises(ValueError, match="not at the newline"):
        completion_from_output(request_output([5], [{5: lp(0.0)}], "stop"), newline=NL, decode=decode_stub)
    two = SimpleNamespace(outputs=[request_output([5], [{5: lp(0.0)}], "length").outputs[0]] * 2)
    with pytest.raises(ValueError, match="one completion"):
        completion_from_output(two, newline=NL, decode=decode_stub)


# -- Candidate scores from prompt log-probs ------------------------------------------------------


def test_candidate_logprob_sums_the_candidates_positions():
    # Sequence: prompt (10, 11) then candidate (12, NL); entry j is log p(token_j | token_<j).
    ids = [10, 11, 12, NL]
    prompt_logprobs = [None, {11: lp(-3.0)}, {12: lp(-0.5), 13: lp(-0.2)}, {NL: lp(-0.25)}]
    assert candidate_logprob(prompt_logprobs, ids, 2) == -0.75
    assert candidate_logprob(prompt_logprobs, ids, 3) == -3.75
    with pytest.raises(ValueError, match="at least one prompt token"):
        candidate_logprob(prompt_logprobs, ids, 4)
    with pytest.raises(ValueError, match="entries"):
        candidate_logprob(prompt_logprobs[:-1], ids, 2)


# -- Against the HF engine on the embedded tiny model -------------------------------------------


def test_prompts_are_encoded_and_truncated_like_the_hf_engine(tiny):
    model, tokenizer = tiny
    prompts = task_prompts("maze-po", 2) + task_prompts("text-nav", 2)
    # Both engines encode through `encode_prompts`: the tokenizer's ids, oldest tokens cut.
    full = tokenizer(prompts)["input_ids"]
    for context in (1024, 64):
        assert encode_prompts(tokenizer, prompts, context)[0] == [seq[-context:] for seq in full]
    ids, truncated = encode_prompts(tokenizer, prompts, 64)
    assert any(truncated) and not all(truncated) and max(map(len, ids)) == 64
    with pytest.raises(ValueError, match="empty"):
        encode_prompts(tokenizer, ["a", ""], 64)


def test_hf_engine_outputs_in_vllm_form_convert_back_unchanged(tiny):
    """Completions of the HF engine, re-expressed as vLLM would return them (ids and a
    {token: Logprob} per step), convert to the same Completions: text decoding, stop
    and length included."""
    model, tokenizer = tiny
    engine = HFEngine(model, tokenizer)
    nl = newline_id(tokenizer)
    prompts = task_prompts("maze", 3) + task_prompts("text-nav", 2)
    completions = engine.generate(prompts, SamplingParams(max_new_tokens=8, temperature=0))
    assert {c.finish_reason for c in completions} == {"stop", "length"}  # both cases occur

    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    for c in completions:
        out = request_output(c.token_ids, [{t: lp(v)} for t, v in zip(c.token_ids, c.logprobs)], c.finish_reason)
        assert completion_from_output(out, newline=nl, decode=decode) == c


def test_candidate_scores_from_prompt_logprobs_equal_the_hf_engines(tiny):
    """Prompt log-probs in vLLM's layout, computed by one plain forward pass per
    sequence, give HFEngine.candidate_logprobs: the alignment (entry j scores token j
    given the tokens before it) is right."""
    model, tokenizer = tiny
    engine = HFEngine(model, tokenizer)
    env = envs.make("maze")
    env.reset(seed=4)
    prompts = [env.prompt()] + task_prompts("maze", 1)
    actions = env.legal_actions()
    expected = engine.candidate_logprobs(prompts, [actions] * len(prompts))
    for prompt, row in zip(prompts, expected):
        for action, score in zip(actions, row):
            action_ids = tokenizer.encode(action + "\n", add_special_tokens=False)
            ids = tokenizer(prompt)["input_ids"] + action_ids
            with torch.no_grad():
                logprobs = F.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)  # (T, V)
            prompt_logprobs = [None] + [{ids[j]: lp(float(logprobs[j - 1, ids[j]]))} for j in range(1, len(ids))]
            assert candidate_logprob(prompt_logprobs, ids, len(action_ids)) == pytest.approx(score, abs=1e-4)


# -- Weights -------------------------------------------------------------------------------------


def test_state_dict_blob_round_trip_keeps_tied_weights_and_dtypes(tiny):
    model, _ = tiny
    state = model.state_dict()
    # GPT-2 ties its LM head to the token embedding: one storage under two names.
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()
    state = {**state, "extra.bf16": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)}
    back = unpack_state_dict(pack_state_dict(state))
    assert back.keys() == state.keys()
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name


def test_model_folder():
    assert (model_folder("tiny") / "config.json").is_file()
    with pytest.raises(FileNotFoundError, match="config.json"):
        model_folder("/nonexistent/model")


@pytest.mark.skipif(vllm_installed(), reason="checks the message shown where vLLM is missing")
def test_loading_without_vllm_names_the_extra():
    with pytest.raises(ImportError, match=r"lmrl-ray\[vllm\]"):
        VLLMEngine.load("tiny")


# -- Engine selection --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vllm_available, cuda_available, expected",
    [(True, True, "vllm"), (True, False, "hf"), (False, True, "hf"), (False, False, "hf")],
)
def test_auto_takes_vllm_only_with_vllm_and_cuda(vllm_available, cuda_available, expected):
    assert select_engine_kind("auto", vllm_available=vllm_available, cuda_available=cuda_available) == expected
    assert select_engine_kind("hf", vllm_available=vllm_available, cuda_available=cuda_available) == "hf"


def test_vllm_kind_names_what_is_missing():
    assert select_engine_kind("vllm", vllm_available=True, cuda_available=True) == "vllm"
    with pytest.raises(RuntimeError, match=r"vLLM is not installed \(pip install 'lmrl-ray\[vllm\]'\)") as err:
        select_engine_kind("vllm", vllm_available=False, cuda_available=True)
    assert "CUDA" not in str(err.value)
    with pytest.raises(RuntimeError, match="no CUDA GPU") as err:
        select_engine_kind("vllm", vllm_available=True, cuda_available=False)
    assert "not installed" not in str(err.value)
    with pytest.raises(RuntimeError, match=r"not installed.*; no CUDA GPU"):
        select_engine_kind("vllm", vllm_available=False, cuda_available=False)


def test_unknown_kind_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'vlm'.*auto, hf, vllm"):
        select_engine_kind("vlm", vllm_available=True, cuda_available=True)
    assert ENGINE_KINDS == ("auto", "hf", "vllm")


def test_make_engine_builds_the_hf_engine(tiny):
    engine = make_engine("hf", "tiny", device="cpu")
    assert isinstance(engine, HFEngine) and engine.device.type == "cpu"
    assert isinstance(make_engine("auto", "tiny", vllm_available=False, cuda_available=False), HFEngine)
    # An explicit CPU device means the HF engine even where vLLM could run.
    assert isinstance(make_engine("auto", "tiny", device="cpu", vllm_available=True, cuda_available=True), HFEngine)
    with pytest.raises(ValueError, match="CUDA GPU, not on device 'cpu'"):
        make_engine("vllm", "tiny", device="cpu", vllm_available=True, cuda_available=True)
    with pytest.raises(RuntimeError, match="cannot run here"):
        make_engine("vllm", "tiny", vllm_available=False, cuda_available=False)


@pytest.mark.skipif(vllm_installed() and torch.cuda.is_available(), reason="checks a machine without vLLM or CUDA")
def test_auto_detects_this_machine():
    assert isinstance(make_engine("auto", "tiny"), HFEngine)


# -- Live: vLLM on a CUDA GPU ------------------------------------------------------------------

LIVE_SKIP_REASON = ", ".join(
    reason
    for missing, reason in [
        (not vllm_installed(), "vLLM is not installed (pip install 'lmrl-ray[vllm]')"),
        (not torch.cuda.is_available(), "no CUDA GPU"),
    ]
    if missing
)
live = pytest.mark.skipif(bool(LIVE_SKIP_REASON), reason=f"needs vLLM and a CUDA GPU: {LIVE_SKIP_REASON}")


@pytest.fixture(scope="module")
def live_engines(tmp_path_factory):
    """The tiny model saved as a checkpoint folder, served by vLLM (float32, like the HF
    engine) and by HFEngine on the same GPU."""
    model, tokenizer = load_policy("tiny")
    folder = save_checkpoint(model, tokenizer, tmp_path_factory.mktemp("ckpt") / "tiny")
    hf_model, hf_tokenizer = load_policy(str(folder), device="cuda")
    hf = HFEngine(hf_model, hf_tokenizer, device="cuda")
    vllm_engine = VLLMEngine.load(folder, dtype="float32", gpu_memory_utilization=0.3, enforce_eager=True)
    return vllm_engine, hf


@pytest.fixture(scope="module")
def live_prompts():
    return task_prompts("maze", 4) + task_prompts("text-nav", 3) + task_prompts("maze-po", 2)


def assert_same_completions(got, expected, atol=1e-2):
    assert [c.token_ids for c in got] == [c.token_ids for c in expected]
    assert [(c.text, c.finish_reason, c.prompt_truncated) for c in got] == [
        (c.text, c.finish_reason, c.prompt_truncated) for c in expected
    ]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.logprobs, e.logprobs, atol=atol)


@live
def test_live_greedy_equals_the_hf_engine(live_engines, live_prompts):
    vllm_engine, hf = live_engines
    greedy = SamplingParams(max_new_tokens=16, temperature=0)
    assert_same_completions(vllm_engine.generate(live_prompts, greedy), hf.generate(live_prompts, greedy))


@live
def test_live_sampled_logprobs_are_the_models_own_at_temperature_one(live_engines, live_prompts):
    vllm_engine, hf = live_engines
    sampling = SamplingParams(max_new_tokens=12, temperature=0.7, top_p=0.8, seed=5)
    sampled = vllm_engine.generate(live_prompts, sampling)
    assert [c.token_ids for c in sampled] == [c.token_ids for c in vllm_engine.generate(live_prompts, sampling)]
    # vLLM picked these tokens at temperature 0.7 within top-p 0.8; what it records for
    # them must be the log-softmax of the plain logits (temperature 1, nothing cut).
    for prompt, c in zip(live_prompts, sampled):
        ids = hf.tokenizer(prompt)["input_ids"] + c.token_ids
        with torch.no_grad():
            logits = hf.model(input_ids=torch.tensor([ids], device="cuda")).logits[0].float()
        logprobs = F.log_softmax(logits, dim=-1)  # (T, V): temperature 1, no top-p
        start = len(ids) - len(c.token_ids)
        expected = [float(logprobs[j - 1, ids[j]]) for j in range(start, len(ids))]
        np.testing.assert_allclose(c.logprobs, expected, atol=1e-2)


@live
def test_live_choose_equals_the_hf_engine(live_engines, live_prompts):
    vllm_engine, hf = live_engines
    candidates = [envs.make("maze").legal_actions()] * len(live_prompts)
    np.testing.assert_allclose(
        vllm_engine.candidate_logprobs(live_prompts, candidates), hf.candidate_logprobs(live_prompts, candidates),
        atol=1e-2,
    )
    assert vllm_engine.choose(live_prompts, candidates) == hf.choose(live_prompts, candidates)


@live
def test_live_set_weights_changes_outputs_and_keeps_versions(live_engines, live_prompts):
    vllm_engine, hf = live_engines
    greedy = SamplingParams(max_new_tokens=16, temperature=0)
    original = {k: v.detach().cpu().clone() for k, v in hf.model.state_dict().items()}
    before = vllm_engine.generate(live_prompts, greedy)

    torch.manual_seed(1)
    new_model = copy.deepcopy(hf.model).cpu()
    with torch.no_grad():
        for p in new_model.parameters():
            p.add_(0.5 * torch.randn_like(p) * p.std())
    new_state = new_model.state_dict()
    vllm_engine.set_weights(new_state, version=1)
    hf.set_weights(new_state, version=1)
    after = vllm_engine.generate(live_prompts, greedy)
    assert [c.token_ids for c in after] != [c.token_ids for c in before]
    assert_same_completions(after, hf.generate(live_prompts, greedy))
    assert vllm_engine.version == 1
    with pytest.raises(StaleWeightsError):
        vllm_engine.set_weights(original, version=0)

    # Back to the original weights (a newer version), as the other live tests expect.
    vllm_engine.set_weights(original, version=2)
    hf.set_weights(original, version=2)
    assert_same_completions(vllm_engine.generate(live_prompts, greedy), before)
