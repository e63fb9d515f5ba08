"""The runs table's lists (GET /traces, /experiments with sort, filters and paging) against an independent
sort and filter in Python of the same rows; the metric columns filled when a result is stored and
backfilled by migration 0008; the sort grammar and the metric rules of layertracer/spec."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.orm import Session

from backend import results
from backend.db.models import Experiment, Job, Model, Trace
from backend.db.session import make_engine
from backend_factories import trace_result
from layertracer.spec.run_metrics import experiment_metrics, trace_metrics
from layertracer.spec.runs_query import EXPERIMENT_SORT_FIELDS, TRACE_SORT_FIELDS, Sort, SortError, parse_sort

API = "/api/v1"
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
NAMES = ("alpha", "Beta", "gamma 2", "delta", "Echo", "zulu", None, "mike", "beta")
TAGS = ("baseline", "Qwen", "demo", "中文")


def _rows(n: int, seed: int) -> list[dict]:
    """n runs' fields, chosen at random but with repeats (equal names, times, values) and missing values."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append({
            "id": f"{i:02d}{rng.randrange(16 ** 6):06x}".ljust(32, "0"),
            "name": rng.choice(NAMES),
            "tags": rng.sample(TAGS, rng.randint(0, 2)),
            "status": rng.choice(STATUSES),
            "model": rng.randrange(3),
            "created": T0 + timedelta(minutes=rng.randrange(12)),  # ties on purpose
            "kind": rng.choice(("trial", "experiment")),
            "plan_share": rng.choice((None, 0.25, 0.5, 0.75)),
            "plan": None,
            "vulnerable_layer": rng.choice((None, 0, 1, 3, 7)),
            "best_label": rng.choice((None, "train-deep", "full", "0-3", "Train-shallow")),
            "delta_retention": rng.choice((None, -0.4, -0.1, 0.0, 0.05)),
            "delta_acquisition": rng.choice((None, 0.1, 0.3, 0.6)),
        })
    return rows


MODEL_NAMES = ("qwen-small", "Llama-tiny", "demo")


def _insert(db_url: str, rows: list[dict], table: type) -> None:
    engine = make_engine(db_url)
    with Session(engine) as s:
        models = [Model(id=f"m{i}", source=f"/models/{name}", source_kind="local", name=name)
                  for i, name in enumerate(MODEL_NAMES)]
        s.add_all(models)
        for r in rows:
            job = Job(id="j" + r["id"][1:], kind="trace" if table is Trace else "experiment", queue="cpu", status=r["status"])
            s.add(job)
            common = dict(id=r["id"], model_id=f"m{r['model']}", job_id=job.id, name=r["name"], tags=r["tags"],
                          spec={}, created_at=r["created"])
            if table is Trace:
                s.add(Trace(**common, plan_share=r["plan_share"], vulnerable_layer=r["vulnerable_layer"]))
            else:
                s.add(Experiment(**common, kind=r["kind"], best_label=r["best_label"],
                                 best_allocation=r["best_label"], delta_retention=r["delta_retention"],
                                 delta_acquisition=r["delta_acquisition"]))
        s.commit()
    engine.dispose()


def _value(row: dict, field: str):
    """The value a sort field orders by, as the grammar's docstring says (text lower-cased)."""
    value = {"created": row["created"], "name": row["name"], "status": row["status"],
             "model": MODEL_NAMES[row["model"]], "plan": row["plan_share"], "best_allocation": row["best_label"]
             }.get(field, row.get(field))
    return value.lower() if isinstance(value, str) else value


def _expected(rows: list[dict], sort: str) -> list[str]:
    """Ids in the documented order: by the field, missing values last, then newest first, then id."""
    descending = sort.startswith("-")
    field = sort.lstrip("-")
    out = sorted(rows, key=lambda r: r["id"])
    out = sorted(out, key=lambda r: r["created"], reverse=True)
    present = [r for r in out if _value(r, field) is not None]
    missing = [r for r in out if _value(r, field) is None]
    present = sorted(present, key=lambda r: _value(r, field), reverse=descending)
    return [r["id"] for r in present + missing]


def _ids(client, path: str, **params) -> list[str]:
    response = client.get(f"{API}/{path}", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["data"])
    return [item["id"] for item in body["data"]]


@pytest.fixture
def trace_rows(db_url):
    rows = _rows(40, seed=1)
    _insert(db_url, rows, Trace)
    return rows


@pytest.fixture
def experiment_rows(db_url):
    rows = _rows(40, seed=2)
    _insert(db_url, rows, Experiment)
    return rows


def test_traces_sort_by_every_field_both_ways(client, trace_rows):
    for field in TRACE_SORT_FIELDS:
        for sort in (field, "-" + field):
            assert _ids(client, "traces", sort=sort) == _expected(trace_rows, sort), sort
    assert _ids(client, "traces") == _expected(trace_rows, "-created")  # the default


def test_experiments_sort_by_every_field_both_ways(client, experiment_rows):
    for field in EXPERIMENT_SORT_FIELDS:
        for sort in (field, "-" + field):
            assert _ids(client, "experiments", sort=sort) == _expected(experiment_rows, sort), sort


