"""The architecture table, generic discovery, block kinds, and the unsupported-architecture error."""

import pytest
import torch
from torch import nn

import tiny_models
from layertracer.errors import UnsupportedArchitectureError
from layertracer.models.adapters import ARCHITECTURES, _discover_blocks, resolve_adapter

EXPECTED_KINDS = {
    "mamba": ["ssm"] * 4,
    "mamba2": ["ssm"] * 4,
    "qwen3_next": ["linear-attention"] * 3 + ["attention"],
    "jamba": ["ssm", "attention", "ssm", "attention"],
    "bamba": ["ssm", "attention", "ssm", "attention"],
}


@pytest.mark.parametrize("arch", tiny_models.ARCHITECTURES)
def test_every_listed_architecture_is_in_the_table(arch):
    model = tiny_models.build_model(arch)
    adapter = resolve_adapter(model)
    assert adapter.source == "table"
    assert adapter.architecture in ARCHITECTURES
    assert adapter.num_layers == tiny_models.LAYERS
    assert adapter.block_kinds == EXPECTED_KINDS.get(arch, ["attention"] * 4)
    # The table and generic discovery agree on the block list and the head.
    assert _discover_blocks(model, tiny_models.LAYERS) is adapter.blocks or list(
        _discover_blocks(model, tiny_models.LAYERS)
    ) == list(adapter.blocks)
    assert adapter.head is model.get_output_embeddings()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "mamba", "gemma2"])
def test_discovery_fallback_matches_the_real_output(arch, tokenizer, monkeypatch):
    """With its table entry removed, the architecture still traces correctly by discovery."""
    model = tiny_models.build_model(arch)
    name = type(model).__name__
    monkeypatch.delitem(ARCHITECTURES, name)
    adapter = resolve_adapter(model)
    assert adapter.source == "discovered"
    ids = torch.tensor([tokenizer("The capital of France is")["input_ids"]])
    with torch.no_grad():
        real = model(ids).logits[0, -1]
        hidden = model(ids, output_hidden_states=True).hidden_states
        # hidden[-1] is already normed in HF; recompute the last block's raw output with a hook.
        captured = {}
        handle = adapter.blocks[-1].register_forward_hook(
            lambda m, a, o: captured.setdefault("out", o[0] if isinstance(o, tuple) else o)
        )
        model(ids)
        handle.remove()
        lens = adapter.logits(captured["out"][0, -1])
    assert len(hidden) == tiny_models.LAYERS + 1
    torch.testing.assert_close(lens, real, atol=1e-5, rtol=1e-5)


def test_unknown_model_without_blocks_is_reported_by_name():
    class Strange(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("Config", (), {"architectures": ["StrangeForCausalLM"], "num_hidden_layers": 2})()
            self.proj = nn.Linear(4, 4)

        def get_output_embeddings(self):
            return self.proj

    with pytest.raises(UnsupportedArchitectureError, match="unsupported architecture StrangeForCausalLM: could not find its decoder blocks"):
        resolve_adapter(Strange())


def test_logit_softcapping_is_applied():
    model = tiny_models.build_model("gemma2")
    adapter = resolve_adapter(model)
    x = torch.tensor([100.0, -100.0, 0.0])
    assert torch.allclose(adapter.process_logits(x), torch.tanh(x / 5.0) * 5.0)
