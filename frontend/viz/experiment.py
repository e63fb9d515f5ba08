"""Figures and tables of a trial or experiment, built from the engine runner's result JSON
(``layertracer.experiments.runner``: ``table``, ``statistics``, ``trials``, ``baseline``) and the API's
training metrics (``{"trials": {slug: [{step, loss, lr, tokens_per_s, grad_norm, eval_loss?}]}}``).
Pure functions: data in, a plotly Figure or plain rows out."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import plotly.graph_objects as go

from frontend.viz.common import OKABE_ITO, base_layout, empty_figure, layer_positions, depth_title, plotly_text as _plotly_text
from frontend.viz.names import result_labels, trial_label
from layertracer.spec.benchmarks import chance_accuracy
from layertracer.spec.significance import verdict

Result = dict[str, Any]


def bench_label(spec: str) -> str:
    """``ceval:/data/old-facts`` -> ``ceval old-facts``."""
    kind, _, folder = spec.partition(":")
    return f"{kind} {folder.rstrip('/').rsplit('/', 1)[-1]}" if folder else kind


def benchmarks(result: Result) -> list[str]:
    return list((result.get("spec") or {}).get("benchmarks") or [])


def allocations(result: Result) -> list[str]:
    return list((result.get("spec") or {}).get("allocations") or [])


def _colour(index: int) -> str:
    return OKABE_ITO[index % len(OKABE_ITO)]


def step_dtick(span: float, ticks: int = 8) -> int:
    """A whole-step tick spacing (1, 2, 5, 10, 20, 50, ...) giving at most about ``ticks`` ticks over
    ``span`` steps: plotly's own choice can be fractional (1, 1.2, 1.4, ...), which the integer tick
    format would print as 1, 1, 1, 2, 2."""
    raw = max(span, 1) / ticks
    scale = 1
    while True:
        for mult in (1, 2, 5):
            if mult * scale >= raw:
                return mult * scale
        scale *= 10


def loss_figure(metrics: Optional[dict], result: Optional[Result] = None, spec: Optional[dict] = None) -> go.Figure:
    """Training loss per step, one line per trial (allocation x seed, named by the allocation's label);
    held-out loss as markers. Uses the live metrics when there are any, else the loss curves stored in the
    result. ``spec``: the run's spec (its labels) while no result exists yet."""
    series: dict[str, list[tuple[int, float]]] = {}
    evals: dict[str, list[tuple[int, float]]] = {}
    for slug, rows in ((metrics or {}).get("trials") or {}).items():
        series[slug] = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
        evals[slug] = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
    if not any(series.values()) and result:
        for trial in result.get("trials") or []:
            curve = (trial.get("training") or {}).get("loss_curve") or []
            series[trial["slug"]] = [(s, l) for s, l in curve]
    if not any(series.values()):
        return empty_figure("No training steps yet.")
    allocation_of = {t["slug"]: t["allocation_spec"] for t in (result or {}).get("trials") or []}
    names = result_labels(result, spec)
    order = sorted(series)
    groups = sorted({allocation_of.get(s, s.rsplit("-seed", 1)[0]) for s in order})
    fig = go.Figure()
    seen: dict[str, int] = {}
    for slug in order:
        group = allocation_of.get(slug, slug.rsplit("-seed", 1)[0])
        colour = _colour(groups.index(group))
        dash = ("solid", "dash", "dot", "dashdot")[seen.get(group, 0) % 4]  # seeds of one allocation
        seen[group] = seen.get(group, 0) + 1
        pts = series[slug]
        name = trial_label(slug, allocation_of.get(slug), names)
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=name,
                                 legendgroup=group, line=dict(color=colour, width=2, dash=dash),
                                 hovertemplate=f"{_plotly_text(name)}<br>step %{{x}}<br>loss %{{y:.4f}}<extra></extra>"))
        if evals.get(slug):
            pts = evals[slug]
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers",
                                     name=f"{name} held-out", legendgroup=group,
                                     marker=dict(color=colour, symbol="circle-open", size=9)))
    base_layout(fig, title="Training loss (causal-LM cross-entropy) per step", height=380)
    steps = [p[0] for pts in series.values() for p in pts]
    fig.update_xaxes(title_text="optimizer step", tickformat="d", tick0=0, dtick=step_dtick(max(steps) - min(steps)))
    fig.update_yaxes(title_text="loss (nats per token)")
    return fig


