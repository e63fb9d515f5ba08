"""Callbacks and page builders as plain functions (no browser, no server)."""

from __future__ import annotations

import csv
import io
from contextvars import copy_context

import dash
import pytest
from dash_tree import find, text_of
from dash._callback_context import context_value
from dash._utils import AttributeDict

from frontend import components as c
from frontend import run_form as rf
from frontend.api_client import ApiClient, ApiError


def run_with_trigger(func, prop_id: str, *args):
    """Call a callback that reads ``dash.ctx`` as Dash would after ``prop_id`` changed."""
    def call():
        context_value.set(AttributeDict(triggered_inputs=[{"prop_id": prop_id, "value": 1}]))
        return func(*args)

    return copy_context().run(call)


# -- the app --------------------------------------------------------------------------------------------

def test_create_dash_registers_every_page_and_callback(dash_app):
    paths = {p["path_template"] or p["path"] for p in dash.page_registry.values()}
    assert {"/", "/traces/<trace_id>", "/experiments/<experiment_id>", "/compare", "/new/trace", "/new/trial",
            "/new/experiment"} <= paths
    assert isinstance(dash_app, dash.Dash)
    assert dash_app.layertracer_api_url == "http://127.0.0.1:9"
    outputs = " ".join(dash_app.callback_map)
    for output in ("trace-body.children", "trace-url.search", "newtrial-ranges.value", "runs-table.children",
                   "exp-status.children", "newtrace-errors.children"):
        assert output in outputs


def test_the_app_serves_its_shell_and_routes_every_page(dash_app):
    http = dash_app.server.test_client()
    response = http.get("/")
    assert response.status_code == 200 and b"LayerTracer" in response.data
    for page in dash.page_registry.values():
        assert callable(page["layout"]), page["module"]
    # The pages router: what the browser asks for when it opens /compare.
    body = {"output": ".._pages_content.children..._pages_store.data..",
            "outputs": [{"id": "_pages_content", "property": "children"}, {"id": "_pages_store", "property": "data"}],
            "inputs": [{"id": "_pages_location", "property": "pathname", "value": "/new/trial"},
                       {"id": "_pages_location", "property": "search", "value": "?ranges=0-1"}],
            "state": [{"id": "auth-token", "property": "data", "value": None}],
            "changedPropIds": ["_pages_location.pathname"]}
    response = http.post("/_dash-update-component", json=body)
    assert response.status_code == 200, response.data[:500]
    assert b"New trial" in response.data and b"0-1" in response.data
    assert b"could not be reached" in response.data  # the API is down: said plainly
    body["inputs"][0]["value"], body["inputs"][1]["value"] = "/no/such/page", ""
    response = http.post("/_dash-update-component", json=body)
    assert response.status_code == 200 and b"Page not found" in response.data


def test_a_second_app_in_the_same_process_gets_the_callbacks_too(dash_app):
    from frontend.app import create_dash

    other = create_dash(api_url="http://127.0.0.1:10/", requests_pathname_prefix="/")
    def ours(app):  # the pages router adds its own callbacks on an app's first request
        return {k for k in app.callback_map if "_pages" not in k}

    assert ours(other) == ours(dash_app) and len(ours(other)) > 20
    assert other.layertracer_api_url == "http://127.0.0.1:10"


def test_the_token_store():
    from frontend.app import save_token

    assert save_token("  abc ")[0] == "abc"
    assert save_token("")[0] is None


# -- URL state ------------------------------------------------------------------------------------------

def test_view_state_round_trips_through_the_query(trace_result):
    from frontend.pages import trace as page

    L = trace_result["num_layers"]
    view = page.view_from_query(trace_result, {"task": "plural_en", "metric": "entropy", "pert": "skip",
                                               "layers": "1-2", "norm": "1"})
    assert view == {"task": "plural_en", "metric": "entropy", "pert": ["skip"], "layers": [1, 2], "norm": True}
    search = page.view_search(view["task"], view["metric"], view["pert"], view["layers"], ["norm"], L,
                              list(trace_result["sensitivities"]), "tok")
    assert page.view_from_query(trace_result, c.parse_search(search)) == view
    assert c.parse_search(search)["share"] == "tok"
    default = page.view_from_query(trace_result, {"task": "nope", "metric": "bad", "layers": "x"})
    assert default["task"] == list(trace_result["tasks"])[0] and default["metric"] == "prob"
    assert default["layers"] == [0, L - 1] and default["pert"] == list(trace_result["sensitivities"])
    assert page.view_search(default["task"], "prob", default["pert"], default["layers"], [], L,
                            default["pert"], None) == f"?task={default['task']}"


