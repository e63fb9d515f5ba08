"""No rank idles: under a launcher the evaluation, the (re-)trace and the held-out loss are split over
the ranks, and each rank gets the whole result, equal to one process's. Two CPU processes (gloo); this
file is also the ranks' worker: ``python test_split_ranks.py MODE FOLDER``.

- ``trace(split_ranks=True)`` and ``evaluate(split_ranks=True)`` give every rank the numbers of one
  process, while each rank did only its share of the prompts and questions (its progress totals);
- a whole experiment on two ranks (data-parallel training, a from-trace allocation that reads the
  baseline's trace file) ends with the result of one process running it: the same base and trained
  scores question by question, the same re-trace, the same held-out losses.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
TESTS = HERE.parents[1]
REPO = TESTS.parent
for _path in (str(REPO), str(TESTS)):  # as a worker script nothing else puts these on the path
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from launch_ranks import launch  # noqa: E402

WORLD = 2
TASKS = "antonyms_en,country_capital_zh"
PERTURBATIONS = ["skip", "noise:scale=0.5"]  # a seeded stochastic one too: its draws depend on the prompt only


def _trace_and_eval(folder: Path, split: bool):
    from layertracer.evaluation import evaluate
    from layertracer.models.loading import load_model
    from layertracer.tasks.sets import load_tasks
    from layertracer.tracer import TraceOptions, trace

    spec = json.loads((folder / "inputs.json").read_text())
    loaded = load_model(spec["model"], device="cpu", dtype="float32")
    events: list[tuple[str, int, int]] = []
    result = trace(loaded, load_tasks(TASKS, limit=5), perturbations=PERTURBATIONS,
                   options=TraceOptions(batch_size=2, similarity=True, position_view=False),
                   progress=lambda e: events.append((e.stage, e.done, e.total)), split_ranks=split)
    scored: list[tuple[int, int]] = []
    evaluation = evaluate(loaded, spec["benchmark"], shots=1, limit=4, batch_size=2, split_ranks=split,
                          progress=lambda e: scored.append((e.done, e.total)) if e.stage == "evaluate" else None)
    return result.to_dict(), evaluation, events, scored


def _worker(mode: str, folder: Path) -> None:
    from layertracer.training import distributed as dist_utils

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    if mode == "parts":
        dist_utils.init_from_env()
        trace_dict, evaluation, events, scored = _trace_and_eval(folder, split=True)
        (folder / f"parts-rank{rank}.json").write_text(json.dumps({
            "trace": trace_dict, "logprobs": [r.logprobs for r in evaluation.records],
            "correct": [r.correct for r in evaluation.records], "trace_total": events[-1][2],
            "eval_total": scored[-1][1] if scored else 0,
        }))
    else:
        from layertracer.experiments.runner import run_experiment
        from layertracer.experiments.spec import ExperimentSpec

        spec = ExperimentSpec.from_dict(json.loads((folder / "experiment.json").read_text()))
        events: list[list] = []
        result = run_experiment(spec, folder / "out",
                                progress=lambda e: events.append([e.stage, e.work, e.done, e.total]))
        (folder / f"experiment-rank{rank}.json").write_text(json.dumps({"result": result, "events": events}))
    dist_utils.shutdown()


# --------------------------------------------------------------------------------------------------


def _trace_arrays(trace: dict) -> dict[str, np.ndarray]:
    """The per-prompt numbers of a trace result dict, task by task, perturbation by perturbation."""
    out = {}
    for name, task in trace["tasks"].items():
        for key in ("target_prob", "target_rank", "entropy", "top_probs", "baseline_prob"):
            out[f"{name}/{key}"] = np.asarray(task[key], dtype=float)
        out[f"{name}/particles"] = np.asarray([-1 if p is None else p for p in task["prompt_particles"]])
    for name, sens in trace["sensitivities"].items():
        out[f"js/{name}"] = np.asarray(sens["js"], dtype=float)
        out[f"ci/{name}"] = np.asarray([sens["ci_low"], sens["ci_high"]], dtype=float)
    out["cka"] = np.asarray(trace["similarity"]["cka"], dtype=float)
    out["cosine"] = np.asarray(trace["similarity"]["consecutive_cosine"], dtype=float)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from layertracer.demo.world import build_world

    return build_world(tmp_path_factory.mktemp("world"), new_count=12, repeats=2)


def test_trace_and_evaluation_split_over_ranks_equal_one_process(tmp_path, saved_model, world):
    inputs = {"model": str(saved_model("qwen3")), "benchmark": world.benchmarks[0]}
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    launch(HERE, ["parts", str(tmp_path)], tmp_path, WORLD, timeout_s=180)
    alone, evaluation, events, scored = _trace_and_eval(tmp_path, split=False)
    expected = _trace_arrays(alone)
    ranks = [json.loads((tmp_path / f"parts-rank{r}.json").read_text()) for r in range(WORLD)]
    for rank, got in enumerate(ranks):
        arrays = _trace_arrays(got["trace"])
        assert arrays.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_allclose(arrays[key], value, rtol=1e-5, atol=1e-6, err_msg=f"rank {rank} {key}")
        assert np.isnan(arrays["js/skip"]).sum() == np.isnan(expected["js/skip"]).sum()
        plan, want = dict(got["trace"]["freeze_plan"]), dict(alone["freeze_plan"])
        evidence, want_evidence = plan.pop("evidence"), want.pop("evidence")
        assert plan == want  # the layers to train and freeze; the JS in the evidence to float rounding
        assert {k: v for k, v in evidence.items() if not isinstance(v, float)} == {
            k: v for k, v in want_evidence.items() if not isinstance(v, float)}
        assert {k: v for k, v in evidence.items() if isinstance(v, float)} == pytest.approx(
            {k: v for k, v in want_evidence.items() if isinstance(v, float)}, rel=1e-5)
        assert got["trace"]["vulnerable_layer"] == alone["vulnerable_layer"]
        np.testing.assert_allclose(got["logprobs"], [r.logprobs for r in evaluation.records], rtol=1e-5, atol=1e-6)
        assert got["correct"] == [r.correct for r in evaluation.records]
    # Each rank did its share only: the two shares make the whole, and neither is all of it.
    whole_trace, whole_eval = events[-1][2], scored[-1][1]
    assert sum(r["trace_total"] for r in ranks) == whole_trace
    assert sum(r["eval_total"] for r in ranks) == whole_eval
    assert all(0 < r["trace_total"] < whole_trace and 0 < r["eval_total"] < whole_eval for r in ranks)


def test_experiment_on_two_ranks_equals_one_process(tmp_path, saved_model, world):
    from layertracer.experiments.runner import run_experiment
    from layertracer.experiments.spec import ExperimentSpec

    spec = ExperimentSpec(
        model=str(saved_model("qwen3")), corpus=str(world.new_corpus), allocations=["from-trace", "1-2"],
        seeds=[1], benchmarks=world.benchmarks, steps=3, batch_size=4, block_size=32, lr=1e-2,
        warmup_steps=1, eval_shots=1, eval_limit=3, trace_tasks="antonyms_en", trace_limit=4,
        checkpoint_every=2, device="cpu", dtype="float32",
    )
    (tmp_path / "experiment.json").write_text(json.dumps(spec.to_dict()))
    launch(HERE, ["experiment", str(tmp_path)], tmp_path, WORLD, timeout_s=300)
    alone = run_experiment(spec, tmp_path / "alone")
    runs = [json.loads((tmp_path / f"experiment-rank{r}.json").read_text()) for r in range(WORLD)]
    for rank, run in enumerate(runs):
        result = run["result"]
        assert result["status"] == "complete" and result["world_size"] == WORLD
        assert result["baseline"]["evals"].keys() == alone["baseline"]["evals"].keys()
        for bench, summary in alone["baseline"]["evals"].items():
            assert result["baseline"]["evals"][bench]["overall"] == pytest.approx(summary["overall"]), bench
        assert result["baseline"]["holdout_loss"] == pytest.approx(alone["baseline"]["holdout_loss"], rel=1e-5)
        assert result["baseline"]["trace"]["task_particles"] == alone["baseline"]["trace"]["task_particles"]
        for got, want in zip(result["trials"], alone["trials"]):
            assert got["slug"] == want["slug"]
            layers = {k: v for k, v in want["allocation"].items() if k != "name"}  # the name holds the folder
            assert {k: v for k, v in got["allocation"].items() if k != "name"} == layers
            training, expected = got["training"], want["training"]
            assert training["holdout_loss_after"] == pytest.approx(expected["holdout_loss_after"], rel=1e-4)
            assert [loss for _, loss in training["loss_curve"]] == pytest.approx(
                [loss for _, loss in expected["loss_curve"]], rel=1e-4)
            for bench in spec.benchmarks:
                assert got["evals"][bench]["accuracy"] == want["evals"][bench]["accuracy"], (rank, bench)
            assert got["retrace"]["summary"]["task_particles"] == want["retrace"]["summary"]["task_particles"]
            np.testing.assert_allclose(got["retrace"]["summary"]["mean_js"], want["retrace"]["summary"]["mean_js"],
                                       rtol=1e-4, atol=1e-6)
        assert result["statistics"].keys() == alone["statistics"].keys()
    # The trained per-question scores match too (rank 0 wrote them; the other rank read its result).
    from layertracer.evaluation import EvalResult
    from layertracer.experiments.runner import bench_slug

    for trial in alone["trials"]:
        for bench in spec.benchmarks:
            name = f"eval-{bench_slug(bench)}.json"
            split = EvalResult.load(tmp_path / "out" / "trials" / trial["slug"] / name)
            single = EvalResult.load(tmp_path / "alone" / "trials" / trial["slug"] / name)
            np.testing.assert_allclose([r.logprobs for r in split.records], [r.logprobs for r in single.records],
                                       rtol=1e-4, atol=1e-5)
    # The second rank evaluated and traced (its share), it did not wait for rank 0 to do it all.
    worked = {work for _, work, done, total in runs[1]["events"] if done and total}
    assert {"eval", "trace"} <= worked


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