def _summary_error(summary: dict) -> tuple[float, Optional[float], Optional[float]]:
    mean = summary.get("mean")
    lo, hi = summary.get("ci_low"), summary.get("ci_high")
    return mean, (None if lo is None else mean - lo), (None if hi is None else hi - mean)


def scores_figure(result: Result) -> go.Figure:
    """Accuracy per allocation and benchmark: the base model and each allocation's mean over seeds with
    its Student-t 95% interval (no interval with one seed)."""
    rows = result.get("table") or []
    benches = benchmarks(result)
    if not rows or not benches:
        return empty_figure("No benchmark scores yet.")
    fig = go.Figure()
    labels = result_labels(result)
    names = [_plotly_text(labels.get(r["allocation"], r["allocation"])) for r in rows]
    for index, bench in enumerate(benches):
        means, plus, minus, text = [], [], [], []
        for r in rows:
            summary = (r.get("benchmarks") or {}).get(bench)
            if not summary:
                means.append(None), plus.append(None), minus.append(None), text.append("")
                continue
            mean, down, up = _summary_error(summary)
            means.append(mean)
            minus.append(down or 0.0)
            plus.append(up or 0.0)
            n = summary.get("n", 1)
            text.append(f"n={n} seed{'s' if n != 1 else ''}")
        fig.add_trace(go.Bar(
            x=names, y=means, name=bench_label(bench), marker_color=_colour(index), text=text,
            error_y=dict(type="data", array=plus, arrayminus=minus, visible=True, color="#333"),
            hovertemplate=f"{bench_label(bench)}<br>%{{x}}: %{{y:.3f}}<br>%{{text}}<extra></extra>",
        ))
    base_layout(fig, title="Benchmark accuracy before (base) and after training, mean over seeds with 95% t-interval",
                height=400)
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.2, x=0))
    fig.update_yaxes(title_text="accuracy (share of questions correct)", range=[0, 1])
    add_chance_lines(fig, chance_levels(result))
    # Labels are names, never numbers: plotly types an axis of "0" and "base" as linear (the plan's
    # allocation "0" is a number to it) and drops the bars whose label is not one.
    fig.update_xaxes(title_text="allocation (trained layers)", type="category")
    return fig


def drift_figure(result: Result, *, normalized: bool = False) -> go.Figure:
    """Weight drift per block: relative Frobenius change ||W_after − W_before|| / ||W_before||, one line
    per trial."""
    trials = [t for t in result.get("trials") or [] if t.get("drift")]
    if not trials:
        return empty_figure("No weight drift yet (it is measured when a trial finishes).")
    groups = sorted({t["allocation_spec"] for t in trials})
    labels = result_labels(result)
    fig = go.Figure()
    for t in trials:
        blocks = t["drift"]["blocks"]
        xs = layer_positions(len(blocks), normalized)
        name = trial_label(t["slug"], t["allocation_spec"], labels)
        fig.add_trace(go.Scatter(
            x=xs, y=blocks, mode="lines+markers", name=name, legendgroup=t["allocation_spec"],
            line=dict(color=_colour(groups.index(t["allocation_spec"]))),
            hovertemplate=f"{_plotly_text(name)}<br>layer %{{x}}<br>drift %{{y:.4g}}<extra></extra>",
        ))
    base_layout(fig, title="Weight drift per layer (relative Frobenius change of the block's weights)", height=380)
    fig.update_xaxes(title_text=depth_title(normalized), tickformat=".2f" if normalized else "d", dtick=None if normalized else 1)
    fig.update_yaxes(title_text="relative change (0.01 = 1%)", rangemode="tozero", tickformat=".2~g")
    return fig


