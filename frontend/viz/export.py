"""The data behind each trace figure as rows (for CSV) or JSON, from the engine's TraceResult JSON."""

from __future__ import annotations

from typing import Any, Optional

from frontend.viz.trace import num_layers, particle_histogram, prompt_matrix, task_metric_curve

Result = dict[str, Any]
FIGURES = ("tasks", "lines", "prompts", "position", "stability", "similarity", "plan", "verdict")


def _depth(l: int, L: int) -> float:
    return round((l + 1) / L, 6)


def rows_for(result: Result, what: str, *, metric: str = "prob", task: Optional[str] = None) -> tuple[list[str], list[list]]:
    """(header, rows) of one figure's data, one row per plotted value."""
    L = num_layers(result)
    kinds = result.get("block_kinds") or [""] * L
    if what in ("tasks", "lines"):  # the line view draws the heatmap's numbers
        header = ["task", "layer", "normalized_depth", "block_kind", metric, "task_particle"]
        rows = []
        for name, t in result["tasks"].items():
            for l, v in enumerate(task_metric_curve(t, metric, L)):
                rows.append([name, l, _depth(l, L), kinds[l], v, t.get("task_particle")])
        return header, rows
    if what == "prompts":
        name = task or next(iter(result["tasks"]))
        t = result["tasks"][name]
        header = ["task", "prompt_index", "target_token", "layer", "normalized_depth", metric, "prompt_particle", "top_tokens"]
        rows = []
        particles = t.get("prompt_particles") or [None] * len(t["prompts"])
        for i, row in enumerate(prompt_matrix(t, metric)):
            for l, v in enumerate(row):
                tops = t["top_tokens"][i][l] if t.get("top_tokens") else []
                rows.append([name, i, t["target_tokens"][i], l, _depth(l, L), v, particles[i], " ".join(repr(x) for x in tops)])
        return header, rows
    if what == "position":
        view = result.get("position_view") or {}
        header = ["layer", "position", "token", "top1_token", "top1_prob", "target_prob"]
        rows = []
        for l in range(L if view else 0):
            for i, tok in enumerate(view["tokens"]):
                rows.append([l, i, tok, view["top1_tokens"][l][i], view["top1_probs"][l][i], view["target_prob"][l][i]])
        return header, rows
    if what == "stability":
        header = ["perturbation", "layer", "normalized_depth", "mean_js_nats", "ci_low", "ci_high", "vulnerable_layer"]
        rows = []
        for name, s in (result.get("sensitivities") or {}).items():
            for l in range(L):
                rows.append([name, l, _depth(l, L), s["mean_js"][l], (s.get("ci_low") or [None] * L)[l],
                             (s.get("ci_high") or [None] * L)[l], s.get("vulnerable_layer")])
        return header, rows
    if what == "similarity":
        sim = result.get("similarity") or {}
        header = ["layer_a", "layer_b", "linear_cka"]
        rows = [[i, j, v] for i, row in enumerate(sim.get("cka") or []) for j, v in enumerate(row)]
        return header, rows
    if what == "plan":
        plan = result.get("freeze_plan") or {}
        train = set(plan.get("train_layers") or [])
        header = ["layer", "normalized_depth", "block_kind", "decision"]
        return header, [[l, _depth(l, L), kinds[l], "train" if l in train else "freeze"] for l in range(L)]
    if what == "verdict":
        plan = result.get("freeze_plan") or {}
        train = set(plan.get("train_layers") or [])
        histogram = particle_histogram(result)
        mean_js = (result.get("sensitivity") or {}).get("mean_js") or [None] * L
        vulnerable = result.get("vulnerable_layer")
        header = ["layer", "normalized_depth", "decision"] + [f"particle_share_{n}" for n in histogram] + ["mean_js_nats", "vulnerable"]
        return header, [[l, _depth(l, L), "train" if l in train else "freeze"] + [h[l] for h in histogram.values()]
                        + [mean_js[l], int(l == vulnerable)] for l in range(L)]
    raise ValueError(f"unknown figure {what!r}; use one of {', '.join(FIGURES)}")


def json_for(result: Result, what: str, *, task: Optional[str] = None) -> Any:
    """The slice of the result behind one figure, as it is in the result JSON."""
    if what in ("tasks", "lines"):
        L = num_layers(result)  # the curves as the figures draw them: the same from a result and an overview
        curves = {"mean_log_rank": "logrank", "top1_accuracy": "top1", "top10_accuracy": "top10", "mean_kl_to_final": "kl"}
        return {name: {k: t[k] for k in ("mean_target_prob", "task_particle", "particle_counts", "final_accuracy")}
                | {key: task_metric_curve(t, metric, L) for key, metric in curves.items()}
                for name, t in result["tasks"].items()} | {"num_layers": result["num_layers"], "block_kinds": result.get("block_kinds")}
    if what == "prompts":
        name = task or next(iter(result["tasks"]))
        return {"task": name, **result["tasks"][name]}
    if what == "position":
        return result.get("position_view")
    if what == "stability":
        # The curves and their intervals; the per-prompt JS matrix is in the whole result's JSON export.
        curves = {name: {k: v for k, v in s.items() if k != "js"} for name, s in (result.get("sensitivities") or {}).items()}
        return {"sensitivities": curves, "vulnerable_layer": result.get("vulnerable_layer")}
    if what == "similarity":
        return result.get("similarity")
    if what == "plan":
        return result.get("freeze_plan")
    if what == "verdict":
        return {"freeze_plan": result.get("freeze_plan"), "vulnerable_layer": result.get("vulnerable_layer"),
                "particles": {name: {"task_particle": t.get("task_particle"), "particle_bootstrap": t.get("particle_bootstrap")}
                              for name, t in result["tasks"].items()},
                "mean_js": (result.get("sensitivity") or {}).get("mean_js")}
    raise ValueError(f"unknown figure {what!r}; use one of {', '.join(FIGURES)}")
