"""Turning a prompt and its four continuations into token ids, and fitting them in the model's context.

Token ids follow lm-evaluation-harness's ``_encode_pair``: the context is tokenized alone, the
continuation's tokens are ``tokenize(context + continuation)`` after the context's length, and trailing
whitespace of the context is moved to the continuation. Special tokens are not added (lm-eval's default
for causal models), unless ``add_special_tokens`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from layertracer.evaluation.benchmarks import Benchmark, Question, Subject
from layertracer.evaluation.errors import PromptError
from layertracer.evaluation.prompts import ANSWER_ONLY, PromptTemplate, fewshot_examples


@dataclass(frozen=True)
class EncodedQuestion:
    """One question ready for scoring.

    context_ids: the prompt's token ids (T_c,).
    continuations: per choice A..D, its token ids in context (each at least one token). In answer-only
        mode each holds only the first token: the letter's logit at the answer position is scored.
    shots_used: few-shot examples kept in the prompt (fewer than asked when the context was too short).
    """

    context_ids: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]
    shots_used: int

    @property
    def length(self) -> int:
        """Tokens the model reads: the context plus every continuation token but the last."""
        return len(self.context_ids) + max(len(c) for c in self.continuations) - 1


def _encode(
    tokenizer: Any, prompt: str, continuations: Sequence[str], add_special_tokens: bool
) -> tuple[list[int], list[list[int]]]:
    """(context ids, per continuation its ids in context), as lm-eval's ``_encode_pair``."""
    spaces = len(prompt) - len(prompt.rstrip())
    context = prompt[:-spaces] if spaces else prompt
    moved = prompt[len(context):]
    # One tokenizer call for the context and the four context+continuation strings.
    texts = [context] + [context + moved + c for c in continuations]
    ids = tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
    context_ids = list(ids[0])
    return context_ids, [list(whole[len(context_ids):]) for whole in ids[1:]]


def encode_question(
    tokenizer: Any,
    template: PromptTemplate,
    benchmark: Benchmark,
    subject: Subject,
    question: Question,
    *,
    shots: int,
    mode: str,
    max_length: Optional[int] = None,
    add_special_tokens: bool = False,
) -> EncodedQuestion:
    """Encode ``question`` with up to ``shots`` examples, dropping the earliest examples until it fits in
    ``max_length`` tokens. Raises PromptError (naming the file and line) when the question alone does
    not fit, or when a continuation tokenizes to nothing or answer-only letters share a first token."""
    examples = fewshot_examples(benchmark, subject, question, shots)
    continuations = template.continuations(question)
    for kept in range(len(examples), -1, -1):
        prompt = template.render(subject, question, examples[len(examples) - kept:])
        context_ids, conts = _encode(tokenizer, prompt, continuations, add_special_tokens)
        if any(not c for c in conts):
            raise PromptError(
                f"{question.location}: a continuation of {continuations!r} tokenizes to nothing after the prompt"
            )
        if mode == ANSWER_ONLY:
            conts = [c[:1] for c in conts]
            if len({c[0] for c in conts}) < len(conts):
                raise PromptError(
                    f"{question.location}: the tokenizer gives the letters A-D no distinct first tokens after "
                    f"{template.answer_cue!r}; use the loglikelihood mode"
                )
        encoded = EncodedQuestion(tuple(context_ids), tuple(tuple(c) for c in conts), kept)
        if max_length is None or encoded.length <= max_length:
            return encoded
    raise PromptError(
        f"{question.location}: question {question.id!r} of {question.subject!r} is {encoded.length} tokens "
        f"without few-shot examples, longer than the model's context of {max_length}"
    )