def retrace_figure(result: Result) -> go.Figure:
    """Re-trace comparison: the change of the stability curve (mean JS after − before, nats) per layer,
    one line per trial; the base model's curve for scale."""
    trials = [t for t in result.get("trials") or [] if t.get("retrace")]
    base = ((result.get("baseline") or {}).get("trace") or {})
    if not trials:
        return empty_figure("No re-trace (the experiment was run without trace tasks, or no trial has finished).")
    groups = sorted({t["allocation_spec"] for t in trials})
    labels = result_labels(result)
    fig = go.Figure()
    if base.get("mean_js"):
        fig.add_trace(go.Scatter(x=list(range(len(base["mean_js"]))), y=base["mean_js"], mode="lines",
                                 name="base model mean JS", line=dict(color="#777", dash="dot")))
    for t in trials:
        change = (t["retrace"].get("change") or {}).get("mean_js_change")
        if not change:
            continue
        name = trial_label(t["slug"], t["allocation_spec"], labels)
        fig.add_trace(go.Scatter(
            x=list(range(len(change))), y=change, mode="lines+markers", name=f"{name} change",
            line=dict(color=_colour(groups.index(t["allocation_spec"]))),
            hovertemplate=f"{_plotly_text(name)}<br>layer %{{x}}<br>Δ mean JS %{{y:.4g}} nats<extra></extra>",
        ))
    fig.add_hline(y=0, line=dict(color="#000", width=1))
    base_layout(fig, title="Re-trace: change of layer sensitivity after training (after − before)", height=380)
    fig.update_xaxes(title_text=depth_title(False), tickformat="d", dtick=1)
    fig.update_yaxes(title_text="Δ mean JS (nats)", tickformat=".2~g")
    return fig


# -- tables ------------------------------------------------------------------------------------------


def _ci(summary: Optional[dict]) -> str:
    if not summary or summary.get("mean") is None:
        return "—"
    text = f"{summary['mean']:.3f}"
    if summary.get("ci_low") is not None:
        text += f" [{summary['ci_low']:.3f}, {summary['ci_high']:.3f}]"
    return text


def results_table(result: Result) -> tuple[list[str], list[list[str]]]:
    """The papers' results table: one row per allocation (and the base model)."""
    benches = benchmarks(result)
    header = ["allocation", "trained layers", "trainable share", "seeds"]
    for b in benches:
        header += [f"{bench_label(b)} accuracy [95% CI]", f"{bench_label(b)} change"]
    header += ["final loss", "tokens/s"]
    rows = []
    labels = result_labels(result)
    for r in result.get("table") or []:
        row = [labels.get(r["allocation"], r["allocation"]), r.get("ranges", "—" if r["allocation"] == "base" else ""),
               f"{100 * r.get('trainable_share', 0.0):.1f}%", ",".join(str(s) for s in r.get("seeds", [])) or "—"]
        for b in benches:
            row += [_ci((r.get("benchmarks") or {}).get(b)), _ci((r.get("change") or {}).get(b))]
        row += [_ci(r.get("final_loss")), _ci(r.get("tokens_per_s")).split(" ")[0]]
        rows.append(row)
    return header, rows


def significance_table(result: Result, bench: str) -> tuple[list[str], list[list[str]]]:
    """Pairwise comparisons on one benchmark: difference with paired-bootstrap CI, and the p-values
    (raw / Holm-adjusted) of the bootstrap, McNemar and sign-flip permutation tests."""
    stats = (result.get("statistics") or {}).get(bench) or {}
    header = ["a", "b", "accuracy a − b", "95% CI (paired bootstrap)", "bootstrap p (Holm)", "McNemar p (Holm)",
              "permutation p (Holm)", "significant at 0.05 (Holm, all three)"]
    rows = []
    labels = result_labels(result)
    for c in stats.get("comparisons") or []:
        def p(test: str) -> str:
            t = c.get(test) or {}
            return f"{t.get('p_value', float('nan')):.3g} ({t.get('p_adjusted', float('nan')):.3g})"

        significant = verdict(c)
        rows.append([labels.get(c["a"], c["a"]), labels.get(c["b"], c["b"]), f"{c['diff']:+.3f}", f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]",
                     p("bootstrap"), p("mcnemar"), p("permutation"), "yes" if significant else "no"])
    return header, rows


