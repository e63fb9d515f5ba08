"""The report of a trial or experiment, laid out like the papers' results table: provenance, one row per
allocation (scores with intervals over seeds, change from the base model, trainable share, compute),
the significance of every pairwise difference, a bar figure, and a plain account of what the numbers
do and do not show.

Pure functions of the API's ``GET /api/v1/experiments/{id}`` JSON (``detail``: ``id``, ``kind``,
``status``, ``spec``, ``model``, ``result`` = the runner's result.json, ``provenance``). The Dash page
(``frontend/pages/report.py``) and the exported file (:func:`experiment_report_html`, one
self-contained HTML document with plotly.js inline) show the same rows and sentences.
"""

from __future__ import annotations

import html
from typing import Any, Optional

import plotly.graph_objects as go

from frontend.viz import experiment as ev
from frontend.viz import trace as tv
from frontend.viz.common import FONT_STACK, OKABE_ITO, base_layout, empty_figure, plotly_text
from frontend.viz.names import absolute_time, result_labels, run_duration, run_name
from layertracer.spec.significance import TESTS, verdict  # noqa: F401 (TESTS: the tests, in table order)

Result = dict[str, Any]
# The significance rule and its level are the engine's (layertracer/spec/significance.py).


# -- names and numbers -------------------------------------------------------------------------------

def bench_name(spec: str, among: Optional[list] = None) -> str:
    """``ceval:/data/world/old-facts`` -> ``old-facts`` (the last path component of the folder); the whole
    spec when another benchmark in ``among`` has the same last component."""
    kind, _, folder = str(spec).partition(":")
    name = folder.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] if folder else kind
    if among and any(o != spec and bench_name(o) == name for o in among):
        return str(spec)
    return name


def _bn(result: Result, spec: str) -> str:
    return bench_name(spec, benchmarks(result))


def benchmarks(result: Result) -> list[str]:
    benches = list((result.get("spec") or {}).get("benchmarks") or [])
    if not benches:  # a result without its spec: the benchmarks the table rows hold
        for row in result.get("table") or []:
            benches += [b for b in (row.get("benchmarks") or {}) if b not in benches]
    return benches


def table_rows(result: Result) -> list[dict]:
    """The result's table rows, the base model first."""
    rows = [r for r in result.get("table") or [] if isinstance(r, dict)]
    return [r for r in rows if r.get("allocation") == "base"] + [r for r in rows if r.get("allocation") != "base"]


def labels(result: Result) -> dict[str, str]:
    """allocation -> the name the report shows (the run's label, else a readable name:
    ``frontend.viz.names.allocation_label``; the reference is "base model")."""
    return result_labels(result)


def fmt_interval(summary: Optional[dict], *, signed: bool = False) -> str:
    """A seed summary as ``mean [ci_low, ci_high]`` (just the mean when there is no interval)."""
    if not summary or summary.get("mean") is None:
        return "—"
    f = "{:+.3f}" if signed else "{:.3f}"
    text = f.format(summary["mean"] + 0.0)
    if summary.get("ci_low") is not None and summary.get("ci_high") is not None:
        text += f" [{f.format(summary['ci_low'] + 0.0)}, {f.format(summary['ci_high'] + 0.0)}]"
    return text


def fmt_p(value: Any) -> str:
    return "—" if value is None else f"{float(value):.3g}"


def fmt_seconds(summary: Optional[dict]) -> str:
    if not summary or summary.get("mean") is None:
        return "—"
    return f"{summary['mean']:.1f}" if summary["mean"] >= 10 else f"{summary['mean']:.2f}"


def fmt_rate(summary: Optional[dict]) -> str:
    if not summary or summary.get("mean") is None:
        return "—"
    return f"{summary['mean']:,.0f}"


def fmt_share(row: dict) -> str:
    if row.get("allocation") == "base":
        return "—"
    text = f"{100 * float(row.get('trainable_share') or 0.0):.1f}%"
    if row.get("trainable_parameters") is not None:
        text += f" ({int(row['trainable_parameters']):,} params)"
    return text


