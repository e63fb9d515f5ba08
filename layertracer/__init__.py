"""LayerTracer: layer diagnostics for causal language models.

    >>> import layertracer as lt
    >>> loaded = lt.load_model("path/to/model", device="auto")
    >>> result = lt.trace(loaded, "antonyms_en,country_capital_zh", perturbations=["skip", "mask"])
    >>> result.vulnerable_layer, result.freeze_plan.train_ranges

Importing this package imports torch and transformers only: no web stack.
"""

__version__ = "0.1.0"

from layertracer.errors import LayerTracerError  # noqa: E402
from layertracer.freeze_plan import FreezePlan, plan_freeze  # noqa: E402
from layertracer.models import LoadedModel, load_model, resolve_adapter, wrap_model  # noqa: E402
from layertracer.perturbation import Perturbation  # noqa: E402
from layertracer.progress import ProgressEvent  # noqa: E402
from layertracer.results import TraceResult  # noqa: E402
from layertracer.tasks import Task, TaskItem, builtin_task, load_tasks  # noqa: E402
from layertracer.tracer import TraceOptions, trace  # noqa: E402

__all__ = [
    "FreezePlan",
    "LayerTracerError",
    "LoadedModel",
    "Perturbation",
    "ProgressEvent",
    "Task",
    "TaskItem",
    "TraceOptions",
    "TraceResult",
    "builtin_task",
    "load_model",
    "load_tasks",
    "plan_freeze",
    "resolve_adapter",
    "trace",
    "wrap_model",
]
