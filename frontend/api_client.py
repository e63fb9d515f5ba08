"""The dashboard's only way to the data: HTTP calls to the LayerTracer API (``/api/v1``).

``ApiClient(base_url, token=None, share=None)`` wraps httpx. Every call returns parsed JSON or raises
:class:`ApiError` with one line a person can read: the API's ``{"detail": ...}`` for a 4xx/5xx, or a
sentence saying the API could not be reached. Pages show that line as it is.

Finished trace results (and their overview and tasks) never change, so their JSON is memoised per (API,
path, credentials) in a small cache bounded by count and size (the memoisation pattern Dash recommends for sharing data between callbacks): the
callbacks of one trace page then fetch the result once, not once per figure. Nothing else is cached.
"""

from __future__ import annotations

import threading
from urllib.parse import quote
from collections import OrderedDict
from typing import Any, Optional

import httpx

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class ApiError(Exception):
    """A failed API call: ``message`` is one line for the page; ``status`` the HTTP status (None if unreachable)."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


class ResultCache:
    """A thread-safe LRU of immutable JSON documents (finished trace results), bounded by count and by
    the JSON bytes they came from (parsed, a document takes several times its JSON size in memory)."""

    def __init__(self, size: int = 32, max_bytes: int = 64 * 2**20) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._data: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._fetching: dict[tuple, threading.Lock] = {}

    def get(self, key: tuple) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key][0]
        return None

    def put(self, key: tuple, value: Any, nbytes: int = 0) -> None:
        """Keep ``value`` (its JSON was ``nbytes`` long); the least recently used go first. The newest
        is always kept, even alone over the byte bound."""
        with self._lock:
            if key in self._data:
                self._bytes -= self._data.pop(key)[1]
            self._data[key] = (value, nbytes)
            self._bytes += nbytes
            while len(self._data) > 1 and (len(self._data) > self.size or self._bytes > self.max_bytes):
                _, (_, dropped) = self._data.popitem(last=False)
                self._bytes -= dropped

    def lock_for(self, key: tuple) -> threading.Lock:
        with self._lock:
            lock = self._fetching.get(key)
            if lock is None:
                if len(self._fetching) > 4 * self.size:
                    self._fetching = {k: v for k, v in self._fetching.items() if v.locked()}
                lock = self._fetching[key] = threading.Lock()
            return lock

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


RESULT_CACHE = ResultCache()

_CLIENTS: dict[str, httpx.Client] = {}
_CLIENTS_LOCK = threading.Lock()


def _http(base_url: str) -> httpx.Client:
    """One pooled httpx client per API base URL (connection reuse; httpx clients are thread-safe)."""
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(base_url)
        if client is None:
            client = httpx.Client(base_url=base_url, timeout=DEFAULT_TIMEOUT)
            _CLIENTS[base_url] = client
        return client


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI validation errors: a list of {loc, msg}
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        detail = "; ".join(parts)
    if not detail:
        text = response.text.strip().splitlines()
        detail = text[0][:200] if text and not text[0].lstrip().startswith("<") else response.reason_phrase
    return f"{detail} (HTTP {response.status_code})"


class ApiClient:
    """Calls to ``{base_url}/api/v1``.

    token: an API token, sent as ``Authorization: Bearer``. share: a share-link token, sent as the
    ``share`` query parameter on reads (it grants read access to one resource).
    """

    def __init__(self, base_url: str, token: Optional[str] = None, share: Optional[str] = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token or None
        self.share = share or None

    # -- plumbing -------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _params(self, params: Optional[dict], read: bool) -> dict:
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        if read and self.share:
            clean["share"] = self.share
        return clean

    def request(self, method: str, path: str, *, params: Optional[dict] = None, json: Any = None,
                files: Any = None, data: Any = None) -> Any:
        return self._request(method, path, params=params, json=json, files=files, data=data)[0]

    def _request(self, method: str, path: str, *, params: Optional[dict] = None, json: Any = None,
                 files: Any = None, data: Any = None) -> tuple[Any, int]:
        """(the parsed JSON, the response's length in bytes)."""
        read = method.upper() == "GET"
        try:
            response = _http(self.base_url).request(
                method, API_PREFIX + path, params=self._params(params, read), json=json, files=files, data=data,
                headers=self._headers(),
            )
        except httpx.HTTPError as exc:
            raise ApiError(f"The API at {self.base_url} could not be reached ({type(exc).__name__}: {exc}).") from None
        if response.status_code >= 400:
            raise ApiError(_detail(response), response.status_code)
        if response.status_code == 204 or not response.content:
            return None, 0
        try:
            return response.json(), len(response.content)
        except ValueError:
            raise ApiError(f"The API answered {path} with something that is not JSON.", response.status_code) from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    # -- resources ------------------------------------------------------------------------------
    def traces(self, *, status: str = "", q: str = "", limit: int = 50, offset: int = 0) -> dict:
        return self.get("/traces", status=status, q=q, limit=limit, offset=offset)

    def experiments(self, *, status: str = "", q: str = "", limit: int = 50, offset: int = 0) -> dict:
        return self.get("/experiments", status=status, q=q, limit=limit, offset=offset)

    def trace(self, trace_id: str) -> dict:
        return self.get(f"/traces/{trace_id}")

    def _immutable(self, path: str) -> Any:
        """GET ``path`` (a finished trace's result or part of it: it never changes), memoised."""
        key = (self.base_url, path, self.token, self.share)
        cached = RESULT_CACHE.get(key)
        if cached is not None:
            return cached
        # One fetch per key at a time: the callbacks a view change fires run concurrently, and a cold
        # result can be tens of MB; the others wait for the first and read the cache.
        with RESULT_CACHE.lock_for(key):
            cached = RESULT_CACHE.get(key)
            if cached is not None:
                return cached
            value, nbytes = self._request("GET", path)
            RESULT_CACHE.put(key, value, nbytes)
            return value

    def trace_overview(self, trace_id: str) -> dict:
        """The result without per-prompt arrays (docs/schemas.md, "The trace overview"; memoised)."""
        return self._immutable(f"/traces/{trace_id}/overview")

    def trace_task(self, trace_id: str, task: str) -> dict:
        """One task of a finished trace, as in the result (every per-prompt array; memoised)."""
        return self._immutable(f"/traces/{trace_id}/tasks/{quote(task, safe='')}")

    def submit_lens(self, trace_id: str, prompt: str, target: Optional[str] = None, lens: str = "logit") -> dict:
        """Queue the live lens (``lens``: logit | tuned) of ``prompt`` on the trace's model: {job, trace_id, result: None}."""
        body: dict[str, Any] = {"prompt": prompt, "lens": lens}
        if target:
            body["target"] = target
        return self.post(f"/traces/{trace_id}/lens", body)

    def lens(self, trace_id: str, job_id: str) -> dict:
        """A live-lens job of the trace: {job, trace_id, result} (result once it has succeeded)."""
        return self.get(f"/traces/{trace_id}/lens/{job_id}")

    def trace_runs(self, trace_id: str) -> dict:
        """The trials and experiments launched from the trace: {data: [{id, kind, name, status, ...}], count}."""
        return self.get(f"/traces/{trace_id}/runs")

    def models(self) -> dict:
        return self.get("/models")

    def model(self, model_id: str) -> dict:
        return self.get(f"/models/{model_id}")

    def add_model(self, source: str, name: Optional[str] = None) -> dict:
        body: dict[str, Any] = {"source": source}
        if name:
            body["name"] = name
        return self.post("/models", body)

    def task_sets(self) -> dict:
        return self.get("/task-sets")

    def upload_task_set(self, filename: str, content: bytes, name: str) -> dict:
        return self.request("POST", "/task-sets", files={"file": (filename, content)}, data={"name": name})

    def create_trace(self, body: dict) -> dict:
        return self.post("/traces", body)

    def create_trial(self, body: dict) -> dict:
        return self.post("/trials", body)

    def create_experiment(self, body: dict) -> dict:
        return self.post("/experiments", body)

    def experiment(self, experiment_id: str) -> dict:
        return self.get(f"/experiments/{experiment_id}")

    def update_run(self, kind: str, run_id: str, body: dict) -> dict:
        """PATCH a trace (``kind`` "trace") or trial / experiment: its name, tags or notes."""
        return self.request("PATCH", f"/{'traces' if kind == 'trace' else 'experiments'}/{run_id}", json=body)

    def experiment_metrics(self, experiment_id: str) -> dict:
        return self.get(f"/experiments/{experiment_id}/metrics")

    def job(self, job_id: str) -> dict:
        return self.get(f"/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict:
        return self.post(f"/jobs/{job_id}/cancel")

    def create_share(self, kind: str, resource_id: str, expires_in_seconds: Optional[int] = None) -> dict:
        body: dict[str, Any] = {"kind": kind, "id": resource_id}
        if expires_in_seconds:
            body["expires_in_seconds"] = expires_in_seconds
        return self.post("/shares", body)
