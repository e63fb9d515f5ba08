"""The command line: the OUT.json contract end to end, and one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest



def test_trace_writes_the_documented_schema(saved_model, tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "layertracer", "trace", "--model", str(saved_model("llama")),
         "--tasks", "antonyms_en,arithmetic_zh", "--limit", "5", "--out", str(out),
         "-p", "skip,mask:keep=0.25", "--batch-size", "3", "--seed", "7"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    n_layers = data["num_layers"]
    assert n_layers == 4
    assert set(data["tasks"]) == {"antonyms_en", "arithmetic_zh"}
    for task in data["tasks"].values():
        assert len(task["target_prob"]) == 5 and all(len(row) == n_layers for row in task["target_prob"])
        assert len(task["mean_target_prob"]) == n_layers
        assert task["task_particle"] is None or 0 <= task["task_particle"] < n_layers
        assert len(task["top_tokens"][0][0]) == 10
    sens = data["sensitivity"]
    assert sens["perturbation"] == "skip"
    assert len(sens["js"]) == 10 and len(sens["js"][0]) == n_layers
    assert len(sens["mean_js"]) == n_layers
    assert data["vulnerable_layer"] == max(range(n_layers), key=lambda i: sens["mean_js"][i])
    assert set(data["sensitivities"]) == {"skip", "mask(keep=0.25)"}
    assert data["sensitivities"]["mask(keep=0.25)"]["params"]["draws"] == 3
    plan = data["freeze_plan"]
    assert sorted(plan["train_layers"] + plan["freeze_layers"]) == list(range(n_layers))
    assert len(data["similarity"]["cka"]) == n_layers
    assert len(data["position_view"]["target_prob"]) == n_layers
    assert data["options"]["seed"] == 7
    assert data["model"]["architecture"] == "LlamaForCausalLM"
    assert "wrote" in proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/nonexistent/model"], "model path '/nonexistent/model' does not exist"),
        (["--tasks", "no_such_task"], "is neither a task file nor a built-in task"),
        (["-p", "wobble"], "unknown perturbation 'wobble'"),
        (["-p", "mask:keep=2"], "mask keep ratio must be in [0, 1]"),
        (["--out", "/nonexistent/dir/out.json"], "output folder '/nonexistent/dir' does not exist"),
        (["--device", "cuda:0"], "CUDA is not available"),
        (["--dtype", "float8"], "unknown dtype 'float8'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(saved_model, tmp_path, cli, args, message):
    if "--device" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    base = {"--model": str(saved_model("qwen3")), "--tasks": "antonyms_en", "--out": str(tmp_path / "o.json")}
    extra = dict(zip(args[::2], args[1::2]))
    merged = {**base, **{k: v for k, v in extra.items() if k in base}}
    argv = ["trace", "--limit", "2"] + [x for kv in merged.items() for x in kv]
    argv += [x for k, v in extra.items() if k not in base for x in (k, v)]
    code, _, err = cli(*argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_folder_without_config_is_not_a_model(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    code, _, err = cli("trace", "--model", str(tmp_path / "empty"), "--tasks", "antonyms_en",
                           "--out", str(tmp_path / "o.json"))
    assert code == 2 and "has no config.json" in err


def test_model_that_is_not_a_causal_lm(tmp_path, cli):
    from transformers import ViTConfig

    folder = tmp_path / "vit"
    ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16).save_pretrained(folder)
    code, _, err = cli("trace", "--model", str(folder), "--tasks", "antonyms_en",
                           "--out", str(tmp_path / "o.json"))
    assert code == 2 and "is not a causal language model" in err


def test_malformed_task_file_names_file_and_line(saved_model, tmp_path, cli):
    bad = tmp_path / "tasks.jsonl"
    bad.write_text('{"prompt": "a", "target": "b"}\nnot json\n', encoding="utf-8")
    code, _, err = cli("trace", "--model", str(saved_model("qwen3")), "--tasks", str(bad),
                           "--out", str(tmp_path / "o.json"))
    assert code == 2 and f"{bad}:2: invalid JSON" in err


def test_plan_recomputes_from_a_trace(saved_model, tmp_path, cli):
    out = tmp_path / "t.json"
    code, summary, _ = cli("trace", "--model", str(saved_model("qwen3")), "--tasks", "antonyms_en",
                           "--limit", "3", "--out", str(out), "--no-similarity", "--no-position-view")
    assert code == 0
    # the summary says how sure it is: 3 prompts are too few for a stable particle
    assert "warning: antonyms_en: the particle (" in summary and "rests on only 3 prompts" in summary
    assert "stability: this plan in" in summary and "of 1000 resamples" in summary
    written = json.loads(out.read_text(encoding="utf-8"))
    code, stdout, _ = cli("plan", str(out))
    assert code == 0
    assert json.loads(stdout)["stability"] == written["freeze_plan"]["stability"]  # same rule, same draws
    code, stdout, _ = cli("plan", str(out), "--min-train", "3", "--no-protect-vulnerable")
    assert code == 0
    plan = json.loads(stdout)
    assert len(plan["train_layers"]) >= 3
    assert plan["stability"]["resamples"] == 1000 and 0 <= plan["stability"]["share"] <= 1
    code, _, err = cli("plan", str(tmp_path / "missing.json"))
    assert code == 2 and "does not exist" in err


def test_tasks_and_inspect_commands(saved_model, cli):
    code, stdout, _ = cli("tasks")
    assert code == 0 and "country_capital_zh" in stdout
    code, stdout, _ = cli("inspect", "--model", str(saved_model("jamba")), "--json")
    info = json.loads(stdout)
    assert code == 0 and info["block_kinds"] == ["ssm", "attention", "ssm", "attention"]
    code, stdout, _ = cli("inspect", "--model", str(saved_model("jamba")))
    assert code == 0 and "JambaForCausalLM: 4 blocks" in stdout and "ssm, attention, ssm, attention" in stdout


def test_trace_json_summary_matches_the_written_result(saved_model, tmp_path, cli):
    out = tmp_path / "t.json"
    code, stdout, err = cli("trace", "--model", str(saved_model("qwen3")), "--tasks", "antonyms_en,plural_en",
                            "--limit", "4", "--out", str(out), "--no-similarity", "--no-position-view", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    written = json.loads(out.read_text(encoding="utf-8"))
    assert summary["out"] == str(out)
    assert summary["vulnerable_layer"] == written["vulnerable_layer"]
    assert summary["vulnerable_layer_mean_js"] == pytest.approx(written["sensitivity"]["mean_js"][written["vulnerable_layer"]])
    assert summary["freeze_plan"]["train_ranges"] == written["freeze_plan"]["train_ranges"]
    for name, task in written["tasks"].items():
        assert summary["tasks"][name]["prompts"] == len(task["prompts"]) == 4
        assert summary["tasks"][name]["task_particle"] == task["task_particle"]
        assert summary["tasks"][name]["peak_mean_target_prob"] == pytest.approx(max(task["mean_target_prob"]))


def test_an_interrupted_trace_resumes_when_the_command_runs_again(saved_model, tmp_path, cli, monkeypatch):
    """Ctrl-C in the third batch keeps two batches in OUT.json.partial.npz; the same command resumes
    from them, gives the numbers of an uninterrupted run and removes the file."""
    from layertracer import tracer as tracer_module

    args = ["trace", "--model", str(saved_model("llama")), "--tasks", "antonyms_en", "--limit", "6",
            "--batch-size", "2", "-p", "skip", "--no-similarity", "--no-position-view"]
    code, _, stderr = cli(*args, "--out", str(tmp_path / "clean.json"))
    assert code == 0, stderr
    original, lens_events = tracer_module.report, []

    def ctrl_c_in_the_third_batch(progress, stage, done, total):
        if stage == "lens":
            lens_events.append(done)
            if len(lens_events) == 3:
                raise KeyboardInterrupt
        original(progress, stage, done, total)

    monkeypatch.setattr(tracer_module, "report", ctrl_c_in_the_third_batch)
    out = tmp_path / "out.json"
    code, _, stderr = cli(*args, "--out", str(out))
    assert code == 130 and "partial results kept in" in stderr and not out.exists()
    monkeypatch.setattr(tracer_module, "report", original)
    code, _, stderr = cli(*args, "--out", str(out))
    assert code == 0 and "resumed: 4 prompts came from" in stderr.replace("\n", " ")
    assert not (tmp_path / "out.json.partial.npz").exists()
    clean, resumed = (json.loads((tmp_path / name).read_text(encoding="utf-8")) for name in ("clean.json", "out.json"))
    assert resumed["timings"]["resumed_prompts"] == 4
    for name, task in clean["tasks"].items():
        np.testing.assert_allclose(resumed["tasks"][name]["target_prob"], task["target_prob"], atol=1e-6)
    np.testing.assert_allclose(resumed["sensitivity"]["js"], clean["sensitivity"]["js"], atol=1e-6)


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory, saved_model):
    """A model with truncated safetensors, and one whose only weights are a pickle that would run
    code (it would create ``marker``) if anything unpickled it without torch's weights-only guard."""
    import shutil

    import torch

    root = tmp_path_factory.mktemp("broken")
    truncated = root / "truncated"
    shutil.copytree(saved_model("qwen3"), truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    pickled = root / "pickled"
    shutil.copytree(saved_model("qwen3"), pickled)
    (pickled / "model.safetensors").unlink()
    marker = root / "marker"

    class RunsCode:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model.embed_tokens.weight": RunsCode()}, pickled / "pytorch_model.bin")
    return {"truncated": truncated, "pickled": pickled, "marker": marker}


@pytest.mark.parametrize("command", ["inspect", "trace"])
@pytest.mark.parametrize("kind, message", [
    ("truncated", "safetensors weights of '{path}' are damaged or incomplete"),
    ("pickled", "pickle weights (*.bin) of '{path}' hold objects other than tensors"),
])
def test_weights_that_do_not_load_are_one_error_line(broken_models, tmp_path, cli, command, kind, message):
    path = broken_models[kind]
    args = ["--model", str(path)] + (["--tasks", "antonyms_en", "--out", str(tmp_path / "o.json")] if command == "trace" else [])
    code, out, err = cli(command, *args, *(["--json"] if command == "inspect" else []))
    if command == "inspect" and kind == "pickled":
        # inspect reads the config and safetensors headers only: pickle weights are never opened
        assert code == 0, err
        info = json.loads(out)
        assert info["weights_loaded"] is False and info["stored_parameters"] is None
        assert not broken_models["marker"].exists()
        return
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message.format(path=path) in lines[0], err
    assert "weights_only" not in err and "Traceback" not in err
    assert not broken_models["marker"].exists()  # the pickle's code never ran


def test_a_task_line_nested_too_deeply_is_one_error_line(saved_model, tmp_path, cli):
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + ', "target": "x"}\n', encoding="utf-8")
    code, _, err = cli("trace", "--model", str(saved_model("qwen3")), "--tasks", str(deep), "--out", str(tmp_path / "o.json"))
    assert code == 2 and err.strip() == f"error: {deep}:1: invalid JSON (nested too deeply)"
