"""The demo world's facts: the built-in ("old") facts the demo model is trained on, and generated
"new domain" facts it has never seen (invented countries and their capitals, in English and Chinese).

Multiple-choice questions about facts are written in C-Eval's official layout, so the same evaluation
code that scores real C-Eval scores the demo (acquisition of new facts, retention of old ones).

Which facts go where (every split is seeded):
- old facts are halved per subject: the "format" half appears in the demo model's training corpus both
  as statements and as exam-style multiple-choice documents (so the model learns the exam format);
  the "held-out" half appears only as statements, and the old-facts benchmark asks about it: a correct
  answer there needs the fact, not a memorised question.
- new-domain facts appear only in the new-domain corpus (as statements); the new-facts benchmark asks
  about them, so before continued pre-training the model is at chance.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from layertracer.tasks.sets import BUILTIN_TASKS, builtin_facts

LETTERS = ("A", "B", "C", "D")

# Subjects of the demo's "old facts" benchmark: tasks with unambiguous single answers.
OLD_SUBJECTS = (
    "antonyms_en",
    "antonyms_zh",
    "country_capital_en",
    "country_capital_zh",
    "en_to_zh",
    "zh_to_en",
    "plural_en",
    "past_tense_en",
)

_EN_ONSETS = ("b", "d", "k", "l", "m", "n", "r", "s", "t", "v", "z", "dr", "kr", "st", "tr", "gl")
_EN_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
_EN_CODAS = ("", "n", "r", "l", "s", "th", "nd", "sk")
_ZH_COUNTRY = "安宝岑丹锋戈瀚嘉堇坤澜岚蒙宁琪瑞桑泰汀维溪雅伊昭卓"
_ZH_CITY = "北川丰港禾湖江京林陵宁平泉山石松台温霞阳原州"


@dataclass(frozen=True)
class Fact:
    """One fact of a subject: rendered with the subject's template as ``question`` + ``answer``."""

    subject: str
    question: str
    answer: str


def _en_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_EN_ONSETS) + rng.choice(_EN_VOWELS) + rng.choice(_EN_CODAS) for _ in range(syllables))


def new_domain_facts(count: int = 40, *, seed: int = 7) -> list[Fact]:
    """Invented countries with invented capitals, ``count`` in English and ``count`` in Chinese.

    Names are unique within each language and never appear in the built-in facts, so a model trained on
    the built-in world has never seen them.
    """
    rng = random.Random(seed)
    facts: list[Fact] = []
    used: set[str] = set()
    while len([f for f in facts if f.subject == "new_capitals_en"]) < count:
        country = _en_word(rng, 2).capitalize() + rng.choice(("ia", "land", "or", "ara"))
        capital = _en_word(rng, 2).capitalize()
        if country in used or capital in used:
            continue
        used.update((country, capital))
        facts.append(Fact("new_capitals_en", f"The capital of {country} is", f" {capital}"))
    while len([f for f in facts if f.subject == "new_capitals_zh"]) < count:
        country = "".join(rng.sample(_ZH_COUNTRY, 2)) + "国"
        capital = "".join(rng.sample(_ZH_CITY, 2)) + "城"
        if country in used or capital in used:
            continue
        used.update((country, capital))
        facts.append(Fact("new_capitals_zh", f"{country}的首都是", capital))
    return facts


def old_facts(subjects: Sequence[str] = OLD_SUBJECTS) -> list[Fact]:
    """The built-in facts of ``subjects``, rendered with their task templates."""
    from layertracer.tasks.sets import render

    facts = []
    for subject in subjects:
        template = BUILTIN_TASKS[subject].template
        for source, target in builtin_facts(subject):
            prompt, answer = render(template, source, target)
            facts.append(Fact(subject, prompt, answer))
    return facts


def fact_statements(facts: Sequence[Fact], *, per_document: int = 5, repeats: int = 1, seed: int = 0) -> list[str]:
    """Documents of plain statements ("The capital of X is Y"), ``per_document`` facts per document,
    each fact ``repeats`` times in seeded random order."""
    rng = random.Random(seed)
    lines = [fact.question + fact.answer for fact in facts]
    documents = []
    for _ in range(repeats):
        order = lines[:]
        rng.shuffle(order)
        documents.extend("\n".join(order[i : i + per_document]) for i in range(0, len(order), per_document))
    rng.shuffle(documents)
    return documents


@dataclass(frozen=True)
class Question:
    """A multiple-choice question in C-Eval's columns: ``choices`` are A-D, ``answer`` a letter."""

    id: int
    question: str
    choices: tuple[str, str, str, str]
    answer: str


