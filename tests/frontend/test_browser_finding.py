"""The finding and Compare in headless Chromium against the real stack (``layertracer up``, embedded
mode): two traces of a tiny model, an experiment on the demo world's two benchmarks that records the
first trace as its source. The experiment page leads with the retention-vs-acquisition scatter (its
points checked against the API's result) and the sentence; the report shows the source trace's plan,
heatmap and stability curve; Compare draws one panel per task, the difference view and the plans side
by side, and its empty page has no export buttons. Screenshots (looked at): finding-experiment.png,
finding-report.png, compare-multiples.png, compare-empty.png under tests/frontend/artifacts/."""

from __future__ import annotations

import pytest

import browser
import tiny_models
from stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not browser.available():
    pytest.skip("headless Chromium (Debian chromium + chromium-driver) is not installed", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402

TRACE_TIMEOUT = 300
EXPERIMENT_TIMEOUT = 600
TASKS = ["antonyms_en", "plural_en", "country_capital_zh", "arithmetic_en"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from layertracer.demo.world import build_world

    root = tmp_path_factory.mktemp("finding-e2e")
    models = root / "models"
    tiny_models.save_tiny_model("qwen3", models / "tiny", tiny_models.build_tokenizer())
    world = build_world(models / "world", new_count=12, repeats=2)
    service = Stack(root, (models,)).start()
    try:
        service.model = service.register_model(models / "tiny", "tiny-qwen3")
        traces = []
        for limit in (4, 6):  # two traces of the same model on different prompt counts
            created = service.post("/traces", {"model_id": service.model["id"], "task_sets": TASKS,
                                               "perturbations": ["skip"], "options": {"limit": limit, "batch_size": 8}})
            traces.append(service.wait_finished(f"/traces/{created['id']}", TRACE_TIMEOUT))
        exp = service.post("/experiments", {
            "model_id": service.model["id"], "corpus": str(world.new_corpus), "allocations": ["train-shallow", "0"],
            "seeds": [1, 2], "benchmarks": list(world.benchmarks), "steps": 3, "batch_size": 4, "block_size": 32,
            "lr": 0.05, "warmup_steps": 1, "eval_mode": "cloze", "eval_shots": 1, "eval_limit": 3, "checkpoint_every": 0,
            "device": "cpu", "dtype": "float32", "source_trace_id": traces[0]["id"],
        })
        service.experiment = service.wait_finished(f"/experiments/{exp['id']}", EXPERIMENT_TIMEOUT)
        service.traces = traces
        yield service
    finally:
        service.stop()


def wait(d, condition, timeout=60, what="the page"):
    return browser.wait(d, condition, timeout, what)  # this module's pages take longer


def figure(d, graph_id: str):
    """The figure plotly drew in the browser (data, layout, and the drawn height in px: dcc.Graph hands
    plotly a responsive layout without the figure's height, so only ``_fullLayout`` holds what was drawn),
    once drawn (scrolled into view first)."""
    d.execute_script(f"var e = document.getElementById('{graph_id}'); if (e) e.scrollIntoView();")
    script = (f"var g = document.querySelector('#{graph_id} .js-plotly-plot'); "
              "return g && g.data && g.data.length ? {data: g.data, layout: g.layout, height: g._fullLayout.height} : null;")
    return wait(d, lambda drv: drv.execute_script(script), what=f"figure {graph_id}")


def severe_console_errors(d) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]


def test_the_experiment_page_leads_with_the_scatter_and_the_report_with_the_trace(stack, driver):
    d = driver
    exp = stack.experiment
    result = exp["result"]
    old, new = result["spec"]["benchmarks"]
    d.get(f"{stack.url}/experiments/{exp['id']}")
    drawn = figure(d, "exp-tradeoff")
    finding = d.find_element(By.ID, "exp-finding").text
    assert "kept the most on" in finding and "learned the most on" in finding and "after Holm" in finding
    # The finding comes before the results table on the page.
    assert d.execute_script("return document.getElementById('exp-finding').getBoundingClientRect().top"
                            " < document.getElementById('exp-table').getBoundingClientRect().top")
    points = {tr["name"]: (tr["x"][0], tr["y"][0]) for tr in drawn["data"] if tr.get("x")}
    rows = {r["allocation"]: r for r in result["table"]}
    assert points["base model"] == (0, 0)
    assert points["train layers 0"] == pytest.approx((rows["0"]["change"][new]["mean"], rows["0"]["change"][old]["mean"]))
    assert points["train-shallow"] == pytest.approx((rows["train-shallow"]["change"][new]["mean"],
                                                     rows["train-shallow"]["change"][old]["mean"]))
    scores = figure(d, "exp-scores")
    assert [s["y0"] for s in scores["layout"]["shapes"] if s["y0"] == s["y1"]] == [pytest.approx(0.25)]
    browser.screenshot(d, "finding-experiment")
    assert not severe_console_errors(d)

    d.get(f"{stack.url}/experiments/{exp['id']}/report")
    for key in ("plan", "heatmap", "stability"):
        assert figure(d, f"report-trace-{key}")["data"]
    assert stack.traces[0]["id"] in d.find_element(By.ID, "report-trace-note").text
    assert d.find_element(By.ID, "report-finding").text == finding
    browser.screenshot(d, "finding-report")
    assert not severe_console_errors(d)


def test_compare_draws_a_panel_per_task_the_difference_and_the_plans(stack, driver):
    d = driver
    a, b = (t["id"] for t in stack.traces)
    d.get(f"{stack.url}/compare?traces={a},{b}")
    curves = figure(d, "compare-curves")
    titles = sorted(x["text"] for x in curves["layout"]["annotations"])
    assert titles == sorted(TASKS)
    lines = [tr for tr in curves["data"] if tr["mode"] == "lines"]
    assert len(lines) == 2 * len(TASKS)
    assert sum(1 for tr in curves["data"] if tr.get("showlegend", True)) == 2  # a legend of the two traces
    assert curves["height"] >= 2 * 200  # 4 panels in 2 rows, none squeezed by a legend
    diff = figure(d, "compare-difference")
    assert len([tr for tr in diff["data"] if tr["mode"] == "lines+markers"]) == len(TASKS)
    assert figure(d, "compare-plans")["data"]
    assert d.find_elements(By.ID, "compare-plan-table")
    browser.screenshot(d, "compare-multiples")
    assert not severe_console_errors(d)

    d.get(f"{stack.url}/compare")
    box = wait(d, lambda drv: drv.find_elements(By.ID, "compare-figures"), what="the empty compare page")[0]
    wait(d, lambda drv: "Choose two or more finished traces" in box.text, what="the empty message")
    assert not d.find_elements(By.CSS_SELECTOR, "#compare-figures button")  # no export buttons on nothing
    assert not d.find_elements(By.CSS_SELECTOR, "#compare-figures .js-plotly-plot")
    browser.screenshot(d, "compare-empty")
