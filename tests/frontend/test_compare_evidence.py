"""Compare as small multiples (one panel per task), the difference view and plan against plan, the
honest empty state; and the report's trace evidence (the source trace's plan strip, heatmap and
stability curve) when the run records a source trace, and the line that says so when it does not.
Data from the real engine (the conftest's traced tiny model and tiny experiment)."""

from __future__ import annotations

import copy
import json

import httpx
import numpy as np
import pytest
from dash_tree import find, text_of
from scipy.interpolate import interp1d

from frontend import api_client
from frontend.viz import compare as cv
from frontend.viz import report as rv
from frontend.viz import trace as tv


def _with_tasks(result: dict, count: int) -> dict:
    """The trace with ``count`` tasks: its real tasks repeated under new names (t00, t01, ...)."""
    real = list(result["tasks"].values())
    out = copy.deepcopy(result)
    out["tasks"] = {f"t{i:02d}": copy.deepcopy(real[i % len(real)]) for i in range(count)}
    return out


def _panel_of(fig, trace) -> str:
    """The subplot title of the panel a trace is drawn in (matched by its axes' domains)."""
    xa = fig.layout[("xaxis" + trace.xaxis[1:]) if trace.xaxis != "x" else "xaxis"]
    ya = fig.layout[("yaxis" + trace.yaxis[1:]) if trace.yaxis != "y" else "yaxis"]
    for a in fig.layout.annotations:
        if xa.domain[0] <= a.x <= xa.domain[1] and ya.domain[1] <= a.y <= ya.domain[1] + 0.08:
            return a.text
    raise AssertionError("no panel title above this trace")


def test_twelve_tasks_get_twelve_panels_with_one_line_per_trace(trace_result):
    a = _with_tasks(trace_result, 12)
    b = copy.deepcopy(a)
    for t in b["tasks"].values():
        t["mean_target_prob"] = [min(1.0, p + 0.1) for p in t["mean_target_prob"]]
    results = {"before": a, "after": b}
    fig = cv.small_multiples_figure(results)
    titles = [ann.text for ann in fig.layout.annotations if ann.text in a["tasks"]]
    assert sorted(titles) == sorted(a["tasks"])  # one panel (titled) per task
    lines = [tr for tr in fig.data if tr.mode == "lines"]
    per_panel: dict[str, list] = {}
    for tr in lines:
        per_panel.setdefault(_panel_of(fig, tr), []).append(tr)
    assert sorted(per_panel) == sorted(a["tasks"])
    for task, drawn in per_panel.items():
        assert [tr.name for tr in drawn] == ["before", "after"]
        for tr, r in zip(drawn, (a, b)):
            assert list(tr.y) == pytest.approx(r["tasks"][task]["mean_target_prob"])
            L = r["num_layers"]
            assert list(tr.x) == pytest.approx([(l + 1) / L for l in range(L)])
    # A legend of traces only: two entries, not 12 x 2.
    assert sorted(tr.name for tr in fig.data if tr.showlegend is not False) == ["after", "before"]
    assert {tr.line.dash for tr in lines} == {None}  # no dash styles to tell tasks apart
    assert fig.layout.height >= 4 * cv.PANEL_HEIGHT  # 12 panels in 4 rows of 3, each its own height
    # The first axis (bottom-left panel) carries the depth title.
    assert fig.layout.xaxis.title.text.startswith("normalised depth")
    one = cv.small_multiples_figure(results, "t03")
    assert [ann.text for ann in one.layout.annotations] == ["t03"]


def test_the_difference_view_is_b_minus_a_on_a_s_layers(trace_result, hybrid_trace_result):
    a = trace_result
    b = copy.deepcopy(a)
    shift = np.linspace(-0.2, 0.3, a["num_layers"])
    for t in b["tasks"].values():
        t["mean_target_prob"] = list(np.asarray(t["mean_target_prob"]) + shift)
    fig = cv.difference_figure({"A": a, "B": b})
    lines = [tr for tr in fig.data if tr.mode == "lines+markers"]
    assert len(lines) == len(a["tasks"]) and {tr.name for tr in lines} == {"B − A"}
    for tr in lines:
        assert list(tr.y) == pytest.approx(list(shift))
    # A trace of another depth is read at A's depths by linear interpolation (ends held).
    other = {"A": a, "C": hybrid_trace_result}
    fig = cv.difference_figure(other)
    (tr,) = [t for t in fig.data if t.mode == "lines+markers"]
    La, Lc = a["num_layers"], hybrid_trace_result["num_layers"]
    curve = hybrid_trace_result["tasks"]["antonyms_en"]["mean_target_prob"]
    xs_c = [(l + 1) / Lc for l in range(Lc)]
    f = interp1d(xs_c, curve, bounds_error=False, fill_value=(curve[0], curve[-1]))
    expected = [float(f((l + 1) / La)) - p for l, p in enumerate(a["tasks"]["antonyms_en"]["mean_target_prob"])]
    assert list(tr.y) == pytest.approx(expected)
    assert "needs two traces" in cv.difference_figure({"A": a}).layout.annotations[0].text


