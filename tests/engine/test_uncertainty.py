"""The bootstrap of the task particles and the freeze plan (layertracer/uncertainty.py) against a plain
resampling written here: the same seeded draws, one resample at a time, with the particle rule and the
JS mean written out again; the plan's share against a case computed by hand; old results still read."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest

import layertracer as lt
import tiny_models
from layertracer import uncertainty
from layertracer.freeze_plan import plan_freeze
from layertracer.models import wrap_model
from layertracer.results import Sensitivity, TaskTrace, TraceResult
from layertracer.spec.uncertainty import PARTICLE_MIN_PROMPTS, plan_stability_text
from layertracer.stats import ParticleRule

DELTA, FLOOR = 0.1, 0.1


def plain_particle(curve, baseline):
    """The particle rule of docs/definitions.md, written out: first l with a rise >= delta to >= floor."""
    previous = baseline
    for layer, value in enumerate(curve):
        if value - previous >= DELTA and value >= FLOOR:
            return layer
        previous = value
    return None


def make_result(probs: dict[str, np.ndarray], bases: dict[str, np.ndarray], js: np.ndarray | None,
                resamples: int, seed: int, min_train: int = 1) -> TraceResult:
    """A TraceResult around given per-prompt arrays, its particles and plan computed the plain way."""
    L = next(iter(probs.values())).shape[1]
    tasks = {}
    for name, p in probs.items():
        P = len(p)
        tasks[name] = TaskTrace(
            name=name, language="en", prompts=[f"q{i}" for i in range(P)], targets=["a"] * P,
            target_tokens=["a"] * P, target_token_ids=[0] * P, boundary_merged=[False] * P,
            target_prob=p.tolist(), target_rank=[[0] * L] * P, entropy=[[0.0] * L] * P, top_tokens=[], top_probs=[],
            mean_target_prob=p.mean(0).tolist(), baseline_prob=bases[name].tolist(),
            task_particle=plain_particle(p.mean(0), bases[name].mean()), prompt_particles=[None] * P,
            particle_counts={}, final_accuracy=0.0)
    index = [(name, i) for name, p in probs.items() for i in range(len(p))]
    sens = None
    if js is not None:
        mean = np.nanmean(js, axis=0)
        sens = Sensitivity(perturbation="skip", params={}, js=[[None if np.isnan(v) else float(v) for v in row] for row in js],
                           mean_js=mean.tolist(), ci_low=mean.tolist(), ci_high=mean.tolist(), ci_level=0.95,
                           mean_js_by_task={}, vulnerable_layer=int(np.nanargmax(mean)))
    plan = plan_freeze(L, {n: t.task_particle for n, t in tasks.items()}, sens.mean_js if sens else [], min_train=min_train)
    return TraceResult(
        num_layers=L, block_kinds=["attention"] * L, normalized_depth=[(l + 1) / L for l in range(L)], model={},
        options={"bootstrap_resamples": resamples, "seed": seed, "ci_level": 0.95,
                 "particle_delta": DELTA, "particle_floor": FLOOR},
        tasks=tasks, prompt_index=index, sensitivity=sens, sensitivities={"skip": sens} if sens else {},
        vulnerable_layer=sens.vulnerable_layer if sens else None, similarity=None, position_view=None, freeze_plan=plan)


def random_trace(seed: int, sizes=(7, 12, 30), L: int = 6, resamples: int = 300, nan_layer: int | None = 4):
    rng = np.random.default_rng(seed)
    probs, bases = {}, {}
    for t, size in enumerate(sizes):
        # a noisy rise around a task-specific layer: particles that move between resamples
        steps = rng.integers(0, L, size=size)
        curve = (np.arange(L)[None, :] >= steps[:, None]) * rng.uniform(0.05, 0.6, size=(size, 1))
        probs[f"task{t}"] = np.clip(curve + rng.uniform(0, 0.05, size=(size, L)), 0, 1)
        bases[f"task{t}"] = rng.uniform(0, 0.05, size=size)
    js = rng.uniform(0, 0.3, size=(sum(sizes), L))
    if nan_layer is not None:
        js[:, nan_layer] = np.nan  # a layer the perturbation does not apply to
    return make_result(probs, bases, js, resamples=resamples, seed=seed)


def plain_bootstrap(result: TraceResult):
    """Per resample, one at a time: the particles of every task and the plan's trained layers."""
    resamples, seed = result.options["bootstrap_resamples"], result.options["seed"]
    names = list(result.tasks)
    js = np.array([[np.nan if v is None else v for v in row] for row in result.sensitivity.js])
    rows = {n: [r for r, (name, _) in enumerate(result.prompt_index) if name == n] for n in names}
    draws = {}
    for t, name in enumerate(names):
        size = len(result.tasks[name].target_prob)
        draws[name] = np.random.default_rng([seed, t]).integers(0, size, size=(resamples, size))
    particles = {n: [] for n in names}
    plans = []
    for r in range(resamples):
        chosen = {}
        for name in names:
            p = np.array(result.tasks[name].target_prob)[draws[name][r]]
            b = np.array(result.tasks[name].baseline_prob)[draws[name][r]]
            chosen[name] = plain_particle(p.mean(0), b.mean())
            particles[name].append(chosen[name])
        picked = np.concatenate([js[rows[n]][draws[n][r]] for n in names])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN layer
            mean_js = np.nanmean(picked, axis=0)
        plans.append(tuple(plan_freeze(result.num_layers, chosen, mean_js.tolist()).train_layers))
    return particles, plans


