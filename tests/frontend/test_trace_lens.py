"""The trace page's live lens (figure, CSV, the job polling and submitting callbacks) and its header
(name, relative times, the runs launched from the trace, saving the name)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from frontend.api_client import ApiError
from frontend.viz import trace as tv
from tests.frontend.dash_tree import find, text_of

@pytest.fixture
def page():
    from frontend.pages import trace  # after the app exists (the dash_app fixture): pages register themselves

    return trace


LENS = {  # what a lens job returns for a 3-layer model and a 2-token prompt
    "prompt": "三加四等于", "target": "七", "target_token": "七", "num_layers": 3, "tokens": ["三加", "四等于"],
    "top1_tokens": [["a", "b"], ["c", "d"], ["e", "七"]], "top1_probs": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.9]],
    "target_prob": [[0.01, 0.02], [0.03, 0.04], [0.05, 0.8]], "model": {"source": "m", "fingerprint": "f"},
}


def test_the_live_lens_figure_shows_the_jobs_numbers_coloured_as_asked():
    top1 = tv.live_lens_figure(LENS, colour="top1", label="Prompt A").data[0]
    assert [list(r) for r in top1.z] == LENS["top1_probs"] and [list(r) for r in top1.text] == LENS["top1_tokens"]
    assert list(top1.x) == ["0: '三加'", "1: '四等于'"] and list(top1.y) == [0, 1, 2]
    target = tv.live_lens_figure(LENS, colour="target").data[0]
    assert [list(r) for r in target.z] == LENS["target_prob"]
    title = tv.live_lens_figure(LENS, colour="target", label="A").layout.title.text
    assert title == "A: '三加四等于' · target '七'"
    assert tv.live_lens_figure({**LENS, "lens": "tuned"}, label="A").layout.title.text.startswith("A: '三加四等于' (tuned lens)")


def test_without_a_target_the_grid_is_coloured_by_the_top1_and_says_so():
    bare = {**LENS, "target": None, "target_token": None, "target_prob": None}
    figure = tv.live_lens_figure(bare, colour="target")
    assert [list(r) for r in figure.data[0].z] == LENS["top1_probs"]
    assert "no target" in figure.layout.title.text and figure.data[0].customdata is None
    assert "type a prompt" in tv.live_lens_figure(None).layout.annotations[0].text.lower()


def test_the_lens_csv_has_a_row_per_layer_and_position(page):
    header, rows = page.lens_rows(LENS)
    assert header[:3] == ["layer", "position", "token"] and len(rows) == 3 * 2
    assert rows[-1] == [2, 1, "四等于", "七", 0.9, "七", 0.8]
    download = page.lens_download(1, LENS, "B", "t1")
    assert download["filename"] == "trace-t1-lens-b.csv" and download["type"] == "text/csv"
    lines = download["content"].splitlines()
    assert lines[0] == ",".join(header) and len(lines) == 1 + 6 and lines[-1] == "2,1,四等于,七,0.9,七,0.8"


class FakeApi:
    def __init__(self, answers=None, fail=None):
        self.answers, self.fail, self.calls = list(answers or []), fail, []

    def _next(self, *call):
        self.calls.append(call)
        if self.fail:
            raise ApiError(self.fail, 403)
        return self.answers.pop(0)

    def submit_lens(self, trace_id, prompt, target, lens):
        return self._next("submit", trace_id, prompt, target, lens)

    def lens(self, trace_id, job_id):
        return self._next("lens", trace_id, job_id)

    def update_run(self, kind, run_id, body):
        return self._next("patch", kind, run_id, body)


def _job(status, seconds=None, error=None):
    start = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)
    return {"id": "j1", "status": status, "error": error, "created_at": start.isoformat(),
            "finished_at": (start + timedelta(seconds=seconds)).isoformat() if seconds is not None else None}


def test_submitting_queues_a_job_and_polling_returns_its_result(monkeypatch, page):
    api = FakeApi([{"job": _job("queued"), "result": None}])
    monkeypatch.setattr(page, "client", lambda *a, **k: api)
    assert page.lens_submit(1, "三加四等于", "", "tuned", "t1", "tok") == ("j1", False, "Queued…")
    assert api.calls == [("submit", "t1", "三加四等于", None, "tuned")]
    assert page.lens_submit(1, "  ", "x", "logit", "t1", "tok")[1:] == (True, "Type a prompt first.")

    api.answers = [{"job": _job("running"), "result": None}, {"job": _job("succeeded", 1.25), "result": LENS}]
    assert page.lens_poll(1, "j1", "t1", None, "tok")[1:] == (False, "Running…")
    result, stop, message = page.lens_poll(2, "j1", "t1", None, "tok")
    assert result == LENS and stop is True and message == "2 tokens × 3 layers in 1.2 s"


def test_a_failed_lens_or_a_refused_write_says_why_in_one_line(monkeypatch, page):
    api = FakeApi([{"job": _job("failed", 1, error="the prompt is 300 tokens; the live lens takes at most 256"),
                    "result": None}])
    monkeypatch.setattr(page, "client", lambda *a, **k: api)
    result, stop, message = page.lens_poll(1, "j1", "t1", None, None)
    assert stop is True and message == "The lens failed: the prompt is 300 tokens; the live lens takes at most 256"
    monkeypatch.setattr(page, "client", lambda *a, **k: FakeApi(fail="a share link is read-only"))
    assert page.lens_submit(1, "a", "", None, "t1", None)[1:] == (True, "Not run: a share link is read-only")


def _meta() -> dict:
    """A trace's metadata, created 5 min and finished 3 min before now (now when the test runs, not when
    the module was collected: a suite of 20 minutes made the trace "24 min ago")."""
    now = datetime.now(timezone.utc)
    return {"id": "a" * 32, "name": "qwen demo trace", "tags": ["demo"], "status": "succeeded",
            "model": {"name": "demo-model"}, "created_at": (now - timedelta(minutes=5)).isoformat(),
            "finished_at": (now - timedelta(minutes=3)).isoformat()}


META = _meta()


def test_the_header_names_the_trace_says_when_and_links_its_runs(page):
    runs = [{"id": "e1", "kind": "trial", "name": "plan trial", "status": "succeeded"},
            {"id": "e2", "kind": "experiment", "name": None, "status": "running"}]
    head = page.header(_meta(), runs, share=None)
    assert text_of(find(head, "trace-title")) == "qwen demo trace"
    assert text_of(find(head, "trace-created")) == "5 min ago"
    assert find(head, "trace-created").title.endswith("UTC")
    text = text_of(head)
    assert "took 2 min" in text and "demo" in text and "model demo-model" in text
    links = [c for c in find(head, "trace-runs").children if hasattr(c, "href")]
    assert [(link.children, link.href) for link in links] == [
        ("plan trial (trial, succeeded)", "/experiments/e1"), ("e2 (experiment, running)", "/experiments/e2")]
    assert "No trial or experiment" in text_of(page.header(META, [], None))
    assert text_of(find(page.header({**META, "name": None}, [], None), "trace-title")) == "Trace aaaaaaaa"


@pytest.mark.parametrize("answer, expected", [
    ({**META, "name": "renamed"}, ("Saved.", "renamed")),
    (None, ("Not saved: a share link is read-only", None)),
])
def test_saving_the_name_patches_the_trace(monkeypatch, page, answer, expected):
    api = FakeApi([answer] if answer else [], fail=None if answer else "a share link is read-only")
    monkeypatch.setattr(page, "client", lambda *a, **k: api)
    message, title = page.save_notes(1, " renamed ", "some notes", "t1", "tok")
    assert message == expected[0] and (title == expected[1] if expected[1] else True)
    assert api.calls == [("patch", "trace", "t1", {"name": "renamed", "notes": "some notes"})]


def test_a_long_prompt_shows_its_last_positions_and_the_end_of_its_text(page):
    T = 20
    grid = [[0.5 + 0.01 * i for i in range(T)] for _ in range(3)]
    long = {**LENS, "prompt": "x" * 50 + " END", "tokens": [f"t{i}" for i in range(T)],
            "top1_tokens": [[f"n{i}" for i in range(T)]] * 3, "top1_probs": grid, "target_prob": grid}
    figure = tv.live_lens_figure(long)
    assert list(figure.data[0].x) == [f"{i}: 't{i}'" for i in range(T - tv.LIVE_LAST, T)]
    title = figure.layout.title.text
    assert "'…" in title and "END'" in title and title.endswith(f"(last {tv.LIVE_LAST} of {T} tokens)")
    assert len(page.lens_figure(long, "top1", [], 40, "Prompt A").data[0].x) == T
    assert len(page.lens_figure(long, "top1", [], 5, "Prompt A").data[0].x) == 5
    for bad in (None, 0, 10_000):
        assert len(page.lens_figure(long, "top1", [], bad, "Prompt A").data[0].x) == tv.LIVE_LAST
    assert page.lens_figure(long, "top1", ["norm"], 5, "").data[0].y[0] == 1 / 3
