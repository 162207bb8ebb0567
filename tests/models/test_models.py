"""The model layer: the embedded tiny model (a real build), local folders, checkpoints, heads."""

from __future__ import annotations

import re
import threading
import time

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BertConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from lmrl_ray import envs
from lmrl_ray.data.datagen import generate_episodes
from lmrl_ray.data.schema import transcript_of
from lmrl_ray.envs import AGENT, render_prompt
from lmrl_ray.io import write_atomically
from lmrl_ray.models import (
    EOS,
    HEADS_FILE,
    PAD,
    TINY,
    ILQLHeads,
    ValueHead,
    load_heads,
    load_policy,
    newline_id,
    save_checkpoint,
    save_heads,
    tiny,
)
from lmrl_ray.models.tiny import (
    BUILD_FILE,
    CACHE_ENV,
    TinyRecipe,
    build_tiny,
    cache_dir,
)

# A recipe small enough to build in about a second, for tests of the cache machinery.
SMALL_RECIPE = TinyRecipe(episodes_per_policy={"maze": 3, "wordle": 3}, vocab_size=320, n_embd=32, n_layer=1, n_head=2)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """The real default build, once per test session, in a fresh cache directory."""
    return build_tiny(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def tiny_cache(tiny_folder, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tiny_folder.parent))
    return tiny_folder


@pytest.fixture
def policy(tiny_cache):
    return load_policy(TINY)


def _foreign_tokenizer(*, pad: bool) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE with no added newline token, like a tokenizer from elsewhere."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(["move up\nmove down\n", "Is it a tool?\nNo.\n"] * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>" if pad else None)


def _save_gpt2_folder(path, tokenizer) -> None:
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


PROMPTS = ["The goal is at position 8, 6.\nmove right\n", "Wordle:\n", "Questions:\nIs it a tool?\nNo.\n"]


# -- the embedded tiny model ---------------------------------------------------------


