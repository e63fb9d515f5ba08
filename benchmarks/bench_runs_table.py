"""The runs table with 10,000 runs: sort, filter and page through the API (a real uvicorn server on
loopback) and the dashboard callback that builds the table, against the naive way (read every run and
sort them in the client, as a browser-side table over all rows would).

Inserts ``--runs`` traces and as many trials/experiments (their metric columns set as a stored result
sets them, random names, tags, statuses and models) into a fresh database migrated to head, serves the
API with uvicorn in a subprocess and times, with httpx over loopback:

- sort: ``GET /traces?sort=-vulnerable_layer``, ``?sort=plan``, ``GET /experiments?sort=-delta_retention``,
  ``?sort=delta_acquisition``, ``?sort=best_allocation``, ``?sort=name`` (a page of 50 each);
- filter: text (``q``), status, tag, model and kind, each with a metric sort;
- page: a deep page (offset 9,000) under a metric sort;
- callback: ``frontend.pages.runs.render`` (the request and the table's components) for a sorted,
  filtered view;
- naive: every run read (20 requests of 500) and sorted in Python.

Prints p50 / p95 in ms for each and the naive/server ratio. Target: sort and filter p95 < 300 ms.

    .venv/bin/python benchmarks/bench_runs_table.py                     # SQLite in a temporary folder
    .venv/bin/python benchmarks/bench_runs_table.py --postgres          # also Postgres: database bench_runs
                                                                         # at 127.0.0.1:5432 (dropped after)
"""

from __future__ import annotations

import argparse
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, insert, text  # noqa: E402

