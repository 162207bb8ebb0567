"""The Hugging Face engine against a real tiny GPT-2: equal to `model.generate` and to a
plain forward pass, seeded sampling, the constrained choice, weight versions and
value-guided decoding; first the pure pieces of its batching (the prefix tree, the length
buckets, the compaction of finished rows). Everything runs on CPU in a few seconds."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from lmrl_ray import envs
from lmrl_ray.engines.base import Completion, SamplingParams, StaleWeightsError
from lmrl_ray.engines.hf_engine import HFEngine
from lmrl_ray.engines.kv_cache import (
    SEGMENT_OVERHEAD_TOKENS,
    compaction,
    length_buckets,
    prefix_segments,
)
from lmrl_ray.models import ILQLHeads, ValueGuidance, newline_id

CONTEXT = 128
MOVES = ["move up", "move down", "move left", "move right"]


def maze_transcripts(episodes: int, seed: int = 0) -> list[str]:
    """Rendered maze episodes under uniformly random moves: the tiny model's corpus."""
    rng = np.random.default_rng(seed)
    texts = []
    for k in range(episodes):
        env = envs.make("maze")
        env.reset(seed=seed + k)
        for _ in range(3):
            env.step(MOVES[int(rng.integers(4))])
            if env.done:
                break
        texts.append(env.render())
    return texts


@pytest.fixture(scope="module")
def tokenizer():
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(maze_transcripts(40), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def model(tokenizer):
    """A 2-layer GPT-2 trained for a few steps on maze transcripts, so that it ends its
    lines with a newline after a varying number of tokens (rows finish at different steps)."""
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=CONTEXT,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    lm = GPT2LMHeadModel(config)
    corpus = maze_transcripts(32, seed=100)
    batch = tokenizer(corpus, padding=True, truncation=True, max_length=CONTEXT, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)  # (B, T)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    lm.train()
    for _ in range(40):
        loss = lm(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return lm.eval()


@pytest.fixture(scope="module")
def prompts():
    """Prompts of different lengths: whole observations and lines cut mid-way."""
    lines = [text.splitlines(keepends=True) for text in maze_transcripts(6, seed=500)]
    return [
        lines[0][0],
        "".join(lines[1][:3]),
        lines[2][0][:40],
        lines[3][0][:15],
        "The goal",
        "".join(lines[5][:2]),
        lines[4][0] + "move",
        lines[4][0][:-12],
    ]


def reference_generate(model, tokenizer, prompts, max_new_tokens):
    """Greedy `model.generate` with the newline as end-of-sequence: each row's new tokens
    up to and including its first newline."""
    nl = newline_id(tokenizer)
    batch = tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt").to(model.device)
    out = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=nl,
        pad_token_id=tokenizer.pad_token_id,
    )
    rows = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        rows.append(row[: row.index(nl) + 1] if nl in row else row)
    return rows


def forward_logprobs(model, prompt_ids: list[int], token_ids: list[int]) -> list[float]:
    """log_softmax of one unpadded forward over prompt + tokens, at each token's position."""
    ids = torch.tensor([prompt_ids + token_ids], device=model.device)  # (1, P + N)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]  # (P + N, V)
    logprobs = F.log_softmax(logits.float(), dim=-1).cpu()  # (P + N, V)
    positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) + len(token_ids) - 1)
    return logprobs[positions, torch.tensor(token_ids)].tolist()


def zero_heads(model) -> ILQLHeads:
    heads = ILQLHeads(model.config.n_embd, model.config.vocab_size, width=16)
    with torch.no_grad():
        for p in heads.parameters():
            p.zero_()
    return heads


def token_ids(engine: HFEngine, prompts: list[str], sampling: SamplingParams) -> list[list[int]]:
    return [c.token_ids for c in engine.generate(prompts, sampling)]


GREEDY = SamplingParams(max_new_tokens=12, temperature=0)


# -- Batching pieces (pure) ------------------------------------------------------------------


