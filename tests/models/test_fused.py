"""The engine's faster modules (`lmrl_ray.models.fused`) against the stock ones, on a
small random GPT-2 and on a Llama-style model with `nn.Linear` layers."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.activations import NewGELUActivation
from transformers.pytorch_utils import Conv1D

from lmrl_ray.models.fused import (
    FusedTanhGELU,
    PackedLinear,
    fuse_activations,
    pack_linear_weights,
    packing_available,
)

needs_packing = pytest.mark.skipif(not packing_available(), reason="this torch build lacks oneDNN's linear ops")


def gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    return GPT2LMHeadModel(config).eval()


def logits(model, ids: torch.Tensor, grad: bool = False) -> torch.Tensor:
    with torch.set_grad_enabled(grad):
        return model(input_ids=ids).logits


IDS = torch.randint(0, 97, (3, 11), generator=torch.Generator().manual_seed(1))


def test_fused_gelu_computes_gpt2s_gelu():
    x = torch.linspace(-8, 8, 10_001)
    torch.testing.assert_close(FusedTanhGELU()(x), NewGELUActivation()(x), atol=1e-6, rtol=0)
    model, stock = gpt2(), gpt2()
    assert fuse_activations(model) == 2  # one per block
    assert not any(isinstance(m, NewGELUActivation) for m in model.modules())
    torch.testing.assert_close(logits(model, IDS), logits(stock, IDS), atol=1e-5, rtol=0)


@needs_packing
def test_packed_layers_compute_the_stock_products_and_keep_the_parameters():
    model, stock = gpt2(), gpt2()
    names = [name for name, _ in model.named_parameters()]
    # c_attn, attn.c_proj, c_fc, mlp.c_proj per block; the tied output embedding stays.
    assert pack_linear_weights(model) == 8
    assert sum(isinstance(m, PackedLinear) for m in model.modules()) == 8
    assert not any(isinstance(m, Conv1D) for m in model.modules())
    assert [name for name, _ in model.named_parameters()] == names
    assert model.lm_head.weight is model.transformer.wte.weight
    with torch.inference_mode():
        torch.testing.assert_close(logits(model, IDS), logits(stock, IDS), atol=1e-4, rtol=0)
    # With gradients on, the stock product runs and gradients reach the weights.
    logits(model, IDS, grad=True).sum().backward()
    assert model.transformer.h[0].mlp.c_fc.weight.grad is not None


@needs_packing
def test_packed_layers_follow_new_weights_and_copy_and_pickle():
    model = gpt2()
    pack_linear_weights(model)
    with torch.inference_mode():
        before = logits(model, IDS)
    model.load_state_dict(gpt2(seed=1).state_dict())  # in place: the packed copies must be rebuilt
    with torch.inference_mode():
        after = logits(model, IDS)
        torch.testing.assert_close(after, logits(gpt2(seed=1), IDS), atol=1e-4, rtol=0)
    assert not torch.allclose(before, after)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with torch.inference_mode():
            torch.testing.assert_close(logits(clone, IDS), after, atol=1e-6, rtol=0)


@needs_packing
def test_linear_layers_of_other_families_are_packed_and_the_lm_head_is_not():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    stock = copy.deepcopy(model)
    assert pack_linear_weights(model) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert isinstance(model.lm_head, torch.nn.Linear)
    with torch.inference_mode():
        torch.testing.assert_close(logits(model, IDS), logits(stock, IDS), atol=1e-4, rtol=0)
