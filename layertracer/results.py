"""The trace result: shape-documented data, serialised to JSON (NaN written as null).

Layer axes are 0-based block indices: index 0 is the state after the first block, index L-1 the
model's output (the last block's output through the final norm, head and logit processing).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from layertracer.freeze_plan import FreezePlan

SCHEMA_VERSION = 1


@dataclass
class TaskTrace:
    """The logit lens over one task's P prompts and L layers.

    target_prob, target_rank, entropy: [P][L] — probability of the target's first token, its rank
        (0 = top-1) and the entropy of the lens distribution (nats).
    top_tokens / top_probs: [P][L][k] — the k most likely tokens, decoded, and their probabilities.
    mean_target_prob: [L]. baseline_prob: [P] the lens on the embedding output (before block 0), the
        p[-1] of the particle rule. task_particle: the particle of mean_target_prob (or None), with the
        mean baseline.
    prompt_particles: [P] per-prompt particles; particle_counts: layer (as text) or "none" -> count.
    final_accuracy: share of prompts whose top-1 output token is the target token.
    kl_to_final: [P][L] KL divergence (nats) from the model's output distribution to the lens at each
        layer (0 at the last layer); None in a result written before it existed.
    particle_bootstrap: how sure task_particle is, from a bootstrap over the prompts (counts of the
        resampled particles, their interval, the agreeing share, a warning; ``layertracer.uncertainty``);
        None in a result written before it existed.
    """

    name: str
    language: str
    prompts: list[str]
    targets: list[str]
    target_tokens: list[str]
    target_token_ids: list[int]
    boundary_merged: list[bool]
    target_prob: list[list[float]]
    target_rank: list[list[int]]
    entropy: list[list[float]]
    top_tokens: list[list[list[str]]]
    top_probs: list[list[list[float]]]
    mean_target_prob: list[float]
    baseline_prob: list[float]
    task_particle: Optional[int]
    prompt_particles: list[Optional[int]]
    particle_counts: dict[str, int]
    final_accuracy: float
    particle_bootstrap: Optional[dict[str, Any]] = None
    kl_to_final: Optional[list[list[float]]] = None


@dataclass
class Sensitivity:
    """The sensitivity scan for one perturbation over N prompts (all tasks, in ``prompt_index`` order).

    js: [N][L] JS divergence (nats, <= ln 2) of the output distribution at the answer position when
        only layer l is perturbed (None where the perturbation does not apply to that block).
    mean_js, ci_low, ci_high: [L] mean over prompts and its percentile-bootstrap interval.
    mean_js_by_task: task -> [L]. vulnerable_layer: argmax of mean_js.
    """

    perturbation: str
    params: dict[str, Any]
    js: list[list[Optional[float]]]
    mean_js: list[Optional[float]]
    ci_low: list[Optional[float]]
    ci_high: list[Optional[float]]
    ci_level: float
    mean_js_by_task: dict[str, list[Optional[float]]]
    vulnerable_layer: Optional[int]


@dataclass
class Similarity:
    """Representation evolution at the answer position.

    cka: [L][L] linear CKA across prompts between layers. consecutive_cosine: [L-1] mean over prompts
    of cos(h_l, h_{l+1}). prompts_used: how many prompts entered (the first N, capped for memory).
    """

    cka: list[list[Optional[float]]]
    consecutive_cosine: list[float]
    prompts_used: int


@dataclass
class PositionView:
    """The classic logit-lens picture for one prompt: every layer x every token position.

    tokens: [T] the prompt's tokens, decoded. target_prob: [L][T] probability of the target token as
    the next token at each position. top1_tokens / top1_probs: [L][T] the most likely next token.
    """

    task: str
    prompt_index: int
    tokens: list[str]
    target_token: str
    target_prob: list[list[float]]
    top1_tokens: list[list[str]]
    top1_probs: list[list[float]]


@dataclass
class TraceResult:
    """Everything one trace computed; ``to_json`` writes the documented OUT.json."""

    num_layers: int
    block_kinds: list[str]
    normalized_depth: list[float]
    model: dict[str, Any]
    options: dict[str, Any]
    tasks: dict[str, TaskTrace]
    prompt_index: list[tuple[str, int]]
    sensitivity: Optional[Sensitivity]
    sensitivities: dict[str, Sensitivity]
    vulnerable_layer: Optional[int]
    similarity: Optional[Similarity]
    position_view: Optional[PositionView]
    freeze_plan: FreezePlan
    timings: dict[str, float] = field(default_factory=dict)
    version: str = ""
    schema_version: int = SCHEMA_VERSION
    # The lens the rows were read with: {"kind": "logit"} or {"kind": "tuned", "fingerprint", "sha256",
    # "file", and the translators' training metadata}; None in results written before the tuned lens.
    lens: Optional[dict[str, Any]] = None

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))

    def to_json(self, path: str | Path) -> None:
        """Write atomically (temp file then rename), so a reader never sees half a result."""
        path = Path(path)
        temp = path.with_name(path.name + ".tmp")
        temp.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        temp.replace(path)

    def summary(self) -> dict[str, Any]:
        """What the CLI's summary table shows, as data (``layertracer trace --json`` prints it).

        tasks: name -> {prompts, task_particle (None when the curve never rises), particle_interval
        ([low, high] of the bootstrap, None for "none"), particle_agreement (share of resamples with the
        same particle), final_accuracy, peak_mean_target_prob}; warnings: one line per task whose
        particle is not stable; vulnerable_layer with its mean JS (nats) under the primary perturbation;
        the freeze plan's ranges, reasons and stability (share of resamples, alternatives); lens: the
        lens the rows were read with (``logit`` or ``tuned``).
        """
        tasks = {}
        for name, task in self.tasks.items():
            boot = task.particle_bootstrap or {}
            tasks[name] = {
                "prompts": len(task.prompts),
                "task_particle": task.task_particle,
                "particle_interval": boot.get("interval"),
                "particle_agreement": boot.get("agreement"),
                "final_accuracy": task.final_accuracy,
                "peak_mean_target_prob": max(task.mean_target_prob) if task.mean_target_prob else None,
            }
        warnings = [w for w in ((t.particle_bootstrap or {}).get("warning") for t in self.tasks.values()) if w]
        sens = self.sensitivity
        layer = sens.vulnerable_layer if sens is not None else None
        return _json_safe({
            "num_layers": self.num_layers,
            "lens": (self.lens or {}).get("kind", "logit"),
            "tasks": tasks,
            "warnings": warnings,
            "perturbation": sens.perturbation if sens is not None else None,
            "vulnerable_layer": layer,
            "vulnerable_layer_mean_js": sens.mean_js[layer] if layer is not None else None,
            "freeze_plan": {
                "train_ranges": self.freeze_plan.train_ranges,
                "freeze_ranges": self.freeze_plan.freeze_ranges,
                "reasons": list(self.freeze_plan.reasons),
                "stability": dict(self.freeze_plan.stability),
            },
        })

    def overview(self) -> dict[str, Any]:
        """The result without what grows with the prompts (per-task means, top-1 tokens, stability
        curves without the per-prompt JS): ``layertracer.spec.views.trace_overview``, the one
        implementation the API serves too."""
        from layertracer.spec.views import trace_overview

        return trace_overview(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TraceResult":
        def maybe(kind, value):
            return None if value is None else kind(**value)

        fields = dict(data)
        fields["tasks"] = {k: TaskTrace(**v) for k, v in data["tasks"].items()}
        fields["sensitivity"] = maybe(Sensitivity, data.get("sensitivity"))
        fields["sensitivities"] = {k: Sensitivity(**v) for k, v in data.get("sensitivities", {}).items()}
        fields["similarity"] = maybe(Similarity, data.get("similarity"))
        fields["position_view"] = maybe(PositionView, data.get("position_view"))
        fields["freeze_plan"] = FreezePlan.from_dict(data["freeze_plan"])
        fields["prompt_index"] = [tuple(p) for p in data["prompt_index"]]
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in fields.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> "TraceResult":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _json_safe(value: Any) -> Any:
    """NaN and infinities -> None (JSON has no NaN); tuples -> lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
