"""Model sources as users name them: a local folder, or a hub id ``org/name[@revision]`` read from a
Hugging Face cache laid out on disk in the hub's own layout (HF_HUB_OFFLINE=1, no network), through
the CLI and the Python API in fresh processes (the hub's cache settings are read at import)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hub_cache
from layertracer.spec.sources import ModelSourceError, parse_model_source

REPO = Path(__file__).resolve().parents[2]
MAIN = "1" * 40
DEV = "2" * 40


@pytest.mark.parametrize("text, kind, location, revision", [
    ("Qwen/Qwen3-0.6B", "hub", "Qwen/Qwen3-0.6B", None),
    ("Qwen/Qwen3-0.6B@v2.1", "hub", "Qwen/Qwen3-0.6B", "v2.1"),
    ("gpt2", "hub", "gpt2", None),
    ("meta-llama/Llama-3.1-70B@" + "a" * 40, "hub", "meta-llama/Llama-3.1-70B", "a" * 40),
])
def test_anything_but_an_existing_folder_is_a_hub_id(text, kind, location, revision):
    parsed = parse_model_source(text)
    assert (parsed.kind, parsed.location, parsed.revision) == (kind, location, revision)
    assert str(parsed) == text


@pytest.mark.parametrize("text, message", [
    ("/no/such/model", "model path '/no/such/model' does not exist"),
    ("./missing", "does not exist"),
    ("a/b/c", "does not exist"),
    ("org/na..me", "neither an existing folder nor a valid hub id"),
    ("org/name@", "empty revision"),
    ("", "empty"),
    ("bad name/x", "neither an existing folder nor a valid hub id"),
])
def test_bad_sources_are_one_line(text, message):
    with pytest.raises(ModelSourceError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_model_source(text)


def test_an_existing_folder_wins_over_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert parse_model_source("org/name").kind == "local"
    # The service looks relative paths up under its roots only, never under its working folder.
    assert parse_model_source("org/name", roots=[tmp_path / "elsewhere"]).kind == "hub"
    assert parse_model_source("name", roots=[tmp_path / "org"]).kind == "local"
    with pytest.raises(ModelSourceError, match="two revisions"):
        parse_model_source("org/x@v1", revision="v2")


@pytest.fixture(scope="module")
def cache(tmp_path_factory, saved_model):
    """acme/tiny: main -> a Qwen3 snapshot (tag v1 too); dev -> a Llama snapshot."""
    root = tmp_path_factory.mktemp("hub") / "hub"
    hub_cache.lay_out(root, "acme/tiny", saved_model("qwen3"), commit=MAIN, refs={"main": MAIN, "v1": MAIN})
    hub_cache.lay_out(root, "acme/tiny", saved_model("llama"), commit=DEV, refs={"dev": DEV})
    return root


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_DISABLE_PROGRESS_BARS="1")
    return env


def _cli(cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layertracer", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=_env(cache), stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args, architecture, commit", [
    (["acme/tiny"], "Qwen3ForCausalLM", MAIN),
    (["acme/tiny@v1"], "Qwen3ForCausalLM", MAIN),
    (["acme/tiny@dev"], "LlamaForCausalLM", DEV),
    (["acme/tiny", "--revision", "dev"], "LlamaForCausalLM", DEV),
    ([f"acme/tiny@{DEV}"], "LlamaForCausalLM", DEV),
])
def test_inspect_by_hub_id_and_revision_offline(cache, args, architecture, commit):
    proc = _cli(cache, "inspect", "--json", "--model", *args)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["architecture"] == architecture and info["commit"] == commit
    snapshot = cache / "models--acme--tiny" / "snapshots" / commit
    content = hashlib.sha256((snapshot / "model.safetensors").read_bytes()).hexdigest()
    assert info["weights_sha256"] == {"model.safetensors": content}


def test_the_fingerprint_follows_the_weights_not_the_name(cache):
    main, tag, dev = (json.loads(_cli(cache, "inspect", "--json", "--model", m).stdout)["fingerprint"]
                      for m in ("acme/tiny", "acme/tiny@v1", "acme/tiny@dev"))
    assert main == tag != dev and main.startswith("sha256:")


def test_trace_by_hub_id_records_the_commit(cache, tmp_path):
    out = tmp_path / "t.json"
    proc = _cli(cache, "trace", "--model", "acme/tiny@v1", "--tasks", "antonyms_en", "--limit", "2",
                "--no-similarity", "--no-position-view", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    model = json.loads(out.read_text(encoding="utf-8"))["model"]
    assert model["source"] == "acme/tiny@v1" and model["revision"] == "v1" and model["commit"] == MAIN


@pytest.mark.parametrize("source, message", [
    ("acme/absent", "is not in the Hugging Face cache"),
    ("acme/tiny@no-such-branch", "is not in the Hugging Face cache"),
    ("acme/na..me", "neither an existing folder nor a valid hub id"),
])
def test_a_hub_id_that_cannot_be_loaded_offline_is_one_error_line(cache, tmp_path, source, message):
    proc = _cli(cache, "trace", "--model", source, "--tasks", "antonyms_en", "--out", str(tmp_path / "o.json"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    if "cache" in message:
        assert "HF_HUB_OFFLINE" in lines[0] and "hf download acme/" in lines[0]


def test_the_python_api_loads_by_hub_id(cache):
    code = ("import json, layertracer as lt; m = lt.load_model('acme/tiny', revision='dev', device='cpu'); "
            "print(json.dumps([m.info.architecture, m.info.commit, m.info.source]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=_env(cache))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["LlamaForCausalLM", DEV, "acme/tiny@dev"]


def test_inspect_of_an_8b_shaped_config_reads_no_weights_and_counts_like_the_formula(tmp_path):
    """Llama-3-8B's shape from its config alone (no weight file at all), counted against the
    architecture's own formula: embeddings, per block q/k/v/o + gate/up/down + two norms, final norm,
    untied head."""
    hidden, inter, layers, heads, kv_heads, vocab = 4096, 14336, 32, 32, 8, 128256
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "vocab_size": vocab, "tie_word_embeddings": False,
              "dtype": "bfloat16"}
    folder = tmp_path / "llama-8b-shaped"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    proc = subprocess.run([sys.executable, "-m", "layertracer", "inspect", "--model", str(folder), "--json"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    kv = kv_heads * (hidden // heads)
    block = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter + 2 * hidden
    assert info["block_parameters"] == [block] * layers
    assert info["num_parameters"] == 2 * vocab * hidden + layers * block + hidden  # 8,030,261,248
    assert info["weights_loaded"] is False and info["stored_parameters"] is None and info["dtype"] == "bfloat16"
