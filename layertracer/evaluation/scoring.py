"""Log-likelihood of each choice's continuation with one forward pass per question.

For a question with context ``C`` (T_c tokens) and continuations ``K_A..K_D``, the log-likelihood of a
choice is ``sum_j log p(K_c[j] | C + K_c[:j])``. When every continuation is one token (" A".." D" after
"答案：" for most tokenizers) all four are read from the same next-token distribution at position
``T_c - 1``: one forward of the context replaces four forwards of context + choice. A choice of several
tokens gets its own row ``C + K_c[:-1]`` (the single-token choices are still read from the first row),
so the numbers are the same as scoring every choice on its own.

Rows are right-padded into batches. No attention mask is needed: in a causal model (attention, SSM or
hybrid) the padding after a row's last real token cannot influence the positions read. Only the read
positions go through the output head, so a (B, T, vocab) logits tensor is never built (for the
architectures in the adapter table; others fall back to the model's full logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from layertracer.errors import LayerTracerError
from layertracer.models.adapters import ModelAdapter
from layertracer.progress import ProgressCallback, report
from layertracer.batching import right_pad


@dataclass(frozen=True)
class ScoringRequest:
    """context_ids (T_c,) and, per choice, its continuation ids (at least one token each)."""

    context_ids: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Row:
    """One sequence to run. reads: (position, token id, choice) whose log-prob is added to the choice."""

    request: int
    ids: tuple[int, ...]
    reads: tuple[tuple[int, int, int], ...]


def plan_rows(requests: Sequence[ScoringRequest]) -> list[Row]:
    """The rows that score every request: one per request, plus one per extra multi-token choice."""
    rows: list[Row] = []
    for r, request in enumerate(requests):
        context = tuple(request.context_ids)
        last = len(context) - 1
        if last < 0:
            raise LayerTracerError(f"request {r}: empty context")
        single = [(last, k[0], c) for c, k in enumerate(request.continuations) if len(k) == 1]
        multi = [(c, k) for c, k in enumerate(request.continuations) if len(k) > 1]
        if not multi:
            rows.append(Row(r, context, tuple(single)))
            continue
        for i, (c, k) in enumerate(multi):
            reads = [(last + j, token, c) for j, token in enumerate(k)]
            # The single-token choices ride on the first row: its position T_c - 1 sees only the context.
            rows.append(Row(r, context + tuple(k[:-1]), tuple((single if i == 0 else []) + reads)))
    return rows


def final_hidden(model: nn.Module, input_ids: torch.Tensor) -> Optional[torch.Tensor]:
    """The head's input at every position (B, T, d): the backbone's last hidden state, final norm
    included. None when the model has no separate backbone (then the caller uses full logits)."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return None
    output = base(input_ids=input_ids, use_cache=False)
    hidden = getattr(output, "last_hidden_state", None)
    return hidden if hidden is not None else output[0]


def _run_batch(
    model: nn.Module, adapter: ModelAdapter, rows: Sequence[Row], pad_id: int, device: torch.device
) -> list[list[float]]:
    """Log-probs (nats, float32 softmax) of every read of every row in one forward pass."""
    ids, _ = right_pad([row.ids for row in rows], pad_id, device)
    # Distinct (row, position) pairs: the four single-token choices share one position.
    slots: dict[tuple[int, int], int] = {}
    for b, row in enumerate(rows):
        for position, _, _ in row.reads:
            slots.setdefault((b, position), len(slots))
    b_index = torch.tensor([b for b, _ in slots], device=device)
    p_index = torch.tensor([p for _, p in slots], device=device)
    # The backbone + head path is used for architectures in the adapter table, where the tests check
    # that it gives the model's own logits; anything discovered gets the plain (B, T, vocab) forward.
    hidden = final_hidden(model, ids) if adapter.source == "table" else None
    if hidden is not None:
        logits = adapter.process_logits(adapter.head(hidden[b_index, p_index]))  # (R, vocab)
    else:
        logits = model(input_ids=ids, use_cache=False).logits[b_index, p_index]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    slot_index = torch.tensor(
        [slots[(b, p)] for b, row in enumerate(rows) for p, _, _ in row.reads], device=device
    )
    tokens = torch.tensor([t for row in rows for _, t, _ in row.reads], device=device)
    values = log_probs[slot_index, tokens].double().cpu().tolist()
    out, i = [], 0
    for row in rows:
        out.append(values[i : i + len(row.reads)])
        i += len(row.reads)
    return out


def score_requests(
    model: nn.Module,
    adapter: ModelAdapter,
    requests: Sequence[ScoringRequest],
    *,
    batch_size: int = 8,
    pad_id: int = 0,
    progress: Optional[ProgressCallback] = None,
    stage: str = "evaluate",
) -> np.ndarray:
    """Summed continuation log-probs (nats), shape (N, C) float64, for N requests of C choices.

    Runs under ``torch.inference_mode`` on the model's device. Batches hold up to ``batch_size`` rows
    of similar length (longest first, so memory peaks early); a batch that runs out of memory is
    halved. ``progress`` gets (stage, rows done, rows in all).
    """
    if batch_size < 1:
        raise LayerTracerError(f"batch size must be at least 1, got {batch_size}")
    n_choices = max((len(r.continuations) for r in requests), default=0)
    scores = np.zeros((len(requests), n_choices), dtype=np.float64)
    rows = plan_rows(requests)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].ids))
    queue = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    device = next(model.parameters()).device
    done = 0
    report(progress, stage, 0, len(rows))
    with torch.inference_mode():
        while queue:
            batch = queue.pop(0)
            try:
                values = _run_batch(model, adapter, [rows[i] for i in batch], pad_id, device)
            except torch.OutOfMemoryError:
                if len(batch) == 1:
                    raise LayerTracerError(
                        f"out of memory on a single prompt of {len(rows[batch[0]].ids)} tokens: "
                        "use a smaller dtype, a larger device, or fewer shots"
                    ) from None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                half = len(batch) // 2
                queue[:0] = [batch[:half], batch[half:]]
                continue
            for i, row_values in zip(batch, values):
                row = rows[i]
                for (_, _, choice), value in zip(row.reads, row_values):
                    scores[row.request, choice] += value
            done += len(batch)
            report(progress, stage, done, len(rows))
    return scores
