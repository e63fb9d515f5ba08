"""Read latency of the trace endpoints for a large trace, through a real uvicorn server on loopback.

Builds a trace result in the engine's JSON shape (README "OUT.json": 36 layers x 10 tasks x 200
prompts, top-10 tokens per layer, two perturbations with per-prompt JS), stores it with
``backend.results.store_trace_result`` (as the worker does), serves the API with uvicorn in a
subprocess and times, with httpx over loopback (the full body read, no JSON parse on the client):

    GET /traces/{id}, /traces/{id}/result, /traces/{id}/overview, /traces/{id}/tasks/{task}, /traces/{id}/export.csv

Prints p50 / p95 in ms per endpoint and the response sizes. Target: /result p95 < 100 ms.

    .venv/bin/python benchmarks/bench_api.py                       # SQLite in a temporary data folder
    .venv/bin/python benchmarks/bench_api.py --database-url postgresql://postgres@127.0.0.1:5432/test --fresh-pg
"""

from __future__ import annotations

import argparse
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy.orm import Session  # noqa: E402

from backend.db.migrate import upgrade  # noqa: E402
from backend.db.models import Model, Trace  # noqa: E402
from backend.db.session import make_engine  # noqa: E402
from backend.results import store_trace_result  # noqa: E402


def build_trace_result(layers: int, tasks: int, prompts: int, top_k: int, seed: int = 0) -> dict:
    """A TraceResult JSON dict (README schema) with realistic value ranges, deterministic in ``seed``."""
    rng = random.Random(seed)
    vocab = [f" tok{i}" for i in range(5000)]
    task_dicts, prompt_index = {}, []
    for t in range(tasks):
        name = f"task_{t:02d}"
        rise = rng.randint(layers // 4, 3 * layers // 4)
        probs, ranks, entropy, top_tokens, top_probs, particles = [], [], [], [], [], []
        for p in range(prompts):
            shift = rng.randint(-3, 3)
            curve = [1 / (1 + math.exp(-(l - rise - shift))) * rng.uniform(0.6, 1.0) for l in range(layers)]
            probs.append(curve)
            ranks.append([max(0, int((1 - c) * 200)) for c in curve])
            entropy.append([rng.uniform(0.5, 8.0) for _ in range(layers)])
            top_tokens.append([[rng.choice(vocab) for _ in range(top_k)] for _ in range(layers)])
            top_probs.append([sorted((round(rng.random() / (j + 1), 6) for j in range(top_k)), reverse=True)
                              for _ in range(layers)])
            particles.append(rise + shift if 0 <= rise + shift < layers else None)
        mean = [sum(c[l] for c in probs) / prompts for l in range(layers)]
        task_dicts[name] = {
            "name": name, "language": "en",
            "prompts": [f"Example prompt {p} of {name}: the answer is" for p in range(prompts)],
            "targets": [f" answer{p}" for p in range(prompts)],
            "target_tokens": [f" answer{p}" for p in range(prompts)],
            "target_token_ids": [1000 + p for p in range(prompts)],
            "boundary_merged": [False] * prompts,
            "target_prob": probs, "target_rank": ranks, "entropy": entropy,
            "top_tokens": top_tokens, "top_probs": top_probs, "mean_target_prob": mean,
            "baseline_prob": [0.001] * prompts, "task_particle": rise, "prompt_particles": particles,
            "particle_counts": {str(rise): prompts}, "final_accuracy": 0.8,
        }
        prompt_index.extend([name, p] for p in range(prompts))
    n = len(prompt_index)
    sensitivities = {}
    for name, kind in (("skip", "skip"), ("mask(keep=0.5)", "mask")):
        js = [[rng.uniform(0.0, math.log(2)) for _ in range(layers)] for _ in range(n)]
        mean = [sum(row[l] for row in js) / n for l in range(layers)]
        sensitivities[name] = {
            "perturbation": name, "params": {"kind": kind, "draws": 3 if kind == "mask" else 1, "seed": 0},
            "js": js, "mean_js": mean, "ci_low": [m * 0.95 for m in mean], "ci_high": [m * 1.05 for m in mean],
            "ci_level": 0.95, "mean_js_by_task": {}, "vulnerable_layer": max(range(layers), key=mean.__getitem__),
        }
    vulnerable = sensitivities["skip"]["vulnerable_layer"]
    boundary = layers // 2
    return {
        "schema_version": 1, "version": "0.1.0", "num_layers": layers, "block_kinds": ["attention"] * layers,
        "normalized_depth": [(l + 1) / layers for l in range(layers)],
        "model": {"source": "/models/bench", "architecture": "Qwen3ForCausalLM", "num_layers": layers,
                  "hidden_size": 4096, "vocab_size": 151936, "num_parameters": 8_000_000_000,
                  "block_kinds": ["attention"] * layers, "adapter_source": "table", "dtype": "bfloat16",
                  "device": "cuda", "fingerprint": "0" * 64},
        "options": {"seed": 0, "batch_size": 8, "top_k": top_k, "perturbations": list(sensitivities)},
        "tasks": task_dicts, "prompt_index": prompt_index,
        "sensitivity": sensitivities["skip"], "sensitivities": sensitivities, "vulnerable_layer": vulnerable,
        "similarity": {"cka": [[1.0 - abs(i - j) / layers for j in range(layers)] for i in range(layers)],
                       "consecutive_cosine": [0.9] * (layers - 1), "prompts_used": min(n, 512)},
        "position_view": None,
        "freeze_plan": {"train_layers": list(range(boundary)), "freeze_layers": list(range(boundary, layers)),
                        "train_ranges": f"0-{boundary - 1}", "freeze_ranges": f"{boundary}-{layers - 1}",
                        "boundary": boundary, "rule": "median", "parameters": {"min_train": 1},
                        "evidence": {"task_particles": {}, "earliest_particle": None, "vulnerable_layer": vulnerable,
                                     "vulnerable_mean_js": None, "fallback": False}, "reasons": []},
        "timings": {},
    }


FLOOR_APP = """
import sys
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
BODY = b"x" * int(sys.argv[1])
async def big(request):
    return Response(BODY, media_type="application/json")
app = Starlette(routes=[Route("/big", big)])
import uvicorn
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=36)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per endpoint")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    parser.add_argument("--fresh-pg", action="store_true", help="create (and drop) a fresh database on that server")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    url = args.database_url or f"sqlite:///{data_dir / 'bench.db'}"
    admin, pg_name = None, None
    if args.fresh_pg:
        from sqlalchemy import create_engine, text

        from backend.settings import normalize_database_url

        admin = create_engine(normalize_database_url(url), isolation_level="AUTOCOMMIT")
        pg_name = f"bench_api_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{pg_name}"'))
        url = url.rsplit("/", 1)[0] + "/" + pg_name
    try:
        run(args, url, data_dir)
    finally:
        if admin is not None:
            from sqlalchemy import text

            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
            admin.dispose()


def time_get(client: httpx.Client, url: str, n: int) -> tuple[list[float], int]:
    """n timed GETs of ``url`` after 3 warm-ups: (milliseconds each, body size)."""
    for _ in range(3):
        client.get(url).raise_for_status()
    times, nbytes = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.get(url)
        body = response.content
        times.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
        nbytes = len(body)
    return times, nbytes


def wait_up(client: httpx.Client, url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.get(url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit(f"the server for {url} did not start")
        time.sleep(0.1)


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()


def run(args, url: str, data_dir: Path) -> None:
    t0 = time.perf_counter()
    result = build_trace_result(args.layers, args.tasks, args.prompts, args.top_k)
    built = time.perf_counter() - t0
    upgrade(url)
    engine = make_engine(url)
    with Session(engine, expire_on_commit=False) as session:
        model = Model(source="/models/bench", source_kind="local", name="bench")
        session.add(model)
        session.flush()
        trace = Trace(model_id=model.id, spec={"task_sets": ["all"]})
        session.add(trace)
        session.commit()
        t0 = time.perf_counter()
        store_trace_result(session, trace_id=trace.id, result=result)
        stored = time.perf_counter() - t0
        trace_id, size = trace.id, trace.result_bytes
    engine.dispose()
    print(f"trace: {args.layers} layers x {args.tasks} tasks x {args.prompts} prompts, top-{args.top_k}; "
          f"result JSON {size / 1e6:.1f} MB (built in {built:.1f} s, stored in {stored:.2f} s)")

    port = free_port()
    env = {**os.environ, "LAYERTRACER_DATA_DIR": str(data_dir), "LAYERTRACER_DATABASE_URL": url,
           "LAYERTRACER_AUTH": "none"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "backend.api:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=REPO, env=env,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    floor_port = free_port()
    floor = subprocess.Popen([sys.executable, "-c", FLOOR_APP, str(size), str(floor_port)], cwd=REPO)
    try:
        with httpx.Client(timeout=30) as client:
            wait_up(client, f"{base}/health", server)
            wait_up(client, f"http://127.0.0.1:{floor_port}/big", floor)
            task = next(iter(result["tasks"]))
            endpoints = {
                "GET /traces/{id}": f"{base}/traces/{trace_id}",
                "GET /traces/{id}/result": f"{base}/traces/{trace_id}/result",
                "GET /traces/{id}/overview": f"{base}/traces/{trace_id}/overview",
                "GET /traces/{id}/tasks/{task}": f"{base}/traces/{trace_id}/tasks/{task}",
                "GET /traces/{id}/export.csv": f"{base}/traces/{trace_id}/export.csv",
                "(floor: same bytes from a bare Starlette app)": f"http://127.0.0.1:{floor_port}/big",
            }
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            print(f"{args.requests} requests per endpoint, database {url.split(':')[0]}, "
                  f"{os.cpu_count()} CPUs, load average {load:.1f}")
            print(f"{'endpoint':48s} {'p50 ms':>8s} {'p95 ms':>8s} {'bytes':>12s}")
            for label, endpoint in endpoints.items():
                times, nbytes = time_get(client, endpoint, args.requests)
                print(f"{label:48s} {statistics.median(times):8.1f} {percentile(times, 95):8.1f} {nbytes:12,d}")
                if os.environ.get("BENCH_DEBUG"): print(sorted(round(t) for t in times))
    finally:
        stop(server)
        stop(floor)


if __name__ == "__main__":
    main()
