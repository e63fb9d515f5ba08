"""New trace (``/new/trace?model=``): model, task sets (built-in or uploaded), perturbations, options;
checked before anything is sent, then ``POST /api/v1/traces`` and on to the trace's page."""

from __future__ import annotations

import base64
from typing import Any, Optional

import dash
from dash import Input, Output, State, dcc, html
from pydantic import ValidationError

from frontend.api_client import ApiError
from frontend.components import api_error_box, client, error_box, notice, rel
from layertracer.spec.fields import number_bounds, validation_message
from layertracer.spec.loading import ATTN_IMPLEMENTATIONS, DEVICE_MAP_STRATEGIES, LOAD_IN, PlacementSpec
from layertracer.spec.perturbations import (
    DEFAULT_KEEP,
    DEFAULT_SCALE,
    KEEP_RANGE,
    SCALE_RANGE,
    PerturbationError,
    format_perturbation,
    parse_perturbation,
)
from layertracer.spec.trace_options import TraceOptionsSpec

dash.register_page(__name__, path="/new/trace", name="New trace", title="New trace · LayerTracer", order=1)

P = "newtrace"
PERTURBATIONS = [
    ("skip", "skip — remove the block from the residual stream"),
    ("zero-attn", "zero-attn — the block's mixer (attention / SSM) outputs zeros"),
    ("zero-mlp", "zero-mlp — the block's MLP outputs zeros"),
    ("noise", "noise — add scaled Gaussian noise to the block's output"),
    ("mask", "mask — keep each hidden unit of the block's update with probability keep"),
]
_LABELS = {  # the form's words; defaults and limits are the spec's (layertracer/spec/trace_options.py)
    "limit": "Prompts per task (empty: all)",
    "batch_size": "Batch size (prompts per forward pass)",
    "top_k": "Top-k tokens kept per layer",
    "seed": "Seed (noise / mask draws, bootstrap)",
    "draws": "Draws averaged for noise and mask",
    "shots": "Few-shot examples in built-in prompts",
    "position_prompt": "Per-position view: prompt number",
}
NUMBER_FIELDS = [  # (id, label, default, min, max, integer)
    (key, label, (b := number_bounds(TraceOptionsSpec, key)).default, b.low, b.high, b.integer)
    for key, label in _LABELS.items()
]


def _model_options(models: list[dict]) -> list[dict]:
    options = []
    for m in models:
        info = m.get("info") or {}
        layers = info.get("num_layers")
        label = f"{m.get('name') or m.get('source')}" + (f" · {info.get('architecture')} · {layers} layers" if layers else "")
        if m.get("status") and m.get("status") not in ("ready", "succeeded"):
            label += f" ({m['status']})"
        options.append({"label": label, "value": m["id"]})
    return options


def _task_options(task_sets: list[dict]) -> list[dict]:
    options = []
    for t in task_sets:
        builtin = t.get("builtin", t.get("kind") != "uploaded")
        extra = f" · {t.get('language')}" if t.get("language") else ""
        count = t.get("num_items", t.get("count", "?"))
        options.append({"label": f"{t['name']} ({'built-in' if builtin else 'uploaded'}{extra}, {count} items)",
                        "value": t["id"]})
    return options