def test_find_rows_is_the_rule_on_every_row():
    rng = np.random.default_rng(3)
    curves = rng.uniform(0, 1, size=(500, 7)) * (rng.uniform(size=(500, 1)) < 0.8)
    bases = rng.uniform(0, 0.3, size=500)
    rows = ParticleRule(DELTA, FLOOR).find_rows(curves, bases)
    assert [None if r < 0 else int(r) for r in rows] == [plain_particle(c, b) for c, b in zip(curves, bases)]
    assert (rows < 0).any() and (rows >= 0).any()


@pytest.mark.parametrize("seed", [0, 11])
def test_bootstrap_is_the_plain_resampling(seed):
    result = random_trace(seed)
    particles, plans = plain_bootstrap(result)
    uncertainty.annotate(result)
    for name, task in result.tasks.items():
        expected = Counter("none" if p is None else str(p) for p in particles[name])
        boot = task.particle_bootstrap
        assert boot["counts"] == dict(expected)
        assert boot["agreement"] == pytest.approx(np.mean([p == task.task_particle for p in particles[name]]))
        depth = sorted(result.num_layers if p is None else p for p in particles[name])
        # percentile interval of the particle, no particle deeper than every layer
        low, high = depth[int(np.ceil(0.025 * len(depth))) - 1], depth[int(np.ceil(0.975 * len(depth))) - 1]
        assert boot["interval"] == [None if low == result.num_layers else low, None if high == result.num_layers else high]
        assert (boot["resamples"], boot["seed"]) == (300, seed)
    tally = Counter(plans)
    stability = result.freeze_plan.stability
    own = tuple(result.freeze_plan.train_layers)
    assert stability["share"] == pytest.approx(tally[own] / len(plans))
    assert stability["distinct_plans"] == len(tally)
    others = [(list(p), n / len(plans)) for p, n in tally.most_common() if p != own][:3]
    assert [(a["train_layers"], a["share"]) for a in stability["alternatives"]] == [(p, pytest.approx(s)) for p, s in others]
    assert 0 < stability["share"] < 1 and stability["alternatives"], "the case should make the plan move"


def test_chunks_do_not_change_the_draws(monkeypatch):
    whole = uncertainty.annotate(random_trace(5))
    monkeypatch.setattr(uncertainty, "CHUNK_ELEMENTS", 37)  # a chunk of one resample
    chunked = uncertainty.annotate(random_trace(5))
    assert chunked.to_dict() == whole.to_dict()


def test_plan_share_of_a_case_computed_by_hand():
    """Task a always starts at layer 2. Task b has two prompts: p1 rises at layer 1, p2 only at 3. A
    resample of b's two prompts holding p1 at least once (chance 3/4) has its mean rise at layer 1 (the
    median particle of [1, 2] is 1: train 0); two copies of p2 (1/4) start at 3 (median of [2, 3]: 2,
    train 0-1)."""
    a = np.array([[0, 0, 0.5, 0.6, 0.7]] * 4, dtype=float)
    b = np.array([[0, 0.4, 0.4, 0.4, 0.4], [0, 0, 0, 0.3, 0.3]])
    result = make_result({"a": a, "b": b}, {"a": np.zeros(4), "b": np.zeros(2)}, None, resamples=4000, seed=2)
    assert result.freeze_plan.train_layers == [0]
    uncertainty.annotate(result)
    # the same draws, counted by hand: the resamples of b that are two copies of p2 (index 1)
    b_draws = np.random.default_rng([2, 1]).integers(0, 2, size=(4000, 2))
    both_p2 = float(np.mean(b_draws.sum(axis=1) == 2))
    stability = result.freeze_plan.stability
    assert stability["share"] == pytest.approx(1 - both_p2)
    assert stability["alternatives"] == [{"train_layers": [0, 1], "train_ranges": "0-1", "freeze_ranges": "2-4",
                                          "share": pytest.approx(both_p2)}]
    assert abs(stability["share"] - 0.75) < 0.03  # 4 binomial standard errors at 4000 resamples
    boot_b = result.tasks["b"].particle_bootstrap
    assert boot_b["counts"] == {"1": round((1 - both_p2) * 4000), "3": round(both_p2 * 4000)}
    assert result.tasks["a"].particle_bootstrap["counts"] == {"2": 4000}
    assert boot_b["warning"].startswith(f"b: the particle (layer 1) rests on only 2 prompts (at least {PARTICLE_MIN_PROMPTS}")
    text = plan_stability_text(result.freeze_plan.to_dict())
    assert text.startswith(f"this plan in {round(100 * (1 - both_p2))}% of 4000 resamples")
    assert text.endswith(f"next: train 0-1 / freeze 2-4 ({round(100 * both_p2)}%)")


