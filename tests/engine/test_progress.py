"""Progress displays: one percentage from one count, the time left from the measured rate, plain lines
at a steady interval. Fed event sequences on a fake clock (no sleeping)."""

from __future__ import annotations

import re

import pytest

from layertracer.progress import LinePrinter, ProgressEvent, ProgressTracker, progress_line
from layertracer.spec.progress import percent_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


LINE = re.compile(r"^\[progress\] (?P<stage>.+?): (?P<done>\d+)/(?P<total>\d+)"
                  r"(?: \((?P<pct>\d+)%\)|, run (?P<run>\d+)%)?(?:, about (?P<eta>.+?) left)?, (?P<elapsed>.+) elapsed$")


def test_the_percentage_is_the_counts_own_rounded_down():
    clock = Clock()
    tracker = ProgressTracker(clock)
    for done, total in ((0, 70), (24, 70), (69, 70), (70, 70), (1, 3), (29, 100)):
        reading = tracker.update(ProgressEvent("lens", done, total))
        assert reading.percent == 100 * done // total and not reading.of_run
        text = progress_line(reading)
        m = LINE.match(text)
        assert m and int(m["pct"]) == 100 * int(m["done"]) // int(m["total"]), text
    assert percent_of(0.999) == 99 and percent_of(1.0) == 100 and percent_of(None) is None


def test_a_run_in_parts_shows_its_own_share_apart_from_the_stage_count():
    reading = ProgressTracker(Clock()).update(ProgressEvent("trial 2/6 full-seed1: train", 24, 70, fraction=0.0))
    text = progress_line(reading)
    # never "0% (24/70)": the run's share is labelled as the run's, beside the stage's own count
    assert "(0%)" not in text and ": 24/70, run 0%" in text


def test_time_left_comes_from_the_rate_of_the_last_events_not_from_the_start():
    clock = Clock()
    tracker = ProgressTracker(clock, window=30.0, min_span=2.0)
    # 60 s of loading before the first unit, then one unit per second out of 100
    clock.now += 60
    assert tracker.update(ProgressEvent("lens", 0, 100)).eta_seconds is None
    clock.now += 1
    assert tracker.update(ProgressEvent("lens", 1, 100)).eta_seconds is None  # 1 s of rate: not measured yet
    for done in range(2, 41):
        clock.now += 1
        reading = tracker.update(ProgressEvent("lens", done, 100))
    assert reading.eta_seconds == pytest.approx(60.0)  # 60 units at the measured 1 unit/s
    # the rate from the start (40 units in 100 s) would have said 150 s
    # then it slows to one unit per 4 s: within the window the estimate follows
    for done in range(41, 60):
        clock.now += 4
        reading = tracker.update(ProgressEvent("lens", done, 100))
    assert reading.eta_seconds == pytest.approx(41 * 4.0, rel=0.1)


def test_98_percent_does_not_promise_a_second_when_the_end_is_slow():
    """The issue's case: a run at 98% whose measured pace is 1% per 8 s has about 16 s left, not 1 s."""
    clock = Clock()
    tracker = ProgressTracker(clock)
    fraction = 0.0
    while fraction < 0.9:  # fast at first: 10% a second
        clock.now += 1
        fraction += 0.1
        tracker.update(ProgressEvent("run", 0, 0, fraction=min(fraction, 0.9)))
    for step in range(1, 9):  # then 1% every 8 s
        clock.now += 8
        reading = tracker.update(ProgressEvent("run", 0, 0, fraction=0.9 + 0.01 * step))
    assert reading.percent == 98
    assert reading.eta_seconds == pytest.approx(16.0, rel=0.05)


def test_a_new_stage_starts_its_rate_afresh():
    clock = Clock()
    tracker = ProgressTracker(clock)
    for done in range(0, 11):
        clock.now += 1
        tracker.update(ProgressEvent("lens", done, 10))
    clock.now += 1
    reading = tracker.update(ProgressEvent("sensitivity:skip", 0, 50))
    assert reading.percent == 0 and reading.eta_seconds is None


def test_plain_lines_come_at_a_steady_interval_and_on_stage_changes():
    clock = Clock()
    lines: list[str] = []
    printer = LinePrinter(lines.append, interval=10.0, clock=clock)
    times = []
    for done in range(0, 61):  # one event every 0.5 s for 30 s
        printer(ProgressEvent("lens", done, 60))
        times.append(clock.now)
        clock.now += 0.5
    parsed = [LINE.match(l) for l in lines]
    assert all(parsed), lines
    # the start, then one every 10 s of events (at 0, 10, 20 s), and the end (60/60 at 30 s)
    assert [int(m["done"]) for m in parsed] == [0, 20, 40, 60]
    assert parsed[-1]["pct"] == "100" and parsed[-1]["eta"] is None
    assert parsed[1]["eta"] == "20 s"  # 40 units left at the measured 2 units/s
    printer(ProgressEvent("sensitivity:skip", 0, 8))
    assert lines[-1].startswith("[progress] sensitivity:skip: 0/8 (0%)")
    clock.now += 1
    printer(ProgressEvent("sensitivity:skip", 3, 8))
    assert len(lines) == 5
    printer.close()  # stopped between lines: the last state is written once
    printer.close()
    assert lines[-1].startswith("[progress] sensitivity:skip: 3/8 (37%)") and len(lines) == 6


def test_the_cli_line_display_takes_the_rich_interface(monkeypatch):
    from layertracer import cli_common

    monkeypatch.setenv("LAYERTRACER_PROGRESS_SECONDS", "5")
    clock, lines = Clock(), []
    display = cli_common.LineProgress(write=lines.append, clock=clock)
    with display:
        task = display.add_task("training the demo model", total=300)
        for step in range(1, 301):
            clock.now += 0.125 if step % 2 else 0.075  # events 0.1 s apart on average, exact in binary
            display.update(task, completed=step)
    steps = [int(LINE.match(l)["done"]) for l in lines]
    assert steps == list(range(0, 301, 50))  # every 5 s of a 30 s run; the end's line falls on the 30 s one
    # a job polled by the demo: the run's share and the stage's count apart
    lines.clear()
    with cli_common.LineProgress(write=lines.append, clock=clock) as display:
        task = display.add_task("experiment", total=100)
        display.update(task, completed=41, description="experiment: trial 2/6 full-seed1: train", fraction=0.41,
                       stage_done=24, stage_total=70)
    assert lines[-1].startswith("[progress] experiment: trial 2/6 full-seed1: train: 24/70, run 41%")
