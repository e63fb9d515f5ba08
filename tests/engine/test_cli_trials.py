"""CLI commands for evaluation, trials, hybrids and exports: real runs and one-line errors."""

import json
from pathlib import Path

import pytest



FIXTURE_CEVAL = f"ceval:{Path(__file__).resolve().parents[1] / 'fixtures' / 'ceval'}"


def test_eval_writes_results(saved_model, tmp_path, cli):
    out = tmp_path / "eval.json"
    code, stdout, err = cli("eval", "--model", str(saved_model("llama")), "--benchmark", FIXTURE_CEVAL,
                                "--shots", "2", "--out", str(out))
    assert code == 0, err
    data = json.loads(out.read_text(encoding="utf-8"))
    result = data[FIXTURE_CEVAL]
    assert result["overall"]["n"] == len(result["records"]) > 0
    assert "overall" in stdout
    code, stdout, err = cli("eval", "--model", str(saved_model("llama")), "--benchmark", FIXTURE_CEVAL,
                            "--shots", "2", "--json")
    assert code == 0, err
    summary = json.loads(stdout)[FIXTURE_CEVAL]
    assert "records" not in summary
    assert summary["overall"] == result["overall"]


def test_export_plan_and_its_limits(saved_model, cli):
    code, stdout, err = cli("export-plan", "--model", str(saved_model("llama")), "--allocation",
                                "train-shallow", "--format", "llamafactory")
    assert code == 0 and "freeze_trainable_layers: -2" in stdout and "trainable" in err
    code, _, err = cli("export-plan", "--model", str(saved_model("llama")), "--allocation", "0,2",
                           "--format", "llamafactory")
    assert code == 2 and "first or the last n layers" in err and len(err.strip().splitlines()) == 1


def test_hybrid_command(saved_model, tmp_path, cli):
    out = tmp_path / "hybrid"
    code, stdout, err = cli("hybrid", "--base", str(saved_model("llama")), "--layers", "2-3",
                                "--reinit", "--out", str(out))
    assert code == 0, err
    assert (out / "hybrid.json").is_file() and (out / "model.safetensors").is_file()
    code, _, err = cli("hybrid", "--base", str(saved_model("llama")), "--layers", "2-3", "--out", str(out))
    assert code == 2 and "give either --donor DIR or --reinit" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--allocation", "0-9"], "layer 9 does not exist (the model has layers 0-3)"),
        (["--allocation", "train-shallow", "--seeds", "a,b"], "--seeds must be comma-separated integers"),
        (["--allocation", "train-shallow", "--benchmark", "ceval:/nonexistent/bench"], "/nonexistent/bench"),
        (["--allocation", "from-trace"], "needs trace tasks"),
        (["--allocation", "full", "--strategy", "fsdp"], "strategy fsdp shards the model over several processes"),
        (["--allocation", "full", "--strategy", "zero"], "experiment option strategy"),
        (["--allocation", "full", "--strategy", "fsdp", "--device-map", "auto"], "strategy fsdp places the model itself"),
    ],
)
def test_trial_bad_input(saved_model, tmp_path, cli, extra, message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The capital of France is Paris. " * 50, encoding="utf-8")
    code, _, err = cli("trial", "--model", str(saved_model("qwen3")), "--corpus", str(corpus),
                           "--steps", "1", "--block-size", "16", "--out", str(tmp_path / "run"), *extra)
    assert code == 2, err
    assert message in err and "Traceback" not in err


def test_trial_empty_corpus(saved_model, tmp_path, cli):
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text("", encoding="utf-8")
    code, _, err = cli("trial", "--model", str(saved_model("qwen3")), "--corpus", str(corpus),
                           "--allocation", "full", "--steps", "1", "--out", str(tmp_path / "run"))
    assert code == 2 and "is empty" in err
