"""results.py, tasksets.py, broker.py, settings and migrations against real databases."""

from __future__ import annotations

import hashlib
import json
import math
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import results, tasksets
from backend.db.models import Base, Experiment, Model, TaskSet, Trace, TracePart
from backend.settings import PLACEHOLDER_SECRET, Settings

from backend_factories import trace_result


def _model_and_trace(s: Session) -> Trace:
    model = Model(source="/m/x", source_kind="local", name="x")
    s.add(model)
    s.flush()
    trace = Trace(model_id=model.id, spec={"task_sets": ["task0"]})
    s.add(trace)
    s.commit()
    return trace


def test_migrations_equal_the_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_store_trace_result_stores_it_once_with_its_views(engine):
    data = trace_result(num_layers=5, tasks=2, prompts=4)
    data["tasks"]["task0"]["target_prob"][0][1] = float("nan")
    with Session(engine, expire_on_commit=False) as s:
        trace = _model_and_trace(s)
        results.store_trace_result(s, trace_id=trace.id, result=data)
        results.store_trace_result(s, trace_id=trace.id, result=data)  # idempotent: replaces
        parts = {p.part: json.loads(p.body) for p in s.execute(select(TracePart).where(TracePart.trace_id == trace.id)).scalars()}
        assert sorted(parts) == ["overview", "task:task0", "task:task1"]
        overview = parts["overview"]["tasks"]["task1"]
        assert overview["mean_target_prob"] == pytest.approx(data["tasks"]["task1"]["mean_target_prob"])
        ranks = data["tasks"]["task1"]["target_rank"]
        assert overview["mean_target_rank"][2] == pytest.approx(sum(r[2] for r in ranks) / 4)
        assert "target_rank" not in overview and parts["task:task1"]["target_rank"] == ranks
        assert parts["overview"]["sensitivities"]["mask(keep=0.5)"]["mean_js"] == \
            pytest.approx(data["sensitivities"]["mask(keep=0.5)"]["mean_js"])
        stored = s.get(Trace, trace.id)
        assert json.loads(stored.result_json)["tasks"]["task0"]["target_prob"][0][1] is None
        assert stored.summary["particles"] == {"task0": None, "task1": 2}
        assert stored.summary["freeze_plan"]["boundary"] == 2
        assert stored.provenance["model_fingerprint"] == "f" * 64 and stored.provenance["seeds"] == [7]
        assert s.get(Model, stored.model_id).fingerprint == "f" * 64
        with pytest.raises(results.ResultError, match="unknown trace"):
            results.store_trace_result(s, trace_id="nope", result=data)
        with pytest.raises(results.ResultError, match="num_layers"):
            results.store_trace_result(s, trace_id=trace.id, result={"tasks": {}})


def test_experiment_metrics_partial_and_result(engine):
    with Session(engine, expire_on_commit=False) as s:
        model = Model(source="org/m", source_kind="hub", name="m")
        s.add(model)
        s.flush()
        exp = Experiment(kind="trial", model_id=model.id, spec={"seeds": [1, 2]})
        s.add(exp)
        s.commit()
        rows = [{"step": i, "loss": 3.0 - i * 0.1, "lr": 1e-4, "tokens_per_s": 100.0, "grad_norm": 1.0,
                 "eval_loss": None if i % 2 else 2.5} for i in range(1, 5)]
        assert results.append_train_metrics(s, experiment_id=exp.id, trial="full-seed1", rows=rows) == 4
        # A resumed trial writes step 4 again: overwritten, not duplicated.
        results.append_train_metrics(s, experiment_id=exp.id, trial="full-seed1",
                                     rows=[{"step": 4, "loss": float("nan"), "lr": 1e-5, "tokens_per_s": 1, "grad_norm": 1}])
        metrics = results.train_metrics(s, exp.id)
        assert [m["step"] for m in metrics["full-seed1"]] == [1, 2, 3, 4]
        assert metrics["full-seed1"][3]["loss"] is None and metrics["full-seed1"][3]["lr"] == 1e-5
        assert metrics["full-seed1"][1]["eval_loss"] == 2.5 and "eval_loss" not in metrics["full-seed1"][0]
        results.store_partial(s, kind="experiment", resource_id=exp.id, partial={"baseline": {"acc": 0.3}})
        results.store_partial(s, kind="experiment", resource_id=exp.id, partial={"trials": {"a": 1}})
        assert s.get(Experiment, exp.id).partial == {"baseline": {"acc": 0.3}, "trials": {"a": 1}}
        results.store_experiment_result(s, experiment_id=exp.id, result={"table": [{"x": math.inf}]}, code_version="0.1.0")
        stored = s.get(Experiment, exp.id)
        assert stored.result == {"table": [{"x": None}]}
        assert stored.provenance["seeds"] == [1, 2] and stored.provenance["code_version"] == "0.1.0"
        with pytest.raises(results.ResultError):
            results.store_partial(s, kind="bogus", resource_id=exp.id, partial={})


