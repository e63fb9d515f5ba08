"""The dashboard's progress bar: one percentage from one count, and the time left measured across polls
(a fake clock stands for the 2 s between polls; nothing sleeps)."""

from __future__ import annotations

import re

from frontend.components import JobRates, progress_bar
from tests.frontend.dash_tree import text_of


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _text(bar) -> str:
    return text_of(bar.children[2])


def test_a_trace_stage_shows_its_counts_own_percentage():
    rates = JobRates(Clock())
    job = {"id": "j", "status": "running", "progress": {"stage": "lens", "done": 24, "total": 70, "percent": 34.29}}
    text = _text(progress_bar(job, rates=rates))
    pct, done, total = map(int, re.match(r"(\d+)% \((\d+)/(\d+)\)", text).groups())
    assert (pct, done, total) == (100 * 24 // 70, 24, 70)


def test_an_experiment_labels_the_runs_share_apart_from_the_stage_count():
    rates = JobRates(Clock())
    job = {"id": "e", "status": "running",
           "progress": {"stage": "trial 1/6 0-seed1: train", "done": 24, "total": 70, "percent": 0.4, "index": 1, "count": 6}}
    text = _text(progress_bar(job, rates=rates))
    assert text.startswith("0% of the run · 24/70 in this stage") and "(24/70)" not in text


def test_the_time_left_is_the_rate_measured_across_polls():
    clock = Clock()
    rates = JobRates(clock)

    def poll(percent):
        job = {"id": "e", "status": "running", "progress": {"stage": "eval", "done": 1, "total": 2, "percent": percent,
                                                            "index": 6, "count": 6, "eta_seconds": 1.0}}
        return _text(progress_bar(job, rates=rates))

    assert "left" not in poll(90.0)  # one poll: no rate measured yet
    for i in range(1, 9):  # then 1% every 8 s (four polls of 2 s)
        clock.now += 8
        text = poll(90.0 + i)
    # 98%: the API's own figure says 1 s; the measured pace says 16 s
    assert text.startswith("98%") and text.endswith("about 16 s left")
    other = {"id": "other", "status": "running", "progress": {"stage": "eval", "done": 1, "total": 2, "percent": 98.0,
                                                                "index": 6, "count": 6}}
    assert "left" not in _text(progress_bar(other, rates=rates))  # each job has its own rate


def test_a_finished_job_is_full():
    bar = progress_bar({"id": "x", "status": "succeeded", "progress": {"stage": "done", "done": 3, "total": 4}},
                       rates=JobRates(Clock()))
    assert _text(bar).startswith("100%") and bar.children[1].children.style["width"] == "100.0%"
