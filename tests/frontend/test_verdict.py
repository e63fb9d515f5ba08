"""The verdict at the top of the trace page: its strip (plan, particle histogram, sensitivity,
vulnerable layer, each in its own row), its text (plan, trainable share, stability, warnings), its
exports, and a result written before the bootstrap existed. On a real trace of a tiny model."""

from __future__ import annotations

import copy

import dash
import pytest

from dash_tree import find, text_of
from frontend.viz import export as tx
from frontend.viz import trace as tv


@pytest.fixture(scope="module")
def page(dash_app):
    from frontend.pages import trace  # a page module imports once the app has registered the pages

    return trace


def rows_of(fig) -> dict[str, str]:
    """trace name -> the y axis it is drawn on ('y', 'y2', ...)."""
    return {t.name: (t.yaxis or "y") for t in fig.data if t.name}


def test_each_mark_has_a_row_of_its_own(trace_result):
    trace_result = copy.deepcopy(trace_result)
    # the tiny model's tasks have no particle: give one task resampled particles to draw
    first = next(iter(trace_result["tasks"]))
    trace_result["tasks"][first]["task_particle"] = 1
    trace_result["tasks"][first]["particle_bootstrap"]["counts"] = {"1": 30, "2": 10, "none": 10}
    fig = tv.verdict_figure(trace_result)
    L = trace_result["num_layers"]
    axes = rows_of(fig)
    assert axes["plan"] == "y" and axes["task particle"] == "y2" and axes["vulnerable layer"] == "y4"
    assert axes[f"mean JS ({trace_result['sensitivity']['perturbation']})"] == "y3"
    # the plan row: one bar per layer, blue where the plan trains
    bars = next(t for t in fig.data if t.name == "plan")
    train = set(trace_result["freeze_plan"]["train_layers"])
    assert [c == tv.TRAIN_COLOUR for c in bars.marker.color] == [l in train for l in range(L)]
    # the histogram: each task's share of its resamples at each layer, from the stored counts
    for name, task in trace_result["tasks"].items():
        counts = task["particle_bootstrap"]["counts"]
        total = sum(counts.values())
        bar = next(t for t in fig.data if t.name == name and t.type == "bar")
        assert bar.yaxis == "y2"
        assert list(bar.y) == pytest.approx([counts.get(str(l), 0) / total for l in range(L)])
    assert list(next(t for t in fig.data if t.name == first and t.type == "bar").y) == pytest.approx([0, 0.6, 0.2, 0][:L] + [0] * (L - 4))
    diamonds = next(t for t in fig.data if t.name == "task particle")
    assert list(diamonds.x) == [1] and diamonds.y[0] > 0.6  # above its column
    line = next(t for t in fig.data if (t.name or "").startswith("mean JS"))
    assert list(line.y) == pytest.approx(trace_result["sensitivity"]["mean_js"])
    vulnerable = next(t for t in fig.data if t.name == "vulnerable layer")
    assert list(vulnerable.x) == [trace_result["vulnerable_layer"]]


def test_the_vulnerable_marker_never_shares_a_row_with_a_particle(trace_result):
    """The old strip drew both at the same height: a diamond at the vulnerable layer covered it."""
    result = copy.deepcopy(trace_result)
    layer = result["vulnerable_layer"]
    first = next(iter(result["tasks"]))
    result["tasks"][first]["task_particle"] = layer
    result["freeze_plan"]["evidence"]["task_particles"][first] = layer
    fig = tv.verdict_figure(result)
    diamonds = next(t for t in fig.data if t.name == "task particle")
    vulnerable = next(t for t in fig.data if t.name == "vulnerable layer")
    assert layer in list(diamonds.x) and list(vulnerable.x) == [layer]
    assert diamonds.yaxis != vulnerable.yaxis
    domains = {name: fig.layout[f"yaxis{'' if n == 1 else n}"].domain for n, name in enumerate(("plan", "p", "s", "v"), 1)}
    assert domains["v"][1] < domains["s"][0] < domains["s"][1] < domains["p"][0]  # stacked, not overlapping
    old = tv.plan_figure(result)
    old_diamond = next(t for t in old.data if t.name == "task particle")
    old_vulnerable = next(t for t in old.data if t.name == "vulnerable layer")
    assert old_diamond.y[0] != old_vulnerable.y[0]


