"""Continued pre-training with layer allocations: corpora, allocations, the training loop."""

from layertracer.training.allocation import (
    PRESETS,
    Allocation,
    ParameterCount,
    apply_allocation,
    count_parameters,
    resolve_allocation,
    trainable_parameters,
)
from layertracer.training.corpus import CorpusError, load_corpus, pack, read_texts
from layertracer.training.loop import StepMetrics, TrainConfig, TrainResult, eval_loss, lr_at, train

__all__ = [
    "PRESETS",
    "Allocation",
    "CorpusError",
    "ParameterCount",
    "StepMetrics",
    "TrainConfig",
    "TrainResult",
    "apply_allocation",
    "count_parameters",
    "eval_loss",
    "load_corpus",
    "lr_at",
    "pack",
    "read_texts",
    "resolve_allocation",
    "train",
    "trainable_parameters",
]
