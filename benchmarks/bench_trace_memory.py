"""Benchmark: peak memory of a whole trace as the number of prompts grows (100, 1,000, 10,000).

Each size runs in a fresh subprocess: a seeded random Qwen3-architecture model (8 layers, hidden 128,
vocabulary 8,000; bench_trace.py's builder), random prompts of 12 tokens fed through bench_trace's
stub tokenizer, ``layertracer.trace`` with the lens at every layer, the ``skip`` scan over every layer
and the default 1,000-resample bootstrap of the stability curve (10,000 prompts: about 3 minutes on
2 idle cores). The child resets the
kernel's peak-RSS mark after building the model and the prompts, so the figure is the trace's own
(its inputs, the recording of one batch, the result it builds); the parent prints the table and the
slope per 1,000 prompts between the two largest sizes. Target: linear in prompts with a small
constant, and a resample count that adds at most a bounded amount (a second run of the largest size
with 100 resamples shows how much).

    .venv/bin/python benchmarks/bench_trace_memory.py            # 100 / 1,000 / 10,000 prompts
    .venv/bin/python benchmarks/bench_trace_memory.py --sizes 100,1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

CHILD = r"""
import json, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import torch
torch.set_num_threads(2)
import layertracer as lt
from bench_trace import BenchConfig, StubTokenizer, build_model, make_prompts
from machine import current_rss_mib, peak_rss_mib, reset_peak_rss

prompts, resamples = int(sys.argv[3]), int(sys.argv[4])
cfg = BenchConfig(vocab_size=8_000, hidden_size=128, intermediate_size=384, num_layers=8, num_heads=4,
                  num_kv_heads=2, head_dim=32, prompts=prompts, tokens=12)
model = build_model(cfg)
ids, targets = make_prompts(cfg)
tokenizer = StubTokenizer(ids, targets)
loaded = lt.wrap_model(model, tokenizer, source="bench:qwen3-random")
task = lt.Task(name="random_tokens", items=[lt.TaskItem(prompt=p, target=t) for p, t in tokenizer.items])
options = lt.TraceOptions(batch_size=64, similarity=False, position_view=False, bootstrap_resamples=resamples)
before = current_rss_mib()
worked = reset_peak_rss()
started = time.perf_counter()
result = lt.trace(loaded, [task], perturbations=["skip"], options=options)
seconds = time.perf_counter() - started
print(json.dumps({"prompts": prompts, "resamples": resamples, "rss_before_mib": before,
                  "peak_mib": peak_rss_mib(worked), "seconds": seconds, "peak_reset": worked,
                  "layers": result.num_layers}))
"""


def measure(prompts: int, resamples: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(HERE.parent), str(HERE), str(prompts), str(resamples)],
                          capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    if done.returncode != 0:
        raise SystemExit(f"the {prompts}-prompt run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="prompt counts, comma-separated")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPUs, load average {load:.1f}; 8 layers, hidden 128, vocabulary 8,000, 12 tokens a prompt")
    print(f"{'prompts':>8s} {'resamples':>9s} {'peak - before MiB':>18s} {'peak MiB':>9s} {'seconds':>8s}")
    rows = []
    for prompts in sizes:
        row = measure(prompts, 1000)
        rows.append(row)
        print(f"{prompts:8d} {1000:9d} {row['peak_mib'] - row['rss_before_mib']:18.1f} {row['peak_mib']:9.1f} {row['seconds']:8.1f}")
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        slope = ((b["peak_mib"] - b["rss_before_mib"]) - (a["peak_mib"] - a["rss_before_mib"])) / ((b["prompts"] - a["prompts"]) / 1000)
        print(f"slope between {a['prompts']} and {b['prompts']} prompts: {slope:.1f} MiB per 1,000 prompts")
    few = measure(sizes[-1], 100)
    print(f"{sizes[-1]:8d} {100:9d} {few['peak_mib'] - few['rss_before_mib']:18.1f} {few['peak_mib']:9.1f} {few['seconds']:8.1f}")
    more = (rows[-1]["peak_mib"] - rows[-1]["rss_before_mib"]) - (few["peak_mib"] - few["rss_before_mib"])
    print(f"1,000 resamples against 100 at {sizes[-1]:,} prompts: {more:+.1f} MiB "
          "(the bootstrap's own figures: bench_bootstrap.py)")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
