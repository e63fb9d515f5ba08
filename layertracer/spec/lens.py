"""The lens a trace reads the residual stream with, and where tuned-lens translator files are kept.

Torch-free, so the API can check that a translator file exists before it queues a ``lens=tuned`` trace
and the CLI can name the file before it loads a model. The engine's side (training, loading, applying)
is ``layertracer.tuned_lens``.

A translator file for a model lives in a cache folder as ``<fingerprint with ':' as '-'>.safetensors``
(the model's content fingerprint, ``layertracer.models.loading.fingerprint``): one file per model, found
again by the fingerprint alone. The CLI's cache is ``$LAYERTRACER_TUNED_LENS_CACHE``, else
``$XDG_CACHE_HOME/layertracer/tuned-lens`` (beside the tokenized corpora); the service's is
``<data_dir>/tuned-lens``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from layertracer.errors import LayerTracerError

LensKind = Literal["logit", "tuned"]
LENS_KINDS: tuple[str, ...] = ("logit", "tuned")
CACHE_ENV = "LAYERTRACER_TUNED_LENS_CACHE"
SUFFIX = ".safetensors"
# What ``models.loading.fingerprint`` writes: "sha256:<hex>" for a folder, "id:<hex>" for a hub id.
# Only such strings become file names, so a fingerprint can never name a path outside the cache.
FINGERPRINT_RE = re.compile(r"^(sha256|id):[0-9a-f]{8,64}$")


def default_cache_dir() -> Path:
    """``$LAYERTRACER_TUNED_LENS_CACHE``, else ``$XDG_CACHE_HOME/layertracer/tuned-lens``
    (``~/.cache/layertracer/tuned-lens``)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "layertracer" / "tuned-lens"


def file_name(fingerprint: str) -> str:
    """The cache's file name for a model's translators; LayerTracerError for a malformed fingerprint."""
    if not isinstance(fingerprint, str) or not FINGERPRINT_RE.match(fingerprint):
        raise LayerTracerError(f"not a model fingerprint: {fingerprint!r}")
    return fingerprint.replace(":", "-") + SUFFIX


def cached_file(fingerprint: str, cache_dir: Optional[str | os.PathLike] = None) -> Path:
    """Where the translators of the model with ``fingerprint`` are kept in ``cache_dir`` (default:
    ``default_cache_dir()``); the file may not exist."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / file_name(fingerprint)


def train_hint(model: str, output: Optional[str | os.PathLike] = None) -> str:
    """The command that trains translators for ``model`` (into ``output`` when given)."""
    out = f" --out {output}" if output is not None else ""
    return f"layertracer train-lens --model {model} --corpus CORPUS{out}"


class LensTrainingSpec(BaseModel):
    """How ``layertracer train-lens`` trains a model's translators (the tuned-lens recipe; the engine's
    ``tuned_lens.train_translators`` takes its defaults from here)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=250, ge=1, le=1_000_000, description="optimizer steps (tuned-lens: 250)")
    batch_size: int = Field(default=8, ge=1, le=4096, description="corpus blocks per step")
    block_size: int = Field(default=128, ge=2, le=131_072, description="tokens per corpus block")
    lr: float = Field(default=1.0, gt=0.0, le=100.0, description=(
        "learning rate, scaled by 1 - momentum as tuned-lens does (1 is its default), decayed linearly to 0"))
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="Nesterov momentum")
    weight_decay: float = Field(default=1e-3, ge=0.0, le=1.0, description="weight decay of the maps and biases")
    holdout: float = Field(default=0.1, ge=0.0, lt=0.5, description="share of corpus blocks kept for the held-out KL")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="seeds the block order and the held-out split")
