"""The experiment page's finding: the retention-vs-acquisition scatter, the generated sentence and the
chance line, checked against numbers recomputed here from the trials (scipy's t quantile, a Holm
correction written out below) on an experiment run by the engine, and on results assembled with the
engine's own statistics for the significant and the not-significant case."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import stats

from frontend.viz import experiment as ev
from frontend.viz import report as rv
from frontend.viz.names import result_labels


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from layertracer.demo.world import build_world

    return build_world(tmp_path_factory.mktemp("finding-world"), new_count=12, repeats=2)


@pytest.fixture(scope="module")
def two_bench_result(saved_model, world, tmp_path_factory):
    """A tiny experiment on both demo benchmarks (old facts first, new facts second), 3 allocations x 2 seeds."""
    from layertracer.experiments.runner import run_experiment
    from layertracer.experiments.spec import ExperimentSpec

    spec = ExperimentSpec(
        model=str(saved_model("qwen3")), corpus=str(world.new_corpus), allocations=["train-shallow", "0", "full"],
        seeds=[1, 2], benchmarks=list(world.benchmarks), steps=2, batch_size=4, block_size=32, lr=5e-2,
        warmup_steps=1, eval_shots=1, eval_limit=3, checkpoint_every=0, device="cpu", dtype="float32",
    )
    return json.loads(json.dumps(run_experiment(spec, tmp_path_factory.mktemp("finding-exp"))))


def _t_interval(values):
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return values.mean(), None, None
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return values.mean(), values.mean() - half, values.mean() + half


def _holm(ps):
    """Holm's step-down adjustment, written out: sort, multiply by (m - rank), running maximum, cap at 1."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def _significant(result, bench, a, b):
    comparisons = result["statistics"][bench]["comparisons"]
    index = next(i for i, c in enumerate(comparisons) if {c["a"], c["b"]} == {a, b})
    for test in ("bootstrap", "mcnemar", "permutation"):
        adjusted = _holm([c[test]["p_value"] for c in comparisons])
        if not adjusted[index] < 0.05:
            return False
    return True


def _per_allocation(result, bench, key):
    out = {}
    for t in result["trials"]:
        out.setdefault(t["allocation_spec"], []).append(t["evals"][bench][key])
    return out


def test_the_scatter_points_are_the_changes_of_the_trials(two_bench_result):
    result = two_bench_result
    old, new = result["spec"]["benchmarks"]
    assert ev.roles(result) == (old, new)
    points = {p["allocation"]: p for p in ev.tradeoff_points(result)}
    assert points["base"]["x"] == points["base"]["y"] == 0.0 and points["base"]["share"] == 0.0
    for allocation, changes in _per_allocation(result, new, "change").items():
        before = result["baseline"]["evals"][new]["overall"]["accuracy"]
        after = _per_allocation(result, new, "accuracy")[allocation]
        assert np.allclose(changes, np.array(after) - before)
        mean, lo, hi = _t_interval(changes)
        p = points[allocation]
        assert p["x"] == pytest.approx(mean) and p["x_low"] == pytest.approx(lo) and p["x_high"] == pytest.approx(hi)
        y_mean, y_lo, y_hi = _t_interval(_per_allocation(result, old, "change")[allocation])
        assert p["y"] == pytest.approx(y_mean) and p["y_low"] == pytest.approx(y_lo) and p["y_high"] == pytest.approx(y_hi)
        trial = next(t for t in result["trials"] if t["allocation_spec"] == allocation)
        assert p["share"] == pytest.approx(trial["parameters"]["trainable"] / trial["parameters"]["total"], rel=1e-6)
    assert set(points) == {"base", *result["spec"]["allocations"]}

    fig = ev.tradeoff_figure(result)
    drawn = {tr.name: tr for tr in fig.data}
    labels = result_labels(result)
    assert "train layers 0" in drawn  # the plan's bare "0" as its label, not a number
    for allocation, p in points.items():
        tr = drawn[labels[allocation]]
        assert (tr.x[0], tr.y[0]) == pytest.approx((p["x"], p["y"]))
        if p["x_low"] is not None:
            assert tr.error_x.arrayminus[0] == pytest.approx(p["x"] - p["x_low"])
            assert tr.error_y.array[0] == pytest.approx(p["y_high"] - p["y"])
    # Marker area grows with the trainable share: full trains more than the plan's one layer.
    assert drawn["full"].marker.size > drawn["train layers 0"].marker.size > drawn["base model"].marker.size
    assert "acquisition" in fig.layout.xaxis.title.text and "new-facts" in fig.layout.xaxis.title.text
    assert "retention" in fig.layout.yaxis.title.text and "old-facts" in fig.layout.yaxis.title.text


