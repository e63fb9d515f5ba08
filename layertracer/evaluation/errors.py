"""Errors of the evaluation module; each is a LayerTracerError with a one-line message the CLI prints."""

from layertracer.errors import LayerTracerError, PromptError

__all__ = ["BenchmarkError", "BenchmarkNotFoundError", "BenchmarkFormatError", "PromptError"]


class BenchmarkError(LayerTracerError):
    """A benchmark folder or file cannot be used; the message names the folder or file."""


class BenchmarkNotFoundError(BenchmarkError):
    """The benchmark folder, one of its split folders, or its CSV files are missing."""


class BenchmarkFormatError(BenchmarkError):
    """A benchmark CSV is malformed: a missing column, a short row, a bad answer (file, line and column)."""
