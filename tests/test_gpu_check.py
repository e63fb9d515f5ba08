"""benchmarks/gpu_check.py stays runnable between the rare sessions that have a GPU: its tiny CPU run
executes every part and the trace's last layer agrees with the model's own output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_on_a_cpu_with_tiny_shapes():
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny", "--device", "cpu", "--batch-size", "4"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parts = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    by_part = {}
    for part in parts:
        by_part.setdefault(part["part"], []).append(part)
    assert set(by_part) == {"machine", "trace", "nnsight", "eval", "train"}
    trace = by_part["trace"][0]
    assert trace["prompts"] == 20 and len(trace["perturbations"]) == 5
    assert trace["last_layer_vs_model_max_abs_dp"] < 1e-4
    assert by_part["eval"][0]["questions"] == 20
    assert [t["allocation"] for t in by_part["train"]] == ["train-shallow", "full"]
