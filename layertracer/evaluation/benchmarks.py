"""Loading multiple-choice benchmarks from their official folder layouts (C-Eval, CMMLU).

Two layouts are understood, for the official subjects and for any other subject found in the folder:

- ``ceval``: ``{dev,val,test}/{subject}_{split}.csv`` with the header
  ``id,question,A,B,C,D,answer,explanation``. ``val`` is scored (the test answers are not public);
  ``dev`` gives the few-shot examples.
- ``cmmlu``: ``{dev,test}/{subject}.csv`` with the header ``,Question,A,B,C,D,Answer`` (the first column
  is an unnamed row index). ``test`` is scored; ``dev`` gives the few-shot examples.

A spec string is ``ceval:DIR`` or ``cmmlu:DIR``; a bare ``DIR`` is recognised by its layout.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from layertracer.evaluation.errors import BenchmarkFormatError, BenchmarkNotFoundError
from layertracer.evaluation.subjects import subject_info
from layertracer.spec.benchmarks import CHOICE_LETTERS, split_benchmark

LETTERS: tuple[str, str, str, str] = CHOICE_LETTERS  # declared in the spec (the chance accuracy reads it too)


@dataclass(frozen=True)
class Question:
    """One four-option question.

    id: the file's id (C-Eval's ``id`` column, CMMLU's unnamed index column), as text.
    choices: the texts of options A, B, C, D, exactly as in the file.
    answer: ``"A"``..``"D"``.
    location: ``path:line`` of the row, for messages.
    """

    id: str
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: str
    explanation: str = ""
    location: str = ""

    @property
    def gold_index(self) -> int:
        """The answer as an index 0..3."""
        return LETTERS.index(self.answer)


@dataclass(frozen=True)
class Subject:
    """One subject: its scored questions (after the per-subject limit) and its few-shot pool.

    categories: the main category first, then any overlapping group (CMMLU's "China specific").
    fewshot: the few-shot split in file order; examples are taken from the front (lm-eval's first_n).
    """

    name: str
    display_name: str
    categories: tuple[str, ...]
    questions: tuple[Question, ...]
    fewshot: tuple[Question, ...]

    @property
    def category(self) -> str:
        return self.categories[0]


@dataclass(frozen=True)
class Benchmark:
    """A loaded benchmark: subjects in sorted order, plus how it was selected (for provenance)."""

    name: str
    root: str
    split: str
    fewshot_split: str
    subjects: tuple[Subject, ...]
    subject_filter: Optional[tuple[str, ...]] = None
    limit: Optional[int] = None

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.root}"

    def questions(self) -> list[Question]:
        """Every scored question, subject by subject."""
        return [q for s in self.subjects for q in s.questions]

    def subject(self, name: str) -> Subject:
        for subject in self.subjects:
            if subject.name == name:
                return subject
        raise KeyError(name)

    def __len__(self) -> int:
        return sum(len(s.questions) for s in self.subjects)


@dataclass(frozen=True)
class Layout:
    """Where one benchmark keeps its files and what its columns are called.

    columns: our field -> the header name (matched case-insensitively). ``id`` is None when the id is an
    unnamed first column (CMMLU's index); files without one number their rows from 0.
    """

    name: str
    title: str
    splits: tuple[str, ...]
    scored_split: str
    fewshot_split: str
    suffixed: bool  # file names carry the split: ``{subject}_{split}.csv``
    columns: dict[str, Optional[str]]
    optional: tuple[str, ...] = ()

    def filename(self, subject: str, split: str) -> str:
        return f"{subject}_{split}.csv" if self.suffixed else f"{subject}.csv"

    def subject_of(self, filename: str, split: str) -> Optional[str]:
        """The subject a file in ``split/`` holds, or None when the name does not fit the layout."""
        if not filename.endswith(".csv"):
            return None
        stem = filename[: -len(".csv")]
        if not self.suffixed:
            return stem or None
        suffix = f"_{split}"
        if not stem.endswith(suffix) or stem == suffix:
            return None
        return stem[: -len(suffix)]


LAYOUTS: dict[str, Layout] = {
    "ceval": Layout(
        name="ceval",
        title="C-Eval",
        splits=("dev", "val", "test"),
        scored_split="val",
        fewshot_split="dev",
        suffixed=True,
        columns={"id": "id", "question": "question", "A": "A", "B": "B", "C": "C", "D": "D",
                 "answer": "answer", "explanation": "explanation"},
        # Sets in this layout without ids or explanations are still usable.
        optional=("id", "explanation"),
    ),
    "cmmlu": Layout(
        name="cmmlu",
        title="CMMLU",
        splits=("dev", "test"),
        scored_split="test",
        fewshot_split="dev",
        suffixed=False,
        columns={"id": None, "question": "Question", "A": "A", "B": "B", "C": "C", "D": "D", "answer": "Answer"},
    ),
}


def parse_spec(spec: str | Path) -> tuple[str, Path]:
    """``"ceval:DIR"`` / ``"cmmlu:DIR"`` -> (layout name, folder); a bare folder is recognised by its layout."""
    text = str(spec)
    kind, rest = split_benchmark(text)
    if kind is not None:
        return kind, Path(rest).expanduser()
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise BenchmarkNotFoundError(f"benchmark folder {text!r} does not exist (use ceval:DIR or cmmlu:DIR)")
    # C-Eval is the only layout with a val/ split; CMMLU keeps test/ files without a split suffix.
    if (folder / "val").is_dir():
        return "ceval", folder
    if (folder / "test").is_dir():
        return "cmmlu", folder
    raise BenchmarkNotFoundError(
        f"{text!r} is neither a C-Eval folder (val/, dev/) nor a CMMLU folder (test/, dev/); "
        "say which with ceval:DIR or cmmlu:DIR"
    )


def _read_csv(path: Path, layout: Layout, subject: str) -> list[Question]:
    """Every row of one CSV as a Question; errors name the file, the line and the column."""
    try:
        handle = open(path, encoding="utf-8-sig", newline="")  # utf-8-sig: tolerate a BOM
    except OSError as exc:
        raise BenchmarkNotFoundError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise BenchmarkFormatError(f"{path}: the file is empty (no header row)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise BenchmarkFormatError(f"{path} line 1: not a UTF-8 CSV ({exc})") from None
        lowered = [h.strip().lower() for h in header]
        index: dict[str, int] = {}
        required = [n for f, n in layout.columns.items() if n is not None and f not in layout.optional]
        for field, name in layout.columns.items():
            if name is None:
                if lowered[0] == "":  # the unnamed index column; without one, ids are row numbers
                    index[field] = 0
            elif name.lower() in lowered:
                index[field] = lowered.index(name.lower())
            elif field not in layout.optional:
                raise BenchmarkFormatError(
                    f"{path}: missing column {name!r} (header: {','.join(header)}; "
                    f"{layout.title} needs {','.join(required)})"
                )
        questions: list[Question] = []
        width = len(header)
        try:
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue
                line = reader.line_num
                if len(row) < width:
                    raise BenchmarkFormatError(
                        f"{path} line {line}: {len(row)} fields, the header has {width}"
                    )
                answer = row[index["answer"]].strip().upper()
                if answer not in LETTERS:
                    column = layout.columns["answer"]
                    raise BenchmarkFormatError(
                        f"{path} line {line}: answer {row[index['answer']]!r} in column {column!r} "
                        "is not one of A, B, C, D"
                    )
                qid = row[index["id"]].strip() if "id" in index else ""
                questions.append(
                    Question(
                        id=qid or str(len(questions)),
                        subject=subject,
                        question=row[index["question"]],
                        choices=tuple(row[index[letter]] for letter in LETTERS),  # type: ignore[arg-type]
                        answer=answer,
                        explanation=row[index["explanation"]] if "explanation" in index else "",
                        location=f"{path}:{line}",
                    )
                )
        except (csv.Error, UnicodeDecodeError) as exc:
            raise BenchmarkFormatError(f"{path} line {reader.line_num}: not a UTF-8 CSV ({exc})") from None
    return questions


def _split_files(root: Path, layout: Layout, split: str) -> dict[str, Path]:
    """subject -> file for one split folder; errors when the folder or its CSV files are missing."""
    folder = root / split
    if not folder.is_dir():
        raise BenchmarkNotFoundError(f"{layout.title} folder {root} has no {split}/ folder")
    files = {}
    for path in sorted(folder.iterdir()):
        subject = layout.subject_of(path.name, split) if path.is_file() else None
        if subject is not None:
            files[subject] = path
    if not files:
        raise BenchmarkNotFoundError(
            f"no {layout.title} CSV files ({layout.filename('SUBJECT', split)}) in {folder}"
        )
    return files


def load_benchmark(
    spec: str | Path,
    *,
    subjects: Optional[Iterable[str]] = None,
    limit: Optional[int] = None,
    split: Optional[str] = None,
    with_fewshot: bool = True,
) -> Benchmark:
    """Load a benchmark folder.

    spec: ``ceval:DIR``, ``cmmlu:DIR`` or a bare ``DIR`` (layout recognised from its folders).
    subjects: keep only these subjects (names as in the file names); unknown names are an error.
    limit: at most this many scored questions per subject (the first ones, in file order).
    split: the scored split (default: ``val`` for C-Eval, ``test`` for CMMLU).
    with_fewshot: also load the few-shot split (``dev``); turn off for zero-shot sets without one.

    Raises BenchmarkNotFoundError / BenchmarkFormatError with a one-line message naming the folder or
    file (and line and column).
    """
    name, root = parse_spec(spec)
    layout = LAYOUTS[name]
    if not root.is_dir():
        raise BenchmarkNotFoundError(f"{layout.title} folder {str(root)!r} does not exist")
    split = split or layout.scored_split
    if split not in layout.splits:
        raise BenchmarkNotFoundError(f"{layout.title} has no split {split!r} (splits: {', '.join(layout.splits)})")
    if limit is not None and limit < 1:
        raise BenchmarkFormatError(f"limit must be at least 1, got {limit}")
    scored = _split_files(root, layout, split)
    wanted: Sequence[str] = sorted(scored)
    subject_filter: Optional[tuple[str, ...]] = None
    if subjects is not None:
        subject_filter = tuple(dict.fromkeys(s.strip() for s in subjects if s.strip()))
        unknown = [s for s in subject_filter if s not in scored]
        if unknown:
            shown = ", ".join(sorted(scored)[:8]) + (", ..." if len(scored) > 8 else "")
            raise BenchmarkNotFoundError(
                f"no subject {unknown[0]!r} in {root / split} (found: {shown})"
            )
        wanted = sorted(subject_filter)
    fewshot_files = _split_files(root, layout, layout.fewshot_split) if with_fewshot else {}
    loaded = []
    for subject in wanted:
        questions = _read_csv(scored[subject], layout, subject)
        if not questions:
            raise BenchmarkFormatError(f"{scored[subject]}: no questions (only a header)")
        fewshot: list[Question] = []
        if with_fewshot:
            if subject not in fewshot_files:
                missing = root / layout.fewshot_split / layout.filename(subject, layout.fewshot_split)
                raise BenchmarkNotFoundError(f"few-shot file {missing} is missing (subject {subject!r})")
            fewshot = _read_csv(fewshot_files[subject], layout, subject)
        display, categories = subject_info(name, subject)
        loaded.append(
            Subject(
                name=subject,
                display_name=display,
                categories=categories,
                questions=tuple(questions[:limit] if limit else questions),
                fewshot=tuple(fewshot),
            )
        )
    return Benchmark(
        name=name,
        root=str(root),
        split=split,
        fewshot_split=layout.fewshot_split,
        subjects=tuple(loaded),
        subject_filter=subject_filter,
        limit=limit,
    )
