"""Benchmark: is the trace page of a 36-layer x 10-task x 200-prompt trace interactive within 2 s?

The whole path is real: ``layertracer up`` (embedded mode: SQLite, filesystem broker, one worker, the API
and the dashboard on one port), a seeded random 36-block Qwen3-architecture model, one uploaded task
file with 10 tasks of 200 prompts each, a trace run by the worker (skip + mask perturbations, CKA,
position view, top-10 tokens), then the dashboard in headless Chromium.

Printed:
  * the size of the whole result JSON, and of what the page reads instead: the overview and one task;
  * server side: the page's ``layout()`` (cold; with the data cached; with the view's figures cached)
    and the view callbacks (metric change, task change), in-process against the running API;
  * browser side (headless Chromium, 1280 x 900), seconds from navigation start to: the first screen
    complete (every figure inside the window drawn); the hover label of the first figure on it, hovered
    with a real mouse move as soon as that screen is complete (the page answers input); and all eight
    figures drawn (the dashboard draws figures outside the window while the browser is idle). For a
    first visit (fresh browser, view never drawn), a shared link (fresh browsers, view drawn before),
    reloads, and views never drawn in a warm browser; and the time from a click on another metric to the
    redrawn heatmap. Before the browser runs, the bench waits for an idle machine.

    .venv/bin/python benchmarks/bench_dashboard.py            # build the trace (a few minutes), then measure
    .venv/bin/python benchmarks/bench_dashboard.py --loads 7 --json out.json
    .venv/bin/python benchmarks/bench_dashboard.py --url http://127.0.0.1:8000 --trace ID   # a running service
    .venv/bin/python benchmarks/bench_dashboard.py --workdir /tmp/lt-bench   # keep the stack's data; reuse its trace

A benchmark, not a test: it prints numbers and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests", ROOT / "tests" / "frontend"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

LAYERS, TASKS, PROMPTS = 36, 10, 200
# Every figure of the page with data: the plan, the verdict panel's depth strip, the line view, the
# heatmaps, the stability curve, the position grid and the similarity. (The live lens's two figures are
# empty until a prompt is typed: on the page, and in its time, but never "drawn" with data.)
GRAPHS = ("trace-plan", "trace-verdict", "trace-lines", "trace-tasks", "trace-prompts", "trace-stability",
          "trace-position", "trace-similarity")


def build_model(folder: Path) -> Path:
    """A seeded random 36-block Qwen3 (hidden 64) with the tests' byte-level tokenizer, saved locally."""
    import torch
    import transformers as T

    import tiny_models

    tokenizer = tiny_models.build_tokenizer()
    config = T.Qwen3Config(vocab_size=tiny_models.VOCAB, hidden_size=64, num_hidden_layers=LAYERS, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=16, intermediate_size=128, max_position_embeddings=512,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(config).eval()
    tiny_models.randomize_norms(model)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def task_file(path: Path) -> Path:
    """10 tasks x 200 prompts (JSONL with a task column), made from the built-in task texts."""
    from layertracer.tasks.sets import load_tasks

    pool = [(item.prompt, item.target) for task in load_tasks("all", shots=0) for item in task.items]
    lines = []
    for t in range(TASKS):
        for i in range(PROMPTS):
            prompt, target = pool[(t * PROMPTS + i * 7) % len(pool)]
            lines.append(json.dumps({"task": f"task{t:02d}", "prompt": prompt, "target": target}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_trace(stack, models: Path) -> str:
    model = stack.register_model(build_model(models / "deep36"), "deep36", timeout=300)
    upload = stack.api.post("/task-sets", files={"file": ("bench.jsonl", task_file(models / "bench.jsonl").read_bytes())},
                            data={"name": "bench10x200"})
    assert upload.status_code == 201, upload.text
    trace = stack.post("/traces", {"model_id": model["id"], "task_sets": [upload.json()["id"]],
                                   "perturbations": ["skip", "mask:keep=0.5"], "options": {"batch_size": 32, "top_k": 10}})
    started = time.perf_counter()
    stack.wait_finished(f"/traces/{trace['id']}", 3600)
    print(f"trace computed by the worker in {time.perf_counter() - started:.0f} s")
    return trace["id"]


def sizes(stack, trace_id: str) -> dict:
    """Bytes of the whole result, of the overview and of one task's JSON."""
    return {name: len(stack.api.get(f"/traces/{trace_id}/{path}").content) / 2**20
            for name, path in (("result_json_mb", "result"), ("overview_json_mb", "overview"),
                               ("task_json_mb", "tasks/task00"))}


def server_side(stack, trace_id: str) -> dict:
    """layout() and the view callbacks, timed in this process against the running API."""
    from frontend.api_client import RESULT_CACHE, ApiClient
    from frontend.app import create_dash

    app = create_dash(api_url=stack.url)
    from frontend.pages import trace as page

    out = {}
    with app.server.test_request_context("/"):
        RESULT_CACHE.clear()
        page.FIGURE_CACHE.clear()
        t = time.perf_counter()
        page.layout(trace_id)
        out["layout_cold_s"] = time.perf_counter() - t
        built, cached = [], []
        for _ in range(3):
            page.FIGURE_CACHE.clear()
            t = time.perf_counter()
            page.layout(trace_id)
            built.append(time.perf_counter() - t)
            t = time.perf_counter()
            page.layout(trace_id)
            cached.append(time.perf_counter() - t)
        out["layout_data_cached_s"] = statistics.median(built)
        out["layout_figures_cached_s"] = statistics.median(cached)
        page.FIGURE_CACHE.clear()
        overview = ApiClient(stack.url).trace_overview(trace_id)
        L = overview["num_layers"]
        t = time.perf_counter()
        page.update_figures("entropy", list(overview["sensitivities"]), [0, L - 1], [], trace_id, None, None)
        out["callback_metric_s"] = time.perf_counter() - t
        t = time.perf_counter()
        page.update_prompts("task05", "prob", [0, L - 1], [], trace_id, None, None)
        out["callback_task_s"] = time.perf_counter() - t
    return out


# Started right after navigation: records when each figure is drawn (ms since navigation start) and
# when the first screen is complete: every figure whose box starts inside the window is drawn. A figure
# not drawn yet may still have no height, and then it counts as inside the window.
WATCH = """
const ids = arguments[0];
const t = window.__ltBench = {};
function drawn(id) { const g = document.querySelector('#' + id + ' .js-plotly-plot');
                     return !!(g && g.data && g.data.length && g._fullLayout); }
(function poll() {
  const now = Math.round(performance.now());
  const boxes = ids.map(id => document.getElementById(id));
  ids.forEach(id => { if (t[id] === undefined && drawn(id)) t[id] = now; });
  if (t.screen === undefined && boxes.every(b => b)
      && ids.every((id, i) => t[id] !== undefined || boxes[i].getBoundingClientRect().top >= innerHeight)) {
    t.screen = now;
    t.screen_figures = ids.filter(id => document.getElementById(id).getBoundingClientRect().top < innerHeight);
    // Where to hover: on data of the first figure on the screen (the verdict strip's plan row, a heatmap;
    // or the plan's middle bar), never on an empty subplot, which shows no label; and when the label appears.
    const first = t.screen_figures[0] && document.getElementById(t.screen_figures[0]);
    if (first) t.hovered = first.id;
    if (first) {
      // The first bar trace's own bars (a strip of subplots has more bar traces, some of zero height).
      const barTrace = first.querySelector('.barlayer .trace');
      const bars = barTrace ? barTrace.querySelectorAll('.point') : [];
      const target = bars.length ? bars[Math.floor(bars.length / 2)]
                   : (first.querySelector('.heatmaplayer image') || first.querySelector('.nsewdrag'));
      const r = target.getBoundingClientRect();
      t.hover_at = [Math.round(r.left + r.width / 2), Math.round(r.top + r.height / 2)];
      new MutationObserver((_, obs) => {
        if (first.querySelector('.hoverlayer .hovertext')) { t.label = Math.round(performance.now()); obs.disconnect(); }
      }).observe(first.querySelector('.hoverlayer'), {childList: true, subtree: true});
    }
  }
  if (!ids.every(id => t[id] !== undefined)) setTimeout(poll, 5);
})();
"""

WAIT_FOR = """
const key = arguments[0], done = arguments[arguments.length - 1];
(function poll() { const t = window.__ltBench; if (t && t[key] !== undefined) done(t); else setTimeout(poll, 5); })();
"""

WAIT_ALL = """
const ids = arguments[0], done = arguments[arguments.length - 1];
(function poll() { const t = window.__ltBench; if (ids.every(id => t[id] !== undefined)) done(t); else setTimeout(poll, 5); })();
"""

WAIT_RETITLE = """
const id = arguments[0], value = arguments[1], word = arguments[2], done = arguments[arguments.length - 1];
const t0 = performance.now();
document.querySelector('#trace-metric input[value="' + value + '"]').closest('label').click();
(function poll() {
  const g = document.querySelector('#' + id + ' .js-plotly-plot');
  const title = g && g._fullLayout && g._fullLayout.title && g._fullLayout.title.text;
  if (title && title.indexOf(word) >= 0) { done(performance.now() - t0); } else { setTimeout(poll, 10); }
})();
"""


MARGINS_PUSHED = """
return arguments[0].filter(id => {
  const g = document.querySelector('#' + id + ' .js-plotly-plot'), s = g._fullLayout._size, m = g._fullLayout.margin;
  return Math.round(s.l) > m.l || Math.round(s.r) > m.r || Math.round(s.t) > m.t || Math.round(s.b) > m.b;
});
"""


def _load(driver, url: str, hover: bool = False) -> dict:
    """One page load. Seconds from navigation start to: the first screen complete (``screen_s``), the
    hover label shown over the first figure on it, hovered with a real mouse move as soon as that screen
    was complete (``hover_s``, when ``hover``), and every figure drawn (``all_s``)."""
    driver.get("about:blank")
    driver.get(url)
    driver.execute_script(WATCH, list(GRAPHS))
    times = driver.execute_async_script(WAIT_FOR, "screen")
    out = {"screen_s": times["screen"] / 1000, "screen_figures": times["screen_figures"]}
    if hover and times.get("hover_at"):
        # A real mouse move, sent as input to the browser (as a user's would be) the moment the screen was complete.
        x, y = times["hover_at"]
        driver.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        times = driver.execute_async_script(WAIT_FOR, "label")
        out["hover_s"] = times["label"] / 1000
        out["hovered"] = times.get("hovered")
    times = driver.execute_async_script(WAIT_ALL, list(GRAPHS))
    out["all_s"] = max(times[g] for g in GRAPHS) / 1000
    return out


def _median(loads: list[dict], key: str) -> float:
    return statistics.median(load[key] for load in loads)


# The two ways the browser draws the page, measured side by side: as shipped (figures outside the window
# wait, frontend/assets/lazy_figures.js) and every figure at once (that script blocked in the browser).
MODES = {
    # mode: (query of the first visit and shared link, metric of the never-drawn views, metric clicked)
    "lazy": ("", "logrank", "entropy"),
    "eager": ("?metric=entropy", "entropy", "logrank"),
}


def _browser_runs(stack, trace_id: str, loads: int, mode: str) -> dict:
    import browser
    from frontend.viz.common import METRICS

    url = f"{stack.url}/traces/{trace_id}"
    first_query, new_metric, click_metric = MODES[mode]

    def fresh_driver():
        driver = browser.new_driver()
        driver.set_script_timeout(120)
        if mode == "eager":
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*lazy_figures.js*"]})
        return driver

    driver = fresh_driver()
    try:
        first = _load(driver, url + first_query, hover=True)
        pushed = driver.execute_script(MARGINS_PUSHED, list(GRAPHS))
        if mode == "lazy":
            browser.screenshot(driver, "bench-trace-36x10x200")
    finally:
        browser.quit_driver(driver)
    shared = []
    for _ in range(3):
        driver = fresh_driver()
        try:
            shared.append(_load(driver, url + first_query, hover=True))
        finally:
            browser.quit_driver(driver)
    reloads, new_views, clicks = [], [], []
    driver = fresh_driver()
    try:
        _load(driver, url + first_query)
        for i in range(loads):
            reloads.append(_load(driver, url + first_query, hover=True))
            new_views.append(_load(driver, f"{url}?task=task{i % (TASKS - 1) + 1:02d}&metric={new_metric}", hover=True))
            driver.execute_script("window.scrollTo(0, document.getElementById('trace-tasks').offsetTop - 200);")
            clicks.append(driver.execute_async_script(WAIT_RETITLE, "trace-tasks", click_metric,
                                                  METRICS[click_metric][0]) / 1000)
    finally:
        browser.quit_driver(driver)
    out = {"figures_drawn_twice": pushed, "first_screen_figures": first["screen_figures"], "hovered": first.get("hovered"),
           "metric_click_median_s": statistics.median(clicks)}
    for name, runs in (("first_visit", [first]), ("shared_link", shared), ("reload", reloads), ("new_view", new_views)):
        for key in ("screen_s", "hover_s", "all_s"):
            out[f"{name}_{key}"] = _median(runs, key)
            if len(runs) > 1:
                out[f"{name}_{key}_max"] = max(run[key] for run in runs)
    return out


def browser_side(stack, trace_id: str, loads: int) -> dict:
    """Page loads in headless Chromium (1280 x 900), as shipped and with every figure drawn at once: the
    first visit (a fresh browser and a view the server has never drawn), the shared link (fresh browsers,
    a view drawn before), reloads, views never drawn (another task) in a warm browser, and a click on
    another metric. The shipped mode goes first, so its first visit is the first after the server started."""
    import browser
    from machine import CpuMeter

    # The service just started: its worker may still be importing torch. Measure an idle machine.
    waited, load = CpuMeter().wait_idle(90, 0.1)
    print(f"waited {waited:.0f} s for an idle machine (other processes: {load if load is None else round(load, 2)} cores)")
    if not browser.available():
        return {"error": "headless Chromium is not installed"}
    out = {}
    for mode in MODES:
        out.update({(k if mode == "lazy" else f"eager_{k}"): v for k, v in _browser_runs(stack, trace_id, loads, mode).items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loads", type=int, default=5, help="reloads and never-drawn views in the warm browser")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--url", default=None, help="measure a running service (with --trace) instead of starting one")
    parser.add_argument("--trace", default=None, help="the id of a 36x10x200 trace on --url")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the stack's data folder here and reuse its trace on the next run")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from stack import Stack

    if args.url:
        if not args.trace:
            parser.error("--url needs --trace")
        import httpx

        class Running:  # the two things the measurements use of a Stack
            url = args.url.rstrip("/")
            api = httpx.Client(base_url=f"{args.url.rstrip('/')}/api/v1", timeout=120)

        stack, trace_id = Running(), args.trace
        size = sizes(stack, trace_id)
        server = server_side(stack, trace_id)
        client = browser_side(stack, trace_id, args.loads)
    else:
        with tempfile.TemporaryDirectory(prefix="lt-bench-dash-") as tmp:
            root = args.workdir or Path(tmp)
            models = root / "models"
            models.mkdir(parents=True, exist_ok=True)
            saved = root / "trace_id"
            stack = Stack(root, (models,)).start()
            try:
                if saved.exists():
                    trace_id = saved.read_text().strip()
                    print(f"reusing trace {trace_id} of {root}")
                else:
                    trace_id = make_trace(stack, models)
                    saved.write_text(trace_id)
                size = sizes(stack, trace_id)
                server = server_side(stack, trace_id)
                client = browser_side(stack, trace_id, args.loads)
            finally:
                stack.stop()
    figures = {"trace": f"{LAYERS} layers x {TASKS} tasks x {PROMPTS} prompts", **size,
               **{k: round(v, 3) if isinstance(v, float) else v for k, v in {**server, **client}.items()},
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    print()
    print(f"Trace page, {figures['trace']}, {figures['machine']}")
    print(f"  JSON: whole result {size['result_json_mb']:.1f} MB; the page reads the overview "
          f"{size['overview_json_mb']:.2f} MB and one task {size['task_json_mb']:.2f} MB")
    print(f"  server  layout(): cold {server['layout_cold_s']:.2f} s (fetch + parse + {len(GRAPHS)} figures), data cached "
          f"{server['layout_data_cached_s']:.2f} s, figures cached {server['layout_figures_cached_s']:.2f} s; "
          f"callbacks: metric {server['callback_metric_s']:.2f} s, task {server['callback_task_s']:.2f} s")
    if "error" in client:
        print(f"  browser skipped: {client['error']}")
    else:
        print(f"  browser (1280 x 900), seconds from navigation to: the first screen complete (every figure in the "
              f"window drawn: {', '.join(client['first_screen_figures'])}) / its hover label shown "
              f"({client['hovered']}, real mouse move) / all {len(GRAPHS)} figures drawn;")
        print("  as shipped (figures outside the window drawn when seen or when idle) | every figure drawn at once:")
        for name, label, count in (("first_visit", "first visit (fresh browser, view never drawn)", 1),
                                   ("shared_link", "shared link (fresh browsers, view drawn before)", 3),
                                   ("reload", "reload (warm browser)", args.loads),
                                   ("new_view", "another task, never drawn (warm browser)", args.loads)):
            cells = ["  /  ".join(f"{client[f'{prefix}{name}_{key}']:.2f}" for key in ("screen_s", "hover_s", "all_s"))
                     for prefix in ("", "eager_")]
            print(f"    {label + (f', median of {count}' if count > 1 else ''):<62} {cells[0]:<22} | {cells[1]}")
        print(f"  browser click on another metric -> heatmap redrawn, median: {client['metric_click_median_s']:.2f} s | "
              f"{client['eager_metric_click_median_s']:.2f} s")
        print(f"  figures whose margins plotly had to grow (each is drawn twice): {client['figures_drawn_twice'] or 'none'}")
        worst = max(client[f"{name}_hover_s"] for name in ("first_visit", "shared_link", "reload", "new_view"))
        eager = max(client[f"eager_{name}_hover_s"] for name in ("first_visit", "shared_link", "reload", "new_view"))
        print(f"  interactive within 2 s (first screen drawn and answering a hover, every case above): "
              f"{'yes' if worst <= 2.0 else 'no'} (worst median {worst:.2f} s; drawing every figure at once: {eager:.2f} s)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
