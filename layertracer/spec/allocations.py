"""Allocations (which blocks a trial trains), as text: a preset, ``from-trace[:PATH]`` or layer ranges.

One grammar for the engine (``layertracer.training.allocation.resolve_allocation``), the API and the
trial form. ``train-shallow``: blocks [0, L/2) (the deep half frozen); ``train-deep``: [L/2, L);
``full``: every block (and embeddings, head, final norm); ``from-trace:PATH``: a trace's freeze plan.
"""

from __future__ import annotations

from layertracer.errors import LayerTracerError
from layertracer.spec.ranges import RangeError, range_bounds

PRESETS = ("train-shallow", "train-deep", "full", "from-trace")
# Which parameters of a trainable block train: all, only its mixer (attention / SSM), only its MLP.
PARTS = ("all", "mixer", "mlp")
TOGGLES = ("embeddings", "head", "final_norm")
# Trial slugs (``<allocation>-seed<n>``, stored per metrics row) are built from the ranges text.
MAX_RANGES_CHARS = 150
MAX_LAYER_INDEX = 100_000


class AllocationError(LayerTracerError, ValueError):
    """Bad allocation text; the message is one line."""


def preset_layers(preset: str, num_layers: int) -> list[int]:
    """The blocks a preset trains in a ``num_layers``-block model (``from-trace`` has none of its own)."""
    half = num_layers // 2
    if preset == "train-shallow":
        return list(range(0, max(half, 1)))
    if preset == "train-deep":
        return list(range(half, num_layers))
    if preset == "full":
        return list(range(num_layers))
    raise AllocationError(f"{preset!r} is not a preset with layers of its own; presets: {', '.join(PRESETS[:3])}")


def is_from_trace(text: str) -> bool:
    return text == "from-trace" or text.startswith("from-trace:")


def check_allocation(text: str) -> str:
    """Validate allocation text before the model's depth is known; returns it stripped.

    ``from-trace:PATH``'s file is checked where paths are (the API's roots, the engine's loader);
    ranges are checked for syntax, order and size here, and against the depth by ``parse_ranges``.
    """
    text = (text or "").strip()
    if text in PRESETS:
        return text
    if is_from_trace(text):
        if text == "from-trace:":
            raise AllocationError("allocation 'from-trace:' needs a path")
        return text
    if len(text) > MAX_RANGES_CHARS:
        raise AllocationError(f"bad allocation: layer ranges longer than {MAX_RANGES_CHARS} characters")
    try:
        bounds = range_bounds(text)
    except RangeError as exc:
        raise AllocationError(f"bad allocation {text!r}: {exc} (or a preset: "
                              f"{', '.join(PRESETS[:3])}, from-trace:PATH)") from None
    for low, high in bounds:
        if high > MAX_LAYER_INDEX:
            raise AllocationError(f"bad allocation {text!r}: layer {high} is out of range")
    return text
