"""The API app as a whole (backend/api/__init__.py, deps.py): health and docs, paging, CORS, NUL
characters, 404 for unknown ids on every router.

Through FastAPI's TestClient over real databases (a SQLite file and Postgres)."""

from __future__ import annotations

from api_helpers import API, one_line


def test_health_and_docs(client):
    assert client.get(f"{API}/health").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/traces/{trace_id}/overview", "/api/v1/trials", "/api/v1/jobs/{job_id}/retry",
                 "/api/v1/shares/{share_id}", "/api/v1/task-sets"):
        assert path in paths


def test_unknown_ids_are_404(client):
    for path in ("/traces/x", "/traces/x/result", "/traces/x/overview", "/traces/x/tasks/t",
                 "/traces/x/position", "/traces/x/freeze-plan", "/traces/x/export.csv", "/experiments/x", "/experiments/x/metrics",
                 "/jobs/x", "/jobs/x/log", "/models/x", "/task-sets/x"):
        response = client.get(API + path)
        assert response.status_code == 404, path
        assert "unknown" in one_line(response)
    for path in ("/jobs/x/cancel", "/jobs/x/retry"):
        assert client.post(API + path).status_code == 404
    assert client.delete(f"{API}/shares/x").status_code == 404
    assert client.post(f"{API}/shares", json={"kind": "trace", "id": "x"}).status_code == 404


def test_paging_validation(client):
    for params in ({"limit": 0}, {"limit": 10_000}, {"offset": -1}, {"status": "bogus"}):
        response = client.get(f"{API}/traces", params=params)
        assert response.status_code == 422 and one_line(response)
    # the dashboard sends empty filters
    assert client.get(f"{API}/traces", params={"status": "", "q": "", "limit": 50, "offset": 0}).status_code == 200


def test_cors_closed_by_default(client, make_client):
    response = client.get(f"{API}/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    open_client = make_client(cors_origins=["https://team.example"])
    ok = open_client.get(f"{API}/health", headers={"Origin": "https://team.example"})
    assert ok.headers["access-control-allow-origin"] == "https://team.example"
    bad = open_client.get(f"{API}/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in bad.headers


def test_nul_characters_are_refused_everywhere(client):
    response = client.get(f"{API}/traces", params={"q": "a\x00b"})
    assert response.status_code == 400 and "NUL" in one_line(response)
    assert client.get(f"{API}/traces/ab%00cd").status_code == 400
    response = client.post(f"{API}/models", json={"source": "org/x", "name": "a\x00"})
    assert response.status_code == 422 and "NUL" in one_line(response)
    upload = client.post(f"{API}/task-sets", files={"file": ("a.jsonl", b'{"prompt": "a\\u0000", "target": "b"}\n')},
                         data={"name": "nul"})
    assert upload.status_code == 422 and "line 1: \"prompt\" contains a NUL character" in one_line(upload)
    raw = client.post(f"{API}/task-sets", files={"file": ("a.jsonl", b'{"prompt": "a", "target": "b"}\n\x00')},
                      data={"name": "nul2"})
    assert raw.status_code == 422 and "line 2: NUL character" in one_line(raw)

