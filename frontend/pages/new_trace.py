"""New trace (``/new/trace?model=``, any option by its spec name: ``&top_k=5``, or ``?clone=<job or
trace id>``): model, task sets (built-in or uploaded), perturbations, options; checked before anything is
sent, then ``POST /api/v1/traces`` and on to the trace's page."""

from __future__ import annotations

import base64
from typing import Any, Optional

import dash
from dash import Input, Output, State, dcc, html
from pydantic import ValidationError

from frontend import spec_form as sf
from frontend.api_client import ApiError
from frontend.clone import stored_run
from frontend.components import api_error_box, client, error_box, notice, rel
from layertracer.spec.fields import validation_message
from layertracer.spec.loading import PlacementSpec
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
# The form's words for the spec's fields (every other field is labelled from its name); the inputs, their
# defaults, limits, choices and descriptions are the spec's (layertracer/spec/trace_options.py,
# layertracer/spec/loading.py PlacementSpec): a field added there appears here with no code.
LABELS = {
    "limit": "Prompts per task (empty: all)",
    "batch_size": "Batch size (prompts per forward pass)",
    "top_k": "Top-k tokens kept per layer",
    "seed": "Seed (noise / mask draws, bootstrap)",
    "draws": "Draws averaged for noise and mask",
    "shots": "Few-shot examples in built-in prompts",
    "position_task": "Per-position view: task (empty: the first)",
    "position_prompt": "Per-position view: prompt number",
    "plan_boundary": "Freeze-plan boundary",
    "min_train_layers": "Freeze plan: at least this many trainable layers",
    "similarity": "Layer x layer CKA matrix",
    "position_view": "Per-position view",
    "placement.device_map": "Device map",
    "placement.max_memory": "Memory per device (e.g. 0=70GiB,cpu=200GiB)",
    "placement.attn_implementation": "Attention kernel",
    "placement.load_in": "Quantize (CUDA)",
}
OPTION_FIELDS = sf.fields_of(TraceOptionsSpec)
PLACEMENT_FIELDS = sf.fields_of(PlacementSpec, under="placement.")
# Shown open; every other option is under Advanced.
BASIC = ("limit", "shots", "batch_size", "seed")
NUMBER_FIELDS = [  # (id, label, default, min, max, integer) of the numeric options
    (f.path, f.label(LABELS), f.default, f.bounds.low, f.bounds.high, f.kind == "int")
    for f in OPTION_FIELDS if f.kind in ("int", "float")
]
FORM_FIELDS = OPTION_FIELDS + PLACEMENT_FIELDS  # every generated input, in the order of the callbacks


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


