"""``evaluate``: score a model on a multiple-choice benchmark (C-Eval, CMMLU, or any set in their layouts).

Work: one tokenizer call per question (context + four continuations), then one forward pass per
question in batches (more rows only for choices that are several tokens), the output head applied at
the read positions only.
"""

from __future__ import annotations

import time
from typing import Iterable, Optional

import numpy as np

import layertracer
from layertracer.spec.benchmarks import LM_EVAL, split_benchmark
from layertracer.errors import LayerTracerError
from layertracer.evaluation.benchmarks import LETTERS, Benchmark, load_benchmark
from layertracer.evaluation.encoding import EncodedQuestion, encode_question
from layertracer.evaluation.prompts import CLOZE, LOGLIKELIHOOD, PromptTemplate, resolve_template
from layertracer.evaluation.results import EvalResult, EvalSettings, QuestionRecord, aggregate
from layertracer.batching import context_length, pad_token_id
from layertracer.evaluation.scoring import ScoringRequest, score_requests
from layertracer.evaluation.subjects import CATEGORY_ORDER
from layertracer.models.loading import LoadedModel
from layertracer.progress import ProgressCallback, report
from layertracer.training import distributed as dist_utils


def evaluate(
    loaded: LoadedModel,
    benchmark: Benchmark | str,
    *,
    mode: str = LOGLIKELIHOOD,
    shots: int = 5,
    batch_size: int = 8,
    progress: Optional[ProgressCallback] = None,
    template: str | PromptTemplate | None = None,
    subjects: Optional[Iterable[str]] = None,
    limit: Optional[int] = None,
    max_length: Optional[int] = None,
    add_special_tokens: bool = False,
    seed: int = 0,
    split_ranks: bool = False,
) -> EvalResult:
    """Evaluate ``loaded`` on ``benchmark`` and return per-question records and accuracies.

    benchmark: a loaded Benchmark, or a spec (``ceval:DIR``, ``cmmlu:DIR``); ``subjects`` and ``limit``
        (per subject) select questions when it is a spec.
    mode: ``loglikelihood`` (default; lm-eval's ``ceval-valid`` / ``cmmlu``: the choice whose
        continuation " A".." D" has the highest log-likelihood) or ``answer-only`` (the official C-Eval /
        CMMLU answer-only prompts; argmax over the letters' logits at the answer position) or ``cloze``
        (no options shown; each choice's own text scored as the continuation of the question, see
        ``ClozeTemplate``).
    shots: few-shot examples per prompt, the first ones of the dev split. The default 5 follows the
        C-Eval and CMMLU papers; lm-eval runs these tasks 0-shot unless ``--num_fewshot`` is given, so
        pass ``shots=0`` to compare with its defaults. Examples are dropped (earliest first) when a
        prompt does not fit in ``max_length`` (default: the model's context).
    batch_size: sequences per forward pass (one per question, plus one per extra multi-token choice).
    progress: gets ("prompts", questions encoded, questions) then ("evaluate", rows scored, rows).
    template: a template name from ``TEMPLATES`` (or a PromptTemplate) instead of the mode's default.
    max_length: the token budget of a prompt (default: the model's ``max_position_embeddings``; none
        for models without one, such as Mamba).
    add_special_tokens: let the tokenizer add BOS/EOS (lm-eval adds none for causal models by default).
    seed: recorded with the result (the first-n few-shot choice is deterministic).
    split_ranks: in a process group (torchrun), every rank scores every ``world_size``-th question
        and the ranks then sum their scores, so each returns the whole result. A collective: every rank
        calls it alike. lm-eval tasks (``lm-eval:``) are not split: lm-eval's own evaluator runs them.

    The model runs in eval mode under ``torch.inference_mode`` on its own device; its train/eval mode
    is restored afterwards.
    """
    if shots < 0:
        raise LayerTracerError(f"shots must be 0 or more, got {shots}")
    if not isinstance(benchmark, Benchmark):
        kind, value = split_benchmark(str(benchmark))
        if kind == LM_EVAL:  # lm-eval's own evaluator, prompts and metric (``harness``)
            from layertracer.evaluation.harness import evaluate_harness

            return evaluate_harness(loaded, value.strip(), shots=shots, batch_size=batch_size, limit=limit,
                                    progress=progress, seed=seed)
    if isinstance(benchmark, Benchmark):
        if subjects is not None or limit is not None:
            raise LayerTracerError("subjects and limit apply to a benchmark spec; filter with load_benchmark instead")
    else:
        benchmark = load_benchmark(benchmark, subjects=subjects, limit=limit, with_fewshot=shots > 0)
    chosen = resolve_template(benchmark.name, mode, template)
    if shots > 0 and not any(s.fewshot for s in benchmark.subjects):
        raise LayerTracerError(f"{benchmark.spec} was loaded without its {benchmark.fewshot_split} split; use shots=0")
    model, tokenizer = loaded.model, loaded.tokenizer
    limit_tokens = max_length if max_length is not None else context_length(model)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    items = [(subject, question) for subject in benchmark.subjects for question in subject.questions]
    encoded: list[EncodedQuestion] = []
    for i, (subject, question) in enumerate(items):
        encoded.append(
            encode_question(
                tokenizer, chosen, benchmark, subject, question,
                shots=shots, mode=mode, max_length=limit_tokens, add_special_tokens=add_special_tokens,
            )
        )
        if (i + 1) % 256 == 0 or i + 1 == len(items):
            report(progress, "prompts", i + 1, len(items))
    timings["prompts"] = time.perf_counter() - start

    start = time.perf_counter()
    was_training = model.training
    model.eval()  # dropout off even when called in the middle of a training run
    try:
        requests = [ScoringRequest(e.context_ids, e.continuations) for e in encoded]
        share = dist_utils.my_share(len(requests)) if split_ranks else range(len(requests))
        scores = score_requests(
            model,
            loaded.adapter,
            [requests[i] for i in share],
            batch_size=batch_size,
            pad_id=pad_token_id(tokenizer),
            progress=progress,
        )
        if split_ranks and dist_utils.world_size() > 1:  # this rank's rows in place, the others zero
            width = max((len(r.continuations) for r in requests), default=0)  # a rank may score none
            mine = np.zeros((len(requests), width))
            mine[list(share), : scores.shape[1]] = scores
            scores = dist_utils.sum_over_ranks({"scores": mine})["scores"]
    finally:
        model.train(was_training)
    timings["scoring"] = time.perf_counter() - start

    records = []
    for (subject, question), enc, row in zip(items, encoded, scores):
        predicted = LETTERS[int(np.argmax(row))]
        records.append(
            QuestionRecord(
                id=question.id,
                subject=subject.name,
                category=subject.category,
                categories=list(subject.categories),
                gold=question.answer,
                predicted=predicted,
                correct=predicted == question.answer,
                logprobs=[float(v) for v in row],
                shots_used=enc.shots_used,
                prompt_tokens=len(enc.context_ids),
            )
        )
    by_subject, by_category, overall = aggregate(records, CATEGORY_ORDER.get(benchmark.name, ()))
    settings = EvalSettings(
        benchmark=benchmark.name,
        data=benchmark.root,
        split=benchmark.split,
        fewshot_split=benchmark.fewshot_split,
        mode=mode,
        template=chosen.name,
        template_source=chosen.source,
        shots=shots,
        continuations=["<choice text>"] * 4 if mode == CLOZE else list(chosen.continuations()),
        subjects=list(benchmark.subject_filter) if benchmark.subject_filter is not None else None,
        limit=benchmark.limit,
        seed=seed,
        batch_size=batch_size,
        max_length=limit_tokens,
        add_special_tokens=add_special_tokens,
    )
    return EvalResult(
        settings=settings,
        model=loaded.info.to_dict(),
        records=records,
        subjects=by_subject,
        categories=by_category,
        overall=overall,
        subject_names={s.name: s.display_name for s in benchmark.subjects},
        timings=timings,
        version=layertracer.__version__,
    )
