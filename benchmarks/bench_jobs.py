"""Submission-to-pick-up latency of the job service: Redis (served mode) and the embedded broker.

For each mode it starts the real service (the API under uvicorn and one Celery worker as subprocesses,
over Postgres + Redis or SQLite + the filesystem broker), registers a tiny model and submits ``--jobs``
cheap traces one after another, each when the worker is idle. The pick-up latency of a job is the time
from the API writing its row (``jobs.created_at``) to the worker's claim (``jobs.started_at``): the
API's send, the broker, the worker's fetch and the claim. Also printed: submit-to-done as a client sees it
(POST until the job reads ``succeeded``, polled every 20 ms).

    .venv/bin/python benchmarks/bench_jobs.py                    # both modes, 30 jobs each
    .venv/bin/python benchmarks/bench_jobs.py --modes served --jobs 50

Needs Postgres (127.0.0.1:5432, trust auth, database ``test``: a fresh database is created and dropped)
and Redis (127.0.0.1:6379, database 14, flushed) for the served mode. Target: p95 pick-up < 1 s with
Redis. Exit status 1 when the target is missed (with ``--strict``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "e2e")]

from harness import Service, wait_for  # noqa: E402  (the end-to-end tests' service harness)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/14"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    rank = max(1, int(round(q / 100 * len(ordered) + 0.5)))
    return ordered[min(rank, len(ordered)) - 1]


def measure(service: Service, model_root: Path, jobs: int) -> dict[str, list[float]]:
    from sqlalchemy import select

    from backend.db.models import Job
    from backend.db.session import make_engine, session_scope

    model = service.register_model(model_root / "tiny")
    body = {"model_id": model["id"], "task_sets": ["antonyms_en"], "perturbations": ["skip"],
            "options": {"limit": 1, "similarity": False, "position_view": False}}
    # Warm-up: the worker's first trace imports the model classes.
    service.wait_job(service.post("/traces", body)["job"]["id"])
    engine = make_engine(service.database_url)
    pickup, done = [], []
    for _ in range(jobs):
        start = time.perf_counter()
        job_id = service.post("/traces", body)["job"]["id"]
        wait_for(lambda: service.job(job_id)["status"] == "succeeded", 60, f"job {job_id}", interval=0.02)
        done.append(time.perf_counter() - start)
        with session_scope(engine) as session:
            job = session.execute(select(Job).where(Job.id == job_id)).scalar_one()
            pickup.append((job.started_at - job.created_at).total_seconds())
    engine.dispose()
    return {"pickup": pickup, "done": done}


def run_mode(mode: str, jobs: int, model_root: Path, workdir: Path) -> dict[str, list[float]]:
    urls: dict[str, str] = {}
    database = None
    if mode == "served":
        import psycopg
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        database = f"lt_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
        urls = {"database_url": f"postgresql://postgres@127.0.0.1:5432/{database}", "broker_url": REDIS_URL}
    service = Service(workdir / mode, model_roots=(model_root,), **urls)
    try:
        service.start_api()
        service.start_worker()
        return measure(service, model_root, jobs)
    finally:
        service.stop()
        if database:
            import psycopg
            import redis

            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            redis.Redis.from_url(REDIS_URL).flushdb()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--modes", default="served,embedded", help="served (Postgres + Redis), embedded")
    parser.add_argument("--strict", action="store_true", help="exit 1 if Redis p95 pick-up is 1 s or more")
    args = parser.parse_args()
    import tiny_models

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        workdir = Path(tmp)
        model_root = workdir / "models"
        tiny_models.save_tiny_model("qwen3", model_root / "tiny", tiny_models.build_tokenizer())
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            results[mode] = run_mode(mode, args.jobs, model_root, workdir)
    label = {"served": "Redis + Postgres", "embedded": "filesystem + SQLite"}
    print(f"\nsubmission -> worker pick-up, {args.jobs} jobs per mode, one idle worker (seconds)")
    print(f"{'broker':<22}{'median':>9}{'p95':>9}{'max':>9}   {'submit->done median':>20}{'p95':>9}")
    for mode, values in results.items():
        pickup, done = values["pickup"], values["done"]
        print(f"{label.get(mode, mode):<22}{statistics.median(pickup):>9.3f}{percentile(pickup, 95):>9.3f}"
              f"{max(pickup):>9.3f}   {statistics.median(done):>20.3f}{percentile(done, 95):>9.3f}")
    if "served" in results:
        p95 = percentile(results["served"]["pickup"], 95)
        verdict = "meets" if p95 < 1.0 else "MISSES"
        print(f"target: Redis p95 pick-up < 1 s: {verdict} ({p95:.3f} s)")
        if args.strict and p95 >= 1.0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
