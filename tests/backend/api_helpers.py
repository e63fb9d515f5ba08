"""Helpers of the API tests (one test file per router: test_routes_<router>.py)."""

from __future__ import annotations

API = "/api/v1"


def one_line(response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail


def register(client, source="models/tiny", **extra):
    response = client.post(f"{API}/models", json={"source": source, **extra})
    assert response.status_code in (200, 201), response.text
    return response.json()


def queued_messages(tmp_path) -> list[str]:
    folder = tmp_path / "data" / "broker" / "queue"
    return sorted(p.name for p in folder.glob("*.msg")) if folder.exists() else []


def trace_body(model_id, **extra):
    body = {"model_id": model_id, "task_sets": ["antonyms_en"], "perturbations": ["skip", "mask:keep=0.5,draws=3"],
            "options": {"limit": 5, "batch_size": 4, "seed": 3}}
    body.update(extra)
    return body


def experiment_body(model_id, **extra):
    body = {"model_id": model_id, "corpus": "corpus.txt", "allocations": ["train-shallow", "0-1,3"],
            "seeds": [1, 2], "benchmarks": ["cmmlu:bench/cmmlu"], "steps": 10}
    body.update(extra)
    return body

