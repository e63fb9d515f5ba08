"""Small UI pieces shared by the pages: the API client of a request, error / empty / loading boxes,
progress bars, tables, figure cards with their export buttons, URL query helpers."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, Iterable, Optional, Sequence
from urllib.parse import parse_qs, urlencode

import dash
from dash import dcc, html

from frontend.api_client import ApiClient
from frontend.viz.common import graph_config
from frontend.viz.names import duration
from layertracer.spec.progress import ProgressReading, ProgressTracker

DEFAULT_API_URL = "http://127.0.0.1:8000"


# -- the API --------------------------------------------------------------------------------------

def api_url() -> str:
    """The API base URL of the app serving this request (set by ``create_dash``)."""
    try:
        return getattr(dash.get_app(), "layertracer_api_url", DEFAULT_API_URL)
    except Exception:  # no app (a notebook or a unit test calling a layout directly)
        return DEFAULT_API_URL


def rel(path: str) -> str:
    """``path`` under the app's mount prefix (unchanged outside an app)."""
    try:
        return dash.get_relative_path(path)
    except Exception:
        return path


def client(token: Optional[str] = None, share: Optional[str] = None) -> ApiClient:
    return ApiClient(api_url(), token=token or None, share=share or None)


# -- URL query ------------------------------------------------------------------------------------

def parse_search(search: Optional[str]) -> dict[str, str]:
    """``?a=1&b=x`` -> {"a": "1", "b": "x"} (last value wins)."""
    if not search:
        return {}
    parsed = parse_qs(search.lstrip("?"), keep_blank_values=False)
    return {k: v[-1] for k, v in parsed.items()}


def build_search(params: dict[str, Any]) -> str:
    """{"a": 1, "b": None} -> ``?a=1`` (None, "" and False dropped; True -> 1; lists joined by commas)."""
    clean = {}
    for key, value in params.items():
        if value is None or value == "" or value is False or value == []:
            continue
        if value is True:
            value = "1"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        clean[key] = str(value)
    return "?" + urlencode(clean, safe=",:-") if clean else ""


def parse_window(text: Optional[str], num_layers: int) -> Optional[list[int]]:
    """``"3-10"`` -> [3, 10] clipped to the model; None when absent or malformed."""
    if not text:
        return None
    try:
        lo, _, hi = str(text).partition("-")
        lo_i, hi_i = int(lo), int(hi or lo)
    except ValueError:
        return None
    lo_i, hi_i = max(0, min(lo_i, num_layers - 1)), max(0, min(hi_i, num_layers - 1))
    return [min(lo_i, hi_i), max(lo_i, hi_i)]


def truthy(value: Any) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


# -- boxes ----------------------------------------------------------------------------------------

def error_box(message: str, *, title: str = "Something went wrong", id: Optional[str] = None) -> html.Div:
    kwargs = {"id": id} if id else {}
    return html.Div([html.Strong(title + ": "), html.Span(message)], className="lt-error", role="alert", **kwargs)


def api_error_box(exc, *, title: str = "Something went wrong") -> html.Div:
    """An API error as the page shows it: the API's own line, and for 401/403 where a token goes."""
    box = error_box(exc.message, title=title)
    if getattr(exc, "status", None) in (401, 403):
        box.children.append(html.Div("Paste an API token under “API token” (top right), or open a share link.",
                                     className="lt-hint"))
    return box


def empty_box(message: str) -> html.Div:
    return html.Div(message, className="lt-empty")


def notice(message: str) -> html.Div:
    return html.Div(message, className="lt-notice", role="status")


STATUS_CLASS = {"queued": "queued", "running": "running", "stalled": "bad", "succeeded": "ok", "failed": "bad",
                "cancelled": "muted"}
# Statuses whose pages keep polling: "stalled" is a running job that missed two heartbeats (the API
# says so) and becomes queued again when the reaper frees it.
LIVE_STATUSES = ("queued", "running", "stalled")


def status_badge(status: Optional[str]) -> html.Span:
    status = status or "unknown"
    return html.Span(status, className=f"lt-badge lt-badge-{STATUS_CLASS.get(status, 'muted')}")


class JobRates:
    """A ``ProgressTracker`` per job, fed at each poll of a page: the time left is the rate measured over
    the dashboard's own recent polls (the spec's rule, ``layertracer.spec.progress``), not the job's
    average since it started. Bounded (the oldest job is dropped); ``clock`` is injected for tests."""

    def __init__(self, clock=time.monotonic, size: int = 256) -> None:
        self.clock, self.size = clock, size
        self.trackers: "OrderedDict[str, ProgressTracker]" = OrderedDict()
        self.lock = threading.Lock()

    def reading(self, job: dict) -> ProgressReading:
        """The reading of ``job``'s latest progress. A run in parts (its progress names ``index`` /
        ``count``) has its own share done (``percent``) beside the stage's count; any other job's share
        is the count's own."""
        progress = job.get("progress") or {}
        of_run = progress.get("count") is not None or progress.get("index") is not None
        done, total = progress.get("done") or 0, progress.get("total") or 0
        percent = progress.get("percent")
        fraction = (percent or 0.0) / 100.0 if of_run or not total else None
        event = SimpleNamespace(stage=progress.get("stage") or "", done=done, total=total, fraction=fraction)
        key = str(job.get("id") or "")
        with self.lock:
            tracker = self.trackers.pop(key, None) or ProgressTracker(self.clock)
            self.trackers[key] = tracker
            while len(self.trackers) > self.size:
                self.trackers.popitem(last=False)
            reading = tracker.update(event)
        return replace(reading, of_run=of_run)  # a share without a count is no count's own either


JOB_RATES = JobRates()


