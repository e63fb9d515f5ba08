"""How sure a trace is of its answer: a bootstrap over prompts for every task particle and the freeze plan.

A resample draws, for each task, as many of its prompts as it has, with replacement (stratified by
task: the tasks are fixed, their prompts are a sample). From one resample come each task's mean curve
and mean baseline, hence its particle (the same ``ParticleRule``), and the mean JS per layer of the
primary perturbation over all the resampled prompts, hence the vulnerable layer; the freeze-plan rule
then gives that resample's plan. Over R resamples:

- per task (``TaskTrace.particle_bootstrap``): how often each particle came up, the percentile
  interval of the particle (no particle counts as deeper than every layer), the share that agrees
  with the particle of all the prompts, and a warning when that share is low or the prompts are few
  (``layertracer.spec.uncertainty``);
- for the plan (``FreezePlan.stability``): the share of resamples whose plan trains exactly the same
  layers, and the most frequent other plans with their shares.

Seeded and recorded: task t (in the result's task order) draws its resamples from its own generator,
``numpy.random.default_rng([seed, t])``, R rows of P_t indices in order. It works on the per-prompt
per-layer target probabilities and JS the trace keeps, in chunks of resamples of at most
``CHUNK_ELEMENTS`` indices per task, so memory stays at numpy copies of those arrays plus a few MB
(33 MiB at the peak for 10,000 prompts x 80 layers x 1,000 resamples, whatever the split into tasks).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional

import numpy as np

from layertracer.freeze_plan import FreezePlan, plan_freeze
from layertracer.ranges import format_ranges
from layertracer.results import Sensitivity, TraceResult
from layertracer.spec.uncertainty import PLAN_ALTERNATIVES, particle_warning
from layertracer.stats import ParticleRule, resample_counts

# Resample indices drawn at once per task (2**18: 2 MB of int64). Smaller than the stability curve's
# chunk: this runs at the end of a trace, when the result's lists are already in memory.
CHUNK_ELEMENTS = 2**18
METHOD = "bootstrap over prompts, stratified by task; task t draws from numpy default_rng([seed, t])"


@dataclass
class Resamples:
    """R bootstrap resamples of a trace's prompts.

    particles: task -> (R,) int64 particle layer per resample, -1 where the resampled curve has none.
    mean_js: (R, L) mean JS (nats) per layer of the resampled prompts, NaN where no prompt has a value
        (a layer the perturbation does not apply to); None without a sensitivity scan.
    """

    resamples: int
    seed: int
    level: float
    particles: dict[str, np.ndarray]
    mean_js: Optional[np.ndarray]

    def vulnerable(self) -> list[Optional[int]]:
        """(R,) the vulnerable layer of each resample (argmax of its mean JS), None without one."""
        if self.mean_js is None:
            return [None] * self.resamples
        valid = ~np.all(np.isnan(self.mean_js), axis=1)
        best = np.nanargmax(np.where(valid[:, None], self.mean_js, 0.0), axis=1)
        return [int(b) if ok else None for b, ok in zip(best, valid)]


def settings(result: TraceResult) -> tuple[int, int, float]:
    """(resamples, seed, level) of the result's options (the stability curve's; defaults for old results)."""
    options = result.options or {}
    return int(options.get("bootstrap_resamples", 1000)), int(options.get("seed", 0)), float(options.get("ci_level", 0.95))


def resample_trace(result: TraceResult, sensitivity: Optional[Sensitivity], *, resamples: int, seed: int,
                   level: float = 0.95) -> Resamples:
    """Draw ``resamples`` resamples of the prompts of ``result`` (see the module docstring).

    sensitivity: whose per-prompt ``js`` gives the resampled vulnerable layer (None: no JS)."""
    options = result.options or {}
    rule = ParticleRule(delta=float(options.get("particle_delta", 0.1)), floor=float(options.get("particle_floor", 0.1)))
    names = list(result.tasks)
    L = result.num_layers
    probs = {name: np.asarray(task.target_prob, dtype=np.float64).reshape(-1, L) for name, task in result.tasks.items()}
    bases = {name: np.asarray(task.baseline_prob, dtype=np.float64) for name, task in result.tasks.items()}
    # Per task: its rows of the JS matrix with NaN as 0, and which were finite (a mean skips the NaN).
    js_rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if sensitivity is not None and sensitivity.js:
        owner = [name for name, _ in result.prompt_index]
        for name in names:
            rows = np.asarray([row for row, who in zip(sensitivity.js, owner) if who == name], dtype=np.float64)
            finite = np.isfinite(rows)
            js_rows[name] = (np.where(finite, rows, 0.0).reshape(-1, L), finite.astype(np.float64).reshape(-1, L))
    generators = [np.random.default_rng([seed, t]) for t in range(len(names))]
    particles = {name: np.full(resamples, -1, dtype=np.int64) for name in names}
    mean_js = np.full((resamples, L), np.nan) if js_rows else None
    largest = max([len(p) for p in probs.values()] + [1])
    chunk = max(1, CHUNK_ELEMENTS // largest)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        js_sum = np.zeros((stop - start, L))
        js_count = np.zeros((stop - start, L))
        for t, name in enumerate(names):
            size = len(probs[name])
            if size == 0:
                continue
            counts = resample_counts(generators[t].integers(0, size, size=(stop - start, size)), size)
            particles[name][start:stop] = rule.find_rows(counts @ probs[name] / size, counts @ bases[name] / size)
            if name in js_rows:
                values, finite = js_rows[name]
                js_sum += counts @ values
                js_count += counts @ finite
        if mean_js is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_js[start:stop] = np.where(js_count > 0, js_sum / js_count, np.nan)
    return Resamples(resamples=resamples, seed=seed, level=level, particles=particles, mean_js=mean_js)


def particle_bootstrap(name: str, particle: Optional[int], prompts: int, draws: np.ndarray, num_layers: int,
                       samples: Resamples) -> dict:
    """The stored summary of one task's resampled particles ``draws`` (R,) (-1: none).

    ``{"resamples", "seed", "level", "counts": {layer as text or "none": n}, "interval": [low, high]
    (percentile interval at ``level``; null for an end that has no particle), "agreement": share equal
    to ``particle``, "warning": text or null}``."""
    point = -1 if particle is None else int(particle)
    counts = Counter(int(d) for d in draws)
    ordered = sorted(counts, key=lambda layer: num_layers if layer < 0 else layer)
    depth = np.where(draws < 0, num_layers, draws)  # no particle: deeper than every layer
    alpha = (1.0 - samples.level) / 2.0
    ends = [int(np.quantile(depth, q, method="inverted_cdf")) for q in (alpha, 1.0 - alpha)]
    agreement = float(np.mean(draws == point)) if len(draws) else 0.0
    return {
        "resamples": samples.resamples,
        "seed": samples.seed,
        "level": samples.level,
        "counts": {("none" if layer < 0 else str(layer)): counts[layer] for layer in ordered},
        "interval": [None if end >= num_layers else end for end in ends],
        "agreement": agreement,
        "warning": particle_warning(name, prompts, particle, agreement, samples.resamples),
    }


def plan_stability(result: TraceResult, plan: FreezePlan, samples: Resamples) -> dict:
    """How often the resamples give ``plan`` (same trained layers) under its own rule parameters.

    ``{"method", "resamples", "seed", "share", "distinct_plans", "alternatives": [{"train_layers",
    "train_ranges", "freeze_ranges", "share"}, ...]}`` (the ``PLAN_ALTERNATIVES`` most frequent other
    plans, most frequent first)."""
    names = list(result.tasks)
    params = plan.parameters or {}
    L = result.num_layers
    cache: dict[tuple, tuple[int, ...]] = {}
    tally: Counter = Counter()
    for r, vulnerable in enumerate(samples.vulnerable()):
        draw = tuple(int(samples.particles[name][r]) for name in names)
        key = (draw, vulnerable)
        if key not in cache:  # the plan depends on the particles and the vulnerable layer only
            mean_js = [] if samples.mean_js is None else samples.mean_js[r].tolist()
            cache[key] = tuple(plan_freeze(
                L, {name: (None if layer < 0 else layer) for name, layer in zip(names, draw)}, mean_js,
                min_train=int(params.get("min_train", 1)), protect_vulnerable=bool(params.get("protect_vulnerable", True)),
                boundary=str(params.get("boundary", "median")),
            ).train_layers)
        tally[cache[key]] += 1
    total = max(samples.resamples, 1)
    own = tuple(plan.train_layers)
    others = [(layers, n) for layers, n in tally.most_common() if layers != own][:PLAN_ALTERNATIVES]
    return {
        "method": METHOD,
        "resamples": samples.resamples,
        "seed": samples.seed,
        "share": tally[own] / total,
        "distinct_plans": len(tally),
        "alternatives": [{
            "train_layers": list(layers),
            "train_ranges": format_ranges(layers),
            "freeze_ranges": format_ranges([layer for layer in range(L) if layer not in set(layers)]),
            "share": n / total,
        } for layers, n in others],
    }


def annotate(result: TraceResult) -> TraceResult:
    """Fill in every task's ``particle_bootstrap`` and the plan's ``stability`` (in place; returns it),
    with the resamples, seed and level of the result's options and its primary perturbation."""
    resamples, seed, level = settings(result)
    samples = resample_trace(result, result.sensitivity, resamples=resamples, seed=seed, level=level)
    for name, task in result.tasks.items():
        task.particle_bootstrap = particle_bootstrap(name, task.task_particle, len(task.target_prob),
                                                     samples.particles[name], result.num_layers, samples)
    result.freeze_plan.stability = plan_stability(result, result.freeze_plan, samples)
    return result
