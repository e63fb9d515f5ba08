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


def test_the_training_flop_count_is_palms_for_full_and_counts_frozen_blocks_gradients():
    """Against the parameters of the real model class: ``full`` is PaLM's 6 N + 12 L H Q T (N the
    weight matrices of the blocks and the head); train-shallow adds to the forward the input
    gradients of every block above its lowest (all of them: it trains block 0) and the head, and
    weight gradients of its own blocks only."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_check
    from layertracer.training.allocation import resolve_allocation

    shape, context = gpu_check.QWEN3_1_7B, 1024
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(Qwen3Config(**shape, tie_word_embeddings=False))
    linear = lambda module: sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))
    blocks = [linear(b) for b in model.model.layers]
    head = model.lm_head.weight.numel()
    L, hq = len(blocks), shape["num_attention_heads"] * shape["head_dim"]
    n = sum(blocks) + head
    full = resolve_allocation("full", L)
    assert full.head and set(full.layers) == set(range(L))
    assert gpu_check.training_flops_per_token(shape, full, context) == 6 * n + 12 * L * hq * context

    shallow = resolve_allocation("train-shallow", L)
    assert min(shallow.layers) == 0 and not shallow.head and len(shallow.layers) < L
    trained = sum(blocks[i] for i in shallow.layers)
    expected = (2 * n + 4 * L * hq * context) + (2 * n + 8 * L * hq * context) + 2 * trained
    assert gpu_check.training_flops_per_token(shape, shallow, context) == expected