def progress_bar(job: Optional[dict], *, id: Optional[str] = None, rates: Optional[JobRates] = None) -> html.Div:
    """Status, stage, a progress bar and the time left of a job (``job.progress``): one percentage from
    one count ("34% (24/70)"; a run in parts: "41% of the run · 24/70 in this stage") and the time left
    at the rate measured across polls."""
    job = job or {}
    progress = job.get("progress") or {}
    reading = (rates or JOB_RATES).reading(job)
    succeeded = job.get("status") == "succeeded"
    percent = 100 if succeeded else (reading.percent or 0)
    parts = [status_badge(job.get("status"))]
    if progress.get("stage"):
        parts.append(html.Span(f" {progress['stage']}", className="lt-stage"))
    width = 100.0 if succeeded else 100.0 * (reading.fraction or 0.0)
    bar = html.Div(html.Div(style={"width": f"{max(0.0, min(width, 100.0)):.1f}%"}, className="lt-bar-fill"),
                   className="lt-bar", role="progressbar", **{"aria-valuenow": str(percent),
                                                              "aria-valuemin": "0", "aria-valuemax": "100"})
    text = f"{percent}%"
    count = f"{_count(progress.get('done') or 0)}/{_count(progress['total'])}" if progress.get("total") else ""
    if reading.of_run:
        text += " of the run" + (f" · {count} in this stage" if count else "")
    elif count:
        text += f" ({count})"
    if reading.eta_seconds is not None and job.get("status") == "running":
        text += f" · about {duration(reading.eta_seconds)} left"
    kwargs = {"id": id} if id else {}
    children = [html.Div(parts), bar, html.Div(text, className="lt-bar-text")]
    if job.get("error"):
        children.append(error_box(str(job["error"]), title="Job failed"))
    return html.Div(children, className="lt-progress", **kwargs)


def _count(value) -> str:
    value = float(value)
    return str(int(value)) if value == int(value) else f"{value:.1f}"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, id: Optional[str] = None, caption: Optional[str] = None) -> html.Table:
    kwargs = {"id": id} if id else {}
    body = [html.Tr([html.Td(c) for c in row]) for row in rows]
    parts = []
    if caption:
        parts.append(html.Caption(caption))
    parts += [html.Thead(html.Tr([html.Th(h, scope="col") for h in header])), html.Tbody(body)]
    return html.Table(parts, className="lt-table", **kwargs)


# -- figures with exports -------------------------------------------------------------------------

def figure_card(graph_id: str, figure, *, page: str, what: str, note: Optional[str] = None,
                data_formats: Sequence[str] = ("csv", "json")) -> html.Div:
    """A figure with its export row: PNG (modebar and button), SVG (button), the data as CSV / JSON
    (buttons feeding the page's dcc.Download, pattern id ``{"type": f"{page}-dl", "what": what, "fmt": ...}``)."""
    buttons = [
        html.Button("PNG", id={"type": "img-export", "graph": graph_id, "fmt": "png"}, className="lt-small",
                    title="Download the figure as PNG"),
        html.Button("SVG", id={"type": "img-export", "graph": graph_id, "fmt": "svg"}, className="lt-small",
                    title="Download the figure as SVG"),
    ]
    for fmt in data_formats:
        buttons.append(html.Button(fmt.upper(), id={"type": f"{page}-dl", "what": what, "fmt": fmt}, className="lt-small",
                                   title=f"Download the data behind this figure as {fmt.upper()}"))
    children = [
        dcc.Loading(dcc.Graph(id=graph_id, figure=figure, config=graph_config(graph_id)), type="dot", delay_show=300),
        html.Div([html.Span("Export: ", className="lt-muted")] + buttons, className="lt-export"),
    ]
    if note:
        children.insert(1, html.P(note, className="lt-note"))
    return html.Div(children, className="lt-card")


def to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def to_json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=1)


def share_bar(prefix: str) -> html.Div:
    """A Share button, the link it makes (read-only with auth on) and a copy-to-clipboard icon."""
    return html.Div([
        html.Button("Share", id=f"{prefix}-share-btn", className="lt-button",
                    title="Make a link to exactly this view (read-only when the API uses tokens)"),
        html.Label("Link to this view", htmlFor=f"{prefix}-share-url", className="lt-sr-only"),
        dcc.Input(id=f"{prefix}-share-url", readOnly=True, value="", className="lt-share-url",
                  placeholder="the link to this view appears here"),
        dcc.Clipboard(target_id=f"{prefix}-share-url", title="Copy the link", className="lt-clip"),
        html.Span(id=f"{prefix}-share-msg", className="lt-muted"),
    ], className="lt-share")


def share_link(origin_href: Optional[str], pathname: str, search: Optional[str], share_token: Optional[str] = None) -> str:
    """The absolute URL of a view, with ``share=TOKEN`` set when a read-only token is given."""
    origin = ""
    if origin_href and "://" in origin_href:
        scheme, rest = origin_href.split("://", 1)
        origin = f"{scheme}://{rest.split('/', 1)[0]}"
    params = parse_search(search)
    if share_token:
        params["share"] = share_token
    return f"{origin}{pathname}{build_search(params)}"


def make_share(kind: str, resource_id: str, href: Optional[str], pathname: str, search: Optional[str],
               token: Optional[str]) -> tuple[str, str]:
    """(link, message) for a Share click: with an API token (auth on) a read-only share link from
    ``POST /shares``, else the plain view URL."""
    from frontend.api_client import ApiError

    if token:
        try:
            share = client(token).create_share(kind, resource_id)
        except ApiError as exc:
            return share_link(href, pathname, search), f"A read-only link could not be made: {exc}"
        return share_link(href, pathname, search, share.get("token")), "Read-only link made; copy it with the icon."
    return share_link(href, pathname, search), "Link to this view; copy it with the icon."
