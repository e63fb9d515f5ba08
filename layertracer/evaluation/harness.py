"""Any lm-evaluation-harness task as a benchmark: ``lm-eval:TASK`` (a task or group lm-eval knows) or
``lm-eval:FILE.yaml`` (a task config of one's own, e.g. over local CSV files with ``dataset_path: csv``).

The task runs through lm-eval's own evaluator (``simple_evaluate``) on the model already loaded (its
``HFLM`` wrapper around our module and tokenizer: nothing is loaded twice), with its own prompts,
few-shot sampling and metric. Each scored document becomes a ``QuestionRecord`` whose ``correct`` is the
document's 0/1 score on the task's first accuracy-like metric (``acc``, else ``exact_match``), so the same
statistics as for C-Eval and CMMLU apply (t-intervals over seeds, paired bootstrap, McNemar, Holm).
A record's ``id`` is ``TASK/DOC_ID``, its ``subject`` the (sub)task; for multiple-choice tasks its
``logprobs`` are the choices' log-likelihoods and ``predicted`` / ``gold`` the argmax and target indices.

lm-eval is an optional dependency: ``pip install 'layertracer[lm-eval]'``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from layertracer.errors import LayerTracerError
from layertracer.evaluation.results import Accuracy, EvalResult, EvalSettings, QuestionRecord
from layertracer.models.loading import LoadedModel
from layertracer.progress import ProgressCallback, report
from layertracer.spec.benchmarks import is_task_file

SCORE_METRICS = ("acc", "exact_match")  # the first one a task reports is its 0/1 score per document


class HarnessError(LayerTracerError):
    """lm-eval is missing, or the task is unknown or not scored 0/1; the message is one line."""


def _task_name(value: str) -> tuple[str, Optional[str]]:
    """(task name, folder to include) for ``TASK`` or ``FILE.yaml`` (whose ``task:`` names it)."""
    if not is_task_file(value):
        return value, None
    path = Path(value).expanduser()
    if not path.is_file():
        raise HarnessError(f"lm-eval task file {value!r} does not exist")
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise HarnessError(f"{value}: not a readable YAML task config ({exc})") from None
    name = config.get("task") if isinstance(config, dict) else None
    if not isinstance(name, str) or not name:
        raise HarnessError(f"{value}: a task config needs a 'task:' name")
    return name, str(path.parent.resolve())


def _score(sample: dict[str, Any]) -> Optional[float]:
    for metric in SCORE_METRICS:
        value = sample.get(metric)
        if isinstance(value, (int, float, bool)):
            return float(value)
    return None


def evaluate_harness(loaded: LoadedModel, value: str, *, shots: Optional[int], batch_size: int,
                     limit: Optional[int], progress: Optional[ProgressCallback] = None,
                     seed: int = 0) -> EvalResult:
    """lm-eval's evaluator on ``loaded`` for the task ``value`` (``TASK`` or ``FILE.yaml``).

    shots: few-shot examples (None: the task's own default); limit: at most this many documents per
    (sub)task; batch_size: sequences per forward. Raises HarnessError in one line for a missing lm-eval,
    an unknown task, or a task without a 0/1 metric."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise HarnessError("lm-eval benchmarks need lm-evaluation-harness: pip install 'layertracer[lm-eval]'") from None
    task, include = _task_name(value)
    manager = TaskManager(include_path=include) if include else TaskManager()
    if task not in manager.all_tasks:
        raise HarnessError(f"lm-eval knows no task {task!r} (a task or group name, or a FILE.yaml task config)")
    report(progress, "evaluate", 0, 1)
    started = time.perf_counter()
    model = loaded.model
    was_training = model.training
    model.eval()
    try:
        lm = HFLM(pretrained=model, tokenizer=loaded.tokenizer, batch_size=batch_size)
        output = simple_evaluate(model=lm, tasks=[task], task_manager=manager, num_fewshot=shots, limit=limit,
                                 log_samples=True, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                 fewshot_random_seed=seed, bootstrap_iters=0)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    records: list[QuestionRecord] = []
    for subtask, samples in sorted((output or {}).get("samples", {}).items()):
        for sample in samples:
            score = _score(sample)
            if score is None:
                raise HarnessError(f"lm-eval task {subtask!r} reports none of {', '.join(SCORE_METRICS)}: "
                                   "only tasks scored 0/1 per document compare question by question")
            responses = sample.get("filtered_resps") or []
            logprobs = [float(r[0]) for r in responses if isinstance(r, (list, tuple)) and r
                        and isinstance(r[0], (int, float))]
            predicted = str(max(range(len(logprobs)), key=logprobs.__getitem__)) if logprobs else ""
            records.append(QuestionRecord(
                id=f"{subtask}/{sample['doc_id']}", subject=subtask, category=task, categories=[task],
                gold=str(sample.get("target")), predicted=predicted, correct=score >= 0.5, logprobs=logprobs,
                shots_used=int(shots or 0), prompt_tokens=0,
            ))
    if not records:
        raise HarnessError(f"lm-eval task {task!r} scored no documents")
    subjects = {}
    for name in sorted({r.subject for r in records}):
        mine = [r for r in records if r.subject == name]
        right = sum(r.correct for r in mine)
        subjects[name] = Accuracy(n=len(mine), correct=right, accuracy=right / len(mine), macro_accuracy=right / len(mine),
                                  subjects=1)
    right = sum(r.correct for r in records)
    overall = Accuracy(n=len(records), correct=right, accuracy=right / len(records),
                       macro_accuracy=sum(a.accuracy for a in subjects.values()) / len(subjects), subjects=len(subjects))
    from lm_eval import __version__ as harness_version

    settings = EvalSettings(
        benchmark="lm-eval", data=value, split="the task's test split", fewshot_split="the task's few-shot split",
        mode="lm-eval", template=f"lm-eval:{task}", template_source=f"lm-evaluation-harness {harness_version}",
        shots=int(shots or 0), continuations=[], fewshot_sampler="the task's", limit=limit, seed=seed,
        batch_size=batch_size,
    )
    report(progress, "evaluate", 1, 1)
    return EvalResult(settings=settings, model=loaded.info.to_dict(), records=records, subjects=subjects,
                      categories={task: overall}, overall=overall, timings={"scoring": seconds})
