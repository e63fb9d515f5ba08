"""The options of continued pre-training (trials and experiments), declared once: their defaults and
their limits.

The API's trial and experiment requests take these fields; the New trial / experiment form reads
their bounds; ``layertracer trial`` and ``layertracer experiment`` take their defaults and ranges; the
engine's ``ExperimentSpec`` and ``TrainConfig`` take their defaults and check their values.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from layertracer.spec.allocations import PARTS

MAX_STEPS = 10_000_000


class TrainingOptionsSpec(BaseModel):
    """Hyper-parameters of a trial and how it is evaluated (see docs/definitions.md)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=100, ge=1, le=MAX_STEPS, description="optimizer steps")
    batch_size: int = Field(default=8, ge=1, le=4096, description="sequences per micro-batch (over all processes)")
    grad_accum: int = Field(default=1, ge=1, le=4096, description="micro-batches per optimizer step")
    block_size: int = Field(default=256, ge=8, le=131_072, description="tokens per training sequence")
    lr: float = Field(default=1e-4, gt=0.0, le=1.0, description="peak learning rate (after warmup; cosine decay after)")
    min_lr_ratio: float = Field(default=0.1, ge=0.0, le=1.0, description="the cosine decay ends at lr x this")
    warmup_steps: int = Field(default=10, ge=0, le=MAX_STEPS, description="linear warmup steps")
    weight_decay: float = Field(default=0.01, ge=0.0, le=10.0, description="AdamW weight decay")
    max_grad_norm: float = Field(default=1.0, ge=0.0, le=1e6, description="gradient clipping norm (0: off)")
    eval_every: int = Field(default=0, ge=0, le=MAX_STEPS, description="held-out loss every this many steps (0: never)")
    checkpoint_every: int = Field(default=50, ge=0, le=MAX_STEPS, description="checkpoint every this many steps (0: never)")
    autocast: Literal["auto", "bf16", "fp16", "off"] = Field(default="auto", description="the forward's precision: "
                                                           "auto (bf16 on CUDA or for bf16 weights), bf16, fp16 "
                                                           "(with a gradient scaler) or off")
    strategy: Literal["ddp", "fsdp"] = Field(default="ddp", description="with several processes: ddp (each "
                                             "holds the whole model) or fsdp (parameters, gradients and "
                                             "AdamW state sharded over them)")
    gradient_checkpointing: bool = Field(default=False, description="recompute each block's activations in "
                                         "backward: less memory, about a third more compute")
    holdout: float = Field(default=0.05, ge=0.0, lt=0.5, description="share of corpus blocks kept for the held-out loss")
    part: Literal[PARTS] = Field(default="all", description="within trainable blocks: all, the mixer or the MLP")
    eval_mode: Literal["loglikelihood", "answer-only", "cloze"] = Field(default="loglikelihood", description="how benchmarks are scored")
    eval_shots: int = Field(default=5, ge=0, le=16, description="few-shot examples from the dev split")
    eval_limit: Optional[int] = Field(default=None, ge=1, le=MAX_STEPS, description="at most this many questions per subject")
    eval_batch_size: int = Field(default=8, ge=1, le=1024, description="sequences per forward pass in evaluation")
    trace_limit: int = Field(default=20, ge=1, le=100_000, description="prompts per task in the traces before and after")


# The fields the engine's TrainConfig shares with the spec (the rest belong to the experiment).
TRAIN_CONFIG_FIELDS = ("steps", "batch_size", "grad_accum", "lr", "min_lr_ratio", "warmup_steps", "weight_decay",
                       "max_grad_norm", "eval_every", "checkpoint_every", "autocast", "strategy",
                       "gradient_checkpointing")
