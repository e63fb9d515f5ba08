"""Layer ranges written as text: ``0-7,12`` <-> [0, 1, ..., 7, 12] (0-based, inclusive ranges)."""

from __future__ import annotations

from typing import Iterable

from layertracer.errors import LayerTracerError


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


def parse_ranges(text: str, num_layers: int) -> list[int]:
    """``0-7,12`` -> sorted layer indices; raises LayerTracerError for bad syntax or out-of-bounds layers."""
    layers: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low_text, dash, high_text = part.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if dash else low
        except ValueError:
            raise LayerTracerError(f"bad layer range {part!r}: use forms like 0-7,12") from None
        if low > high:
            raise LayerTracerError(f"bad layer range {part!r}: start is after end")
        if low < 0 or high >= num_layers:
            raise LayerTracerError(f"layer range {part!r} is outside 0-{num_layers - 1}")
        layers.update(range(low, high + 1))
    if not layers:
        raise LayerTracerError(f"no layers in {text!r}")
    return sorted(layers)
