"""Corpus and benchmark paths on the server, for the trial and experiment forms: a check of each path
as it is typed (``GET /api/v1/paths``: it exists under the allowed roots and is a folder where a
benchmark needs one), and a browser of the roots that puts the chosen path in the field.

Ids under the form's prefix ``p``: ``p-corpus-check`` / ``p-benchmarks-check`` (the checks),
``p-browse`` (the entries of ``p-browse-dir``, the folder shown), ``p-browse-up``, ``p-use-corpus``,
``p-use-ceval``, ``p-use-cmmlu``; ``p-used`` (the registered corpora and benchmarks, ``GET
/api/v1/paths/registered``, then those of earlier runs, ``GET /api/v1/paths/used``).
"""

from __future__ import annotations

import re
from typing import Any, Optional

import dash
from dash import Input, Output, State, dcc, html

from frontend.api_client import ApiClient, ApiError
from frontend.components import client
from layertracer.spec.benchmarks import LM_EVAL, BenchmarkSpecError, check_benchmark, is_task_file


def _size(n: Optional[int]) -> str:
    if n is None:
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _paths(api: ApiClient, path: str, kind: str) -> dict:
    """``GET /paths?path=&kind=`` (the route's ``path`` parameter, hence not ``api.get``'s keywords)."""
    return api.request("GET", "/paths", params={"path": path, "kind": kind})


def check_one(api: ApiClient, path: str, kind: str) -> tuple[bool, str]:
    """(fine, one line) for a path of ``kind`` ("corpus", "benchmark", "task-file") on the server."""
    try:
        info = _paths(api, path, kind)
    except ApiError as exc:
        return False, exc.message
    if not info.get("ok"):
        return False, info.get("problem") or f"{path} cannot be used"
    if info.get("is_dir"):
        return True, f"{path}: a folder of {len(info.get('entries') or [])}{'+' if info.get('truncated') else ''} entries"
    return True, f"{path}: a file" + (f" ({_size(info['size'])})" if info.get("size") is not None else "")


def check_corpus(api: ApiClient, text: Optional[str]) -> str:
    """The corpus field's line: empty when there is nothing to check."""
    text = (text or "").strip()
    if not text:
        return ""
    fine, line = check_one(api, text, "corpus")
    return ("✓ " if fine else "✗ ") + line


def check_benchmarks(api: ApiClient, text: Optional[str]) -> str:
    """One line per benchmark that names a path (``ceval:DIR``, ``cmmlu:DIR``, ``lm-eval:FILE.yaml``);
    an lm-eval task by name is the harness's to find, and a malformed entry the form's own check's."""
    lines = []
    for entry in (b.strip() for b in re.split(r"[,\n]+", text or "") if b.strip()):
        try:
            name, value = check_benchmark(entry)
        except BenchmarkSpecError:
            continue
        if name == LM_EVAL and not is_task_file(value):
            continue
        fine, line = check_one(api, value, "task-file" if name == LM_EVAL else "benchmark")
        lines.append(("✓ " if fine else "✗ ") + f"{name}: {line}")
    return "\n".join(lines)


def entries(api: ApiClient, folder: str) -> tuple[list[dict], str]:
    """(dropdown options of a folder's entries, one line: where this is or what went wrong); the roots
    themselves when ``folder`` is empty."""
    try:
        info = _paths(api, folder or "", "any")
    except ApiError as exc:
        return [], exc.message
    options = [{"label": (e["name"].rstrip("/") + "/") if e.get("is_dir") else
                f"{e['name']} ({_size(e.get('size'))})", "value": e["path"]} for e in info.get("entries") or []]
    where = f"in {folder}" if folder else "the allowed roots"
    more = " (the first 500)" if info.get("truncated") else ""
    return options, f"{len(options)} entries {where}{more}"