def subject_table(result: Result, bench: str) -> tuple[list[str], list[list[str]]]:
    """Accuracy per subject: the base model, then each allocation's mean over its seeds."""
    base = (((result.get("baseline") or {}).get("evals") or {}).get(bench) or {}).get("subjects") or {}
    per_alloc: dict[str, dict[str, list[float]]] = {}
    for t in result.get("trials") or []:
        subjects = ((t.get("evals") or {}).get(bench) or {}).get("subjects") or {}
        for name, acc in subjects.items():
            per_alloc.setdefault(t["allocation_spec"], {}).setdefault(name, []).append(acc)
    allocs = [a for a in allocations(result) if a in per_alloc]
    names = sorted(set(base) | {n for d in per_alloc.values() for n in d})
    labels = result_labels(result)
    header = ["subject", "base model"] + [labels.get(a, a) for a in allocs]
    rows = []
    for name in names:
        b = base.get(name)
        b_acc = b.get("accuracy") if isinstance(b, dict) else b
        row = [name, "—" if b_acc is None else f"{b_acc:.3f}"]
        for a in allocs:
            values = per_alloc[a].get(name)
            row.append("—" if not values else f"{sum(values) / len(values):.3f}")
        rows.append(row)
    return header, rows


def finished_trials_table(trials: Sequence[dict], spec: Optional[dict] = None) -> tuple[list[str], list[list[str]]]:
    """One row per finished trial: allocation (its label: ``spec``'s labels), seed, trained ranges, final
    loss, accuracy before → after."""
    benches = sorted({b for t in trials for b in (t.get("evals") or {})})
    header = ["trial", "allocation", "seed", "trained layers", "final loss"] + [f"{bench_label(b)} before → after" for b in benches]
    rows = []
    labels = result_labels({"trials": list(trials)}, spec)
    for t in trials:
        training = t.get("training") or {}
        row = [t["slug"], labels.get(t.get("allocation_spec", "?"), t.get("allocation_spec", "?")), str(t.get("seed", "?")), (t.get("allocation") or {}).get("ranges", "?"),
               "—" if training.get("final_loss") is None else f"{training['final_loss']:.3f}"]
        for b in benches:
            e = (t.get("evals") or {}).get(b) or {}
            row.append("—" if e.get("accuracy") is None else f"{e.get('before', float('nan')):.3f} → {e['accuracy']:.3f}")
        rows.append(row)
    return header, rows


def particle_change_table(result: Result) -> tuple[list[str], list[list[str]]]:
    """Task particles and the vulnerable layer before and after each trial's training."""
    header = ["trial", "task", "particle before", "particle after", "vulnerable layer before → after"]
    rows = []
    for t in result.get("trials") or []:
        change = (t.get("retrace") or {}).get("change") or {}
        vul = change.get("vulnerable_layer") or {}
        for task, moved in (change.get("task_particles") or {}).items():
            rows.append([t["slug"], task, _layer(moved.get("before")), _layer(moved.get("after")),
                         f"{_layer(vul.get('before'))} → {_layer(vul.get('after'))}"])
    return header, rows


def _layer(value) -> str:
    return "none" if value is None else str(value)


