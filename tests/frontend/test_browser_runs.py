"""The runs table in headless Chromium against the real stack (``layertracer up``, embedded mode): traces
stored through the API's own store function (as a worker stores them), then sorted by a metric column
(the order the API's rule gives, the sort in the URL), paged by the URL, two runs selected and opened in
Compare. Screenshots: tests/frontend/artifacts/runs-sorted.png, runs-selected.png, runs-compare.png and
runs-experiments.png."""

from __future__ import annotations

import importlib.util
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

import browser
from browser import wait
from stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not browser.available():
    pytest.skip("headless Chromium (Debian chromium + chromium-driver) is not installed", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402

LAYERS = (4, 5, 6, 7, 8, 9)  # one trace each: different plans and vulnerable layers
T0 = datetime(2026, 11, 30, tzinfo=timezone.utc)


def _factories():
    path = Path(__file__).resolve().parents[1] / "backend" / "backend_factories.py"
    spec = importlib.util.spec_from_file_location("backend_factories", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OLD, NEW = "ceval:/b/old-facts", "ceval:/b/new-facts"


def experiment_result(old: float, new: float) -> dict:
    """A runner's result: the base model and one allocation changing by ``old`` / ``new``."""
    return {"spec": {"benchmarks": [OLD, NEW]},
            "table": [{"allocation": "base", "label": "base"},
                      {"allocation": "0-1", "label": "0-1", "change": {OLD: {"mean": old}, NEW: {"mean": new}}}],
            "statistics": {}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from sqlalchemy.orm import Session

    from backend import results
    from backend.api.schemas import TraceCreate
    from backend.db.models import Experiment, Job, Model, Trace
    from backend.db.session import make_engine

    root = tmp_path_factory.mktemp("runs-e2e")
    service = Stack(root, (root,)).start()
    factories = _factories()
    engine = make_engine(f"sqlite:///{service.data_dir / 'layertracer.db'}")
    stored = []
    try:
        with Session(engine, expire_on_commit=False) as s:
            model = Model(source=str(root / "tiny"), source_kind="local", name="tiny")
            s.add(model)
            s.flush()
            for i, layers in enumerate(LAYERS):
                job = Job(kind="trace", queue="cpu", status="succeeded")
                s.add(job)
                s.flush()
                spec = TraceCreate(model_id=model.id, task_sets=["antonyms_en"], name=f"run-{layers}L").model_dump()
                trace = Trace(model_id=model.id, job_id=job.id, name=f"run-{layers}L", spec=spec,
                              created_at=T0 + timedelta(minutes=i))
                s.add(trace)
                s.commit()
                results.store_trace_result(s, trace_id=trace.id, result=factories.trace_result(num_layers=layers, seed=i))
                stored.append(trace.id)
            # Two experiments with results: their best allocation and changes come from the stored result.
            for i, (name, old, new) in enumerate((("sweep A", -0.30, 0.55), ("sweep B", -0.12, 0.40))):
                job = Job(kind="experiment", queue="cpu", status="succeeded")
                s.add(job)
                s.flush()
                row = Experiment(model_id=model.id, job_id=job.id, kind="experiment", name=name, spec={},
                                 tags=["demo"], created_at=T0 + timedelta(minutes=10 + i))
                s.add(row)
                s.commit()
                results.store_experiment_result(s, experiment_id=row.id, result=experiment_result(old, new))
        engine.dispose()
        service.trace_ids = stored
        yield service
    finally:
        service.stop()


def query(d) -> dict:
    return {k: v[-1] for k, v in parse_qs(urlparse(d.current_url).query).items()}


def row_names(d) -> list[str]:
    return [r.find_element(By.CSS_SELECTOR, "td a").text for r in d.find_elements(By.CSS_SELECTOR, "#runs-list tbody tr")]


def expected_names(stack, field: str, descending: bool) -> list[str]:
    """The documented order computed here from the API's own items: by the field, missing last, then
    newest first."""
    items = stack.get("/traces", limit=100)["data"]
    items.sort(key=lambda t: t["created_at"], reverse=True)
    present = sorted([t for t in items if t[field] is not None], key=lambda t: t[field], reverse=descending)
    return [t["name"] for t in present + [t for t in items if t[field] is None]]


def test_sort_page_select_and_compare(stack, driver):
    d = driver
    d.get(stack.url + "/")
    wait(d, lambda drv: len(row_names(drv)) == len(LAYERS), what="the six runs")
    assert row_names(d) == [f"run-{n}L" for n in reversed(LAYERS)]  # newest first
    header = d.find_element(By.XPATH, "//th/button[starts-with(normalize-space(.), 'vulnerable layer')]")
    header.click()
    want = expected_names(stack, "vulnerable_layer", True)
    wait(d, lambda drv: query(drv).get("sort") == "-vulnerable_layer" and row_names(drv) == want,
         what="the rows sorted by vulnerable layer, high first")
    d.find_element(By.XPATH, "//th/button[starts-with(normalize-space(.), 'vulnerable layer')]").click()
    want_up = expected_names(stack, "vulnerable_layer", False)
    wait(d, lambda drv: query(drv).get("sort") == "vulnerable_layer" and row_names(drv) == want_up,
         what="the rows sorted by vulnerable layer, low first")
    th = d.find_element(By.XPATH, "//th[button[starts-with(normalize-space(.), 'vulnerable layer')]]")
    assert th.get_attribute("aria-sort") == "ascending"
    browser.screenshot(d, "runs-sorted", full_page=False)

    # The URL is the view: a teammate opening it sees the same page of the same order.
    d.get(stack.url + "/?sort=-plan&size=2&page=2")
    by_plan = expected_names(stack, "plan_share", True)
    wait(d, lambda drv: row_names(drv) == by_plan[2:4], what="page 2 of the plan order")
    assert "page 2 of 3" in d.find_element(By.ID, "runs-page").text
    d.find_element(By.ID, "runs-next").click()
    wait(d, lambda drv: query(drv).get("page") == "3" and row_names(drv) == by_plan[4:6], what="page 3")

    # Select two runs and open them in Compare.
    d.get(stack.url + "/?sort=-vulnerable_layer")
    wait(d, lambda drv: row_names(drv) == want, what="the sorted runs again")
    rows = d.find_elements(By.CSS_SELECTOR, "#runs-list tbody tr")
    chosen = []
    for row in rows[:2]:
        chosen.append(row.find_element(By.CSS_SELECTOR, "td a").get_attribute("title").split()[-1])
        row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    text = "var e = document.getElementById('runs-compare'); return e ? e.textContent : null;"
    wait(d, lambda drv: drv.execute_script(text) == "Compare (2)", what="the Compare link")
    browser.screenshot(d, "runs-selected", full_page=False)
    d.find_element(By.ID, "runs-compare").click()
    wait(d, lambda drv: urlparse(drv.current_url).path == "/compare", what="the compare page")
    assert query(d)["traces"].split(",") == chosen
    script = "var g = document.querySelector('#compare-curves .js-plotly-plot'); return g && g.data ? g.data.length : 0;"
    wait(d, lambda drv: drv.execute_script(script) >= 2, timeout=60, what="both traces drawn in Compare")
    browser.screenshot(d, "runs-compare")
    errors = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    assert errors == []


def test_experiments_sorted_by_acquisition(stack, driver):
    d = driver
    d.get(stack.url + "/?kind=experiments&sort=-delta_acquisition")
    wait(d, lambda drv: row_names(drv) == ["sweep A", "sweep B"], what="the experiments by acquisition")
    cells = [c.text for c in d.find_elements(By.CSS_SELECTOR, "#runs-list tbody tr")[0].find_elements(By.TAG_NAME, "td")]
    assert cells[6:9] == ["train layers 0-1", "-0.300", "+0.550"]
    d.find_element(By.XPATH, "//th/button[starts-with(normalize-space(.), 'Δ retention')]").click()
    wait(d, lambda drv: query(drv).get("sort") == "-delta_retention" and row_names(drv) == ["sweep B", "sweep A"],
         what="the experiments by retention, best kept first")
    d.find_element(By.CSS_SELECTOR, "#runs-list tbody tr input[type=checkbox]").click()
    text = "var e = document.getElementById('runs-selection'); return e ? e.textContent : '';"
    wait(d, lambda drv: "Report: sweep B" in drv.execute_script(text), what="the report link of the selected run")
    browser.screenshot(d, "runs-experiments", full_page=False)


def test_rerun_posts_the_same_settings(stack, driver):
    d = driver
    d.get(stack.url + "/?sort=name")
    wait(d, lambda drv: row_names(drv)[:1] == ["run-4L"], what="the runs by name")
    original = next(t for t in stack.get("/traces", limit=100)["data"] if t["name"] == "run-4L")
    d.find_elements(By.XPATH, "//button[normalize-space(.)='re-run']")[0].click()
    link = wait(d, lambda drv: drv.find_elements(By.ID, "runs-rerun-link"), what="the new run's link")[0]
    assert link.text == "run-4L (re-run)"
    new_id = link.get_attribute("href").rsplit("/", 1)[-1]
    again, before = stack.get(f"/traces/{new_id}"), stack.get(f"/traces/{original['id']}")
    assert again["spec"] == {**before["spec"], "name": "run-4L (re-run)"}  # the same settings, a new run
    assert again["id"] != before["id"]
