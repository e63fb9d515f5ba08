"""The options of a trace, declared once: their defaults and their limits.

The API takes this model as the ``options`` of ``POST /traces``; the New trace form reads its bounds
(``layertracer.spec.fields.number_bounds``); ``layertracer trace`` takes its defaults and ranges; the
engine's ``TraceOptions`` takes its defaults and checks its values against it. Limits are there to
refuse nonsense early (a batch of a million prompts), not to cap real work.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from layertracer.spec.lens import LensKind

SEED_MAX = 2**31 - 1


class TraceOptionsSpec(BaseModel):
    """Options of a trace (the engine's TraceOptions that a user sets, plus ``limit`` and ``shots`` of
    the built-in prompts)."""

    model_config = ConfigDict(extra="forbid")

    limit: Optional[int] = Field(default=None, ge=1, le=100_000, description="at most this many prompts per task")
    shots: int = Field(default=3, ge=0, le=16, description="few-shot examples in built-in prompts")
    batch_size: int = Field(default=8, ge=1, le=1024, description="prompts per forward pass")
    top_k: int = Field(default=10, ge=1, le=100, description="tokens kept per layer in the lens")
    seed: int = Field(default=0, ge=0, le=SEED_MAX, description="seeds the noise and mask draws and the bootstrap")
    draws: int = Field(default=3, ge=1, le=100, description="draws averaged for noise and mask perturbations")
    particle_delta: float = Field(default=0.1, ge=0.0, le=1.0, description="task particle: minimum jump of p(target)")
    particle_floor: float = Field(default=0.1, ge=0.0, le=1.0, description="task particle: minimum p(target)")
    plan_boundary: Literal["median", "min"] = Field(default="median", description="freeze-plan boundary: the median or the earliest particle")
    min_train_layers: int = Field(default=1, ge=0, le=100_000, description="freeze plan: at least this many layers stay trainable")
    position_task: Optional[str] = Field(default=None, max_length=200, description="task of the per-position view (default: the first)")
    position_prompt: int = Field(default=0, ge=0, le=1_000_000, description="prompt index of the per-position view")
    similarity: StrictBool = Field(default=True, description="compute the layer x layer CKA matrix")
    position_view: StrictBool = Field(default=True, description="compute the per-position view for one prompt")
    lens: LensKind = Field(default="logit", description=(
        "read the residual stream with the logit lens, or with the tuned lens (per-layer affine "
        "translators trained for this model by `layertracer train-lens`); the particles and the plan "
        "follow the lens"))


# What the engine's TraceOptions shares with the spec (limit and shots belong to the task loader).
ENGINE_FIELDS = tuple(name for name in TraceOptionsSpec.model_fields if name not in ("limit", "shots"))