def _toggles(result: Result, allocation: str) -> str:
    for t in result.get("trials") or []:
        if t.get("allocation_spec") == allocation:
            a = t.get("allocation") or {}
            extra = [name.replace("_", " ") for name in ("embeddings", "head", "final_norm") if a.get(name)]
            if a.get("part") and a.get("part") != "all":
                extra.append(f"{a['part']} only")
            return "".join(f" + {e}" for e in extra)
    return ""


def trained_layers(result: Result, row: dict) -> str:
    if row.get("allocation") == "base":
        return "— (not trained)"
    return (str(row.get("ranges") or "none") + _toggles(result, row["allocation"])).strip()


# -- the tables --------------------------------------------------------------------------------------

def results_table(result: Result) -> tuple[list[str], list[list[str]]]:
    """The papers' results table: one row per allocation, the base model first."""
    benches = benchmarks(result)
    header = ["allocation", "trained layers", "trainable share", "seeds"]
    for b in benches:
        header += [f"{_bn(result, b)}: accuracy [95% CI]", f"{_bn(result, b)}: change from base"]
    header += ["training time (s)", "tokens/s"]
    names = labels(result)
    rows = []
    for r in table_rows(result):
        seeds = r.get("seeds") or []
        row = [names.get(r["allocation"], r["allocation"]), trained_layers(result, r), fmt_share(r),
               ", ".join(str(s) for s in seeds) if seeds else "—"]
        for b in benches:
            change = (r.get("change") or {}).get(b)
            row += [fmt_interval((r.get("benchmarks") or {}).get(b)),
                    "—" if r.get("allocation") == "base" else fmt_interval(change, signed=True)]
        row += [fmt_seconds(r.get("train_seconds")), fmt_rate(r.get("tokens_per_s"))]
        rows.append(row)
    return header, rows


def significant(comparison: dict) -> bool:
    """The engine's verdict (``layertracer.spec.significance``: every test rejects at 0.05 after Holm)."""
    return verdict(comparison)


SIGNIFICANCE_HEADER = ["a", "b", "accuracy a − b", "95% CI (paired bootstrap)", "McNemar p", "McNemar p (Holm)",
                       "permutation p", "permutation p (Holm)", "bootstrap p (Holm)", "significant at 0.05 (Holm)"]


def significance_table(result: Result, bench: str) -> tuple[list[str], list[list[str]]]:
    """Every pair on one benchmark: the difference with its paired-bootstrap interval, McNemar and
    sign-flip permutation p-values raw and Holm-adjusted, the bootstrap's Holm p, and the verdict."""
    names = labels(result)
    rows = []
    for c in ((result.get("statistics") or {}).get(bench) or {}).get("comparisons") or []:
        mc, perm, boot = c.get("mcnemar") or {}, c.get("permutation") or {}, c.get("bootstrap") or {}
        ci = "—" if c.get("ci_low") is None else f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
        rows.append([names.get(c["a"], c["a"]), names.get(c["b"], c["b"]),
                     "—" if c.get("diff") is None else f"{c['diff']:+.3f}", ci,
                     fmt_p(mc.get("p_value")), fmt_p(mc.get("p_adjusted")),
                     fmt_p(perm.get("p_value")), fmt_p(perm.get("p_adjusted")), fmt_p(boot.get("p_adjusted")),
                     "yes" if significant(c) else "no"])
    return list(SIGNIFICANCE_HEADER), rows