def make_questions(facts: Sequence[Fact], *, seed: int = 0) -> dict[str, list[Question]]:
    """One question per fact, by subject: the fact's prompt with a blank ("____"), its answer and three
    distractors drawn from other answers of the same subject, the correct letter placed at random."""
    rng = random.Random(seed)
    by_subject: dict[str, list[Fact]] = {}
    for fact in facts:
        by_subject.setdefault(fact.subject, []).append(fact)
    questions: dict[str, list[Question]] = {}
    for subject, subject_facts in by_subject.items():
        answers = sorted({f.answer.strip() for f in subject_facts})
        if len(answers) < 4:
            raise ValueError(f"subject {subject!r} has fewer than 4 distinct answers")
        items = []
        for number, fact in enumerate(subject_facts):
            correct = fact.answer.strip()
            distractors = rng.sample([a for a in answers if a != correct], 3)
            slot = rng.randrange(4)
            options = distractors[:slot] + [correct] + distractors[slot:]
            items.append(Question(number, fact.question.strip() + " ____", tuple(options), LETTERS[slot]))
        questions[subject] = items
    return questions


def write_ceval_layout(
    questions: dict[str, list[Question]], folder: str | Path, *, dev_count: int = 5, seed: int = 0
) -> Path:
    """Write questions as a C-Eval-layout benchmark: ``{dev,val,test}/{subject}_{split}.csv`` with
    columns ``id,question,A,B,C,D,answer,explanation``. The first ``dev_count`` questions of each
    subject (after a seeded shuffle) go to dev (few-shot examples), the rest to val (scored); test
    holds the val questions without answers, as in the official release."""
    folder = Path(folder)
    rng = random.Random(seed)
    for split in ("dev", "val", "test"):
        (folder / split).mkdir(parents=True, exist_ok=True)
    header = ["id", "question", "A", "B", "C", "D", "answer", "explanation"]
    for subject, items in questions.items():
        order = items[:]
        rng.shuffle(order)
        splits = {"dev": order[:dev_count], "val": order[dev_count:], "test": order[dev_count:]}
        for split, rows in splits.items():
            with open(folder / split / f"{subject}_{split}.csv", "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                for index, q in enumerate(rows):
                    answer = "" if split == "test" else q.answer
                    writer.writerow([index, q.question, *q.choices, answer, ""])
    return folder


def split_facts(facts: Sequence[Fact], *, seed: int = 0) -> tuple[list[Fact], list[Fact]]:
    """(format half, held-out half) of each subject's facts, by a seeded shuffle."""
    rng = random.Random(seed)
    by_subject: dict[str, list[Fact]] = {}
    for fact in facts:
        by_subject.setdefault(fact.subject, []).append(fact)
    first, second = [], []
    for subject in sorted(by_subject):
        items = by_subject[subject][:]
        rng.shuffle(items)
        half = len(items) // 2
        first.extend(items[:half])
        second.extend(items[half:])
    return first, second


def exam_documents(facts: Sequence[Fact], *, per_document: int = 4, repeats: int = 2, seed: int = 0) -> list[str]:
    """Exam-style documents: lm-eval's C-Eval prompt (description, then questions each followed by
    " <letter>"), ``per_document`` questions of one subject per document, each fact asked ``repeats``
    times with fresh distractors and letter positions."""
    from layertracer.evaluation.benchmarks import Question as EvalQuestion
    from layertracer.evaluation.benchmarks import Subject
    from layertracer.evaluation.prompts import LM_EVAL_CEVAL

    rng = random.Random(seed)
    documents = []
    for repeat in range(repeats):
        questions = make_questions(facts, seed=seed * 1000 + repeat)
        for subject, items in questions.items():
            header = LM_EVAL_CEVAL.header(Subject(subject, subject, ("Other",), (), ()))
            order = items[:]
            rng.shuffle(order)
            for start in range(0, len(order), per_document):
                body = "".join(
                    LM_EVAL_CEVAL.example(EvalQuestion(str(q.id), subject, q.question, q.choices, q.answer))
                    for q in order[start : start + per_document]
                )
                documents.append(header + body.rstrip("\n"))
    rng.shuffle(documents)
    return documents


@dataclass(frozen=True)
class DemoWorld:
    """Paths of the generated demo data (see ``build_world``)."""

    root: Path
    old_facts: Path  # C-Eval layout: held-out built-in facts (retention)
    new_facts: Path  # C-Eval layout: new-domain facts (acquisition)
    new_corpus: Path  # JSONL: statements of the new-domain facts

    @property
    def benchmarks(self) -> list[str]:
        return [f"ceval:{self.old_facts}", f"ceval:{self.new_facts}"]


def build_world(folder: str | Path, *, seed: int = 0, new_count: int = 40, repeats: int = 8) -> DemoWorld:
    """Write the demo's benchmarks and new-domain corpus under ``folder`` (deterministic in ``seed``)."""
    import json

    root = Path(folder)
    _, held_out = split_facts(old_facts(), seed=seed)
    old_dir = write_ceval_layout(make_questions(held_out, seed=seed), root / "old-facts", seed=seed)
    new = new_domain_facts(new_count, seed=seed + 7)
    new_dir = write_ceval_layout(make_questions(new, seed=seed), root / "new-facts", seed=seed)
    corpus = root / "new-domain-corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as handle:
        for document in fact_statements(new, repeats=repeats, seed=seed):
            handle.write(json.dumps({"text": document}, ensure_ascii=False) + "\n")
    return DemoWorld(root=root, old_facts=old_dir, new_facts=new_dir, new_corpus=corpus)
