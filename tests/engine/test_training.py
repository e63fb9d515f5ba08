"""Training: allocations, reversible freezing, the loop (frozen stays frozen), exact resume, corpora."""

import json
import math
import re

import pytest
import torch

import tiny_models
from layertracer.errors import LayerTracerError
from layertracer.models import wrap_model
from layertracer.training import (
    CorpusError,
    TrainConfig,
    apply_allocation,
    count_parameters,
    lr_at,
    pack,
    read_texts,
    resolve_allocation,
    train,
)
from layertracer.training.loop import sample_indices


@pytest.fixture
def loaded(tokenizer):
    return wrap_model(tiny_models.build_model("qwen3"), tokenizer, source="qwen3")


@pytest.fixture(scope="module")
def blocks(tokenizer):
    from layertracer.demo.corpus import fact_documents

    return pack(tokenizer, fact_documents(["antonyms_en", "country_capital_zh"]), 16)


def test_presets_and_ranges():
    assert resolve_allocation("train-shallow", 8).layers == (0, 1, 2, 3)
    assert resolve_allocation("train-deep", 8).layers == (4, 5, 6, 7)
    full = resolve_allocation("full", 8)
    assert full.layers == tuple(range(8)) and full.embeddings and full.head and full.final_norm
    ranged = resolve_allocation("0-2,6", 8, head=True)
    assert ranged.layers == (0, 1, 2, 6) and ranged.head and not ranged.embeddings and ranged.ranges == "0-2,6"


@pytest.mark.parametrize(
    "spec, message",
    [("0-8", "layer 8 does not exist (the model has layers 0-7)"), ("3-1", "the range 3-1 runs backwards"),
     ("a-b", "'a-b' is not a layer or a range like 0-7,12"), (",", "no layers")],
)
def test_bad_ranges(spec, message):
    with pytest.raises(LayerTracerError, match=re.escape(message)):
        resolve_allocation(spec, 8)


def test_from_trace_uses_the_plan(tmp_path):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"num_layers": 4, "freeze_plan": {"train_layers": [0, 2]}}))
    assert resolve_allocation(f"from-trace:{path}", 4).layers == (0, 2)
    with pytest.raises(LayerTracerError, match="4-layer model, this model has 6"):
        resolve_allocation(f"from-trace:{path}", 6)


def test_parameter_counts_and_parts(loaded):
    model, adapter = loaded.model, loaded.adapter
    per_block = sum(p.numel() for p in adapter.blocks[0].parameters())
    count = count_parameters(model, adapter, resolve_allocation("0-1", 4))
    assert count.trainable == 2 * per_block
    assert count.total == sum(p.numel() for p in model.parameters())
    assert count.share == pytest.approx(count.trainable / count.total)
    mlp_only = count_parameters(model, adapter, resolve_allocation("0", 4, part="mlp"))
    assert mlp_only.trainable == sum(p.numel() for p in adapter.blocks[0].mlp.parameters())
    assert count_parameters(model, adapter, resolve_allocation("full", 4)).share == 1.0


def test_freezing_is_undone_even_on_error(loaded):
    model, adapter = loaded.model, loaded.adapter
    with pytest.raises(RuntimeError):
        with apply_allocation(model, adapter, resolve_allocation("1", 4)) as params:
            assert all(p.requires_grad for p in params)
            assert not any(p.requires_grad for p in adapter.blocks[0].parameters())
            raise RuntimeError("job failed")
    assert all(p.requires_grad for p in model.parameters())


