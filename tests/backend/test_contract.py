"""What the OpenAPI document promises, checked on the app itself: one error body for every status,
security schemes in token mode only, 405 for a method a path does not take, and an Idempotency-Key
that names one request."""

from __future__ import annotations

import pytest

from api_helpers import API, register, trace_body

SECRET = "a-real-secret-key-for-the-tests-0123456789"


def _operations(schema: dict):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def test_every_operation_documents_its_errors_with_the_one_error_body(client):
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]  # FastAPI's array body is not what we send
    checked = 0
    for path, method, operation in _operations(schema):
        if path.endswith("/health"):
            continue
        for status in ("400", "403", "404", "409", "413", "422"):
            body = operation["responses"][status]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
        checked += 1
    assert checked >= 25
    # and the bodies really have that shape: a validation error is one line under "detail"
    response = client.post(f"{API}/models", json={"source": 3})
    assert response.status_code == 422 and set(response.json()) == {"detail"} and isinstance(response.json()["detail"], str)


def test_security_schemes_in_token_mode_only(make_client):
    local = make_client().get("/openapi.json").json()
    assert "securitySchemes" not in local.get("components", {})
    assert all("security" not in op and "401" not in op["responses"] for _, _, op in _operations(local))
    token = make_client(auth="token", secret_key=SECRET).get("/openapi.json").json()
    schemes = token["components"]["securitySchemes"]
    assert schemes["token"] == {"type": "http", "scheme": "bearer", "description": schemes["token"]["description"]}
    assert {schemes["share-header"]["in"], schemes["share-query"]["in"]} == {"header", "query"}
    models = token["paths"]["/api/v1/models"]["get"]
    assert {"token": []} in models["security"] and "401" in models["responses"]
    assert "security" not in token["paths"]["/api/v1/health"]["get"]


def test_a_method_a_path_does_not_take_is_405_with_allow(db_url, tmp_path, roots):
    """The one-port app (API and dashboard): its catch-all must not turn a wrong method into 404, and
    OPTIONS on an API path is the API's answer, not a dashboard page."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from backend.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", database_url=db_url, model_roots=[roots]))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        for method, path, allow in [("PUT", "/api/v1/models", "GET, POST"), ("PUT", "/api/v1/traces/abc", "GET, PATCH"),
                                    ("OPTIONS", "/api/v1/models", "GET, POST"), ("DELETE", "/api/v1/health", "GET")]:
            response = client.request(method, path)
            assert response.status_code == 405, (method, path, response.text)
            assert response.headers["allow"] == allow and "is not allowed" in response.json()["detail"]
        assert client.put("/api/v1/no-such-thing").status_code == 404
        assert client.get("/api/v1/health").status_code == 200
    app.state.engine.dispose()


def test_an_idempotency_key_names_one_request(client):
    model = register(client)
    first = client.post(f"{API}/traces", json=trace_body(model["id"]), headers={"Idempotency-Key": "k1"})
    again = client.post(f"{API}/traces", json=trace_body(model["id"]), headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = client.post(f"{API}/traces", json=trace_body(model["id"], task_sets=["plural_en"]),
                        headers={"Idempotency-Key": "k1"})
    assert other.status_code == 422 and "used before with another request body" in other.json()["detail"]
    assert client.get(f"{API}/traces").json()["count"] == 1


@pytest.mark.parametrize("value", [0, 1, "true"])
def test_booleans_are_booleans(client, value):
    response = client.post(f"{API}/models", json={"source": "models/tiny", "trust_remote_code": value})
    assert response.status_code == 422 and "trust_remote_code" in response.json()["detail"]