def layout(token: Optional[str] = None, model: Optional[str] = None, **query: Any) -> html.Div:
    api = client(token)
    problems = []
    try:
        models = api.models().get("data") or []
    except ApiError as exc:
        models, problems = [], problems + [api_error_box(exc, title="Models could not be loaded")]
    try:
        task_sets = api.task_sets().get("data") or []
    except ApiError as exc:
        task_sets, problems = [], problems + [api_error_box(exc, title="Task sets could not be loaded")]
    model_ids = {m["id"] for m in models}
    fields = []
    for key, label, default, lo, hi, _ in NUMBER_FIELDS:
        fields.append(html.Div([html.Label(label, htmlFor=f"{P}-{key}"),
                                dcc.Input(id=f"{P}-{key}", type="number", min=lo, max=hi, step=1, value=default,
                                          className="lt-input")], className="lt-field"))
    return html.Div([
        dcc.Location(id=f"{P}-go", refresh="callback-nav"),
        html.H1("New trace"),
        *problems,
        html.Form([
            html.Fieldset([
                html.Legend("Model"),
                dcc.Dropdown(id=f"{P}-model", options=_model_options(models), value=model if model in model_ids else None,
                             placeholder="choose a registered model", searchable=True),
                html.Details([
                    html.Summary("Register another model"),
                    html.Label("Local folder (under the server's model roots) or hub id", htmlFor=f"{P}-model-source"),
                    dcc.Input(id=f"{P}-model-source", type="text", className="lt-input lt-wide"),
                    html.Button("Register", id=f"{P}-model-add", type="button", className="lt-button"),
                    html.Div(id=f"{P}-model-msg"),
                ]),
            ]),
            html.Fieldset([
                html.Legend("Tasks"),
                dcc.Checklist(id=f"{P}-tasks", options=_task_options(task_sets), value=[], className="lt-checks"),
                html.Details([
                    html.Summary("Upload a task file (JSONL or CSV with prompt and target)"),
                    html.Label("Name of the task set", htmlFor=f"{P}-upload-name"),
                    dcc.Input(id=f"{P}-upload-name", type="text", className="lt-input"),
                    dcc.Upload(id=f"{P}-upload", children=html.Div(["Drop a file here or ", html.A("choose one")]),
                               className="lt-upload", multiple=False),
                    html.Div(id=f"{P}-upload-msg"),
                ], className="lt-upload-block"),
            ]),
            html.Fieldset([
                html.Legend("Perturbations (the first checked is the primary one: vulnerable layer and plan)"),
                dcc.Checklist(id=f"{P}-perts", options=[{"label": label, "value": v} for v, label in PERTURBATIONS],
                              value=["skip"], className="lt-checks"),
                html.Div([
                    html.Div([html.Label("mask: keep probability", htmlFor=f"{P}-keep"),
                              dcc.Input(id=f"{P}-keep", type="number", min=KEEP_RANGE[0], max=KEEP_RANGE[1], step=0.05, value=DEFAULT_KEEP, className="lt-input")],
                             className="lt-field"),
                    html.Div([html.Label("noise: scale (× RMS of the output)", htmlFor=f"{P}-scale"),
                              dcc.Input(id=f"{P}-scale", type="number", min=0, max=SCALE_RANGE[1], step=0.1, value=DEFAULT_SCALE, className="lt-input")],
                             className="lt-field"),
                ], className="lt-row"),
            ]),
            html.Fieldset([html.Legend("Options"), html.Div(fields + [
                html.Div([html.Label("Per-position view: task (empty: the first)", htmlFor=f"{P}-position_task"),
                          dcc.Input(id=f"{P}-position_task", type="text", className="lt-input")], className="lt-field"),
            ], className="lt-row")]),
            placement_fields(),
            html.Div(id=f"{P}-errors", role="alert"),
            html.Button("Start the trace", id=f"{P}-submit", type="button", className="lt-button lt-primary"),
        ], className="lt-form", **{"aria-label": "new trace"}),
    ])


# The placement inputs: (id, label, choices or None for free text); choices are the spec's.
PLACEMENT_FIELDS = [
    ("device_map", "Device map", DEVICE_MAP_STRATEGIES),
    ("max_memory", "Memory per device (e.g. 0=70GiB,cpu=200GiB)", None),
    ("attn_implementation", "Attention kernel", ATTN_IMPLEMENTATIONS),
    ("load_in", "Quantize (CUDA)", LOAD_IN),
]


