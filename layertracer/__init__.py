"""LayerTracer: layer diagnostics for causal language models.

    >>> import layertracer as lt
    >>> loaded = lt.load_model("path/to/model", device="auto")
    >>> result = lt.trace(loaded, "antonyms_en,country_capital_zh", perturbations=["skip", "mask"])
    >>> result.vulnerable_layer, result.freeze_plan.train_ranges

Importing this package loads nothing heavy: the names below are imported on first use (PEP 562), so
``import layertracer.errors`` (or the CLI's ``--help``) does not pay for torch and transformers. The
engine never imports the web stack.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from layertracer._version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "FreezePlan": "layertracer.freeze_plan",
    "plan_freeze": "layertracer.freeze_plan",
    "LayerTracerError": "layertracer.errors",
    "LoadedModel": "layertracer.models",
    "load_model": "layertracer.models",
    "resolve_adapter": "layertracer.models",
    "wrap_model": "layertracer.models",
    "Perturbation": "layertracer.perturbation",
    "ProgressEvent": "layertracer.progress",
    "TraceResult": "layertracer.results",
    "Task": "layertracer.tasks",
    "TaskItem": "layertracer.tasks",
    "builtin_task": "layertracer.tasks",
    "load_tasks": "layertracer.tasks",
    "TraceOptions": "layertracer.tracer",
    "trace": "layertracer.tracer",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from layertracer.errors import LayerTracerError
    from layertracer.freeze_plan import FreezePlan, plan_freeze
    from layertracer.models import LoadedModel, load_model, resolve_adapter, wrap_model
    from layertracer.perturbation import Perturbation
    from layertracer.progress import ProgressEvent
    from layertracer.results import TraceResult
    from layertracer.tasks import Task, TaskItem, builtin_task, load_tasks
    from layertracer.tracer import TraceOptions, trace


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'layertracer' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
