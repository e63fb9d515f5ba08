"""The form behind New trial and New experiment: a layer-range picker over the model's layers (typed
ranges, clicks on the layer strip, presets train-shallow / train-deep / full / from-trace), the trainable
parameter count and share updated live from the model's per-block parameter counts, and the training
settings; every field is checked before anything is sent."""

from __future__ import annotations

import re
from typing import Any, Optional

import dash
import plotly.graph_objects as go
from dash import ALL, Input, Output, State, ctx, dcc, html

from frontend import run_preview, server_paths, spec_form as sf
from frontend.api_client import ApiError
from frontend.clone import stored_run
from frontend.components import api_error_box, client, notice, rel
from frontend.viz.common import (
    FREEZE_COLOUR, KIND_NAME, OKABE_ITO, TRAIN_COLOUR, VULNERABLE_COLOUR, base_layout, depth_axis, empty_figure,
)
from layertracer.spec.allocations import (
    PRESETS, TOGGLES as ALLOCATION_TOGGLES, AllocationError, check_allocation, is_from_trace,
    preset_layers,
)
from layertracer.spec.benchmarks import BenchmarkSpecError, check_benchmark
from layertracer.spec.ranges import RangeError, format_ranges, parse_ranges as spec_parse_ranges
from layertracer.spec.jobs import ExperimentFields, ExperimentJobSpec

# The fields of a trial / experiment the picker and the data fields render their own way; every other
# field of the spec (layertracer/spec/jobs.py ExperimentFields, with layertracer/spec/training.py) is
# generated (frontend/spec_form.py): a field added there appears under Advanced with no code here.
OWN_FIELDS = ("model_id", "corpus", "benchmarks", "embeddings", "head", "final_norm")
RUN_FIELDS = sf.fields_of(ExperimentFields, skip=OWN_FIELDS)
DATA = ("name", "trace_tasks")  # shown in "Data and evaluation"
BASIC = ("seeds", "steps", "lr", "batch_size", "block_size")  # shown in "Training"; the rest under Advanced
LABELS = {
    "name": "Name (optional)",
    "trace_tasks": "Trace tasks before and after (empty: no re-trace)",
    "seeds": "Seeds (comma-separated)",
    "steps": "Steps",
    "lr": "Learning rate",
    "batch_size": "Batch size (sequences)",
    "block_size": "Block size (tokens per sequence)",
    "warmup_steps": "Warmup steps",
    "eval_mode": "Evaluation mode",
    "eval_shots": "Evaluation shots",
    "eval_limit": "Questions per subject (empty: all)",
    "trace_perturbations": "Perturbations of the traces before and after (one per line)",
    "labels": "Labels of allocations (allocation = name, one per line)",
    "processes": "Processes (GPUs of one worker)",
    "placement.device_map": "Device map",
    "placement.max_memory": "Memory per device (e.g. 0=70GiB,cpu=200GiB)",
    "placement.attn_implementation": "Attention kernel",
    "placement.load_in": "Quantize (CUDA)",
}
TRAINING_DEFAULTS = sf.widget_values(RUN_FIELDS)

# The engine's toggles (layertracer.spec.allocations.TOGGLES), as the form labels them.
TOGGLE_LABELS = {"embeddings": "embeddings", "head": "output head", "final_norm": "final norm"}
TOGGLES = [(key, TOGGLE_LABELS[key]) for key in ALLOCATION_TOGGLES]


# -- ranges -----------------------------------------------------------------------------------------------

def parse_ranges(text: Optional[str], num_layers: int) -> tuple[list[int], Optional[str]]:
    """``"0-3,8"`` -> ([0, 1, 2, 3, 8], None), or ([], message) when malformed or out of 0..L-1, by the
    engine's grammar (``layertracer.spec.ranges``); an empty field is no layers, and no problem."""
    text = (text or "").strip()
    if not text:
        return [], None
    try:
        return spec_parse_ranges(text, num_layers), None
    except RangeError as exc:
        return [], str(exc)


def allocation_label(layers: list[int], toggles: list[str], num_layers: int) -> str:
    """A preset name when the selection is exactly a preset (with its toggles), else the ranges."""
    on = set(toggles or [])
    if set(layers) == set(range(num_layers)) and on == {"embeddings", "head", "final_norm"}:
        return "full"
    if not on:
        for name in ("train-shallow", "train-deep"):
            if layers == preset_layers(name, num_layers):
                return name
    return format_ranges(layers)