def test_query_helpers():
    assert c.build_search({"a": 1, "b": None, "c": "", "d": True, "e": False, "f": ["x", "y"]}) == "?a=1&d=1&f=x,y"
    assert c.parse_search("?a=1&a=2&b=") == {"a": "2"}
    assert c.parse_window("9-3", 8) == [3, 7]
    assert c.parse_window("junk", 8) is None
    assert c.share_link("http://h:8000/traces/x?task=a", "/traces/x", "?task=a", "S") == "http://h:8000/traces/x?task=a&share=S"


# -- trace page -----------------------------------------------------------------------------------------

def test_trace_figures_view_has_every_figure_and_the_launch_link(trace_result):
    from frontend.pages import trace as page

    meta = {"id": "t1", "status": "succeeded", "model": {"id": "m1", "name": "tiny"}}
    view = page.view_from_query(trace_result, {"task": "plural_en", "norm": "1"})
    body = dash.html.Div([page.header(meta)] + page.figures_view(meta, trace_result, view))
    assert find(body, "trace-share-btn") is not None and find(body, "trace-share-url") is not None
    assert find(body, "trace-compare").href == "/compare?traces=t1"
    for gid in ("trace-plan", "trace-tasks", "trace-prompts", "trace-stability", "trace-position", "trace-similarity"):
        graph = find(body, gid)
        assert graph is not None and graph.figure.data, gid
        assert graph.config["toImageButtonOptions"]["format"] == "png"
    assert find(body, "trace-task").value == "plural_en"
    assert find(body, "trace-norm").value == ["norm"]
    launch = find(body, "trace-launch")
    plan = trace_result["freeze_plan"]
    params = c.parse_search("?" + launch.href.split("?", 1)[1])
    assert launch.href.startswith("/new/trial?")
    assert params == {"model": "m1", "ranges": plan["train_ranges"], "trace": "t1"}
    assert "Task particle" in text_of(find(body, "trace-legend"))
    assert plan["reasons"][0] in text_of(body)
    prov = text_of(find(body, "trace-provenance"))
    assert trace_result["model"]["fingerprint"] in prov and trace_result["version"] in prov
    # Counts are not shown as seconds; a trace done in one go says so.
    assert "resumed_prompts" not in prov and "oom_batch_splits" not in prov and "no (traced in one go)" in prov
    resumed = {**trace_result, "timings": {**trace_result["timings"], "resumed_prompts": 12.0}}
    assert "12 prompts came from the checkpoint" in text_of(page.provenance({}, resumed))


def test_trace_export_gives_csv_and_json(trace_result):
    from frontend.pages import trace as page

    out = page.export(trace_result, "stability", "csv", task=None, metric="prob", trace_id="t1")
    assert out["filename"] == "trace-t1-stability.csv"
    rows = list(csv.DictReader(io.StringIO(out["content"])))
    assert float(rows[0]["mean_js_nats"]) == pytest.approx(trace_result["sensitivities"][rows[0]["perturbation"]]["mean_js"][0])
    out = page.export(trace_result, "prompts", "json", task="plural_en", metric="prob", trace_id="t1")
    assert out["filename"] == "trace-t1-prompts-plural_en.json" and '"plural_en"' in out["content"]


def test_pending_and_failed_traces_say_so():
    from frontend.pages import trace as page

    running = page.body_for({"id": "t", "status": "running", "job": {"id": "j", "status": "running",
                             "progress": {"stage": "lens", "done": 3, "total": 12, "percent": 25.0, "eta_seconds": 40}}},
                            {}, None, None)
    text = " ".join(text_of(x) for x in running)
    assert "lens" in text and "25% (3/12)" in text
    assert "left" not in text  # one poll measures no pace: the time left comes from the rate across polls
    failed = page.body_for({"id": "t", "status": "failed", "job": {"id": "j", "status": "failed", "error": "CUDA out of memory"}},
                           {}, None, None)
    assert "CUDA out of memory" in " ".join(text_of(x) for x in failed)


def test_an_unreachable_api_gives_a_message_not_a_blank_page():
    from frontend.pages import trace as page

    with pytest.raises(ApiError) as info:
        ApiClient("http://127.0.0.1:9").trace("x")
    assert "could not be reached" in str(info.value)
    out = page.layout("abc")
    assert "could not be reached" in text_of(out) and "could not be loaded" in text_of(out)
    assert "No trace id" in text_of(page.layout(None))