def provenance_rows(detail: dict) -> list[tuple[str, str]]:
    """(what, value): where the model, the data and the code of this report come from."""
    result = detail.get("result") or {}
    spec = detail.get("spec") or result.get("spec") or {}
    prov = detail.get("provenance") or {}
    model = detail.get("model") or {}
    info = model.get("info") or {}
    size = _model_size(detail)
    model_text = str(prov.get("model_source") or model.get("source") or spec.get("model") or "?")
    if model.get("name") and model.get("name") != model_text:
        model_text = f"{model['name']} ({model_text})"
    arch = [str(info["architecture"])] if info.get("architecture") else []
    if size[1]:
        arch.append(f"{size[1]} layers")
    if size[0]:
        arch.append(f"{size[0]:,} parameters")
    corpus = result.get("corpus") or {}
    corpus_text = str(spec.get("corpus") or "?")
    if corpus:
        corpus_text += (f" ({corpus.get('blocks', '?')} blocks of {corpus.get('block_size', '?')} tokens, "
                        f"{corpus.get('holdout_blocks', '?')} held out)")
    rows = [
        ("model", model_text),
        ("model size", ", ".join(arch) or "—"),
        ("model fingerprint (sha256)", str(prov.get("model_fingerprint") or model.get("fingerprint") or "—")),
        ("corpus", corpus_text),
        ("code version", str(prov.get("code_version") or result.get("version") or "—")),
        ("seeds", ", ".join(str(s) for s in (prov.get("seeds") or spec.get("seeds") or [])) or "—"),
        ("allocations", ", ".join(str(a) for a in spec.get("allocations") or []) or "—"),
        ("training", f"{spec.get('steps', '?')} steps, batch {spec.get('batch_size', '?')} x accumulation "
                     f"{spec.get('grad_accum', 1)}, lr {spec.get('lr', '?')}, warmup {spec.get('warmup_steps', '?')}"),
        ("evaluation", f"mode {spec.get('eval_mode', '?')}, {spec.get('eval_shots', '?')} "
                       f"shot{'' if spec.get('eval_shots') == 1 else 's'}, "
                       f"limit {spec.get('eval_limit') or 'none'} per subject"),
        ("benchmarks", "; ".join(f"{_bn(result, b)} ({b})" for b in benchmarks(result) or spec.get("benchmarks") or [])
         or "—"),
        ("status", f"{detail.get('status') or '?'} (runner: {result.get('status') or '?'})"),
    ]
    return rows


# -- the figure --------------------------------------------------------------------------------------

_plotly_text = plotly_text  # user text shows literally in plotly labels


def accuracy_figure(result: Result) -> go.Figure:
    """Accuracy per allocation (the base model first), one bar group per benchmark, error bars the
    Student-t 95% interval over seeds (none with one seed)."""
    rows = table_rows(result)
    benches = benchmarks(result)
    if not rows or not benches:
        return empty_figure("No benchmark scores.")
    names = labels(result)
    xs = [_plotly_text(names.get(r["allocation"], r["allocation"])) for r in rows]
    fig = go.Figure()
    for i, b in enumerate(benches):
        means, up, down = [], [], []
        for r in rows:
            s = (r.get("benchmarks") or {}).get(b) or {}
            m = s.get("mean")
            means.append(m)
            up.append(0.0 if m is None or s.get("ci_high") is None else s["ci_high"] - m)
            down.append(0.0 if m is None or s.get("ci_low") is None else m - s["ci_low"])
        fig.add_trace(go.Bar(
            x=xs, y=means, name=_plotly_text(_bn(result, b)), marker_color=OKABE_ITO[i % len(OKABE_ITO)],
            error_y=dict(type="data", array=up, arrayminus=down, visible=True, color="#333"),
            hovertemplate=f"{_plotly_text(_bn(result, b))}<br>%{{x}}: %{{y:.3f}}<extra></extra>",
        ))
    base_layout(fig, title="Accuracy per allocation: mean over seeds, error bars the 95% t-interval", height=420)
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.22, x=0))
    fig.update_yaxes(title_text="accuracy (share of questions correct)", range=[0, 1])
    ev.add_chance_lines(fig, ev.chance_levels(result), name=lambda b: _bn(result, b))
    fig.update_xaxes(title_text="allocation", type="category")  # names, even those that look like numbers
    return fig


# -- what the numbers show ---------------------------------------------------------------------------