def test_store_model_info(engine):
    with Session(engine, expire_on_commit=False) as s:
        model = Model(source="org/m", source_kind="hub", name="m")
        s.add(model)
        s.commit()
        info = {"architecture": "Qwen3ForCausalLM", "num_layers": 2, "block_kinds": ["attention"] * 2,
                "num_parameters": 10, "block_parameters": [4, 4]}
        results.store_model_info(s, model_id=model.id, info=info, fingerprint="ab" * 32)
        stored = s.get(Model, model.id)
        assert stored.info == info and stored.fingerprint == "ab" * 32


def test_builtin_upsert_is_idempotent(engine):
    with Session(engine) as s:
        sets = [{"name": "antonyms_en", "language": "en", "description": "English antonyms", "num_items": 73},
                {"name": "plural_en", "language": "en", "num_items": 60}]
        assert tasksets.upsert_builtin_task_sets(s, sets) == 2
        sets[0]["num_items"] = 74
        tasksets.upsert_builtin_task_sets(s, sets)
        rows = {r.name: r for r in s.execute(select(TaskSet)).scalars()}
        assert set(rows) == {"antonyms_en", "plural_en"}
        assert rows["antonyms_en"].num_items == 74 and rows["antonyms_en"].id == "antonyms_en"
        placeholders = {p["name"] for p in tasksets.placeholder_builtins(s)}
        assert "antonyms_en" not in placeholders and "synonyms_en" in placeholders


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.jsonl", b'{"prompt": "p", "target": "t"}\n{"prompt": "p"}\n', "line 2: \"target\" must be a non-empty string"),
        ("a.jsonl", b'{"prompt": "p", "target": "t"}\nnot json\n', "line 2: not valid JSON"),
        ("a.jsonl", b'{"prompt": "p", "target": "t", "extra": 1}\n', "line 1: unknown field(s) extra"),
        ("a.jsonl", b"\n\n", "the file has no items"),
        ("a.csv", b"question,answer\nx,y\n", "line 1: the CSV header needs column(s) prompt, target"),
        ("a.csv", b"prompt,target\nx,y\nz,\n", "line 3: \"target\" must be a non-empty string"),
        ("a.txt", b"x", "must be .jsonl or .csv"),
        ("a.jsonl", b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_task_files_name_the_line(name, content, message):
    with pytest.raises(tasksets.TaskSetError) as info:
        tasksets.parse_task_file(content, name)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_good_task_files():
    items = tasksets.parse_task_file('{"prompt": "大的反义词是", "target": "小", "id": 3}\n\n'.encode(), "x.jsonl")
    assert items == [{"prompt": "大的反义词是", "target": "小", "id": 3}]
    items = tasksets.parse_task_file(b"\xef\xbb\xbfprompt,target,task\n\"a, b\",c,t1\nd,e,\n", "x.csv")
    assert items == [{"prompt": "a, b", "target": "c", "task": "t1"}, {"prompt": "d", "target": "e"}]


def test_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERTRACER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LAYERTRACER_MODEL_ROOTS", f"{tmp_path}/a:{tmp_path}/b")
    monkeypatch.setenv("LAYERTRACER_DATABASE_URL", "postgres://u@h/db")
    s = Settings()
    assert s.model_roots == [tmp_path / "a", tmp_path / "b"]
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert s.host == "127.0.0.1" and s.auth == "none" and s.cors_origins == []
    monkeypatch.setenv("LAYERTRACER_MODEL_ROOTS", json.dumps([str(tmp_path)]))
    monkeypatch.delenv("LAYERTRACER_DATABASE_URL")
    s = Settings()
    assert s.model_roots == [tmp_path] and s.database_url == f"sqlite:///{tmp_path}/layertracer.db"
    with pytest.raises(ValueError, match="SECRET_KEY"):
        Settings(auth="token", secret_key=PLACEHOLDER_SECRET)
    assert Settings(auth="token", secret_key="x" * 32).auth == "token"


def test_broker_sends_json_to_the_right_queue(tmp_path):
    import kombu

    from backend.broker import broker_transport_options, send_job

    settings = Settings(data_dir=tmp_path)
    send_job("job123", "experiment", settings)
    opts = broker_transport_options(settings)
    assert opts["data_folder_in"] == opts["data_folder_out"] == str(tmp_path / "broker" / "queue")
    with kombu.Connection("filesystem://", transport_options=opts) as conn:
        message = conn.SimpleQueue(kombu.Queue("train", routing_key="train")).get(timeout=5)
        assert message.headers["task"] == "experiment.run"
        assert message.content_type == "application/json"
        assert json.loads(message.body)[0] == ["job123"]
        message.ack()


def test_sqlite_engine_uses_wal_and_a_busy_timeout(tmp_path):
    from sqlalchemy import text

    from backend.db.session import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_migrations_go_down_and_up_again(db_url):
    from alembic import command
    from sqlalchemy import inspect

    from backend.db.migrate import alembic_config, upgrade
    from backend.db.session import make_engine

    upgrade(db_url)  # already at head: a no-op
    command.downgrade(alembic_config(db_url), "base")
    engine = make_engine(db_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(db_url)
    tables = set(inspect(engine).get_table_names())
    assert {"jobs", "traces", "trace_results", "trace_parts", "shares", "api_tokens"} <= tables
    assert not tables & {"trace_layer_metrics", "trace_sensitivity", "trace_task_data"}  # dropped by 0006
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_migration_0003_moves_stored_results(db_url):
    from alembic import command
    from sqlalchemy import text

    from backend.db.migrate import alembic_config, upgrade
    from backend.db.session import make_engine

    command.downgrade(alembic_config(db_url), "0002")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO models (id, source, source_kind, name, trust_remote_code, created_at) "
                          "VALUES ('m1', '/m', 'local', 'm', false, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO traces (id, model_id, spec, created_at, result_json, result_sha256) "
                          "VALUES ('t1', 'm1', '{}', CURRENT_TIMESTAMP, '{\"num_layers\": 2}', 'abc')"))
        # A result stored before 0002 added hashes: 0003 hashes it, so the API serves it.
        conn.execute(text("INSERT INTO traces (id, model_id, spec, created_at, result_json) "
                          "VALUES ('t0', 'm1', '{}', CURRENT_TIMESTAMP, '{\"num_layers\": 3}')"))
    upgrade(db_url)
    with Session(engine) as s:
        assert s.get(Trace, "t1").result_json == '{"num_layers": 2}'
        assert s.get(Trace, "t0").result_sha256 == hashlib.sha256(b'{"num_layers": 3}').hexdigest()
    command.downgrade(alembic_config(db_url), "0002")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT result_json FROM traces WHERE id = 't1'")).scalar() == '{"num_layers": 2}'
        conn.execute(text("DELETE FROM traces WHERE id = 't0'"))
        conn.commit()
    upgrade(db_url)
    engine.dispose()


