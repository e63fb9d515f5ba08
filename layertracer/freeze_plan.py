"""From a trace to a layer allocation: "freeze deep, train shallow", with the numbers behind it.

The rule (every threshold is a parameter):
1. The boundary b is the median task particle over the traced tasks (``boundary="median"``, the lower
   median: at least half of the tasks start executing at b or later), or the earliest one
   (``boundary="min"``: protect every task, at the price of training fewer layers). Layers from b up
   are where the tasks run: freeze them. With no particle at all, b falls back to half depth and the
   plan says so.
2. Layers below b are trained, but the vulnerable layer (largest mean JS when perturbed alone) is
   frozen too when it lies below b (it is the layer whose change moves the output most), unless
   that would leave fewer than ``min_train`` trainable layers.
3. At least ``min_train`` layers stay trainable (b is raised if needed, never past the last layer).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

from layertracer.ranges import format_ranges


@dataclass
class FreezePlan:
    """A recommended allocation over ``num_layers`` blocks (0-based), with its evidence.

    train_layers / freeze_layers: disjoint, together all blocks. train_ranges / freeze_ranges: the same
    as ``0-3,5`` text. boundary: first frozen deep layer. evidence: the particles, the vulnerable layer
    and its JS, and whether a fallback was used. reasons: one sentence per decision, with numbers.
    stability: how often a bootstrap over the prompts gives this plan, and the other plans it gives
    (``layertracer.uncertainty.plan_stability``); empty when not computed (an older result).
    """

    num_layers: int
    train_layers: list[int]
    freeze_layers: list[int]
    train_ranges: str
    freeze_ranges: str
    boundary: int
    rule: str = "freeze-deep-train-shallow"
    parameters: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    stability: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FreezePlan":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def plan_freeze(
    num_layers: int,
    task_particles: Mapping[str, Optional[int]],
    mean_js: list[Optional[float]],
    *,
    min_train: int = 1,
    protect_vulnerable: bool = True,
    boundary: str = "median",
) -> FreezePlan:
    """The freeze plan for a model of ``num_layers`` blocks.

    task_particles: task name -> aggregate task particle (or None).
    mean_js: (L,) mean JS per layer of the primary perturbation (None/NaN where not applicable).
    """
    if boundary not in ("median", "min"):
        raise ValueError(f"boundary must be 'median' or 'min', not {boundary!r}")
    rule_name = boundary
    reasons: list[str] = []
    found = {name: layer for name, layer in task_particles.items() if layer is not None}
    fallback = not found
    if found:
        ordered = sorted(found.values())
        earliest_task = min(found, key=lambda name: found[name])
        if rule_name == "min":
            boundary_layer = ordered[0]
            reasons.append(
                f"Task execution starts at layer {boundary_layer} at the earliest ({earliest_task}; "
                f"{len(found)} of {len(task_particles)} tasks have a particle): freeze layers {boundary_layer}+."
            )
        else:
            boundary_layer = ordered[(len(ordered) - 1) // 2]
            later = sum(1 for layer in ordered if layer >= boundary_layer)
            reasons.append(
                f"The median task particle is layer {boundary_layer} ({later} of the {len(found)} tasks with a "
                f"particle start executing there or later; the earliest is {earliest_task} at layer "
                f"{ordered[0]}): freeze layers {boundary_layer}+."
            )
    else:
        boundary_layer = num_layers // 2
        reasons.append(
            f"No task shows a task particle, so the boundary falls back to half depth (layer {boundary_layer})."
        )
    floor = min(max(min_train, 1), num_layers - 1) if num_layers > 1 else 1
    if boundary_layer < floor:
        reasons.append(f"Boundary raised from {boundary_layer} to {floor} so that {floor} layer(s) stay trainable.")
        boundary_layer = floor
    frozen = set(range(boundary_layer, num_layers))
    valid = [(i, v) for i, v in enumerate(mean_js) if v is not None and not math.isnan(v)]
    vulnerable, vulnerable_js = (max(valid, key=lambda pair: pair[1]) if valid else (None, None))
    if vulnerable is not None:
        if vulnerable >= boundary_layer:
            reasons.append(
                f"The vulnerable layer {vulnerable} (mean JS {vulnerable_js:.4f} nats) is in the frozen deep part."
            )
        elif protect_vulnerable and boundary_layer - 1 >= floor:
            frozen.add(vulnerable)
            reasons.append(
                f"The vulnerable layer {vulnerable} (mean JS {vulnerable_js:.4f} nats) lies in the shallow part: "
                "frozen as well to protect it."
            )
        else:
            reasons.append(
                f"The vulnerable layer {vulnerable} (mean JS {vulnerable_js:.4f} nats) is trained: freezing it "
                f"would leave fewer than {floor} trainable layer(s)."
            )
    train = [i for i in range(num_layers) if i not in frozen]
    reasons.append(
        f"Train {len(train)} of {num_layers} blocks ({format_ranges(train)}); freeze {len(frozen)} ({format_ranges(frozen)})."
    )
    return FreezePlan(
        num_layers=num_layers,
        train_layers=train,
        freeze_layers=sorted(frozen),
        train_ranges=format_ranges(train),
        freeze_ranges=format_ranges(frozen),
        boundary=boundary_layer,
        parameters={"min_train": min_train, "protect_vulnerable": protect_vulnerable, "boundary": rule_name},
        evidence={
            "task_particles": dict(task_particles),
            "earliest_particle": min(found.values()) if found else None,
            "vulnerable_layer": vulnerable,
            "vulnerable_mean_js": vulnerable_js,
            "fallback": fallback,
        },
        reasons=reasons,
    )