def test_tiny_loads_as_gpt2_with_pad_and_one_token_newline(policy):
    model, tokenizer = policy
    assert isinstance(model, GPT2LMHeadModel)
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert not model.training
    assert len(tokenizer) == model.config.vocab_size == TinyRecipe().vocab_size
    assert (tokenizer.pad_token, tokenizer.eos_token) == (PAD, EOS)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert (model.config.pad_token_id, model.config.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)
    assert model.config.n_positions == 1024 and 4e6 < model.num_parameters() < 5e6
    nl = newline_id(tokenizer)
    assert tokenizer.convert_ids_to_tokens(nl) == "\n"
    # Runs of newlines and spaces never merge with it; no special tokens are added.
    ids = tokenizer.encode("a\n\nb  \n c", add_special_tokens=False)
    assert ids.count(nl) == 3
    assert tokenizer.encode("move up\n") == tokenizer.encode("move up\n", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a\n\nb  \n c"


@pytest.mark.parametrize("task", envs.names())
def test_every_task_prompt_round_trips(policy, task):
    _, tokenizer = policy
    nl = newline_id(tokenizer)
    view = envs.make(task).view
    # Evaluation-split episodes: text the tokenizer was not trained on.
    rows = generate_episodes(task, "behaviour", "eval", 7, 0, 1 if task in ("chess", "endgames") else 3).to_pylist()
    checked = 0
    for row in rows:
        transcript = transcript_of(row)
        for k, turn in enumerate(transcript):
            if turn.role != AGENT:
                continue
            text = render_prompt(view(transcript[:k])) + turn.text + "\n"
            ids = tokenizer.encode(text, add_special_tokens=False)
            assert tokenizer.decode(ids) == text
            assert ids.count(nl) == text.count("\n")
            assert len(ids) <= tokenizer.model_max_length
            checked += 1
    assert checked > 0


def test_odd_text_round_trips(policy):
    _, tokenizer = policy
    for text in ["", "é ünïcode ☃ 漢字\n", "\t tabs\r\n", "x" * 3000, "<|endoftext|> as text\n"]:
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_build_is_deterministic(tiny_folder, tmp_path):
    again = build_tiny(tmp_path)
    assert again.name == tiny_folder.name
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        assert (again / name).read_bytes() == (tiny_folder / name).read_bytes(), name


def test_cache_is_reused(tiny_cache, monkeypatch):
    stamp = (tiny_cache / BUILD_FILE).stat().st_mtime_ns

    def no_rebuild(*args):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(tiny, "_build", no_rebuild)
    started = time.perf_counter()
    model, _ = load_policy(TINY)
    assert time.perf_counter() - started < 5
    assert (tiny_cache / BUILD_FILE).stat().st_mtime_ns == stamp
    assert isinstance(model, GPT2LMHeadModel)


def test_recipe_names_the_folder():
    assert TinyRecipe().key() == TinyRecipe().key()
    assert TinyRecipe(vocab_size=8192).key() != TinyRecipe().key()
    assert TinyRecipe(init_seed=1).key() != TinyRecipe().key()


def test_cache_dir_from_env_or_home(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "lmrl-ray"


def test_concurrent_builders_build_once(tmp_path, monkeypatch):
    calls = []
    real_build = tiny._build

    def counted(recipe, folder):
        calls.append(folder)
        real_build(recipe, folder)

    monkeypatch.setattr(tiny, "_build", counted)
    results = []
    threads = [threading.Thread(target=lambda: results.append(build_tiny(tmp_path, SMALL_RECIPE))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([results[0].name, results[0].name + ".lock"])


def test_vocabulary_larger_than_the_corpus_supports(tmp_path):
    recipe = TinyRecipe(episodes_per_policy={"wordle": 1}, vocab_size=100_000, n_embd=32, n_layer=1, n_head=2)
    with pytest.raises(ValueError, match="smaller vocabulary"):
        build_tiny(tmp_path, recipe)
    assert not any(p.is_dir() for p in tmp_path.iterdir())


# -- checkpoints -----------------------------------------------------------------------


def _logits(model, tokenizer, prompts):
    batch = tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return model(**batch).logits


def test_checkpoint_round_trip(policy, tmp_path):
    model, tokenizer = policy
    heads = ILQLHeads(model.config.n_embd, len(tokenizer))
    path = save_checkpoint(model, tokenizer, tmp_path / "ckpt", heads=heads)
    loaded, loaded_tokenizer = load_policy(path)
    assert torch.equal(_logits(model, tokenizer, PROMPTS), _logits(loaded, loaded_tokenizer, PROMPTS))
    assert loaded_tokenizer.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    weights = [p.name for p in path.iterdir() if p.suffix not in (".json", ".txt")]
    assert sorted(weights) == sorted(["model.safetensors", HEADS_FILE])
    restored = load_heads(path / HEADS_FILE, ILQLHeads(model.config.n_embd, len(tokenizer)))
    assert all(torch.equal(a, b) for a, b in zip(heads.state_dict().values(), restored.state_dict().values()))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_checkpoint_replaces_an_existing_folder(policy, tmp_path):
    model, tokenizer = policy
    path = tmp_path / "ckpt"
    save_checkpoint(model, tokenizer, path)
    (path / "stale.txt").write_text("from the old checkpoint")
    with torch.no_grad():
        model.transformer.wte.weight[5] += 1.0
    save_checkpoint(model, tokenizer, path)
    loaded, _ = load_policy(path)
    assert torch.equal(loaded.transformer.wte.weight[5], model.transformer.wte.weight[5])
    assert not (path / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_failed_write_leaves_the_old_folder(tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    (path / "old.txt").write_text("old")

    def crash(tmp):
        (tmp / "half.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, crash, folder=True)
    assert [p.name for p in path.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


# -- local Hugging Face folders and their errors ---------------------------------------


def test_local_gpt2_folder_loads(tmp_path):
    tokenizer = _foreign_tokenizer(pad=True)
    _save_gpt2_folder(tmp_path / "gpt2", tokenizer)
    model, loaded = load_policy(tmp_path / "gpt2")
    assert isinstance(model, GPT2LMHeadModel) and model.dtype == torch.float32
    assert loaded.convert_ids_to_tokens(newline_id(loaded)) == "Ċ"  # byte-level BPE's newline byte
    assert model.config.pad_token_id == loaded.pad_token_id
    assert _logits(model, loaded, PROMPTS).shape[-1] == len(loaded)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(tmp_path / 'nowhere'))}.*no such folder"):
        load_policy(tmp_path / "nowhere")


def test_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(tmp_path))}.*no config.json"):
        load_policy(tmp_path)


def test_encoder_config_is_not_a_causal_lm(tmp_path):
    BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path))}.*'bert' model, which is not a causal language model"):
        load_policy(tmp_path)


def test_pickled_weights_are_refused(tmp_path):
    GPT2Config(n_embd=16, n_layer=1, n_head=2).save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(tmp_path))}.*safetensors"):
        load_policy(tmp_path)


def test_tokenizer_without_pad(tmp_path):
    _save_gpt2_folder(tmp_path, _foreign_tokenizer(pad=False))
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path))}.*no pad token.*pad_with_eos=True"):
        load_policy(tmp_path)
    model, tokenizer = load_policy(tmp_path, pad_with_eos=True)
    assert tokenizer.pad_token == tokenizer.eos_token == "<eos>"
    assert model.config.pad_token_id == tokenizer.eos_token_id


