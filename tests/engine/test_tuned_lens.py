"""Tuned-lens translators: identity at init, safetensors round trip, refusal of another model's file."""

import pytest
import torch

from layertracer.tuned_lens import Translators, TunedLensError, load, save


def test_untrained_translators_are_the_identity():
    states = torch.randn(5, 7, 16)
    assert torch.equal(Translators(3, 16)(states, 1), states)


def test_round_trip_keeps_values(tmp_path):
    made = Translators(3, 8)
    with torch.no_grad():
        made.weight.normal_()
        made.bias.normal_()
    path = save(made, tmp_path / "lens.safetensors", "sha256:abc")
    back = load(path, "sha256:abc")
    states = torch.randn(4, 8)
    expected = states + states @ made.weight[2].detach().T + made.bias[2].detach()
    assert torch.allclose(back(states, 2), expected)


def test_another_models_file_is_refused(tmp_path):
    path = save(Translators(2, 4), tmp_path / "lens.safetensors", "sha256:abc")
    with pytest.raises(TunedLensError, match="trained for model sha256:abc"):
        load(path, "sha256:other")


def test_training_lowers_held_out_kl(tmp_path):
    from layertracer.models.loading import load_model
    from layertracer.training.corpus import pack
    from layertracer.tuned_lens import lens_kl, train_translators
    from tiny_models import save_tiny_model

    loaded = load_model(str(save_tiny_model("llama", tmp_path / "m")), device="cpu", dtype="float32")
    texts = [f"the capital of country {i} is city {i * 7 % 13}; opposite of hot is cold." for i in range(200)]
    blocks = pack(loaded.tokenizer, texts, 32)
    train, held = blocks[: len(blocks) - 8], blocks[len(blocks) - 8 :]
    identity = lens_kl(loaded, Translators(loaded.adapter.num_layers, loaded.info.hidden_size), held)
    trained = train_translators(loaded, train, steps=60, batch_size=8)
    with torch.no_grad():
        after = lens_kl(loaded, trained, held)
    assert after.sum() < 0.8 * identity.sum()


def test_a_missing_damaged_or_foreign_shaped_file_is_one_line(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(TunedLensError, match="does not exist"):
        load(tmp_path / "none.safetensors", "sha256:abc")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(TunedLensError, match="cannot read tuned-lens file") as caught:
        load(tmp_path / "junk.safetensors", "sha256:abc")
    assert "\n" not in str(caught.value)
    save_file({"weight": torch.zeros(3, 4), "bias": torch.zeros(3)}, str(tmp_path / "odd.safetensors"),
              metadata={"fingerprint": "sha256:abc"})
    with pytest.raises(TunedLensError, match="holds no translators"):
        load(tmp_path / "odd.safetensors", "sha256:abc")


def test_a_loaded_file_carries_its_sha256_and_training_metadata(tmp_path):
    import hashlib

    path = save(Translators(2, 4), tmp_path / "lens.safetensors", "sha256:abc", metadata={"steps": "7"})
    back = load(path, "sha256:abc")
    assert back.source == {"fingerprint": "sha256:abc", "steps": "7", "file": "lens.safetensors",
                           "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