# -- trial / experiment form ----------------------------------------------------------------------------

def test_ranges_parse_and_format():
    assert rf.parse_ranges("0-3, 8", 12) == ([0, 1, 2, 3, 8], None)
    assert rf.parse_ranges("3-1", 12)[1] == "the range 3-1 runs backwards"
    assert "does not exist" in rf.parse_ranges("0-12", 12)[1]
    assert "not a layer" in rf.parse_ranges("a", 12)[1]
    assert rf.format_ranges([8, 0, 1, 2, 3, 10, 11]) == "0-3,8,10-11"
    assert rf.preset_layers("train-shallow", 7) == [0, 1, 2] and rf.preset_layers("train-deep", 7) == [3, 4, 5, 6]
    assert rf.toggle_layer("0-3", 2, 8) == "0-1,3" and rf.toggle_layer("0-3", 5, 8) == "0-3,5"
    assert rf.allocation_label([0, 1], [], 4) == "train-shallow"
    assert rf.allocation_label([0, 1, 2, 3], ["embeddings", "head", "final_norm"], 4) == "full"
    assert rf.allocation_label([0, 1, 3], [], 4) == "0-1,3"


def test_live_parameter_count_matches_the_engine(model_info, saved_model):
    import layertracer as lt
    from layertracer.training.allocation import count_parameters, resolve_allocation

    loaded = lt.load_model(str(saved_model("qwen3")), device="cpu", dtype="float32")
    for spec, toggles in (("0-1,3", []), ("train-deep", ["embeddings"]), ("full", ["embeddings", "head", "final_norm"])):
        allocation = resolve_allocation(spec, model_info["num_layers"], embeddings="embeddings" in toggles or None,
                                        head="head" in toggles or None, final_norm="final_norm" in toggles or None)
        expected = count_parameters(loaded.model, loaded.adapter, allocation)
        assert rf.count_trainable(model_info, list(allocation.layers), toggles) == (expected.trainable, expected.total)
        text, problem = rf.count_text(model_info, allocation.ranges, toggles)
        assert problem is None and f"{expected.trainable:,} of {expected.total:,}" in text
        assert f"({100 * expected.share:.1f}%)" in text
    text, count_problem, fig = rf.live_count("0-9", [], model_info)
    assert "does not exist" in count_problem
    assert "Choose a model" in rf.count_text(None, "0-1", [])[0]
    strip = rf.strip_figure(model_info, "1,3")
    assert [col == "#0072B2" for col in strip.data[0].marker.color] == [False, True, False, True]


def test_presets_and_strip_clicks_set_the_ranges(model_info):
    ranges, toggles = run_with_trigger(rf.pick, '{"preset":"train-deep","type":"newtrial-preset"}.n_clicks',
                                       [None, 1, None], None, None, "0", [], model_info, None)
    assert (ranges, toggles) == ("2-3", [])
    ranges, toggles = run_with_trigger(rf.pick, '{"preset":"full","type":"newtrial-preset"}.n_clicks',
                                       [None, None, 1], None, None, "0", [], model_info, None)
    assert ranges == "0-3" and set(toggles) == {"embeddings", "head", "final_norm"}
    ranges, _ = run_with_trigger(rf.pick, "newtrial-strip.clickData", [None] * 3, {"points": [{"x": 2}]}, None, "0-3",
                                 [], model_info, None)
    assert ranges == "0-1,3"
    assert run_with_trigger(rf.pick, "newtrial-strip.clickData", [None] * 3, {"points": [{"x": 2}]}, None, "0",
                            [], None, None) == (dash.no_update, dash.no_update)


def test_adding_allocations_to_an_experiment(model_info):
    assert rf.add_allocation(1, "0-1", [], "full", model_info) == "full\ntrain-shallow"
    assert rf.add_allocation(1, "0-1", [], "full\ntrain-shallow", model_info) == "full\ntrain-shallow"
    assert rf.add_allocation(1, "0-9", [], "full", model_info) is dash.no_update


def _validate(kind="trial", **over):
    fields = dict(model="m1", info={"num_layers": 4}, allocations=["0-1"], toggles=[], corpus="/data/corpus",
                  benchmarks="ceval:/data/b1, cmmlu:/data/b2", seeds="1, 2", steps=10, lr=1e-4, batch_size=4,
                  block_size=64, trace_tasks="antonyms_en")
    fields.update(over)
    return rf.validate(kind, **fields)


