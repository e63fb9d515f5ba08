"""Progress reporting: the engine calls a plain callback; the CLI draws a bar, the worker writes rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long computation.

    stage: short name, shown to users ("lens", "sensitivity:skip", "trial 2/6 full-seed1: train", ...).
    done / total: units of work finished in this stage and in all (prompt batches, steps, questions).
    Where a run has parts (an experiment's baseline and trials), the event also says which, as data:
    item (the part's name: ``base`` or a trial's slug), work (what the part is doing: ``train``,
    ``eval``, ``trace``), index / count (1-based part number and the number of parts; 0 for the
    baseline) and fraction (the whole run's progress in [0, 1]).
    """

    stage: str
    done: int
    total: int
    item: Optional[str] = None
    work: Optional[str] = None
    index: Optional[int] = None
    count: Optional[int] = None
    fraction: Optional[float] = None


ProgressCallback = Callable[[ProgressEvent], None]


def report(callback: Optional[ProgressCallback], stage: str, done: int, total: int, **parts) -> None:
    """Call ``callback`` if one was given (``parts``: ProgressEvent's item, work, index, count, fraction)."""
    if callback is not None:
        callback(ProgressEvent(stage=stage, done=done, total=total, **parts))