def test_tokenizer_whose_newline_is_not_a_token(tmp_path):
    backend = Tokenizer(models.WordLevel({"<pad>": 0, "a": 1, "b": 2, "[UNK]": 3}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # drops the newline altogether
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<pad>")
    with pytest.raises(ValueError, match="newline is not one token"):
        newline_id(tokenizer)
    _save_gpt2_folder(tmp_path, tokenizer)
    with pytest.raises(ValueError, match="newline is not one token"):
        load_policy(tmp_path)


# -- heads -----------------------------------------------------------------------------


def test_head_shapes():
    hidden = torch.randn(2, 3, 8)  # (B, T, H)
    assert ValueHead(8)(hidden).shape == (2, 3)
    out = ILQLHeads(8, 11)(hidden)
    for q in (out.q1, out.q2, out.target_q1, out.target_q2):
        assert q.shape == (2, 3, 11)
    assert out.v.shape == (2, 3)


def test_targets_start_equal_and_take_no_gradient():
    heads = ILQLHeads(8, 11)
    for online, target in ((heads.q1, heads.target_q1), (heads.q2, heads.target_q2)):
        for p, p_target in zip(online.parameters(), target.parameters()):
            assert torch.equal(p, p_target) and p is not p_target
            assert p.requires_grad and not p_target.requires_grad
    hidden = torch.randn(2, 3, 8, requires_grad=True)
    out = heads(hidden)
    assert not out.target_q1.requires_grad and not out.target_q2.requires_grad
    (out.q1.sum() + out.q2.sum() + out.v.sum() + out.target_q1.sum() + out.target_q2.sum()).backward()
    assert all(p.grad is None for p in [*heads.target_q1.parameters(), *heads.target_q2.parameters()])
    assert all(p.grad is not None for p in [*heads.q1.parameters(), *heads.q2.parameters(), *heads.v.parameters()])


def test_polyak_update_moves_targets_by_tau():
    heads = ILQLHeads(4, 5)
    with torch.no_grad():
        for p in [*heads.q1.parameters(), *heads.q2.parameters()]:
            p.fill_(1.0)
        for p in [*heads.target_q1.parameters(), *heads.target_q2.parameters()]:
            p.fill_(0.0)
    heads.polyak_update(0.1)
    for p in [*heads.target_q1.parameters(), *heads.target_q2.parameters()]:
        torch.testing.assert_close(p, torch.full_like(p, 0.1))
    heads.polyak_update(0.1)  # 0.1 * 1 + 0.9 * 0.1
    for p in heads.target_q1.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 0.19))
    heads.polyak_update(1.0)
    for p in heads.target_q2.parameters():
        torch.testing.assert_close(p, torch.ones_like(p))
    with pytest.raises(ValueError, match="tau"):
        heads.polyak_update(1.5)


def test_heads_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    heads = ILQLHeads(8, 11)
    path = save_heads(heads, tmp_path / HEADS_FILE)
    torch.manual_seed(1)
    restored = load_heads(path, ILQLHeads(8, 11))
    for (name, a), (_, b) in zip(heads.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(a, b), name
    assert not next(restored.target_q1.parameters()).requires_grad
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.*saved from ILQLHeads.*ILQLHeads"):
        load_heads(path, ILQLHeads(8, 12))
    with pytest.raises(ValueError, match="ValueHead"):
        load_heads(path, ValueHead(8))
    with pytest.raises(FileNotFoundError):
        load_heads(tmp_path / "missing.safetensors", ValueHead(8))


def test_token_norm_standardises_by_the_last_token_and_travels_with_the_heads(tmp_path):
    torch.manual_seed(0)
    heads = ILQLHeads(8, 11)
    tokens = torch.tensor([3] * 20 + [5] * 30 + [7] * 2)  # token 7: too few states, left as is
    hidden = torch.randn(len(tokens), 8) * torch.linspace(0.1, 5, 8) + 10 * tokens[:, None]
    assert torch.equal(heads.input_norm(hidden, None), hidden)  # the identity until fitted
    heads.input_norm.fit(hidden, tokens, min_states=8, eps=0.0)
    normed = heads.input_norm(hidden, tokens)
    for token in (3, 5):
        rows = normed[tokens == token]
        assert torch.allclose(rows.mean(0), torch.zeros(8), atol=1e-4)
        assert torch.allclose(rows.std(0), torch.ones(8), atol=1e-4)
    assert torch.equal(normed[tokens == 7], hidden[tokens == 7])
    with pytest.raises(ValueError, match="tokens"):
        heads(hidden)
    path = save_heads(heads, tmp_path / HEADS_FILE)
    fresh = load_heads(path, ILQLHeads(8, 11))  # buffers resize to the fitted statistics
    assert fresh.input_norm.fitted and torch.equal(fresh.input_norm(hidden, tokens), normed)
    assert torch.equal(fresh(hidden, tokens).v, heads(hidden, tokens).v)
    # A heads file from before TokenNorm existed loads, with the identity.
    old = {k: v for k, v in ILQLHeads(8, 11).state_dict().items() if not k.startswith("input_norm.")}
    save_file(old, tmp_path / "old.safetensors")
    assert not load_heads(tmp_path / "old.safetensors", ILQLHeads(8, 11)).input_norm.fitted