def provenance_rows(experiment: dict) -> list[tuple[str, str]]:
    """(what, value) pairs behind every number of an experiment page: model hash, spec, seeds, prompt
    settings, code version."""
    result = experiment.get("result") or {}
    spec = experiment.get("spec") or result.get("spec") or {}
    prov = experiment.get("provenance") or {}
    model = experiment.get("model") or {}
    rows = [
        ("model", f"{model.get('name') or model.get('source') or spec.get('model', '?')}"),
        ("model fingerprint (sha256)", str(prov.get("model_fingerprint") or model.get("fingerprint") or "—")),
        ("code version", str(prov.get("code_version") or result.get("version") or "—")),
        ("seeds", ", ".join(str(s) for s in (prov.get("seeds") or spec.get("seeds") or [])) or "—"),
        ("allocations", ", ".join(spec.get("allocations") or []) or "—"),
        ("corpus", f"{spec.get('corpus', '—')} (block size {spec.get('block_size', '?')} tokens)"),
        ("training", f"{spec.get('steps', '?')} steps, lr {spec.get('lr', '?')}, batch {spec.get('batch_size', '?')} x "
                     f"accumulation {spec.get('grad_accum', 1)}, warmup {spec.get('warmup_steps', '?')}"),
        ("evaluation", f"mode {spec.get('eval_mode', '?')}, {spec.get('eval_shots', '?')} shots, "
                       f"limit {spec.get('eval_limit') or 'none'}"),
        ("re-trace", f"tasks {spec.get('trace_tasks') or 'none'}, {spec.get('trace_limit', '?')} prompts each, "
                     f"perturbations {', '.join(spec.get('trace_perturbations') or [])}"),
    ]
    for bench, evals in ((result.get("baseline") or {}).get("evals") or {}).items():
        s = evals.get("settings") or {}
        rows.append((f"prompt settings: {bench_label(bench)}",
                     f"{s.get('template', '?')}, split {s.get('split', '?')}, few-shot {s.get('fewshot_split', '?')} "
                     f"({s.get('fewshot_sampler', '?')}), continuations {s.get('continuations')}"))
    return rows


# -- the finding: retention against acquisition ------------------------------------------------------
# An experiment's benchmarks are read in the spec's order: the first measures what the model already
# knew (retention: old facts, a general benchmark), the second what training should add (acquisition:
# new facts, the new domain). The demo and the papers list them so; ``roles`` takes other choices.


def roles(result: Result, retention: Optional[str] = None, acquisition: Optional[str] = None) -> tuple[Optional[str], Optional[str]]:
    """(retention benchmark, acquisition benchmark): the given ones when the run has them, else the
    spec's first and second benchmark (None where the run has too few)."""
    benches = benchmarks(result)
    old = retention if retention in benches else (benches[0] if benches else None)
    rest = [b for b in benches if b != old]
    new = acquisition if acquisition in rest else (rest[0] if rest else None)
    return old, new


def _change(row: dict, bench: str) -> tuple[Optional[float], Optional[float], Optional[float]]:
    """(mean, ci_low, ci_high) of a table row's change from the base model on bench (0 for the base)."""
    if row.get("allocation") == "base":
        return 0.0, None, None
    summary = (row.get("change") or {}).get(bench) or {}
    return summary.get("mean"), summary.get("ci_low"), summary.get("ci_high")


def tradeoff_points(result: Result, retention: Optional[str] = None, acquisition: Optional[str] = None) -> list[dict]:
    """One point per allocation, the base model first at (0, 0): ``x`` the change of accuracy on the
    acquisition benchmark, ``y`` on the retention one (after − base, mean over seeds), their Student-t
    95% intervals (``x_low`` .. ``y_high``, None with one seed), ``share`` the trainable share (0-1) and
    ``label``. Empty when the run has fewer than two benchmarks or no table."""
    old, new = roles(result, retention, acquisition)
    if not old or not new:
        return []
    names = result_labels(result)
    points = []
    for row in result.get("table") or []:
        x, x_low, x_high = _change(row, new)
        y, y_low, y_high = _change(row, old)
        if x is None or y is None:
            continue
        points.append({"allocation": row["allocation"], "label": names.get(row["allocation"], row["allocation"]),
                       "x": x, "x_low": x_low, "x_high": x_high, "y": y, "y_low": y_low, "y_high": y_high,
                       "share": float(row.get("trainable_share") or 0.0)})
    points.sort(key=lambda p: p["allocation"] != "base")
    return points


TRADEOFF_NOTE = ("Each allocation's change of accuracy from the base model (the origin) on the new facts (acquisition, "
                 "x) and the old facts (retention, y): up and right is better. Bars: Student-t 95% interval over seeds; "
                 "marker area: trainable share. The significance tests are in the tables.")


