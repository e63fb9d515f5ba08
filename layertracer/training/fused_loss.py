"""The causal-LM loss without the full logits tensor: the output head and cross-entropy fused, in chunks.

A standard forward materialises the logits of every position, (B, T, V) in float32, keeps the
log-softmax for backward and makes a gradient of the same size: with a 32k vocabulary and 1024
tokens a step that is three 131 MB tensors, often the largest in the step. Here the head runs on
``chunk_rows`` positions at a time; for each chunk the loss and its gradients (with respect to the
hidden states, and to the head weight and bias when they train) are computed at once, and only those
gradients are kept for backward. The FLOPs are those of the standard path (one head product forward,
two backward); only the memory differs.

Used by ``train`` for models whose logits are ``scale * head(last_hidden_state)`` (every supported
architecture but the soft-capped Gemma 2/3, which keep the standard forward).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from layertracer.models.adapters import ModelAdapter

DEFAULT_CHUNK_ROWS = 1024


class _LinearCrossEntropy(torch.autograd.Function):
    """mean_i CE(scale * (hidden_i @ weight^T + bias), target_i), gradients computed in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, scale: float, chunk_rows: int):
        # hidden (N, d), weight (V, d), bias (V,) or None, targets (N,) int64 -> loss () float32, nats/token
        rows = hidden.shape[0]
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_b = bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.empty_like(hidden) if want_h else None
        # Accumulated in the weight's own dtype, as autograd would (float32 on CPU, bf16 under autocast).
        grad_w = torch.zeros_like(weight) if want_w else None
        grad_b = torch.zeros_like(bias) if want_b else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, rows, chunk_rows):
            h = hidden[start : start + chunk_rows]
            y = targets[start : start + chunk_rows]
            logits = h @ weight.t()
            if bias is not None:
                logits = logits + bias
            logits = logits.float()
            if scale != 1.0:
                logits = logits * scale
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if not (want_h or want_w or want_b):
                continue
            # d(sum of CE)/d(logits) = softmax - onehot; the chain through the scale and the mean.
            grad = logits.sub_(lse[:, None]).exp_()
            grad[torch.arange(len(y), device=y.device), y] -= 1.0
            grad = grad.mul_(scale / rows).to(h.dtype)
            if want_h:
                torch.matmul(grad, weight, out=grad_h[start : start + chunk_rows])
            if want_w:
                grad_w.addmm_(grad.t(), h)
            if want_b:
                grad_b += grad.sum(dim=0)
            del grad, logits
        ctx.save_for_backward(*(t for t in (grad_h, grad_w, grad_b) if t is not None))
        ctx.present = (want_h, want_w, want_b)
        return total / rows

    @staticmethod
    def backward(ctx, grad_output):
        saved = iter(ctx.saved_tensors)
        grads = [next(saved) * grad_output if present else None for present in ctx.present]
        return grads[0], grads[1], grads[2], None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: Optional[torch.Tensor] = None,
    scale: float = 1.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """Mean cross-entropy (nats/token) of ``scale * (hidden @ weight.T + bias)`` against ``targets``.

    hidden: (N, d); weight: (V, d); bias: (V,) or None; targets: (N,) token ids. No (N, V) tensor is
    kept: at most (chunk_rows, V) float32 exists at a time.
    """
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, float(scale), int(chunk_rows))


def logit_scale(config) -> Optional[float]:
    """The factor transformers multiplies the head's output by (1.0 for most models), or None when the
    final logits are not a plain multiple of it (soft-capping)."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text_config, "final_logit_softcapping", None):
        return None
    factor = 1.0
    scale = getattr(text_config, "logit_scale", None)
    divide = getattr(text_config, "logits_scaling", None)
    if isinstance(scale, (int, float)) and scale != 1:
        factor *= float(scale)
    if isinstance(divide, (int, float)) and divide != 1:
        factor /= float(divide)
    return factor


class FusedCausalLM(nn.Module):
    """``model`` with its causal-LM loss computed by ``linear_cross_entropy`` (same value as
    ``model(input_ids=x, labels=x).loss`` for packed blocks without padding).

    forward(input_ids (B, T)) -> loss () float32. The model is a child, so wrapping this module in
    DistributedDataParallel sees exactly the model's parameters.
    """

    def __init__(self, model: nn.Module, head: nn.Linear, scale: float, chunk_rows: int = DEFAULT_CHUNK_ROWS):
        super().__init__()
        self.model = model
        self.head = head  # the same module as inside model: no parameter is registered twice
        self.scale = scale
        self.chunk_rows = chunk_rows

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state
        d = hidden.shape[-1]
        return linear_cross_entropy(
            hidden[:, :-1].reshape(-1, d),
            self.head.weight,
            input_ids[:, 1:].reshape(-1),
            bias=self.head.bias,
            scale=self.scale,
            chunk_rows=self.chunk_rows,
        )


def fused_loss_module(model: nn.Module, adapter: ModelAdapter) -> Optional[FusedCausalLM]:
    """A FusedCausalLM for ``model``, or None when its logits are not ``scale * Linear(last hidden
    state)`` (no plain Linear head, soft-capping, or no base model), where the standard forward is used."""
    head = adapter.head
    base = getattr(model, "base_model", None)
    scale = logit_scale(model.config) if hasattr(model, "config") else None
    if type(head) is not nn.Linear or base is None or base is model or scale is None:
        return None
    return FusedCausalLM(model, head, scale)