def test_trial_validation_builds_the_api_body():
    body, errors = _validate()
    assert errors == []
    given = {"model_id": "m1", "corpus": "/data/corpus", "seeds": [1, 2], "benchmarks": ["ceval:/data/b1", "cmmlu:/data/b2"],
             "steps": 10, "lr": 1e-4, "batch_size": 4, "block_size": 64, "trace_tasks": "antonyms_en",
             "embeddings": False, "head": False, "final_norm": False, "allocation": "0-1"}
    assert {k: body[k] for k in given} == given
    # every other field of the spec goes with its default (the job's spec says what ran, explicitly)
    from layertracer.spec.jobs import ExperimentFields
    spec = ExperimentFields.model_validate({"model_id": "m1", "corpus": "c"}).model_dump(exclude_none=True)
    assert {k: v for k, v in body.items() if k not in given} == {k: v for k, v in spec.items()
                                                               if k not in given and k != "placement"}
    body, errors = _validate("experiment", allocations=["train-shallow", "full"])
    assert errors == [] and body["allocations"] == ["train-shallow", "full"] and "embeddings" not in body


@pytest.mark.parametrize("override, message", [
    ({"model": None}, "Choose a model."),
    ({"allocations": []}, "Choose the layers to train"),
    ({"allocations": ["0-7"]}, "layer 7 does not exist"),
    ({"corpus": " "}, "Give the training corpus"),
    ({"benchmarks": "mmlu:/x"}, "use ceval:FOLDER, cmmlu:FOLDER, lm-eval:TASK or lm-eval:FILE.yaml"),
    # the generated fields: the spec's own messages (layertracer/spec/jobs.py, training.py)
    ({"seeds": "1,1"}, "Seeds (comma-separated): a seed is listed twice"),
    ({"seeds": "one"}, "Seeds (comma-separated): Input should be a valid integer"),
    ({"steps": 0}, "Steps: Input should be greater than or equal to 1"),
    ({"batch_size": 5000}, "Batch size (sequences): Input should be less than or equal to 4096"),
    ({"lr": 0}, "Learning rate: Input should be greater than 0"),
    ({"lr": None}, "Learning rate: Input should be a valid number"),
    ({"batch_size": 2.5}, "Batch size (sequences): Input should be a valid integer, got a number with a fractional part"),
    ({"raws": {"strategy": "fsdp"}}, "Strategy: strategy fsdp shards the model over several processes"),
    ({"raws": {"labels": "2-3 = deep"}}, "labels name allocation(s) not run: 2-3"),
    ({"raws": {"eval_mode": "guess"}}, "Evaluation mode: Input should be 'loglikelihood', 'answer-only' or 'cloze'"),
    ({"allocations": ["from-trace"], "trace_tasks": ""}, "from-trace needs trace tasks"),
    ({"allocations": ["0-1", "2-3"]}, "A trial has one allocation"),
])
def test_trial_validation_messages(override, message):
    body, errors = _validate(**override)
    assert body is None and any(message in e for e in errors), errors


def test_submitting_an_invalid_form_shows_the_messages_and_stays():
    submit = rf.make_submit("trial")
    values = [{"warmup_steps": -1}.get(f.path, rf.TRAINING_DEFAULTS[f.path]) for f in rf.RUN_FIELDS]
    errors, go, *marks = submit(1, None, None, "", [], None, "", "", None, None, *values)
    assert go is dash.no_update
    assert "Choose a model." in text_of(errors) and "Give the training corpus" in text_of(errors)
    assert {f.path: m for f, m in zip(rf.RUN_FIELDS, marks) if m} == {
        "warmup_steps": "Input should be greater than or equal to 0"}


# -- new trace form -------------------------------------------------------------------------------------