def point_size(share: float) -> float:
    """Marker diameter (px) whose area grows with the trainable share: 10 px at 0, 46 px at 1."""
    return 10.0 + 36.0 * max(0.0, min(1.0, share)) ** 0.5


def tradeoff_figure(result: Result, retention: Optional[str] = None, acquisition: Optional[str] = None) -> go.Figure:
    """The finding in one figure: per allocation, the change on old facts (y, retention) against the
    change on new facts (x, acquisition) from the base model at the origin, error bars the t-intervals
    over seeds, marker area by trainable share. Up and right is better: more learned, less forgotten."""
    old, new = roles(result, retention, acquisition)
    if not old or not new:
        return empty_figure("Retention against acquisition needs two benchmarks (old facts and new facts); "
                            f"this run has {len(benchmarks(result))}.")
    points = tradeoff_points(result, old, new)
    if len(points) < 2:
        return empty_figure("No trained allocation has scores on both benchmarks yet.")
    fig = go.Figure()
    fig.add_hline(y=0, line=dict(color="#888", width=1))
    fig.add_vline(x=0, line=dict(color="#888", width=1))
    for index, p in enumerate(points):
        base = p["allocation"] == "base"
        err = {}
        if p["x_low"] is not None:
            err["error_x"] = dict(type="data", array=[p["x_high"] - p["x"]], arrayminus=[p["x"] - p["x_low"]],
                                  visible=True, color="#555", thickness=1.2)
        if p["y_low"] is not None:
            err["error_y"] = dict(type="data", array=[p["y_high"] - p["y"]], arrayminus=[p["y"] - p["y_low"]],
                                  visible=True, color="#555", thickness=1.2)
        name = _plotly_text(p["label"])
        fig.add_trace(go.Scatter(
            # The base model's label below its mark, the others' above: at the origin they often meet.
            x=[p["x"]], y=[p["y"]], mode="markers+text", name=name, text=[name],
            textposition="bottom center" if base else "top center",
            customdata=[[100 * p["share"]]],
            marker=dict(size=point_size(p["share"]), color="#000" if base else _colour(index - 1), opacity=0.85,
                        symbol="x" if base else "circle", line=dict(color="#fff", width=1)),
            hovertemplate=(f"{name}<br>change on {_plotly_text(bench_label(new))} %{{x:+.3f}}<br>"
                           f"change on {_plotly_text(bench_label(old))} %{{y:+.3f}}<br>"
                           "trainable share %{customdata[0]:.1f}%<extra></extra>"),
            **err,
        ))
    base_layout(fig, title="Retention against acquisition: change from the base model (the origin)", height=460)
    fig.update_xaxes(title_text=f"acquisition: change of accuracy on {bench_label(new)} (after − base)",
                     zeroline=False, tickformat="+.2f")
    fig.update_yaxes(title_text=f"retention: change on {bench_label(old)}", zeroline=False, tickformat="+.2f")
    fig.update_layout(legend=dict(orientation="h", y=-0.22, x=0))
    return fig


def _row_mean(row: dict, bench: str) -> Optional[float]:
    return ((row.get("benchmarks") or {}).get(bench) or {}).get("mean")


def comparison(result: Result, bench: str, a: str, b: str) -> Optional[dict]:
    """The engine's comparison of allocations a and b on bench, oriented as a − b (diff and interval
    negated when the engine compared b − a); None when it did not compare them."""
    for c in ((result.get("statistics") or {}).get(bench) or {}).get("comparisons") or []:
        if (c.get("a"), c.get("b")) == (a, b):
            return dict(c)
        if (c.get("a"), c.get("b")) == (b, a):
            flipped = dict(c, a=a, b=b)
            if c.get("diff") is not None:
                flipped["diff"] = -c["diff"]
            if c.get("ci_low") is not None and c.get("ci_high") is not None:
                flipped["ci_low"], flipped["ci_high"] = -c["ci_high"], -c["ci_low"]
            return flipped
    return None


