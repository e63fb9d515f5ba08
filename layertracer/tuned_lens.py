"""Tuned-lens translators (Belrose et al., 2023): one affine map per residual state, read before the
model's final norm and head, so the lens of state ``h`` (..., d) is ``logits(h + h @ A.T + b)``.

State 0 is the embedding (the particle baseline) and state ``l + 1`` the output of block ``l``; the last
block's output is the model's own output, so it has no translator. ``A`` and ``b`` start at zero: an
untrained translator is the identity and reproduces the logit lens exactly. Files are safetensors with
the model's fingerprint in the metadata; a file for another model is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from layertracer.errors import LayerTracerError

CACHE_ENV = "LAYERTRACER_TUNED_LENS_CACHE"


class TunedLensError(LayerTracerError):
    """A translator file that is missing, damaged or made for another model."""


class Translators(nn.Module):
    """``count`` residual affine translators of width ``d``: weight (count, d, d), bias (count, d)."""

    def __init__(self, count: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(count, d, d))
        self.bias = nn.Parameter(torch.zeros(count, d))

    def forward(self, states: torch.Tensor, index: int) -> torch.Tensor:
        """Translate states (..., d) of residual state ``index``; the result has their dtype."""
        weight, bias = self.weight[index].to(states), self.bias[index].to(states)
        return states + states @ weight.T + bias


def default_cache_dir() -> Path:
    """``$LAYERTRACER_TUNED_LENS_CACHE``, else ``$XDG_CACHE_HOME/layertracer/tuned-lens``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "layertracer" / "tuned-lens"


def save(translators: Translators, path: str | os.PathLike, fingerprint: str) -> Path:
    """Write ``translators`` as safetensors with ``fingerprint`` (the model's) in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"weight": translators.weight.detach().cpu().contiguous(),
               "bias": translators.bias.detach().cpu().contiguous()}
    save_file(tensors, str(path), metadata={"fingerprint": fingerprint, "format": "layertracer-tuned-lens-1"})
    return path


def load(path: str | os.PathLike, fingerprint: str) -> Translators:
    """Read translators written by ``save``; TunedLensError (one line) when the file is unreadable or
    its fingerprint is not ``fingerprint``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            found = (handle.metadata() or {}).get("fingerprint")
            if found != fingerprint:
                raise TunedLensError(f"tuned-lens file {str(path)!r} was trained for model {found}, not this "
                                     f"model ({fingerprint})")
            weight, bias = handle.get_tensor("weight"), handle.get_tensor("bias")
    except TunedLensError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors' own errors, made one line
        raise TunedLensError(f"cannot read tuned-lens file {str(path)!r}: {str(exc).splitlines()[0]}") from None
    translators = Translators(weight.shape[0], weight.shape[1])
    with torch.no_grad():
        translators.weight.copy_(weight)
        translators.bias.copy_(bias)
    return translators


def residual_states(loaded, ids: torch.Tensor) -> list[torch.Tensor]:
    """The embedding and every block output of a frozen forward on ``ids`` (B, T): L + 1 tensors (B, T, d)."""
    from layertracer.recording import record_stack

    with torch.no_grad():
        recording = record_stack(loaded.model, loaded.adapter, ids)
    return [recording.inputs[0]] + list(recording.outputs)


def lens_kl(loaded, translators: Translators, ids: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(final distribution || translated lens distribution), nats, per
    translated state: (count,). Differentiable in ``translators`` only."""
    states = residual_states(loaded, ids)
    adapter = loaded.adapter
    with torch.no_grad():
        final = torch.log_softmax(adapter.logits(states[-1]).float(), dim=-1)
    losses = []
    for index in range(translators.weight.shape[0]):
        lens = torch.log_softmax(adapter.logits(translators(states[index].float(), index)).float(), dim=-1)
        kl = torch.nn.functional.kl_div(lens, final, log_target=True, reduction="none").sum(-1)
        losses.append(kl.mean())
    return torch.stack(losses)


def train_translators(loaded, blocks, *, steps: int = 250, batch_size: int = 8, lr: float = 1.0,
                      momentum: float = 0.9, weight_decay: float = 1e-3, seed: int = 0) -> Translators:
    """Translators for ``loaded`` trained on token ``blocks`` (N, T) (``shards.TokenBlocks`` or a
    tensor) by the tuned-lens recipe: identity init, loss the sum over states of KL(final || lens),
    SGD with Nesterov momentum and a linearly decaying learning rate. The model stays frozen."""
    d = states_width(loaded)
    translators = Translators(loaded.adapter.num_layers, d)
    optimizer = torch.optim.SGD(translators.parameters(), lr=lr, momentum=momentum, nesterov=True,
                                weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    device = next(loaded.model.parameters()).device
    flags = [p.requires_grad for p in loaded.model.parameters()]
    try:
        for p in loaded.model.parameters():
            p.requires_grad_(False)  # gradients for the translators only
        for _ in range(steps):
            rows = torch.randint(len(blocks), (batch_size,), generator=generator)
            with torch.enable_grad():  # also when a caller runs under no_grad
                loss = lens_kl(loaded, translators, blocks[rows].to(device)).sum()
                optimizer.zero_grad()
                loss.backward()
            optimizer.step()
            schedule.step()
    finally:
        for p, flag in zip(loaded.model.parameters(), flags):
            p.requires_grad_(flag)
    return translators


def states_width(loaded) -> int:
    """The width d of the residual stream (the block outputs)."""
    return int(loaded.info.hidden_size)