def test_the_panel_says_the_plan_its_share_and_how_sure_it_is(trace_result, page):
    meta = {"id": "t1", "status": "succeeded", "model": {"id": "m1", "name": "tiny"}}
    view = page.view_from_query(trace_result, {})
    body = dash.html.Div(page.figures_view(meta, trace_result, view))
    plan = trace_result["freeze_plan"]
    L = trace_result["num_layers"]
    head = " ".join(text_of(find(body, "trace-verdict-plan")).split())
    assert f"train {plan['train_ranges']}" in head and f"freeze {plan['freeze_ranges']}" in head
    share = len(plan["train_layers"]) / L
    assert text_of(find(body, "trace-verdict-share")) == f"{len(plan['train_layers'])} of {L} blocks trainable ({share:.0%} of the blocks)"
    stability = text_of(find(body, "trace-verdict-stability"))
    assert stability.startswith(f"this plan in {plan['stability']['share']:.0%} of {plan['stability']['resamples']} resamples")
    badge = text_of(find(body, "trace-verdict-badge"))
    assert badge.startswith("stable" if plan["stability"]["share"] >= 0.8 else "fragile")
    warnings = [t["particle_bootstrap"]["warning"] for t in trace_result["tasks"].values() if t["particle_bootstrap"]["warning"]]
    assert warnings, "6 prompts a task are too few: every task warns"
    assert [text_of(li) for li in find(body, "trace-verdict-warnings").children] == warnings
    table = text_of(find(body, "trace-verdict-particles"))
    for name in trace_result["tasks"]:
        assert name in table
    assert find(body, "trace-verdict").figure.data
    # the verdict comes first on the page
    assert body.children[0].id == "trace-verdict-panel"


def test_a_result_without_the_bootstrap_still_draws(trace_result, page):
    old = copy.deepcopy(trace_result)
    for task in old["tasks"].values():
        task.pop("particle_bootstrap")
    old["freeze_plan"].pop("stability")
    meta = {"id": "t1", "status": "succeeded", "model": {"id": "m1"}}
    body = dash.html.Div(page.figures_view(meta, old, page.view_from_query(old, {})))
    assert text_of(find(body, "trace-verdict-badge")) == "stability unknown"
    assert "written before the bootstrap" in text_of(find(body, "trace-verdict-stability"))
    assert find(body, "trace-verdict-warnings") is None
    fig = tv.verdict_figure(old)
    for name, task in old["tasks"].items():  # the histogram falls back to the particle of all prompts
        bar = next(t for t in fig.data if t.name == name and t.type == "bar")
        expected = [0.0] * old["num_layers"]
        if task["task_particle"] is not None:
            expected[task["task_particle"]] = 1.0
        assert list(bar.y) == expected


def test_the_verdict_exports_its_numbers(trace_result):
    header, rows = tx.rows_for(trace_result, "verdict")
    L = trace_result["num_layers"]
    assert len(rows) == L and header[:3] == ["layer", "normalized_depth", "decision"]
    train = set(trace_result["freeze_plan"]["train_layers"])
    assert [r[2] for r in rows] == ["train" if l in train else "freeze" for l in range(L)]
    assert [r[-1] for r in rows] == [int(l == trace_result["vulnerable_layer"]) for l in range(L)]
    data = tx.json_for(trace_result, "verdict")
    assert data["freeze_plan"]["stability"] == trace_result["freeze_plan"]["stability"]


# -- the depth views (issue 16, item 5) ---------------------------------------------------------------

def test_the_line_view_draws_each_tasks_curve_for_every_metric(trace_result):
    import numpy as np

    from layertracer.spec.views import trace_overview

    overview = trace_overview(trace_result)
    L = trace_result["num_layers"]
    for name, task in trace_result["tasks"].items():
        ranks = np.array(task["target_rank"], dtype=float)
        expected = {
            "prob": np.array(task["target_prob"]).mean(0), "logrank": np.log10(1 + ranks).mean(0),
            "top1": (ranks < 1).mean(0), "top10": (ranks < 10).mean(0),
            "entropy": np.array(task["entropy"]).mean(0), "kl": np.array(task["kl_to_final"]).mean(0),
        }
        for metric, curve in expected.items():
            for source in (trace_result, overview):  # the full result and the overview draw the same lines
                fig = tv.depth_lines(source, metric)
                line = next(t for t in fig.data if t.name == name)
                assert list(line.y) == pytest.approx(curve.tolist()), (metric, name)
                assert list(line.x) == list(range(L))
            cells = tv.prompt_matrix(task, metric)
            assert np.array(cells, dtype=float).mean(0) == pytest.approx(curve)
    with pytest.raises(ValueError):
        tv.depth_lines(trace_result, "median-rank")


def test_the_page_offers_log_rank_and_top_k_in_place_of_the_mean_rank(trace_result, page):
    meta = {"id": "t1", "status": "succeeded", "model": {"id": "m1"}}
    body = dash.html.Div(page.figures_view(meta, trace_result, page.view_from_query(trace_result, {"metric": "kl"})))
    radio = find(body, "trace-metric")
    assert [o["value"] for o in radio.options] == ["prob", "logrank", "top1", "top10", "entropy", "kl"] and radio.value == "kl"
    assert find(body, "trace-lines").figure.layout.title.text.startswith("Mean KL to final")
    old_link = dash.html.Div(page.figures_view(meta, trace_result, page.view_from_query(trace_result, {"metric": "rank"})))
    assert find(old_link, "trace-metric").value == "rank" and "rank" in [o["value"] for o in find(old_link, "trace-metric").options]
    header, rows = tx.rows_for(trace_result, "lines", metric="top10")
    assert header[4] == "top10" and len(rows) == len(trace_result["tasks"]) * trace_result["num_layers"]
