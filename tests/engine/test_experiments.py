"""Experiments end to end on a tiny model and the generated demo world; exports; the world's data."""

import csv
import json

import numpy as np
import pytest

import tiny_models
from layertracer.demo.world import build_world, make_questions, new_domain_facts, old_facts, split_facts
from layertracer.errors import LayerTracerError
from layertracer.evaluation import load_benchmark
from layertracer.experiments.runner import run_experiment
from layertracer.experiments.spec import ExperimentSpec, trial_slug
from layertracer.models import wrap_model
from layertracer.training import resolve_allocation
from layertracer.training.export import export_allocation


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"), new_count=12, repeats=2)


def test_world_layout_loads_and_answers_are_the_facts(world):
    for spec in world.benchmarks:
        bench = load_benchmark(spec)
        assert len(bench) > 0
        for subject in bench.subjects:
            assert len(subject.fewshot) == 5
            for q in subject.questions:
                assert q.answer in "ABCD" and len(set(q.choices)) == 4
    # Every old-facts question asks a held-out fact, and its gold choice is that fact's answer.
    _, held_out = split_facts(old_facts())
    truth = {(f.question.strip() + " ____"): f.answer.strip() for f in held_out}
    bench = load_benchmark(world.benchmarks[0])
    for q in bench.questions():
        assert q.choices[q.gold_index] == truth[q.question]
    with open(world.old_facts / "test" / "antonyms_en_test.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(row["answer"] == "" for row in rows)


def test_new_facts_are_new():
    new = new_domain_facts(40)
    old_words = {w for f in old_facts() for w in (f.question + f.answer).replace(" ", "").split()}
    assert len({f.answer for f in new}) == 80
    assert not any(f.answer.strip() in old_words for f in new)


def test_questions_are_deterministic():
    facts = old_facts(["antonyms_en"])
    assert make_questions(facts, seed=3) == make_questions(facts, seed=3)
    assert make_questions(facts, seed=3) != make_questions(facts, seed=4)


def test_exports(tokenizer):
    loaded = wrap_model(tiny_models.build_model("llama"), tokenizer)
    model, adapter = loaded.model, loaded.adapter
    shallow = resolve_allocation("train-shallow", 4, head=True)
    lf = export_allocation(model, adapter, shallow, "llamafactory")
    assert lf.supported and "freeze_trainable_layers: -2" in lf.text and "freeze_extra_modules: lm_head" in lf.text
    deep = export_allocation(model, adapter, resolve_allocation("train-deep", 4), "llamafactory")
    assert "freeze_trainable_layers: 2" in deep.text
    gap = export_allocation(model, adapter, resolve_allocation("0,2", 4), "llamafactory")
    assert not gap.supported and "first or the last n layers" in gap.note
    ax = export_allocation(model, adapter, resolve_allocation("0,2", 4, part="mlp"), "axolotl")
    pattern = ax.text.split("- '")[1].split("'")[0]
    import re

    names = [n for n, _ in model.named_parameters() if re.match(pattern, n)]
    assert names and all(n.startswith(("model.layers.0.mlp.", "model.layers.2.mlp.")) for n in names)
    trained = {n for n, p in model.named_parameters() if any(p is q for q in model.model.layers[0].mlp.parameters())}
    assert trained <= set(names)
    swift = export_allocation(model, adapter, resolve_allocation("1-2", 4), "ms-swift")
    regex = swift.text.split("trainable_parameters_regex: '")[1].split("'")[0]
    matched = {n.split(".")[2] for n, _ in model.named_parameters() if re.match(regex, n)}
    assert matched == {"1", "2"}
    with pytest.raises(LayerTracerError):
        export_allocation(model, adapter, shallow, "deepspeed")


def test_trial_slugs_are_distinct():
    assert trial_slug("0-7,12", 1) == "0-7_12-seed1"
    assert trial_slug("from-trace:a.json", 1) != trial_slug("from-trace:b.json", 1)


def test_spec_validation():
    with pytest.raises(LayerTracerError, match="needs trace tasks"):
        ExperimentSpec(model="m", corpus="c", allocations=["from-trace"]).validate()
    with pytest.raises(LayerTracerError, match="listed twice"):
        ExperimentSpec(model="m", corpus="c", seeds=[1, 1]).validate()
    with pytest.raises(LayerTracerError, match="unknown experiment field"):
        ExperimentSpec.from_dict({"model": "m", "corpus": "c", "wobble": 1})
    with pytest.raises(LayerTracerError, match="strategy fsdp places the model itself"):
        ExperimentSpec(model="m", corpus="c", strategy="fsdp", placement={"device_map": "auto"}).validate()
    with pytest.raises(LayerTracerError, match="experiment option strategy"):
        ExperimentSpec(model="m", corpus="c", strategy="zero3").validate()
    # An experiment's spec.json written before the strategy existed reads with the defaults.
    old = {k: v for k, v in ExperimentSpec(model="m", corpus="c").to_dict().items()
           if k not in ("strategy", "gradient_checkpointing")}
    assert ExperimentSpec.from_dict(old).strategy == "ddp"


def test_experiment_end_to_end_and_resume(saved_model, world, tmp_path):
    spec = ExperimentSpec(
        model=str(saved_model("qwen3")),
        corpus=str(world.new_corpus),
        allocations=["train-shallow", "from-trace"],
        seeds=[1, 2],
        benchmarks=world.benchmarks,
        steps=3,
        batch_size=4,
        block_size=32,
        lr=1e-2,
        warmup_steps=1,
        eval_shots=1,
        eval_limit=3,
        trace_tasks="antonyms_en",
        trace_limit=3,
        checkpoint_every=2,
        device="cpu",
        dtype="float32",
    )
    events, partials = [], []
    result = run_experiment(spec, tmp_path, progress=events.append, on_partial=partials.append)
    assert result["status"] == "complete" and len(result["trials"]) == 4
    # The corpus, tokenized into the cache: each JSONL document's ids and EOS, cut into 32-token blocks.
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(spec.model)
    documents = [json.loads(line)["text"] for line in world.new_corpus.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    tokens = sum(len(plain(d, add_special_tokens=False)["input_ids"]) + 1 for d in documents)
    assert (result["corpus"]["tokens"], result["corpus"]["blocks"]) == (tokens, tokens // 32)
    assert {e.stage.split(":")[0] for e in events} >= {"base", "trial 1/4 train-shallow-seed1"}
    # Structured progress: which part, doing what, and the whole run's fraction, recomputed here from
    # the parts (a trial's training is 98% of its share of the run).
    slugs = [f"{a}-seed{s}" for a in spec.allocations for s in spec.seeds]
    assert {(e.item, e.index, e.count, e.fraction) for e in events if e.item == "base"} == {("base", 0, 4, 0.0)}
    for e in (e for e in events if e.item != "base"):
        assert e.item == slugs[e.index - 1] and e.count == 4 and e.work in ("train", "eval", "trace")
        share = e.done / e.total if e.work == "train" else 1.0
        assert e.fraction == pytest.approx((e.index - 1 + 0.98 * share) / 4)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx((3 + 0.98) / 4)
    # Partial results as the run goes: the baseline first, then the trials as they end.
    assert list(partials[0]) == ["baseline"]
    assert partials[0]["baseline"]["trace"]["vulnerable_layer"] == result["baseline"]["trace"]["vulnerable_layer"]
    assert sorted(v["accuracy"] for v in partials[0]["baseline"]["evals"].values()) == \
        sorted(result["baseline"]["evals"][b]["overall"]["accuracy"] for b in spec.benchmarks)
    assert [list(p["trials"]) for p in partials[1:]] == [slugs[:n] for n in range(1, 5)]
    last = partials[-1]["trials"][slugs[-1]]
    final = result["trials"][-1]
    assert final["training"]["precision"] == {"master_weights": "float32", "frozen": ["float32"], "autocast": None,
                                              "loss_scaling": False}  # float32 on the CPU, as the spec asked
    assert last["final_loss"] == final["training"]["final_loss"] and last["steps"] == 3
    assert {b: e["accuracy"] for b, e in last["evals"].items()} == {b: e["accuracy"] for b, e in final["evals"].items()}
    trace_plan = json.loads((tmp_path / "baseline" / "trace.json").read_text())["freeze_plan"]["train_layers"]
    for trial in result["trials"]:
        assert trial["training"]["steps"] == 3
        assert len(trial["drift"]["blocks"]) == 4
        expected = [0, 1] if trial["allocation_spec"] == "train-shallow" else trace_plan
        assert trial["allocation"]["layers"] == expected
        frozen = [i for i in range(4) if i not in expected]
        assert all(trial["drift"]["blocks"][i] == 0.0 for i in frozen)
        assert any(trial["drift"]["blocks"][i] > 0.0 for i in expected)
        assert trial["retrace"]["change"]["vulnerable_layer"]["before"] == result["baseline"]["trace"]["vulnerable_layer"]
        assert not (tmp_path / "trials" / trial["slug"] / "checkpoints").exists()
    for bench in spec.benchmarks:
        stats = result["statistics"][bench]
        assert {c["a"] + "|" + c["b"] for c in stats["comparisons"]} == {
            "base|train-shallow", "base|from-trace", "train-shallow|from-trace"
        }
    rows = {row["allocation"]: row for row in result["table"]}
    assert set(rows) == {"base", "train-shallow", "from-trace"}
    assert rows["train-shallow"]["trainable_share"] < 1.0
    # Per-question outcomes in a trial's file agree with its accuracy.
    trial_file = json.loads((tmp_path / "trials" / "train-shallow-seed1" / "result.json").read_text())
    for bench, ev in trial_file["evals"].items():
        assert ev["accuracy"] == pytest.approx(np.mean(ev["correct"]))

    # A re-run resumes: no trial is trained again, and the result is the same.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "trials").glob("*/result.json")}
    again = run_experiment(spec, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["table"] == result["table"]
    assert again["corpus"] == result["corpus"]  # the same cached token file
    # A different spec in the same folder is refused.
    with pytest.raises(LayerTracerError, match="holds another experiment"):
        run_experiment(ExperimentSpec(**{**spec.to_dict(), "steps": 4}), tmp_path)


def test_experiment_under_a_launcher_matches_one_process(saved_model, world, tmp_path):
    """``layertracer experiment`` in two gloo processes with torchrun's environment: rank 0 alone
    evaluates and writes, and the trials equal a one-process run (same global batch)."""
    import os
    import socket
    import subprocess
    import sys

    args = [
        "experiment", "--model", str(saved_model("qwen3")), "--corpus", str(world.new_corpus),
        "-a", "train-shallow,full", "--seeds", "1", "--steps", "3", "--batch-size", "4", "--block-size", "32",
        "--lr", "1e-2", "--warmup-steps", "1", "--eval-shots", "1", "--eval-limit", "3",
        "--benchmark", ",".join(world.benchmarks), "--device", "cpu", "--dtype", "float32",
    ]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(os.environ, WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
        procs.append(subprocess.Popen([sys.executable, "-m", "layertracer", *args, "--out", str(tmp_path / "two")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "Experiment" in outputs[0] and "Experiment" not in outputs[1]  # rank 0 alone reports
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    single = subprocess.run([sys.executable, "-m", "layertracer", *args, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    one = json.loads((tmp_path / "one" / "result.json").read_text())
    assert two["world_size"] == 2 and "world_size" not in one
    for a, b in zip(two["trials"], one["trials"]):
        assert a["slug"] == b["slug"]
        assert [l for _, l in a["training"]["loss_curve"]] == pytest.approx([l for _, l in b["training"]["loss_curve"]], abs=1e-5)
        for bench in world.benchmarks:
            assert a["evals"][bench]["accuracy"] == b["evals"][bench]["accuracy"]


def test_a_trial_places_its_model_and_refuses_to_train_offloaded_weights(saved_model, world, tmp_path, cli):
    """A placement that keeps every weight in the parameters (here: accelerate's map, all on the CPU)
    trains exactly as the model loaded plainly; one that offloads weights (a CPU budget below the
    model's size: blocks on disk) cannot train them, and says so in one line, in the CLI too."""
    base = dict(model=str(saved_model("qwen3")), corpus=str(world.new_corpus), allocations=["train-shallow"],
                seeds=[1], steps=3, batch_size=4, block_size=32, lr=1e-2, warmup_steps=1, device="cpu",
                dtype="float32", checkpoint_every=0, holdout=0.0)
    plain = run_experiment(ExperimentSpec(**base), tmp_path / "plain")
    placed = run_experiment(ExperimentSpec(**base, placement={"device_map": "sequential"}), tmp_path / "placed")
    assert placed["trials"][0]["training"]["loss_curve"] == plain["trials"][0]["training"]["loss_curve"]
    assert placed["trials"][0]["drift"] == plain["trials"][0]["drift"]
    with pytest.raises(LayerTracerError, match="cannot train weights offloaded by its placement"):
        run_experiment(ExperimentSpec(**base, placement={"max_memory": "cpu=120KB"}), tmp_path / "offloaded")
    code, _, err = cli("trial", "--model", base["model"], "--corpus", base["corpus"], "-a", "train-shallow",
                       "--seeds", "1", "--steps", "2", "--batch-size", "4", "--block-size", "32", "--device", "cpu",
                       "--max-memory", "cpu=120KB", "--out", str(tmp_path / "cli"))
    lines = err.strip().splitlines()
    assert code == 2 and "cannot train weights offloaded by its placement" in lines[-1], err