def test_prefix_segments_share_each_common_run_once():
    shared = list(range(100, 130))  # 30 tokens every prompt starts with
    prompts = [
        shared + [1, 2, 3],
        shared + [1, 2, 3],  # a duplicate
        shared + [1, 2],  # a prefix of the first
        shared + [7] + list(range(200, 240)),
        shared + [7] + list(range(200, 240)) + [9],
        [5, 6],  # shares nothing
    ]
    segments, ends = prefix_segments(prompts)

    def path(s):
        return (path(segments[s].parent) if segments[s].parent >= 0 else []) + segments[s].ids

    for prompt, end in zip(prompts, ends):
        assert path(end) == prompt
    for i, segment in enumerate(segments):
        assert segment.parent < i  # parents first
        parent_depth = segments[segment.parent].depth if segment.parent >= 0 else -1
        assert segment.depth == parent_depth + 1
        assert segment.start == (len(path(segment.parent)) if segment.parent >= 0 else 0)
    assert ends[0] == ends[1]
    # Computed once: the 30 shared tokens (saving 4 x 30), the 41 after them that two prompts
    # share (saving 41), the duplicate's 3. [1, 2] would save only 2 x 2 tokens, less than a
    # forward costs: the prompt that ends there and the duplicates each carry it.
    assert 2 * 2 < SEGMENT_OVERHEAD_TOKENS <= 41
    assert sum(len(s.ids) for s in segments) == 30 + (2 + 3) + (41 + 1) + 2
    short = [[1, 2, 3, 4], [1, 2, 3, 5]]
    segments, ends = prefix_segments(short)
    assert sorted(s.ids for s in segments) == short and sorted(ends) == [0, 1]


def test_length_buckets_cut_padding_and_cover_every_item():
    lengths = [3, 120, 4, 118, 3, 5, 119, 60]
    buckets = length_buckets(lengths)
    assert sorted(i for bucket in buckets for i in bucket) == list(range(len(lengths)))
    longest = {max(lengths[i] for i in bucket) for bucket in buckets}
    assert {5, 120} <= longest  # the short ones are not padded to 120
    assert length_buckets([7, 7, 7]) == [[0, 1, 2]]
    assert length_buckets([2, 3]) == [[0, 1]]  # one token of padding is cheaper than a forward


def test_compaction_moves_only_rows_past_the_live_prefix():
    running = torch.tensor([True, False, True, False, True, True])
    holes, movers, live = compaction(running)
    assert live == 4 and holes.tolist() == [1, 3] and movers.tolist() == [4, 5]
    state = torch.arange(6)
    state[holes] = state[movers]
    assert sorted(state[:live].tolist()) == [0, 2, 4, 5]
    holes, movers, live = compaction(torch.tensor([True, True, False]))
    assert live == 2 and holes.numel() == 0 and movers.numel() == 0


# -- Greedy decoding equals model.generate --------------------------------------------------


def test_greedy_batched_and_one_by_one_equal_model_generate(model, tokenizer, prompts):
    engine = HFEngine(model, tokenizer)
    batched = engine.generate(prompts, GREEDY)
    alone = [engine.generate([p], GREEDY)[0] for p in prompts]
    expected = reference_generate(model, tokenizer, prompts, GREEDY.max_new_tokens)
    assert [c.token_ids for c in batched] == expected
    assert [c.token_ids for c in alone] == expected
    assert [reference_generate(model, tokenizer, [p], GREEDY.max_new_tokens)[0] for p in prompts] == expected
    # The case is a real one: rows stop at different steps, some run to the cap.
    assert len({len(c.token_ids) for c in batched if c.finish_reason == "stop"}) > 1
    assert any(c.finish_reason == "length" for c in batched)