def count_trainable(info: dict, layers: list[int], toggles: list[str]) -> tuple[int, int]:
    """(trainable, total) parameters from the model's per-block counts and the toggles."""
    blocks = info.get("block_parameters") or []
    trainable = sum(int(blocks[l]) for l in layers if l < len(blocks))
    on = set(toggles or [])
    if "embeddings" in on:
        trainable += int(info.get("embedding_parameters") or 0)
    if "head" in on:
        trainable += int(info.get("head_parameters") or 0)
    if "final_norm" in on:
        trainable += int(info.get("final_norm_parameters") or 0)
    total = int(info.get("num_parameters") or 0) or (sum(int(b) for b in blocks) + int(info.get("embedding_parameters") or 0)
                                                     + int(info.get("head_parameters") or 0) + int(info.get("final_norm_parameters") or 0))
    return trainable, total


def count_text(info: Optional[dict], ranges: Optional[str], toggles: Optional[list]) -> tuple[str, Optional[str]]:
    """(the live count line, an error about the ranges or None)."""
    if not info or not info.get("num_layers"):
        return "Choose a model to see how many parameters this trains.", None
    L = int(info["num_layers"])
    layers, problem = parse_ranges(ranges, L)
    if problem:
        return "—", problem
    trainable, total = count_trainable(info, layers, toggles or [])
    share = 100.0 * trainable / total if total else 0.0
    blocks = f"{len(layers)} of {L} blocks" + (f" ({format_ranges(layers)})" if layers else "")
    return f"Trainable: {trainable:,} of {total:,} parameters ({share:.1f}%) · {blocks}", None


def evidence_from_overview(overview: dict, name: str = "") -> Optional[dict]:
    """What the picker draws of a trace (its overview or result, docs/schemas.md): ``mean_js`` [L] of the
    primary perturbation, ``particles`` {task: layer or None}, ``vulnerable`` layer, ``plan`` ranges."""
    sensitivity = overview.get("sensitivity") or {}
    mean_js = sensitivity.get("mean_js")
    tasks = overview.get("tasks") or {}
    if not mean_js and not tasks:
        return None
    return {"name": name, "mean_js": [None if v is None else float(v) for v in mean_js or []],
            "perturbation": sensitivity.get("perturbation") or sensitivity.get("name") or "",
            "particles": {t: d.get("task_particle") for t, d in tasks.items()},
            "vulnerable": overview.get("vulnerable_layer"),
            "plan": (overview.get("freeze_plan") or {}).get("train_ranges")}


def trace_evidence(trace_id: Optional[str], token: Optional[str]) -> Optional[dict]:
    """The evidence of a finished trace for the picker, or None (no trace, not readable, not finished)."""
    if not trace_id:
        return None
    try:
        api = client(token)
        meta = api.trace(trace_id)
        return evidence_from_overview(api.trace_overview(trace_id), meta.get("name") or str(trace_id)[:8])
    except ApiError:
        return None


def _evidence_traces(fig: go.Figure, evidence: dict, L: int) -> None:
    """Above the bars: the trace's layer sensitivity (mean JS, scaled to its band), its task particles
    (one triangle per task at its layer) and its vulnerable layer."""
    js = [v for v in (evidence.get("mean_js") or [])[:L]]
    top = max((v for v in js if v is not None), default=0.0)
    if js and top > 0:
        fig.add_trace(go.Scatter(
            x=list(range(len(js))), y=[None if v is None else 1.15 + 0.8 * v / top for v in js], mode="lines+markers",
            line=dict(color=OKABE_ITO[1], width=2), marker=dict(size=5), name="layer sensitivity",
            hovertext=[f"layer {l} · mean JS {v:.4f} nats ({evidence.get('perturbation') or 'primary'})" if v is not None
                       else f"layer {l}" for l, v in enumerate(js)], hoverinfo="text"))
    by_layer: dict[int, list[str]] = {}
    for task, layer in (evidence.get("particles") or {}).items():
        if layer is not None and 0 <= int(layer) < L:
            by_layer.setdefault(int(layer), []).append(task)
    if by_layer:
        fig.add_trace(go.Scatter(
            x=list(by_layer), y=[2.15] * len(by_layer), mode="markers", name="task particles",
            marker=dict(symbol="triangle-down", size=[8 + 3 * len(t) for t in by_layer.values()], color="#000000"),
            hovertext=[f"task particle of {', '.join(t)} (layer {l})" for l, t in by_layer.items()], hoverinfo="text"))
    vulnerable = evidence.get("vulnerable")
    if vulnerable is not None and 0 <= int(vulnerable) < L:
        fig.add_trace(go.Scatter(
            x=[int(vulnerable)], y=[2.15], mode="markers", name="vulnerable layer",
            marker=dict(symbol="x", size=13, color=VULNERABLE_COLOUR, line=dict(width=1)),
            hovertext=[f"vulnerable layer {vulnerable}: perturbing it moves the output most"], hoverinfo="text"))


