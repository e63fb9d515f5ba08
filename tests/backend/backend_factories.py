"""Trace results with chosen numbers, deterministically: real TraceResults (README "OUT.json"), built
through the engine's own types (options, perturbation parameters, the result's serializer), so that
they cannot drift from what a trace writes (tests/backend/test_factories.py compares them key for key
with a real trace's result)."""

from __future__ import annotations

import math
import random
from dataclasses import asdict
from typing import Any


def trace_result(num_layers: int = 4, tasks: int = 2, prompts: int = 3, top_k: int = 3,
                 perturbations: tuple[str, ...] = ("skip", "mask(keep=0.5)"), seed: int = 0,
                 uncertainty: bool = True) -> dict[str, Any]:
    """A TraceResult JSON dict with L layers, T tasks of P prompts, top-k tokens and the sensitivities
    (and, unless ``uncertainty`` is False as in results written before it existed, the bootstrap)."""
    from layertracer.perturbation import Perturbation
    from layertracer.results import TraceResult
    from layertracer.tracer import TraceOptions
    from layertracer.uncertainty import annotate

    rng = random.Random(seed)
    L = num_layers
    task_dicts: dict[str, Any] = {}
    prompt_index = []
    for t in range(tasks):
        name = f"task{t}"
        probs = [[min(1.0, (l + 1) / L * rng.uniform(0.5, 1.0)) for l in range(L)] for _ in range(prompts)]
        ranks = [[max(0, L - l - rng.randint(0, 2)) for l in range(L)] for _ in range(prompts)]
        entropy = [[rng.uniform(0.1, 5.0) for _ in range(L)] for _ in range(prompts)]
        mean = [sum(p[l] for p in probs) / prompts for l in range(L)]
        task_dicts[name] = {
            "name": name, "language": "en",
            "prompts": [f"prompt {t}-{i} text" for i in range(prompts)],
            "targets": [f" target{i}" for i in range(prompts)],
            "target_tokens": [f" target{i}" for i in range(prompts)],
            "target_token_ids": [100 + i for i in range(prompts)],
            "boundary_merged": [False] * prompts,
            "target_prob": probs, "target_rank": ranks, "entropy": entropy,
            "top_tokens": [[[f"tok{j}" for j in range(top_k)] for _ in range(L)] for _ in range(prompts)],
            "top_probs": [[[round(rng.random(), 6) for _ in range(top_k)] for _ in range(L)] for _ in range(prompts)],
            "mean_target_prob": mean,
            "baseline_prob": [0.01] * prompts,
            "task_particle": (t + 1) % L if t % 3 else None,
            "prompt_particles": [i % L if i % 4 else None for i in range(prompts)],
            "particle_counts": {"none": prompts},
            "final_accuracy": 0.5,
        }
        prompt_index.extend([[name, i] for i in range(prompts)])
    n = len(prompt_index)
    sens = {}
    perts = [Perturbation.parse(p.replace("(", ":").rstrip(")")) for p in perturbations]
    for p, pert in zip(perturbations, perts):
        js = [[rng.uniform(0, math.log(2)) for _ in range(L)] for _ in range(n)]
        mean_js = [sum(r[l] for r in js) / n for l in range(L)]
        by_task = {name: [sum(js[i][l] for i, (t, _) in enumerate(prompt_index) if t == name) / prompts
                          for l in range(L)] for name in task_dicts}
        sens[p] = {
            "perturbation": p, "params": pert.describe(),
            "js": js, "mean_js": mean_js, "ci_low": [m * 0.9 for m in mean_js], "ci_high": [m * 1.1 for m in mean_js],
            "ci_level": 0.95, "mean_js_by_task": by_task, "vulnerable_layer": max(range(L), key=lambda l: mean_js[l]),
        }
    primary = sens[perturbations[0]] if perturbations else None
    vulnerable = primary["vulnerable_layer"] if primary else None
    boundary = L // 2
    options = TraceOptions(seed=7, batch_size=8, top_k=top_k)
    data = {
        "schema_version": 1, "version": "0.1.0", "num_layers": L,
        "block_kinds": ["attention"] * L, "normalized_depth": [(l + 1) / L for l in range(L)],
        "model": {"source": "/models/m", "architecture": "Qwen3ForCausalLM", "num_layers": L, "hidden_size": 32,
                  "vocab_size": 1000, "num_parameters": 12345, "block_kinds": ["attention"] * L,
                  "adapter_source": "table", "dtype": "float32", "device": "cpu", "fingerprint": "f" * 64,
                  "revision": None, "commit": None, "weights_sha256": {}, "device_map": None},
        "options": {**asdict(options), "perturbations": [p.describe() for p in perts]},
        "tasks": task_dicts, "prompt_index": prompt_index, "sensitivity": primary, "sensitivities": sens,
        "vulnerable_layer": vulnerable,
        "similarity": {"cka": [[1.0] * L for _ in range(L)], "consecutive_cosine": [0.9] * (L - 1), "prompts_used": n},
        "position_view": {"task": "task0", "prompt_index": 0, "tokens": ["a", "b"], "target_token": " target0",
                          "target_prob": [[0.1, 0.2]] * L, "top1_tokens": [["x", "y"]] * L, "top1_probs": [[0.5, 0.6]] * L},
        "freeze_plan": {"num_layers": L, "train_layers": list(range(boundary)), "freeze_layers": list(range(boundary, L)),
                        "train_ranges": f"0-{boundary - 1}", "freeze_ranges": f"{boundary}-{L - 1}",
                        "boundary": boundary, "rule": "median",
                        "parameters": {"min_train": 1, "boundary": "median", "protect_vulnerable": True},
                        "evidence": {"task_particles": {name: t["task_particle"] for name, t in task_dicts.items()},
                                     "earliest_particle": None, "vulnerable_layer": vulnerable,
                                     "vulnerable_mean_js": None, "fallback": False},
                        "reasons": ["because"]},
        "lens": {"kind": "logit"},
        "timings": {key: 0.0 for key in ("load", "oom_batch_splits", "resumed_prompts", "lens", "sensitivity",
                                         "statistics", "similarity", "positions")} | {"total": 1.0},
    }
    # the bootstrap fields come from the engine's own rule, as a real trace computes them after the lens
    result = TraceResult.from_dict(data)
    return (annotate(result) if uncertainty else result).to_dict()
