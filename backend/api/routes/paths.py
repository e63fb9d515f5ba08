"""Paths on the server, for the forms: whether a corpus, a benchmark folder or an lm-eval task file
exists under the allowed roots (``LAYERTRACER_MODEL_ROOTS``, the roots that confine model paths), and
what a folder there holds, so that a form can browse the roots instead of taking free text.

The same confinement as every path a job gets (``backend.security.confine_path``: resolved, symlinks
followed, ``..`` refused): a path outside the roots is a 400 with one line, as ``POST /trials`` would
answer. Reading needs what any read needs (an API token in token mode; a share link is not enough).
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from backend.api.data_paths import resolve_benchmark, resolve_corpus
from backend.api.deps import NO_NUL, SessionDep, SettingsDep
from backend.api.resources import get_or_404
from backend.db.models import Experiment, RegisteredPath
from backend.security import PathError, confine_path
from layertracer.spec.benchmarks import BENCHMARK_KINDS, LM_EVAL, BenchmarkSpecError, check_benchmark, is_task_file
from layertracer.spec.corpora import is_hub_dataset

router = APIRouter(prefix="/paths", tags=["paths"])

MAX_ENTRIES = 500
# kind -> (what the path must be: "dir", "file" or None for either; the word in messages)
KINDS = {"any": (None, "path"), "corpus": (None, "corpus"), "benchmark": ("dir", "benchmark folder"),
         "task-file": ("file", "lm-eval task file")}


class PathEntry(BaseModel):
    name: str
    path: str
    is_dir: bool
    size: Optional[int] = None


class PathInfo(BaseModel):
    path: str
    resolved: Optional[str] = None
    exists: bool
    is_dir: bool = False
    size: Optional[int] = None
    ok: bool
    problem: Optional[str] = None
    roots: list[str]
    entries: list[PathEntry] = []
    truncated: bool = False


class UsedPath(BaseModel):
    kind: str
    path: str
    exists: Optional[bool] = None
    last_used: Optional[str] = None


class UsedPaths(BaseModel):
    corpora: list[UsedPath]
    benchmarks: list[UsedPath]


# How far back "used before" looks (the newest runs first).
USED_RUNS = 500


def _stat(path: Path) -> tuple[bool, bool, Optional[int]]:
    """(exists, is a folder, a file's size); a path the service may not read counts as not there."""
    try:
        info = path.stat()
    except (OSError, ValueError):
        return False, False, None
    is_dir = stat.S_ISDIR(info.st_mode)
    return True, is_dir, None if is_dir else info.st_size


def _entries(folder: Path) -> tuple[list[dict], bool]:
    """A folder's visible children (hidden names left out), folders first, at most MAX_ENTRIES."""
    try:
        names = [c for c in folder.iterdir() if not c.name.startswith(".")]
    except OSError:
        return [], False
    children = sorted(((c, *_stat(c)) for c in names), key=lambda t: (not t[2], t[0].name.lower()))
    out = [{"name": c.name, "path": str(c), "is_dir": is_dir, "size": size}
           for c, _, is_dir, size in children[:MAX_ENTRIES]]
    return out, len(children) > MAX_ENTRIES


@router.get("", response_model=PathInfo)
def check_path(settings: SettingsDep,
               path: Annotated[str, Query(max_length=1000, description="a path (absolute, or relative to a root); "
                                          "empty: the roots themselves", json_schema_extra={"pattern": NO_NUL})] = "",
               kind: Annotated[Literal["any", "corpus", "benchmark", "task-file"],
                               Query(description="what the path is for: benchmark needs a folder, task-file a file")] = "any"):
    """Whether ``path`` exists under the allowed roots and fits ``kind`` (``ok``, else ``problem`` in
    one line), and a folder's entries; 400 for a path outside the roots."""
    roots = [str(r) for r in settings.model_roots]
    if not path.strip():
        entries = [{"name": r, "path": r, "is_dir": True, "size": None} for r in roots]
        return {"path": "", "exists": True, "is_dir": True, "ok": True, "roots": roots, "entries": entries}
    want, what = KINDS[kind]
    try:
        resolved = confine_path(path, settings.model_roots, what, must_exist=False)
    except PathError as exc:
        raise HTTPException(400, str(exc)) from None
    exists, is_dir, size = _stat(resolved)
    problem = None
    if not exists:
        problem = f"{what} {path.strip()!r} does not exist"
    elif want == "dir" and not is_dir:
        problem = f"{what} {path.strip()!r} is not a folder"
    elif want == "file" and is_dir:
        problem = f"{what} {path.strip()!r} is not a file"
    entries, truncated = _entries(resolved) if is_dir else ([], False)
    return {"path": path, "resolved": str(resolved), "exists": exists, "is_dir": is_dir, "size": size, "ok": problem is None,
            "problem": problem, "roots": roots, "entries": entries, "truncated": truncated}


def _still_there(settings, path: str, what: str) -> Optional[bool]:
    try:
        return _stat(confine_path(path, settings.model_roots, what, must_exist=False))[0]
    except PathError:
        return False  # the roots changed since: not usable now


@router.get("/used", response_model=UsedPaths)
def used_paths(session: SessionDep, settings: SettingsDep):
    """The corpora and benchmarks of this service's trials and experiments (the latest 500 runs), newest
    first and each once, with whether each is still there under the roots (``exists``; null for an
    lm-eval task known by name): what the forms offer as "used before", like registered models."""
    rows = session.execute(select(Experiment.spec, Experiment.created_at)
                           .order_by(Experiment.created_at.desc()).limit(USED_RUNS)).all()
    corpora: dict[str, dict] = {}
    benchmarks: dict[str, dict] = {}
    for spec, created in rows:
        spec = spec or {}
        when = created.isoformat() if created else None
        corpus = spec.get("corpus")
        if isinstance(corpus, str) and corpus and corpus not in corpora:
            corpora[corpus] = {"kind": "corpus", "path": corpus, "exists": _still_there(settings, corpus, "corpus"),
                               "last_used": when}
        for entry in spec.get("benchmarks") or []:
            if not isinstance(entry, str) or entry in benchmarks:
                continue
            try:
                name, value = check_benchmark(entry)
            except BenchmarkSpecError:
                continue
            named_task = name == LM_EVAL and not is_task_file(value)
            benchmarks[entry] = {"kind": name, "path": value, "last_used": when,
                                 "exists": None if named_task else _still_there(settings, value, "benchmark")}
    return {"corpora": list(corpora.values()), "benchmarks": list(benchmarks.values())}


# -- the register: corpora and benchmarks by name, as models are registered -------------------------------
CORPUS = "corpus"
RegisteredKind = Literal[(CORPUS, *BENCHMARK_KINDS)]


class PathRegister(BaseModel):
    kind: RegisteredKind = Field(description="corpus, or a benchmark kind (ceval, cmmlu, lm-eval)")
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL, description="what the forms show")
    path: str = Field(min_length=1, max_length=1000, pattern=NO_NUL,
                      description="under the allowed roots; a corpus may be hf:org/name[@rev][:split], "
                                  "an lm-eval benchmark a task name")