def test_prompts_sharing_prefixes_decode_as_alone(model, tokenizer, prompts):
    """Duplicates, prompts that are prefixes of others and long shared runs (computed once
    in the prefix tree) decode exactly as each prompt alone; log-probs equal a forward."""
    base = "".join(maze_transcripts(1, seed=700)[0].splitlines(keepends=True)[:2])
    shared = [base, base, base + "move", base[:-20], base + "move up\n", prompts[0], base]
    engine = HFEngine(model, tokenizer)
    batched = engine.generate(shared, GREEDY)
    assert [c.token_ids for c in batched] == reference_generate(model, tokenizer, shared, GREEDY.max_new_tokens)
    assert [c.token_ids for c in batched] == [engine.generate([p], GREEDY)[0].token_ids for p in shared]
    sampled = engine.generate(shared, SamplingParams(max_new_tokens=12, temperature=1.0, seed=4))
    for prompt, c in zip(shared, sampled):
        expected = forward_logprobs(model, tokenizer(prompt)["input_ids"], c.token_ids)
        np.testing.assert_allclose(c.logprobs, expected, atol=1e-4)


def test_calls_of_growing_and_shrinking_batches_reuse_the_cache_memory(model, tokenizer, prompts):
    """The decoding cache's memory is kept between calls and handed out again, larger or
    smaller: every call still decodes as `model.generate`; two threads calling at once
    take turns and get what each would alone."""
    engine = HFEngine(model, tokenizer)
    expected = reference_generate(model, tokenizer, prompts, GREEDY.max_new_tokens)
    for subset in ([0], list(range(len(prompts))), [2, 1], list(range(len(prompts)))[::-1], [0]):
        assert token_ids(engine, [prompts[i] for i in subset], GREEDY) == [expected[i] for i in subset]
    results = {}
    threads = [
        threading.Thread(target=lambda k=k: results.__setitem__(k, token_ids(engine, prompts[k::2], GREEDY)))
        for k in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {k: expected[k::2] for k in range(2)}


def test_completion_fields(model, tokenizer, prompts):
    nl = newline_id(tokenizer)
    for c in HFEngine(model, tokenizer).generate(prompts, GREEDY):
        assert len(c.logprobs) == len(c.token_ids)
        assert "\n" not in c.text
        if c.finish_reason == "stop":
            assert c.token_ids[-1] == nl and nl not in c.token_ids[:-1]
            assert c.text == tokenizer.decode(c.token_ids[:-1])
        else:
            assert len(c.token_ids) == GREEDY.max_new_tokens and nl not in c.token_ids
            assert c.text == tokenizer.decode(c.token_ids)


# -- Log-probs ------------------------------------------------------------------------------


@pytest.mark.parametrize("sampling", [GREEDY, SamplingParams(max_new_tokens=12, temperature=0.7, top_p=0.8, seed=3)])
def test_logprobs_equal_a_plain_forward_at_temperature_one(model, tokenizer, prompts, sampling):
    engine = HFEngine(model, tokenizer)
    for prompt, c in zip(prompts, engine.generate(prompts, sampling)):
        expected = forward_logprobs(model, tokenizer(prompt)["input_ids"], c.token_ids)
        np.testing.assert_allclose(c.logprobs, expected, atol=1e-4)


# -- Sampling -------------------------------------------------------------------------------


def test_seeded_sampling_is_reproducible_and_seeds_differ(model, tokenizer, prompts):
    engine = HFEngine(model, tokenizer)

    def sample(seed):
        return token_ids(engine, prompts, SamplingParams(max_new_tokens=12, temperature=1.5, seed=seed))

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_temperature_near_zero_is_greedy(model, tokenizer, prompts):
    engine = HFEngine(model, tokenizer)
    cold = SamplingParams(max_new_tokens=12, temperature=1e-5, seed=0)
    assert token_ids(engine, prompts, cold) == token_ids(engine, prompts, GREEDY)


def test_top_p_keeps_only_the_nucleus(model, tokenizer, prompts):
    """With a tiny top_p only the most likely token survives: sampling becomes greedy."""
    engine = HFEngine(model, tokenizer)
    nucleus = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=1e-6, seed=0)
    assert token_ids(engine, prompts, nucleus) == token_ids(engine, prompts, GREEDY)