def test_lr_schedule():
    config = TrainConfig(steps=110, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(0.1)
    assert lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(10, config) == pytest.approx(1.0)
    assert lr_at(60, config) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(110, config) == pytest.approx(0.1)


def test_data_order_is_a_function_of_seed_and_step():
    config = TrainConfig(batch_size=3, grad_accum=2, seed=5)
    epoch = [i for step in range(2) for micro in range(2) for i in sample_indices(step, micro, config, 12)]
    assert sorted(epoch) == list(range(12))  # one epoch covers every block once
    assert sample_indices(7, 1, config, 12) == sample_indices(7, 1, config, 12)
    assert sample_indices(0, 0, TrainConfig(batch_size=3, seed=6), 12) != sample_indices(0, 0, config, 12)


def test_training_changes_only_the_trainable_layers(loaded, blocks):
    model, adapter = loaded.model, loaded.adapter
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = train(loaded, blocks, resolve_allocation("2-3", 4), TrainConfig(steps=3, batch_size=4, lr=1e-2))
    assert result.steps_done == 3 and len(result.history) == 3
    assert all(math.isfinite(m.loss) and m.tokens_per_s > 0 for m in result.history)
    trained = {f"model.layers.{i}." for i in (2, 3)}
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param)
        is_trainable = any(name.startswith(prefix) for prefix in trained)
        # Norm weights may legitimately receive no update only if their gradient is zero; weights must move.
        if not is_trainable:
            assert not changed, f"frozen {name} changed"
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n.startswith("model.layers.3."))
    assert all(p.requires_grad for p in model.parameters())  # freezing undone


