"""Models larger than one device, on a CPU stand-in: blocks placed by accelerate with some kept on
the CPU and the rest offloaded to disk (its offload hooks load them per forward) trace to the same
numbers as the model in memory, for a Transformer, an SSM and a hybrid; bad placements are one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import layertracer as lt

TOL = 1e-5
OPTIONS = dict(batch_size=2, similarity=False, position_view=False, bootstrap_resamples=20)


def _numbers(result):
    probs = np.array([row for task in result.tasks.values() for row in task.target_prob], dtype=float)
    js = {name: np.array(s.js, dtype=float) for name, s in result.sensitivities.items()}
    return probs, js


@pytest.mark.parametrize("arch", ["qwen3", "mamba", "jamba"])
def test_a_model_offloaded_to_disk_traces_like_the_model_in_memory(arch, saved_model, tmp_path):
    folder = str(saved_model(arch))
    tasks = lt.load_tasks("antonyms_en,plural_en", limit=3)
    kinds = ["skip", "zero-attn", "mask:keep=0.5,draws=2"]
    plain = lt.trace(lt.load_model(folder, device="cpu"), tasks, perturbations=kinds, options=lt.TraceOptions(**OPTIONS))
    # A CPU budget far below the model's size: accelerate keeps what fits and offloads the rest to disk.
    placed = lt.load_model(folder, device="cpu", max_memory="cpu=120KB", offload_folder=str(tmp_path / "offload"))
    where = placed.model.hf_device_map
    assert "disk" in where.values() and "cpu" in where.values(), where
    offloaded = lt.trace(placed, tasks, perturbations=kinds, options=lt.TraceOptions(**OPTIONS))
    (p_plain, js_plain), (p_off, js_off) = _numbers(plain), _numbers(offloaded)
    np.testing.assert_allclose(p_off, p_plain, atol=TOL, rtol=0)
    assert js_plain.keys() == js_off.keys()
    for name in js_plain:
        np.testing.assert_allclose(js_off[name], js_plain[name], atol=TOL, rtol=0, equal_nan=True)
    assert offloaded.vulnerable_layer == plain.vulnerable_layer


def test_a_device_map_file_places_the_blocks(saved_model, tmp_path, cli):
    folder = saved_model("llama")
    mapping = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
               "model.layers.2": "disk", "model.layers.3": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu",
               "lm_head": "disk"}
    path = tmp_path / "map.json"
    path.write_text(json.dumps(mapping))
    loaded = lt.load_model(str(folder), device="cpu", device_map=str(path), offload_folder=str(tmp_path / "off"))
    assert loaded.model.hf_device_map == mapping
    out = tmp_path / "t.json"
    code, _, err = cli("trace", "--model", str(folder), "--tasks", "antonyms_en", "--limit", "2", "--out", str(out),
                       "--device-map", str(path), "--offload-folder", str(tmp_path / "off2"), "--device", "cpu",
                       "--no-similarity", "--no-position-view")
    assert code == 0, err


@pytest.mark.parametrize("args, message", [
    (["--device-map", "everywhere"], "device map 'everywhere' is neither one of auto, balanced"),
    (["--max-memory", "0=10GiB"], "names GPU 0, but this machine has 0 GPUs"),
    (["--max-memory", "cpu=lots"], "'lots' is not a size such as 70GiB"),
    (["--load-in", "8bit"], "8bit loading uses bitsandbytes, which needs a CUDA GPU"),
    (["--load-in", "2bit"], "--load-in takes 8bit or 4bit, not '2bit'"),
    (["--offload-folder", "/tmp/x"], "--offload-folder needs --device-map"),
    (["--attn-implementation", "magic"], "unknown attention implementation 'magic'"),
])
def test_placement_that_cannot_be_had_is_one_error_line(saved_model, tmp_path, cli, args, message):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = cli("trace", "--model", str(saved_model("qwen3")), "--tasks", "antonyms_en",
                       "--out", str(tmp_path / "o.json"), "--device", "cpu", *args)
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_a_budget_that_leaves_blocks_for_the_disk_needs_an_offload_folder(saved_model, tmp_path, cli):
    """Without an offload folder, transformers leaves a disk-placed module's buffers on the meta device
    and the first forward fails inside accelerate; the loader refuses in one line first."""
    from layertracer.spec.loading import LoadOptionError

    folder = str(saved_model("qwen3"))
    with pytest.raises(LoadOptionError, match=r"leaves \d+ modules? of the model for the disk .*--offload-folder"):
        lt.load_model(folder, device="cpu", max_memory="cpu=120KB")
    code, _, err = cli("trace", "--model", folder, "--tasks", "antonyms_en", "--limit", "2", "--device", "cpu",
                       "--out", str(tmp_path / "o.json"), "--max-memory", "cpu=120KB")
    assert code == 2 and "Traceback" not in err and not (tmp_path / "o.json").exists()
    assert err.strip().splitlines()[-1].startswith("error: the memory budget (--max-memory cpu=120KB) leaves")
