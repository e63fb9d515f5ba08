"""The perturbation grammar, declared once: ``skip``, ``zero-attn``, ``zero-mlp``,
``noise[:scale=S][,draws=N]`` and ``mask[:keep=R][,draws=N]`` (``;`` also separates options).

The engine (``layertracer.perturbation.Perturbation.parse``), the API (``POST /traces`` and the
trials' ``trace_perturbations``), the New trace form and ``layertracer trace -p`` all parse with
``parse_perturbation``, so they accept and refuse the same texts with the same message. The
definitions of the kinds are in ``layertracer/perturbation.py`` and docs/definitions.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from layertracer.errors import LayerTracerError

KINDS = ("skip", "zero-attn", "zero-mlp", "noise", "mask")
STOCHASTIC = ("noise", "mask")
# The options each kind takes.
OPTIONS = {"noise": ("scale", "draws"), "mask": ("keep", "draws")}
# Limits of the options (inclusive): keep is a probability; a noise scale of 0, like keep=1, changes
# nothing (a control whose JS must be 0), and past 100 the output is noise alone; draws are averaged,
# so a few suffice.
KEEP_RANGE = (0.0, 1.0)
SCALE_RANGE = (0.0, 100.0)
DRAWS_RANGE = (1, 100)
DEFAULT_SCALE, DEFAULT_KEEP = 1.0, 0.5


class PerturbationError(LayerTracerError, ValueError):
    """A perturbation text that does not follow the grammar; the message is one line."""


@dataclass(frozen=True)
class PerturbationText:
    """A parsed perturbation: the kind and the options written (None: not given, the default holds)."""

    kind: str
    scale: Optional[float] = None
    keep: Optional[float] = None
    draws: Optional[int] = None


def parse_perturbation(text: str) -> PerturbationText:
    """``text`` -> its kind and options, or PerturbationError saying what is wrong."""
    text = (text or "").strip()
    kind, colon, rest = text.partition(":")
    if kind not in KINDS:
        raise PerturbationError(f"unknown perturbation {kind!r}; use one of {', '.join(KINDS)}")
    if colon and not rest.strip():
        raise PerturbationError(f"perturbation {text!r} ends with ':'")
    allowed = OPTIONS.get(kind, ())
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in rest.replace(";", ",").split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in allowed:
            hint = ", ".join(f"{k}=" for k in allowed) or "no options"
            raise PerturbationError(f"bad option {part!r} in perturbation {text!r} ({kind} takes {hint})")
        if key in values:
            raise PerturbationError(f"option {key!r} given twice in perturbation {text!r}")
        try:
            number = float(value)
        except ValueError:
            raise PerturbationError(f"bad option {part!r} in perturbation {text!r}: {value.strip()!r} is not a number") from None
        if not math.isfinite(number):
            raise PerturbationError(f"bad option {part!r} in perturbation {text!r}: not a finite number")
        values[key] = number
    keep, scale, draws = values.get("keep"), values.get("scale"), values.get("draws")
    if keep is not None and not KEEP_RANGE[0] <= keep <= KEEP_RANGE[1]:
        raise PerturbationError(f"mask keep ratio must be in [0, 1], got {keep:g} in {text!r}")
    if scale is not None and not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        raise PerturbationError(f"noise scale must be in [0, 100], got {scale:g} in {text!r}")
    if draws is not None and (draws != int(draws) or not DRAWS_RANGE[0] <= draws <= DRAWS_RANGE[1]):
        raise PerturbationError(f"draws must be a whole number in [1, 100], got {draws:g} in {text!r}")
    return PerturbationText(kind=kind, scale=scale, keep=keep, draws=None if draws is None else int(draws))


def format_perturbation(kind: str, *, scale: Optional[float] = None, keep: Optional[float] = None,
                        draws: Optional[int] = None) -> str:
    """The text of a perturbation (what a form sends): ``mask:keep=0.3``, ``noise:scale=1,draws=5``."""
    options = [f"{name}={value:g}" for name, value in (("scale", scale), ("keep", keep), ("draws", draws))
               if value is not None]
    return kind + (":" + ",".join(options) if options else "")


def split_perturbations(text: str) -> list[str]:
    """``skip,mask:keep=0.3,draws=5`` -> ["skip", "mask:keep=0.3,draws=5"]: a comma followed by an
    option (``name=``) continues the previous kind; any other comma starts a new one."""
    parts: list[str] = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece:
            continue
        if "=" in piece and ":" not in piece and parts:
            parts[-1] += "," + piece
        else:
            parts.append(piece)
    return parts
