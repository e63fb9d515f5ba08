"""What a progress display shows, one rule for the CLI, the demo and the dashboard: one percentage
from one count (rounded down, so never 100 % before the work is done) and the time left from the rate
measured over the last seconds of events, never from the run's start.

Events are anything with ``stage``, ``done``, ``total`` and ``fraction`` (``layertracer.progress.
ProgressEvent``; the dashboard builds them from a job's ``progress``). Pure: the clock is injected.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

# Plain progress lines (a stderr that is no terminal) every this many seconds by default; the CLI reads
# LAYERTRACER_PROGRESS_SECONDS over it.
LINE_SECONDS = 10.0
# The rate behind a time-left estimate is measured over the last this many seconds of events, and
# only once they span at least RATE_MIN_SPAN seconds: a rate from the run's start would count model
# loading, and one from two events a millisecond apart is noise.
RATE_WINDOW = 30.0
RATE_MIN_SPAN = 2.0


@dataclass(frozen=True)
class ProgressReading:
    """What a display shows for one event.

    done / total: the stage's count. fraction: the share of the work done in [0, 1], the run's own
    (``ProgressEvent.fraction``) when the event gives one, else done / total. of_run: whether the
    fraction is the run's (then a display says "of the run": it is not done / total). percent: the
    fraction in whole percent, rounded down (99 until the work is done, never 100 early).
    eta_seconds: time left at the rate measured over the last ``RATE_WINDOW`` seconds (None until
    it is measured). elapsed: seconds since the first event.
    """

    stage: str
    done: float
    total: float
    fraction: Optional[float]
    of_run: bool
    percent: Optional[int]
    eta_seconds: Optional[float]
    elapsed: float


class ProgressTracker:
    """One run's progress: the percentage from one count and the time left from the measured rate.

    ``clock``: seconds, monotonic (injected so tests feed a fake one). Feed every event to
    :meth:`update`; it returns the :class:`ProgressReading` to show.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, window: float = RATE_WINDOW,
                 min_span: float = RATE_MIN_SPAN) -> None:
        self.clock = clock
        self.window, self.min_span = window, min_span
        self.started: Optional[float] = None
        self.samples: deque[tuple[float, float]] = deque()  # (time, fraction), oldest first
        self.stage: Optional[str] = None

    def update(self, event: Any) -> ProgressReading:
        now = self.clock()
        if self.started is None:
            self.started = now
        of_run = event.fraction is not None
        fraction = event.fraction if of_run else (event.done / event.total if event.total else None)
        if fraction is not None:
            fraction = min(1.0, max(0.0, float(fraction)))
        # A stage's own count starts again at 0 in the next stage: its rate says nothing about the next.
        if (not of_run and event.stage != self.stage) or fraction is None or \
                (self.samples and fraction < self.samples[-1][1]):
            self.samples.clear()
        self.stage = event.stage
        if fraction is not None:
            self.samples.append((now, fraction))
            while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
                self.samples.popleft()
        percent = percent_of(fraction)
        return ProgressReading(stage=event.stage, done=event.done, total=event.total, fraction=fraction,
                               of_run=of_run, percent=percent, eta_seconds=self._eta(now, fraction),
                               elapsed=now - self.started)

    def _eta(self, now: float, fraction: Optional[float]) -> Optional[float]:
        if fraction is None or fraction >= 1.0 or len(self.samples) < 2:
            return None
        t0, f0 = self.samples[0]
        span, gained = now - t0, fraction - f0
        if span < self.min_span or gained <= 0:
            return None
        return (1.0 - fraction) * span / gained


def percent_of(fraction: Optional[float]) -> Optional[int]:
    """A share done in whole percent, rounded down: 99 until it is all done, never 100 early."""
    if fraction is None:
        return None
    return 100 if fraction >= 1.0 else max(0, min(99, int(100 * fraction + 1e-9)))  # 0.29 * 100 is 28.999...


def seconds_text(seconds: float) -> str:
    """A duration for a progress line: 4.2 s, 38 s, 3 min 20 s, 1 h 05 min."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _count(value: float) -> str:
    return f"{value:g}"


def progress_line(reading: ProgressReading) -> str:
    """``[progress] lens: 24/70 (34%), about 40 s left, 21 s elapsed``; with the run's own fraction
    ``[progress] trial 2/6 full-seed1: train: 24/70, run 41%, ...``: the percentage is always the one
    count's it stands next to."""
    text = f"[progress] {reading.stage}: {_count(reading.done)}"
    if reading.total:
        text += f"/{_count(reading.total)}"
    if reading.percent is not None:
        text += f", run {reading.percent}%" if reading.of_run else f" ({reading.percent}%)"
    if reading.eta_seconds is not None:
        text += f", about {seconds_text(reading.eta_seconds)} left"
    return text + f", {seconds_text(reading.elapsed)} elapsed"


