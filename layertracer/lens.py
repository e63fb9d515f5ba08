"""The output head at answer positions: the logit lens and the perturbed runs' JS in one pass.

The output head is the largest matrix of most LMs (d x V, 311 MB in float32 for d=512 and Qwen's
151,936-token vocabulary). Projecting 8 rows at a time reads all of it for 8 dot products per column;
stacking a batch's answer states of every layer and of every perturbed run and projecting
``HEAD_ROWS`` rows per call reads it once per chunk, which is what makes the lens cheap. Chunks also
cap the (rows, V) float32 buffers, so memory stays flat however many layers there are.

After the head, each chunk's log-probabilities are reduced a slab of rows at a time: on a CPU a slab
of ``CPU_SLAB_BYTES`` (4.9 MB of float64 rows) and its temporaries stay in the cache through the several
passes the statistics make over it, where a whole chunk would be read back from memory on every pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from layertracer.models.adapters import ModelAdapter
from layertracer.stats import js_to_reference, row_dots

HEAD_ROWS = 160
# A CPU slab's float64 rows together stay under this many bytes (4 rows of Qwen's 151,936-token
# vocabulary: measured here, slabs of 3-4 such rows ran 15-25% faster than 8 or 16); a small vocabulary
# gets long slabs, so the statistics' per-slab calls do not dominate.
CPU_SLAB_BYTES = 4 * 151_936 * 8
# On an accelerator, slabs of this many rows: few kernel launches, and float64 temporaries of about
# 40 MB a row-set at Qwen's vocabulary, small beside a model that fills the device (a batch split
# after running out of memory does not shrink them).
GPU_SLAB_ROWS = 32


class HeadBuffer:
    """One (r, V) logits buffer reused by every head chunk of a trace on a CPU: a fresh chunk (100 MB
    at Qwen's vocabulary) would be mapped and faulted in page by page on every batch. Holds the
    largest chunk seen; a chunk is valid until the next one is asked for."""

    def __init__(self) -> None:
        self.tensor: Optional[torch.Tensor] = None

    def take(self, rows: int) -> Optional[torch.Tensor]:
        """A (rows, V) view to write into, or None (no buffer yet, or a smaller one)."""
        if self.tensor is None or self.tensor.shape[0] < rows:
            return None
        return self.tensor[:rows]

    def keep(self, logits: torch.Tensor) -> None:
        if logits.device.type == "cpu" and logits.is_contiguous() and (
                self.tensor is None or logits.shape[0] > self.tensor.shape[0]):
            self.tensor = logits


def head_logits(adapter: ModelAdapter, states: torch.Tensor, rows: Optional[int] = None,
                buffer: Optional[HeadBuffer] = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (row slice, logits) for ``states`` (R, d) in chunks of at most ``rows`` rows (default
    ``HEAD_ROWS``).

    Each logit chunk is (r, V) float32: the model's final norm, head and logit processing. A chunk
    is valid until the next one is asked for: the chunks share ``buffer`` (a new one per call when
    None).
    """
    rows = rows or HEAD_ROWS
    buffer = buffer if buffer is not None else HeadBuffer()
    total = states.shape[0]
    # Equal chunks: 200 rows go as 100 + 100, not 160 + 40 (a small chunk still reads the whole head).
    count = max(1, -(-total // rows))
    size = -(-total // count)
    for start in range(0, total, size):
        chunk = slice(start, min(start + size, total))
        logits = adapter.logits(states[chunk], out=buffer.take(chunk.stop - chunk.start))
        buffer.keep(logits)
        yield chunk, logits.float()


@dataclass
class LensRows:
    """Per row: target probability, rank (0 = top-1), entropy (nats), top-k ids and probabilities, and
    the KL divergence (nats) from the model's output distribution."""

    prob: torch.Tensor  # (R,) float64
    rank: torch.Tensor  # (R,) int64
    entropy: torch.Tensor  # (R,) float64
    top_ids: torch.Tensor  # (R, k) int64
    top_probs: torch.Tensor  # (R, k) float64
    kl: torch.Tensor  # (R,) float64

    @classmethod
    def empty(cls, count: int, k: int) -> "LensRows":
        f64 = torch.float64
        return cls(prob=torch.empty(count, dtype=f64), rank=torch.empty(count, dtype=torch.int64),
                   entropy=torch.empty(count, dtype=f64), top_ids=torch.empty((count, k), dtype=torch.int64),
                   top_probs=torch.empty((count, k), dtype=f64), kl=torch.empty(count, dtype=f64))


class _Reference:
    """The model's output distributions of a batch, (B, V): what the KL of each lens row and the JS of
    each perturbed row are measured from, in float64. Head row h belongs to prompt h % B."""

    def __init__(self, batch: int, vocab: int, device: torch.device) -> None:
        self.log_probs = torch.empty((batch, vocab), dtype=torch.float64, device=device)
        self.filled = 0

    def add(self, log_probs: torch.Tensor) -> None:
        self.log_probs[self.filled : self.filled + log_probs.shape[0]] = log_probs
        self.filled += log_probs.shape[0]
        if self.filled == self.log_probs.shape[0]:
            self.probs = self.log_probs.exp()  # (B, V) float64
            self.neg_entropy = row_dots(self.probs, self.log_probs)  # (B,): sum p log p

    def rows(self, head_rows: slice):
        """The reference rows of ``head_rows``: a slice (a view) when they do not straddle a multiple of
        B, else an index tensor (a copy)."""
        batch = self.log_probs.shape[0]
        first = head_rows.start % batch
        if first + head_rows.stop - head_rows.start <= batch:
            return slice(first, first + head_rows.stop - head_rows.start)
        return torch.arange(head_rows.start, head_rows.stop, device=self.log_probs.device) % batch


def answer_pass(
    adapter: ModelAdapter, lens_states: torch.Tensor, targets: torch.Tensor, k: int, batch: int,
    perturbed: Optional[torch.Tensor] = None, buffer: Optional[HeadBuffer] = None,
) -> tuple[LensRows, torch.Tensor]:
    """The head once over a batch's answer states: the lens statistics of ``lens_states`` and the JS of
    ``perturbed`` to the model's output.

    lens_states: (R, d), R a multiple of ``batch`` B; its last B rows are the last layer's, whose
    distributions are the model's output (the reference). targets: (R,) token ids. perturbed: (S, d),
    S a multiple of B, the answer states of perturbed runs (row s belongs to prompt s % B). Returns the
    lens rows (KL(output of prompt r % B || lens of row r) in nats included) and (S,) float64 JS
    divergences in nats, both on the CPU. buffer: the trace's :class:`HeadBuffer`, kept across batches.

    The reference rows go through the head first, so every other row finds the reference complete.
    The log-probabilities are finite (log_softmax of finite logits), so a probability that underflows
    to 0 multiplies a finite logarithm; only the JS's mixture takes a logarithm of its own.
    """
    count = lens_states.shape[0]
    extra = perturbed.shape[0] if perturbed is not None else 0
    first = count - batch  # the reference rows are lens rows first .. count - 1
    order = torch.cat([lens_states[first:], lens_states[:first]] + ([perturbed] if extra else []))
    out = LensRows.empty(count, k)
    js = torch.empty(extra, dtype=torch.float64)
    reference: Optional[_Reference] = None

    def lens_slab(log_probs: torch.Tensor, head_rows: slice) -> None:
        rows = torch.arange(head_rows.start, head_rows.stop) - batch
        rows[rows < 0] += count  # head order -> the caller's order
        _lens_slab(log_probs, targets[rows.to(targets.device)], k, reference, head_rows, rows, out)

    slab_rows = GPU_SLAB_ROWS
    for chunk, logits in head_logits(adapter, order, buffer=buffer):
        if reference is None:
            reference = _Reference(batch, logits.shape[-1], logits.device)
            if logits.device.type == "cpu":
                slab_rows = max(1, CPU_SLAB_BYTES // (8 * logits.shape[-1]))
        start = chunk.start
        while start < chunk.stop:
            # A slab never straddles the reference's end nor the lens rows' end; a slab of at most B rows
            # not a multiple of B either, so its reference rows are a view (a longer slab gathers them).
            stop = min(start + slab_rows, chunk.stop, *(b for b in (batch, count) if b > start))
            if slab_rows <= batch:
                stop = min(stop, (start // batch + 1) * batch)
            slab = torch.log_softmax(logits[start - chunk.start : stop - chunk.start], dim=-1)
            if start < batch:  # the reference's own lens rows wait until all of it is there
                reference.add(slab)
                if reference.filled == batch:
                    for first_row in range(0, batch, slab_rows):
                        rows = slice(first_row, min(first_row + slab_rows, batch))
                        lens_slab(reference.log_probs[rows].float(), rows)
            elif start < count:
                lens_slab(slab, slice(start, stop))
            else:
                js[start - count : stop - count] = _js_slab(slab, reference, slice(start, stop)).cpu()
            start = stop
    return out, js


def _lens_slab(log_probs: torch.Tensor, targets: torch.Tensor, k: int, reference: _Reference,
               head_rows: slice, rows: torch.Tensor, out: LensRows) -> None:
    """Fill ``out`` at ``rows`` (r,) from the lens log-probabilities (r, V) float32."""
    target_lp = log_probs.gather(1, targets[:, None])  # (r, 1)
    out.prob[rows] = target_lp[:, 0].exp().double().cpu()
    # The rank: how many tokens are more likely than the target (a float count is exact below 2**24).
    out.rank[rows] = (log_probs - target_lp).gt_(0).sum(-1).long().cpu()
    values, indices = log_probs.topk(k, dim=-1)
    out.top_ids[rows] = indices.cpu()
    out.top_probs[rows] = values.exp().double().cpu()
    # float32 products, summed by torch's cascade (a float32 BLAS dot would drift by 1e-4 nats)
    out.entropy[rows] = -(log_probs.exp() * log_probs).sum(-1).double().cpu()
    # KL(ref || lens) = sum ref log ref - sum ref log lens: the reference's own sum and a float64 dot.
    index = reference.rows(head_rows)
    cross = row_dots(reference.probs[index], log_probs.double())
    out.kl[rows] = (reference.neg_entropy[index] - cross).cpu()


def _js_slab(log_q: torch.Tensor, reference: _Reference, head_rows: slice) -> torch.Tensor:
    """JS (nats) between perturbed rows (their log-probabilities (r, V) float32) and their prompts'
    reference rows, whose probabilities and sum p log p were computed once for the batch."""
    index = reference.rows(head_rows)
    return js_to_reference(log_q, reference.probs[index], reference.neg_entropy[index])
