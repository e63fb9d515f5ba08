"""Data-parallel training: two CPU processes (gloo) reach the weights of one process on the same global
batch; frozen parameters stay untouched; rank 0 alone writes checkpoints; resume and should_stop work
across ranks. Plus the process-group helpers in a single process.

The two ranks are started as subprocesses with the environment torchrun would give them (this file
is also the worker: ``python test_distributed.py --worker FOLDER``), and ``train(..., distributed=True)``
creates the process group from it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
TESTS = HERE.parents[1]
REPO = TESTS.parent
for _path in (str(REPO), str(TESTS)):  # as a worker script nothing else puts these on the path
    if _path not in sys.path:
        sys.path.insert(0, _path)

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import tiny_models  # noqa: E402
from launch_ranks import launch  # noqa: E402
from layertracer.errors import LayerTracerError  # noqa: E402
from layertracer.models import wrap_model  # noqa: E402
from layertracer.training import distributed as dist_utils  # noqa: E402
from layertracer.training import loop, pack, resolve_allocation, train  # noqa: E402

WORLD = 2
ALLOCATION = "1-2"  # frozen prefix (embeddings, block 0) and frozen suffix (block 3, final norm, head)
TRAINED = ("model.layers.1.", "model.layers.2.")
TIMEOUT_S = 50.0


def _config(**overrides):
    values = dict(steps=4, batch_size=4, grad_accum=2, lr=2e-3, warmup_steps=1, checkpoint_every=2,
                  eval_every=2, eval_batches=3, seed=3)
    return loop.TrainConfig(**{**values, **overrides})


# --------------------------------------------------------------------------------------------------
# The worker: one rank


def _worker(folder: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    data = load_file(str(folder / "blocks.safetensors"))
    blocks, eval_blocks = data["train"], data["eval"]
    allocation = resolve_allocation(ALLOCATION, tiny_models.LAYERS)
    saves: list[int] = []
    original_save = loop.Checkpoints.save

    def spy(self, step, *args, **kwargs):  # records which rank wrote which checkpoint
        saves.append(step)
        return original_save(self, step, *args, **kwargs)

    loop.Checkpoints.save = spy
    fed: list[list[list[int]]] = []

    def record(module, args, kwargs):  # the sequences this rank trained on (eval passes run without grad)
        if torch.is_grad_enabled():
            fed.append(kwargs["input_ids"].tolist())

    def fresh():
        model = tiny_models.build_model("qwen3")
        model.base_model.register_forward_pre_hook(record, with_kwargs=True)  # fused loss or not
        return wrap_model(model, None)

    report: dict = {"rank": rank}
    try:
        # A global batch that does not split over the ranks: the same clear error on every rank.
        try:
            train(wrap_model(tiny_models.build_model("qwen3"), None), blocks, allocation,
                  _config(steps=1, batch_size=3), distributed=True)
            report["split_error"] = None
        except LayerTracerError as exc:
            report["split_error"] = str(exc)
        report["world_size"] = dist_utils.world_size()

        # Interrupted after 2 steps by rank 0's should_stop; rank 1's would stop at once, and must be ignored.
        calls = iter(range(100))
        stop = (lambda: next(calls) >= 2) if rank == 0 else (lambda: True)
        first = train(fresh(), blocks, allocation, _config(),
                      eval_blocks=eval_blocks, checkpoint_dir=folder / "checkpoints", should_stop=stop,
                      distributed=True)
        # A fresh model (a restarted job) resumes from the checkpoint on every rank.
        loaded = fresh()
        second = train(loaded, blocks, allocation, _config(), eval_blocks=eval_blocks,
                       checkpoint_dir=folder / "checkpoints", distributed=True)
        report.update(
            first={"stopped": first.stopped, "steps_done": first.steps_done, "world_size": first.world_size},
            second={"resumed_from": second.resumed_from, "steps_done": second.steps_done},
            # The resumed run's history holds the killed run's steps too (they travel in the checkpoint).
            losses=[m.loss for m in second.history],
            grad_norms=[m.grad_norm for m in second.history],
            eval=[list(e) for e in second.eval_history],
            tokens_seen=second.tokens_seen,
            saves=saves,
            fed=fed,
        )
        save_file({n: p.detach().contiguous() for n, p in loaded.model.named_parameters()},
                  str(folder / f"rank{rank}.safetensors"))
        (folder / f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist_utils.shutdown()


# --------------------------------------------------------------------------------------------------
# The launcher


def _launch(folder: Path, world: int, timeout_s: float = TIMEOUT_S) -> None:
    launch(HERE, ["--worker", str(folder)], folder, world, timeout_s)


# --------------------------------------------------------------------------------------------------
# Tests


@pytest.fixture(scope="module")
def data(tokenizer):
    from layertracer.demo.corpus import fact_documents

    blocks = pack(tokenizer, fact_documents(["antonyms_en", "country_capital_zh"]), 16)
    return blocks, blocks[-12:].clone()


def test_two_processes_train_like_one(tmp_path, data):
    blocks, eval_blocks = data
    save_file({"train": blocks, "eval": eval_blocks}, str(tmp_path / "blocks.safetensors"))
    started = time.monotonic()
    _launch(tmp_path, WORLD)
    launched_s = time.monotonic() - started

    # One process, the same global batch (4 sequences x 2 micro-batches), uninterrupted.
    initial = {n: p.detach().clone() for n, p in tiny_models.build_model("qwen3").named_parameters()}
    single = wrap_model(tiny_models.build_model("qwen3"), None)
    reference = train(single, blocks, resolve_allocation(ALLOCATION, tiny_models.LAYERS), _config(),
                      eval_blocks=eval_blocks)
    expected = dict(single.model.named_parameters())

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    weights = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(WORLD)]
    for rank, (report, final) in enumerate(zip(reports, weights)):
        assert "not a multiple of the 2 processes" in report["split_error"]
        assert report["world_size"] == WORLD
        assert report["first"] == {"stopped": True, "steps_done": 2, "world_size": WORLD}
        assert report["second"] == {"resumed_from": 2, "steps_done": 4}
        assert report["tokens_seen"] == reference.tokens_seen  # tokens counted over all ranks
        # Each rank trained on its contiguous half of every global micro-batch, in the global order.
        config, share = _config(), _config().batch_size // WORLD
        assert report["fed"] == [
            blocks[loop.sample_indices(step, micro, config, len(blocks))][rank * share : (rank + 1) * share].tolist()
            for step in range(config.steps) for micro in range(config.grad_accum)
        ]
        # The reported losses are global means: those of the single process.
        assert report["losses"] == pytest.approx([m.loss for m in reference.history], rel=1e-5, abs=1e-6)
        assert report["grad_norms"] == pytest.approx([m.grad_norm for m in reference.history], rel=1e-4)
        assert [tuple(e) for e in report["eval"]] == [
            (s, pytest.approx(v, rel=1e-5)) for s, v in reference.eval_history
        ]
        moved = 0
        for name, value in final.items():
            if name.startswith(TRAINED):
                torch.testing.assert_close(value, expected[name].detach(), rtol=0, atol=1e-6,
                                           msg=lambda m: f"rank {rank} {name}: {m}")
                moved += not torch.equal(value, initial[name])
            else:
                assert torch.equal(value, initial[name]), f"rank {rank}: frozen {name} changed"
        assert moved > 0
    for name in weights[0]:  # the ranks hold bit-identical weights
        assert torch.equal(weights[0][name], weights[1][name]), name
    # Rank 0 alone wrote checkpoints: step 2 (periodic, then again on the stop), step 4 (periodic, final).
    assert reports[0]["saves"] == [2, 2, 4, 4] and reports[1]["saves"] == []
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    state = json.loads((tmp_path / "checkpoints" / "step-000004" / "state.json").read_text())
    assert state["world_size"] == WORLD and state["step"] == 4
    assert launched_s < TIMEOUT_S


def test_helpers_in_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not dist_utils.is_initialized()
    assert (dist_utils.world_size(), dist_utils.rank(), dist_utils.is_main()) == (1, 0, True)
    assert dist_utils.broadcast_flag(True) is True and dist_utils.broadcast_int(7) == 7
    assert dist_utils.all_reduce_mean(2.5) == 2.5 and dist_utils.all_reduce_sum([1, 2]) == [1.0, 2.0]
    assert dist_utils.all_agree(False) is False
    dist_utils.barrier()
    assert dist_utils.init_from_env() is False  # no WORLD_SIZE: nothing to join
    batch = list(range(8))
    assert [dist_utils.shard_indices(batch, r, 2) for r in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [dist_utils.shard_indices(batch, r, 4, strided=True) for r in range(4)] == [
        [0, 4], [1, 5], [2, 6], [3, 7]
    ]
    with pytest.raises(LayerTracerError, match="batch size 6 is not a multiple of the 4 processes"):
        dist_utils.shard_indices(list(range(6)), 0, 4)
    with pytest.raises(LayerTracerError, match="outside a world"):
        dist_utils.shard_indices(batch, 2, 2)


def test_launcher_environment_is_checked(monkeypatch, data):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_PORT"):
        monkeypatch.setenv(name, "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(LayerTracerError, match="MASTER_ADDR is not set"):
        dist_utils.init_from_env()
    # Without distributed=True a launched process is not joined silently: it warns, then trains alone.
    loaded = wrap_model(tiny_models.build_model("qwen3"), None)
    with pytest.warns(RuntimeWarning, match="torch.distributed is not initialised"):
        result = train(loaded, data[0], resolve_allocation("0", 4), _config(steps=1, grad_accum=1))
    assert result.world_size == 1 and math.isfinite(result.history[0].loss)
    assert loaded.model.config.use_cache is True  # switched off for training only


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]))
    else:
        raise SystemExit(f"usage: {sys.argv[0]} --worker FOLDER (started by the test)")