def strip_figure(info: Optional[dict], ranges: Optional[str], toggles: Optional[list] = None,
                 evidence: Optional[dict] = None) -> go.Figure:
    """The layer strip of the picker: one bar per block, blue = trained, grey = frozen; click to toggle.
    With a trace's ``evidence`` (``evidence_from_overview``) its sensitivity, particles and vulnerable
    layer are drawn above the bars."""
    if not info or not info.get("num_layers"):
        return empty_figure("Choose a model: its layers appear here.", height=160)
    L = int(info["num_layers"])
    layers, _ = parse_ranges(ranges, L)
    chosen = set(layers)
    kinds = info.get("block_kinds") or ["attention"] * L
    blocks = info.get("block_parameters") or [0] * L
    fig = go.Figure(go.Bar(
        x=list(range(L)), y=[1] * L, width=0.9,
        marker=dict(color=[TRAIN_COLOUR if l in chosen else FREEZE_COLOUR for l in range(L)]),
        hovertext=[f"layer {l} · {KIND_NAME.get(kinds[l], kinds[l]) if l < len(kinds) else ''} · "
                   f"{int(blocks[l]) if l < len(blocks) else 0:,} parameters · {'train' if l in chosen else 'freeze'}"
                   f" (click to toggle)" for l in range(L)],
        hoverinfo="text",
    ))
    title = "Layers to train (blue) and freeze (grey) — click a layer to toggle it"
    if evidence:
        _evidence_traces(fig, evidence, L)
        title += (f"<br><sup>trace {evidence.get('name') or ''}: layer sensitivity (orange), task particles (▼), "
                  f"vulnerable layer (✕){'; its plan trains layers ' + evidence['plan'] if evidence.get('plan') else ''}</sup>")
    base_layout(fig, title=title, height=250 if evidence else 170)
    depth_axis(fig, L, kinds, False)
    fig.update_yaxes(visible=False, fixedrange=True, range=[0, 2.35] if evidence else None)
    fig.update_xaxes(fixedrange=True)
    fig.update_layout(margin=dict(l=30, r=20, t=60 if evidence else 40, b=50), bargap=0, dragmode=False,
                      showlegend=False)
    return fig


def toggle_layer(ranges: Optional[str], layer: int, num_layers: int) -> str:
    layers, problem = parse_ranges(ranges, num_layers)
    if problem:
        layers = []
    chosen = set(layers) ^ {int(layer)}
    return format_ranges(chosen)


# -- validation ------------------------------------------------------------------------------------------