def test_plan_against_plan_marks_the_layers_that_differ(trace_result):
    a = copy.deepcopy(trace_result)
    b = copy.deepcopy(trace_result)
    L = a["num_layers"]
    a["freeze_plan"]["train_layers"] = [0, 1]
    b["freeze_plan"]["train_layers"] = [0, 2, 3]
    header, rows = cv.plan_diff_rows({"A": a, "B": b})
    assert rows[1][header.index("trains where the first freezes")] == "2, 3"
    assert rows[1][header.index("freezes where the first trains")] == "1"
    fig = cv.plan_diff_figure({"A": a, "B": b})
    cells = {}
    for tr in fig.data:
        if tr.type != "bar":
            continue
        for y, base, colour in zip(tr.y, tr.base, tr.marker.line.color):
            cells[(y, round(base * L))] = (tr.name, colour == "#000")
    assert len(cells) == 2 * L
    assert {k for k, (_, differs) in cells.items() if differs} == {("B", 1), ("B", 2), ("B", 3)}
    assert [k[1] for k, (state, _) in cells.items() if k[0] == "A" and state == "trained"] == [0, 1]


def test_the_empty_compare_page_has_no_export_buttons_and_says_what_to_do(dash_app):
    from frontend.pages import compare as page

    view = page.figures_view({}, chosen=0)
    assert len(view) == 1 and "Choose two or more finished traces" in text_of(view[0])
    layout = page.layout()  # the API of the test app is unreachable: no traces to pick, nothing drawn
    assert find(layout, "compare-curves") is None and find(layout, "compare-difference") is None
    assert "img-export" not in json.dumps(layout.to_plotly_json(), default=str)
    text = text_of(find(layout, "compare-figures"))
    assert "Choose two or more finished traces" in text
    gone = page.layout(traces="nope")
    assert "None of the chosen traces could be loaded" in text_of(find(gone, "compare-figures"))


def test_one_trace_draws_its_panels_and_asks_for_a_second(trace_result):
    from frontend.pages import compare as page

    view = page.figures_view({"A": trace_result}, chosen=1)
    assert find(view[0], "compare-curves").figure.data
    assert "Add a second trace" in text_of(view[1])
    two = page.figures_view({"A": trace_result, "B": trace_result}, chosen=2)
    assert find(two[1], "compare-difference").figure.data
    assert any(find(card, "compare-plans") is not None for card in two)


# -- the report's trace evidence -----------------------------------------------------------------------

@pytest.fixture()
def fake_api(monkeypatch):
    """The API as an httpx mock transport behind the real ApiClient: ``answers[path] = (status, body)``."""
    answers = {}

    def handler(request: httpx.Request) -> httpx.Response:
        status, body = answers.get(request.url.path, (404, {"detail": "not found"}))
        return httpx.Response(status, json=body)

    from frontend.components import api_url

    base = api_url()
    monkeypatch.setitem(api_client._CLIENTS, base, httpx.Client(base_url=base, transport=httpx.MockTransport(handler)))
    api_client.RESULT_CACHE.clear()
    yield answers
    api_client.RESULT_CACHE.clear()


def _detail(result, source=None):
    return {"id": "e1", "kind": "experiment", "status": "succeeded", "spec": result["spec"], "result": result,
            "model": {"source": result["spec"]["model"]}, "provenance": {}, "source_trace_id": source}


def _same(a, b) -> bool:
    return json.dumps(a.to_plotly_json(), sort_keys=True, default=str) == json.dumps(b.to_plotly_json(), sort_keys=True, default=str)


def test_the_report_shows_the_source_trace_s_evidence(fake_api, experiment_result, trace_result):
    from frontend.pages import report as page

    fake_api["/api/v1/experiments/e1"] = (200, _detail(experiment_result, "t1"))
    fake_api["/api/v1/traces/t1/overview"] = (200, trace_result)
    layout = page.layout(experiment_id="e1")
    for key, build in (("plan", tv.plan_figure), ("heatmap", tv.task_heatmap), ("stability", tv.stability_figure)):
        graph = find(layout, f"report-trace-{key}")
        assert graph is not None and graph.figure.data and _same(graph.figure, build(trace_result))
    assert "freeze plan of trace t1" in text_of(find(layout, "report-trace-note"))
    assert find(layout, "report-trace-link").href == "/traces/t1"
    # The finding leads: before the results table.
    body = json.dumps(layout.to_plotly_json(), default=str)
    assert body.index("report-finding") < body.index("report-table")
    assert text_of(find(layout, "report-finding")) == rv.finding(experiment_result)
    # The exported file holds the same three figures.
    out, _ = page.export(1, "e1", None, None)
    for key in ("plan", "heatmap", "stability"):
        assert f'id="trace-{key}-figure"' in out["content"]
    assert out["content"].count("window.PlotlyConfig") == 1  # plotly.js inline once, the figures share it


def test_the_report_says_when_there_is_no_source_trace(fake_api, experiment_result):
    from frontend.pages import report as page

    fake_api["/api/v1/experiments/e1"] = (200, _detail(experiment_result))
    layout = page.layout(experiment_id="e1")
    assert find(layout, "report-trace-plan") is None
    assert "records no source trace" in text_of(find(layout, "report-trace-note"))
    html = rv.experiment_report_html(_detail(experiment_result))
    assert "records no source trace" in html and "trace-plan-figure" not in html
    # A source trace that cannot be read is named, with the API's reason.
    fake_api["/api/v1/experiments/e2"] = (200, dict(_detail(experiment_result, "gone"), id="e2"))
    text = text_of(find(page.layout(experiment_id="e2"), "report-trace-note"))
    assert "The source trace gone could not be loaded" in text and "not found" in text
