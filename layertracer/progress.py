"""Progress reporting: the engine calls a plain callback; the CLI draws a bar, the worker writes rows.

:class:`ProgressTracker` turns events into what a display shows (one percentage from one count, the
time left from the measured rate) and :class:`LinePrinter` writes them as plain lines at a steady
interval where there is no terminal (a CI log, ``docker logs``, ``> log``)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

# What a display shows (the percentage, the time left, the line's wording) is the spec's, shared with
# the dashboard; the printer of plain lines lives here.
from layertracer.spec.progress import LINE_SECONDS, ProgressReading, ProgressTracker, progress_line, seconds_text


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


__all__ = ["LINE_SECONDS", "LinePrinter", "line_seconds", "ProgressCallback", "ProgressEvent", "ProgressReading", "ProgressTracker",
           "progress_line", "report", "seconds_text"]


def line_seconds() -> float:
    """Seconds between plain progress lines where there is no terminal: ``LAYERTRACER_PROGRESS_SECONDS``
    (the CLI's stderr, the worker's log), default ``LINE_SECONDS``; a value that is no number is ignored."""
    try:
        return max(0.0, float(os.environ.get("LAYERTRACER_PROGRESS_SECONDS", LINE_SECONDS)))
    except ValueError:
        return LINE_SECONDS


class LinePrinter:
    """Plain progress lines for a log: one when a stage starts, then at most one every ``interval``
    seconds while it runs, and one when it finishes (``write`` gets each line without its newline).
    Call it with each ProgressEvent; :meth:`close` writes the last state when it was not written."""

    def __init__(self, write: Callable[[str], None], *, interval: float = LINE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write, self.interval, self.clock = write, interval, clock
        self.tracker = ProgressTracker(clock)
        self.printed_at: Optional[float] = None
        self.stage: Optional[str] = None
        self.finished = False  # the current stage's "done" line is written
        self.last: Optional[ProgressReading] = None
        self.last_written = False

    def __call__(self, event: ProgressEvent) -> None:
        reading = self.tracker.update(event)
        now = self.clock()
        if event.stage != self.stage:
            self.finished = False
        done = bool(event.total) and event.done >= event.total
        due = self.printed_at is None or now - self.printed_at >= self.interval
        self.last_written = event.stage != self.stage or due or (done and not self.finished)
        if self.last_written:
            self.write(progress_line(reading))
            self.printed_at = now
            self.finished = self.finished or done
        self.stage, self.last = event.stage, reading

    def close(self) -> None:
        if self.last is not None and not self.last_written:
            self.write(progress_line(self.last))
            self.last_written = True
