"""Tuned-lens translators (Belrose et al., 2023): one affine map per residual state, read before the
model's final norm and head, so the lens of state ``h`` (..., d) is ``logits(h + h @ A.T + b)``.

State 0 is the embedding (the particle baseline) and state ``l + 1`` the output of block ``l``; the last
block's output is the model's own output, so it has no translator. ``A`` and ``b`` start at zero: an
untrained translator is the identity and reproduces the logit lens exactly. Files are safetensors with
the model's fingerprint in the metadata; a file for another model is refused. Where files are cached
(one per model fingerprint) is ``layertracer.spec.lens``.

The recipe against tuned-lens's published trainer (AlignmentResearch/tuned-lens at abdac0c,
``tuned_lens/scripts/train_loop.py``, ``scripts/ingredients.py``, ``nn/lenses.py``), read, not copied:

- Same: a residual translator ``h + W h + b`` per hidden state but the last, W and b zero at init
  (regularised toward the identity, not toward zero); loss KL(final distribution || lens distribution)
  at the same position (no token shift), mean over tokens, summed over the translators; the lens is the
  model's own final norm and unembedding; SGD with Nesterov momentum 0.9, weight decay 1e-3 on the
  weights and the biases alike (both trained; tuned-lens also offers bias-only, we do not); the learning
  rate scaled by ``1 - momentum`` (PyTorch's momentum multiplies the step by ``1 / (1 - momentum)``;
  with the scaling ``lr = 1`` is the default, as there) and decayed linearly to 0 over the steps, no
  warm-up (tuned-lens warms up only for Adam); gradient norm clipped at 1; 250 steps by default; the
  data seen in a seeded shuffled order, every block once before any repeats.
- Different: a step is ``batch_size`` blocks of ``block_size`` tokens (8 x 128 by default) instead of
  2**18 tokens in 2048-token chunks with gradient accumulation: the models this tool traces on a laptop
  and the corpora it is given are small, and 2**18 tokens a step would be most of such a corpus; bigger
  runs set ``--batch-size`` / ``--block-size``. The translators
  run in float32 (tuned-lens runs them under bf16 autocast to save memory on large models); they are
  trained in one process (no DDP/FSDP, no ZeRO); no Adam option, no cross-entropy loss, no checkpoints
  during training (a few hundred steps of small matrices); files are safetensors with the model's
  fingerprint (tuned-lens saves a torch state dict, which we do not read or write: no pickle).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from layertracer.errors import LayerTracerError
from layertracer.spec.fields import defaults
from layertracer.spec.lens import LensTrainingSpec

FORMAT = "layertracer-tuned-lens-1"
CLIP_NORM = 1.0  # tuned-lens clips the translators' gradient norm at 1
_RECIPE = defaults(LensTrainingSpec)  # steps, batch size, lr, momentum, weight decay, seed: declared once


class TunedLensError(LayerTracerError):
    """A translator file that is missing, damaged or made for another model."""


class Translators(nn.Module):
    """``count`` residual affine translators of width ``d``: weight (count, d, d), bias (count, d).

    ``source`` says where loaded translators came from: {"fingerprint", "sha256", "file", and the
    training metadata the file carries}; empty for translators made in memory."""

    def __init__(self, count: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(count, d, d))
        self.bias = nn.Parameter(torch.zeros(count, d))
        self.source: dict[str, Any] = {}

    @property
    def count(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, states: torch.Tensor, index: int) -> torch.Tensor:
        """Translate states (..., d) of residual state ``index``, computed in float32 on the states'
        device; the result has the states' dtype (zero maps give back the states bit for bit)."""
        x = states.float()
        weight = self.weight[index].to(device=x.device, dtype=torch.float32)
        bias = self.bias[index].to(device=x.device, dtype=torch.float32)
        return (x + x @ weight.T + bias).to(states.dtype)

    def placed(self, device: torch.device | str) -> "Translators":
        """A detached float32 copy on ``device`` (for a trace; this one stays where it is)."""
        copy = Translators(self.count, int(self.weight.shape[1]))
        with torch.no_grad():
            copy.weight.copy_(self.weight.detach())
            copy.bias.copy_(self.bias.detach())
        copy.source = dict(self.source)
        return copy.to(device).requires_grad_(False)


def sha256_of(path: str | os.PathLike) -> str:
    """The file's sha256 (hex), read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def save(translators: Translators, path: str | os.PathLike, fingerprint: str,
         metadata: Optional[dict[str, str]] = None) -> Path:
    """Write ``translators`` as safetensors with ``fingerprint`` (the model's) and ``metadata`` (how
    they were trained: strings) in the header; written to a temporary name, then renamed."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"weight": translators.weight.detach().cpu().float().contiguous(),
               "bias": translators.bias.detach().cpu().float().contiguous()}
    temp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(temp), metadata={**(metadata or {}), "fingerprint": fingerprint, "format": FORMAT})
    temp.replace(path)
    return path


