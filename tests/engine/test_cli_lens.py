"""``layertracer train-lens`` and ``trace --lens tuned`` on a tiny model: the file, the cache, the
refusals (one line, exit 2)."""

import hashlib
import json

import pytest
import torch

from layertracer.spec.lens import CACHE_ENV, cached_file
from layertracer.tuned_lens import Translators, save

TRACE = ("--tasks", "antonyms_en", "--limit", "4", "--perturbation", "skip", "--device", "cpu", "--no-similarity")


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(f"the opposite of hot is cold; {i} plus {i} is {2 * i}." for i in range(120)),
                    encoding="utf-8")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "lens-cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    return lines[0]


def test_train_lens_writes_the_cache_and_trace_reads_it(saved_model, corpus, cache, tmp_path, cli):
    from layertracer.models.loading import fingerprint

    model = saved_model("llama")
    code, out, err = cli("train-lens", "--model", str(model), "--corpus", str(corpus), "--steps", "4",
                         "--block-size", "16", "--device", "cpu", "--json")
    assert code == 0, err
    report = json.loads(out)
    expected = cached_file(fingerprint(str(model)))
    assert report["out"] == str(expected) and expected.is_file()
    assert len(report["held_out_kl_logit"]) == len(report["held_out_kl_tuned"]) == 4  # the tiny model's blocks

    code, _, err = cli("trace", "--model", str(model), *TRACE, "--out", str(tmp_path / "t.json"), "--lens", "tuned")
    assert code == 0, err
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["options"]["lens"] == "tuned"
    assert result["lens"]["kind"] == "tuned"
    assert result["lens"]["sha256"] == hashlib.sha256(expected.read_bytes()).hexdigest()
    assert result["lens"]["fingerprint"] == fingerprint(str(model)) and result["lens"]["steps"] == "4"


def test_lens_file_and_logit_default(saved_model, tmp_path, cache, cli):
    from layertracer.models.loading import fingerprint

    model = saved_model("llama")
    made = Translators(4, 32)
    with torch.no_grad():
        made.bias.normal_()
    path = save(made, tmp_path / "mine.safetensors", fingerprint(str(model)))
    code, _, err = cli("trace", "--model", str(model), *TRACE, "--out", str(tmp_path / "t.json"), "--lens", "tuned",
                       "--lens-file", str(path))
    assert code == 0, err
    tuned = json.loads((tmp_path / "t.json").read_text())
    code, _, err = cli("trace", "--model", str(model), *TRACE, "--out", str(tmp_path / "l.json"))
    assert code == 0, err
    logit = json.loads((tmp_path / "l.json").read_text())
    assert logit["lens"] == {"kind": "logit"} and tuned["lens"]["file"] == "mine.safetensors"
    task = "antonyms_en"
    assert tuned["tasks"][task]["target_prob"] != logit["tasks"][task]["target_prob"]


def test_missing_cache_says_how_to_train_one(saved_model, tmp_path, cache, cli):
    code, _, err = cli("trace", "--model", str(saved_model("llama")), *TRACE, "--out", str(tmp_path / "t.json"),
                       "--lens", "tuned")
    assert code == 2
    line = _one_error_line(err)
    assert "no tuned lens for this model" in line and "layertracer train-lens --model" in line


def test_a_file_for_another_model_is_refused(saved_model, tmp_path, cache, cli):
    path = save(Translators(4, 32), tmp_path / "other.safetensors", "sha256:00000000000000ff")
    code, _, err = cli("trace", "--model", str(saved_model("llama")), *TRACE, "--out", str(tmp_path / "t.json"),
                       "--lens", "tuned", "--lens-file", str(path))
    assert code == 2
    assert "was trained for model sha256:00000000000000ff, not this model" in _one_error_line(err)
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--lens", "tuned-ish"], "--lens must be logit or tuned"),
    (["--lens-file", "x.safetensors"], "--lens-file is read by the tuned lens only"),
    (["--lens", "tuned", "--lens-file", "/nonexistent/x.safetensors"], "does not exist"),
])
def test_bad_lens_flags_fail_before_loading(tmp_path, cli, args, message):
    code, _, err = cli("trace", "--model", str(tmp_path / "no-model"), *TRACE, "--out", str(tmp_path / "t.json"), *args)
    assert code == 2
    assert message in _one_error_line(err)
