"""What an experiment is: a base model, a corpus, allocations x seeds, benchmarks, hyper-parameters.

A trial is one (allocation, seed) of an experiment; ``layertracer trial`` is an experiment with one
allocation. Specs are plain data (JSON in and out), so the CLI, the worker and the API share them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from pydantic import ValidationError

from layertracer.errors import LayerTracerError
from layertracer.spec.fields import defaults, validation_message
from layertracer.spec.training import TrainingOptionsSpec
from layertracer.training.loop import TrainConfig

_SPEC = defaults(TrainingOptionsSpec)
PLACEMENT_KEYS = ("device_map", "max_memory", "offload_folder", "attn_implementation", "load_in")


@dataclass
class ExperimentSpec:
    """Everything needed to run (and re-run) an experiment.

    model: local folder or hub id. corpus: text/JSONL/parquet file or folder (see training.corpus).
    allocations: presets (``train-shallow``, ``train-deep``, ``full``), ranges (``0-7,12``),
        ``from-trace:PATH``, or ``from-trace`` alone (trace the base model on ``trace_tasks`` first
        and use its freeze plan). seeds: one trial per allocation and seed.
    benchmarks: ``ceval:DIR`` / ``cmmlu:DIR`` specs evaluated before and after training.
    block_size: tokens per training sequence. holdout: share of corpus blocks kept for eval loss.
    embeddings / head / final_norm / part: allocation toggles (None: the preset's default).
    eval_*: evaluation settings (see layertracer.evaluation.evaluate).
    trace_tasks: tasks for the traces before and after training ("" to skip re-tracing).
    labels: display names of allocations in tables (e.g. {"1-3": "train-shallow (freeze plan)"}).
    """

    model: str
    corpus: str
    allocations: list[str] = field(default_factory=lambda: ["train-shallow"])
    seeds: list[int] = field(default_factory=lambda: [0])
    benchmarks: list[str] = field(default_factory=list)
    # Hyper-parameters and evaluation settings: the spec's defaults (layertracer/spec/training.py).
    steps: int = _SPEC["steps"]
    batch_size: int = _SPEC["batch_size"]
    grad_accum: int = _SPEC["grad_accum"]
    block_size: int = _SPEC["block_size"]
    lr: float = _SPEC["lr"]
    min_lr_ratio: float = _SPEC["min_lr_ratio"]
    warmup_steps: int = _SPEC["warmup_steps"]
    weight_decay: float = _SPEC["weight_decay"]
    max_grad_norm: float = _SPEC["max_grad_norm"]
    eval_every: int = _SPEC["eval_every"]
    checkpoint_every: int = _SPEC["checkpoint_every"]
    autocast: str = _SPEC["autocast"]
    strategy: str = _SPEC["strategy"]
    gradient_checkpointing: bool = _SPEC["gradient_checkpointing"]
    holdout: float = _SPEC["holdout"]
    embeddings: Optional[bool] = None
    head: Optional[bool] = None
    final_norm: Optional[bool] = None
    part: str = _SPEC["part"]
    eval_mode: str = _SPEC["eval_mode"]
    eval_shots: int = _SPEC["eval_shots"]
    eval_limit: Optional[int] = _SPEC["eval_limit"]
    eval_batch_size: int = _SPEC["eval_batch_size"]
    trace_tasks: str = ""
    trace_limit: int = _SPEC["trace_limit"]
    trace_perturbations: list[str] = field(default_factory=lambda: ["skip"])
    device: str = "auto"
    dtype: str = "auto"
    labels: dict[str, str] = field(default_factory=dict)
    # Big-model placement, load_model's keyword arguments (device_map, max_memory, offload_folder,
    # attn_implementation, load_in; layertracer.spec.loading has their grammar). A trial trains what
    # it loads, so a placement that leaves weights offloaded (to the CPU beside a GPU, or to disk) is
    # refused when the model is loaded; it serves a model spread over several GPUs.
    placement: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.allocations:
            raise LayerTracerError("an experiment needs at least one allocation")
        if not self.seeds:
            raise LayerTracerError("an experiment needs at least one seed")
        if len(set(self.allocations)) != len(self.allocations):
            raise LayerTracerError("an allocation is listed twice")
        if len(set(self.seeds)) != len(self.seeds):
            raise LayerTracerError("a seed is listed twice")
        try:  # the spec's limits hold here too: the engine refuses what the API and the forms refuse
            TrainingOptionsSpec.model_validate({name: getattr(self, name) for name in TrainingOptionsSpec.model_fields})
        except ValidationError as exc:
            raise LayerTracerError(f"experiment option {validation_message(exc)}") from None
        unknown = sorted(set(self.labels) - set(self.allocations))
        if unknown:
            raise LayerTracerError(f"labels name allocation(s) the experiment does not run: {', '.join(unknown)}")
        if any(a == "from-trace" for a in self.allocations) and not self.trace_tasks:
            raise LayerTracerError("allocation 'from-trace' needs trace tasks (--trace-tasks) to trace the base model")
        unknown = sorted(set(self.placement) - set(PLACEMENT_KEYS))
        if unknown:
            raise LayerTracerError(f"unknown placement option(s): {', '.join(unknown)}")
        if self.strategy == "fsdp" and (self.placement.get("device_map") or self.placement.get("load_in")):
            raise LayerTracerError("strategy fsdp places the model itself (a shard on each process): drop the "
                                   "device map and the quantized loading, or use strategy ddp")
        self.train_config(self.seeds[0]).validate()

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            grad_accum=self.grad_accum,
            lr=self.lr,
            min_lr_ratio=self.min_lr_ratio,
            warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            seed=seed,
            eval_every=self.eval_every,
            checkpoint_every=self.checkpoint_every,
            autocast=self.autocast,
            strategy=self.strategy,
            gradient_checkpointing=self.gradient_checkpointing,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LayerTracerError(f"unknown experiment field(s): {', '.join(unknown)}")
        return cls(**data)


def trial_slug(allocation: str, seed: int) -> str:
    """A folder-safe name for a trial: ``train-shallow-seed1``, ``0-7_12-seed2``."""
    name = re.sub(r"[^A-Za-z0-9.-]+", "_", allocation.split(":", 1)[0].replace(",", "_")).strip("_") or "allocation"
    if ":" in allocation:  # from-trace:PATH: tell different paths apart
        name += "-" + hashlib.sha256(allocation.encode()).hexdigest()[:8]
    return f"{name}-seed{seed}"
