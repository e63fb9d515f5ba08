"""The corpus and benchmark paths a request names, made what a job may use: one rule for ``POST
/trials``, ``POST /experiments`` and the register of ``/paths/registered``.

A local path is confined to the model roots (``backend.security.confine_path``: a 400 outside them); a
hub dataset ``hf:org/name[@rev][:split]`` and an lm-eval task known by name are no paths and are kept as
named, after the spec's grammar (a 422 when malformed).
"""

from __future__ import annotations

from typing import Optional

from fastapi import HTTPException

from backend.security import PathError, confine_path
from backend.settings import Settings
from layertracer.spec.benchmarks import LM_EVAL, BenchmarkSpecError, check_benchmark, is_task_file
from layertracer.spec.corpora import CorpusSourceError, is_hub_dataset, parse_hub_dataset


def confined(settings: Settings, path: str, what: str, kind: Optional[str] = None) -> str:
    """``path`` resolved under the roots (``kind``: ``dir``, ``file`` or None for either), else a 400."""
    try:
        return str(confine_path(path, settings.model_roots, what, kind=kind))
    except PathError as exc:
        raise HTTPException(400, str(exc)) from None


def resolve_corpus(settings: Settings, source: str) -> str:
    """A hub dataset id as it is (the worker reads it through its HF cache), a local corpus confined."""
    if not is_hub_dataset(source):
        return confined(settings, source, "corpus")
    try:
        return str(parse_hub_dataset(source))
    except CorpusSourceError as exc:
        raise HTTPException(422, f"corpus: {exc}") from None


def resolve_benchmark(settings: Settings, text: str) -> str:
    """``KIND:VALUE`` -> the same with its folder or task file confined (an lm-eval task name as it is)."""
    try:
        name, value = check_benchmark(text)
    except BenchmarkSpecError as exc:
        raise HTTPException(422, str(exc)) from None
    if name == LM_EVAL and not is_task_file(value):
        return f"{name}:{value}"  # a task lm-eval knows: a name, no path
    if name == LM_EVAL:
        return f"{name}:{confined(settings, value, 'lm-eval task file', 'file')}"
    return f"{name}:{confined(settings, value, 'benchmark folder', 'dir')}"
