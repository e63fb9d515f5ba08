"""Single-layer perturbations for the sensitivity scan.

Each perturbation turns block l's clean output into a perturbed one; the rest of the stack is then
replayed from l+1. Definitions (h_in, h_out: the block's input and output, (T, d) per prompt):

- ``skip``: h_out' = h_in. The block is removed from the residual stream.
- ``zero-attn``: the block re-run with its attention / token mixer (attention, linear attention or
  SSM mixer) contributing zeros.
- ``zero-mlp``: the block re-run with its MLP contributing zeros (not applicable to blocks without an
  MLP, such as Mamba's: those layers get no value).
- ``noise``: h_out' = h_out + scale * rms(h_out) * e, e ~ N(0, I), rms per token over the hidden units;
  seeded per (seed, layer, draw, prompt) so results do not depend on batching.
- ``mask``: h_out' = h_in + m * (h_out - h_in): a random keep-mask m over the d hidden units (each kept
  with probability ``keep``), the same for every token and prompt of a draw, seeded per
  (seed, layer, draw). keep = 0 is ``skip``; keep = 1 changes nothing.

Stochastic kinds are averaged over ``draws`` draws (JS per draw, then the mean).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from layertracer.errors import LayerTracerError
from layertracer.models.adapters import ModelAdapter
from layertracer.recording import StackRecording, zero_child_output
from layertracer.spec.perturbations import (  # noqa: F401 (KINDS re-exported: the engine's list of kinds)
    DEFAULT_KEEP,
    DEFAULT_SCALE,
    KINDS,
    STOCHASTIC,
    parse_perturbation,
)



@dataclass(frozen=True)
class Perturbation:
    """A perturbation kind and its parameters (see the module docstring for the exact definitions)."""

    kind: str
    scale: float = DEFAULT_SCALE
    keep: float = DEFAULT_KEEP
    draws: int = 1
    seed: int = 0
    params: dict = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        if self.kind == "noise":
            return f"noise(scale={self.scale:g})"
        if self.kind == "mask":
            return f"mask(keep={self.keep:g})"
        return self.kind

    def describe(self) -> dict:
        described: dict = {"kind": self.kind, "draws": self.draws, "seed": self.seed}
        if self.kind == "noise":
            described["scale"] = self.scale
        if self.kind == "mask":
            described["keep"] = self.keep
        return described

    @classmethod
    def parse(cls, text: str, *, seed: int = 0, draws: int = 3) -> "Perturbation":
        """``skip``, ``zero-attn``, ``zero-mlp``, ``noise[:scale=S][,draws=N]``, ``mask[:keep=R][,draws=N]``
        (the grammar of ``layertracer.spec.perturbations``); ``draws`` is the default for stochastic kinds."""
        parsed = parse_perturbation(text)
        n_draws = parsed.draws if parsed.draws is not None else (draws if parsed.kind in STOCHASTIC else 1)
        if n_draws < 1:
            raise LayerTracerError("draws must be at least 1")
        return cls(kind=parsed.kind, scale=DEFAULT_SCALE if parsed.scale is None else parsed.scale,
                   keep=DEFAULT_KEEP if parsed.keep is None else parsed.keep, draws=n_draws, seed=seed)


def _seed(*parts: int) -> int:
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value * 6364136223846793005 + int(part) + 1442695040888963407) % (1 << 63)
    return value


def applicable(perturbation: Perturbation, adapter: ModelAdapter, layer: int) -> bool:
    """False where the block has no part to zero (zero-mlp on a Mamba block)."""
    if perturbation.kind == "zero-attn":
        return adapter.mixer_names[layer] is not None
    if perturbation.kind == "zero-mlp":
        return adapter.mlp_names[layer] is not None
    return True


def perturbed_output(
    perturbation: Perturbation,
    adapter: ModelAdapter,
    recording: StackRecording,
    layer: int,
    draw: int,
    prompt_ids: Sequence[int],
    lengths: Sequence[int],
) -> Optional[torch.Tensor]:
    """Block ``layer``'s perturbed output (B, T, d), or None where not applicable.

    prompt_ids: (B,) global prompt indices, which seed the per-prompt noise. lengths: (B,) each
    prompt's real token count: noise is drawn for those positions only (padding gets none), so a
    prompt's noise never depends on how long its batch was padded.
    """
    h_in, h_out = recording.inputs[layer], recording.outputs[layer]
    kind = perturbation.kind
    if kind == "skip":
        return h_in
    if kind in ("zero-attn", "zero-mlp"):
        child = adapter.mixer_names[layer] if kind == "zero-attn" else adapter.mlp_names[layer]
        if child is None:
            return None
        block = adapter.blocks[layer]
        with zero_child_output(block, child):
            return recording.calls[layer].call(block, h_in)
    if kind == "noise":
        batch, length, width = h_out.shape
        noise = torch.zeros((batch, length, width), dtype=torch.float32)
        for row, (prompt, real) in enumerate(zip(prompt_ids, lengths)):
            generator = torch.Generator().manual_seed(_seed(perturbation.seed, layer, draw, prompt))
            noise[row, :real] = torch.randn((real, width), generator=generator)
        noise = noise.to(device=h_out.device, dtype=h_out.dtype)
        rms = h_out.float().pow(2).mean(dim=-1, keepdim=True).sqrt().to(h_out.dtype)
        return h_out + perturbation.scale * rms * noise
    if kind == "mask":
        generator = torch.Generator().manual_seed(_seed(perturbation.seed, layer, draw))
        keep = (torch.rand(h_out.shape[-1], generator=generator) < perturbation.keep).to(
            device=h_out.device, dtype=h_out.dtype
        )
        return h_in + keep * (h_out - h_in)
    raise LayerTracerError(f"unknown perturbation {kind!r}")
