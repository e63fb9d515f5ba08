"""Evaluation results: per-question records, accuracy per subject / category / overall, and the
settings that produced them. Plain dataclasses with ``to_dict`` / ``from_dict``; every number is a
Python float or int, so ``json.dumps`` works and a result reads back equal."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

SCHEMA_VERSION = 1


@dataclass
class QuestionRecord:
    """One scored question.

    logprobs: [4] the score of choices A..D in nats. Loglikelihood mode: the summed log-probability of
        each continuation (" A".." D") after the prompt. Answer-only mode: the log-softmax of the
        letter's first token at the answer position.
    predicted: the argmax of ``logprobs`` (the first on a tie, as numpy's argmax and lm-eval do).
    shots_used: few-shot examples in this question's prompt; prompt_tokens: its context length.
    """

    id: str
    subject: str
    category: str
    categories: list[str]
    gold: str
    predicted: str
    correct: bool
    logprobs: list[float]
    shots_used: int
    prompt_tokens: int


@dataclass
class Accuracy:
    """Accuracy over a group of questions.

    accuracy: correct / n, the micro average over questions (what lm-eval's group scores report, as
        its ``weight_by_size: true``).
    macro_accuracy: the mean of the subjects' accuracies (what the C-Eval and CMMLU papers report for
        categories and the average); equal to ``accuracy`` for one subject.
    """

    n: int
    correct: int
    accuracy: float
    macro_accuracy: float
    subjects: int


@dataclass
class EvalSettings:
    """Everything that decides a score; stored with every result so scores compare only like with like.

    benchmark / data / split / fewshot_split: which questions (``ceval`` / ``cmmlu``, the folder, the
    scored split, the few-shot split). mode: ``loglikelihood`` or ``answer-only``. template: the prompt
    template's name and its source. shots: few-shot examples asked for (fewer when the context is
    short: see each record's ``shots_used``). fewshot_sampler: ``first_n``. subjects / limit: the
    selection. seed: recorded for provenance (first_n sampling is deterministic).
    """

    benchmark: str
    data: str
    split: str
    fewshot_split: str
    mode: str
    template: str
    template_source: str
    shots: int
    continuations: list[str]
    fewshot_sampler: str = "first_n"
    truncation: str = "drop the earliest few-shot examples until the prompt fits"
    subjects: Optional[list[str]] = None
    limit: Optional[int] = None
    seed: int = 0
    batch_size: int = 8
    max_length: Optional[int] = None
    add_special_tokens: bool = False


@dataclass
class EvalResult:
    """A whole evaluation: settings, the model's description, records and the accuracy tables.

    subjects: subject -> Accuracy. categories: category -> Accuracy, over every question whose subject
    belongs to the category (CMMLU's "China specific" overlaps the other four, so category counts may
    add up to more than ``overall.n``). subject_names: subject -> Chinese display name.
    """

    settings: EvalSettings
    model: dict[str, Any]
    records: list[QuestionRecord]
    subjects: dict[str, Accuracy]
    categories: dict[str, Accuracy]
    overall: Accuracy
    subject_names: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    version: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def accuracy(self) -> float:
        return self.overall.accuracy

    def summary(self) -> dict[str, Any]:
        """The scores without the per-question records, still with their settings."""
        data = self.to_dict()
        data.pop("records")
        return data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EvalResult":
        return cls(
            settings=EvalSettings(**data["settings"]),
            model=dict(data["model"]),
            records=[QuestionRecord(**r) for r in data["records"]],
            subjects={k: Accuracy(**v) for k, v in data["subjects"].items()},
            categories={k: Accuracy(**v) for k, v in data["categories"].items()},
            overall=Accuracy(**data["overall"]),
            subject_names=dict(data.get("subject_names", {})),
            timings={k: float(v) for k, v in data.get("timings", {}).items()},
            version=data.get("version", ""),
            schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
        )

    def to_json(self, path: str | Path) -> None:
        """Write atomically (temp file then rename), so a reader never sees half a result."""
        path = Path(path)
        temp = path.with_name(path.name + ".tmp")
        temp.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        temp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "EvalResult":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _accuracy(records: Sequence[QuestionRecord], subject_accuracies: Iterable[float]) -> Accuracy:
    per_subject = list(subject_accuracies)
    correct = sum(1 for r in records if r.correct)
    n = len(records)
    return Accuracy(
        n=n,
        correct=correct,
        accuracy=float(correct / n) if n else 0.0,
        macro_accuracy=float(sum(per_subject) / len(per_subject)) if per_subject else 0.0,
        subjects=len(per_subject),
    )


def aggregate(
    records: Sequence[QuestionRecord], category_order: Sequence[str] = ()
) -> tuple[dict[str, Accuracy], dict[str, Accuracy], Accuracy]:
    """(per subject, per category, overall) accuracy of ``records``.

    Subjects keep their first-seen order; categories follow ``category_order``, then any others sorted.
    """
    by_subject: dict[str, list[QuestionRecord]] = {}
    for record in records:
        by_subject.setdefault(record.subject, []).append(record)
    subjects = {name: _accuracy(rs, [sum(r.correct for r in rs) / len(rs)]) for name, rs in by_subject.items()}
    members: dict[str, list[str]] = {}
    for name, rs in by_subject.items():
        for category in rs[0].categories:
            members.setdefault(category, []).append(name)
    ordered = [c for c in category_order if c in members] + sorted(c for c in members if c not in category_order)
    categories = {
        c: _accuracy(
            [r for name in members[c] for r in by_subject[name]],
            [subjects[name].accuracy for name in members[c]],
        )
        for c in ordered
    }
    overall = _accuracy(list(records), [a.accuracy for a in subjects.values()])
    return subjects, categories, overall