def load(path: str | os.PathLike, fingerprint: str) -> Translators:
    """Read translators written by ``save``; TunedLensError (one line) when the file is missing or
    unreadable or its fingerprint is not ``fingerprint``. ``source`` gets the file's sha256."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise TunedLensError(f"tuned-lens file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            found = metadata.get("fingerprint")
            if found != fingerprint:
                raise TunedLensError(f"tuned-lens file {str(path)!r} was trained for model {found}, not this "
                                     f"model ({fingerprint})")
            weight, bias = handle.get_tensor("weight"), handle.get_tensor("bias")
    except TunedLensError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors' own errors, made one line
        raise TunedLensError(f"cannot read tuned-lens file {str(path)!r}: {str(exc).splitlines()[0]}") from None
    if weight.dim() != 3 or weight.shape[1] != weight.shape[2] or tuple(bias.shape) != tuple(weight.shape[:2]):
        raise TunedLensError(f"tuned-lens file {str(path)!r} holds no translators (weight {tuple(weight.shape)}, "
                             f"bias {tuple(bias.shape)})")
    translators = Translators(weight.shape[0], weight.shape[1])
    with torch.no_grad():
        translators.weight.copy_(weight)
        translators.bias.copy_(bias)
    metadata.pop("format", None)
    translators.source = {**metadata, "file": Path(path).name, "sha256": sha256_of(path)}
    return translators


def check_fits(translators: Translators, loaded) -> None:
    """TunedLensError unless ``translators`` have one map per block of ``loaded`` at its width."""
    want = (loaded.adapter.num_layers, states_width(loaded))
    have = (translators.count, int(translators.weight.shape[1]))
    if have != want:
        raise TunedLensError(f"the translators are {have[0]} maps of width {have[1]}; this model needs "
                             f"{want[0]} of width {want[1]}")


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
    for index in range(translators.count):
        lens = torch.log_softmax(adapter.logits(translators(states[index].float(), index)).float(), dim=-1)
        kl = torch.nn.functional.kl_div(lens, final, log_target=True, reduction="none").sum(-1)
        losses.append(kl.mean())
    return torch.stack(losses)


def held_out_kl(loaded, translators: Translators, blocks, batch_size: int = 8) -> list[float]:
    """``lens_kl`` over all of ``blocks`` (N, T), token-weighted: per translated state, nats."""
    device = next(loaded.model.parameters()).device
    total = torch.zeros(translators.count, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(blocks), batch_size):
            rows = list(range(start, min(start + batch_size, len(blocks))))
            total += lens_kl(loaded, translators, blocks[rows].to(device)).double().cpu() * len(rows)
    return (total / max(len(blocks), 1)).tolist()


def train_translators(loaded, blocks, *, steps: int = _RECIPE["steps"], batch_size: int = _RECIPE["batch_size"],
                      lr: float = _RECIPE["lr"], momentum: float = _RECIPE["momentum"],
                      weight_decay: float = _RECIPE["weight_decay"], seed: int = _RECIPE["seed"],
                      on_step: Optional[Callable[[int, float], None]] = None) -> Translators:
    """Translators for ``loaded`` trained on token ``blocks`` (N, T) (``shards.TokenBlocks`` or a
    tensor) by the tuned-lens recipe (the module docstring says where it differs): identity init, loss
    the sum over states of KL(final || lens), SGD with Nesterov momentum at ``lr * (1 - momentum)``
    decaying linearly to 0, gradient norm clipped at 1. The model stays frozen. ``on_step(step, loss)``
    after every step (1-based; the loss in nats, summed over the states)."""
    if steps < 1 or batch_size < 1 or not len(blocks):
        raise TunedLensError("training translators needs at least one step, one block a step and a corpus")
    d = states_width(loaded)
    translators = Translators(loaded.adapter.num_layers, d)
    optimizer = torch.optim.SGD(translators.parameters(), lr=lr * (1 - momentum), momentum=momentum,
                                nesterov=True, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
    generator = torch.Generator().manual_seed(seed)
    device = next(loaded.model.parameters()).device
    translators.to(device)
    order: list[int] = []
    flags = [p.requires_grad for p in loaded.model.parameters()]
    try:
        for p in loaded.model.parameters():
            p.requires_grad_(False)  # gradients for the translators only
        for step in range(1, steps + 1):
            while len(order) < batch_size:  # a shuffled pass over the blocks, then the next one
                order.extend(torch.randperm(len(blocks), generator=generator).tolist())
            rows, order = order[:batch_size], order[batch_size:]
            with torch.enable_grad():  # also when a caller runs under no_grad
                loss = lens_kl(loaded, translators, blocks[rows].to(device)).sum()
                optimizer.zero_grad()
                loss.backward()
            torch.nn.utils.clip_grad_norm_(translators.parameters(), CLIP_NORM)
            optimizer.step()
            schedule.step()
            if on_step is not None:
                on_step(step, float(loss.detach()))
    finally:
        for p, flag in zip(loaded.model.parameters(), flags):
            p.requires_grad_(flag)
    return translators.cpu()


def states_width(loaded) -> int:
    """The width d of the residual stream (the block outputs)."""
    return int(loaded.info.hidden_size)
