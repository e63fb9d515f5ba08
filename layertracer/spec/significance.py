"""The one significance rule of a comparison of two allocations.

A difference is significant at ``ALPHA`` when every one of the three tests (paired bootstrap,
McNemar, sign-flip permutation) rejects after Holm's correction over the experiment's pairs; a test
whose p-value is missing or not a number counts as not rejecting (no evidence is no evidence). The
engine writes the verdict into each comparison (``significant``); readers of results written before
it did (the dashboard, the report) apply this same function.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

ALPHA = 0.05
TESTS = ("bootstrap", "mcnemar", "permutation")


def is_significant(comparison: Mapping[str, Any], alpha: float = ALPHA) -> bool:
    """Whether every test's Holm-adjusted p-value (``comparison[test]["p_adjusted"]``) is below alpha."""
    for test in TESTS:
        value = (comparison.get(test) or {}).get("p_adjusted")
        if not isinstance(value, (int, float)) or math.isnan(value) or not value < alpha:
            return False
    return True


def verdict(comparison: Mapping[str, Any]) -> bool:
    """The comparison's own verdict when the engine wrote one, else the rule applied to its p-values."""
    written = comparison.get("significant")
    return bool(written) if isinstance(written, bool) else is_significant(comparison)