def check_run_form(kind: str, *, model: Optional[str], info: Optional[dict], allocations: list[str],
                   toggles: list[str], corpus: Optional[str], benchmarks: Optional[str],
                   raws: dict[str, Any]) -> tuple[Optional[dict], list[str], dict[str, str]]:
    """The form -> (the POST /trials or /experiments body, [], {}) or (None, what to fix, {field path:
    the spec's message}). ``raws``: the generated inputs by field path (absent ones: the spec's
    defaults); they are checked by the spec's own model (``ExperimentJobSpec``), as the API and the
    worker check them."""
    errors = []
    if not model:
        errors.append("Choose a model.")
    L = int((info or {}).get("num_layers") or 0)
    allocations = [a.strip() for a in allocations if a and a.strip()]
    if not allocations:
        errors.append("Choose the layers to train (a preset, ranges, or clicks on the layer strip).")
    allocations_ok = bool(allocations)
    for a in allocations:
        try:
            check_allocation(a)
        except AllocationError as exc:
            errors.append(f"Allocation: {exc}.")
            allocations_ok = False
            continue
        if a in PRESETS or is_from_trace(a):  # from-trace:PATH names a trace file on the server
            if a == "from-trace" and not str(raws.get("trace_tasks") or "").strip():
                errors.append("from-trace needs trace tasks to trace the base model first.")
            continue
        if L:
            layers, problem = parse_ranges(a, L)
            if problem:
                errors.append(f"Allocation {a}: {problem}.")
            elif not layers and not toggles:
                errors.append(f"Allocation {a!r} trains nothing.")
    if len(set(allocations)) != len(allocations):
        errors.append("An allocation is listed twice.")
        allocations_ok = False
    if kind == "trial" and len(allocations) > 1:
        errors.append("A trial has one allocation; use New experiment to compare several.")
    if not (corpus or "").strip():
        errors.append("Give the training corpus (a text, JSONL or parquet file or folder on the server).")
    bench_list = [b.strip() for b in re.split(r"[,\n]+", benchmarks or "") if b.strip()]
    benches_ok = True
    for b in bench_list:
        try:
            check_benchmark(b)
        except BenchmarkSpecError as exc:
            errors.append(f"Benchmark: {exc}.")
            benches_ok = False
    values = sf.read(RUN_FIELDS, {**TRAINING_DEFAULTS, **raws})
    # What the checks above judged stands in with a valid placeholder, so that the spec's messages
    # are those of the generated fields alone.
    data = {**sf.nest(values), "model_id": model or "m", "corpus": (corpus or "").strip() or "c",
            "benchmarks": bench_list if benches_ok else [], "kind": kind,
            "allocations": allocations if allocations_ok else ["full"]}
    spec, wrong, others = sf.check(ExperimentJobSpec, data, RUN_FIELDS)
    if spec is not None and allocations_ok:
        try:
            spec._check_labels(allocations)  # the API's rule: a label names an allocation that runs
        except ValueError as exc:
            wrong["labels"] = str(exc)
    errors += sf.messages(RUN_FIELDS, wrong, LABELS) + [f"{m}." for m in others]
    if errors:
        return None, errors, wrong
    optional = {f.path for f in RUN_FIELDS if f.optional}
    body: dict[str, Any] = {"model_id": model, "corpus": corpus.strip(), "benchmarks": bench_list,
                            **sf.nest({k: v for k, v in values.items() if not (v is None and k in optional)})}
    if not body.get("placement"):
        body.pop("placement", None)
    # A checked toggle trains that part in every allocation (full trains it anyway); an unchecked one is
    # off, except in full, which trains everything unless told otherwise: then it is left to the default.
    on, has_full = set(toggles or []), "full" in allocations
    for key, _ in TOGGLES:
        if key in on or not has_full:
            body[key] = key in on
    if kind == "trial":
        body["allocation"] = allocations[0]
    else:
        body["allocations"] = allocations
    return body, [], {}


_GIVEN = object()


def validate(kind: str, *, model: Optional[str], info: Optional[dict], allocations: list[str], toggles: list[str],
             corpus: Optional[str], benchmarks: Optional[str], seeds: Any = _GIVEN, steps: Any = _GIVEN,
             lr: Any = _GIVEN, batch_size: Any = _GIVEN, block_size: Any = _GIVEN, trace_tasks: Any = _GIVEN,
             raws: Optional[dict[str, Any]] = None) -> tuple[Optional[dict], list[str]]:
    """``check_run_form`` with the basic fields by name (as their inputs hold them) and any other
    generated field in ``raws``: (body, []) or (None, what to fix)."""
    given = dict(raws or {})
    for key, value in (("seeds", seeds), ("steps", steps), ("lr", lr), ("batch_size", batch_size),
                       ("block_size", block_size), ("trace_tasks", trace_tasks)):
        if value is not _GIVEN:
            given[key] = value
    body, errors, _ = check_run_form(kind, model=model, info=info, allocations=allocations, toggles=toggles,
                                     corpus=corpus, benchmarks=benchmarks, raws=given)
    return body, errors


# -- layout --------------------------------------------------------------------------------------------

def clone_prefill(run: dict, kind: str, info: Optional[dict]) -> dict:
    """A stored trial or experiment (``GET /experiments/{id}``: its ``spec`` is the job's) -> the form's
    values: model, ranges (a trial's allocation; a preset as its layers when the model's depth is
    known, so that the strip shows it), allocations, toggles, corpus, benchmarks, the trace it came
    from, and the spec itself for the generated fields."""
    spec = dict(run.get("spec") or {})
    allocations = list(spec.get("allocations") or [])
    toggles = [key for key, _ in TOGGLES if spec.get(key)]
    first = allocations[0] if allocations else ""
    L = int((info or {}).get("num_layers") or 0)
    ranges = first
    if first in PRESETS[:3] and L:
        ranges = format_ranges(preset_layers(first, L))
        toggles = ["embeddings", "head", "final_norm"] if first == "full" else toggles
    return {"model": spec.get("model_id") or (run.get("model") or {}).get("id"), "ranges": ranges,
            "allocations": "\n".join(allocations), "toggles": toggles, "corpus": spec.get("corpus") or "",
            "benchmarks": ", ".join(spec.get("benchmarks") or []), "trace": run.get("source_trace_id"), "spec": spec}


