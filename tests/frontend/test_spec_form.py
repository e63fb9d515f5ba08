"""The forms' fields are the spec's (frontend/spec_form.py): every field of TraceOptionsSpec,
PlacementSpec and ExperimentFields has an input with the spec's bounds, default and choices; a bad value
gets the spec's own message next to its field; every option of the CLI's trace / trial / experiment is
on a form (or named here with the reason it is not); and cloning a stored run fills the form so that
submitting it sends the same spec."""

from __future__ import annotations

from typing import Literal, get_args, get_origin

import dash
import pytest
from dash_tree import find, text_of
from pydantic import ValidationError

from frontend import run_form as rf
from frontend import spec_form as sf
from layertracer.spec.fields import number_bounds
from layertracer.spec.jobs import ExperimentFields, ExperimentJobSpec
from layertracer.spec.loading import PlacementSpec
from layertracer.spec.trace_options import TraceOptionsSpec


class _NewTrace:
    """frontend.pages.new_trace, imported on first use (a page module imports once the app exists: the
    session's dash_app fixture)."""

    def __getattr__(self, name):
        from frontend.pages import new_trace

        return getattr(new_trace, name)


nt = _NewTrace()


def components(node):
    """Every component with an id in a layout tree, by id."""
    out = {}
    if getattr(node, "id", None) is not None and isinstance(node.id, str):
        out[node.id] = node
    children = getattr(node, "children", None)
    for child in children if isinstance(children, (list, tuple)) else [children] if children is not None else []:
        if isinstance(child, dash.development.base_component.Component):
            out.update(components(child))
    return out


