"""The runs table page as plain functions: its view round-trips through the URL, the controls change the
view as documented, the table's sort headers, metric cells, clone links and re-run buttons (none on a
share link), the selection's Compare / Report links, and the re-run request the API accepts."""

from __future__ import annotations

import random
from urllib.parse import parse_qs, urlparse

import pytest
from dash_tree import text_of

from frontend.components import parse_search
from layertracer.spec.runs_query import DEFAULT_SORT, EXPERIMENT_SORT_FIELDS, PAGE_SIZES, TRACE_SORT_FIELDS


@pytest.fixture(autouse=True)
def _page(dash_app):
    """The page module (pages register once the app exists: the session's dash_app)."""
    global page
    from frontend.pages import runs as page


def _random_view(rng: random.Random):
    kind = rng.choice(["traces", "experiments"])
    fields = TRACE_SORT_FIELDS if kind == "traces" else EXPERIMENT_SORT_FIELDS
    return page.RunsView(
        kind=kind, type=rng.choice(["", "trial", "experiment"]) if kind == "experiments" else "",
        status=rng.choice(["", *page.STATUSES]), q=rng.choice(["", "plan vs full", "中文 run", "a&b=c"]),
        model=rng.choice(["", "ab" * 16]), tag=rng.choice(["", "demo", "layer 0"]),
        sort=rng.choice(["", "-"]) + rng.choice(fields), page=rng.randint(1, 300), size=rng.choice(PAGE_SIZES))


def test_every_view_round_trips_through_the_url():
    rng = random.Random(5)
    for _ in range(200):
        view = _random_view(rng)
        assert page.view_from_query(parse_search(view.search())) == view
    assert page.RunsView().search() == ""  # the defaults say nothing
    shared = page.RunsView(sort="-plan").search(share="tok")
    assert parse_search(shared) == {"sort": "-plan", "share": "tok"}


@pytest.mark.parametrize("query, expected", [
    ({"kind": "nope", "sort": "-delta_retention"}, {}),  # an experiments field on traces
    ({"kind": "traces", "type": "trial"}, {}),  # type is for experiments only
    ({"page": "0", "size": "100000", "status": "lost"}, {}),
    ({"page": "x", "size": "25", "sort": "plan"}, {"size": 25, "sort": "plan"}),
    ({"kind": "experiments", "type": "trial", "sort": "-delta_acquisition", "page": "3"},
     {"kind": "experiments", "type": "trial", "sort": "-delta_acquisition", "page": 3}),
])
def test_bad_url_values_fall_back_to_defaults(query, expected):
    assert page.view_from_query(query) == page.RunsView(**expected)


def _values(view, **changes):
    values = {"kind": view.kind, "type": view.type or None, "status": view.status or None, "q": view.q,
              "model": view.model or None, "tag": view.tag, "size": view.size}
    return {**values, **changes}


def test_controls_change_the_view():
    view = page.RunsView(kind="experiments", sort="-delta_retention", page=4, q="demo")
    sort = {"type": "runs-sort", "field": "delta_retention"}
    assert page.next_view(view, sort, _values(view)) == page.RunsView(kind="experiments", sort="delta_retention", q="demo")
    other = {"type": "runs-sort", "field": "best_allocation"}
    assert page.next_view(view, other, _values(view)).sort == "best_allocation"  # text starts at A
    assert page.next_view(view, {"type": "runs-sort", "field": "plan"}, _values(view)) == view  # not a field here
    assert page.next_view(view, "runs-next", _values(view)).page == 5
    assert page.next_view(view, "runs-prev", _values(view)).page == 3
    assert page.next_view(page.RunsView(), "runs-prev", _values(page.RunsView())).page == 1
    # a filter sends the view to page 1 and keeps the sort; a new kind resets the sort and the type
    filtered = page.next_view(view, "runs-status", _values(view, status="failed"))
    assert (filtered.status, filtered.page, filtered.sort) == ("failed", 1, "-delta_retention")
    switched = page.next_view(view, "runs-kind", _values(view, kind="traces", type="trial"))
    assert (switched.kind, switched.sort, switched.type, switched.page) == ("traces", DEFAULT_SORT, "", 1)
    assert page.next_view(view, "runs-q", _values(view)) == view  # nothing changed: same page


TRACE = {"id": "t" * 32, "name": "plan look", "tags": ["demo"], "status": "succeeded", "model": {"name": "tiny"},
         "tasks": ["antonyms_en"], "vulnerable_layer": 3, "plan": "0-2", "plan_share": 0.375, "job_id": "j" * 32,
         "created_at": "2026-11-29T10:00:00", "finished_at": "2026-11-29T10:01:00"}
TRIAL = {"id": "e" * 32, "kind": "trial", "name": None, "status": "succeeded", "model": {"name": "tiny"},
         "allocations": ["0"], "labels": {}, "seeds": [1], "benchmarks": ["ceval:/b/old", "ceval:/b/new"],
         "best_allocation": "0", "best_label": "0", "delta_retention": -0.435, "delta_acquisition": 0.25,
         "retention_significant": True, "acquisition_significant": False, "job_id": "k" * 32}


