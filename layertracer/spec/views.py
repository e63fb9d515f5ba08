"""Views of a trace result derived from its JSON (``TraceResult.to_dict()``, README "OUT.json"): the
summary the API lists and the overview a trace page reads. Torch-free, so that the engine
(``TraceResult.overview()``), the backend (which derives them again for traces stored before a view
existed) and the tests all ask the one implementation.

Every function takes the plain JSON dict and returns plain JSON (non-finite floats as null).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Optional

# Per-prompt arrays of a task (the README's task table): the overview leaves them out.
TASK_PROMPT_KEYS = ("prompts", "targets", "target_tokens", "target_token_ids", "boundary_merged", "target_prob",
                    "target_rank", "entropy", "top_tokens", "top_probs", "baseline_prob", "prompt_particles", "kl_to_final")
OVERVIEW_TOP1 = 3  # most frequent top-1 lens tokens kept per task and layer
TOPK_LEVELS = (1, 5, 10)  # the k of the per-layer top-k accuracy (the answer's rank below k)


def clean_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (recursively through dicts and lists)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def mean_columns(matrix: Optional[list], num_layers: int) -> list[Optional[float]]:
    """[L] per-layer mean over prompts of a [P][L] matrix, skipping nulls (None where a layer has none)."""
    sums = [0.0] * num_layers
    counts = [0] * num_layers
    for row in matrix or []:
        for layer, value in enumerate(row[:num_layers]):
            if value is None:
                continue
            value = float(value)
            if math.isfinite(value):
                sums[layer] += value
                counts[layer] += 1
    return [sums[i] / counts[i] if counts[i] else None for i in range(num_layers)]


def log_rank(rank: Any) -> Optional[float]:
    """log10(1 + rank) of a 0-based rank (0 for top-1, 1 for rank 9, 2 for rank 99): a rank scale that
    does not saturate the way a mean rank over a 150k vocabulary does. None for a missing rank."""
    return None if rank is None else math.log10(1.0 + float(rank))


def mean_log_rank(ranks: Optional[list], num_layers: int) -> list[Optional[float]]:
    """[L] mean over prompts of log10(1 + rank) of a [P][L] rank matrix."""
    return mean_columns([[log_rank(r) for r in row] for row in ranks or []], num_layers)


def topk_accuracy(ranks: Optional[list], num_layers: int) -> dict[str, list[Optional[float]]]:
    """``{"1": [L], "5": [L], "10": [L]}``: per layer the share of prompts whose answer ranks below k
    (``TOPK_LEVELS``; top-1 accuracy at the last layer is ``final_accuracy``)."""
    return {str(k): mean_columns([[None if r is None else float(r < k) for r in row] for row in ranks or []], num_layers)
            for k in TOPK_LEVELS}


def layer_list(values: Optional[Iterable], num_layers: int) -> list[Optional[float]]:
    """``values`` as exactly ``num_layers`` JSON numbers (cut, or padded with None)."""
    out = list(clean_json(list(values or [])))[:num_layers]
    return out + [None] * (num_layers - len(out))


def top1_counts(top_tokens: Optional[list], num_layers: int) -> list[list[list[Any]]]:
    """[L] per layer the OVERVIEW_TOP1 most frequent top-1 lens tokens over the prompts: [[token, count], ...]."""
    counts = [Counter() for _ in range(num_layers)]
    for row in top_tokens or []:
        for layer, tokens in enumerate((row or [])[:num_layers]):
            if tokens:
                counts[layer][tokens[0]] += 1
    return [[[token, n] for token, n in c.most_common(OVERVIEW_TOP1)] for c in counts]


def trace_summary(result: dict[str, Any]) -> dict[str, Any]:
    """``{"num_layers", "block_kinds", "tasks": [names], "particles": {task: layer|null},
    "particle_uncertainty": {task: {"interval", "agreement", "warning"} | null}, "warnings": [text],
    "final_accuracy": {task: float}, "vulnerable_layer", "primary_perturbation", "freeze_plan", "lens"}``
    (the plan with its ``stability``; the uncertainty null / empty for results written before it; ``lens``
    the lens the particles were read with, ``logit`` or ``tuned``: ``logit`` for a result before it)."""
    tasks = result.get("tasks") or {}
    sensitivity = result.get("sensitivity") or {}
    boots = {name: t.get("particle_bootstrap") for name, t in tasks.items()}
    return clean_json({
        "num_layers": result.get("num_layers"),
        "block_kinds": result.get("block_kinds") or [],
        "tasks": list(tasks),
        "particles": {name: t.get("task_particle") for name, t in tasks.items()},
        "particle_uncertainty": {name: None if not b else {k: b.get(k) for k in ("interval", "agreement", "warning")}
                                 for name, b in boots.items()},
        "warnings": [b["warning"] for b in boots.values() if b and b.get("warning")],
        "final_accuracy": {name: t.get("final_accuracy") for name, t in tasks.items()},
        "vulnerable_layer": result.get("vulnerable_layer"),
        "primary_perturbation": sensitivity.get("perturbation"),
        "freeze_plan": result.get("freeze_plan"),
        "lens": (result.get("lens") or {}).get("kind", "logit"),
    })


def trace_overview(result: dict[str, Any]) -> dict[str, Any]:
    """The trace result without what grows with the number of prompts: what a trace page, a comparison,
    the CSV export or a freeze-plan reader needs, in a few hundred kB where the result can be tens of MB.

    Same keys as the result except: no ``prompt_index``; sensitivities without their per-prompt ``js``
    matrix; each task without the per-prompt arrays (``TASK_PROMPT_KEYS``) but with ``num_prompts``,
    ``mean_target_prob``, ``mean_target_rank``, ``mean_log_rank`` (log10(1 + rank)), ``mean_entropy`` and
    ``mean_kl_to_final`` ([L], means over prompts, nulls skipped; the KL all null for a result written
    before it), ``topk_accuracy`` (k -> [L]) and ``top1_tokens`` ([L] of up to 3 ``[token, count]``: the most frequent top-1 lens tokens).
    """
    num_layers = int(result["num_layers"])
    out = {k: v for k, v in result.items() if k not in ("prompt_index", "tasks", "sensitivity", "sensitivities")}

    def slim_sensitivity(sens: Optional[dict]) -> Optional[dict]:
        return None if sens is None else {k: v for k, v in sens.items() if k != "js"}

    out["sensitivity"] = slim_sensitivity(result.get("sensitivity"))
    out["sensitivities"] = {name: slim_sensitivity(s) for name, s in (result.get("sensitivities") or {}).items()}
    tasks = {}
    for name, task in (result.get("tasks") or {}).items():
        slim = {k: v for k, v in task.items() if k not in TASK_PROMPT_KEYS}
        slim["num_prompts"] = len(task.get("prompts") or task.get("target_prob") or [])
        if not slim.get("mean_target_prob"):
            slim["mean_target_prob"] = mean_columns(task.get("target_prob"), num_layers)
        slim["mean_target_rank"] = mean_columns(task.get("target_rank"), num_layers)
        slim["mean_entropy"] = mean_columns(task.get("entropy"), num_layers)
        slim["mean_log_rank"] = mean_log_rank(task.get("target_rank"), num_layers)
        slim["topk_accuracy"] = topk_accuracy(task.get("target_rank"), num_layers)
        slim["mean_kl_to_final"] = mean_columns(task.get("kl_to_final"), num_layers)
        slim["top1_tokens"] = top1_counts(task.get("top_tokens"), num_layers)
        tasks[name] = slim
    out["tasks"] = tasks
    return clean_json(out)


def layer_table(overview: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of the per task x layer table (the CSV export): ``task, layer, normalized_depth,
    mean_prob, mean_rank, mean_log_rank, top1_accuracy, top5_accuracy, top10_accuracy, mean_entropy,
    mean_kl_to_final, is_particle, mean_js_<primary>``; one row per task and layer,
    tasks in the result's order. Numbers stay numbers (None where unknown)."""
    num_layers = int(overview["num_layers"])
    primary = (overview.get("sensitivity") or {}).get("perturbation")
    js = layer_list((overview.get("sensitivity") or {}).get("mean_js"), num_layers)
    header = ["task", "layer", "normalized_depth", "mean_prob", "mean_rank", "mean_log_rank",
              *[f"top{k}_accuracy" for k in TOPK_LEVELS], "mean_entropy", "mean_kl_to_final", "is_particle",
              f"mean_js_{primary}" if primary else "mean_js"]
    rows = []
    for name, task in (overview.get("tasks") or {}).items():
        prob = layer_list(task.get("mean_target_prob"), num_layers)
        rank = layer_list(task.get("mean_target_rank"), num_layers)
        logrank = layer_list(task.get("mean_log_rank"), num_layers)
        topk = [layer_list((task.get("topk_accuracy") or {}).get(str(k)), num_layers) for k in TOPK_LEVELS]
        entropy = layer_list(task.get("mean_entropy"), num_layers)
        kl = layer_list(task.get("mean_kl_to_final"), num_layers)
        for layer in range(num_layers):
            rows.append([name, layer, (layer + 1) / num_layers, prob[layer], rank[layer], logrank[layer],
                         *[acc[layer] for acc in topk], entropy[layer], kl[layer],
                         int(task.get("task_particle") == layer), js[layer]])
    return header, rows