def placement_fields() -> html.Details:
    """Advanced, folded: where the worker puts a model larger than one GPU (the API's ``placement``)."""
    fields = []
    for key, label, choices in PLACEMENT_FIELDS:
        control = (dcc.Dropdown(id=f"{P}-place-{key}", options=[{"label": c, "value": c} for c in choices],
                                placeholder="the default", clearable=True, className="lt-input")
                   if choices else dcc.Input(id=f"{P}-place-{key}", type="text", className="lt-input"))
        fields.append(html.Div([html.Label(label, htmlFor=f"{P}-place-{key}"), control], className="lt-field"))
    return html.Details([html.Summary("Placement: models larger than one GPU"),
                         html.Div(fields, className="lt-row")], className="lt-advanced")


def placement_body(values: dict[str, Any]) -> tuple[dict[str, Any], Optional[str]]:
    """The placement inputs -> (the API's ``placement`` object, None) or ({}, what to fix), checked by
    the spec (``layertracer.spec.loading.PlacementSpec``), as the API checks it."""
    given = {k: (v.strip() if isinstance(v, str) else v) for k, v in (values or {}).items() if v not in (None, "")}
    try:
        return PlacementSpec.model_validate(given).model_dump(exclude_none=True), None
    except ValidationError as exc:
        return {}, f"Placement: {validation_message(exc)}."


def perturbation_specs(kinds: list[str], keep: Any, scale: Any) -> list[str]:
    """Checked kinds -> perturbation texts of the engine's grammar (``mask:keep=0.5``, ``noise:scale=1``)."""
    specs = []
    for kind in kinds or []:
        if kind == "mask":
            specs.append(format_perturbation("mask", keep=float(keep)))
        elif kind == "noise":
            specs.append(format_perturbation("noise", scale=float(scale)))
        else:
            specs.append(kind)
    return specs


def perturbation_errors(kinds: list[str], keep: Any, scale: Any) -> list[str]:
    """The grammar's own messages for the keep and scale fields (its limits, not the form's)."""
    errors = []
    for kind, name, value in (("mask", "keep", keep), ("noise", "scale", scale)):
        if kind not in (kinds or []):
            continue
        try:
            parse_perturbation(format_perturbation(kind, **{name: float(value)}))
        except (TypeError, ValueError) as exc:  # PerturbationError is a ValueError
            errors.append(f"{kind}: {exc}" if isinstance(exc, PerturbationError) else f"{kind}: give a {name}.")
    return errors


def validate(model: Optional[str], tasks: Optional[list], perts: Optional[list], keep: Any, scale: Any,
             numbers: dict[str, Any], position_task: Optional[str] = None,
             placement: Optional[dict[str, Any]] = None) -> tuple[Optional[dict], list[str]]:
    """The form -> (the POST /traces body, []) or (None, messages saying what to fix)."""
    errors = []
    if not model:
        errors.append("Choose a model.")
    if not tasks:
        errors.append("Choose at least one task set.")
    if not perts:
        errors.append("Choose at least one perturbation (skip is the usual one).")
    errors += perturbation_errors(perts, keep, scale)
    options: dict[str, Any] = {}
    for key, label, default, lo, hi, integer in NUMBER_FIELDS:
        value = numbers.get(key)
        if value is None or value == "":
            if default is not None:
                errors.append(f"{label}: give a number.")
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            errors.append(f"{label}: {value!r} is not a number.")
            continue
        if integer and number != int(number):
            errors.append(f"{label}: must be a whole number.")
        elif not lo <= number <= hi:
            errors.append(f"{label}: must be between {lo} and {hi}.")
        else:
            options[key] = int(number) if integer else number
    if (position_task or "").strip():
        options["position_task"] = position_task.strip()
    placed, problem = placement_body(placement or {})
    if problem:
        errors.append(problem)
    if errors:
        return None, errors
    body = {"model_id": model, "task_sets": list(tasks), "perturbations": perturbation_specs(perts, keep, scale),
            "options": options}
    if placed:
        body["placement"] = placed
    return body, []