def _model_size(detail: dict) -> tuple[Optional[int], Optional[int]]:
    """(parameters, layers) of the base model: the API's model info, else the trials' own counts."""
    info = (detail.get("model") or {}).get("info") or {}
    params, layers = info.get("num_parameters"), info.get("num_layers")
    for t in (detail.get("result") or {}).get("trials") or []:
        params = params or (t.get("parameters") or {}).get("total")
        layers = layers or len((t.get("drift") or {}).get("blocks") or []) or None
    return (int(params) if params else None), (int(layers) if layers else None)


def _comparison(result: Result, bench: str, a: str, b: str) -> Optional[tuple[dict, int]]:
    """The comparison of a and b on bench and its sign (+1: diff is a − b, −1: b − a)."""
    for c in ((result.get("statistics") or {}).get(bench) or {}).get("comparisons") or []:
        if (c.get("a"), c.get("b")) == (a, b):
            return c, 1
        if (c.get("a"), c.get("b")) == (b, a):
            return c, -1
    return None


def _p_text(c: dict) -> str:
    parts = [f"{name} p (Holm) = {fmt_p((c.get(t) or {}).get('p_adjusted'))}"
             for t, name in (("mcnemar", "McNemar"), ("permutation", "permutation"))
             if (c.get(t) or {}).get("p_adjusted") is not None]
    return ", ".join(parts)


def leaders(result: Result) -> dict[str, list[str]]:
    """benchmark -> the trained allocation(s) with the highest mean accuracy (several on a tie)."""
    out = {}
    rows = [r for r in table_rows(result) if r.get("allocation") != "base"]
    for b in benchmarks(result):
        scored = [(r["allocation"], ((r.get("benchmarks") or {}).get(b) or {}).get("mean")) for r in rows]
        scored = [(a, m) for a, m in scored if m is not None]
        if scored:
            top = max(m for _, m in scored)
            out[b] = [a for a, m in scored if abs(m - top) < 1e-12]
    return out


def findings(result: Result) -> list[str]:
    """Sentences on what this run shows, generated from the table and the statistics."""
    names = labels(result)
    rows = {r["allocation"]: r for r in table_rows(result)}
    base = rows.get("base") or {}
    out = []
    for b, top in leaders(result).items():
        name = _bn(result, b)
        best = top[0]
        mean = rows[best]["benchmarks"][b]["mean"]
        base_mean = ((base.get("benchmarks") or {}).get(b) or {}).get("mean")
        change = ((rows[best].get("change") or {}).get(b) or {}).get("mean")
        if change is None and base_mean is not None:
            change = mean - base_mean
        if len(top) > 1:
            who = " and ".join(f"“{names[a]}”" for a in top)
            sentence = f"On {name}, {who} tie for the highest mean accuracy after training ({mean:.3f}"
        else:
            sentence = f"On {name}, “{names[best]}” has the highest mean accuracy after training ({mean:.3f}"
        if base_mean is not None:
            sentence += f"; base model {base_mean:.3f}"
        sentence += ")"
        if change is not None and len(top) == 1:
            if change > 0:
                sentence += f": it acquired the most, {change:+.3f} over the base model."
            elif change < 0:
                sentence += f": it kept the most of the base model's score, losing {abs(change):.3f}."
            else:
                sentence += ": it kept the base model's score exactly."
        else:
            sentence += "."
        others = [a for a in rows if a not in ("base", best)]
        verdicts = []
        for other in others + ["base"]:
            found = _comparison(result, b, best, other)
            if not found:
                continue
            c, sign = found
            diff = sign * c["diff"] + 0.0 if c.get("diff") is not None else None
            lo, hi = c.get("ci_low"), c.get("ci_high")
            ci = "" if lo is None else f", 95% CI [{min(sign * lo, sign * hi) + 0.0:+.3f}, {max(sign * lo, sign * hi) + 0.0:+.3f}]"
            verdict = "significant" if significant(c) else "not significant"
            verdicts.append(f"against “{names.get(other, other)}” the difference ({'?' if diff is None else f'{diff:+.3f}'}"
                            f"{ci}) is {verdict} at 0.05 after Holm correction ({_p_text(c)})")
        if verdicts:
            sentence += " " + "; ".join(verdicts)[0].upper() + "; ".join(verdicts)[1:] + "."
        out.append(sentence)
    seeds = sorted({int(((r.get("benchmarks") or {}).get(b) or {}).get("n") or 0)
                    for a, r in rows.items() if a != "base" for b in benchmarks(result)} - {0})
    if seeds == [1]:
        out.append("Each allocation ran with one seed, so there is no interval over seeds: the accuracies are single "
                   "runs and the variation from training randomness is not measured.")
    elif seeds:
        out.append(f"Each allocation ran with {seeds[0] if len(seeds) == 1 else f'{seeds[0]}–{seeds[-1]}'} seeds; "
                   "the intervals in brackets are Student-t intervals over seeds, wide with so few seeds.")
    counts = {_bn(result, b): s.get("n_questions") for b, s in (result.get("statistics") or {}).items()
              if isinstance(s, dict) and s.get("n_questions")}
    if counts:
        out.append("Questions per benchmark: " + ", ".join(f"{n} {k}" for k, n in counts.items())
                   + "; one question more or less right moves an accuracy by "
                   + ", ".join(f"{1 / n:.3f}" for n in counts.values()) + ".")
    return out


