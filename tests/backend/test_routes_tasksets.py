"""backend/api/routes/tasksets.py: built-in and uploaded task sets.

Through FastAPI's TestClient over real databases (a SQLite file and Postgres)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from backend import tasksets
from backend.db.session import make_engine

from api_helpers import API, one_line, register, trace_body


def test_task_sets(client, db_url):
    listing = client.get(f"{API}/task-sets").json()
    assert listing["count"] == len(tasksets.BUILTIN_TASK_NAMES)
    assert all(r["builtin"] and not r["registered"] for r in listing["data"])
    engine = make_engine(db_url)
    with Session(engine) as s:
        tasksets.upsert_builtin_task_sets(s, [{"name": "antonyms_en", "language": "en", "num_items": 73}])
    engine.dispose()
    content = b'{"prompt": "one", "target": " two"}\n{"prompt": "three", "target": " four", "task": "sub"}\n'
    response = client.post(f"{API}/task-sets", files={"file": ("mine.jsonl", content)}, data={"name": "mine"})
    assert response.status_code == 201, response.text
    uploaded = response.json()
    assert uploaded["tasks"] == ["mine", "sub"] and uploaded["num_items"] == 2 and len(uploaded["items"]) == 2
    listing = client.get(f"{API}/task-sets").json()
    by_name = {r["name"]: r for r in listing["data"]}
    assert by_name["antonyms_en"]["registered"] and by_name["antonyms_en"]["num_items"] == 73
    assert not by_name["mine"]["builtin"] and listing["count"] == len(tasksets.BUILTIN_TASK_NAMES) + 1
    assert client.get(f"{API}/task-sets/mine").json()["id"] == uploaded["id"]
    assert client.get(f"{API}/task-sets/{uploaded['id']}").json()["items"][1]["task"] == "sub"
    assert client.get(f"{API}/task-sets/plural_en").json()["registered"] is False
    csv_content = b"prompt,target\nHello,world\n"
    assert client.post(f"{API}/task-sets", files={"file": ("c.csv", csv_content)}, data={"name": "c"}).status_code == 201
    dup = client.post(f"{API}/task-sets", files={"file": ("c.csv", csv_content)}, data={"name": "c"})
    assert dup.status_code == 409 and "already exists" in one_line(dup)
    # a trace over the uploaded set: the worker gets its name
    model = register(client)
    trace = client.post(f"{API}/traces", json=trace_body(model["id"], task_sets=["mine", "antonyms_en"],
                                                         options={"position_task": "sub"}))
    assert trace.status_code == 201, trace.text


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("bad.jsonl", b'{"prompt": "a", "target": "b"}\n{"prompt": "a"}\n', "line 2"),
        ("bad.jsonl", b"[1, 2]\n", "line 1: expected an object"),
        ("bad.csv", b"prompt,answer\na,b\n", "line 1: the CSV header needs column(s) target"),
        ("bad.txt", b"hello", ".jsonl or .csv"),
        ("empty.jsonl", b"", "no items"),
        ("deep.jsonl", b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b', "target": "x"}\n',
         "line 1: not valid JSON (nested too deeply)"),
    ],
)
def test_malformed_uploads(client, filename, content, message):
    response = client.post(f"{API}/task-sets", files={"file": (filename, content)}, data={"name": "x"})
    assert response.status_code == 422
    assert message in one_line(response)


def test_upload_name_and_size_limits(make_client):
    client = make_client(max_upload_bytes=1000)
    big = b'{"prompt": "a", "target": "b"}\n' * 100
    response = client.post(f"{API}/task-sets", files={"file": ("big.jsonl", big)}, data={"name": "big"})
    assert response.status_code == 413 and "larger than 1000 bytes" in one_line(response)
    huge = b"x" * 200_000
    response = client.post(f"{API}/task-sets", files={"file": ("huge.jsonl", huge)}, data={"name": "huge"})
    assert response.status_code == 413
    bad_name = client.post(f"{API}/task-sets", files={"file": ("a.jsonl", b'{"prompt":"a","target":"b"}')},
                           data={"name": "../etc"})
    assert bad_name.status_code == 422 and "name must be" in one_line(bad_name)