def test_many_stable_prompts_give_no_warning():
    rng = np.random.default_rng(0)
    a = np.clip(np.array([0, 0, 0.6, 0.7, 0.8]) + rng.normal(0, 0.05, size=(60, 5)), 0, 1)
    result = uncertainty.annotate(make_result({"a": a}, {"a": np.zeros(60)}, None, resamples=500, seed=0))
    assert result.tasks["a"].particle_bootstrap["agreement"] == 1.0
    assert result.tasks["a"].particle_bootstrap["warning"] is None
    assert result.summary()["warnings"] == []
    assert result.freeze_plan.stability["share"] == 1.0 and result.freeze_plan.stability["alternatives"] == []


def test_a_result_written_before_the_bootstrap_still_reads(tmp_path):
    data = random_trace(1).to_dict()
    for task in data["tasks"].values():
        task.pop("particle_bootstrap")
    data["freeze_plan"].pop("stability")
    old = TraceResult.from_dict(data)
    assert old.tasks["task0"].particle_bootstrap is None and old.freeze_plan.stability == {}
    summary = old.summary()
    assert summary["warnings"] == [] and summary["tasks"]["task0"]["particle_interval"] is None
    assert plan_stability_text(data["freeze_plan"]) is None
    from layertracer.spec.views import trace_overview, trace_summary
    assert trace_overview(data)["tasks"]["task0"].get("particle_bootstrap") is None
    assert trace_summary(data)["particle_uncertainty"]["task0"] is None and trace_summary(data)["warnings"] == []
    new = random_trace(1)
    uncertainty.annotate(new)
    listed = trace_summary(new.to_dict())
    assert listed["warnings"] == [t.particle_bootstrap["warning"] for t in new.tasks.values() if t.particle_bootstrap["warning"]]
    assert listed["particle_uncertainty"]["task2"]["agreement"] == new.tasks["task2"].particle_bootstrap["agreement"]
    assert listed["freeze_plan"]["stability"] == new.freeze_plan.stability


@pytest.fixture(scope="module")
def loaded(tokenizer):
    return wrap_model(tiny_models.build_model("llama"), tokenizer, source="llama")


def test_a_trace_carries_a_reproducible_bootstrap(loaded):
    tasks = lt.load_tasks("antonyms_en,arithmetic_zh", limit=6)
    options = dict(bootstrap_resamples=40, similarity=False, position_view=False, seed=4)
    first = lt.trace(loaded, tasks, options=lt.TraceOptions(**options))
    again = lt.trace(loaded, tasks, options=lt.TraceOptions(**options))
    for name, task in first.tasks.items():
        boot = task.particle_bootstrap
        assert sum(boot["counts"].values()) == 40 and boot["seed"] == 4
        assert boot == again.tasks[name].particle_bootstrap
        assert boot["warning"] is not None  # 6 prompts are too few
    assert first.freeze_plan.stability == again.freeze_plan.stability
    assert first.freeze_plan.stability["resamples"] == 40
    # and the plain resampling agrees on the real trace
    particles, plans = plain_bootstrap(first)
    assert first.freeze_plan.stability["share"] == pytest.approx(Counter(plans)[tuple(first.freeze_plan.train_layers)] / 40)
    overview = first.overview()
    assert overview["tasks"]["antonyms_en"]["particle_bootstrap"] == first.tasks["antonyms_en"].particle_bootstrap
    assert overview["freeze_plan"]["stability"] == first.freeze_plan.stability