from backend.db.migrate import upgrade  # noqa: E402
from backend.db.models import Experiment, Job, Model, Trace  # noqa: E402
from backend.db.session import make_engine  # noqa: E402

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
PG_DATABASE = "bench_runs"
STATUSES = ("queued", "running", "succeeded", "succeeded", "succeeded", "failed", "cancelled")
TAGS = ("baseline", "qwen", "demo", "ablation", "中文", "long-run")
WORDS = ("plan", "deep", "shallow", "full", "retry", "demo", "cmmlu", "ceval", "sweep", "lr")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def fill(url: str, runs: int, seed: int = 0) -> None:
    """``runs`` traces and ``runs`` trials/experiments over 8 models, each with its job."""
    rng = random.Random(seed)
    engine = make_engine(url)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    models = [{"id": f"m{i}", "source": f"/models/bench-{i}", "source_kind": "local", "name": f"model-{i}",
               "trust_remote_code": False, "created_at": t0} for i in range(8)]
    jobs, traces, experiments = [], [], []
    for i in range(2 * runs):
        job_id, run_id = uuid.uuid4().hex, uuid.uuid4().hex
        status = rng.choice(STATUSES)
        is_trace = i < runs
        jobs.append({"id": job_id, "kind": "trace" if is_trace else "experiment", "queue": "cpu", "status": status,
                     "spec": {}, "attempts": 1, "max_attempts": 3, "cancel_requested": False, "log": "",
                     "created_at": t0, "updated_at": t0})
        done = status == "succeeded"
        common = {"id": run_id, "model_id": f"m{rng.randrange(8)}", "job_id": job_id,
                  "name": f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{i}" if rng.random() < 0.9 else None,
                  "tags": rng.sample(TAGS, rng.randint(0, 3)), "spec": {"task_sets": ["all"]},
                  "created_at": t0 + timedelta(seconds=rng.randrange(10 ** 7)),
                  "finished_at": t0 + timedelta(days=200) if done else None}
        if is_trace:
            layers = rng.choice((24, 28, 32, 36, 48))
            trained = rng.randint(1, layers // 2)
            traces.append({**common, "plan": f"0-{trained - 1}" if done else None,
                           "plan_share": trained / layers if done else None,
                           "vulnerable_layer": rng.randrange(layers) if done else None})
        else:
            experiments.append({**common, "kind": rng.choice(("trial", "experiment")),
                                "best_allocation": rng.choice(("0-3", "train-deep", "full", "train-shallow")) if done else None,
                                "best_label": None, "delta_retention": rng.uniform(-0.5, 0.1) if done else None,
                                "delta_acquisition": rng.uniform(-0.05, 0.7) if done else None,
                                "retention_significant": rng.random() < 0.5 if done else None,
                                "acquisition_significant": rng.random() < 0.5 if done else None})
    for row in experiments:
        row["best_label"] = row["best_allocation"]
    with engine.begin() as conn:
        conn.execute(insert(Model), models)
        for table, rows in ((Job, jobs), (Trace, traces), (Experiment, experiments)):
            for start in range(0, len(rows), 2000):
                conn.execute(insert(table), rows[start:start + 2000])
    if engine.dialect.name == "postgresql":  # planner statistics, as autovacuum would gather after a bulk load
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    engine.dispose()


def timed(call, repeats: int) -> list[float]:
    call()  # warm: the first request of a query pays for the plan and the caches
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def start_server(url: str, data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "LAYERTRACER_DATA_DIR": str(data_dir), "LAYERTRACER_DATABASE_URL": url,
           "LAYERTRACER_AUTH": "none"}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "backend.api:create_app", "--factory", "--host",
                               "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
                              cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/api/v1/health").status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit("the API server did not start")
        time.sleep(0.1)


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()


def run(label: str, url: str, data_dir: Path, runs: int, repeats: int) -> None:
    t0 = time.perf_counter()
    upgrade(url)
    fill(url, runs)
    print(f"\n{label}: {runs:,} traces + {runs:,} trials/experiments inserted and migrated in {time.perf_counter() - t0:.1f} s")
    server, base = start_server(url, data_dir)
    try:
        api = httpx.Client(base_url=f"{base}/api/v1", timeout=60)

        def get(path: str, **params):
            def call():
                response = api.get(path, params={"limit": 50, **params})
                assert response.status_code == 200, response.text[:300]
                return response.json()
            return call

        cases = {
            "sort": [("traces", {"sort": "-vulnerable_layer"}), ("traces", {"sort": "plan"}),
                     ("experiments", {"sort": "-delta_retention"}), ("experiments", {"sort": "delta_acquisition"}),
                     ("experiments", {"sort": "best_allocation"}), ("experiments", {"sort": "name"})],
            "filter": [("traces", {"q": "deep-plan", "sort": "-vulnerable_layer"}),
                       ("traces", {"status": "failed", "sort": "-created"}),
                       ("experiments", {"tag": "qwen", "sort": "-delta_retention"}),
                       ("experiments", {"model": "m3", "kind": "trial", "sort": "-delta_acquisition"}),
                       ("experiments", {"q": "中文", "status": "succeeded", "sort": "delta_retention"})],
            "page": [("traces", {"sort": "-plan", "offset": 9000}), ("experiments", {"sort": "-delta_retention", "offset": 9000})],
        }
        rows = []
        for group, items in cases.items():
            for path, params in items:
                times = timed(get(f"/{path}", **params), repeats)
                rows.append((group, f"GET /{path}?" + "&".join(f"{k}={v}" for k, v in params.items()), times))

        # The dashboard callback that builds the table (request + components) for a sorted, filtered view.
        from frontend.app import create_dash
        create_dash(api_url=base)
        from frontend.pages import runs as page

        view = page.RunsView(kind="experiments", sort="-delta_retention", tag="qwen", size=50)
        rows.append(("callback", "runs.render (experiments, tag, -delta_retention, 50 rows)",
                     timed(lambda v=asdict(view): page.render(v, None, None, None, None), repeats)))
        view = page.RunsView(kind="traces", sort="-vulnerable_layer", page=150, size=50)
        rows.append(("callback", "runs.render (traces, page 150, -vulnerable_layer)",
                     timed(lambda v=asdict(view): page.render(v, None, None, None, None), repeats)))

        def naive():
            items = []
            for offset in range(0, runs, 500):
                items += get("/experiments", limit=500, offset=offset)()["data"]
            items.sort(key=lambda e: (e["delta_retention"] is None, -(e["delta_retention"] or 0)))
            return items[:50]

        naive_times = timed(naive, max(3, repeats // 10))
        rows.append(("naive", f"every experiment read ({runs // 500} x 500) and sorted in the client", naive_times))
        api.close()
    finally:
        stop(server)

    print(f"{'':9} {'what':78} {'p50 ms':>8} {'p95 ms':>8}")
    for group, what, times in rows:
        print(f"{group:9} {what[:78]:78} {percentile(times, 50):8.1f} {percentile(times, 95):8.1f}")
    server_sort = percentile([t for g, w, ts in rows if g == "sort" and "/experiments" in w and "delta_retention" in w
                              for t in ts], 50)
    print(f"naive / server sort (p50, -delta_retention on experiments): {percentile(naive_times, 50) / server_sort:.0f}x")
    worst = max(percentile(ts, 95) for g, _, ts in rows if g in ("sort", "filter"))
    print(f"target: sort and filter p95 < 300 ms -> worst p95 {worst:.1f} ms: {'met' if worst < 300 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="traces, and as many trials/experiments")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--postgres", action="store_true",
                        help=f"also on Postgres at 127.0.0.1:5432, in a database {PG_DATABASE} of its own (dropped after)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lt-bench-runs-") as tmp:
        data_dir = Path(tmp)
        run("SQLite", f"sqlite:///{data_dir / 'runs.db'}", data_dir, args.runs, args.repeats)
        if args.postgres:
            admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{PG_DATABASE}"'))
            try:
                run("Postgres", f"{PG_SERVER}/{PG_DATABASE}", data_dir, args.runs, args.repeats)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'))
                admin.dispose()


if __name__ == "__main__":
    main()
