"""Task sets: the built-in ones (registered by the worker) and uploaded JSONL/CSV files."""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from sqlalchemy import or_, select

from backend import tasksets
from backend.api.deps import PagingDep, SessionDep, SettingsDep
from backend.api.schemas import TaskSetDetail, TaskSetsPublic
from backend.db.models import TaskSet

router = APIRouter(prefix="/task-sets", tags=["task sets"])


def task_set_public(row: TaskSet, items: bool = False) -> dict:
    out = {"id": row.id, "name": row.name, "builtin": row.builtin, "language": row.language,
           "description": row.description, "tasks": list(row.tasks or []), "num_items": row.num_items,
           "registered": True, "created_at": row.created_at}
    if items:
        out["items"] = row.items
    return out


@router.get("", response_model=TaskSetsPublic)
def list_task_sets(session: SessionDep, paging: PagingDep):
    """Built-in (first, with placeholders for those the worker has not registered yet) and uploaded sets."""
    query = select(TaskSet)
    if paging.q:
        like = f"%{paging.q}%"
        query = query.where(or_(TaskSet.name.ilike(like), TaskSet.description.ilike(like)))
    rows = [task_set_public(r) for r in session.execute(
        query.order_by(TaskSet.builtin.desc(), TaskSet.name)).scalars()]
    placeholders = [p for p in tasksets.placeholder_builtins(session) if not paging.q or paging.q.lower() in p["name"].lower()]
    data = placeholders + rows
    data.sort(key=lambda r: (not r["builtin"], r["name"]))
    return {"data": data[paging.offset:paging.offset + paging.limit], "count": len(data)}


@router.post("", response_model=TaskSetDetail, status_code=201)
async def upload_task_set(
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description=".jsonl lines {prompt, target, id?, task?} or .csv with prompt,target")],
    name: Annotated[str, Form(max_length=100)],
    description: Annotated[Optional[str], Form(max_length=2000)] = None,
):
    """Upload a task file; it is validated line by line (the error names the line)."""
    if description and "\x00" in description:
        raise HTTPException(422, "description must not contain NUL characters")
    content = await file.read(settings.max_upload_bytes + 1)
    if len(content) > settings.max_upload_bytes:
        raise HTTPException(413, f"the file is larger than {settings.max_upload_bytes} bytes")
    try:
        items = tasksets.parse_task_file(content, file.filename or "")
        row = tasksets.create_task_set(session, name=name, items=items, content=content, description=description)
    except tasksets.TaskSetError as exc:
        session.rollback()
        status = 409 if "already exists" in str(exc) else 422
        raise HTTPException(status, f"{file.filename or 'upload'}: {exc}") from None
    return task_set_public(row, items=True)


@router.get("/{task_set_id}", response_model=TaskSetDetail)
def get_task_set(task_set_id: str, session: SessionDep):
    """One task set by id or name, with its items for uploaded sets."""
    row = tasksets.find_task_set(session, task_set_id)
    if row is None:
        for placeholder in tasksets.placeholder_builtins(session):
            if placeholder["id"] == task_set_id:
                return placeholder
        raise HTTPException(404, f"unknown task set {task_set_id!r}")
    return task_set_public(row, items=True)
