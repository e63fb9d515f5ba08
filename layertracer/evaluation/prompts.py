"""Prompt templates for four-option questions, and the few-shot examples each question gets.

A prompt is ``description + shot_1 + ... + shot_k + body(question)`` where

- ``body(q)`` = ``question_prefix + question + "\\nA. " + A + "\\nB. " + B + "\\nC. " + C + "\\nD. " + D
  + "\\n" + answer_cue``;
- a shot is ``body(example) + target_delimiter + example.answer + fewshot_delimiter``;
- the scored continuations are ``target_delimiter + letter`` for the letters A..D.

The default templates reproduce lm-evaluation-harness's ``ceval-valid`` and ``cmmlu`` tasks (its
``multiple_choice`` output type: target delimiter " ", few-shot delimiter "\\n\\n", few-shot examples
the first n of ``dev``), so accuracies are comparable with numbers reported from lm-eval. The
answer-only templates are the ones the C-Eval and CMMLU authors published with their own evaluation
code. The strings are transcribed from those sources (named in ``source``); the code is ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from layertracer.evaluation.benchmarks import LETTERS, Benchmark, Question, Subject
from layertracer.errors import LayerTracerError

LOGLIKELIHOOD = "loglikelihood"
ANSWER_ONLY = "answer-only"
CLOZE = "cloze"
MODES = (LOGLIKELIHOOD, ANSWER_ONLY, CLOZE)


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt format. ``description`` may contain ``{subject}`` (the subject's Chinese name)."""

    name: str
    source: str
    description: str
    question_prefix: str = ""
    strip_question: bool = False
    answer_cue: str = "答案："
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"

    def header(self, subject: Subject) -> str:
        # str.replace, not str.format: a folder name with braces must not break the prompt.
        return self.description.replace("{subject}", subject.display_name)

    def body(self, question: Question) -> str:
        text = question.question.strip() if self.strip_question else question.question
        options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, question.choices))
        return f"{self.question_prefix}{text}{options}\n{self.answer_cue}"

    def example(self, question: Question) -> str:
        return self.body(question) + self.target_delimiter + question.answer + self.fewshot_delimiter

    def render(self, subject: Subject, question: Question, shots: Sequence[Question]) -> str:
        """The full prompt text: description, the shots in order, then the question's body."""
        return self.header(subject) + "".join(self.example(s) for s in shots) + self.body(question)

    def continuations(self, question: Question | None = None) -> tuple[str, ...]:
        """The four scored continuations, e.g. (" A", " B", " C", " D") (the same for every question)."""
        return tuple(self.target_delimiter + letter for letter in LETTERS)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "question_prefix": self.question_prefix,
            "strip_question": self.strip_question,
            "answer_cue": self.answer_cue,
            "target_delimiter": self.target_delimiter,
            "fewshot_delimiter": self.fewshot_delimiter,
        }


_LM_EVAL = "EleutherAI/lm-evaluation-harness"

LM_EVAL_CEVAL = PromptTemplate(
    name="lm-eval:ceval-valid",
    source=(
        f"{_LM_EVAL} lm_eval/tasks/ceval/_default_ceval_yaml (doc_to_text, fewshot_split dev, sampler "
        "first_n) and lm_eval/tasks/ceval/_generate_configs.py (per-subject description)"
    ),
    description="以下是中国关于{subject}的单项选择题，请选出其中的正确答案。\n\n",
    strip_question=True,
)

LM_EVAL_CMMLU = PromptTemplate(
    name="lm-eval:cmmlu",
    source=(
        f"{_LM_EVAL} lm_eval/tasks/cmmlu/_default_template_yaml (doc_to_text, fewshot_split dev, sampler "
        "first_n) and lm_eval/tasks/cmmlu/_generate_configs.py (per-subject description)"
    ),
    description="以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n",
    strip_question=True,
)

CEVAL_ANSWER_ONLY = PromptTemplate(
    name="ceval:answer-only",
    source="hkust-nlp/ceval code/evaluator_series/evaluators/llama.py and resources/tutorial.md (completion mode)",
    description="以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n",
    target_delimiter="",
)

CMMLU_ANSWER_ONLY = PromptTemplate(
    name="cmmlu:answer-only",
    source="haonan-li/CMMLU src/mp_utils.py (format_example, gen_prompt)",
    description="以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n",
    question_prefix="题目：",
    answer_cue="答案是：",
    target_delimiter="",
)