def layout(token: Optional[str] = None, model: Optional[str] = None, clone: Optional[str] = None,
           **query: Any) -> html.Div:
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
    prefill = {"model": model, "tasks": [], "perts": ["skip"], "keep": DEFAULT_KEEP, "scale": DEFAULT_SCALE,
               "name": "", "spec": {}}
    if clone:
        try:
            run = stored_run(api, clone, "trace")
            prefill = clone_prefill(run, task_sets)
            problems.append(notice(f"Every field is that of trace {run.get('name') or str(run['id'])[:8]}: "
                                   "change what you want to vary and start it."))
            sent = perturbation_specs(prefill["perts"], prefill["keep"], prefill["scale"])
            stored = list((run.get("spec") or {}).get("perturbations") or ["skip"])
            if sent != stored:  # per-perturbation draws, or two masks: more than the form's fields hold
                problems.append(error_box(f"its perturbations {', '.join(stored)} will be sent as {', '.join(sent)}",
                                          title="The form cannot hold every perturbation of that trace"))
        except ApiError as exc:
            problems.append(api_error_box(exc, title=f"Run {clone} could not be cloned"))
    values = {**sf.widget_values(FORM_FIELDS, prefill["spec"]), **sf.query_values(FORM_FIELDS, query)}
    basic = [f for f in OPTION_FIELDS if f.path in BASIC]
    advanced = [f for f in FORM_FIELDS if f.path not in BASIC]
    return html.Div([
        dcc.Location(id=f"{P}-go", refresh="callback-nav"),
        html.H1("New trace"),
        *problems,
        html.Form([
            html.Fieldset([
                html.Legend("Model"),
                dcc.Dropdown(id=f"{P}-model", options=_model_options(models),
                             value=prefill["model"] if prefill["model"] in model_ids else None,
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
                dcc.Checklist(id=f"{P}-tasks", options=_task_options(task_sets), value=prefill["tasks"],
                              className="lt-checks"),
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
                              value=prefill["perts"], className="lt-checks"),
                html.Div([
                    html.Div([html.Label("mask: keep probability", htmlFor=f"{P}-keep"),
                              dcc.Input(id=f"{P}-keep", type="number", min=KEEP_RANGE[0], max=KEEP_RANGE[1], step=0.05,
                                        value=prefill["keep"], className="lt-input")],
                             className="lt-field"),
                    html.Div([html.Label("noise: scale (× RMS of the output)", htmlFor=f"{P}-scale"),
                              dcc.Input(id=f"{P}-scale", type="number", min=0, max=SCALE_RANGE[1], step=0.1,
                                        value=prefill["scale"], className="lt-input")],
                             className="lt-field"),
                ], className="lt-row"),
            ]),
            html.Fieldset([html.Legend("Options"), html.Div([
                html.Div([html.Label("Name (optional)", htmlFor=f"{P}-name"),
                          dcc.Input(id=f"{P}-name", type="text", value=prefill["name"], className="lt-input")],
                         className="lt-field"),
                *sf.render_all(P, basic, values, LABELS),
            ], className="lt-row")]),
            html.Details([
                html.Summary(f"Advanced: every other option of the trace ({len(advanced)})"),
                html.Div(sf.render_all(P, advanced, values, LABELS), className="lt-row"),
            ], id=f"{P}-advanced", className="lt-advanced"),
            html.Div(id=f"{P}-errors", role="alert"),
            html.Button("Start the trace", id=f"{P}-submit", type="button", className="lt-button lt-primary"),
        ], className="lt-form", **{"aria-label": "new trace"}),
    ])


def clone_prefill(run: dict, task_sets: list[dict]) -> dict:
    """A stored trace (``GET /traces/{id}``: its ``spec`` is the request it was made with) -> the
    form's values: model, task sets, perturbations (kinds with the mask's keep and the noise's scale),
    the options and the placement."""
    spec = dict(run.get("spec") or {})
    ids = {t["name"]: t["id"] for t in task_sets}
    perts = [parse_perturbation(p) for p in spec.get("perturbations") or ["skip"]]
    keep = next((p.keep for p in perts if p.kind == "mask" and p.keep is not None), DEFAULT_KEEP)
    scale = next((p.scale for p in perts if p.kind == "noise" and p.scale is not None), DEFAULT_SCALE)
    return {"model": spec.get("model_id") or (run.get("model") or {}).get("id"),
            "tasks": [ids.get(ref, ref) for ref in spec.get("task_sets") or []],
            "perts": list(dict.fromkeys(p.kind for p in perts)), "keep": keep, "scale": scale,
            "name": spec.get("name") or "",
            "spec": {**dict(spec.get("options") or {}), "placement": dict(spec.get("placement") or {})}}


def placement_body(values: dict[str, Any]) -> tuple[dict[str, Any], Optional[str]]:
    """The placement inputs (spec values by short name) -> (the API's ``placement`` object, None) or
    ({}, what to fix), checked by the spec (``layertracer.spec.loading.PlacementSpec``), as the API
    checks it."""
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


