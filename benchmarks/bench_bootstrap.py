"""Peak memory of the stability-curve bootstrap (``layertracer.stats.bootstrap_mean_ci``) against the
straightforward gather (all resample indices at once, ``values[idx].mean(axis=1)``), side by side in
one run, for 100, 1,000 and 10,000 prompts x 80 layers x 1,000 resamples, with the slope per 1,000
prompts. Each measurement runs in a fresh child process (its own peak-RSS mark).

    python benchmarks/bench_bootstrap.py [--layers 80] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r'''
import json, sys, time
import numpy as np
sys.path.insert(0, "benchmarks")
from machine import current_rss_mib, peak_rss_mib, reset_peak_rss
from layertracer.stats import bootstrap_mean_ci
way, n, layers, resamples = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
values = np.random.default_rng(0).random((n, layers))
ok = reset_peak_rss(); base = current_rss_mib(); start = time.perf_counter()
if way == "engine":
    bootstrap_mean_ci(values, resamples=resamples, seed=0)
else:
    idx = np.random.default_rng(0).integers(0, n, size=(resamples, n))
    means = values[idx].mean(axis=1)
    np.quantile(means, [0.025, 0.975], axis=0)
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mib": peak_rss_mib(ok) - base}))
'''


def measure(way: str, n: int, layers: int, resamples: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, way, str(n), str(layers), str(resamples)],
                          capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)) or ".")
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=80)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    print(f"{args.layers} layers, {args.resamples} resamples; machine load (1 min) {os.getloadavg()[0]:.2f}")
    print(f"{'prompts':>8} | {'engine peak MiB':>15} {'s':>6} | {'gather peak MiB':>15} {'s':>6} | gather/engine memory")
    peaks = {}
    for n in (100, 1000, 10000):
        engine = measure("engine", n, args.layers, args.resamples)
        gather = measure("gather", n, args.layers, args.resamples)
        peaks[n] = (engine["peak_mib"], gather["peak_mib"])
        print(f"{n:>8} | {engine['peak_mib']:>15.0f} {engine['seconds']:>6.2f} | {gather['peak_mib']:>15.0f} "
              f"{gather['seconds']:>6.2f} | {gather['peak_mib'] / max(engine['peak_mib'], 1):.0f}x")
    for label, index in (("engine", 0), ("gather", 1)):
        slope = (peaks[10000][index] - peaks[1000][index]) / 9
        print(f"slope per 1,000 prompts ({label}): {slope:.1f} MiB")


if __name__ == "__main__":
    main()
