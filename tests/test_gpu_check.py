"""benchmarks/gpu_check.py stays runnable between the rare sessions that have a GPU: its tiny CPU run
executes every part and the trace's last layer agrees with the model's own output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_check(*args: str) -> dict[str, list[dict]]:
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny", "--device", "cpu", "--batch-size", "4", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_part: dict[str, list[dict]] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            part = json.loads(line)
            by_part.setdefault(part["part"], []).append(part)
    return by_part


def test_the_gpu_check_runs_on_a_cpu_with_tiny_shapes():
    by_part = run_check()
    assert set(by_part) == {"machine", "trace", "nnsight", "eval", "train", "done"}
    assert not [p for parts in by_part.values() for p in parts if "error" in p]
    trace = by_part["trace"][0]
    assert trace["prompts"] == 20 and len(trace["perturbations"]) == 5
    assert trace["last_layer_vs_model_max_abs_dp"] < 1e-4
    assert by_part["eval"][0]["questions"] == 20
    assert [t["allocation"] for t in by_part["train"]] == ["train-shallow", "full"]


def test_parts_past_the_budget_are_reported_skipped_and_the_check_still_ends():
    by_part = run_check("--budget-s", "0", "--parts", "trace,eval,train")
    assert [p["part"] for parts in by_part.values() for p in parts] == ["machine", "trace", "eval", "train", "done"]
    assert "budget" in by_part["trace"][0]["skipped"] and "budget" in by_part["train"][0]["skipped"]
    assert "trace part's model" in by_part["eval"][0]["skipped"]