def _tag_match(row: dict, text: str) -> bool:
    return any(text.lower() in t.lower() for t in row["tags"])


@pytest.mark.parametrize("params, keep", [
    ({"status": "running"}, lambda r: r["status"] == "running"),
    ({"q": "BETA"}, lambda r: "beta" in (r["name"] or "").lower()),
    ({"q": "qwen"}, lambda r: MODEL_NAMES[r["model"]] == "qwen-small" or _tag_match(r, "qwen")),
    ({"q": "中"}, lambda r: _tag_match(r, "中")),
    ({"q": "emo"}, lambda r: MODEL_NAMES[r["model"]] == "demo" or _tag_match(r, "emo")),
    ({"tag": "qwen"}, lambda r: "qwen" in [t.lower() for t in r["tags"]]),
    ({"tag": "中文"}, lambda r: "中文" in r["tags"]),
    ({"tag": "base"}, lambda r: "base" in r["tags"]),  # a whole tag, not a part of one
    ({"model": "m1"}, lambda r: r["model"] == 1),
    ({"model": "m2", "status": "failed", "q": "a"},
     lambda r: r["model"] == 2 and r["status"] == "failed"
     and ("a" in (r["name"] or "").lower() or "a" in "demo" or _tag_match(r, "a"))),
    ({"q": "%"}, lambda r: False),  # LIKE's wildcards are text
])
def test_trace_filters(client, trace_rows, params, keep):
    expected = _expected([r for r in trace_rows if keep(r)], "-vulnerable_layer")
    assert _ids(client, "traces", sort="-vulnerable_layer", **params) == expected
    assert client.get(f"{API}/traces", params={**params, "limit": 1}).json()["count"] == len(expected)


def test_experiment_kind_filter(client, experiment_rows):
    for kind in ("trial", "experiment"):
        rows = [r for r in experiment_rows if r["kind"] == kind]
        assert _ids(client, "experiments", kind=kind, sort="delta_acquisition") == _expected(rows, "delta_acquisition")


def test_pages_partition_the_sorted_list(client, experiment_rows):
    whole = _expected(experiment_rows, "-delta_retention")
    seen = []
    for offset in range(0, len(whole) + 7, 7):
        body = client.get(f"{API}/experiments", params={"sort": "-delta_retention", "limit": 7, "offset": offset}).json()
        assert body["count"] == len(whole)
        seen.extend(item["id"] for item in body["data"])
    assert seen == whole


def test_list_items_carry_the_metric_columns_and_the_job(client, experiment_rows):
    item = client.get(f"{API}/experiments", params={"sort": "-delta_acquisition", "limit": 1}).json()["data"][0]
    row = next(r for r in experiment_rows if r["id"] == item["id"])
    assert (item["delta_acquisition"], item["delta_retention"], item["best_label"]) == \
        (row["delta_acquisition"], row["delta_retention"], row["best_label"])
    assert item["job"]["status"] == row["status"] and item["kind"] == row["kind"]


@pytest.mark.parametrize("path, sort", [("traces", "delta_retention"), ("experiments", "plan"), ("traces", "--name")])
def test_a_bad_sort_is_a_one_line_422(client, path, sort):
    response = client.get(f"{API}/{path}", params={"sort": sort})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "\n" not in detail and "sort" in detail


# -- the metric columns ---------------------------------------------------------------------------

OLD, NEW = "ceval:/b/old-facts", "ceval:/b/new-facts"


def _comparison(a: str, b: str, p: float) -> dict:
    return {"a": a, "b": b, **{test: {"p_adjusted": p} for test in ("bootstrap", "mcnemar", "permutation")}}


def experiment_result() -> dict:
    """A runner's result with three allocations: the best (mean of the two changes) is train-deep."""
    def row(allocation, label, old, new):
        return {"allocation": allocation, "label": label, "trainable_share": 0.5,
                "change": {OLD: {"mean": old, "n": 2}, NEW: {"mean": new, "n": 2}}}
    return {
        "spec": {"benchmarks": [OLD, NEW]},
        "table": [{"allocation": "base", "label": "base", "benchmarks": {}},
                  row("0", "freeze plan", -0.435, 0.5),   # mean 0.0325
                  row("train-deep", "train-deep", -0.12, 0.4),  # mean 0.14: the best
                  row("full", "full", -0.3, 0.55)],  # mean 0.125
        "statistics": {OLD: {"comparisons": [_comparison("base", "train-deep", 0.001), _comparison("0", "base", 0.5)]},
                       NEW: {"comparisons": [_comparison("train-deep", "base", 0.2)]}},
    }