def form_layout(p: str, kind: str, token: Optional[str], query: dict) -> html.Div:
    api = client(token)
    problems = []
    try:
        models = api.models().get("data") or []
    except ApiError as exc:
        models, problems = [], [api_error_box(exc, title="Models could not be loaded")]
    ids = {m["id"] for m in models}
    prefill: dict[str, Any] = {"spec": {}, "toggles": []}
    if query.get("clone"):
        try:
            run = stored_run(api, query["clone"], "experiment")
            model_id = (run.get("spec") or {}).get("model_id")
            prefill = clone_prefill(run, kind, _model_info(models, model_id, token))
            problems.append(notice(f"Every field is that of {run.get('kind', 'run')} "
                                   f"{run.get('name') or str(run['id'])[:8]}: change what you want to vary and start it."))
        except ApiError as exc:
            problems.append(api_error_box(exc, title=f"Run {query['clone']} could not be cloned"))
    wanted = prefill.get("model") or query.get("model")
    model = wanted if wanted in ids else (models[0]["id"] if len(models) == 1 else None)
    info = _model_info(models, model, token)
    ranges = prefill.get("ranges") or query.get("ranges") or ""
    from_trace = prefill.get("trace") or query.get("trace")
    title = "New trial" if kind == "trial" else "New experiment"
    intro = ("A trial continues pre-training the model with one allocation (which layers train) over one or more seeds, "
             "and evaluates it before and after." if kind == "trial" else
             "An experiment runs several allocations x seeds on the same data and compares them with intervals and "
             "significance tests.")
    toggles = prefill["toggles"]
    evidence = trace_evidence(from_trace, token)
    count, problem = count_text(info, ranges, toggles)
    values = {**sf.widget_values(RUN_FIELDS, prefill["spec"]), **sf.query_values(RUN_FIELDS, query)}
    if not prefill["spec"] and "seeds" not in query:
        values["seeds"] = "1, 2, 3" if kind == "experiment" else "1"
    allocation_block = []
    listed_default = ranges or "one"
    rate = run_preview.measured_rate(api, model)
    if kind == "experiment":
        listed = prefill.get("allocations") or "\n".join(
            a.strip() for a in str(query.get("allocations", "")).split(";") if a.strip())
        listed = listed or "train-shallow\ntrain-deep\nfull"
        listed_default = listed
        figure, lines = preview(listed, toggles, info)
        allocation_block = [
            html.Button("Add this selection to the allocations", id=f"{p}-add", type="button", className="lt-button"),
            html.Div(html.Label("Allocations compared (one per line: a preset or ranges)", htmlFor=f"{p}-allocations")),
            dcc.Textarea(id=f"{p}-allocations", value=listed, className="lt-input lt-textarea"),
            dcc.Graph(id=f"{p}-preview", figure=figure, config={"displayModeBar": False}),
            html.Div(lines, id=f"{p}-preview-text", className="lt-muted lt-help lt-check"),
        ]
    data_fields = [f for f in RUN_FIELDS if f.path in DATA]
    basic = [f for f in RUN_FIELDS if f.path in BASIC]
    advanced = [f for f in RUN_FIELDS if f.path not in DATA and f.path not in BASIC]
    return html.Div([
        dcc.Location(id=f"{p}-go", refresh="callback-nav"),
        dcc.Store(id=f"{p}-info", data=info),
        html.H1(title),
        html.P(intro, className="lt-muted"),
        *problems,
        notice(f"Ranges taken from the freeze plan of trace {from_trace}.") if from_trace and ranges and not prefill["spec"] else html.Div(),
        html.Form([
            html.Fieldset([
                html.Legend("Model"),
                dcc.Dropdown(id=f"{p}-model", options=[{"label": m.get("name") or m.get("source"), "value": m["id"]} for m in models],
                             value=model, placeholder="choose a registered model"),
            ]),
            html.Fieldset([
                html.Legend("Layers to train"),
                html.Div([html.Span("Presets: ", className="lt-muted")] + [
                    html.Button(name, id={"type": f"{p}-preset", "preset": name}, type="button", className="lt-button lt-small")
                    for name in PRESETS[:3]
                ] + [
                    dcc.Dropdown(id=f"{p}-trace", options=_trace_options(model, token), value=from_trace,
                                 placeholder="from-trace: a finished trace of this model", className="lt-inline-dd"),
                ], className="lt-row"),
                html.Div([
                    html.Label("Ranges of trained blocks (0-based, e.g. 0-7,12)", htmlFor=f"{p}-ranges"),
                    dcc.Input(id=f"{p}-ranges", type="text", value=ranges, debounce=False, className="lt-input lt-wide",
                              placeholder="0-7,12"),
                    html.Div(problem or "", id=f"{p}-ranges-error", className="lt-field-error", role="alert"),
                ], className="lt-field"),
                dcc.Store(id=f"{p}-evidence", data=evidence),
                dcc.Graph(id=f"{p}-strip", figure=strip_figure(info, ranges, toggles, evidence),
                          config={"displayModeBar": False}),
                dcc.Checklist(id=f"{p}-toggles", options=[{"label": f"also train the {label}", "value": key} for key, label in TOGGLES],
                              value=toggles, inline=True),
                html.Div(count, id=f"{p}-count", className="lt-count", **{"aria-live": "polite"}),
                *allocation_block,
            ]),
            html.Fieldset([
                html.Legend("Data and evaluation"),
                _text(p, "corpus", "Corpus on the server (text, JSONL with text, parquet, or a folder)",
                      prefill.get("corpus") or query.get("corpus", "")),
                html.Div("", id=f"{p}-corpus-check", className="lt-muted lt-help lt-check", **{"aria-live": "polite"}),
                _text(p, "benchmarks", "Benchmarks (comma-separated ceval:FOLDER, cmmlu:FOLDER or lm-eval:TASK)",
                      prefill.get("benchmarks") or query.get("benchmarks", "")),
                html.Div("", id=f"{p}-benchmarks-check", className="lt-muted lt-help lt-check", **{"aria-live": "polite"}),
                html.Div([server_paths.used_field(p, api)], className="lt-row"),
                server_paths.browser(p),
                *sf.render_all(p, data_fields, values, LABELS),
            ]),
            html.Fieldset([
                html.Legend("Training"),
                html.Div(sf.render_all(p, basic, values, LABELS), className="lt-row"),
            ]),
            html.Details([
                html.Summary(f"Advanced: every other option of the {kind} ({len(advanced)})"),
                html.Div(sf.render_all(p, advanced, values, LABELS), className="lt-row"),
            ], id=f"{p}-advanced", className="lt-advanced"),
            html.Div(run_preview.estimate_text(*_estimate(kind, values, prefill.get("allocations") or listed_default, rate)),
                     id=f"{p}-estimate", className="lt-notice", **{"aria-live": "polite"}),
            html.Div(id=f"{p}-errors", role="alert"),
            html.Button(f"Start the {kind}", id=f"{p}-submit", type="button", className="lt-button lt-primary"),
        ], className="lt-form"),
        dcc.Store(id=f"{p}-rate", data=rate),
    ])