def test_a_trace_stored_before_0006_stays_readable(db_url, make_client):
    """0006 drops the tables of copied aggregates; a trace stored before (its result, the old copies,
    no parts yet) is still served whole, and its overview and CSV are derived from the result."""
    import csv
    import io

    from alembic import command
    from sqlalchemy import text

    from backend.db.migrate import alembic_config, upgrade
    from backend.db.session import make_engine

    data = trace_result(num_layers=3, tasks=2, prompts=2)
    body = json.dumps(data)
    command.downgrade(alembic_config(db_url), "0005")
    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO models (id, source, source_kind, name, trust_remote_code, created_at) "
                          "VALUES ('m1', '/m', 'local', 'm', false, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO traces (id, model_id, spec, created_at, result_sha256, summary) "
                          "VALUES ('t1', 'm1', '{}', CURRENT_TIMESTAMP, :sha, :summary)"),
                     {"sha": hashlib.sha256(body.encode()).hexdigest(),
                      "summary": json.dumps({"num_layers": 3, "tasks": ["task0", "task1"]})})
        conn.execute(text("INSERT INTO trace_results (trace_id, sha256, body) VALUES ('t1', :sha, :body)"),
                     {"sha": hashlib.sha256(body.encode()).hexdigest(), "body": body})
        conn.execute(text("INSERT INTO trace_layer_metrics (trace_id, task, layer, mean_prob) VALUES ('t1', 'task0', 0, 0.5)"))
    engine.dispose()
    upgrade(db_url)
    client = make_client()
    assert client.get("/api/v1/traces/t1/result").json() == data
    overview = client.get("/api/v1/traces/t1/overview").json()
    assert overview["tasks"]["task1"]["mean_target_prob"] == pytest.approx(data["tasks"]["task1"]["mean_target_prob"])
    rows = list(csv.DictReader(io.StringIO(client.get("/api/v1/traces/t1/export.csv").text)))
    assert [(r["task"], r["layer"]) for r in rows] == [(t, str(l)) for t in ("task0", "task1") for l in range(3)]
    assert float(rows[4]["mean_prob"]) == pytest.approx(data["tasks"]["task1"]["mean_target_prob"][1])


