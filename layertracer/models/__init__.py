"""Model loading and the architecture table."""

from layertracer.models.adapters import (
    ARCHITECTURES,
    ATTENTION,
    LINEAR_ATTENTION,
    SSM,
    ModelAdapter,
    resolve_adapter,
    supported_architectures,
)
from layertracer.models.loading import LoadedModel, ModelInfo, confine_path, load_model, wrap_model

__all__ = [
    "ARCHITECTURES",
    "ATTENTION",
    "LINEAR_ATTENTION",
    "SSM",
    "LoadedModel",
    "ModelAdapter",
    "ModelInfo",
    "confine_path",
    "load_model",
    "resolve_adapter",
    "supported_architectures",
    "wrap_model",
]
