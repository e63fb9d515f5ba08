"""Benchmark specs as text: ``ceval:DIR`` or ``cmmlu:DIR`` (a folder in the official layout).

The engine (``layertracer.evaluation.benchmarks``, whose layouts are keyed by these kinds), the API
and the trial form read them with this grammar. The engine's CLI also takes a bare ``DIR`` and
recognises its layout; the service asks for the kind, since the folder lives on the worker.
"""

from __future__ import annotations

from layertracer.errors import LayerTracerError

BENCHMARK_KINDS = ("ceval", "cmmlu")
# JSON Schema of a service's benchmark spec (the API's schema, the form's check).
BENCHMARK_PATTERN = r"^(" + "|".join(BENCHMARK_KINDS) + r"):\S"


class BenchmarkSpecError(LayerTracerError, ValueError):
    """Bad benchmark text; the message is one line."""


def split_benchmark(text: str) -> tuple[str | None, str]:
    """``"cmmlu:/data/cmmlu"`` -> ("cmmlu", "/data/cmmlu"); a text without a known kind -> (None, text)."""
    kind, sep, folder = str(text).partition(":")
    if sep and kind.strip().lower() in BENCHMARK_KINDS:
        return kind.strip().lower(), folder
    return None, str(text)


def check_benchmark(text: str) -> tuple[str, str]:
    """A service's benchmark spec -> (kind, folder); BenchmarkSpecError unless it is ``KIND:FOLDER``."""
    kind, folder = split_benchmark(text)
    if kind is None or not folder.strip() or not str(text).startswith(kind):
        raise BenchmarkSpecError(f"bad benchmark {text!r}: use " + " or ".join(f"{k}:FOLDER" for k in BENCHMARK_KINDS))
    return kind, folder.strip()
