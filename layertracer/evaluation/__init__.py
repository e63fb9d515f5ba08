"""Multiple-choice evaluation on C-Eval and CMMLU (and any set in their folder layouts).

    >>> import layertracer as lt
    >>> from layertracer.evaluation import evaluate, load_benchmark
    >>> loaded = lt.load_model("path/to/model")
    >>> result = evaluate(loaded, "cmmlu:/data/cmmlu", shots=5, batch_size=8)
    >>> result.overall.accuracy, result.categories["STEM"].accuracy
    >>> result.to_json("cmmlu.json")

Modules, one job each: ``subjects`` (official subject names and categories), ``benchmarks`` (folder
loaders), ``prompts`` (templates and few-shot choice), ``encoding`` (token ids and context fitting),
``scoring`` (batched log-likelihoods, one forward per question), ``results`` (records, accuracy tables,
JSON) and ``evaluate`` (the entry point).
"""

from layertracer.evaluation.benchmarks import LAYOUTS, LETTERS, Benchmark, Question, Subject, load_benchmark, parse_spec
from layertracer.evaluation.encoding import EncodedQuestion, encode_question
from layertracer.evaluation.errors import BenchmarkError, BenchmarkFormatError, BenchmarkNotFoundError
from layertracer.batching import context_length
from layertracer.evaluation.evaluate import evaluate
from layertracer.evaluation.prompts import (
    ANSWER_ONLY,
    CLOZE,
    LOGLIKELIHOOD,
    MODES,
    TEMPLATES,
    ClozeTemplate,
    PromptTemplate,
    fewshot_examples,
    resolve_template,
)
from layertracer.evaluation.results import Accuracy, EvalResult, EvalSettings, QuestionRecord, aggregate
from layertracer.evaluation.scoring import ScoringRequest, plan_rows, score_requests
from layertracer.evaluation.subjects import CATEGORY_ORDER, CEVAL_CATEGORIES, CMMLU_CATEGORIES, subject_info

__all__ = [
    "ANSWER_ONLY",
    "CLOZE",
    "ClozeTemplate",
    "Accuracy",
    "Benchmark",
    "BenchmarkError",
    "BenchmarkFormatError",
    "BenchmarkNotFoundError",
    "CATEGORY_ORDER",
    "CEVAL_CATEGORIES",
    "CMMLU_CATEGORIES",
    "EncodedQuestion",
    "EvalResult",
    "EvalSettings",
    "LAYOUTS",
    "LETTERS",
    "LOGLIKELIHOOD",
    "MODES",
    "PromptTemplate",
    "Question",
    "QuestionRecord",
    "ScoringRequest",
    "Subject",
    "TEMPLATES",
    "aggregate",
    "context_length",
    "encode_question",
    "evaluate",
    "fewshot_examples",
    "load_benchmark",
    "parse_spec",
    "plan_rows",
    "resolve_template",
    "score_requests",
    "subject_info",
]