def submit(n_clicks, model, tasks, perts, keep, scale, limit, batch_size, top_k, seed, draws, shots, position_prompt,
           position_task, device_map, max_memory, attn_implementation, load_in, token):
    """Validate, POST /traces, and go to the new trace's page (or show what is wrong)."""
    if not n_clicks:
        return dash.no_update, dash.no_update
    body, errors = validate(model, tasks, perts, keep, scale,
                            {"limit": limit, "batch_size": batch_size, "top_k": top_k, "seed": seed, "draws": draws,
                             "shots": shots, "position_prompt": position_prompt}, position_task,
                            {"device_map": device_map, "max_memory": max_memory,
                             "attn_implementation": attn_implementation, "load_in": load_in})
    if errors:
        return html.Ul([html.Li(e) for e in errors], className="lt-error"), dash.no_update
    try:
        trace = client(token).create_trace(body)
    except ApiError as exc:
        return api_error_box(exc, title="The API refused the trace"), dash.no_update
    return notice(f"Trace {trace['id']} queued."), rel(f"/traces/{trace['id']}")


def add_model(n_clicks, source, token):
    if not n_clicks:
        return dash.no_update, dash.no_update, dash.no_update
    if not (source or "").strip():
        return error_box("Give a folder or a hub id.", title="Nothing to register"), dash.no_update, dash.no_update
    api = client(token)
    try:
        model = api.add_model(source.strip())
        models = api.models().get("data") or []
    except ApiError as exc:
        return api_error_box(exc, title="The model could not be registered"), dash.no_update, dash.no_update
    return notice(f"Registered {model.get('name') or model.get('source')}."), _model_options(models), model["id"]


def upload(contents, filename, name, selected, token):
    if not contents:
        return dash.no_update, dash.no_update, dash.no_update
    try:
        raw = base64.b64decode(contents.split(",", 1)[1])
    except (IndexError, ValueError):
        return error_box("The file could not be read.", title="Upload failed"), dash.no_update, dash.no_update
    set_name = (name or "").strip() or (filename or "tasks").rsplit(".", 1)[0]
    api = client(token)
    try:
        created = api.upload_task_set(filename or "tasks.jsonl", raw, set_name)
        task_sets = api.task_sets().get("data") or []
    except ApiError as exc:
        return api_error_box(exc, title="The task file was refused"), dash.no_update, dash.no_update
    chosen = list(selected or []) + [created["id"]]
    count = created.get("num_items", created.get("count", "?"))
    return notice(f"Uploaded {created.get('name', set_name)} ({count} items)."), _task_options(task_sets), chosen


def register_callbacks(app: dash.Dash) -> None:
    auth = State("auth-token", "data")
    app.callback(Output(f"{P}-errors", "children"), Output(f"{P}-go", "pathname"),
                 Input(f"{P}-submit", "n_clicks"), State(f"{P}-model", "value"), State(f"{P}-tasks", "value"),
                 State(f"{P}-perts", "value"), State(f"{P}-keep", "value"), State(f"{P}-scale", "value"),
                 *[State(f"{P}-{key}", "value") for key, *_ in NUMBER_FIELDS], State(f"{P}-position_task", "value"),
                 *[State(f"{P}-place-{key}", "value") for key, *_ in PLACEMENT_FIELDS],
                 auth, prevent_initial_call=True)(submit)
    app.callback(Output(f"{P}-model-msg", "children"), Output(f"{P}-model", "options"), Output(f"{P}-model", "value"),
                 Input(f"{P}-model-add", "n_clicks"), State(f"{P}-model-source", "value"), auth,
                 prevent_initial_call=True)(add_model)
    app.callback(Output(f"{P}-upload-msg", "children"), Output(f"{P}-tasks", "options"), Output(f"{P}-tasks", "value"),
                 Input(f"{P}-upload", "contents"), State(f"{P}-upload", "filename"), State(f"{P}-upload-name", "value"),
                 State(f"{P}-tasks", "value"), auth, prevent_initial_call=True)(upload)
