"""The logit lens at answer positions, in chunks of rows.

The output head is the largest matrix of most LMs (d x V, 311 MB in float32 for d=512 and Qwen's
151,936-token vocabulary). Projecting 8 rows at a time reads all of it for 8 dot products per column;
stacking the answer states of every layer (and of every perturbed run) and projecting ``HEAD_ROWS``
rows per call reads it once per chunk, which is what makes the lens cheap. Chunks also cap the
(rows, V) float32 buffers, so memory stays flat however many layers there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from layertracer.models.adapters import ModelAdapter
from layertracer.stats import entropy, js_from_probs

HEAD_ROWS = 64
JS_ROWS = 8


def head_log_probs(adapter: ModelAdapter, states: torch.Tensor, rows: int = HEAD_ROWS) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (row slice, log-probabilities) for ``states`` (R, d) in chunks of ``rows`` rows.

    Each log-probability chunk is (r, V) float32: the model's final norm, head and logit processing,
    then log_softmax.
    """
    total = states.shape[0]
    # Equal chunks: 72 rows go as 36 + 36, not 64 + 8 (a small chunk still reads the whole head).
    count = max(1, -(-total // rows))
    size = -(-total // count)
    for start in range(0, total, size):
        chunk = slice(start, min(start + size, total))
        yield chunk, torch.log_softmax(adapter.logits(states[chunk]).float(), dim=-1)


@dataclass
class LensRows:
    """Per row: target probability, rank (0 = top-1), entropy (nats), top-k ids and probabilities, and
    the KL divergence (nats) from the reference distribution (NaN without one)."""

    prob: torch.Tensor  # (R,) float64
    rank: torch.Tensor  # (R,) int64
    entropy: torch.Tensor  # (R,) float64
    top_ids: torch.Tensor  # (R, k) int64
    top_probs: torch.Tensor  # (R, k) float64
    kl: torch.Tensor  # (R,) float64


def lens_rows(
    adapter: ModelAdapter, states: torch.Tensor, targets: torch.Tensor, k: int, keep_last: int = 0,
    reference: Optional[torch.Tensor] = None,
) -> tuple[LensRows, Optional[torch.Tensor]]:
    """The lens statistics of ``states`` (R, d) for ``targets`` (R,) token ids, on the CPU, and the
    log-probabilities (keep_last, V) of the last ``keep_last`` rows (the model's output distribution
    when those rows are the last layer's), so the output head is not run on them twice.

    reference: (B, V) log-probabilities, R a multiple of B: row r also gets KL(reference[r % B] || lens
    of row r) in nats (the tuned-lens papers' "KL to the final layer" when the reference is the model's
    output), in float64, a few rows at a time."""
    count = states.shape[0]
    if reference is not None:
        reference_p = reference.double().exp()  # (B, V), and its log with 0 log 0 = 0 below
        reference_log = reference.double().masked_fill(reference_p == 0, 0.0)
    kept: list[torch.Tensor] = []
    out = LensRows(
        prob=torch.empty(count, dtype=torch.float64),
        rank=torch.empty(count, dtype=torch.int64),
        entropy=torch.empty(count, dtype=torch.float64),
        top_ids=torch.empty((count, k), dtype=torch.int64),
        top_probs=torch.empty((count, k), dtype=torch.float64),
        kl=torch.full((count,), float("nan"), dtype=torch.float64),
    )
    for chunk, log_probs in head_log_probs(adapter, states):
        if keep_last and chunk.stop > count - keep_last:
            kept.append(log_probs[max(count - keep_last - chunk.start, 0) :].clone())
        local = torch.arange(log_probs.shape[0], device=log_probs.device)
        target_lp = log_probs[local, targets[chunk]]
        out.prob[chunk] = target_lp.exp().double().cpu()
        out.rank[chunk] = (log_probs > target_lp[:, None]).sum(-1).cpu()
        values, indices = log_probs.topk(k, dim=-1)
        out.top_ids[chunk] = indices.cpu()
        out.top_probs[chunk] = values.exp().double().cpu()
        if reference is not None:
            batch = reference.shape[0]
            for start in range(0, log_probs.shape[0], JS_ROWS):
                stop = min(start + JS_ROWS, log_probs.shape[0])
                index = torch.arange(chunk.start + start, chunk.start + stop, device=reference.device) % batch
                gap = reference_log[index] - log_probs[start:stop].double()
                out.kl[chunk.start + start : chunk.start + stop] = (reference_p[index] * gap).sum(-1).cpu()
        probs = log_probs.exp_()  # in place: the log-probabilities are not needed any more
        out.entropy[chunk] = torch.special.entr(probs).sum(-1).double().cpu()
    return out, (torch.cat(kept) if kept else None)


def js_to_reference(adapter: ModelAdapter, states: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """JS divergence (nats) between the output distribution of each row of ``states`` (R, d) and
    ``reference[r % B]``, where reference is (B, V) log-probabilities and R a multiple of B. Returns
    (R,) float64 on the CPU."""
    batch = reference.shape[0]
    reference_p = reference.double().exp()  # (B, V) float64, and its entropies, computed once
    reference_h = entropy(reference_p)
    out = torch.empty(states.shape[0], dtype=torch.float64)
    for chunk, log_q in head_log_probs(adapter, states):
        # float64 temporaries of (rows, V): a few rows at a time keep them small.
        for start in range(0, log_q.shape[0], JS_ROWS):
            stop = min(start + JS_ROWS, log_q.shape[0])
            index = torch.arange(chunk.start + start, chunk.start + stop, device=reference.device) % batch
            q = log_q[start:stop].double().exp_()
            value = js_from_probs(reference_p[index], q, reference_h[index])
            out[chunk.start + start : chunk.start + stop] = value.cpu()
    return out