def test_finish_reasons(model, tokenizer, prompts):
    engine = HFEngine(model, tokenizer)
    short = engine.generate(["The goal is at"], SamplingParams(max_new_tokens=2, temperature=0))[0]
    assert short.finish_reason == "length" and len(short.token_ids) == 2

    # A model whose final layer norm always outputs (a multiple of) the newline's tied
    # embedding puts nearly all probability on the newline: every row stops at once.
    nl = newline_id(tokenizer)
    eager = copy.deepcopy(model)
    with torch.no_grad():
        eager.transformer.ln_f.weight.zero_()
        eager.transformer.ln_f.bias.copy_(1000 * eager.transformer.wte.weight[nl])
    for c in HFEngine(eager, tokenizer).generate(prompts, SamplingParams(max_new_tokens=5, seed=0)):
        assert c == Completion(text="", token_ids=[nl], logprobs=c.logprobs, finish_reason="stop")
        assert c.logprobs[0] > -1e-3


def test_sampling_params_validate():
    assert SamplingParams(temperature=0).greedy and not SamplingParams(temperature=0.5).greedy
    for bad in ({"max_new_tokens": 0}, {"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


# -- Context --------------------------------------------------------------------------------


def test_long_prompt_is_truncated_from_the_left(model, tokenizer):
    long_prompt = "".join(maze_transcripts(4, seed=900))
    ids = tokenizer(long_prompt)["input_ids"]
    assert len(ids) > CONTEXT
    completion = HFEngine(model, tokenizer).generate([long_prompt], GREEDY)[0]
    assert completion.prompt_truncated
    kept = tokenizer.decode(ids[-(CONTEXT - GREEDY.max_new_tokens) :])
    assert completion.token_ids == reference_generate(model, tokenizer, [kept], GREEDY.max_new_tokens)[0]
    assert not HFEngine(model, tokenizer).generate(["The goal"], GREEDY)[0].prompt_truncated

    choice = HFEngine(model, tokenizer).choose([long_prompt], [MOVES])
    assert choice[0] in range(4)


def test_max_new_tokens_must_leave_room_for_a_prompt(model, tokenizer):
    with pytest.raises(ValueError, match="no room"):
        HFEngine(model, tokenizer).generate(["The goal"], SamplingParams(max_new_tokens=CONTEXT))


# -- Constrained choice -----------------------------------------------------------------------


def test_choose_picks_the_most_likely_candidate(model, tokenizer, prompts):
    engine = HFEngine(model, tokenizer)
    varied = [MOVES[::-1], MOVES[:2], ["move up", "The goal is at position 8, 6.", "x"]]
    candidates = (varied + [MOVES] * len(prompts))[: len(prompts)]
    scores = engine.candidate_logprobs(prompts, candidates)
    for prompt, actions, row in zip(prompts, candidates, scores):
        prompt_ids = tokenizer(prompt)["input_ids"]
        brute = [sum(forward_logprobs(model, prompt_ids, tokenizer.encode(a + "\n"))) for a in actions]
        np.testing.assert_allclose(row, brute, atol=1e-4)
    chosen = engine.choose(prompts, candidates)
    assert chosen == [int(np.argmax(row)) for row in scores]
    assert engine.choose(prompts[:1], [["move up"]]) == [0]
    with pytest.raises(ValueError, match="no candidates"):
        engine.choose(prompts[:1], [[]])


def test_choose_over_maze_legal_actions_takes_the_likeliest_move(model, tokenizer):
    """On a live maze prompt, `choose` takes the legal move whose text (and newline) the
    model finds likeliest, by a plain forward pass; the environment accepts it."""
    env = envs.make("maze")
    env.reset(seed=1)
    legal = env.legal_actions()
    prompt_ids = tokenizer(env.prompt())["input_ids"]
    brute = [sum(forward_logprobs(model, prompt_ids, tokenizer.encode(a + "\n"))) for a in legal]
    assert sorted(brute)[-1] - sorted(brute)[-2] > 1e-4  # a clear winner: the test could tell a wrong pick
    [index] = HFEngine(model, tokenizer).choose([env.prompt()], [legal])
    assert index == int(np.argmax(brute))
    _, _, _, _, info = env.step(legal[index])
    assert not info.get("invalid_action", False)


# -- Weights and versions ---------------------------------------------------------------------


def test_set_weights_changes_outputs_and_refuses_older_versions(model, tokenizer, prompts):
    engine = HFEngine(copy.deepcopy(model), tokenizer)
    before = token_ids(engine, prompts, GREEDY)
    assert engine.version == 0

    torch.manual_seed(1)
    other = GPT2LMHeadModel(model.config).eval()
    engine.set_weights(other.state_dict(), version=2)
    assert engine.version == 2
    after = token_ids(engine, prompts, GREEDY)
    assert after != before
    assert after == token_ids(HFEngine(other, tokenizer), prompts, GREEDY)

    with pytest.raises(StaleWeightsError, match="version 1"):
        engine.set_weights(model.state_dict(), version=1)
    assert engine.version == 2
    assert token_ids(engine, prompts, GREEDY) == after
    engine.set_weights(model.state_dict(), version=2)  # the same version is accepted
    assert token_ids(engine, prompts, GREEDY) == before


# -- Value-guided decoding ---------------------------------------------------------------------


def test_zero_heads_decode_like_the_plain_engine(model, tokenizer, prompts):
    plain = HFEngine(model, tokenizer)
    guided = HFEngine(model, tokenizer, guidance=ValueGuidance(zero_heads(model), beta=4.0))
    sampled = SamplingParams(max_new_tokens=12, temperature=1.0, seed=5)
    for sampling in (GREEDY, sampled):
        a, b = plain.generate(prompts, sampling), guided.generate(prompts, sampling)
        assert [c.token_ids for c in a] == [c.token_ids for c in b]
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-5)
    candidates = [MOVES] * len(prompts)
    np.testing.assert_allclose(
        guided.candidate_logprobs(prompts, candidates), plain.candidate_logprobs(prompts, candidates), atol=1e-5
    )


def test_a_head_favouring_one_token_makes_it_generated(model, tokenizer, prompts):
    favoured = tokenizer.encode("move")[0]
    heads = zero_heads(model)
    with torch.no_grad():
        heads.target_q1[-1].bias[favoured] = 50.0  # the output layer of each target Q head's MLP
        heads.target_q2[-1].bias[favoured] = 60.0
    engine = HFEngine(model, tokenizer, guidance=ValueGuidance(heads, beta=1.0))
    for c in engine.generate(prompts, SamplingParams(max_new_tokens=6, seed=0)):
        assert c.token_ids == [favoured] * 6 and c.finish_reason == "length"
    # The recorded log-probs stay the language model's own, not the guided ones.
    [c] = engine.generate(prompts[:1], GREEDY)
    expected = forward_logprobs(model, tokenizer(prompts[0])["input_ids"], c.token_ids)
    np.testing.assert_allclose(c.logprobs, expected, atol=1e-4)
    assert engine.choose(prompts[:1], [["up", "move up", "down"]]) == [1]


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))],
)
def test_heads_that_standardise_by_token_read_the_token_each_state_read_last(model, tokenizer, prompts, device):
    """With a fitted `TokenNorm`, every state is standardised by the statistics of the
    last token it read: generation (prefill and each decoding step) and candidate
    scoring must hand the heads exactly those tokens. Checked against guided logits
    computed position by position from one plain forward."""
    torch.manual_seed(3)
    heads = ILQLHeads(model.config.n_embd, model.config.vocab_size, width=16)
    V = model.config.vocab_size
    heads.input_norm.fit(torch.randn(3 * V, model.config.n_embd) * 4 + 2, torch.arange(V).repeat(3), min_states=3)
    beta = 2.0
    model = copy.deepcopy(model).to(device)
    engine = HFEngine(model, tokenizer, device=device, guidance=ValueGuidance(heads, beta=beta))

    def guided(ids: list[int]) -> torch.Tensor:  # (T, V): decode logits after each token of ids
        tokens = torch.tensor([ids], device=device)
        with torch.no_grad():
            out = model(input_ids=tokens, output_hidden_states=True)
            h = heads.input_norm(out.hidden_states[-1], tokens)
            q = torch.minimum(heads.target_q1(h), heads.target_q2(h))
            return (out.logits + beta * (q - heads.v(h)[..., None]))[0]

    for prompt, completion in zip(prompts, engine.generate(prompts, SamplingParams(max_new_tokens=4, temperature=0.0))):
        ids = tokenizer(prompt)["input_ids"]
        expected = []
        for _ in range(len(completion.token_ids)):
            expected.append(int(guided(ids + expected)[-1].argmax()))
        assert completion.token_ids == expected
    [scores] = engine.candidate_logprobs(prompts[:1], [MOVES])
    ids = tokenizer(prompts[0])["input_ids"]
    for move, score in zip(MOVES, scores):
        full = ids + tokenizer(move + "\n")["input_ids"]
        logp = torch.log_softmax(guided(full), -1)
        expected = sum(logp[t - 1, full[t]].item() for t in range(len(ids), len(full)))
        assert score == pytest.approx(expected, abs=1e-3)


