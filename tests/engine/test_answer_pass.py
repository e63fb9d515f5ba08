"""The head pass over a batch's answer states (``layertracer.lens.answer_pass``) against the statistics
written out directly in float64, for chunk and slab sizes that cut the rows every which way: slabs
shorter and longer than the batch, chunks that end inside the reference rows, slabs that straddle a
multiple of the batch (the reference rows are then gathered, as on a GPU)."""

from __future__ import annotations

import math

import pytest
import torch

from layertracer import lens, stats


class _Head:
    """The one thing ``answer_pass`` asks of an adapter: logits (R, V) of states (R, d), written into
    ``out`` when it is given, as the CPU head does (so a chunk's buffer is overwritten by the next)."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight

    def logits(self, states: torch.Tensor, out=None) -> torch.Tensor:
        return torch.matmul(states, self.weight.T, out=out)


def _expected(logits: torch.Tensor, targets: torch.Tensor, batch: int, count: int, k: int):
    """Every statistic from float64 log-probabilities of the same float32 logits, row by row."""
    log_p = torch.log_softmax(logits.double(), dim=-1)
    p = log_p.exp()
    reference = range(count - batch, count)  # the last layer's rows: the model's output
    stats = {"prob": [], "rank": [], "entropy": [], "kl": [], "top_ids": [], "top_probs": [], "js": []}
    for r in range(count):
        target = int(targets[r])
        ref = reference[r % batch]
        stats["prob"].append(float(p[r, target]))
        stats["rank"].append(int((log_p[r] > log_p[r, target]).sum()))
        stats["entropy"].append(float(-(p[r] * log_p[r]).sum()))
        stats["kl"].append(float((p[ref] * (log_p[ref] - log_p[r])).sum()))
        top = torch.sort(p[r], descending=True)
        stats["top_ids"].append(top.indices[:k].tolist())
        stats["top_probs"].append(top.values[:k].tolist())
    for s in range(count, logits.shape[0]):
        ref = reference[(s - count) % batch]
        m = 0.5 * (p[ref] + p[s])
        kl_p = torch.where(p[ref] > 0, p[ref] * (log_p[ref] - m.log()), 0.0).sum()
        kl_q = torch.where(p[s] > 0, p[s] * (log_p[s] - m.log()), 0.0).sum()
        stats["js"].append(float(0.5 * kl_p + 0.5 * kl_q))
    return stats


@pytest.mark.parametrize(
    ("head_rows", "slab_rows", "batch", "layers", "runs"),
    [
        (160, 8, 4, 3, 5),  # slabs longer than the batch: their reference rows are gathered
        (160, 4, 4, 3, 5),  # slabs of the batch's length: its reference rows are a view
        (5, 3, 4, 3, 5),  # chunks and slabs shorter than the batch, ending inside the reference rows
        (7, 7, 3, 4, 2),
        (11, 11, 4, 2, 3),
        (160, 160, 6, 2, 0),  # no perturbed runs
    ],
)
def test_answer_pass_matches_the_statistics_written_out(monkeypatch, head_rows, slab_rows, batch, layers, runs):
    monkeypatch.setattr(lens, "HEAD_ROWS", head_rows)
    monkeypatch.setattr(lens, "CPU_SLAB_BYTES", slab_rows * 8 * 300)  # slabs of slab_rows rows of 300
    # odd chunk sizes sum through one BLAS dot per row (as wide rows do), even ones through vecdot
    monkeypatch.setattr(stats, "BLAS_DOT_COLUMNS", 1 if head_rows % 2 else 10**9)
    generator = torch.Generator().manual_seed(head_rows * 100 + slab_rows)
    vocab, hidden, k = 300, 16, 4  # (a vocabulary of 300: the slab size above assumes it)
    head = _Head(torch.randn(vocab, hidden, generator=generator))
    count = (layers + 1) * batch
    lens_states = torch.randn(count, hidden, generator=generator)
    # perturbed runs near the clean output (small JS) and far from it (large JS)
    scale = torch.tensor([0.01, 1.0]).repeat(runs * batch)[: runs * batch, None]
    last = lens_states[-batch:].repeat(runs, 1)
    perturbed = last + scale * torch.randn(runs * batch, hidden, generator=generator) if runs else None
    targets = torch.randint(0, vocab, (count,), generator=generator)

    rows, js = lens.answer_pass(head, lens_states, targets, k, batch, perturbed)

    all_states = lens_states if perturbed is None else torch.cat([lens_states, perturbed])
    expected = _expected(head.logits(all_states), targets, batch, count, k)
    torch.testing.assert_close(rows.prob, torch.tensor(expected["prob"], dtype=torch.float64), atol=1e-6, rtol=1e-5)
    assert rows.rank.tolist() == expected["rank"]
    torch.testing.assert_close(rows.entropy, torch.tensor(expected["entropy"], dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(rows.kl, torch.tensor(expected["kl"], dtype=torch.float64), atol=1e-5, rtol=0)
    assert rows.top_ids.tolist() == expected["top_ids"]
    torch.testing.assert_close(rows.top_probs, torch.tensor(expected["top_probs"], dtype=torch.float64), atol=1e-6, rtol=1e-5)
    assert js.shape == (runs * batch,)
    torch.testing.assert_close(js, torch.tensor(expected["js"], dtype=torch.float64).reshape(-1), atol=1e-6, rtol=0)
    if runs:
        assert js.max() > 0.05 and js.min() < 1e-3  # both regimes were exercised
        assert float(js.max()) <= math.log(2)
    # the last layer's rows are the reference: their KL to it is 0
    torch.testing.assert_close(rows.kl[-batch:], torch.zeros(batch, dtype=torch.float64), atol=1e-12, rtol=0)


def test_peaked_distributions_whose_probabilities_underflow():
    """Logits 1,000 apart: most probabilities are exactly 0 in float64, in both the output and the
    perturbed run; 0 log 0 counts as 0 and nothing is NaN."""
    generator = torch.Generator().manual_seed(11)
    head = _Head(300.0 * torch.randn(400, 8, generator=generator))
    batch, layers = 2, 2
    states = torch.randn((layers + 1) * batch, 8, generator=generator)
    perturbed = states[-batch:] + torch.randn(batch, 8, generator=generator)
    targets = torch.randint(0, 400, (states.shape[0],), generator=generator)
    rows, js = lens.answer_pass(head, states, targets, 3, batch, perturbed)
    logits = head.logits(torch.cat([states, perturbed]))
    assert (torch.log_softmax(logits.double(), -1).exp() == 0).double().mean() > 0.5  # the case is real
    expected = _expected(logits, targets, batch, states.shape[0], 3)
    assert not js.isnan().any() and not rows.entropy.isnan().any() and not rows.kl.isnan().any()
    torch.testing.assert_close(js, torch.tensor(expected["js"], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(rows.entropy, torch.tensor(expected["entropy"], dtype=torch.float64), atol=1e-5, rtol=0)


def test_an_identical_run_has_no_divergence():
    generator = torch.Generator().manual_seed(7)
    head = _Head(torch.randn(500, 8, generator=generator))
    batch, layers = 3, 2
    states = torch.randn((layers + 1) * batch, 8, generator=generator)
    targets = torch.zeros(states.shape[0], dtype=torch.long)
    _, js = lens.answer_pass(head, states, targets, 2, batch, states[-batch:].clone())
    assert js.abs().max() < 1e-12


def test_the_cpu_head_product_equals_the_module(monkeypatch):
    """The CPU fast path (vocabulary blocks of W @ x^T, written row-major) gives the Linear's values,
    also when the vocabulary is not a multiple of the block; a head with a hook is called as a module."""
    import tiny_models
    from layertracer.models import adapters

    monkeypatch.setattr(adapters, "HEAD_VOCAB_BLOCK", 37)  # the tiny vocabulary is cut into many blocks
    model = tiny_models.build_model("qwen3").eval()
    adapter = adapters.resolve_adapter(model)
    states = torch.randn(9, model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        product = adapter.project(states)
        expected = torch.nn.functional.linear(states, adapter.head.weight)
    assert product.is_contiguous() and product.shape == expected.shape
    torch.testing.assert_close(product, expected, atol=1e-5, rtol=1e-5)
    # Into a caller's buffer (the trace's head buffer): the same values, in that memory.
    buffer = torch.full((12, model.config.vocab_size), float("nan"))
    with torch.inference_mode():
        written = adapter.project(states, out=buffer[:9])
    assert written.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(buffer[:9], expected, atol=1e-5, rtol=1e-5)

    seen = []
    handle = adapter.head.register_forward_hook(lambda module, args, output: seen.append(output.shape))
    try:
        with torch.inference_mode():
            adapter.project(states)
    finally:
        handle.remove()
    assert seen == [torch.Size([9, model.config.vocab_size])]