@dataclass(frozen=True)
class ClozeTemplate(PromptTemplate):
    """Cloze scoring: each choice's own text is scored as the continuation of the question stem.

    No options and no letters are shown, so a model that knows the fact but has never seen the
    multiple-choice format (a small model, or one early in pre-training) can still show it; the
    same idea as lm-eval's ``*_continuation`` variants and its ARC tasks. The score of a choice is the
    summed log-likelihood of its tokens (lm-eval's ``acc``), so long choices are not favoured.

    Stem: a question ending in a blank (``____``) is cut before the blank ("The capital of X is ____"
    gives "The capital of X is"); any other question becomes ``question_prefix + question + "\n" +
    answer_cue``. A space joins stem and choice only where both sides are ASCII letters or digits, as
    text is written ("is Paris", but "首都是北京").
    """

    blank: str = "____"

    def stem(self, question: Question) -> str:
        text = question.question.strip()
        if text.endswith(self.blank):
            return text[: -len(self.blank)].rstrip()
        return f"{self.question_prefix}{text}\n{self.answer_cue}"

    @staticmethod
    def joiner(stem: str, choice: str) -> str:
        left, right = stem[-1:], choice[:1]
        return " " if left.isascii() and left.isalnum() and right.isascii() and right.isalnum() else ""

    def body(self, question: Question) -> str:
        return self.stem(question)

    def example(self, question: Question) -> str:
        stem = self.stem(question)
        choice = question.choices[LETTERS.index(question.answer)]
        return stem + self.joiner(stem, choice) + choice + self.fewshot_delimiter

    def continuations(self, question: Question | None = None) -> tuple[str, ...]:
        """The four choices' texts as continuations of ``question``'s stem (so a question is needed)."""
        if question is None:
            raise LayerTracerError("cloze continuations depend on the question")
        stem = self.stem(question)
        return tuple(self.joiner(stem, choice) + choice for choice in question.choices)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "blank": self.blank}


CLOZE_TEMPLATE = ClozeTemplate(
    name="cloze",
    source="LayerTracer (continuation scoring as in lm-eval's ARC and *_continuation tasks)",
    description="",
    answer_cue="答案：",
    fewshot_delimiter="\n",
)

TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t for t in (LM_EVAL_CEVAL, LM_EVAL_CMMLU, CEVAL_ANSWER_ONLY, CMMLU_ANSWER_ONLY, CLOZE_TEMPLATE)
}

_DEFAULTS = {
    ("ceval", LOGLIKELIHOOD): LM_EVAL_CEVAL,
    ("cmmlu", LOGLIKELIHOOD): LM_EVAL_CMMLU,
    ("ceval", ANSWER_ONLY): CEVAL_ANSWER_ONLY,
    ("cmmlu", ANSWER_ONLY): CMMLU_ANSWER_ONLY,
    ("ceval", CLOZE): CLOZE_TEMPLATE,
    ("cmmlu", CLOZE): CLOZE_TEMPLATE,
}


def resolve_template(benchmark: str, mode: str, template: str | PromptTemplate | None = None) -> PromptTemplate:
    """The template to use: ``template`` if given (a name from TEMPLATES or an object), else the default
    for (benchmark, mode)."""
    if mode not in MODES:
        raise LayerTracerError(f"unknown evaluation mode {mode!r}; use one of {', '.join(MODES)}")
    if isinstance(template, PromptTemplate):
        return template
    if template is not None:
        if template not in TEMPLATES:
            raise LayerTracerError(f"unknown prompt template {template!r}; use one of {', '.join(TEMPLATES)}")
        return TEMPLATES[template]
    return _DEFAULTS[(benchmark, mode)]


def fewshot_examples(benchmark: Benchmark, subject: Subject, question: Question, shots: int) -> list[Question]:
    """The first ``shots`` examples of the subject's few-shot split (lm-eval's ``first_n`` sampler).

    When the scored split is the few-shot split itself, the question is left out of its own examples
    (as lm-eval does: it draws one more and drops the question). Fewer are returned when the split
    has fewer.
    """
    if shots <= 0:
        return []
    pool = list(subject.fewshot)
    if benchmark.split == benchmark.fewshot_split:
        pool = [q for q in pool[: shots + 1] if q != question]
    return pool[:shots]
