"""Weight drift (exact values for hand-made changes) and hybrid construction (donor blocks copied
exactly, the base untouched, seeded re-initialization of exactly the range, clear errors, save and
reload with identical logits)."""

import copy
import json
import math

import pytest
import torch

import tiny_models
from layertracer.errors import LayerTracerError
from layertracer.hybrid import build_hybrid, hybrid_recipe, save_hybrid
from layertracer.models import load_model, wrap_model
from layertracer.training.drift import weight_drift, weight_snapshot

IDS = torch.tensor([[1, 17, 42, 99, 7, 250, 3, 64]])


@pytest.fixture(scope="module")
def base(tokenizer):
    return wrap_model(tiny_models.build_model("llama", seed=0), tokenizer, source="llama-seed0")


@pytest.fixture(scope="module")
def donor(tokenizer):
    return wrap_model(tiny_models.build_model("llama", seed=1), tokenizer, source="llama-seed1")


def _state(module):
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def _equal(module_a, module_b):
    a, b = module_a.state_dict(), module_b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _logits(loaded):
    with torch.no_grad():
        return loaded.model(IDS).logits


# ---------------------------------------------------------------------------------------------- drift


def test_drift_is_zero_for_identical_weights(base):
    snapshot = weight_snapshot(base)
    assert all(t.device.type == "cpu" for t in snapshot.values())
    drift = weight_drift(base.adapter, snapshot, base.model)
    assert drift["blocks"] == [0.0] * 4 and drift["num_layers"] == 4
    for group in ("embeddings", "head", "final_norm", "total"):
        assert drift[group]["relative"] == 0.0 and drift[group]["before_norm"] > 0
    assert drift["total"]["numel"] == sum(p.numel() for p in base.model.parameters())
    assert drift["block_kinds"] == ["attention"] * 4
    json.dumps(drift, allow_nan=False)


def test_a_snapshot_of_the_trained_parameters_alone_gives_the_full_snapshots_drift(tokenizer):
    """A trial copies only what it trains (the frozen weights are their own "before"): the same drift,
    group by group, as a snapshot of every parameter, for a fraction of the copy."""
    from layertracer.training import TrainConfig, resolve_allocation, train
    from layertracer.training.allocation import trainable_parameters
    from layertracer.training.drift import with_unchanged

    loaded = wrap_model(tiny_models.build_model("llama", seed=0), tokenizer)
    allocation = resolve_allocation("1-2", loaded.adapter.num_layers)
    full = weight_snapshot(loaded)
    partial = weight_snapshot(loaded, only=trainable_parameters(loaded.model, loaded.adapter, allocation))
    assert set(partial) == {n for n in full if n.startswith(("model.layers.1.", "model.layers.2."))}
    train(loaded, torch.randint(3, 300, (8, 16)), allocation, TrainConfig(steps=2, batch_size=4, lr=1e-2,
                                                                          warmup_steps=0, checkpoint_every=0))
    assert weight_drift(loaded.adapter, with_unchanged(partial, loaded), loaded.model) == \
        weight_drift(loaded.adapter, full, loaded.model)
    assert weight_drift(loaded.adapter, full, loaded.model)["blocks"][1] > 0


def test_drift_exact_for_a_hand_modified_model(base):
    snapshot = weight_snapshot(base)
    after = copy.deepcopy(base.model)
    block = after.model.layers[2]
    # Changes that are exact in float32 (scaling by powers of two, zeroing), so the expected values
    # below are exact too: doubling W changes it by ||W||, zeroing it by ||W||.
    with torch.no_grad():
        block.mlp.up_proj.weight.mul_(2.0)
        block.self_attn.o_proj.weight.zero_()
        after.model.embed_tokens.weight.mul_(0.5)
        after.model.norm.weight.mul_(-1.0)
    # The snapshot is a copy: changing the model after it must not change it.
    assert torch.equal(snapshot["model.embed_tokens.weight"], base.model.model.embed_tokens.weight)
    # base.adapter belongs to the unmodified model: the copy's own adapter is resolved.
    drift = weight_drift(base.adapter, snapshot, after)
    original = base.model.model.layers[2]
    with torch.no_grad():
        squares = {name: float((p.double() ** 2).sum()) for name, p in original.named_parameters()}
    changed = math.sqrt(squares["mlp.up_proj.weight"] + squares["self_attn.o_proj.weight"])
    assert drift["blocks"][2] == pytest.approx(changed / math.sqrt(sum(squares.values())), rel=1e-12)
    assert drift["block_details"][2]["delta_norm"] == pytest.approx(changed, rel=1e-12)
    assert drift["block_details"][2]["numel"] == sum(p.numel() for p in original.parameters())
    assert [drift["blocks"][i] for i in (0, 1, 3)] == [0.0, 0.0, 0.0]
    assert drift["embeddings"]["relative"] == pytest.approx(0.5, rel=1e-12)
    assert drift["final_norm"]["relative"] == pytest.approx(2.0, rel=1e-12)
    assert drift["head"]["relative"] == 0.0 and drift["head"]["tied_to_embeddings"] is False
    assert base.model.model.embed_tokens.weight.abs().sum() > 0  # the base itself is untouched
    assert weight_drift(base.adapter, snapshot, base.model)["embeddings"]["relative"] == 0.0


