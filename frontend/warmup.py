"""Warm the dashboard's figure code once per process, in a background thread.

The first trace page a fresh dashboard process built took about 0.3 s longer than the next ones: plotly
creates the validators of every trace type and attribute on first use. Drawing one small figure of each
kind when the app is created moves that cost out of the first visitor's wait.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

log = logging.getLogger(__name__)
_started = threading.Event()


def tiny_trace(num_layers: int = 3) -> dict[str, Any]:
    """A minimal trace overview with one task's prompts (the shapes of docs/schemas.md), for drawing."""
    L = num_layers
    curve = [(l + 1) / L for l in range(L)]
    task = {
        "name": "warm-up", "mean_target_prob": curve, "mean_target_rank": [float(L - l) for l in range(L)],
        "mean_entropy": [1.0] * L, "num_prompts": 1, "top1_tokens": [[["a", 1]]] * L, "task_particle": 1,
        "particle_counts": {"1": 1}, "final_accuracy": 1.0, "prompts": ["p"], "targets": ["a"], "target_tokens": ["a"],
        "target_prob": [curve], "target_rank": [[0] * L], "entropy": [[1.0] * L], "top_tokens": [[["a"]] * L],
        "top_probs": [[[0.5]] * L], "prompt_particles": [1],
    }
    sens = {"perturbation": "skip", "mean_js": curve, "ci_low": curve, "ci_high": curve, "ci_level": 0.95,
            "vulnerable_layer": L - 1}
    return {
        "num_layers": L, "block_kinds": ["attention"] * L, "model": {}, "options": {}, "tasks": {"warm-up": task},
        "sensitivity": sens, "sensitivities": {"skip": sens}, "vulnerable_layer": L - 1,
        "similarity": {"cka": [[1.0] * L for _ in range(L)], "prompts_used": 1},
        "position_view": {"task": "warm-up", "prompt_index": 0, "tokens": ["x", "y"], "target_token": "a",
                          "target_prob": [[0.1, 0.2]] * L, "top1_tokens": [["x", "y"]] * L, "top1_probs": [[0.5, 0.6]] * L},
        "freeze_plan": {"train_layers": [0], "freeze_layers": list(range(1, L)), "train_ranges": "0",
                        "freeze_ranges": f"1-{L - 1}", "boundary": 1, "evidence": {"task_particles": {"warm-up": 1}}},
    }


def warm_up() -> None:
    """Build the trace page's body (every figure, the controls, the tables) once and encode it as Dash
    does; then each figure once more with normalised depth."""
    from dash._utils import to_json

    from frontend.pages import trace as page
    from frontend.viz import trace as tv

    result = tiny_trace()
    meta = {"id": "warm-up", "status": "succeeded", "model": {"id": "warm-up"}}
    to_json(page.figures_view(meta, result, page.view_from_query(result, {})))
    to_json([tv.task_heatmap(result, "rank", normalized=True), tv.stability_figure(result, normalized=True),
             tv.similarity_figure(result, normalized=True), tv.plan_figure(result, normalized=True),
             tv.position_grid(result, normalized=True)])


def start_warm_up() -> Optional[threading.Thread]:
    """Run ``warm_up`` in a daemon thread, once per process; None when it has already been started."""
    if _started.is_set():
        return None
    _started.set()

    def run() -> None:
        try:
            warm_up()
        except Exception:  # a failed warm-up costs speed only; the page draws the same figures itself
            log.exception("dashboard warm-up failed")

    thread = threading.Thread(target=run, name="dashboard-warm-up", daemon=True)
    thread.start()
    return thread