def test_support_min_p_keeps_guidance_to_the_language_models_likely_tokens(model, tokenizer, prompts):
    """Heads that favour the model's least likely first token get it generated without
    the restriction; with support_min_p = 1 only the model's most likely token is
    allowed at each step, so greedy decoding is the plain engine's."""
    ids = tokenizer(prompts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        unlikely = int(model(ids).logits[0, -1].argmin())
    heads = zero_heads(model)
    with torch.no_grad():
        heads.target_q1[-1].bias[unlikely] = heads.target_q2[-1].bias[unlikely] = 1e3
    free = HFEngine(model, tokenizer, guidance=ValueGuidance(heads, beta=1.0))
    assert free.generate(prompts[:1], GREEDY)[0].token_ids[0] == unlikely
    kept = HFEngine(model, tokenizer, guidance=ValueGuidance(heads, beta=1.0, support_min_p=1.0))
    assert token_ids(kept, prompts, GREEDY) == token_ids(HFEngine(model, tokenizer), prompts, GREEDY)
    with pytest.raises(ValueError, match="support_min_p"):
        ValueGuidance(heads, beta=1.0, support_min_p=1.5)


def test_guidance_reads_the_target_q_heads_and_their_minimum(model, tokenizer, prompts):
    favoured = tokenizer.encode("move")[0]
    plain = token_ids(HFEngine(model, tokenizer), prompts, GREEDY)
    heads = zero_heads(model)
    with torch.no_grad():
        heads.q1[-1].bias[favoured] = heads.q2[-1].bias[favoured] = 50.0  # online heads: not read
        heads.target_q1[-1].bias[favoured] = 50.0  # one target head alone: the minimum is 0
    guided = HFEngine(model, tokenizer, guidance=ValueGuidance(heads, beta=1.0))
    assert token_ids(guided, prompts, GREEDY) == plain


# -- The embedded tiny model ---------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_tiny_model_through_load(prompts):
    """`HFEngine.load("tiny")`: the real tokenizer (its own pad token) and model agree with
    `model.generate`, and the constrained mode plays a maze move."""
    engine = HFEngine.load("tiny")
    expected = reference_generate(engine.model, engine.tokenizer, prompts, GREEDY.max_new_tokens)
    assert token_ids(engine, prompts, GREEDY) == expected
    env = envs.make("maze")
    env.reset(seed=3)
    [index] = engine.choose([env.prompt()], [env.legal_actions()])
    assert 0 <= index < 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda(model, tokenizer, prompts):
    gpu_model = copy.deepcopy(model).to("cuda")
    engine = HFEngine(gpu_model, tokenizer, device="cuda")
    greedy = engine.generate(prompts, GREEDY)
    assert [c.token_ids for c in greedy] == reference_generate(gpu_model, tokenizer, prompts, GREEDY.max_new_tokens)
    sampling = SamplingParams(max_new_tokens=12, temperature=0.7, top_p=0.8, seed=3)
    sampled = engine.generate(prompts, sampling)
    assert [c.token_ids for c in sampled] == token_ids(engine, prompts, sampling)
    for prompt, c in zip(prompts, sampled):
        expected = forward_logprobs(gpu_model, tokenizer(prompt)["input_ids"], c.token_ids)
        np.testing.assert_allclose(c.logprobs, expected, atol=1e-3)