def test_drift_groups_of_a_tied_model_and_wrong_snapshots(tokenizer, base):
    gpt2 = wrap_model(tiny_models.build_model("gpt2", seed=0), tokenizer)
    drift = weight_drift(gpt2.adapter, weight_snapshot(gpt2.model), gpt2)
    assert drift["head"]["tied_to_embeddings"] is True
    assert drift["other"]["names"] == ["transformer.wpe.weight"]
    # A tied tensor counts once in the total.
    assert drift["total"]["numel"] == sum(p.numel() for p in gpt2.model.parameters())
    with pytest.raises(LayerTracerError, match="another model"):
        weight_drift(base.adapter, weight_snapshot(gpt2.model), base.model)


# --------------------------------------------------------------------------------------------- hybrid


def test_donor_hybrid_copies_exactly_the_range(base, donor):
    base_before = _state(base.model)
    hybrid = build_hybrid(base, layers=[2, 3], donor=donor)
    assert hybrid.model is not base.model
    for layer in range(4):
        source = donor if layer in (2, 3) else base
        assert _equal(hybrid.adapter.blocks[layer], source.adapter.blocks[layer]), layer
        # Copies, not shared storage.
        for p_h, p_s in zip(hybrid.adapter.blocks[layer].parameters(), source.adapter.blocks[layer].parameters()):
            assert p_h.data_ptr() != p_s.data_ptr()
    assert _equal(hybrid.model.model.embed_tokens, base.model.model.embed_tokens)
    assert _equal(hybrid.adapter.head, base.adapter.head)
    assert _equal(hybrid.model.model.norm, base.model.model.norm)
    after = _state(base.model)
    assert all(torch.equal(base_before[k], after[k]) for k in base_before)
    assert not hasattr(base.model.config, "layertracer_hybrid")

    logits = _logits(hybrid)
    assert torch.isfinite(logits).all() and not torch.allclose(logits, _logits(base))
    recipe = hybrid.hybrid
    assert recipe == hybrid.model.config.layertracer_hybrid == hybrid_recipe(hybrid)
    assert recipe["mode"] == "donor" and recipe["layers"] == [2, 3] and recipe["ranges"] == "2-3"
    assert recipe["mapping"] == [{"donor_layer": 2, "base_layer": 2}, {"donor_layer": 3, "base_layer": 3}]
    assert recipe["base"]["source"] == "llama-seed0" and recipe["donor"]["source"] == "llama-seed1"
    assert recipe["config_differences"] == {}
    json.dumps(recipe, allow_nan=False)


def test_donor_layer_mapping(base, donor):
    hybrid = build_hybrid(base, layers=[0, 1], donor=donor, donor_layers=[3, 2])
    assert _equal(hybrid.adapter.blocks[0], donor.adapter.blocks[3])
    assert _equal(hybrid.adapter.blocks[1], donor.adapter.blocks[2])
    assert _equal(hybrid.adapter.blocks[2], base.adapter.blocks[2])
    assert hybrid.hybrid["donor_layers"] == [3, 2]


def test_reinit_changes_exactly_the_range_and_is_seeded(base):
    snapshot = weight_snapshot(base)
    rng_state = torch.get_rng_state()
    hybrid = build_hybrid(base, layers=[1, 2], reinit=True, seed=5)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the caller's RNG stream is untouched
    drift = weight_drift(hybrid.adapter, snapshot, hybrid.model)
    assert drift["blocks"][0] == 0.0 and drift["blocks"][3] == 0.0
    assert drift["embeddings"]["relative"] == drift["head"]["relative"] == drift["final_norm"]["relative"] == 0.0
    for layer in (1, 2):
        for (name, new), old in zip(
            hybrid.adapter.blocks[layer].named_parameters(), base.adapter.blocks[layer].parameters()
        ):
            assert not torch.equal(new, old), (layer, name)
    # The model's own init: norms back to 1, linear weights N(0, 0.02).
    block = hybrid.adapter.blocks[1]
    assert torch.equal(block.input_layernorm.weight, torch.ones_like(block.input_layernorm.weight))
    assert float(block.mlp.up_proj.weight.detach().std()) == pytest.approx(0.02, rel=0.15)
    assert weight_drift(base.adapter, snapshot, base.model)["total"]["relative"] == 0.0
    again = build_hybrid(base, layers=[1, 2], reinit=True, seed=5)
    assert _equal(again.model, hybrid.model)
    # Seeded per (seed, layer): layer 2 is the same whether or not layer 1 is re-initialized too.
    alone = build_hybrid(base, layers=[2], reinit=True, seed=5)
    assert _equal(alone.adapter.blocks[2], hybrid.adapter.blocks[2])
    other = build_hybrid(base, layers=[1, 2], reinit=True, seed=6)
    assert not _equal(other.adapter.blocks[1], hybrid.adapter.blocks[1])
    assert hybrid.hybrid["mode"] == "reinit" and hybrid.hybrid["seed"] == 5 and hybrid.hybrid["init"] == "_init_weights"
    assert torch.isfinite(_logits(hybrid)).all()