def limitations(detail: dict) -> list[str]:
    """Sentences on what this run does not show."""
    result = detail.get("result") or {}
    spec = detail.get("spec") or result.get("spec") or {}
    params, layers = _model_size(detail)
    trials = result.get("trials") or []
    seconds = sum(float((t.get("training") or {}).get("seconds") or 0.0) for t in trials)
    tokens = sum(int((t.get("training") or {}).get("tokens_seen") or 0) for t in trials)
    out = []
    corpus_name = bench_name(":" + str(spec.get("corpus") or "?"))
    demo = ", on the demo world's generated facts" if corpus_name == "new-domain-corpus.jsonl" else ""
    size = " ".join(x for x in ((f"{layers}-layer" if layers else ""), "model",
                                (f"of {_human(params)} parameters" if params else "")) if x)
    if params is None or params < 1_000_000_000:
        out.append(f"This is a {size} trained for {spec.get('steps', '?')} steps per trial "
                   f"({_human(tokens)} tokens and {_duration(seconds)} of training over all {len(trials)} trials"
                   f"{demo}). The papers' "
                   "claim is about large language models continually pre-trained on billions of tokens; a run this "
                   "small and this short can neither confirm nor refute it.")
    else:
        out.append(f"This is one {size}; other sizes and architectures may behave differently.")
    out.append(f"It used a single corpus ({corpus_name}); another domain or "
               "data mix may rank the allocations differently.")
    mode = spec.get("eval_mode")
    if mode == "cloze":
        out.append("Scores use cloze scoring (each choice's own text scored as the continuation of the question, "
                   "options not shown), not the multiple-choice exam format; they are not comparable with "
                   "published C-Eval or CMMLU numbers.")
    if spec.get("eval_limit"):
        out.append(f"Only the first {spec['eval_limit']} questions of each subject were evaluated.")
    out.append("A difference that is not significant is not evidence that the allocations are equal: with this "
               "few questions and seeds the tests have little power.")
    if result.get("status") and result.get("status") != "complete":
        out.append(f"The run is {result['status']}: not every trial finished.")
    return out


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _human(n: Optional[float]) -> str:
    if n is None:
        return "?"
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def title(detail: dict) -> str:
    """``Experiment <name>`` (the start of its id when it has no name)."""
    kind = str(detail.get("kind") or "experiment")
    return f"{kind.capitalize()} {run_name(detail)}"


def methods(result: Result) -> list[str]:
    """How each statistic was computed (the runner's ``statistics.*.methods``, once)."""
    for s in (result.get("statistics") or {}).values():
        if isinstance(s, dict) and s.get("methods"):
            return [f"{k}: {v}" for k, v in s["methods"].items()]
    return []


# -- the finding and the trace evidence --------------------------------------------------------------