class RegisteredPathPublic(BaseModel):
    id: str
    kind: str
    name: str
    path: str
    exists: Optional[bool] = None
    created_at: Optional[str] = None


class RegisteredPaths(BaseModel):
    data: list[RegisteredPathPublic]


def _registered_public(row: RegisteredPath, settings) -> dict:
    # No path to look at: a hub dataset (read through the worker's HF cache), an lm-eval task by name.
    hub_or_task = (row.kind == CORPUS and is_hub_dataset(row.path)) or (row.kind == LM_EVAL and not is_task_file(row.path))
    return {"id": row.id, "kind": row.kind, "name": row.name, "path": row.path,
            "exists": None if hub_or_task else _still_there(settings, row.path, row.kind),
            "created_at": row.created_at.isoformat() if row.created_at else None}


@router.post("/registered", response_model=RegisteredPathPublic, status_code=201,
             responses={200: {"model": RegisteredPathPublic, "description": "the entry existed already (same kind and path)"}})
def register_path(body: PathRegister, session: SessionDep, settings: SettingsDep, response: Response):
    """Register a corpus or a benchmark by name (a write): its path is checked and confined as ``POST
    /trials`` checks it (a 400 outside the roots or missing, a 422 when malformed). The same kind and
    path again renames the entry and answers 200."""
    if body.kind == CORPUS:
        path = resolve_corpus(settings, body.path.strip())
    else:
        path = resolve_benchmark(settings, f"{body.kind}:{body.path.strip()}").split(":", 1)[1]
    row = session.execute(select(RegisteredPath).where(RegisteredPath.kind == body.kind,
                                                       RegisteredPath.path == path)).scalar_one_or_none()
    if row is None:
        row = RegisteredPath(kind=body.kind, name=body.name.strip(), path=path)
        session.add(row)
    else:
        row.name, response.status_code = body.name.strip(), 200
    session.commit()
    return _registered_public(row, settings)


@router.get("/registered", response_model=RegisteredPaths)
def list_registered(session: SessionDep, settings: SettingsDep,
                    kind: Annotated[Optional[RegisteredKind], Query(description="only this kind")] = None):
    """The registered corpora and benchmarks, by kind and name, with whether each is still there."""
    query = select(RegisteredPath).order_by(RegisteredPath.kind, RegisteredPath.name, RegisteredPath.id)
    if kind is not None:
        query = query.where(RegisteredPath.kind == kind)
    return {"data": [_registered_public(row, settings) for row in session.execute(query).scalars()]}


@router.delete("/registered/{entry_id}", status_code=204)
def unregister_path(entry_id: str, session: SessionDep):
    """Take an entry off the register (a write); the files are not touched."""
    row = get_or_404(session, RegisteredPath, entry_id, "registered path")
    session.delete(row)
    session.commit()
    return Response(status_code=204)
