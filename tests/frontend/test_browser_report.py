"""The report page in headless Chromium against the real stack (``layertracer up``, embedded mode): an
experiment on the demo world (two allocations x two seeds, both benchmarks) runs through the API; its
report shows the results table and figure, the Export HTML button downloads one file, and that file,
opened from disk, draws its figure without fetching anything. Screenshots: report-page.png,
report-export.png under tests/frontend/artifacts/."""

from __future__ import annotations

import html

import pytest

import browser
from browser import wait
import tiny_models
from stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not browser.available():
    pytest.skip("headless Chromium (Debian chromium + chromium-driver) is not installed", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402

EXPERIMENT_TIMEOUT = 420
LABEL = "<script>alert(1)</script> ranges"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from layertracer.demo.world import build_world

    root = tmp_path_factory.mktemp("report-e2e")
    models = root / "models"
    tiny_models.save_tiny_model("qwen3", models / "tiny", tiny_models.build_tokenizer())
    world = build_world(models / "world", new_count=12, repeats=2)
    service = Stack(root, (models,)).start()
    try:
        service.model = service.register_model(models / "tiny", "tiny-qwen3")
        service.world = world
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("report-downloads")


@pytest.fixture(scope="module")
def driver(downloads):
    d = browser.new_driver(downloads=downloads)
    yield d
    browser.quit_driver(d)


def severe_console_errors(d) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]


def test_the_report_page_and_its_exported_file(stack, driver, downloads):
    d = driver
    world = stack.world
    exp = stack.post("/experiments", {
        "model_id": stack.model["id"], "corpus": str(world.new_corpus), "allocations": ["train-shallow", "0-1,3"],
        "seeds": [1, 2], "benchmarks": list(world.benchmarks), "steps": 3, "batch_size": 4, "block_size": 32,
        "lr": 0.01, "warmup_steps": 1, "eval_mode": "cloze", "eval_shots": 1, "eval_limit": 3, "checkpoint_every": 0,
        "device": "cpu", "dtype": "float32", "labels": {"0-1,3": LABEL},
    })
    # While it runs, the report says so and links to the experiment page.
    d.get(f"{stack.url}/experiments/{exp['id']}/report")
    first = wait(d, lambda drv: drv.find_elements(By.ID, "report-empty") or drv.find_elements(By.ID, "report-table"),
                 what="the report page")[0]
    if first.get_attribute("id") == "report-empty":
        assert "still running" in first.text
    done = stack.wait_finished(f"/experiments/{exp['id']}", EXPERIMENT_TIMEOUT)
    result = done["result"]

    d.get(f"{stack.url}/experiments/{exp['id']}")
    link = wait(d, lambda drv: drv.find_elements(By.ID, "exp-report-link"), what="the report link")[0]
    link.click()
    wait(d, lambda drv: drv.current_url.endswith(f"/experiments/{exp['id']}/report"), what="the report address")
    table = wait(d, lambda drv: drv.find_elements(By.ID, "report-table"), timeout=60, what="the results table")[0]
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == ["base model", "train-shallow", LABEL]
    old, new = result["spec"]["benchmarks"]
    shallow = next(r for r in result["table"] if r["allocation"] == "train-shallow")
    assert f"{shallow['benchmarks'][new]['mean']:.3f}" in rows[1].text
    fig = wait(d, lambda drv: drv.execute_script(
        "var g = document.querySelector('#report-figure .js-plotly-plot'); return g && g.data ? g.data.length : 0;"),
        timeout=60, what="the figure")
    assert fig == 2  # one bar trace per benchmark
    assert "highest mean accuracy" in d.find_element(By.ID, "report-honest").text
    browser.screenshot(d, "report-page")

    d.find_element(By.ID, "report-export").click()
    target = downloads / f"layertracer-report-{exp['id']}.html"
    wait(d, lambda drv: target.exists() and target.stat().st_size > 1_000_000, timeout=60, what="the downloaded report")
    doc = target.read_text(encoding="utf-8")
    assert html.escape(LABEL) in doc and LABEL not in doc
    assert severe_console_errors(d) == []

    d.get(target.as_uri())
    drawn = wait(d, lambda drv: drv.execute_script(
        "var g = document.getElementById('accuracy-figure'); return g && g.data ? g.data.length : 0;"),
        timeout=60, what="the exported figure")
    assert drawn == 2
    fetched = d.execute_script("return performance.getEntriesByType('resource').map(function(e){return e.name;})")
    assert fetched == []  # everything is in the file
    assert [c.text for c in d.find_elements(By.CSS_SELECTOR, "table.results tbody tr td:first-child")] == \
        ["base model", "train-shallow", LABEL]
    browser.screenshot(d, "report-export")
    assert severe_console_errors(d) == []
