"""Sharded training (strategy fsdp, FSDP2) on two CPU processes (gloo): the same per-step losses, held-out
losses and final weights as one process on the same global batch; frozen parameters untouched; a run
killed mid-way (every rank exits abruptly after its step-2 checkpoint) and resumed by new processes ends
with the same weights, bit for bit, as one never killed; the checkpoints are sharded safetensors (no
pickle). This file is also the ranks' worker: ``python test_fsdp.py MODE FOLDER``.
"""

from __future__ import annotations

import json
import os
import sys
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
from layertracer.training.sharded import fsdp_supported  # noqa: E402

WORLD = 2
ALLOCATION = "1-2"  # frozen prefix (embeddings, block 0) and frozen suffix (block 3, final norm, head)
TRAINED = ("model.layers.1.", "model.layers.2.")
TIMEOUT_S = 120.0


def _config(**overrides):
    values = dict(steps=4, batch_size=4, grad_accum=2, lr=2e-3, warmup_steps=1, checkpoint_every=2,
                  eval_every=2, eval_batches=3, seed=3, strategy="fsdp")
    return loop.TrainConfig(**{**values, **overrides})


def _worker(mode: str, folder: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    data = load_file(str(folder / "blocks.safetensors"))
    allocation = resolve_allocation(ALLOCATION, tiny_models.LAYERS)
    loaded = wrap_model(tiny_models.build_model("qwen3"), None)
    checkpoints = folder / ("checkpoints" if mode in ("crash", "resume") else f"checkpoints-{mode}")

    def crash_after_checkpoint(metrics) -> None:
        if mode == "crash" and metrics.step == 3:  # step 2's checkpoint is on disk: die without a word
            os._exit(17)

    result = train(loaded, data["train"], allocation, _config(), eval_blocks=data["eval"],
                   checkpoint_dir=checkpoints, on_step=crash_after_checkpoint, distributed=True)
    # After train the model is an ordinary module again: plain tensors, every weight back.
    plain = all(type(p) is torch.nn.Parameter for p in loaded.model.parameters())
    save_file({n: p.detach().contiguous() for n, p in loaded.model.named_parameters()},
              str(folder / f"{mode}-rank{rank}.safetensors"))
    (folder / f"{mode}-rank{rank}.json").write_text(json.dumps({
        "plain": plain, "resumed_from": result.resumed_from, "steps_done": result.steps_done,
        "world_size": result.world_size, "precision": result.precision, "tokens_seen": result.tokens_seen,
        "losses": [m.loss for m in result.history], "grad_norms": [m.grad_norm for m in result.history],
        "eval": [list(e) for e in result.eval_history],
    }))
    dist_utils.shutdown()


@pytest.fixture(scope="module")
def data(tokenizer):
    from layertracer.demo.corpus import fact_documents

    blocks = pack(tokenizer, fact_documents(["antonyms_en", "country_capital_zh"]), 16)
    return blocks, blocks[-12:].clone()


@pytest.mark.skipif(not fsdp_supported(), reason=f"strategy fsdp needs torch >= 2.9 (this is {torch.__version__})")
def test_fsdp_on_two_processes_trains_like_one_and_resumes_exactly(tmp_path, data):
    blocks, eval_blocks = data
    save_file({"train": blocks, "eval": eval_blocks}, str(tmp_path / "blocks.safetensors"))
    codes = launch(HERE, ["crash", str(tmp_path)], tmp_path, WORLD, TIMEOUT_S, expect_success=False, log_name="crash")
    assert codes == [17, 17]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000002"]
    launch(HERE, ["resume", str(tmp_path)], tmp_path, WORLD, TIMEOUT_S, log_name="resume")
    launch(HERE, ["straight", str(tmp_path)], tmp_path, WORLD, TIMEOUT_S, log_name="straight")

    # One process, the same global batch, uninterrupted, in the data-parallel engine's single-process path.
    initial = {n: p.detach().clone() for n, p in tiny_models.build_model("qwen3").named_parameters()}
    single = wrap_model(tiny_models.build_model("qwen3"), None)
    reference = train(single, blocks, resolve_allocation(ALLOCATION, tiny_models.LAYERS), _config(strategy="ddp"),
                      eval_blocks=eval_blocks)
    expected = dict(single.model.named_parameters())

    reports = {m: [json.loads((tmp_path / f"{m}-rank{r}.json").read_text()) for r in range(WORLD)]
               for m in ("resume", "straight")}
    weights = {m: [load_file(str(tmp_path / f"{m}-rank{r}.safetensors")) for r in range(WORLD)]
               for m in ("resume", "straight")}
    for rank in range(WORLD):
        resumed, straight = reports["resume"][rank], reports["straight"][rank]
        assert resumed["plain"] and straight["plain"]
        assert (resumed["resumed_from"], resumed["steps_done"], resumed["world_size"]) == (2, 4, WORLD)
        assert straight["resumed_from"] is None
        assert resumed["precision"]["strategy"] == "fsdp" and resumed["precision"]["master_weights"] == "float32"
        assert resumed["tokens_seen"] == reference.tokens_seen
        # The losses are global means: the single process's, to float32 rounding of the sharded sums.
        for report in (resumed, straight):
            assert report["losses"] == pytest.approx([m.loss for m in reference.history], rel=1e-5, abs=1e-6)
            assert report["grad_norms"] == pytest.approx([m.grad_norm for m in reference.history], rel=1e-4)
            assert [tuple(e) for e in report["eval"]] == [(s, pytest.approx(v, rel=1e-5)) for s, v in reference.eval_history]
        # Killed and resumed equals never killed, bit for bit (same shards, same order of operations).
        for name, value in weights["resume"][rank].items():
            assert torch.equal(value, weights["straight"][rank][name]), f"rank {rank} {name}"
        moved = 0
        for name, value in weights["resume"][rank].items():
            if name.startswith(TRAINED):
                torch.testing.assert_close(value, expected[name].detach(), rtol=0, atol=1e-5,
                                           msg=lambda m: f"rank {rank} {name}: {m}")
                moved += not torch.equal(value, initial[name])
            else:
                assert torch.equal(value, initial[name]), f"rank {rank}: frozen {name} changed"
        assert moved > 0
    for name in weights["resume"][0]:  # every rank got the whole trained model back
        assert torch.equal(weights["resume"][0][name], weights["resume"][1][name]), name
    # The checkpoint: each rank's shards in safetensors (offsets in the header), state.json; no pickle.
    step = tmp_path / "checkpoints" / "step-000004"
    assert sorted(p.suffix for p in step.iterdir()) == [".json", ".safetensors", ".safetensors"]
    shards = [load_file(str(p)) for p in sorted(step.glob("*.safetensors"))]
    name = "model.layers.1.mlp.up_proj.weight"
    rows = expected[name].shape[0]
    assert [s[name].shape[0] for s in shards] == [rows // 2, rows - rows // 2]
    assert "model.layers.0.mlp.up_proj.weight" not in shards[0]  # frozen weights are not checkpointed
    assert json.loads((step / "state.json").read_text())["world_size"] == WORLD


def test_fsdp_in_one_process_is_one_clear_error(data):
    blocks, _ = data
    loaded = wrap_model(tiny_models.build_model("qwen3"), None)
    with pytest.raises(LayerTracerError, match=r"strategy fsdp shards the model over several processes, but this "
                                               r"run has one: start it with torchrun"):
        train(loaded, blocks, resolve_allocation("full", tiny_models.LAYERS), _config(steps=1))
    with pytest.raises(LayerTracerError, match="training option strategy"):
        train(loaded, blocks, resolve_allocation("full", tiny_models.LAYERS), _config(strategy="zero3"))


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
