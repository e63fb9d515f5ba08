"""Benchmark specs as text: ``ceval:DIR`` or ``cmmlu:DIR`` (a folder in the official layout), or
``lm-eval:TASK`` / ``lm-eval:FILE.yaml`` (an lm-evaluation-harness task, or a task config file).

The engine (``layertracer.evaluation.benchmarks``, whose layouts are keyed by the folder kinds, and
``layertracer.evaluation.harness``), the API and the trial form read them with this grammar. The
engine's CLI also takes a bare ``DIR`` and recognises its layout; the service asks for the kind, since
the folder lives on the worker. Several tasks are several benchmarks (``-b lm-eval:arc_easy,lm-eval:piqa``),
each compared on its own.
"""

from __future__ import annotations

import re

from typing import Optional

from layertracer.errors import LayerTracerError

FOLDER_KINDS = ("ceval", "cmmlu")
# The options of a C-Eval / CMMLU question (the folder kinds' columns A..D): the engine's loader reads
# them, and the chance accuracy of those benchmarks is one over their number.
CHOICE_LETTERS: tuple[str, str, str, str] = ("A", "B", "C", "D")
LM_EVAL = "lm-eval"
BENCHMARK_KINDS = (*FOLDER_KINDS, LM_EVAL)
TASK_FILE_SUFFIXES = (".yaml", ".yml")
TASK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")  # lm-eval's task and group names
BENCHMARK_FORMS = ", ".join(f"{k}:FOLDER" for k in FOLDER_KINDS) + f", {LM_EVAL}:TASK or {LM_EVAL}:FILE.yaml"
# JSON Schema of a service's benchmark spec (the API's schema, the form's check).
BENCHMARK_PATTERN = r"^(" + "|".join(re.escape(k) for k in BENCHMARK_KINDS) + r"):\S"


class BenchmarkSpecError(LayerTracerError, ValueError):
    """Bad benchmark text; the message is one line."""


def split_benchmark(text: str) -> tuple[str | None, str]:
    """``"cmmlu:/data/cmmlu"`` -> ("cmmlu", "/data/cmmlu"); a text without a known kind -> (None, text)."""
    kind, sep, rest = str(text).partition(":")
    if sep and kind.strip().lower() in BENCHMARK_KINDS:
        return kind.strip().lower(), rest
    return None, str(text)


def is_task_file(value: str) -> bool:
    """Whether an ``lm-eval:`` value names a task config file rather than a task."""
    return str(value).strip().lower().endswith(TASK_FILE_SUFFIXES)


def check_benchmark(text: str) -> tuple[str, str]:
    """A service's benchmark spec -> (kind, its folder, task or task file); BenchmarkSpecError unless it is
    ``KIND:FOLDER`` or ``lm-eval:TASK`` / ``lm-eval:FILE.yaml``."""
    kind, value = split_benchmark(text)
    value = value.strip()
    usage = f"use {BENCHMARK_FORMS}"
    if kind is None or not value or not str(text).startswith(kind):
        raise BenchmarkSpecError(f"bad benchmark {text!r}: {usage}")
    if kind == LM_EVAL and not is_task_file(value) and not TASK_NAME.match(value):
        raise BenchmarkSpecError(f"bad benchmark {text!r}: {value!r} is not an lm-eval task name; {usage}")
    return kind, value


def chance_accuracy(text: str) -> Optional[float]:
    """The accuracy of guessing on a benchmark spec: 1 / the number of options for the folder kinds
    (``ceval:``, ``cmmlu:``: 0.25), None for ``lm-eval:`` tasks (their number of choices varies by task)."""
    kind, _ = split_benchmark(text)
    return 1.0 / len(CHOICE_LETTERS) if kind in FOLDER_KINDS else None