def _cells(table):
    return [[text_of(td) for td in tr.children] for tr in table.children[1].children]


def _walk(component):
    yield component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, (list, tuple)) else [children] if children is not None else []:
        if hasattr(child, "to_plotly_json"):
            yield from _walk(child)


def _by_type(component, kind: str) -> list:
    return [c for c in _walk(component) if isinstance(getattr(c, "id", None), dict) and c.id.get("type") == kind]


def test_the_table_has_metric_columns_sort_headers_clone_and_rerun():
    table = page.runs_table([TRACE], "traces", sort="-vulnerable_layer")
    row = _cells(table)[0]
    assert row[6] == "train 0-2 (38%)" and row[7] == "3"
    headers = {h.id["field"]: h for h in _by_type(table, "runs-sort")}
    assert set(headers) == {"name", "status", "model", "created", "plan", "vulnerable_layer"}
    assert headers["vulnerable_layer"].children == "vulnerable layer ▼" and headers["plan"].children == "plan"
    clone = _by_type(table, "runs-clone")[0]
    assert clone.href == "/new/trace?clone=" + "j" * 32
    assert [b.id for b in _by_type(table, "runs-rerun")] == [{"type": "runs-rerun", "kind": "trace", "id": "t" * 32}]
    # a read-only share link shows no re-run (a write)
    assert _by_type(page.runs_table([TRACE], "traces", share="tok"), "runs-rerun") == []
    # the tag links to the runs carrying it
    tag = next(c for c in _walk(table) if getattr(c, "className", None) == "lt-tag")
    assert parse_qs(urlparse(tag.href).query) == {"tag": ["demo"]}

    table = page.runs_table([TRIAL, {**TRIAL, "id": "f" * 32, "kind": "experiment", "best_allocation": None,
                                     "delta_retention": None, "delta_acquisition": None, "job_id": None}],
                            "experiments", sort="delta_retention", selected={"e" * 32: "eeeeeeee"})
    rows = _cells(table)
    assert rows[0][6:9] == ["train layers 0", "-0.435 *", "+0.250"]  # * = significant after Holm
    assert rows[1][6:9] == ["—", "—", "—"]
    assert _by_type(table, "runs-clone")[0].href == "/new/trial?clone=" + "k" * 32
    assert len(_by_type(table, "runs-clone")) == 1  # a run without a job has nothing to clone
    picks = _by_type(table, "runs-pick")
    assert [p.value for p in picks] == [["e" * 32], []]


def test_the_selection_opens_compare_or_the_reports():
    bar = page.selection_bar("traces", {"a" * 32: "first", "b" * 32: "second"})
    link = next(c for c in bar if getattr(c, "id", None) == "runs-compare")
    assert link.href == f"/compare?traces={'a' * 32},{'b' * 32}"
    reports = [c.href for c in page.selection_bar("experiments", {"e1": "x", "e2": "y"}) if hasattr(c, "href")]
    assert reports == ["/experiments/e1/report", "/experiments/e2/report"]
    assert "Select runs" in text_of(page.selection_bar("traces", {})[0])


def test_a_rerun_posts_the_stored_spec_as_the_api_takes_it():
    from backend.api.schemas import ExperimentCreate, TraceCreate, TrialCreate
    from layertracer.spec.jobs import ExperimentJobSpec

    trace_spec = TraceCreate(model_id="m1", task_sets=["antonyms_en"], perturbations=["skip", "noise"],
                             name="look").model_dump()
    path, body = page.rerun_request("trace", {"id": "t1", "name": "look", "spec": trace_spec})
    assert path == "/traces" and {**body, "name": "look"} == trace_spec and body["name"] == "look (re-run)"
    assert TraceCreate.model_validate(body).task_sets == ["antonyms_en"]

    fields = dict(model_id="m1", corpus="/roots/corpus.txt", seeds=[1, 2], benchmarks=["ceval:/roots/old"],
                  labels={"0-1": "my plan"}, steps=7)
    stored = ExperimentJobSpec(**fields, kind="trial", allocations=["0-1"]).model_dump()
    path, body = page.rerun_request("trial", {"id": "e1", "spec": stored, "source_trace_id": "t1"})
    trial = TrialCreate.model_validate(body)
    assert path == "/trials" and (trial.allocation, trial.seeds, trial.steps, trial.labels, trial.source_trace_id) == \
        ("0-1", [1, 2], 7, {"0-1": "my plan"}, "t1")
    assert trial.name == "re-run of e1"
    stored = ExperimentJobSpec(**fields, kind="experiment", allocations=["0-1", "full"]).model_dump()
    path, body = page.rerun_request("experiment", {"id": "e2", "name": "x", "spec": stored})
    experiment = ExperimentCreate.model_validate(body)
    assert path == "/experiments" and experiment.allocations == ["0-1", "full"] and "kind" not in body
    assert {k: v for k, v in experiment.model_dump().items() if k not in ("name", "source_trace_id")} == \
        {k: v for k, v in stored.items() if k not in ("name", "kind")}