def used_options(api: ApiClient) -> list[dict]:
    """Dropdown options of the registered corpora and benchmarks (by name, ``GET /paths/registered``),
    then those this server's runs used (newest first); one no longer there is shown and cannot be
    chosen. Values: ``corpus::PATH`` or ``benchmark::KIND:PATH``."""
    options = []
    try:
        registered = api.get("/paths/registered").get("data") or []
    except ApiError:
        registered = []
    for entry in registered:
        gone = entry.get("exists") is False
        what = "corpus" if entry["kind"] == "corpus" else entry["kind"]
        options.append({"label": f"{entry['name']} · {what} · {entry['path']}" + (" (no longer there)" if gone else ""),
                        "value": (f"corpus::{entry['path']}" if entry["kind"] == "corpus"
                                  else f"benchmark::{entry['kind']}:{entry['path']}"), "disabled": gone})
    try:
        used = api.get("/paths/used")
    except ApiError:
        return options
    taken = {option["value"] for option in options}
    for entry in used.get("corpora") or []:
        gone = entry.get("exists") is False
        if f"corpus::{entry['path']}" in taken:
            continue  # registered, listed above by its name
        options.append({"label": f"corpus · {entry['path']}" + (" (no longer there)" if gone else ""),
                        "value": f"corpus::{entry['path']}", "disabled": gone})
    for entry in used.get("benchmarks") or []:
        gone = entry.get("exists") is False
        if f"benchmark::{entry['kind']}:{entry['path']}" in taken:
            continue
        options.append({"label": f"{entry['kind']} · {entry['path']}" + (" (no longer there)" if gone else ""),
                        "value": f"benchmark::{entry['kind']}:{entry['path']}", "disabled": gone})
    return options


def used_field(p: str, api: ApiClient) -> html.Div:
    """"Registered or used before": pick a corpus or a benchmark into the fields; and register the
    corpus and benchmarks in the fields under a name (``POST /api/v1/paths/registered``, a write)."""
    options = used_options(api)
    return html.Div([
        html.Label("Registered or used before on this server", htmlFor=f"{p}-used"),
        dcc.Dropdown(id=f"{p}-used", options=options, value=None, className="lt-wide",
                     placeholder="a registered corpus or benchmark, or one of an earlier run" if options
                     else "none registered, no earlier runs yet"),
        html.Div([
            dcc.Input(id=f"{p}-register-name", type="text", placeholder="a name", debounce=False, maxLength=200),
            html.Button("Register the corpus and benchmarks under this name", id=f"{p}-register", type="button",
                        className="lt-button lt-small"),
            html.Span("", id=f"{p}-register-status", className="lt-muted"),
        ], className="lt-row"),
    ], className="lt-field", style={"width": "100%", "maxWidth": "640px"})


def register_paths(n_clicks, name, corpus, benchmarks, token) -> tuple[Any, str]:
    """The Register button: the corpus field and each benchmark registered under ``name`` -> the
    dropdown's new options and one line saying what was registered, or the API's one-line refusal."""
    name = (name or "").strip()
    if not n_clicks:
        return dash.no_update, ""
    if not name:
        return dash.no_update, "give a name first"
    entries = [("corpus", corpus.strip())] if (corpus or "").strip() else []
    for text in re.split(r"[,\n]+", benchmarks or ""):
        kind, sep, value = text.strip().partition(":")
        if sep and value:
            entries.append((kind, value))
    if not entries:
        return dash.no_update, "nothing to register: the corpus and benchmark fields are empty"
    api = client(token)
    done = []
    for kind, path in entries:
        try:
            api.post("/paths/registered", {"kind": kind, "name": name, "path": path})
        except ApiError as exc:
            return used_options(api), f"{kind} {path}: {exc.message}"
        done.append(kind)
    return used_options(api), f"registered as {name!r}: {', '.join(done)}"


def browser(p: str) -> html.Details:
    """The folded browser of the server's roots under the data fields."""
    return html.Details([
        html.Summary("Browse the server's roots"),
        dcc.Store(id=f"{p}-browse-dir", data=""),
        html.Div([
            html.Button("Up", id=f"{p}-browse-up", type="button", className="lt-button lt-small"),
            html.Span("", id=f"{p}-browse-where", className="lt-muted"),
        ], className="lt-row"),
        dcc.Dropdown(id=f"{p}-browse", options=[], placeholder="choose a folder to open, or a file", className="lt-wide"),
        html.Div([
            html.Button("Use as the corpus", id=f"{p}-use-corpus", type="button", className="lt-button lt-small"),
            html.Button("Add as a ceval benchmark", id=f"{p}-use-ceval", type="button", className="lt-button lt-small"),
            html.Button("Add as a cmmlu benchmark", id=f"{p}-use-cmmlu", type="button", className="lt-button lt-small"),
        ], className="lt-row"),
    ], id=f"{p}-browser", className="lt-advanced")