def test_new_trace_validation():
    from frontend.pages import new_trace as page

    numbers = {"limit": None, "batch_size": 8, "top_k": 10, "seed": 0, "draws": 3, "shots": 0, "position_prompt": 2}
    body, errors = page.validate("m1", ["ts1", "ts2"], ["skip", "mask", "noise"], 0.3, 0.5, numbers, " plural_en ")
    assert errors == []
    assert body == {"model_id": "m1", "task_sets": ["ts1", "ts2"],
                    "perturbations": ["skip", "mask:keep=0.3", "noise:scale=0.5"],
                    "options": {"batch_size": 8, "top_k": 10, "seed": 0, "draws": 3, "shots": 0, "position_prompt": 2,
                                "position_task": "plural_en"}}
    body, errors = page.validate(None, [], [], 2, -1, {**numbers, "top_k": 0, "batch_size": None, "limit": 1.5})
    assert body is None
    joined = " ".join(errors)
    # the spec's own messages (TraceOptionsSpec), each with the field's label
    for message in ("Choose a model.", "at least one task set", "at least one perturbation",
                    "Top-k tokens kept per layer: Input should be greater than or equal to 1",
                    "Batch size (prompts per forward pass): Input should be a valid integer",
                    "Prompts per task (empty: all): Input should be a valid integer, got a number with a fractional part"):
        assert message in joined
    values = [{"top_k": 0}.get(f.path, page.sf.to_widget(f, f.default)) for f in page.FORM_FIELDS]
    errors_div, go, *marks = page.submit(1, None, [], ["skip"], 0.5, 1.0, "", None, *values)
    assert go is dash.no_update and "Choose a model." in text_of(errors_div)
    # each field's message sits next to it; the others stay empty
    assert {f.path: m for f, m in zip(page.FORM_FIELDS, marks) if m} == {"top_k": "Input should be greater than or equal to 1"}


# -- runs, experiment page -------------------------------------------------------------------------------

def test_runs_table_links_and_live_progress():
    from frontend.pages import runs as page

    items = [
        {"id": "t1", "status": "running", "model": {"name": "tiny"}, "tasks": ["antonyms_en"], "created_at": "2026-11-29",
         "job": {"id": "j1", "status": "running", "progress": {"stage": "sensitivity", "done": 1, "total": 4, "percent": 25}}},
        {"id": "t2", "status": "succeeded", "model": {"name": "tiny"}, "tasks": ["plural_en"], "vulnerable_layer": 3},
    ]
    tbl = page.runs_table(items, "traces")
    text = text_of(tbl)
    assert "sensitivity" in text and "25%" in text and "succeeded" in text and "vulnerable layer 3" in text
    links = [row.children[0].children[0] for row in tbl.children[1].children]
    assert [l.href for l in links] == ["/traces/t1", "/traces/t2"]
    exp = page.runs_table([{"id": "e1", "kind": "trial", "status": "queued", "model": {"name": "tiny"},
                            "allocations": ["0-3"], "seeds": [1, 2]}], "experiments")
    assert exp.children[1].children[0].children[0].children[0].href == "/experiments/e1"
    assert "trial: train layers 0-3 · seeds 1,2" in text_of(exp)


def test_experiment_page_results(experiment_result):
    from frontend.pages import experiment as page

    exp = {"id": "e1", "kind": "experiment", "status": "succeeded", "result": experiment_result,
           "spec": experiment_result["spec"], "provenance": {"model_fingerprint": "f00", "code_version": "0.1.0", "seeds": [1, 2]}}
    parts = dash.html.Div(page.results_view(exp))
    for gid in ("exp-scores", "exp-drift", "exp-retrace"):
        assert find(parts, gid).figure.data, gid
    assert "train-shallow" in text_of(find(parts, "exp-table"))
    assert "f00" in text_of(find(parts, "exp-provenance"))
    bench = experiment_result["spec"]["benchmarks"][0]
    assert find(parts, "exp-bench").value == bench
    assert "Holm" in text_of(parts)
    waiting = page.results_view({"id": "e1", "status": "running", "result": None})
    assert "appears here when every trial has finished" in text_of(waiting[0]) and len(waiting) == 1
    first = experiment_result["trials"][0]
    running = dash.html.Div(page.results_view({"id": "e1", "status": "running", "result": None,
                                               "partial": {"trials": {first["slug"]: first}}}))
    partial = text_of(find(running, "exp-partial"))
    bench = experiment_result["spec"]["benchmarks"][0]
    e = first["evals"][bench]
    assert first["slug"] in partial and f"{e['before']:.3f} → {e['accuracy']:.3f}" in partial
    assert find(running, "exp-partial-drift").figure.data[0].y == tuple(first["drift"]["blocks"]) or \
        list(find(running, "exp-partial-drift").figure.data[0].y) == pytest.approx(first["drift"]["blocks"])
    out = page.export(exp, None, "table", "csv")
    rows = list(csv.reader(io.StringIO(out["content"])))
    assert rows[0][0] == "allocation" and [r[0] for r in rows[1:]] == ["base model", "train-shallow", "train layers 0-1,3"]
    drift = page.export(exp, None, "drift", "csv")
    assert len(drift["content"].splitlines()) == 1 + sum(len(t["drift"]["blocks"]) for t in experiment_result["trials"])


