"""The fused head + cross-entropy: the same loss and gradients as the model's own forward and loss."""

from __future__ import annotations

import copy

import pytest
import torch

import tiny_models
from layertracer.models import wrap_model
from layertracer.training.fused_loss import fused_loss_module, linear_cross_entropy


def test_linear_cross_entropy_matches_the_full_logits_path():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    bias = torch.randn(50, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (37,), generator=g)
    loss = linear_cross_entropy(hidden, weight, targets, bias=bias, scale=0.5, chunk_rows=8)
    (loss * 3).backward()  # a non-unit upstream gradient reaches every input
    fused = (float(loss.detach()), hidden.grad.clone(), weight.grad.clone(), bias.grad.clone())
    for t in (hidden, weight, bias):
        t.grad = None
    reference = torch.nn.functional.cross_entropy(0.5 * (hidden @ weight.T + bias), targets)
    (reference * 3).backward()
    assert fused[0] == pytest.approx(float(reference.detach()), abs=1e-6)
    for got, want in zip(fused[1:], (hidden.grad, weight.grad, bias.grad)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_frozen_inputs_get_no_gradient():
    hidden = torch.randn(5, 4, requires_grad=True)
    weight = torch.randn(7, 4)  # a frozen head
    linear_cross_entropy(hidden, weight, torch.tensor([0, 1, 2, 3, 4])).backward()
    assert hidden.grad is not None and weight.grad is None


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gpt2", "opt", "mamba", "gemma2"])
def test_fused_module_equals_the_models_own_loss(arch, tokenizer):
    model = tiny_models.build_model(arch).train()
    loaded = wrap_model(model, tokenizer, source=arch)
    fused = fused_loss_module(model, loaded.adapter)
    if arch == "gemma2":  # soft-capped logits: the standard forward is kept
        assert fused is None
        return
    twin = copy.deepcopy(model)
    batch = torch.randint(3, tiny_models.VOCAB, (3, 12), generator=torch.Generator().manual_seed(1))
    loss = fused(batch)
    loss.backward()
    reference = twin(input_ids=batch, labels=batch).loss
    reference.backward()
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), abs=1e-5)
    grads = dict(twin.named_parameters())
    for name, param in model.named_parameters():
        if param.grad is None:
            assert grads[name].grad is None or not grads[name].grad.any(), name
        else:
            torch.testing.assert_close(param.grad, grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)