def _expected_clause(result, bench, verb):
    labels = result_labels(result)
    means = {a: float(np.mean(v)) for a, v in _per_allocation(result, bench, "accuracy").items()}
    base = result["baseline"]["evals"][bench]["overall"]["accuracy"]
    best = max(means, key=means.get)
    worst = min(means, key=means.get)
    if means[best] == means[worst]:
        return f"every allocation scored {means[best]:.3f} on {ev.bench_label(bench)}; base {base:.3f}"
    verdict = "significant after Holm" if _significant(result, bench, best, worst) else "not significant after Holm"
    return (f"{labels[best]} {verb} {ev.bench_label(bench)} ({means[best]:.3f} vs {means[worst]:.3f} for "
            f"{labels[worst]}; base {base:.3f}; {verdict}")


def test_the_sentence_states_the_numbers_of_the_trials(two_bench_result):
    result = two_bench_result
    old, new = result["spec"]["benchmarks"]
    sentence = ev.finding_sentence(result)
    for bench, verb in ((old, "kept the most on"), (new, "learned the most on")):
        clause = _expected_clause(result, bench, verb)
        assert clause.lower() in sentence.lower(), (clause, sentence)
    # The report leads with the same sentence.
    assert rv.finding(result) == sentence


def _assembled(per_question: dict[str, dict[str, np.ndarray]], shares: dict[str, float]) -> dict:
    """A result dict built with the engine's own statistics: bench -> allocation -> (seeds, questions) 0/1."""
    from layertracer.experiments.statistics import compare_allocations, seed_summary

    benches = list(per_question)
    allocations = [a for a in per_question[benches[0]] if a != "base"]
    table = [{"allocation": "base", "label": "base", "trainable_share": 0.0,
              "benchmarks": {b: seed_summary([per_question[b]["base"].mean()]) for b in benches}}]
    for a in allocations:
        table.append({"allocation": a, "label": a, "trainable_share": shares[a],
                      "benchmarks": {b: seed_summary(per_question[b][a].mean(axis=1)) for b in benches},
                      "change": {b: seed_summary(per_question[b][a].mean(axis=1) - per_question[b]["base"].mean())
                                 for b in benches}})
    return {"spec": {"benchmarks": benches, "allocations": allocations},
            "statistics": {b: compare_allocations(per_question[b], resamples=2000) for b in benches}, "table": table}


def test_the_sentence_says_significant_only_when_the_tests_say_so():
    q = 201  # means k / 402 never end in a 5 at the fourth decimal, so rounding them has one answer
    rng = np.random.default_rng(0)
    keep = (rng.random((2, q)) < 0.8).astype(float)
    lose = (rng.random((2, q)) < 0.3).astype(float)
    noise_a = (rng.random((2, q)) < 0.5).astype(float)
    noise_b = (rng.random((2, q)) < 0.5).astype(float)
    result = _assembled({
        "ceval:/w/old-facts": {"base": np.ones((1, q)) * (np.arange(q) % 5 != 0), "deep": keep, "shallow": lose},
        "ceval:/w/new-facts": {"base": (np.arange(q) % 4 == 0)[None].astype(float), "deep": noise_a, "shallow": noise_b},
    }, {"deep": 0.4, "shallow": 0.2})
    sentence = ev.finding_sentence(result)
    deep_old, shallow_old = keep.mean(), lose.mean()
    base_old, base_new = (np.arange(q) % 5 != 0).mean(), (np.arange(q) % 4 == 0).mean()
    assert (f"deep kept the most on ceval old-facts ({deep_old:.3f} vs {shallow_old:.3f} for shallow; base {base_old:.3f}; "
            "significant after Holm)") in sentence
    means = {"deep": noise_a.mean(), "shallow": noise_b.mean()}
    best, worst = sorted(means, key=means.get, reverse=True)
    assert (f"{best} learned the most on ceval new-facts ({means[best]:.3f} vs {means[worst]:.3f} for {worst}; "
            f"base {base_new:.3f}; not significant after Holm: McNemar p ") in sentence
    assert _significant(result, "ceval:/w/old-facts", "deep", "shallow")
    assert not _significant(result, "ceval:/w/new-facts", "deep", "shallow")