def test_result_cache_is_bounded_and_fetches_once_per_key():
    from frontend.api_client import ResultCache

    cache = ResultCache(size=2)
    for i in range(3):
        cache.put(("api", str(i)), {"n": i})
    assert cache.get(("api", "0")) is None and cache.get(("api", "2")) == {"n": 2}
    assert cache.lock_for(("api", "x")) is cache.lock_for(("api", "x"))
    by_size = ResultCache(size=8, max_bytes=100)
    by_size.put(("a",), 1, 60)
    by_size.put(("b",), 2, 30)
    by_size.get(("a",))  # a is now the most recently used
    by_size.put(("c",), 3, 30)  # 120 bytes: the least recently used (b) goes
    assert [by_size.get((k,)) for k in "abc"] == [1, None, 3]
    by_size.put(("huge",), 4, 1000)  # alone over the bound: kept, the rest dropped
    assert by_size.get(("huge",)) == 4 and by_size.get(("a",)) is None
    assert cache.lock_for(("api", "x")) is not cache.lock_for(("api", "y"))


def test_api_errors_are_one_readable_line():
    import httpx

    from frontend.api_client import _detail

    validation = httpx.Response(422, json={"detail": [{"loc": ["body", "options", "top_k"], "msg": "must be >= 1"}]})
    assert _detail(validation) == "options.top_k: must be >= 1 (HTTP 422)"
    assert _detail(httpx.Response(404, json={"detail": "trace x not found"})) == "trace x not found (HTTP 404)"
    assert _detail(httpx.Response(503, text="worker pool busy")) == "worker pool busy (HTTP 503)"
    assert _detail(httpx.Response(502, text="<html>\nBad gateway")) == "Bad Gateway (HTTP 502)"


def test_the_experiment_form_takes_its_allocations_from_the_url():
    layout = rf.form_layout("newexp", "experiment", None, {"allocations": "train-shallow; 0-3,8 ;full"})
    assert find(layout, "newexp-allocations").value == "train-shallow\n0-3,8\nfull"
    assert "could not be reached" in text_of(layout)  # no API here: said plainly, the form still shows


def test_share_without_a_token_is_the_plain_view_url():
    from frontend.pages import experiment as exp_page
    from frontend.pages import trace as trace_page

    link, message = trace_page.share(1, "http://host:8000/traces/t1?task=a", "/traces/t1", "?task=a", "t1", None)
    assert link == "http://host:8000/traces/t1?task=a" and "copy it" in message
    link, _ = exp_page.share(1, "https://h/experiments/e1?bench=x", "/experiments/e1", "?bench=x&share=OLD", "e1", None)
    assert link == "https://h/experiments/e1?bench=x&share=OLD"  # a shared view stays shared
    assert trace_page.share(None, None, "/traces/t1", "", "t1", None) == (dash.no_update, dash.no_update)
    # With a token, the API is asked for a read-only link; an unreachable API says so and still gives the URL.
    link, message = trace_page.share(1, "http://host/traces/t1", "/traces/t1", "", "t1", "tok")
    assert link == "http://host/traces/t1" and "could not be made" in message and "could not be reached" in message


def test_figures_are_memoised_per_view_and_per_reader(trace_result):
    from frontend.pages import trace as page
    from frontend.viz import trace as tv

    page.FIGURE_CACHE.clear()
    source = ("http://api", "t1", None, None)
    task = "plural_en"
    first = page.Figures(trace_result, source)
    assert first.prompts(task, "rank", False, [0, 3]) is page.Figures(trace_result, source).prompts(task, "rank", False, (0, 3))
    assert first.prompts(task, "rank", False, [0, 3]) is not first.prompts(task, "prob", False, [0, 3])
    assert first.stability(["skip"], True, [1, 2]) is not first.stability(["mask(keep=0.5)"], True, [1, 2])
    # another reader (a share token) gets its own entries; without a source nothing is kept
    other = page.Figures(trace_result, ("http://api", "t1", None, "share-token"))
    assert other.plan(False, [0, 3]) is not first.plan(False, [0, 3])
    assert page.Figures(trace_result).position(False) is not page.Figures(trace_result).position(False)
    assert first.tasks("entropy", True, [0, 3]).to_json() == \
        tv.task_heatmap(trace_result, "entropy", normalized=True, window=[0, 3]).to_json()