def _text(p, key, label, value):
    return html.Div([html.Label(label, htmlFor=f"{p}-{key}"),
                     dcc.Input(id=f"{p}-{key}", type="text", value=value, className="lt-input lt-wide")], className="lt-field")


def _model_info(models: list[dict], model_id: Optional[str], token: Optional[str]) -> Optional[dict]:
    if not model_id:
        return None
    for m in models:
        if m["id"] == model_id and (m.get("info") or {}).get("block_parameters"):
            return m["info"]
    try:
        return client(token).model(model_id).get("info")
    except ApiError:
        return None


def _trace_options(model_id: Optional[str], token: Optional[str]) -> list[dict]:
    if not model_id:
        return []
    try:
        traces = client(token).traces(status="succeeded", limit=100).get("data") or []
    except ApiError:
        return []
    options = []
    for t in traces:
        if (t.get("model") or {}).get("id") not in (None, model_id):
            continue
        plan = ((t.get("summary") or {}).get("freeze_plan") or {})
        ranges = plan.get("train_ranges") if isinstance(plan, dict) else None
        tasks = ", ".join(t.get("tasks") or [])
        label = f"from trace {t['id'][:8]}… ({tasks})" if tasks else f"from trace {t['id'][:8]}…"
        options.append({"label": label + (f" · plan trains {ranges}" if ranges else ""), "value": t["id"]})
    return options


# -- callbacks -------------------------------------------------------------------------------------------

def model_changed(model, token):
    """A model choice -> its info (layers, per-block parameters) and its finished traces."""
    if not model:
        return None, []
    try:
        info = client(token).model(model).get("info")
    except ApiError:
        info = None
    return info, _trace_options(model, token)


def trace_plan_ranges(trace_id: str, token: Optional[str]) -> Optional[str]:
    meta = client(token).trace(trace_id)
    plan = (meta.get("summary") or {}).get("freeze_plan") or {}
    if isinstance(plan, dict) and plan.get("train_ranges") is not None:
        return plan["train_ranges"]
    return (client(token).trace_overview(trace_id).get("freeze_plan") or {}).get("train_ranges")


