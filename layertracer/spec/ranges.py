"""Layer ranges written as text: ``0-7,12`` <-> [0, 1, ..., 7, 12] (0-based, inclusive ranges).

The one grammar of the engine (allocations, freeze plans, hybrids), the API and the forms.
"""

from __future__ import annotations

import re
from typing import Iterable

from layertracer.errors import LayerTracerError

# A range list as text, before the model's depth is known (spaces around the parts allowed).
RANGES_PATTERN = r"^\s*\d+\s*(-\s*\d+\s*)?(,\s*\d+\s*(-\s*\d+\s*)?)*$"
_PART = re.compile(r"(\d+)\s*(?:-\s*(\d+))?")


class RangeError(LayerTracerError, ValueError):
    """Bad layer-range text; the message is one line naming the part at fault."""


def format_ranges(layers: Iterable[int]) -> str:
    """Sorted layer indices -> ``a-b,c`` text (empty string for no layers)."""
    ordered = sorted(set(int(x) for x in layers))
    parts: list[str] = []
    start = previous = None
    for layer in ordered:
        if start is None:
            start = previous = layer
        elif layer == previous + 1:
            previous = layer
        else:
            parts.append(f"{start}-{previous}" if start != previous else f"{start}")
            start = previous = layer
    if start is not None:
        parts.append(f"{start}-{previous}" if start != previous else f"{start}")
    return ",".join(parts)


def range_bounds(text: str) -> list[tuple[int, int]]:
    """``0-7,12`` -> [(0, 7), (12, 12)], checking only the syntax and that no range runs backwards."""
    bounds = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _PART.fullmatch(part)
        if not match:
            raise RangeError(f"{part!r} is not a layer or a range like 0-7,12")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if low > high:
            raise RangeError(f"the range {part} runs backwards")
        bounds.append((low, high))
    if not bounds:
        raise RangeError(f"no layers in {text!r}")
    return bounds


def parse_ranges(text: str, num_layers: int) -> list[int]:
    """``0-7,12`` -> sorted layer indices of a ``num_layers``-block model; RangeError for bad syntax
    or a layer outside 0..num_layers-1."""
    layers: set[int] = set()
    for low, high in range_bounds(text):
        if high >= num_layers:
            raise RangeError(f"layer {high} does not exist (the model has layers 0-{num_layers - 1})")
        layers.update(range(low, high + 1))
    return sorted(layers)