def _llama_with(tokenizer, **changes):
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**tiny_models._COMMON, **changes})
    return wrap_model(transformers.AutoModelForCausalLM.from_config(config).eval(), tokenizer, source="custom")


def test_hybrid_errors(tokenizer, base, donor):
    gpt2 = wrap_model(tiny_models.build_model("gpt2", seed=0), tokenizer)
    with pytest.raises(LayerTracerError, match="LlamaDecoderLayer .* but base block 1 is a GPT2Block"):
        build_hybrid(gpt2, layers=[1], donor=base)
    with pytest.raises(LayerTracerError, match="GPT2Block .* same type"):
        build_hybrid(base, layers=[1], donor=gpt2)
    with pytest.raises(LayerTracerError, match="hidden size mismatch: the base has hidden size 32, the donor 64"):
        build_hybrid(base, layers=[1], donor=_llama_with(tokenizer, hidden_size=64))
    with pytest.raises(LayerTracerError, match=r"'mlp.gate_proj.weight' has shape \(48, 32\) in the donor and \(64, 32\)"):
        build_hybrid(base, layers=[1], donor=_llama_with(tokenizer, intermediate_size=48))
    with pytest.raises(LayerTracerError, match="layer 4 is out of range for a 4-layer model"):
        build_hybrid(base, layers=[2, 4], donor=donor)
    with pytest.raises(LayerTracerError, match="donor_layers: layer -1 is out of range"):
        build_hybrid(base, layers=[2], donor=donor, donor_layers=[-1])
    with pytest.raises(LayerTracerError, match="same number"):
        build_hybrid(base, layers=[2, 3], donor=donor, donor_layers=[1])
    with pytest.raises(LayerTracerError, match="not both"):
        build_hybrid(base, layers=[2], donor=donor, reinit=True)
    with pytest.raises(LayerTracerError, match="needs a donor"):
        build_hybrid(base, layers=[2])
    with pytest.raises(LayerTracerError, match="distinct"):
        build_hybrid(base, layers=[2, 2], reinit=True)
    with pytest.raises(LayerTracerError, match="at least one"):
        build_hybrid(base, layers=[], reinit=True)
    with pytest.raises(LayerTracerError, match="integers"):
        build_hybrid(base, layers=[1.5], reinit=True)
    with pytest.raises(LayerTracerError, match="no hybrid recipe"):
        save_hybrid(base, "unused-folder")


def test_saved_hybrid_reloads_with_identical_logits(tmp_path, base, donor):
    hybrid = build_hybrid(base, layers=[1, 3], donor=donor, donor_layers=[0, 3])
    folder = save_hybrid(hybrid, tmp_path / "hybrid")
    for name in ("model.safetensors", "config.json", "hybrid.json", "tokenizer.json"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "hybrid.json").read_text()) == hybrid.hybrid
    reloaded = load_model(str(folder), device="cpu", dtype="float32")
    assert torch.equal(_logits(reloaded), _logits(hybrid))
    assert hybrid_recipe(reloaded) == hybrid.hybrid
    assert _equal(reloaded.adapter.blocks[1], donor.adapter.blocks[0])
    # A hybrid of a hybrid keeps the first recipe in its provenance.
    second = build_hybrid(reloaded, layers=[0], reinit=True)
    assert second.hybrid["base"]["hybrid"] == hybrid.hybrid


@pytest.mark.parametrize("arch", ["gpt2", "mamba", "jamba", "qwen3_next"])
def test_hybrids_of_other_block_types(tokenizer, arch):
    base = wrap_model(tiny_models.build_model(arch, seed=0), tokenizer, source=arch)
    donor = wrap_model(tiny_models.build_model(arch, seed=1), tokenizer, source=arch)
    snapshot = weight_snapshot(base)
    hybrid = build_hybrid(base, layers=[2, 3], donor=donor)
    fresh = build_hybrid(base, layers=[0], reinit=True)
    assert torch.isfinite(_logits(hybrid)).all() and torch.isfinite(_logits(fresh)).all()
    drift = weight_drift(base.adapter, snapshot, hybrid.model)
    assert drift["blocks"][:2] == [0.0, 0.0] and all(d > 0 for d in drift["blocks"][2:])
    drift = weight_drift(base.adapter, snapshot, fresh.model)
    assert drift["blocks"][0] > 0 and drift["blocks"][1:] == [0.0, 0.0, 0.0]
    assert weight_drift(base.adapter, snapshot, base.model)["total"]["relative"] == 0.0