def test_experiment_metrics_follow_the_documented_rule():
    got = experiment_metrics(experiment_result())
    assert got == {"best_allocation": "train-deep", "best_label": "train-deep", "delta_retention": -0.12,
                   "delta_acquisition": 0.4, "retention_significant": True, "acquisition_significant": False}
    one = experiment_result()
    one["spec"]["benchmarks"] = [NEW]  # one benchmark: retention only, and the best by it alone
    got = experiment_metrics(one)
    assert (got["best_allocation"], got["delta_retention"], got["delta_acquisition"]) == ("full", 0.55, None)
    assert got["retention_significant"] is None  # no comparison of full with base on it
    assert experiment_metrics(None)["best_allocation"] is None
    assert experiment_metrics({"table": [{"allocation": "base"}]})["delta_retention"] is None


def test_a_tie_keeps_the_first_allocation_of_the_table():
    result = experiment_result()
    result["table"][3]["change"] = {OLD: {"mean": -0.12}, NEW: {"mean": 0.4}}
    assert experiment_metrics(result)["best_allocation"] == "train-deep"


def test_storing_results_fills_the_metric_columns(engine):
    data = trace_result(num_layers=6, tasks=2, prompts=3)
    with Session(engine, expire_on_commit=False) as s:
        model = Model(source="/m/x", source_kind="local", name="x")
        s.add(model)
        s.flush()
        trace = Trace(model_id=model.id, spec={})
        experiment = Experiment(model_id=model.id, kind="experiment", spec={})
        s.add_all([trace, experiment])
        s.commit()
        results.store_trace_result(s, trace_id=trace.id, result=data)
        results.store_experiment_result(s, experiment_id=experiment.id, result=experiment_result())
        s.expire_all()
        stored = s.get(Trace, trace.id)
        plan = data["freeze_plan"]
        assert (stored.plan, stored.plan_share, stored.vulnerable_layer) == \
            (plan["train_ranges"], len(plan["train_layers"]) / 6, data["vulnerable_layer"])
        row = s.get(Experiment, experiment.id)
        assert (row.best_label, row.delta_retention, row.delta_acquisition, row.retention_significant,
                row.acquisition_significant) == ("train-deep", -0.12, 0.4, True, False)


def test_migration_0008_backfills_stored_runs(db_url):
    from alembic import command
    from sqlalchemy import text

    from backend.db.migrate import alembic_config, upgrade

    summary = {"num_layers": 8, "vulnerable_layer": 5,
               "freeze_plan": {"num_layers": 8, "train_layers": [0, 1, 2], "train_ranges": "0-2"}}
    command.downgrade(alembic_config(db_url), "0007")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO models (id, source, source_kind, name, trust_remote_code, created_at) "
                          "VALUES ('m1', '/m', 'local', 'm', false, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO traces (id, model_id, spec, tags, created_at, summary) "
                          "VALUES ('t1', 'm1', '{}', '[]', CURRENT_TIMESTAMP, :summary)"), {"summary": json.dumps(summary)})
        conn.execute(text("INSERT INTO traces (id, model_id, spec, tags, created_at) "
                          "VALUES ('t2', 'm1', '{}', '[]', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO experiments (id, kind, model_id, spec, tags, created_at, result) "
                          "VALUES ('e1', 'experiment', 'm1', '{}', '[]', CURRENT_TIMESTAMP, :result)"),
                     {"result": json.dumps(experiment_result())})
    upgrade(db_url)
    with Session(engine) as s:
        t1, t2 = s.get(Trace, "t1"), s.get(Trace, "t2")
        assert (t1.plan, t1.plan_share, t1.vulnerable_layer) == ("0-2", 3 / 8, 5)
        assert (t2.plan, t2.plan_share, t2.vulnerable_layer) == (None, None, None)
        e1 = s.get(Experiment, "e1")
        assert (e1.best_allocation, e1.delta_retention, e1.delta_acquisition, e1.retention_significant) == \
            ("train-deep", -0.12, 0.4, True)
    engine.dispose()


def test_trace_metrics_of_a_summary_without_a_plan():
    assert trace_metrics({"vulnerable_layer": 2}) == {"plan": None, "plan_share": None, "vulnerable_layer": 2}
    assert trace_metrics(None) == {"plan": None, "plan_share": None, "vulnerable_layer": None}


def test_the_sort_grammar():
    assert parse_sort("-delta_retention", EXPERIMENT_SORT_FIELDS) == Sort("delta_retention", True)
    assert parse_sort("", TRACE_SORT_FIELDS) == Sort("created", True)
    with pytest.raises(SortError, match="use one of created, name"):
        parse_sort("size", TRACE_SORT_FIELDS)
    assert Sort("name").toggled("name") == Sort("name", True)
    assert Sort("name").toggled("plan") == Sort("plan", True)  # numbers start high
    assert Sort("plan", True).toggled("model") == Sort("model", False)  # text starts at A
    # the schema's pattern accepts what parse_sort accepts (empty: the default), and nothing else
    import re

    from layertracer.spec.runs_query import SORT_PATTERN
    for text in ("", "plan", "-plan", "--plan", "size", "-", "plan ", "delta_retention"):
        accepted = True
        try:
            parse_sort(text, TRACE_SORT_FIELDS)
        except SortError:
            accepted = False
        assert bool(re.match(SORT_PATTERN["traces"], text)) == accepted, text
