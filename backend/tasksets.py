"""Task sets: the engine's built-in ones (registered by the worker) and uploaded JSONL/CSV files.

The backend never imports the engine, so the worker registers the built-in sets at start with
``upsert_builtin_task_sets``; until it has, the API lists ``BUILTIN_TASK_NAMES`` as placeholders.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from typing import Any, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db.models import TaskSet
from layertracer.spec.jsonlines import JsonLineError, parse_json_line
from layertracer.spec.tasks import BUILTIN_TASK_NAMES

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
ITEM_FIELDS = ("prompt", "target", "id", "task")
MAX_TEXT = 4000


class TaskSetError(ValueError):
    """An uploaded file or name is not acceptable; the message is one line naming the line at fault."""


def upsert_builtin_task_sets(session: Session, sets: list[dict[str, Any]]) -> int:
    """Register the engine's built-in task sets (the worker calls this at start; idempotent).

    sets: ``[{"name": str, "language": str?, "description": str?, "num_items": int?, "example":
    {"prompt", "target"}?}]``. Each becomes a ``task_sets`` row with ``id = name``, ``builtin = True``,
    ``tasks = [name]`` (``example`` is stored in ``description`` only if no description is given).
    Commits. Returns the number of sets written.
    """
    for entry in sets:
        name = str(entry["name"])
        row = session.get(TaskSet, name)
        if row is None:
            row = TaskSet(id=name, name=name, builtin=True)
            session.add(row)
        row.builtin = True
        row.language = entry.get("language")
        row.description = entry.get("description")
        row.num_items = int(entry.get("num_items") or 0)
        row.tasks = [name]
        row.items = None
    session.commit()
    return len(sets)


def validate_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise TaskSetError("name must be 1-100 characters: letters, digits, '_', '.', '-', starting with a letter or digit")
    return name


def _check_item(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise TaskSetError(f"{where}: expected an object with \"prompt\" and \"target\"")
    unknown = sorted(set(item) - set(ITEM_FIELDS))
    if unknown:
        raise TaskSetError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(ITEM_FIELDS)})")
    out: dict[str, Any] = {}
    for key in ("prompt", "target"):
        value = item.get(key)
        if not isinstance(value, str) or not value.strip():
            raise TaskSetError(f"{where}: \"{key}\" must be a non-empty string")
        if "\x00" in value:
            raise TaskSetError(f"{where}: \"{key}\" contains a NUL character")
        if len(value) > MAX_TEXT:
            raise TaskSetError(f"{where}: \"{key}\" is longer than {MAX_TEXT} characters")
        out[key] = value
    if item.get("id") is not None:
        if not isinstance(item["id"], (str, int)) or isinstance(item["id"], bool):
            raise TaskSetError(f"{where}: \"id\" must be a string or an integer")
        out["id"] = item["id"]
    if item.get("task") not in (None, ""):
        if not isinstance(item["task"], str) or not NAME_RE.match(item["task"]):
            raise TaskSetError(f"{where}: \"task\" must be a name of letters, digits, '_', '.', '-'")
        out["task"] = item["task"]
    return out


def parse_task_file(content: bytes, filename: str) -> list[dict[str, Any]]:
    """Validate an uploaded task file and return its items ``[{"prompt", "target", "id"?, "task"?}]``.

    ``.jsonl``: one JSON object per non-empty line. ``.csv``: a header with ``prompt`` and ``target``
    (optionally ``id``, ``task``). UTF-8 (a BOM is accepted). Raises TaskSetError naming the line.
    """
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TaskSetError(f"the file is not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        # Postgres text cannot hold NUL, and no prompt needs one.
        raise TaskSetError(f"line {text[:text.index(chr(0))].count(chr(10)) + 1}: NUL character")
    lower = (filename or "").lower()
    items: list[dict[str, Any]] = []
    if lower.endswith(".jsonl") or lower.endswith(".json"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = parse_json_line(line)
            except JsonLineError as exc:
                raise TaskSetError(f"line {number}: not valid JSON {str(exc).removeprefix('invalid JSON ')}") from None
            items.append(_check_item(item, f"line {number}"))
    elif lower.endswith(".csv"):
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            header = reader.fieldnames or []
            missing = [c for c in ("prompt", "target") if c not in header]
            if missing:
                raise TaskSetError(f"line 1: the CSV header needs column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'})")
            extra = [c for c in header if c not in ITEM_FIELDS]
            if extra:
                raise TaskSetError(f"line 1: unknown column(s) {', '.join(extra)} (allowed: {', '.join(ITEM_FIELDS)})")
            for row in reader:
                where = f"line {reader.line_num}"
                if None in row:
                    raise TaskSetError(f"{where}: more fields than the header has")
                items.append(_check_item({k: (v if v != "" else None) if k in ("id", "task") else v
                                          for k, v in row.items()}, where))
        except csv.Error as exc:
            raise TaskSetError(f"CSV error: {exc}") from None
    else:
        raise TaskSetError("the file must be .jsonl or .csv")
    if not items:
        raise TaskSetError("the file has no items")
    return items


def create_task_set(session: Session, *, name: str, items: list[dict[str, Any]], content: bytes,
                    description: Optional[str] = None) -> TaskSet:
    """Store an uploaded (validated) task set; its tasks are the items' ``task`` values, or ``name``."""
    name = validate_name(name)
    if session.execute(select(TaskSet.id).where(TaskSet.name == name)).first() or name in BUILTIN_TASK_NAMES:
        raise TaskSetError(f"a task set named {name!r} already exists")
    tasks = sorted({item.get("task") or name for item in items})
    row = TaskSet(name=name, builtin=False, description=description, tasks=tasks, num_items=len(items),
                  items=items, sha256=hashlib.sha256(content).hexdigest())
    session.add(row)
    session.commit()
    return row


def find_task_set(session: Session, ref: str) -> Optional[TaskSet]:
    """A task set by id or by name (built-in sets: both are the name)."""
    row = session.get(TaskSet, ref)
    if row is None:
        row = session.execute(select(TaskSet).where(TaskSet.name == ref)).scalar_one_or_none()
    return row


def placeholder_builtins(session: Session) -> list[dict[str, Any]]:
    """Built-in names not registered yet, as list entries (id = name, num_items unknown = 0)."""
    registered = set(session.execute(select(TaskSet.name).where(TaskSet.builtin.is_(True))).scalars())
    return [
        {"id": n, "name": n, "builtin": True, "language": None, "description": None, "tasks": [n], "num_items": 0,
         "registered": False}
        for n in BUILTIN_TASK_NAMES if n not in registered
    ]