def finding(result: Result) -> str:
    """The one sentence the report leads with (the experiment page's: :func:`ev.finding_sentence`)."""
    return ev.finding_sentence(result)


def tradeoff_figure(result: Result) -> go.Figure:
    """Retention (change on the first benchmark) against acquisition (the second), base at the origin."""
    return ev.tradeoff_figure(result)


# The trace page's figures that motivated the allocation, in the order the argument runs: what the plan
# trains, where each task starts (the particles on the heatmap), which layer is fragile (the curve).
TRACE_EVIDENCE = (
    ("plan", "The freeze plan: trained and frozen layers, the particles and the vulnerable layer", tv.plan_figure),
    ("heatmap", "Where each task starts: target probability per task and layer, particles marked", tv.task_heatmap),
    ("stability", "Which layers are fragile: the stability curve with the vulnerable layer", tv.stability_figure),
)


def source_trace_id(detail: dict) -> Optional[str]:
    """The trace whose freeze plan this run trains (``source_trace_id``, migration 0007), or None."""
    value = detail.get("source_trace_id")
    return str(value) if value else None


def trace_evidence(source: Optional[dict]) -> list[tuple[str, str, go.Figure]]:
    """[(key, caption, figure)] of the source trace (its overview or full result): the plan strip, the
    heatmap and the stability curve, drawn by the trace page's own builders; [] without a source."""
    if not source:
        return []
    return [(key, caption, build(source)) for key, caption, build in TRACE_EVIDENCE]


def trace_evidence_note(detail: dict, source: Optional[dict], error: Optional[str] = None) -> str:
    """One line on the trace evidence: where it comes from, or why the report has none."""
    trace_id = source_trace_id(detail)
    if not trace_id:
        return ("This run records no source trace (it was launched without choosing one), so the report cannot "
                "show the trace evidence behind its allocations.")
    if not source:
        return f"The source trace {trace_id} could not be loaded ({error or 'no answer'}); its evidence is not shown."
    model = ((source.get("model") or {}).get("source") or "").rstrip("/").rsplit("/", 1)[-1]
    return (f"The allocations come from the freeze plan of trace {trace_id}" + (f" (model {model})" if model else "")
            + ": the evidence that motivated them, as the trace page draws it.")


# -- the self-contained HTML file --------------------------------------------------------------------

CSS = "body{font-family:" + FONT_STACK + """;margin:0;
 color:#1b1f24;background:#f6f7f9;line-height:1.45}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:1.6rem;margin:0 0 4px} h2{font-size:1.2rem;margin:28px 0 8px} h3{font-size:1rem;margin:18px 0 6px}
.muted{color:#5b6470} .card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:14px 16px;margin:12px 0;
 overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #e5e8ec;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600} td.num{font-variant-numeric:tabular-nums}
td{overflow-wrap:break-word}
caption{caption-side:top;text-align:left;color:#5b6470;padding:0 0 6px}
.yes{color:#0b6e3a;font-weight:600} .no{color:#5b6470}
.honest p{margin:6px 0} .finding{font-size:1.1rem;font-weight:600} footer{margin:32px 0 0;font-size:.85rem}
"""