def test_one_benchmark_gives_an_honest_empty_scatter_and_a_sentence(experiment_result):
    fig = ev.tradeoff_figure(experiment_result)
    assert not fig.data and "needs two benchmarks" in fig.layout.annotations[0].text
    assert ev.tradeoff_points(experiment_result) == []
    assert "scored highest on" in ev.finding_sentence(experiment_result)


def _options_in_header(folder) -> int:
    """Options per question in a C-Eval file: the header's columns between ``question`` and ``answer``."""
    path = next(folder.glob("val/*_val.csv"))
    with open(path, encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    return header.index("answer") - header.index("question") - 1


def test_the_accuracy_bars_carry_a_chance_line(two_bench_result, world):
    chance = 1 / _options_in_header(world.old_facts)
    for fig in (ev.scores_figure(two_bench_result), rv.accuracy_figure(two_bench_result)):
        lines = [s for s in fig.layout.shapes if s.y0 == s.y1]
        assert len(lines) == 1 and lines[0].y0 == pytest.approx(chance) and lines[0].line.dash == "dot"
        assert any("chance 0.25" in a.text for a in fig.layout.annotations)
    # A task of lm-eval has no fixed number of choices: no line is drawn for it.
    assert ev.chance_levels({"spec": {"benchmarks": ["lm-eval:arc_easy", "cmmlu:/x"]}}) == {"cmmlu:/x": chance}


def test_the_experiment_page_leads_with_the_finding_and_exports_the_points(two_bench_result):
    from dash_tree import find, text_of

    from frontend.pages import experiment as page

    exp = {"id": "e1", "kind": "experiment", "status": "succeeded", "spec": two_bench_result["spec"], "result": two_bench_result}
    lead = page.finding_view(exp)
    assert text_of(lead[1]) == ev.finding_sentence(two_bench_result) and lead[1].id == "exp-finding"
    assert find(lead[2], "exp-tradeoff").figure.data
    assert page.finding_view({**exp, "result": None}) == []
    out = page.export(exp, None, "tradeoff", "csv")
    rows = list(csv.reader(out["content"].splitlines()))
    points = ev.tradeoff_points(two_bench_result)
    assert [r[0] for r in rows[1:]] == [p["allocation"] for p in points]
    assert [float(r[6]) for r in rows[1:]] == pytest.approx([p["y"] for p in points])


def test_the_url_can_swap_which_benchmark_is_retention(two_bench_result):
    from dash_tree import find

    from frontend.pages import experiment as page

    old, new = two_bench_result["spec"]["benchmarks"]
    exp = {"id": "e1", "kind": "experiment", "status": "succeeded", "spec": two_bench_result["spec"], "result": two_bench_result}
    swapped = page.finding_view(exp, old="new-facts", new="old-facts")
    fig = find(swapped[2], "exp-tradeoff").figure
    assert "new-facts" in fig.layout.yaxis.title.text and "old-facts" in fig.layout.xaxis.title.text
    points = {p["allocation"]: p for p in ev.tradeoff_points(two_bench_result)}
    drawn = {tr.name: (tr.x[0], tr.y[0]) for tr in fig.data}
    assert drawn["train layers 0"] == pytest.approx((points["0"]["y"], points["0"]["x"]))
    assert swapped[1].children == ev.finding_sentence(two_bench_result, new, old)
    # An unknown name keeps the spec's order.
    assert page.finding_view(exp, old="nope")[1].children == ev.finding_sentence(two_bench_result)