def pick(preset_clicks, click, trace_id, ranges, toggles, info, token):
    """Presets, a from-trace choice or a click on the strip -> (ranges text, toggles)."""
    trigger = ctx.triggered_id
    L = int((info or {}).get("num_layers") or 0)
    if not L or trigger is None:
        return dash.no_update, dash.no_update
    if isinstance(trigger, dict):
        if not any(preset_clicks or []):
            return dash.no_update, dash.no_update
        preset = trigger["preset"]
        on = ["embeddings", "head", "final_norm"] if preset == "full" else []
        return format_ranges(preset_layers(preset, L)), on
    if trigger.endswith("-strip"):
        if not click or not click.get("points"):
            return dash.no_update, dash.no_update
        return toggle_layer(ranges, int(round(click["points"][0]["x"])), L), dash.no_update
    if trigger.endswith("-trace") and trace_id:
        try:
            found = trace_plan_ranges(trace_id, token)
        except ApiError:
            return dash.no_update, dash.no_update
        return (found if found is not None else dash.no_update), []
    return dash.no_update, dash.no_update


def live_count(ranges, toggles, info, evidence=None):
    text, problem = count_text(info, ranges, toggles)
    return text, problem or "", strip_figure(info, ranges, toggles, evidence)


def add_allocation(n_clicks, ranges, toggles, current, info):
    if not n_clicks:
        return dash.no_update
    L = int((info or {}).get("num_layers") or 0)
    layers, problem = parse_ranges(ranges, L) if L else ([], "no model")
    if problem or not layers:
        return dash.no_update
    label = allocation_label(layers, toggles or [], L)
    lines = [line.strip() for line in (current or "").splitlines() if line.strip()]
    if label not in lines:
        lines.append(label)
    return "\n".join(lines)


def lineage(api, trace_id: Optional[str], allocations: list[str]) -> tuple[dict, dict]:
    """(fields, labels) for a run launched with a trace chosen (the freeze plan's "Launch a trial with
    this plan", or the form's from-trace choice): the trace id it came from, and the label "freeze plan
    of <trace>" for the allocation that is exactly the plan's ranges (one edited by hand is not)."""
    if not trace_id:
        return {}, {}
    try:
        meta = api.trace(trace_id)
    except ApiError:
        return {}, {}  # not readable from here: the API checks the id itself when it is given
    plan = ((meta.get("summary") or {}).get("freeze_plan") or {}).get("train_ranges")
    name = meta.get("name") or str(trace_id)[:8]
    labels = {a: f"freeze plan of {name}" for a in allocations if plan and a == plan}
    return {"source_trace_id": trace_id}, labels


def make_submit(kind: str):
    def submit(n_clicks, model, info, ranges, toggles, allocations_text, corpus, benchmarks, token, source_trace,
               *values):
        quiet = [""] * len(RUN_FIELDS)
        if not n_clicks:
            return (dash.no_update, dash.no_update, *quiet)
        L = int((info or {}).get("num_layers") or 0)
        if kind == "trial":
            layers, problem = parse_ranges(ranges, L) if L else ([], None)
            allocations = [allocation_label(layers, toggles or [], L)] if layers and not problem else (
                [ranges] if (ranges or "").strip() else [])
        else:
            allocations = [line for line in (allocations_text or "").splitlines() if line.strip()]
        raws = {f.path: v for f, v in zip(RUN_FIELDS, values)}
        body, errors, wrong = check_run_form(kind, model=model, info=info, allocations=allocations,
                                             toggles=toggles or [], corpus=corpus, benchmarks=benchmarks, raws=raws)
        marks = [wrong.get(f.path, "") for f in RUN_FIELDS]
        if errors:
            return (html.Ul([html.Li(e) for e in errors], className="lt-error"), dash.no_update, *marks)
        api = client(token)
        fields, labels = lineage(api, source_trace, allocations)
        body = {**body, **fields, "labels": {**labels, **(body.get("labels") or {})}} if fields else body
        try:
            created = api.create_trial(body) if kind == "trial" else api.create_experiment(body)
        except ApiError as exc:
            return (api_error_box(exc, title=f"The API refused the {kind}"), dash.no_update, *quiet)
        return (notice(f"{kind.capitalize()} {created['id']} queued."), rel(f"/experiments/{created['id']}"), *quiet)

    return submit


def preview(allocations_text: Optional[str], toggles: Optional[list], info: Optional[dict]) -> tuple[go.Figure, str]:
    """The experiment's allocations -> (their strips, one line each with the trainable share)."""
    rows = run_preview.allocation_rows(info, (allocations_text or "").splitlines(), toggles or [])
    lines = [f"{r['label']}: {r['trainable']:,} of {r['total']:,} parameters ({r['share']:.1%})"
             + (f" · with {r['note'].replace('_', ' ')}" if r["note"] else "")
             if r["share"] is not None else f"{r['label']}: {r['note']}" for r in rows]
    return run_preview.preview_figure(info, rows), "\n".join(lines)


