"""lm-evaluation-harness tasks as benchmarks (``lm-eval:FILE.yaml`` / ``lm-eval:TASK``), offline: a task
config of our own over local CSV files (lm-eval's ``dataset_path: csv``), run by lm-eval's evaluator
on the loaded model, against the log-likelihoods computed here by hand."""

from __future__ import annotations

import csv
import json

import pytest
import torch

pytest.importorskip("lm_eval")

from layertracer.evaluation import evaluate  # noqa: E402
from layertracer.evaluation.harness import HarnessError  # noqa: E402
from layertracer.models import load_model  # noqa: E402

ROWS = [
    ("The capital of France is", "Paris", "Rome", "Berlin", "Madrid", "A"),
    ("Two plus two is", "three", "four", "five", "six", "B"),
    ("The opposite of hot is", "warm", "cold", "wet", "dry", "B"),
    ("The colour of the sky is", "green", "red", "blue", "black", "C"),
    ("A week has this many days", "five", "six", "eight", "seven", "D"),
]
LETTERS = "ABCD"


@pytest.fixture
def task_file(tmp_path):
    with open(tmp_path / "test.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "A", "B", "C", "D", "answer"])
        writer.writerows(ROWS)
    config = tmp_path / "demo_mc.yaml"
    config.write_text(
        "task: layertracer_demo_mc\n"
        "dataset_path: csv\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: {tmp_path / 'test.csv'}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nA. {{A}}\\nB. {{B}}\\nC. {{C}}\\nD. {{D}}\\nAnswer:"\n'
        'doc_to_choice: ["A", "B", "C", "D"]\n'
        "doc_to_target: \"{{['A', 'B', 'C', 'D'].index(answer)}}\"\n"
        "metric_list:\n  - metric: acc\n",
        encoding="utf-8",
    )
    return config


def _by_hand(loaded, prompt: str, continuation: str) -> float:
    """log p(continuation | prompt), the way lm-eval splits the pair: the whole text encoded once, the
    context's own tokens first, no special tokens."""
    tokenizer = loaded.tokenizer
    whole = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
    context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target = whole[len(context):]
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([whole[:-1]])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return float(sum(logprobs[len(context) - 1 + i, t] for i, t in enumerate(target)))


def test_a_local_task_file_scores_each_document_as_computed_by_hand(saved_model, task_file):
    loaded = load_model(str(saved_model("qwen3")), device="cpu", dtype="float32")
    result = evaluate(loaded, f"lm-eval:{task_file}", shots=0, batch_size=2)
    assert result.settings.benchmark == "lm-eval" and result.settings.template == "lm-eval:layertracer_demo_mc"
    assert [r.id for r in result.records] == [f"layertracer_demo_mc/{i}" for i in range(len(ROWS))]
    for record, (question, *options, answer) in zip(result.records, ROWS):
        prompt = f"Question: {question}\n" + "\n".join(f"{l}. {o}" for l, o in zip(LETTERS, options)) + "\nAnswer:"
        expected = [_by_hand(loaded, prompt, f" {letter}") for letter in LETTERS]
        assert record.logprobs == pytest.approx(expected, abs=1e-4)
        best = max(range(4), key=expected.__getitem__)
        assert record.gold == str(LETTERS.index(answer)) and record.predicted == str(best)
        assert record.correct == (best == LETTERS.index(answer))
    right = sum(r.correct for r in result.records)
    assert (result.overall.n, result.overall.correct) == (len(ROWS), right)
    assert result.overall.accuracy == pytest.approx(right / len(ROWS))
    json.dumps(result.to_dict())  # plain JSON, as every result


def test_the_cli_evaluates_an_lm_eval_task(saved_model, task_file, cli):
    code, out, err = cli("eval", "--model", str(saved_model("qwen3")), "-b", f"lm-eval:{task_file}",
                         "--shots", "0", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary[f"lm-eval:{task_file}"]["overall"]["n"] == len(ROWS)


def test_bad_lm_eval_benchmarks_are_one_line(saved_model, tmp_path):
    loaded = load_model(str(saved_model("qwen3")), device="cpu", dtype="float32")
    with pytest.raises(HarnessError, match="lm-eval task file .* does not exist"):
        evaluate(loaded, f"lm-eval:{tmp_path / 'missing.yaml'}", shots=0)
    (tmp_path / "nameless.yaml").write_text("dataset_path: csv\n", encoding="utf-8")
    with pytest.raises(HarnessError, match="needs a 'task:' name"):
        evaluate(loaded, f"lm-eval:{tmp_path / 'nameless.yaml'}", shots=0)
    with pytest.raises(HarnessError, match="lm-eval knows no task 'no_such_task_here'"):
        evaluate(loaded, "lm-eval:no_such_task_here", shots=0)