def test_alembic_cli_upgrades_an_empty_database_to_the_models(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from backend.db.session import make_engine

    repo = Path(__file__).resolve().parents[2]
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "LAYERTRACER_DATA_DIR": str(tmp_path), "LAYERTRACER_DATABASE_URL": url}
    done = subprocess.run([sys.executable, "-m", "alembic", "-c", "backend/alembic.ini", "upgrade", "head"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    engine = make_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


def test_concurrent_upgrades_of_a_fresh_database(tmp_path, request):
    """API and workers migrate at start, at the same time: exactly one migrates, none fails."""
    import threading

    from sqlalchemy import create_engine, inspect, text

    from backend.db.migrate import upgrade
    from backend.db.session import make_engine

    urls = [f"sqlite:///{tmp_path / 'fresh.db'}"]
    admin = None
    try:
        request.getfixturevalue("pg_url")  # skips when Postgres does not answer
        admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test", isolation_level="AUTOCOMMIT")
        name = f"lt_migrate_{uuid.uuid4().hex[:12]}"  # unique: another run may use this server at once
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        urls.append(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    except pytest.skip.Exception:
        pass
    try:
        for url in urls:
            errors: list[BaseException] = []
            barrier = threading.Barrier(4)

            def go() -> None:
                try:
                    barrier.wait(timeout=30)
                    upgrade(url)
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)

            threads = [threading.Thread(target=go) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert errors == [], (url, errors)
            engine = make_engine(url)
            assert "traces" in inspect(engine).get_table_names()
            with engine.connect() as conn:
                assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            engine.dispose()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{urls[-1].rsplit("/", 1)[1]}" WITH (FORCE)'))
            admin.dispose()
