"""Progress reporting: the engine calls a plain callback; the CLI draws a bar, the worker writes rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long computation.

    stage: short machine-readable name ("lens", "sensitivity:skip", "similarity", ...).
    done / total: units of work finished in this stage and in all (prompt batches, usually).
    """

    stage: str
    done: int
    total: int


ProgressCallback = Callable[[ProgressEvent], None]


def report(callback: Optional[ProgressCallback], stage: str, done: int, total: int) -> None:
    """Call ``callback`` if one was given; the engine never fails because a sink failed to draw."""
    if callback is not None:
        callback(ProgressEvent(stage=stage, done=done, total=total))
