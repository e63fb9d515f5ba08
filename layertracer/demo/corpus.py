"""The demo world's text: documents of facts rendered exactly as the built-in tasks render them."""

from __future__ import annotations

import random
from typing import Sequence

from layertracer.tasks.sets import BUILTIN_TASKS, builtin_facts


def fact_documents(
    task_names: Sequence[str] | None = None,
    *,
    facts_per_document: int = 5,
    repeats: int = 1,
    seed: int = 0,
) -> list[str]:
    """Documents of ``facts_per_document`` facts of one task each, one fact per line, rendered with the
    task's template ("The capital of France is Paris"); every fact appears ``repeats`` times over the
    corpus, in seeded random order and company."""
    rng = random.Random(seed)
    documents: list[str] = []
    for name in task_names or list(BUILTIN_TASKS):
        template = BUILTIN_TASKS[name].template
        lines = [template.format(input=a, output=b) for a, b in builtin_facts(name)]
        for _ in range(repeats):
            order = lines[:]
            rng.shuffle(order)
            for start in range(0, len(order), facts_per_document):
                documents.append("\n".join(order[start : start + facts_per_document]))
    rng.shuffle(documents)
    return documents
