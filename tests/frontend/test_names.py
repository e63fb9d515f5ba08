"""What the pages show instead of raw values: allocation labels, run names, relative times, durations."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dash

from frontend.viz import names
from tests.frontend.dash_tree import text_of

NOW = datetime(2026, 12, 2, 19, 0, 0, tzinfo=timezone.utc)


def test_a_bare_range_allocation_reads_as_the_layers_it_trains():
    assert names.allocation_label("0") == "train layers 0"
    assert names.allocation_label("0-7,12") == "train layers 0-7,12"
    assert names.allocation_label("0", {"0": "train-shallow (freeze plan)"}) == "train-shallow (freeze plan)"
    assert names.allocation_label("train-deep") == "train-deep" and names.allocation_label("full") == "full"
    assert names.allocation_label("base") == "base model"
    assert names.allocation_label("from-trace:/data/t.json") == "freeze plan of a trace"


def test_result_labels_prefer_the_runs_own_names():
    result = {"spec": {"allocations": ["0", "full"], "labels": {"0": "plan"}},
              "table": [{"allocation": "base", "label": "base"}, {"allocation": "0", "label": "plan"},
                        {"allocation": "full", "label": "full"}]}
    assert names.result_labels(result) == {"0": "plan", "full": "full", "base": "base model"}
    unlabelled = {"table": [{"allocation": "3", "label": "3"}]}
    assert names.result_labels(unlabelled)["3"] == "train layers 3"
    assert names.trial_label("0-seed2", "0", {"0": "plan"}) == "plan · seed 2"
    assert names.trial_label("0-1,3-seed10", None, {}) == "train layers 0-1,3 · seed 10"


def test_run_names_hide_the_hex_id_only_when_there_is_a_name():
    ident = "9f" * 16
    assert names.run_name({"id": ident, "name": "demo trace"}) == "demo trace"
    assert names.run_name({"id": ident, "name": None}) == ident[:8]
    assert names.run_name({"id": "t1"}) == "t1"


def test_relative_times_and_durations():
    ago = lambda **kw: (NOW - timedelta(**kw)).isoformat()  # noqa: E731
    assert names.relative_time(ago(seconds=10), NOW) == "just now"
    assert names.relative_time(ago(minutes=5, seconds=20), NOW) == "5 min ago"
    assert names.relative_time(ago(hours=3, minutes=2), NOW) == "3 h ago"
    assert names.relative_time(ago(days=2, hours=5), NOW) == "2 d ago"
    assert names.relative_time(ago(days=45), NOW) == (NOW - timedelta(days=45)).strftime("%Y-%m-%d")
    # the API's naive timestamps are UTC, with microseconds
    assert names.relative_time("2026-12-02T18:00:00.123456", NOW) == "1 h ago"
    assert names.relative_time(None, NOW) == "—" and names.relative_time("yesterday", NOW) == "—"
    assert [names.duration(s) for s in (0.4, 59, 200, 3600, 3 * 3600 + 25 * 60, 86400 + 7200)] == \
        ["0 s", "59 s", "3 min 20 s", "1 h", "3 h 25 min", "1 d 2 h"]
    assert names.absolute_time("2026-12-02T18:00:00.123456") == "2026-12-02 18:00 UTC"
    done = {"created_at": ago(minutes=10), "finished_at": ago(minutes=7), "status": "succeeded"}
    assert names.run_duration(done, NOW) == "3 min"
    assert names.run_duration({"created_at": ago(seconds=40), "status": "running"}, NOW) == "40 s"
    assert names.run_duration({"created_at": ago(seconds=40), "status": "failed"}, NOW) == "—"


def test_the_runs_table_shows_names_labels_and_relative_times():
    from frontend.pages import runs as page

    ident = "ab" * 16
    items = [{"id": ident, "kind": "experiment", "name": "demo: plan vs full", "status": "succeeded", "model": {"name": "tiny"},
              "allocations": ["0", "full"], "labels": {"0": "train-shallow (freeze plan)"}, "seeds": [1],
              "created_at": (NOW - timedelta(minutes=30)).isoformat(), "finished_at": (NOW - timedelta(minutes=25)).isoformat()},
             {"id": "cd" * 16, "kind": "trial", "name": None, "status": "succeeded", "model": {"name": "tiny"},
              "allocations": ["0"], "seeds": [1], "created_at": (NOW - timedelta(hours=2)).isoformat(), "finished_at": None}]
    tbl = page.runs_table(items, "experiments", now=NOW)
    rows = [[text_of(td) for td in tr.children] for tr in tbl.children[1].children]
    assert rows[0][0] == "demo: plan vs full" and rows[1][0] == "cd" * 4
    assert "train-shallow (freeze plan), full" in rows[0][3] and "train layers 0" in rows[1][3]
    assert rows[0][4] == "30 min ago" and rows[0][5] == "5 min" and rows[1][4] == "2 h ago"
    assert not any(ident in cell for row in rows for cell in row)
    link = tbl.children[1].children[0].children[0].children[0]
    assert link.href == f"/experiments/{ident}" and ident in link.title


def test_the_experiment_heading_is_its_name(experiment_result):
    from frontend.pages import experiment as page

    assert page.heading({"id": "ab" * 16, "kind": "trial", "name": "plan trial"}) == "plan trial"
    assert page.heading({"id": "ab" * 16, "kind": "trial"}) == "Trial abababab"
    part = dash.html.Div(page.partial_view({"spec": {"labels": {"0-1,3": "my plan"}},
                                            "partial": {"trials": {t["slug"]: t for t in experiment_result["trials"]}}}))
    assert "my plan" in text_of(part)


def test_tags_and_lineage_show_and_notes_save():
    from frontend.pages import experiment as page
    from frontend.pages import runs

    ident, source = "ab" * 16, "cd" * 16
    item = {"id": ident, "kind": "trial", "name": "plan trial", "status": "succeeded", "model": {"name": "tiny"},
            "allocations": ["0"], "seeds": [1], "tags": ["demo", "qwen"], "source_trace_id": source}
    tbl = runs.runs_table([item], "experiments", now=NOW)
    cells = [text_of(td) for td in tbl.children[1].children[0].children]
    assert cells[0] == "plan trial demo qwen" and "plan of trace cdcdcdcd" in cells[3]
    link = page.lineage_link(item, None)[1]
    assert link.href == f"/traces/{source}" and link.children == "trace cdcdcdcd"
    assert page.lineage_link({"id": ident}, None) == []
    assert page.parse_tags(" a, b,,a ,") == ["a", "b"]
    box = page.notes_view({**item, "notes": "kept layer 0"})
    assert box.open and "demo" in text_of(box.children[0])


def test_a_trial_launched_from_a_trace_records_it_and_names_its_plan():
    from frontend import run_form

    class Api:
        def trace(self, trace_id):
            return {"id": trace_id, "name": "qwen plan", "summary": {"freeze_plan": {"train_ranges": "0"}}}

    assert run_form.lineage(Api(), "t1", ["0"]) == ({"source_trace_id": "t1"}, {"0": "freeze plan of qwen plan"})
    # ranges edited away from the plan keep the lineage but not the plan's name
    assert run_form.lineage(Api(), "t1", ["0-2"]) == ({"source_trace_id": "t1"}, {})
    assert run_form.lineage(Api(), None, ["0"]) == ({}, {})