def test_resume_gives_the_same_weights(tokenizer, blocks, tmp_path):
    config = TrainConfig(steps=6, batch_size=4, lr=5e-3, warmup_steps=2, checkpoint_every=3, seed=3)
    allocation = resolve_allocation("0-1", 4)
    straight = wrap_model(tiny_models.build_model("qwen3"), tokenizer)
    straight_result = train(straight, blocks, allocation, config)

    interrupted = wrap_model(tiny_models.build_model("qwen3"), tokenizer)
    calls = iter(range(100))
    first = train(interrupted, blocks, allocation, config, checkpoint_dir=tmp_path,
                  should_stop=lambda: next(calls) >= 3)
    assert first.stopped and first.steps_done == 3
    resumed_model = wrap_model(tiny_models.build_model("qwen3"), tokenizer)  # fresh process stand-in
    second = train(resumed_model, blocks, allocation, config, checkpoint_dir=tmp_path)
    assert second.resumed_from == 3 and second.steps_done == 6
    # The metrics of the killed run travel in the checkpoint: the resumed result has all six steps,
    # with the losses of the run never interrupted.
    assert [m.step for m in second.history] == list(range(1, 7))
    assert [m.loss for m in second.history] == [m.loss for m in straight_result.history]
    assert second.tokens_seen == straight_result.tokens_seen
    for (name, a), (_, b) in zip(straight.model.named_parameters(), resumed_model.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    stored = sorted(p.name for p in tmp_path.iterdir())
    assert stored == ["step-000003", "step-000006"]  # no temp folders left
    assert all(not any(f.suffix in {".pt", ".bin", ".pkl"} for f in (tmp_path / s).iterdir()) for s in stored)


def test_corpus_formats_and_errors(tmp_path, tokenizer):
    (tmp_path / "a.txt").write_text("The capital of France is Paris", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"text": "一二三"}\n\n{"text": "four"}\n', encoding="utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["parquet text"]}), tmp_path / "c.parquet")
    assert read_texts(tmp_path) == ["The capital of France is Paris", "一二三", "four", "parquet text"]
    packed = pack(tokenizer, ["ab", "cd"], 2)
    assert packed.shape[1] == 2 and int(tokenizer.eos_token_id) in packed.flatten().tolist()
    with pytest.raises(CorpusError, match="does not exist"):
        read_texts(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="holds no .txt, .jsonl or .parquet"):
        read_texts(tmp_path / "empty")
    (tmp_path / "bad.jsonl").write_text('{"txt": 1}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.jsonl:1 \(byte 0\): expected an object with a string 'text'"):
        read_texts(tmp_path / "bad.jsonl")
    with pytest.raises(CorpusError, match="fewer than one block"):
        pack(tokenizer, ["hi"], 1000)


def test_bf16_weights_train_with_fp32_master_weights(tokenizer):
    """A model loaded in bf16: an lr-1e-4 update of weights near 1 is below bf16's resolution (one step
    rounds away), yet 60 steps move the trained weights by about lr x steps because AdamW updates a
    float32 copy; the frozen weights stay bf16 and untouched, the trained ones return to bf16."""
    import torch

    import tiny_models
    from layertracer.models.loading import wrap_model
    from layertracer.training.allocation import resolve_allocation
    from layertracer.training.loop import TrainConfig, train

    near_one = torch.tensor([1.0, 1.0078125, 0.9921875], dtype=torch.bfloat16)
    assert torch.equal(near_one + torch.tensor(1e-4, dtype=torch.bfloat16), near_one)  # bf16 alone: no update
    model = tiny_models.build_model("llama", 0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layernorm" in name or name.endswith("norm.weight"):
                param.fill_(1.0)
    model = model.to(torch.bfloat16)
    loaded = wrap_model(model, tokenizer)
    block = loaded.adapter.blocks[0]
    trained = block.input_layernorm.weight
    frozen = loaded.adapter.blocks[3].input_layernorm.weight
    before_trained, before_frozen = trained.detach().clone(), frozen.detach().clone()
    blocks = torch.randint(3, 300, (16, 16))
    allocation = resolve_allocation("0", loaded.adapter.num_layers)
    result = train(loaded, blocks, allocation,
                   TrainConfig(steps=60, batch_size=4, lr=1e-4, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0,
                               max_grad_norm=0.0, checkpoint_every=0))
    assert result.precision == {"master_weights": "float32", "frozen": ["bfloat16"], "autocast": "bfloat16",
                                "loss_scaling": False}
    assert trained.dtype == torch.bfloat16 and frozen.dtype == torch.bfloat16
    moved = (trained.float() - before_trained.float()).abs()
    assert moved.mean() > 2e-3  # ~60 x 1e-4 accumulated, then rounded to bf16 once
    assert torch.equal(frozen, before_frozen)


def test_fp16_autocast_scales_the_loss_and_resumes_with_its_scale(tmp_path, tokenizer):
    """autocast fp16: the forward in float16, the loss scaled for backward (torch's GradScaler), float32
    master weights; the losses follow float32 training's to fp16 rounding; the loss scale is part of the
    checkpoint, so a run stopped after 2 steps and resumed reaches the weights of one never stopped."""
    import torch

    import tiny_models
    from layertracer.models.loading import wrap_model
    from layertracer.training.allocation import resolve_allocation
    from layertracer.training.loop import TrainConfig, train

    blocks = torch.randint(3, 300, (16, 16), generator=torch.Generator().manual_seed(0))
    allocation = resolve_allocation("full", tiny_models.LAYERS)

    def run(autocast: str, steps: int = 4, folder=None, stop_after=None):
        loaded = wrap_model(tiny_models.build_model("qwen3", 0), tokenizer)
        calls = iter(range(100))
        stop = (lambda: next(calls) >= stop_after) if stop_after else None
        config = TrainConfig(steps=steps, batch_size=4, lr=1e-3, warmup_steps=0, checkpoint_every=2, autocast=autocast)
        return loaded, train(loaded, blocks, allocation, config, checkpoint_dir=folder, should_stop=stop)

    reference, plain = run("off")
    loaded, scaled = run("fp16")
    assert plain.precision["autocast"] is None and not plain.precision["loss_scaling"]
    assert scaled.precision["autocast"] == "float16" and scaled.precision["loss_scaling"]
    assert scaled.precision["loss_scale"] == 65536.0  # torch's initial scale: no step overflowed
    assert [m.loss for m in scaled.history] == pytest.approx([m.loss for m in plain.history], rel=5e-3)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())

    _, first = run("fp16", folder=tmp_path / "ckpt", stop_after=2)
    assert first.stopped and first.steps_done == 2
    state = json.loads((tmp_path / "ckpt" / "step-000002" / "state.json").read_text(encoding="utf-8"))
    assert state["loss_scale"]["scale"] == 65536.0
    resumed_model, resumed = run("fp16", folder=tmp_path / "ckpt")
    assert resumed.resumed_from == 2
    for (name, a), (_, b) in zip(loaded.model.named_parameters(), resumed_model.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