def _parent(folder: str, roots: list[str]) -> str:
    """The folder above ``folder``; the roots' list above a root."""
    if not folder or folder.rstrip("/") in [r.rstrip("/") for r in roots]:
        return ""
    return folder.rstrip("/").rsplit("/", 1)[0] or "/"


def browse(opened, up_clicks, shown, token):
    """A folder chosen in the dropdown (or Up) -> that folder's entries; a file chosen stays chosen."""
    api = client(token)
    trigger = dash.ctx.triggered_id
    folder = shown or ""
    if trigger and str(trigger).endswith("-browse-up"):
        try:
            roots = _paths(api, "", "any").get("roots") or []
        except ApiError:
            roots = []
        folder = _parent(folder, roots)
    elif opened:
        try:
            info = _paths(api, opened, "any")
        except ApiError as exc:
            return dash.no_update, dash.no_update, exc.message, dash.no_update
        if not info.get("is_dir"):
            return dash.no_update, dash.no_update, f"chosen: {opened}", dash.no_update
        folder = opened
    options, where = entries(api, folder)
    return options, None, where, folder


def _add_benchmark(benchmarks: Optional[str], entry: str) -> str:
    listed = [b.strip() for b in re.split(r"[,\n]+", benchmarks or "") if b.strip()]
    return ", ".join(listed + ([entry] if entry not in listed else []))


def use(corpus_clicks, ceval_clicks, cmmlu_clicks, used, chosen, shown, benchmarks):
    """Put the chosen entry (or the folder shown), or a corpus / benchmark used before, in the corpus
    field or the benchmarks."""
    path = chosen or shown
    trigger = str(dash.ctx.triggered_id or "")
    if trigger.endswith("-used"):
        what, _, value = (used or "").partition("::")
        if what == "corpus":
            return value, dash.no_update
        if what == "benchmark":
            return dash.no_update, _add_benchmark(benchmarks, value)
        return dash.no_update, dash.no_update
    if not path or not trigger:
        return dash.no_update, dash.no_update
    if trigger.endswith("-use-corpus"):
        return path, dash.no_update
    kind = "ceval" if trigger.endswith("-use-ceval") else "cmmlu"
    return dash.no_update, _add_benchmark(benchmarks, f"{kind}:{path}")


def register(app: dash.Dash, p: str) -> None:
    auth = State("auth-token", "data")
    app.callback(Output(f"{p}-corpus-check", "children"), Input(f"{p}-corpus", "value"), auth,
                 prevent_initial_call=False)(lambda text, token: check_corpus(client(token), text))
    app.callback(Output(f"{p}-benchmarks-check", "children"), Input(f"{p}-benchmarks", "value"), auth,
                 prevent_initial_call=False)(lambda text, token: check_benchmarks(client(token), text))
    app.callback(Output(f"{p}-browse", "options"), Output(f"{p}-browse", "value"), Output(f"{p}-browse-where", "children"),
                 Output(f"{p}-browse-dir", "data"),
                 Input(f"{p}-browse", "value"), Input(f"{p}-browse-up", "n_clicks"), State(f"{p}-browse-dir", "data"), auth,
                 prevent_initial_call=False)(browse)
    app.callback(Output(f"{p}-corpus", "value"), Output(f"{p}-benchmarks", "value"),
                 Input(f"{p}-use-corpus", "n_clicks"), Input(f"{p}-use-ceval", "n_clicks"),
                 Input(f"{p}-use-cmmlu", "n_clicks"), Input(f"{p}-used", "value"), State(f"{p}-browse", "value"),
                 State(f"{p}-browse-dir", "data"),
                 State(f"{p}-benchmarks", "value"), prevent_initial_call=True)(use)
    app.callback(Output(f"{p}-used", "options"), Output(f"{p}-register-status", "children"),
                 Input(f"{p}-register", "n_clicks"), State(f"{p}-register-name", "value"), State(f"{p}-corpus", "value"),
                 State(f"{p}-benchmarks", "value"), auth, prevent_initial_call=True)(register_paths)