def _verdict_clause(result: Result, bench: str, best: str, other: str) -> str:
    c = comparison(result, bench, best, other)
    if c is None:
        return "no test compares them"
    if verdict(c):
        return "significant after Holm"
    ps = [f"{name} p {(c.get(test) or {}).get('p_adjusted'):.2g}" for test, name in
          (("mcnemar", "McNemar"), ("permutation", "permutation"), ("bootstrap", "bootstrap"))
          if isinstance((c.get(test) or {}).get("p_adjusted"), (int, float))]
    return "not significant after Holm" + (f": {', '.join(ps)}" if ps else "")


def _clause(result: Result, bench: str, verb: str) -> Optional[str]:
    """"<best> <verb> <bench> (0.665 vs 0.350 for <worst>; base 0.785; significant after Holm)"."""
    names = result_labels(result)
    rows = [r for r in result.get("table") or [] if r.get("allocation") != "base" and _row_mean(r, bench) is not None]
    if not rows:
        return None
    base = next((r for r in result.get("table") or [] if r.get("allocation") == "base"), {})
    base_mean = _row_mean(base, bench)
    base_text = "" if base_mean is None else f"; base {base_mean:.3f}"
    # Ties go to the allocation listed first (the spec's order).
    best, worst = max(rows, key=lambda r: _row_mean(r, bench)), min(rows, key=lambda r: _row_mean(r, bench))
    top, low = _row_mean(best, bench), _row_mean(worst, bench)
    where = bench_label(bench)
    if len(rows) == 1:
        against = "base" if base_mean is not None else None
        tail = "" if against is None else f"; {_verdict_clause(result, bench, best['allocation'], 'base')} against the base"
        return f"{names[best['allocation']]}, the only allocation, scored {top:.3f} on {where}{base_text}{tail}"
    if abs(top - low) < 1e-12:
        return f"every allocation scored {top:.3f} on {where}{base_text}"
    return (f"{names[best['allocation']]} {verb} {where} ({top:.3f} vs {low:.3f} for {names[worst['allocation']]}"
            f"{base_text}; {_verdict_clause(result, bench, best['allocation'], worst['allocation'])})")


def finding_sentence(result: Result, retention: Optional[str] = None, acquisition: Optional[str] = None) -> str:
    """The run's finding in one sentence, from the table (means over seeds) and the engine's tests: who
    kept the most on the retention benchmark and who learned the most on the acquisition one, each
    against the lowest allocation with the base model's score, and whether that gap is significant
    after Holm (``layertracer.spec.significance``); honest when it is not."""
    old, new = roles(result, retention, acquisition)
    clauses = []
    if old and new:
        clauses = [_clause(result, old, "kept the most on"), _clause(result, new, "learned the most on")]
    elif old:
        clauses = [_clause(result, old, "scored highest on")]
    clauses = [c for c in clauses if c]
    if not clauses:
        return "No allocation has benchmark scores yet."
    sentence = " and ".join(clauses)  # an allocation's name keeps its case ("train-shallow kept ...")
    return (sentence[0].upper() + sentence[1:] if sentence.startswith("every") else sentence) + "."


def chance_levels(result: Result) -> dict[str, float]:
    """benchmark -> the accuracy of guessing (``layertracer.spec.benchmarks.chance_accuracy``: one over the
    number of options, 0.25 for C-Eval and CMMLU); benchmarks without a fixed number of choices left out."""
    out = {}
    for bench in benchmarks(result):
        level = chance_accuracy(bench)
        if level is not None:
            out[bench] = level
    return out


def add_chance_lines(fig: go.Figure, levels: dict[str, float], name=bench_label) -> go.Figure:
    """A dotted horizontal line at each distinct chance accuracy, labelled with the benchmarks it holds for."""
    by_level: dict[float, list[str]] = {}
    for bench, level in levels.items():
        by_level.setdefault(level, []).append(bench)
    for level, benches in by_level.items():
        which = "" if len(by_level) == 1 else " (" + ", ".join(_plotly_text(name(b)) for b in benches) + ")"
        fig.add_hline(y=level, line=dict(color="#444", width=1.5, dash="dot"),
                      annotation=dict(text=f"chance {level:.2f}{which}", xanchor="right", x=1, yanchor="bottom",
                                      font=dict(size=11, color="#444")))
    return fig
