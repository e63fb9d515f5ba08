"""Contracts that cannot drift: for every number a user sets on a trace, the New trace form, the API,
the engine and the CLI accept and refuse the same values (hypothesis draws them around and far from
each bound). The bounds themselves are declared once, in ``layertracer/spec/trace_options.py``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from layertracer.spec.fields import number_bounds
from layertracer.spec.trace_options import ENGINE_FIELDS, TraceOptionsSpec

FORM_FIELDS = ("limit", "batch_size", "top_k", "seed", "draws", "shots", "position_prompt")
CLI_FLAGS = {"limit": "--limit", "batch_size": "--batch-size", "top_k": "--top-k", "seed": "--seed",
             "draws": "--draws", "shots": "--shots", "position_prompt": "--position-prompt"}


def _values(name: str):
    bounds = number_bounds(TraceOptionsSpec, name)
    near = [b + d for b in (bounds.low, bounds.high) if b is not None for d in (-2, -1, 0, 1, 2)]
    return st.one_of(st.sampled_from(near), st.integers(min_value=-10**12, max_value=10**12))


def api_accepts(name: str, value: int) -> bool:
    from backend.api.schemas import TraceCreate

    try:
        TraceCreate.model_validate({"model_id": "m", "task_sets": ["antonyms_en"], "options": {name: value}})
        return True
    except ValidationError:
        return False


def form_accepts(name: str, value: int) -> bool:
    from frontend.pages import new_trace as page

    numbers = {key: default for key, _, default, *_ in page.NUMBER_FIELDS}
    numbers[name] = value
    body, errors = page.validate("m", ["antonyms_en"], ["skip"], 0.5, 1.0, numbers)
    return not errors and body["options"][name] == value


def engine_accepts(name: str, value: int) -> bool:
    from layertracer.errors import LayerTracerError
    from layertracer.tracer import TraceOptions

    try:
        TraceOptions(**{name: value})
        return True
    except LayerTracerError:
        return False


def cli_accepts(cli, tmp_path, name: str, value: int) -> bool:
    """Past option parsing: the command then stops at the missing model (one error line, exit 2)."""
    code, _, err = cli("trace", "--model", str(tmp_path / "no-model"), "--tasks", "antonyms_en",
                       "--out", str(tmp_path / "o.json"), CLI_FLAGS[name], str(value))
    assert code == 2
    return "does not exist" in err


@pytest.mark.parametrize("name", FORM_FIELDS)
def test_form_api_engine_and_cli_agree(name, cli, tmp_path):
    @given(value=_values(name))
    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def agree(value):
        verdicts = {"api": api_accepts(name, value), "form": form_accepts(name, value),
                    "cli": cli_accepts(cli, tmp_path, name, value)}
        if name in ENGINE_FIELDS:
            verdicts["engine"] = engine_accepts(name, value)
        assert len(set(verdicts.values())) == 1, (name, value, verdicts)
        assert verdicts["api"] == number_bounds(TraceOptionsSpec, name).admits(value)

    agree()


def test_the_form_shows_the_spec_bounds_and_leaves_the_judging_to_the_spec():
    """The inputs show the spec's bounds and defaults and set no limits of their own: Dash sends None
    for a number outside an input's min/max, which the form would read as "no number" (a top-k of 1000
    said "give a number"); without them the spec judges what was typed and says why."""
    from dash_tree import text_of
    from frontend.pages import new_trace as page

    layout = page.layout()
    inputs, walk_parent = {}, {}

    def walk(node, parent=None):
        if getattr(node, "id", None) and str(node.id).startswith(f"{page.P}-"):
            inputs[str(node.id)[len(page.P) + 1:]] = node
            walk_parent[str(node.id)[len(page.P) + 1:]] = parent
        children = getattr(node, "children", None)
        for child in children if isinstance(children, (list, tuple)) else [children] if children is not None else []:
            walk(child, node)

    walk(layout)
    for name in FORM_FIELDS:
        bounds = number_bounds(TraceOptionsSpec, name)
        assert (getattr(inputs[name], "min", None), getattr(inputs[name], "max", None)) == (None, None), name
        assert inputs[name].value == bounds.default
        help_text = text_of(walk_parent[name])
        assert f"≥ {bounds.low:,}" in help_text and f"≤ {bounds.high:,}" in help_text, (name, help_text)


def _perturbation_texts():
    kinds = st.sampled_from(["skip", "zero-attn", "zero-mlp", "noise", "mask", "wobble", ""])
    option = st.tuples(st.sampled_from(["scale", "keep", "draws", "bogus"]),
                       st.one_of(st.sampled_from(["0", "1", "-1", "0.5", "100", "101", "2.5", "nan", "x", ""]),
                                 st.floats(allow_nan=False, width=32).map(lambda f: f"{f:g}")))
    return st.tuples(kinds, st.lists(option, max_size=3), st.sampled_from([",", ";"])).map(
        lambda t: t[0] + (":" + t[2].join(f"{k}={v}" for k, v in t[1]) if t[1] else ""))


@given(text=_perturbation_texts())
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_and_engine_parse_perturbations_alike(text):
    from backend.api.schemas import check_perturbation
    from layertracer.errors import LayerTracerError
    from layertracer.perturbation import Perturbation

    try:
        check_perturbation(text)
        api = True
    except ValueError:
        api = False
    try:
        Perturbation.parse(text)
        engine = True
    except LayerTracerError:
        engine = False
    assert api == engine, text


@pytest.mark.parametrize("kind, name", [("mask", "keep"), ("noise", "scale")])
def test_form_and_api_agree_on_the_perturbation_fields(kind, name, cli, tmp_path):
    from backend.api.schemas import check_perturbation
    from frontend.pages import new_trace as page

    numbers = {key: default for key, _, default, *_ in page.NUMBER_FIELDS}

    @given(value=st.one_of(st.sampled_from([-0.01, 0.0, 0.5, 1.0, 1.01, 100.0, 100.5]),
                           st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)))
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def agree(value):
        keep, scale = (value, 1.0) if kind == "mask" else (0.5, value)
        body, errors = page.validate("m", ["antonyms_en"], [kind], keep, scale, numbers)
        try:
            check_perturbation(f"{kind}:{name}={value!r}")
            api = True
        except ValueError:
            api = False
        assert (not errors) == api, (kind, value, errors)
        if api:
            check_perturbation(body["perturbations"][0])  # what the form sends, the API takes

    agree()


TRAINING_FORM = {"steps": "Steps", "lr": "Learning rate", "batch_size": "Batch size", "block_size": "Block size"}
TRAINING_CLI = {"steps": "--steps", "lr": "--lr", "batch_size": "--batch-size", "block_size": "--block-size"}


def _training_values(name: str):
    from layertracer.spec.training import TrainingOptionsSpec

    bounds = number_bounds(TrainingOptionsSpec, name)
    if bounds.integer:
        near = [b + d for b in (bounds.low, bounds.high) for d in (-1, 0, 1)]
        return st.one_of(st.sampled_from(near), st.integers(min_value=-10**9, max_value=10**9))
    near = [bounds.low - 1e-9, bounds.low, bounds.low + 1e-9, bounds.high, bounds.high + 1e-9]
    return st.one_of(st.sampled_from(near), st.floats(min_value=-10.0, max_value=10.0, allow_nan=False))


@pytest.mark.parametrize("name", list(TRAINING_FORM))
def test_trial_form_api_engine_and_cli_agree(name, cli, tmp_path):
    from backend.api.schemas import TrialCreate
    from frontend.run_form import validate as validate_form
    from layertracer.errors import LayerTracerError
    from layertracer.experiments.spec import ExperimentSpec
    from layertracer.spec.training import TrainingOptionsSpec

    base = {"steps": 10, "lr": 1e-4, "batch_size": 4, "block_size": 64}

    @given(value=_training_values(name))
    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def agree(value):
        numbers = {**base, name: value}
        try:
            TrialCreate.model_validate({"model_id": "m", "corpus": "c", "allocation": "full", **numbers})
            api = True
        except ValidationError:
            api = False
        body, errors = validate_form("trial", model="m", info={"num_layers": 4}, toggles=[],
                                     allocations=["full"], corpus="c", benchmarks="", seeds="1", trace_tasks="",
                                     **numbers)
        form = not errors
        try:
            ExperimentSpec(model="m", corpus="c", allocations=["full"], **numbers).validate()
            engine = True
        except LayerTracerError:
            engine = False
        code, _, err = cli("trial", "--model", str(tmp_path / "no-model"), "--corpus", "c", "-a", "full",
                           "--out", str(tmp_path / "out"), TRAINING_CLI[name], repr(value))
        # refused as a usage error (typer's range) or by the spec's check, before the model is looked for
        command_line = "Invalid value" not in err and "experiment option" not in err
        verdicts = {"api": api, "form": form, "engine": engine, "cli": command_line}
        assert len(set(verdicts.values())) == 1, (name, value, verdicts, errors)
        assert api == number_bounds(TrainingOptionsSpec, name).admits(value)

    agree()


def _allocation_texts():
    number = st.one_of(st.integers(min_value=0, max_value=9), st.sampled_from([12, 100_000, 100_001]))
    part = st.one_of(number.map(str), st.tuples(number, number).map(lambda t: f"{t[0]}-{t[1]}"),
                     st.sampled_from(["a", "-1", "1-", "", " 2 - 3 "]))
    ranges = st.lists(part, min_size=1, max_size=4).map(",".join)
    return st.one_of(ranges, st.sampled_from(["train-shallow", "train-deep", "full", "from-trace",
                                              "from-trace:", "from-trace:/t.json", "shallow", "", "0" * 151]))


@given(text=_allocation_texts())
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_form_api_and_engine_read_allocations_alike(text):
    """One grammar (layertracer/spec/allocations.py): the trial form, the API and the engine's resolver
    accept and refuse the same allocation texts for a model of 10 blocks (a from-trace file aside,
    which only the engine opens)."""
    from backend.api.schemas import TrialCreate
    from frontend.run_form import validate as validate_form
    from layertracer.errors import LayerTracerError
    from layertracer.spec.allocations import is_from_trace
    from layertracer.spec.ranges import RangeError, parse_ranges

    try:
        TrialCreate.model_validate({"model_id": "m", "corpus": "c", "allocation": text, "trace_tasks": "antonyms_en"})
        api = True
    except ValidationError:
        api = False
    _, errors = validate_form("trial", model="m", info={"num_layers": 10}, toggles=[], allocations=[text],
                              corpus="c", benchmarks="", seeds="1", trace_tasks="antonyms_en", steps=10, lr=1e-4,
                              batch_size=4, block_size=64)
    form = not errors
    engine_syntax = True
    try:
        from layertracer.spec.allocations import check_allocation

        checked = check_allocation(text)
    except LayerTracerError:
        engine_syntax = False
    assert api == engine_syntax, text
    if not text.strip():
        assert not api and not form  # nothing chosen
        return
    if engine_syntax and not is_from_trace(checked) and checked not in ("train-shallow", "train-deep", "full"):
        try:
            parse_ranges(checked, 10)
            fits = True
        except RangeError:
            fits = False
        assert form == fits, (text, errors)  # the form also knows the depth
    else:
        assert form == engine_syntax, (text, errors)


@given(text=st.one_of(
    st.tuples(st.sampled_from(["ceval", "cmmlu", "CMMLU", "mmlu", "", "ceval ", "lm-eval", "lm_eval"]),
              st.sampled_from([":", "", "::"]),
              st.sampled_from(["/data/x", "", " ", "x y", "arc_easy", "mmlu-pro", "/data/task.yaml", "a/b"])).map("".join),
    st.text(max_size=12)))
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_form_api_and_engine_read_benchmark_specs_alike(text):
    from backend.api.schemas import TrialCreate
    from frontend.run_form import validate as validate_form
    from layertracer.evaluation.benchmarks import LAYOUTS
    from layertracer.spec.benchmarks import BENCHMARK_KINDS, FOLDER_KINDS, split_benchmark

    assert tuple(LAYOUTS) == FOLDER_KINDS  # the engine's layouts are the spec's folder kinds
    if "," in text or "\n" in text or not text.strip():
        return  # the form splits its field on commas and lines: one spec per entry
    try:
        TrialCreate.model_validate({"model_id": "m", "corpus": "c", "allocation": "full", "benchmarks": [text]})
        api = True
    except ValidationError:
        api = False
    _, errors = validate_form("trial", model="m", info={"num_layers": 4}, toggles=[], allocations=["full"],
                              corpus="c", benchmarks=text, seeds="1", trace_tasks="", steps=10, lr=1e-4,
                              batch_size=4, block_size=64)
    assert api == (not errors), (text, errors)
    if api:
        kind, folder = split_benchmark(text)
        assert kind in BENCHMARK_KINDS and folder.strip()  # and the engine reads the same kind and folder


@given(device_map=st.sampled_from([None, "", "auto", "balanced", "sequential", "everywhere", "/tmp/map.json"]),
       max_memory=st.one_of(st.none(), st.sampled_from(["", "0=70GiB,cpu=200GiB", "cpu=120KB", "lots", "0=70", "x=1GB",
                                                         "cpu=1GB,cpu=2GB", " disk=10GiB "]),
                            st.text(alphabet="0123456789=,cpuGiBMK.", max_size=14)),
       attn=st.sampled_from([None, "sdpa", "eager", "flash_attention_2", "fast"]),
       load_in=st.sampled_from([None, "8bit", "4bit", "2bit"]))
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_the_trace_form_and_the_api_agree_on_placement(device_map, max_memory, attn, load_in):
    """The placement of a big model (layertracer/spec/loading.py PlacementSpec): what the New trace form
    accepts, the API accepts, and what it sends is what the worker gets."""
    from backend.api.schemas import TraceCreate
    from frontend.pages import new_trace as page
    from layertracer.spec.jobs import TraceJobSpec

    numbers = {key: default for key, _, default, *_ in page.NUMBER_FIELDS}
    placement = {"device_map": device_map, "max_memory": max_memory, "attn_implementation": attn, "load_in": load_in}
    body, errors = page.validate("m", ["antonyms_en"], ["skip"], 0.5, 1.0, numbers, None, placement)
    api_body = {"model_id": "m", "task_sets": ["antonyms_en"],
                "placement": {k: v for k, v in placement.items() if v not in (None, "")}}
    try:
        sent = TraceCreate.model_validate(api_body).placement
        api = True
    except ValidationError:
        api = False
    assert (not errors) == api, (placement, errors)
    if api:
        assert TraceCreate.model_validate(body).placement == sent
        job = TraceJobSpec(model_id="m", tasks=["antonyms_en"], placement=sent)
        assert TraceJobSpec.model_validate(job.model_dump()).placement == sent