def check_form(model: Optional[str], tasks: Optional[list], perts: Optional[list], keep: Any, scale: Any,
               raws: dict[str, Any], name: Optional[str] = None) -> tuple[Optional[dict], list[str], dict[str, str]]:
    """The form -> (the POST /traces body, [], {}) or (None, messages saying what to fix, {field path:
    the spec's message for it}). ``raws``: the generated inputs' values by field path (those absent
    keep the spec's defaults); the options are checked by TraceOptionsSpec, the placement by
    PlacementSpec, as the API checks them."""
    errors = []
    if not model:
        errors.append("Choose a model.")
    if not tasks:
        errors.append("Choose at least one task set.")
    if not perts:
        errors.append("Choose at least one perturbation (skip is the usual one).")
    errors += perturbation_errors(perts, keep, scale)
    read = sf.read(FORM_FIELDS, raws)
    optional = {f.path for f in FORM_FIELDS if f.optional}  # empty there is the default (None); elsewhere a mistake
    options = {k: v for k, v in read.items() if not k.startswith("placement.") and not (v is None and k in optional)}
    placement = {k.split(".", 1)[1]: v for k, v in read.items() if k.startswith("placement.") and v is not None}
    _, wrong, others = sf.check(TraceOptionsSpec, options, OPTION_FIELDS)
    _, wrong_place, others_place = sf.check(PlacementSpec, placement,
                                            sf.fields_of(PlacementSpec))  # short names inside PlacementSpec
    wrong.update({f"placement.{k}": v for k, v in wrong_place.items()})
    errors += sf.messages(FORM_FIELDS, wrong, LABELS) + [f"Options: {m}." for m in others]
    errors += [f"Placement: {m}." for m in others_place]
    if errors:
        return None, errors, wrong
    body = {"model_id": model, "task_sets": list(tasks), "perturbations": perturbation_specs(perts, keep, scale),
            "options": options}
    placed = PlacementSpec.model_validate(placement).model_dump(exclude_none=True)
    if placed:
        body["placement"] = placed
    if (name or "").strip():
        body["name"] = name.strip()
    return body, [], {}


def validate(model: Optional[str], tasks: Optional[list], perts: Optional[list], keep: Any, scale: Any,
             numbers: dict[str, Any], position_task: Optional[str] = None,
             placement: Optional[dict[str, Any]] = None) -> tuple[Optional[dict], list[str]]:
    """``check_form`` for options given by name (``numbers``, any option of TraceOptionsSpec), the
    per-position task and the placement by short name: (body, []) or (None, messages)."""
    raws = dict(numbers)
    if position_task is not None:
        raws["position_task"] = position_task
    raws.update({f"placement.{k}": v for k, v in (placement or {}).items()})
    body, errors, _ = check_form(model, tasks, perts, keep, scale, raws)
    return body, errors


def submit(n_clicks, model, tasks, perts, keep, scale, name, token, *values):
    """Validate, POST /traces, and go to the new trace's page (or show what is wrong, each field's
    message next to it)."""
    quiet = [""] * len(FORM_FIELDS)
    if not n_clicks:
        return (dash.no_update, dash.no_update, *quiet)
    raws = {f.path: v for f, v in zip(FORM_FIELDS, values)}
    body, errors, wrong = check_form(model, tasks, perts, keep, scale, raws, name)
    marks = [wrong.get(f.path, "") for f in FORM_FIELDS]
    if errors:
        return (html.Ul([html.Li(e) for e in errors], className="lt-error"), dash.no_update, *marks)
    try:
        trace = client(token).create_trace(body)
    except ApiError as exc:
        return (api_error_box(exc, title="The API refused the trace"), dash.no_update, *quiet)
    return (notice(f"Trace {trace['id']} queued."), rel(f"/traces/{trace['id']}"), *quiet)


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
    ids = [sf.input_id(P, f) for f in FORM_FIELDS]
    app.callback(Output(f"{P}-errors", "children"), Output(f"{P}-go", "pathname"),
                 *[Output(f"{i}-error", "children") for i in ids],
                 Input(f"{P}-submit", "n_clicks"), State(f"{P}-model", "value"), State(f"{P}-tasks", "value"),
                 State(f"{P}-perts", "value"), State(f"{P}-keep", "value"), State(f"{P}-scale", "value"),
                 State(f"{P}-name", "value"), auth, *[State(i, "value") for i in ids],
                 prevent_initial_call=True)(submit)
    app.callback(Output(f"{P}-model-msg", "children"), Output(f"{P}-model", "options"), Output(f"{P}-model", "value"),
                 Input(f"{P}-model-add", "n_clicks"), State(f"{P}-model-source", "value"), auth,
                 prevent_initial_call=True)(add_model)
    app.callback(Output(f"{P}-upload-msg", "children"), Output(f"{P}-tasks", "options"), Output(f"{P}-tasks", "value"),
                 Input(f"{P}-upload", "contents"), State(f"{P}-upload", "filename"), State(f"{P}-upload-name", "value"),
                 State(f"{P}-tasks", "value"), auth, prevent_initial_call=True)(upload)