def _estimate(kind: str, values: dict[str, Any], allocations_text: Optional[str], rate: Optional[dict]):
    """(tokens, trials, rate) for ``run_preview.estimate_text`` from the inputs' values."""
    seeds = sf.from_widget(sf.by_path(RUN_FIELDS)["seeds"], values.get("seeds"))
    n_seeds = len([s for s in seeds if isinstance(s, int)]) if isinstance(seeds, list) else 0
    n_alloc = 1 if kind == "trial" else len([a for a in (allocations_text or "").splitlines() if a.strip()])
    total = run_preview.tokens(values.get("steps"), values.get("batch_size"), values.get("grad_accum"),
                               values.get("block_size"), n_seeds, n_alloc)
    return total, n_seeds * n_alloc, rate


ESTIMATE_FIELDS = ("seeds", "steps", "batch_size", "grad_accum", "block_size")


def register(app: dash.Dash, p: str, kind: str) -> None:
    auth = State("auth-token", "data")
    server_paths.register(app, p)
    app.callback(Output(f"{p}-rate", "data"), Input(f"{p}-model", "value"), auth, prevent_initial_call=True)(
        lambda model, token: run_preview.measured_rate(client(token), model))
    allocations_input = Input(f"{p}-allocations", "value") if kind == "experiment" else Input(f"{p}-ranges", "value")

    def estimate(allocations_text, rate, *numbers):
        return run_preview.estimate_text(*_estimate(kind, dict(zip(ESTIMATE_FIELDS, numbers)), allocations_text, rate))

    app.callback(Output(f"{p}-estimate", "children"), allocations_input, Input(f"{p}-rate", "data"),
                 *[Input(f"{p}-{k}", "value") for k in ESTIMATE_FIELDS], prevent_initial_call=True)(estimate)
    if kind == "experiment":
        app.callback(Output(f"{p}-preview", "figure"), Output(f"{p}-preview-text", "children"),
                     Input(f"{p}-allocations", "value"), Input(f"{p}-toggles", "value"), Input(f"{p}-info", "data"),
                     prevent_initial_call=True)(preview)
    app.callback(Output(f"{p}-info", "data"), Output(f"{p}-trace", "options"),
                 Input(f"{p}-model", "value"), auth, prevent_initial_call=True)(model_changed)
    app.callback(Output(f"{p}-ranges", "value"), Output(f"{p}-toggles", "value"),
                 Input({"type": f"{p}-preset", "preset": ALL}, "n_clicks"), Input(f"{p}-strip", "clickData"),
                 Input(f"{p}-trace", "value"), State(f"{p}-ranges", "value"), State(f"{p}-toggles", "value"),
                 State(f"{p}-info", "data"), auth, prevent_initial_call=True)(pick)
    app.callback(Output(f"{p}-count", "children"), Output(f"{p}-ranges-error", "children"), Output(f"{p}-strip", "figure"),
                 Input(f"{p}-ranges", "value"), Input(f"{p}-toggles", "value"), Input(f"{p}-info", "data"),
                 Input(f"{p}-evidence", "data"), prevent_initial_call=True)(live_count)
    app.callback(Output(f"{p}-evidence", "data"), Input(f"{p}-trace", "value"), auth,
                 prevent_initial_call=True)(trace_evidence)
    allocations_state = State(f"{p}-allocations", "value") if kind == "experiment" else State(f"{p}-ranges", "id")
    if kind == "experiment":
        app.callback(Output(f"{p}-allocations", "value"), Input(f"{p}-add", "n_clicks"), State(f"{p}-ranges", "value"),
                     State(f"{p}-toggles", "value"), State(f"{p}-allocations", "value"), State(f"{p}-info", "data"),
                     prevent_initial_call=True)(add_allocation)
    ids = [sf.input_id(p, f) for f in RUN_FIELDS]
    app.callback(Output(f"{p}-errors", "children"), Output(f"{p}-go", "pathname"),
                 *[Output(f"{i}-error", "children") for i in ids],
                 Input(f"{p}-submit", "n_clicks"), State(f"{p}-model", "value"), State(f"{p}-info", "data"),
                 State(f"{p}-ranges", "value"), State(f"{p}-toggles", "value"), allocations_state,
                 State(f"{p}-corpus", "value"), State(f"{p}-benchmarks", "value"), auth, State(f"{p}-trace", "value"),
                 *[State(i, "value") for i in ids], prevent_initial_call=True)(make_submit(kind))
