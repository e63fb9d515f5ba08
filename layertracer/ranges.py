"""Layer ranges as text: the grammar lives in the torch-free spec (``layertracer.spec.ranges``)."""

from layertracer.spec.ranges import RangeError, format_ranges, parse_ranges, range_bounds

__all__ = ["RangeError", "format_ranges", "parse_ranges", "range_bounds"]
