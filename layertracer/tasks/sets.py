"""Task sets: the built-in bilingual tasks and user files (JSONL or CSV with ``prompt`` and ``target``).

A task is a named list of (prompt, target) items. A built-in task is a list of (input, output) facts and
a template; its prompts are few-shot: ``shots`` other facts of the same task rendered with the template,
then the item's own input, so the model has to execute the task at the answer position.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from layertracer.errors import TaskFileError
from layertracer.spec.jsonlines import JsonLineError, parse_json_line
from layertracer.spec.tasks import BUILTIN_TASKS

BUILTIN_DIR = Path(__file__).with_name("builtin")
ZH_DIGITS = "零一二三四五六七八九"


@dataclass(frozen=True)
class TaskItem:
    """One prompt and the answer it should produce (scored by the answer's first token in context)."""

    prompt: str
    target: str


@dataclass
class Task:
    """A named list of items; ``language`` is "en", "zh" or "mixed"."""

    name: str
    items: list[TaskItem]
    language: str = "mixed"
    description: str = ""
    source: str = "builtin"


def _arithmetic(chinese: bool) -> list[tuple[str, str]]:
    """All a+b and a-b over single digits whose result is a single non-negative digit (110 facts)."""
    facts = []
    for a in range(10):
        for b in range(10):
            if a + b <= 9:
                facts.append((a, "+", b, a + b))
            if a - b >= 0:
                facts.append((a, "-", b, a - b))
    if chinese:
        word = {"+": "加", "-": "减"}
        return [(f"{ZH_DIGITS[a]}{word[op]}{ZH_DIGITS[b]}", ZH_DIGITS[c]) for a, op, b, c in facts]
    return [(f"{a} {op} {b}", str(c)) for a, op, b, c in facts]


def builtin_facts(name: str) -> list[tuple[str, str]]:
    """The (input, output) facts of a built-in task."""
    spec = BUILTIN_TASKS[name]
    if spec.generator:
        return _arithmetic(chinese=spec.generator.endswith("_zh"))
    path = BUILTIN_DIR / str(spec.file)
    facts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            facts.append((record["input"], record["output"]))
    return facts


def render(template: str, source: str, answer: str) -> tuple[str, str]:
    """(prompt, target) for one fact: the template cut before ``{output}``, spaces moved to the target."""
    head, tail = template.split("{output}", 1)
    prompt = head.format(input=source)
    stripped = prompt.rstrip()
    target = prompt[len(stripped):] + answer + tail.format(input=source)
    return stripped, target


def _shots_for(facts: Sequence[tuple[str, str]], index: int, shots: int) -> list[tuple[str, str]]:
    """The next ``shots`` facts after ``index``, cyclically, skipping any that mention the item's own
    input or answer (the data holds reversed pairs such as hot/cold and cold/hot)."""
    own = set(facts[index])
    chosen: list[tuple[str, str]] = []
    if shots <= 0:
        return chosen
    for step in range(1, len(facts)):
        fact = facts[(index + step) % len(facts)]
        if own.isdisjoint(fact):
            chosen.append(fact)
            if len(chosen) == shots:
                break
    return chosen


def builtin_task(name: str, *, shots: int = 3, limit: Optional[int] = None) -> Task:
    """A built-in task with ``shots`` few-shot examples per prompt (see ``_shots_for``: an item never
    sees its own answer in its examples)."""
    if name not in BUILTIN_TASKS:
        raise TaskFileError(f"unknown built-in task {name!r}; built-in tasks: {', '.join(BUILTIN_TASKS)}")
    spec = BUILTIN_TASKS[name]
    facts = builtin_facts(name)
    count = len(facts) if limit is None else min(limit, len(facts))
    items = []
    for i in range(count):
        examples = _shots_for(facts, i, shots)
        lines = [spec.template.format(input=a, output=b) for a, b in examples]
        prompt, target = render(spec.template, *facts[i])
        items.append(TaskItem(prompt=spec.separator.join(lines + [prompt]), target=target))
    return Task(name=name, items=items, language=spec.language, description=spec.description)


def _clean(value: object, path: Path, line: int, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TaskFileError(f"{path}:{line}: {column!r} must be a non-empty string")
    return value


def load_task_file(path: str | Path, *, limit: Optional[int] = None) -> list[Task]:
    """Tasks from a JSONL (``prompt``, ``target``, optional ``task``) or CSV file with those columns.

    Items without ``task`` go to a task named after the file. Raises TaskFileError naming the file and
    line for a missing file, an empty file, bad JSON, or a missing/empty field.
    """
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"task file {str(path)!r} does not exist")
    rows: list[tuple[int, dict]] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise TaskFileError(f"{path}: not UTF-8 text") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        fields = reader.fieldnames or []
        for column in ("prompt", "target"):
            if column not in fields:
                raise TaskFileError(f"{path}:1: missing column {column!r} (columns: {', '.join(fields) or 'none'})")
        rows = [(i + 2, row) for i, row in enumerate(reader)]
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = parse_json_line(line)
            except JsonLineError as exc:
                raise TaskFileError(f"{path}:{number}: {exc}") from None
            if not isinstance(record, dict):
                raise TaskFileError(f"{path}:{number}: expected an object with 'prompt' and 'target'")
            rows.append((number, record))
    if not rows:
        raise TaskFileError(f"{path}: no items (the file is empty)")
    tasks: dict[str, Task] = {}
    for number, record in rows:
        prompt = _clean(record.get("prompt"), path, number, "prompt")
        target = _clean(record.get("target"), path, number, "target")
        name = record.get("task") or path.stem
        task = tasks.setdefault(name, Task(name=str(name), items=[], source=str(path)))
        if limit is None or len(task.items) < limit:
            task.items.append(TaskItem(prompt=prompt, target=target))
    return list(tasks.values())


def load_tasks(specs: str | Sequence[str], *, shots: int = 3, limit: Optional[int] = None) -> list[Task]:
    """Tasks from a comma-separated list (or a sequence) of built-in names, ``all``, or file paths."""
    if isinstance(specs, str):
        specs = [s.strip() for s in specs.split(",") if s.strip()]
    if not specs:
        raise TaskFileError("no tasks given")
    tasks: list[Task] = []
    for spec in specs:
        if spec == "all":
            tasks.extend(builtin_task(n, shots=shots, limit=limit) for n in BUILTIN_TASKS)
        elif spec in BUILTIN_TASKS:
            tasks.append(builtin_task(spec, shots=shots, limit=limit))
        elif Path(spec).suffix.lower() in {".jsonl", ".json", ".csv"} or Path(spec).exists():
            tasks.extend(load_task_file(spec, limit=limit))
        else:
            raise TaskFileError(
                f"{spec!r} is neither a task file nor a built-in task ({', '.join(BUILTIN_TASKS)}, all)"
            )
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TaskFileError(f"task name given twice: {', '.join(duplicates)}")
    return tasks


def iter_texts(tasks: Iterable[Task]) -> Iterable[str]:
    """Every prompt+target text of the tasks (used to train demo tokenizers and corpora)."""
    for task in tasks:
        for item in task.items:
            yield item.prompt + item.target
