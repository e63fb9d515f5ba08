"""The worker's trace runner with ``lens=tuned``: the translator file of the model's fingerprint in the
service's cache, and only there; a missing file and another model's file are one-line failures."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from layertracer.errors import LayerTracerError
from layertracer.models.loading import fingerprint
from layertracer.spec.lens import cached_file
from layertracer.tuned_lens import Translators, save
from worker import runners

OPTIONS = {"similarity": False, "bootstrap_resamples": 20, "lens": "tuned"}


def _spec(folder) -> dict:
    return {"model": str(folder), "tasks": ["antonyms_en"], "limit": 3, "device": "cpu", "dtype": "float32",
            "perturbations": ["skip"], "options": OPTIONS}


def _translators(seed: int = 0) -> Translators:
    made = Translators(4, 32)  # the tiny models: 4 blocks of width 32
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        made.weight.copy_(torch.randn(made.weight.shape, generator=generator) * 0.05)
        made.bias.copy_(torch.randn(made.bias.shape, generator=generator) * 0.3)
    return made


def test_the_runner_reads_the_cached_file_of_the_models_fingerprint(saved_model, tmp_path):
    folder = saved_model("qwen3")
    path = save(_translators(), cached_file(fingerprint(str(folder)), tmp_path / "tuned-lens"), fingerprint(str(folder)))
    result = runners.run_trace(_spec(folder), roots=[folder.parent], lens_cache=tmp_path / "tuned-lens")
    assert result["lens"]["kind"] == "tuned"
    assert result["lens"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    logit = runners.run_trace({**_spec(folder), "options": {**OPTIONS, "lens": "logit"}}, roots=[folder.parent])
    assert logit["lens"] == {"kind": "logit"}
    assert result["tasks"]["antonyms_en"]["target_prob"] != logit["tasks"]["antonyms_en"]["target_prob"]


def test_a_placed_model_gives_the_same_tuned_lens(saved_model, tmp_path):
    """Blocks spread over CPU and disk by accelerate: the translators follow the rows, same numbers."""
    folder = saved_model("qwen3")
    save(_translators(), cached_file(fingerprint(str(folder)), tmp_path / "tuned-lens"), fingerprint(str(folder)))
    plain = runners.run_trace(_spec(folder), roots=[folder.parent], lens_cache=tmp_path / "tuned-lens")
    placed = runners.run_trace({**_spec(folder), "placement": {"max_memory": "cpu=120KB"}}, roots=[folder.parent],
                               offload_folder=tmp_path / "offload", lens_cache=tmp_path / "tuned-lens")
    assert {"cpu", "disk"} <= set(placed["model"]["device_map"].values())
    for key in ("target_prob", "kl_to_final"):
        np.testing.assert_allclose(np.array(placed["tasks"]["antonyms_en"][key], dtype=float),
                                   np.array(plain["tasks"]["antonyms_en"][key], dtype=float), atol=1e-5)
    np.testing.assert_allclose(np.array(placed["position_view"]["target_prob"]),
                               np.array(plain["position_view"]["target_prob"]), atol=1e-5)


def test_missing_and_foreign_files_fail_in_one_line(saved_model, tmp_path):
    folder = saved_model("qwen3")
    with pytest.raises(LayerTracerError, match="no tuned lens for this model .* train one with `layertracer train-lens"):
        runners.run_trace(_spec(folder), roots=[folder.parent], lens_cache=tmp_path / "empty")
    with pytest.raises(LayerTracerError, match="no tuned-lens cache"):
        runners.run_trace(_spec(folder), roots=[folder.parent])
    # A file under this model's name but trained for another one (copied by hand): refused by fingerprint.
    save(_translators(), cached_file(fingerprint(str(folder)), tmp_path / "tuned-lens"), "sha256:00000000000000aa")
    with pytest.raises(LayerTracerError, match="was trained for model sha256:00000000000000aa"):
        runners.run_trace(_spec(folder), roots=[folder.parent], lens_cache=tmp_path / "tuned-lens")