def _table_html(header: list[str], rows: list[list[str]], *, caption: str = "", cls: str = "") -> str:
    e = html.escape
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            klass = ""
            if header[i].startswith("significant"):
                klass = ' class="yes"' if cell == "yes" else ' class="no"'
            elif i >= 2:
                klass = ' class="num"'
            cells.append(f"<td{klass}>{e(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    return f'<table class="{cls}">{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _figure_html(fig: go.Figure, div_id: str, first: bool) -> str:
    """A figure's div; the first carries plotly.js inline (the file opens offline), the rest reuse it."""
    return fig.to_html(full_html=False, include_plotlyjs=first, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def experiment_report_html(detail: dict, source: Optional[dict] = None, source_error: Optional[str] = None) -> str:
    """The report as one self-contained HTML document: inline CSS, plotly.js inline (opens offline),
    every piece of user text escaped. It leads with the finding (the sentence and the retention /
    acquisition scatter); ``source``: the source trace's overview, whose plan, heatmap and stability
    curve follow the results (``source_error``: why it could not be read)."""
    e = html.escape
    result = detail.get("result") or {}
    parts = [f"<h1>{e('LayerTracer report · ' + title(detail))}</h1>",
             f'<p class="muted">{e(subtitle(detail))}</p>']
    if result and result.get("table"):
        parts.append('<section class="card" id="finding"><h2>Finding</h2>'
                     f'<p class="finding">{e(finding(result))}</p>'
                     + _figure_html(tradeoff_figure(result), "tradeoff-figure", True)
                     + f'<p class="muted">{e(ev.TRADEOFF_NOTE)}</p></section>')
    parts.append('<section class="card"><h2>Model and data</h2>'
                 + _table_html(["what", "value"], [list(r) for r in provenance_rows(detail)]) + "</section>")
    if not result:
        parts.append('<section class="card"><p>This experiment has no result yet.</p></section>')
    else:
        header, rows = results_table(result)
        parts.append('<section class="card"><h2>Results</h2>' + _table_html(
            header, rows, caption=RESULTS_CAPTION, cls="results") + "</section>")
        parts.append('<section class="card honest"><h2>What this run shows</h2>'
                     + "".join(f"<p>{e(s)}</p>" for s in findings(result))
                     + "<h2>What it does not show</h2>"
                     + "".join(f"<p>{e(s)}</p>" for s in limitations(detail)) + "</section>")
        parts.append('<section class="card">' + _figure_html(accuracy_figure(result), "accuracy-figure",
                                                              not result.get("table")) + "</section>")
        evidence = ['<section class="card" id="trace-evidence"><h2>Trace evidence</h2>'
                    f'<p class="muted">{e(trace_evidence_note(detail, source, source_error))}</p>']
        for key, caption, fig in trace_evidence(source):
            evidence.append(f"<h3>{e(caption)}</h3>" + _figure_html(fig, f"trace-{key}-figure", False))
        parts.append("".join(evidence) + "</section>")
        sig = ['<section class="card"><h2>Significance of the differences</h2>'
               f'<p class="muted">{e(SIGNIFICANCE_NOTE)}</p>']
        for b in benchmarks(result):
            header, rows = significance_table(result, b)
            sig.append(f"<h3>{e(_bn(result, b))}</h3>" + _table_html(header, rows, cls="significance"))
        parts.append("".join(sig) + "</section>")
        if methods(result):
            parts.append('<section class="card"><h2>Methods</h2><ul>'
                         + "".join(f"<li>{e(m)}</li>" for m in methods(result)) + "</ul></section>")
    parts.append('<footer class="muted">Generated by LayerTracer from the experiment\'s result JSON. '
                 "Accuracies are shares of questions answered correctly.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e('LayerTracer report · ' + title(detail))}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")


RESULTS_CAPTION = ("One row per allocation. Accuracy after training: mean over seeds [Student-t 95% interval over "
                   "seeds]; change: the same for the difference from the base model. Compute: mean training time "
                   "per trial and mean tokens per second. With few seeds a t-interval can reach beyond [0, 1]; it is shown "
                   "as computed, not clipped.")
SIGNIFICANCE_NOTE = ("Each pair on the same questions: the difference of seed-averaged accuracy a − b with a paired "
                     "bootstrap 95% interval over questions; McNemar and sign-flip permutation p-values, raw and "
                     "Holm-adjusted over the pairs of the benchmark. Significant: every test's Holm-adjusted p "
                     "(bootstrap, McNemar, permutation) below 0.05.")


def subtitle(detail: dict) -> str:
    bits = [f"id {detail.get('id') or '?'}", f"status {detail.get('status') or '?'}"]
    if detail.get("created_at"):
        bits.append(f"created {absolute_time(detail['created_at'])}")
    if detail.get("finished_at"):
        bits.append(f"finished {absolute_time(detail['finished_at'])} (took {run_duration(detail)})")
    return " · ".join(bits)
