"""The overview's depth views (layertracer/spec/views.py: mean log rank, top-k accuracy, mean KL to the
final layer, the CSV table) against numpy on a real trace of a tiny model."""

from __future__ import annotations

import numpy as np
import pytest

import layertracer as lt
import tiny_models
from layertracer.models import wrap_model
from layertracer.spec.views import layer_table, trace_overview


@pytest.fixture(scope="module")
def result(tokenizer):
    loaded = wrap_model(tiny_models.build_model("llama"), tokenizer, source="llama")
    return lt.trace(loaded, lt.load_tasks("antonyms_en,plural_en", limit=5),
                    options=lt.TraceOptions(similarity=False, position_view=False, bootstrap_resamples=20)).to_dict()


def test_log_rank_top_k_and_kl_per_layer(result):
    overview = trace_overview(result)
    for name, task in result["tasks"].items():
        ranks = np.array(task["target_rank"], dtype=np.float64)  # (P, L)
        slim = overview["tasks"][name]
        assert slim["mean_log_rank"] == pytest.approx(np.log10(1 + ranks).mean(axis=0).tolist())
        for k in (1, 5, 10):
            assert slim["topk_accuracy"][str(k)] == pytest.approx((ranks < k).mean(axis=0).tolist())
        assert slim["topk_accuracy"]["1"][-1] == pytest.approx(task["final_accuracy"])
        assert slim["mean_kl_to_final"] == pytest.approx(np.array(task["kl_to_final"]).mean(axis=0).tolist())
        assert "kl_to_final" not in slim  # per prompt: only in the task's own object
    assert max(max(t["mean_log_rank"]) for t in overview["tasks"].values()) > 0.5  # a random model ranks far down


def test_the_table_carries_them_and_old_results_read(result):
    header, rows = layer_table(trace_overview(result))
    assert header[-1].startswith("mean_js") and {"mean_log_rank", "top1_accuracy", "top10_accuracy", "mean_kl_to_final"} <= set(header)
    first = dict(zip(header, rows[0]))
    ranks = np.array(result["tasks"]["antonyms_en"]["target_rank"], dtype=np.float64)
    assert first["mean_log_rank"] == pytest.approx(np.log10(1 + ranks[:, 0]).mean())
    old = {**result, "tasks": {n: {k: v for k, v in t.items() if k != "kl_to_final"} for n, t in result["tasks"].items()}}
    assert trace_overview(old)["tasks"]["plural_en"]["mean_kl_to_final"] == [None] * result["num_layers"]
    assert lt.TraceResult.from_dict(old).tasks["plural_en"].kl_to_final is None