def literal_choices(annotation):
    """A Literal's values, looked up independently of the form code (through Optional)."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    for arg in get_args(annotation):
        if get_origin(arg) is Literal:
            return get_args(arg)
    return None


def leaf_paths(model, under=""):
    """Every leaf field of a pydantic model, nested models expanded (the spec's own field list)."""
    out = []
    for name, info in model.model_fields.items():
        inner = [a for a in (info.annotation, *get_args(info.annotation)) if isinstance(a, type) and issubclass(a, PlacementSpec)]
        out += leaf_paths(inner[0], f"{under}{name}.") if inner else [f"{under}{name}"]
    return out


# -- the renderer against the spec ------------------------------------------------------------------

@pytest.mark.parametrize("model, prefix", [(TraceOptionsSpec, "t"), (ExperimentFields, "e"), (PlacementSpec, "p")])
def test_every_field_gets_the_specs_input(model, prefix):
    fields = sf.fields_of(model)
    assert [f.path for f in fields] == leaf_paths(model)
    for field in fields:
        owner = PlacementSpec if field.path.startswith("placement.") else model
        info = owner.model_fields[field.name]
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        block = sf.render(prefix, field, sf.to_widget(field, default))
        control = find(block, sf.input_id(prefix, field))
        assert control is not None and find(block, sf.input_id(prefix, field) + "-error") is not None
        choices = literal_choices(info.annotation)
        if choices is not None:
            assert [o["value"] for o in control.options] == list(choices), field.path
            assert control.value == default and control.clearable == (default is None)
        elif info.annotation in (int, float) or field.kind in ("int", "float"):
            bounds = number_bounds(owner, field.name)
            assert (control.type, control.value) == ("number", default)
            # no browser-side limits (Dash would send None for a value outside them): the spec's bounds
            # are in the help line and the spec judges the number typed
            assert (getattr(control, "min", None), getattr(control, "max", None), control.step) == (None, None, "any")
            for bound, strict, sign in ((bounds.low, bounds.strict_low, ">"), (bounds.high, bounds.strict_high, "<")):
                if bound is not None:
                    shown = f"{int(bound):,}" if float(bound).is_integer() else f"{bound:g}"
                    assert f"{sign if strict else sign + '='} {shown}".replace(">=", "≥").replace("<=", "≤") in text_of(block)
        elif info.annotation is bool:
            assert control.value == (["on"] if default else [])
        if info.description:
            assert info.description in text_of(block)


@pytest.mark.parametrize("name, bad", [("top_k", 0), ("top_k", 101), ("batch_size", 2.5), ("particle_delta", 1.5),
                                       ("plan_boundary", "max"), ("limit", -3), ("seed", -1)])
def test_a_bad_trace_option_gets_the_specs_message_next_to_it(name, bad):
    try:
        TraceOptionsSpec.model_validate({name: bad})
        raise AssertionError("the spec takes it")
    except ValidationError as exc:
        expected = exc.errors()[0]["msg"]
    raws = sf.widget_values(nt.FORM_FIELDS)
    raws[name] = bad
    body, errors, wrong = nt.check_form("m", ["antonyms_en"], ["skip"], 0.5, 1.0, raws)
    assert body is None and wrong == {name: expected}
    assert any(e.startswith(sf.by_path(nt.FORM_FIELDS)[name].label(nt.LABELS) + ": " + expected) for e in errors)


def test_empty_is_the_default_only_where_the_spec_has_none():
    raws = sf.widget_values(nt.FORM_FIELDS)
    body, errors, _ = nt.check_form("m", ["antonyms_en"], ["skip"], 0.5, 1.0, {**raws, "limit": None})
    assert errors == [] and "limit" not in body["options"]  # every prompt, as the spec's None says
    _, errors, wrong = nt.check_form("m", ["antonyms_en"], ["skip"], 0.5, 1.0, {**raws, "top_k": None})
    assert list(wrong) == ["top_k"]  # a required number left empty is a mistake, not silently 10


@pytest.mark.parametrize("raws, field", [
    ({"eval_shots": 17}, "eval_shots"), ({"processes": 17}, "processes"), ({"holdout": 0.5}, "holdout"),
    ({"eval_mode": "guess"}, "eval_mode"), ({"placement.load_in": "2bit"}, "placement.load_in"),
    ({"device": "tpu"}, "device"), ({"seeds": "1, 1"}, "seeds"), ({"trace_perturbations": "wobble"}, "trace_perturbations"),
])
def test_a_bad_training_option_gets_the_specs_message_next_to_it(raws, field):
    data = {"model_id": "m", "corpus": "c", "allocations": ["full"],
            **sf.nest(sf.read(rf.RUN_FIELDS, {**rf.TRAINING_DEFAULTS, **raws}))}
    try:
        ExperimentJobSpec.model_validate(data)
        raise AssertionError("the spec takes it")
    except ValidationError as exc:
        expected = " ".join(exc.errors()[0]["msg"].removeprefix("Value error, ").split())
    body, errors, wrong = rf.check_run_form("trial", model="m", info={"num_layers": 4}, allocations=["full"], toggles=[],
                                            corpus="c", benchmarks="", raws=raws)
    assert body is None and wrong == {field: expected}


def test_a_rule_across_fields_is_shown_at_the_field_it_names():
    _, errors, wrong = rf.check_run_form("trial", model="m", info={"num_layers": 4}, allocations=["full"], toggles=[],
                                         corpus="c", benchmarks="", raws={"strategy": "fsdp", "processes": 1})
    assert wrong == {"strategy": "strategy fsdp shards the model over several processes: set processes to 2 or "
                                 "more (one per GPU)"}
    body, errors, _ = rf.check_run_form("trial", model="m", info={"num_layers": 4}, allocations=["full"], toggles=[],
                                        corpus="c", benchmarks="", raws={"strategy": "fsdp", "processes": 2})
    assert errors == [] and (body["strategy"], body["processes"]) == ("fsdp", 2)


# -- the forms against the spec and the CLI -------------------------------------------------------------

class NoApi:
    """An API with nothing registered (the forms still render every field)."""

    def __getattr__(self, name):
        def call(*args, **kwargs):
            return {"data": []}
        return call


@pytest.fixture
def no_api(monkeypatch):
    monkeypatch.setattr("frontend.pages.new_trace.client", lambda *a, **k: NoApi())
    monkeypatch.setattr(rf, "client", lambda *a, **k: NoApi())


def _form_inputs(layout, prefix, fields):
    found = components(layout)
    return {f.path for f in fields if sf.input_id(prefix, f) in found}


def test_the_trace_form_has_an_input_for_every_spec_field(no_api):
    layout = nt.layout()
    spec_paths = set(TraceOptionsSpec.model_fields) | {f"placement.{n}" for n in PlacementSpec.model_fields}
    assert _form_inputs(layout, nt.P, nt.FORM_FIELDS) == spec_paths
    advanced = find(layout, f"{nt.P}-advanced")
    assert _form_inputs(advanced, nt.P, nt.FORM_FIELDS) == spec_paths - set(nt.BASIC)


@pytest.mark.parametrize("kind, prefix", [("trial", "newtrial"), ("experiment", "newexp")])
def test_the_trial_and_experiment_forms_have_an_input_for_every_spec_field(no_api, kind, prefix):
    layout = rf.form_layout(prefix, kind, None, {})
    found = components(layout)
    generated = _form_inputs(layout, prefix, rf.RUN_FIELDS)
    own = {"model_id": f"{prefix}-model", "corpus": f"{prefix}-corpus", "benchmarks": f"{prefix}-benchmarks",
           "embeddings": f"{prefix}-toggles", "head": f"{prefix}-toggles", "final_norm": f"{prefix}-toggles"}
    assert set(own) == set(rf.OWN_FIELDS) and all(i in found for i in own.values())
    assert generated | set(own) == set(leaf_paths(ExperimentFields))
    for needed in ("eval_mode", "eval_shots", "eval_limit", "warmup_steps", "holdout", "labels", "processes", "strategy"):
        assert needed in generated


# CLI options -> where the form has them (a field path, or the id suffix of a form input), or why not.
CLI_ON_FORMS = {
    "trace": {"model": "@model", "tasks": "@tasks", "perturbation": "@perts", "boundary": "plan_boundary",
              "min_train": "min_train_layers", "device_map": "placement.device_map", "max_memory": "placement.max_memory",
              "attn_implementation": "placement.attn_implementation", "load_in": "placement.load_in"},
    "trial": {"model": "@model", "allocation": "@ranges", "benchmark": "@benchmarks", "corpus": "@corpus",
              "embeddings": "@toggles", "head": "@toggles", "final_norm": "@toggles",
              "device_map": "placement.device_map", "max_memory": "placement.max_memory",
              "attn_implementation": "placement.attn_implementation", "load_in": "placement.load_in"},
}
CLI_ON_FORMS["experiment"] = {**CLI_ON_FORMS["trial"], "allocations": "@allocations"}
CLI_ON_FORMS["experiment"].pop("allocation")
NOT_ON_FORMS = {  # the service decides these, or the model's registration does
    "out_path": "the service keeps each run's result", "out_dir": "the service keeps each run's result",
    "as_json": "output format of the CLI", "offload_folder": "the worker offloads into the job's own folder",
    "revision": "part of the model's hub id when it is registered",
    "trust_remote_code": "set when the model is registered (admin only)",
    "lens_file": "the service reads the translators of the model's fingerprint from its own cache",
}
TRACE_DEVICE = {"device", "dtype"}  # a trace job runs where the worker puts it (POST /traces has no device)


@pytest.mark.parametrize("command", ["trace", "trial", "experiment"])
def test_every_cli_option_is_on_the_form(no_api, command):
    import typer.main

    from layertracer.cli import app

    click_command = typer.main.get_command(app).commands[command]
    params = {p.name for p in click_command.params}
    if command == "trace":
        layout, prefix, fields = nt.layout(), nt.P, nt.FORM_FIELDS
        params -= TRACE_DEVICE
    else:
        prefix = "newtrial" if command == "trial" else "newexp"
        layout, fields = rf.form_layout(prefix, command, None, {}), rf.RUN_FIELDS
    found = components(layout)
    paths = {f.path for f in fields}
    missing = []
    for name in sorted(params):
        if name in NOT_ON_FORMS:
            continue
        target = CLI_ON_FORMS[command].get(name, name)
        if target.startswith("@"):
            present = f"{prefix}-{target[1:]}" in found
        else:
            present = target in paths and sf.input_id(prefix, sf.by_path(fields)[target]) in found
        if not present:
            missing.append(name)
    assert missing == []


# -- clone: a stored spec -> the form -> the same spec ---------------------------------------------

class StoredRuns:
    """An API holding one model, one trace and one trial, each with its job; records what is created."""

    def __init__(self, trace_spec, trial_spec):
        self.model_row = {"id": "m1", "name": "tiny", "source": "/m", "info": {
            "num_layers": 4, "block_parameters": [10, 10, 10, 10], "num_parameters": 60, "embedding_parameters": 10,
            "head_parameters": 10, "final_norm_parameters": 0, "block_kinds": ["attention"] * 4}}
        self.runs = {"t1": {"id": "t1", "name": "base trace", "spec": trace_spec, "model": self.model_row},
                     "x1": {"id": "x1", "kind": "trial", "name": None, "spec": trial_spec, "source_trace_id": "t1",
                            "model": self.model_row}}
        self.jobs = {"j-trace": {"id": "j-trace", "kind": "trace", "resource": {"kind": "trace", "id": "t1"}},
                     "j-trial": {"id": "j-trial", "kind": "experiment", "resource": {"kind": "experiment", "id": "x1"}}}
        self.created = {}

    def models(self):
        return {"data": [self.model_row]}

    def model(self, model_id):
        return self.model_row

    def task_sets(self):
        return {"data": [{"id": "antonyms_en", "name": "antonyms_en", "builtin": True},
                         {"id": "u1", "name": "colours", "builtin": False}]}

    def experiments(self, **_):
        return {"data": []}

    def get(self, path, **_):
        assert path in ("/paths/used", "/paths/registered")
        return {"data": []} if path == "/paths/registered" else {"corpora": [], "benchmarks": []}

    def traces(self, **_):
        return {"data": [{"id": "t1", "model": {"id": "m1"}, "tasks": ["antonyms_en"], "summary": None}]}

    def trace(self, ident):
        return self._run(ident)

    def experiment(self, ident):
        return self._run(ident)

    def trace_overview(self, ident):
        return {"sensitivity": {"mean_js": [0.1, 0.4, 0.2, 0.3]}, "vulnerable_layer": 1,
                "tasks": {"antonyms_en": {"task_particle": 2}}, "freeze_plan": {"train_ranges": "0-1"}}

    def _run(self, ident):
        from frontend.api_client import ApiError

        if ident not in self.runs:
            raise ApiError(f"unknown run {ident!r} (HTTP 404)", 404)
        return self.runs[ident]

    def job(self, ident):
        from frontend.api_client import ApiError

        if ident not in self.jobs:
            raise ApiError(f"unknown job {ident!r} (HTTP 404)", 404)
        return self.jobs[ident]

    def create_trace(self, body):
        self.created["trace"] = body
        return {"id": "t2"}

    def create_trial(self, body):
        self.created["trial"] = body
        return {"id": "x2"}

    def create_experiment(self, body):
        self.created["experiment"] = body
        return {"id": "x3"}


def _values(layout, ids):
    found = components(layout)
    return [found[i].value for i in ids]


@pytest.fixture
def stored(monkeypatch):
    from backend.api.schemas import TraceCreate

    trace_spec = TraceCreate.model_validate({
        "model_id": "m1", "task_sets": ["antonyms_en", "colours"], "perturbations": ["skip", "mask:keep=0.3"],
        "name": "base trace", "options": {"limit": 12, "shots": 1, "top_k": 7, "seed": 5, "particle_floor": 0.2,
                                          "plan_boundary": "min", "similarity": False, "position_prompt": 2},
        "placement": {"attn_implementation": "eager"}}).model_dump()
    trial_spec = ExperimentJobSpec.model_validate({
        "kind": "trial", "model_id": "m1", "corpus": "/roots/corpus.txt", "allocations": ["0-1,3"],
        "benchmarks": ["ceval:/roots/old", "cmmlu:/roots/new"], "seeds": [4, 9], "steps": 12, "warmup_steps": 2,
        "eval_mode": "cloze", "eval_shots": 0, "eval_limit": 30, "holdout": 0.1, "labels": {"0-1,3": "my plan"},
        "trace_tasks": "antonyms_en", "trace_perturbations": ["skip", "mask:keep=0.5,draws=2"], "autocast": "off",
        "head": True, "embeddings": False, "final_norm": False, "name": "plan trial",
        "placement": {"attn_implementation": "sdpa"}}).model_dump()
    api = StoredRuns(trace_spec, trial_spec)
    monkeypatch.setattr("frontend.pages.new_trace.client", lambda *a, **k: api)
    monkeypatch.setattr(rf, "client", lambda *a, **k: api)
    return api


@pytest.mark.parametrize("ident", ["j-trace", "t1"])
def test_cloning_a_trace_fills_the_form_with_its_spec(stored, ident):
    from backend.api.schemas import TraceCreate

    layout = nt.layout(clone=ident)
    assert "Every field is that of trace base trace" in text_of(layout)
    ids = [f"{nt.P}-{k}" for k in ("model", "tasks", "perts", "keep", "scale", "name")]
    fixed = _values(layout, ids)
    generated = _values(layout, [sf.input_id(nt.P, f) for f in nt.FORM_FIELDS])
    box, go, *marks = nt.submit(1, *fixed, None, *generated)
    assert go == "/traces/t2", text_of(box)
    sent = TraceCreate.model_validate(stored.created["trace"]).model_dump()
    expected = dict(stored.runs["t1"]["spec"], task_sets=["antonyms_en", "u1"])  # the upload by its id, as the form sends it
    assert sent == expected


@pytest.mark.parametrize("ident", ["j-trial", "x1"])
def test_cloning_a_trial_fills_the_form_with_its_spec(stored, ident):
    layout = rf.form_layout("newtrial", "trial", None, {"clone": ident})
    assert "Every field is that of trial" in text_of(layout)
    found = components(layout)
    assert found["newtrial-ranges"].value == "0-1,3" and found["newtrial-trace"].value == "t1"
    fixed = [found["newtrial-model"].value, found["newtrial-info"].data, found["newtrial-ranges"].value,
             found["newtrial-toggles"].value]
    rest = [found["newtrial-corpus"].value, found["newtrial-benchmarks"].value, None, found["newtrial-trace"].value]
    generated = _values(layout, [sf.input_id("newtrial", f) for f in rf.RUN_FIELDS])
    box, go, *marks = rf.make_submit("trial")(1, *fixed, None, *rest, *generated)
    assert go == "/experiments/x2", text_of(box)
    body = dict(stored.created["trial"])
    assert body.pop("source_trace_id") == "t1"  # the lineage goes on
    allocation = body.pop("allocation")
    resent = ExperimentJobSpec.model_validate({**body, "kind": "trial", "allocations": [allocation]}).model_dump()
    assert resent == stored.runs["x1"]["spec"]


def test_cloning_a_run_that_is_not_there_says_so(stored):
    layout = nt.layout(clone="nope")
    assert "Run nope could not be cloned" in text_of(layout) and "unknown run 'nope'" in text_of(layout)
    layout = rf.form_layout("newtrial", "trial", None, {"clone": "j-trace"})  # a trace's job into the trial form
    assert "is a trace job, not a experiment's" in text_of(layout)


# -- corpus and benchmark paths: checked and browsed through the API --------------------------------

@pytest.fixture
def paths_api(tmp_path):
    """The frontend's API client calls answered by the real API (create_app over a SQLite database)
    with one allowed root holding a corpus and a benchmark folder."""
    from fastapi.testclient import TestClient

    from backend.api import create_app
    from backend.settings import Settings
    from frontend.api_client import ApiError

    root = tmp_path / "root"
    (root / "bench" / "ceval" / "dev").mkdir(parents=True)
    (root / "corpus.txt").write_text("x" * 2500)
    (tmp_path / "outside.txt").write_text("no")
    app = create_app(Settings(data_dir=tmp_path / "data", model_roots=[root]))
    http = TestClient(app, base_url="http://127.0.0.1:8000")

    class Api:
        def request(self, method, path, params=None):
            response = http.request(method, "/api/v1" + path, params={k: v for k, v in (params or {}).items() if v})
            if response.status_code != 200:
                raise ApiError(f"{response.json()['detail']} (HTTP {response.status_code})", response.status_code)
            return response.json()

    yield Api(), root.resolve()
    http.close()
    app.state.engine.dispose()


def test_the_corpus_and_benchmark_checks_say_what_the_server_has(paths_api):
    from frontend import server_paths as sp

    api, root = paths_api
    assert sp.check_corpus(api, str(root / "corpus.txt")) == f"✓ {root / 'corpus.txt'}: a file (2.5 kB)"
    assert sp.check_corpus(api, str(root / "missing.txt")) == f"✗ corpus {str(root / 'missing.txt')!r} does not exist"
    outside = str(root.parent / "outside.txt")
    assert sp.check_corpus(api, outside) == f"✗ corpus {outside!r} is outside the allowed roots (HTTP 400)"
    assert sp.check_corpus(api, " ") == ""
    lines = sp.check_benchmarks(api, f"ceval:{root / 'bench' / 'ceval'}, cmmlu:{root / 'corpus.txt'}, lm-eval:arc_easy")
    assert lines.splitlines() == [f"✓ ceval: {root / 'bench' / 'ceval'}: a folder of 1 entries",
                                  f"✗ cmmlu: benchmark folder {str(root / 'corpus.txt')!r} is not a folder"]


def test_browsing_the_roots_opens_folders_and_fills_the_fields(paths_api, monkeypatch):
    from frontend import server_paths as sp

    api, root = paths_api
    monkeypatch.setattr(sp, "client", lambda *a, **k: api)

    def browse(trigger, *args):
        from contextvars import copy_context

        from dash._callback_context import context_value
        from dash._utils import AttributeDict

        def call():
            context_value.set(AttributeDict(triggered_inputs=[{"prop_id": f"{trigger}.n_clicks", "value": 1}]))
            return sp.browse(*args) if trigger.startswith("p-browse") else sp.use(*args)

        return copy_context().run(call)

    options, value, where, folder = browse("p-browse", None, None, "", None)
    assert [o["value"] for o in options] == [str(root)] and folder == "" and where == "1 entries the allowed roots"
    options, value, where, folder = browse("p-browse", str(root), None, "", None)
    assert folder == str(root) and [o["label"] for o in options] == ["bench/", "corpus.txt (2.5 kB)"]
    options, _, _, folder = browse("p-browse", str(root / "bench" / "ceval"), None, folder, None)
    assert folder == str(root / "bench" / "ceval") and [o["label"] for o in options] == ["dev/"]
    _, _, _, up = browse("p-browse-up", None, 1, folder, None)
    assert up == str(root / "bench")
    # the folder shown goes into the benchmarks; a chosen file into the corpus
    corpus, benches = browse("p-use-ceval", None, 1, None, None, None, str(root / "bench" / "ceval"), "cmmlu:/x")
    assert (corpus, benches) == (dash.no_update, f"cmmlu:/x, ceval:{root / 'bench' / 'ceval'}")
    corpus, benches = browse("p-use-corpus", 1, None, None, None, str(root / "corpus.txt"), str(root), "")
    assert (corpus, benches) == (str(root / "corpus.txt"), dash.no_update)
    # "used before": a corpus into its field, a benchmark added once
    corpus, benches = browse("p-used", None, None, None, "corpus::/r/c.txt", None, "", "")
    assert (corpus, benches) == ("/r/c.txt", dash.no_update)
    corpus, benches = browse("p-used", None, None, None, "benchmark::ceval:/r/b", None, "", "ceval:/r/b")
    assert (corpus, benches) == (dash.no_update, "ceval:/r/b")


def test_used_before_offers_what_earlier_runs_used(monkeypatch):
    from frontend import server_paths as sp

    class Api:
        def get(self, path):
            if path == "/paths/registered":
                return {"data": []}
            assert path == "/paths/used"
            return {"corpora": [{"kind": "corpus", "path": "/r/c.txt", "exists": True},
                                {"kind": "corpus", "path": "/r/old.txt", "exists": False}],
                    "benchmarks": [{"kind": "ceval", "path": "/r/b", "exists": True},
                                   {"kind": "lm-eval", "path": "arc_easy", "exists": None}]}

    assert sp.used_options(Api()) == [
        {"label": "corpus · /r/c.txt", "value": "corpus::/r/c.txt", "disabled": False},
        {"label": "corpus · /r/old.txt (no longer there)", "value": "corpus::/r/old.txt", "disabled": True},
        {"label": "ceval · /r/b", "value": "benchmark::ceval:/r/b", "disabled": False},
        {"label": "lm-eval · arc_easy", "value": "benchmark::lm-eval:arc_easy", "disabled": False}]


def test_registered_corpora_and_benchmarks_come_first_by_name():
    """Registered entries (GET /paths/registered) lead, by their names; a path both registered and used
    before is offered once, under its name."""
    from frontend import server_paths as sp

    class Api:
        def get(self, path):
            if path == "/paths/registered":
                return {"data": [{"id": "1", "kind": "corpus", "name": "web-zh", "path": "/r/c.txt", "exists": True},
                                 {"id": "2", "kind": "cmmlu", "name": "CMMLU dev", "path": "/r/cm", "exists": False}]}
            return {"corpora": [{"kind": "corpus", "path": "/r/c.txt", "exists": True},
                                {"kind": "corpus", "path": "/r/other.txt", "exists": True}],
                    "benchmarks": [{"kind": "cmmlu", "path": "/r/cm", "exists": False}]}

    assert sp.used_options(Api()) == [
        {"label": "web-zh · corpus · /r/c.txt", "value": "corpus::/r/c.txt", "disabled": False},
        {"label": "CMMLU dev · cmmlu · /r/cm (no longer there)", "value": "benchmark::cmmlu:/r/cm", "disabled": True},
        {"label": "corpus · /r/other.txt", "value": "corpus::/r/other.txt", "disabled": False}]


def test_the_register_button_registers_the_fields_under_a_name(monkeypatch):
    """Register: the corpus and each benchmark of the fields POSTed under the name; the dropdown then
    offers them; a refusal of the API is its one line, and nothing is sent without a name."""
    from frontend import server_paths as sp
    from frontend.api_client import ApiError

    class Api:
        def __init__(self):
            self.posted, self.registered = [], []

        def post(self, path, body):
            assert path == "/paths/registered"
            if body["path"] == "/outside":
                raise ApiError("corpus '/outside' is outside the allowed roots", 400)
            self.posted.append(body)
            self.registered.append({"id": str(len(self.posted)), "exists": True, **body})
            return self.registered[-1]

        def get(self, path):
            return {"data": self.registered} if path == "/paths/registered" else {"corpora": [], "benchmarks": []}

    api = Api()
    monkeypatch.setattr(sp, "client", lambda token: api)
    assert sp.register_paths(1, "  ", "/r/c.txt", "", "t") == (dash.no_update, "give a name first")
    assert sp.register_paths(1, "x", "", "", "t")[1].startswith("nothing to register")
    options, status = sp.register_paths(1, "zh web", "/r/c.txt", "cmmlu:/r/cm, lm-eval:arc_easy", "t")
    assert api.posted == [{"kind": "corpus", "name": "zh web", "path": "/r/c.txt"},
                          {"kind": "cmmlu", "name": "zh web", "path": "/r/cm"},
                          {"kind": "lm-eval", "name": "zh web", "path": "arc_easy"}]
    assert status == "registered as 'zh web': corpus, cmmlu, lm-eval"
    assert [o["value"] for o in options] == ["corpus::/r/c.txt", "benchmark::cmmlu:/r/cm", "benchmark::lm-eval:arc_easy"]
    assert sp.register_paths(1, "bad", "/outside", "", "t")[1] == \
        "corpus /outside: corpus '/outside' is outside the allowed roots"


def test_a_trace_whose_perturbations_the_form_cannot_hold_says_so(stored):
    stored.runs["t1"]["spec"]["perturbations"] = ["skip", "mask:keep=0.3,draws=5"]
    text = text_of(nt.layout(clone="t1"))
    assert "cannot hold every perturbation" in text and "will be sent as skip, mask:keep=0.3" in text
    stored.runs["t1"]["spec"]["perturbations"] = ["skip", "mask:keep=0.3"]
    assert "cannot hold" not in text_of(nt.layout(clone="t1"))


def test_cloning_an_experiment_fills_the_form_with_its_spec(stored):
    """Several allocations, full among them, and a toggle left to each allocation's default: submitted
    unchanged, the same spec."""
    spec = ExperimentJobSpec.model_validate({
        "kind": "experiment", "model_id": "m1", "corpus": "/roots/corpus.txt",
        "allocations": ["train-shallow", "0,2", "full"], "seeds": [1, 2, 3], "steps": 7, "processes": 2,
        "strategy": "fsdp", "eval_mode": "answer-only", "head": True, "labels": {"0,2": "even"},
        "placement": {}}).model_dump()
    stored.runs["x2"] = {"id": "x2", "kind": "experiment", "name": "grid", "spec": spec, "source_trace_id": None,
                         "model": stored.model_row}
    layout = rf.form_layout("newexp", "experiment", None, {"clone": "x2"})
    found = components(layout)
    assert found["newexp-allocations"].value == "train-shallow\n0,2\nfull" and found["newexp-toggles"].value == ["head"]
    fixed = [found["newexp-model"].value, found["newexp-info"].data, found["newexp-ranges"].value,
             found["newexp-toggles"].value, found["newexp-allocations"].value]
    rest = [found["newexp-corpus"].value, found["newexp-benchmarks"].value, None, found["newexp-trace"].value]
    generated = _values(layout, [sf.input_id("newexp", f) for f in rf.RUN_FIELDS])
    box, go, *marks = rf.make_submit("experiment")(1, *fixed, *rest, *generated)
    assert go == "/experiments/x3", text_of(box)
    body = dict(stored.created["experiment"])
    assert "source_trace_id" not in body
    resent = ExperimentJobSpec.model_validate({**body, "kind": "experiment"}).model_dump()
    assert resent == spec


def test_fields_can_be_given_in_the_url(no_api):
    trace = components(nt.layout(top_k="5", plan_boundary="min", similarity="0", draws="many", lens="bogus"))
    assert (trace[f"{nt.P}-top_k"].value, trace[f"{nt.P}-plan_boundary"].value, trace[f"{nt.P}-similarity"].value) == \
        (5, "min", [])
    # a value that cannot be one keeps the spec's default
    assert trace[f"{nt.P}-draws"].value == TraceOptionsSpec().draws and trace[f"{nt.P}-lens"].value == TraceOptionsSpec().lens
    trial = components(rf.form_layout("newtrial", "trial", None, {"steps": "5", "eval_mode": "cloze", "lr": "3e-4",
                                                                  "seeds": "4, 5"}))
    assert (trial["newtrial-steps"].value, trial["newtrial-eval_mode"].value, trial["newtrial-lr"].value,
            trial["newtrial-seeds"].value) == (5, "cloze", 3e-4, "4, 5")
