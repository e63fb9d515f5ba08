"""The verdict panel of the trace page in headless Chromium against the real stack (``layertracer up``,
embedded mode): a trace runs through the API; its page opens on the plan, its trainable share, its
stability over the bootstrap resamples and the particle warnings, all as the API's result says; in the
drawn strip the vulnerable layer's marker overlaps no particle diamond; the depth-axis switch redraws
it; the line view follows the metric. Screenshots: tests/frontend/artifacts/verdict-panel.png and
depth-lines.png."""

from __future__ import annotations

import pytest

import browser
from browser import wait
import tiny_models
from stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not browser.available():
    pytest.skip("headless Chromium (Debian chromium + chromium-driver) is not installed", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402

TRACE_TIMEOUT = 240
VULNERABLE_RGB = "rgb(213, 94, 0)"  # frontend.viz.common.VULNERABLE_COLOUR, #D55E00

# Boxes of the drawn markers of the verdict strip: the vulnerable layer's (its colour) and the diamonds.
MARKER_BOXES = """
const root = document.querySelector('#trace-verdict .js-plotly-plot');
const boxes = {vulnerable: [], diamonds: []};
root.querySelectorAll('.scatterlayer .trace .points path.point').forEach(p => {
  const r = p.getBoundingClientRect(), fill = getComputedStyle(p).fill, box = [r.left, r.top, r.right, r.bottom];
  if (fill === arguments[0]) boxes.vulnerable.push(box); else if (fill === 'rgb(255, 255, 255)') boxes.diamonds.push(box);
});
return boxes;
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdict-e2e")
    models = root / "models"
    tiny_models.save_tiny_model("qwen3", models / "tiny", tiny_models.build_tokenizer())
    service = Stack(root, (models,)).start()
    try:
        service.model = service.register_model(models / "tiny", "tiny-qwen3")
        yield service
    finally:
        service.stop()


def figure(d, graph_id: str):
    script = f"var g = document.querySelector('#{graph_id} .js-plotly-plot'); return g && g.data ? {{data: g.data, layout: g.layout}} : null;"
    return wait(d, lambda drv: drv.execute_script(script), timeout=60, what=f"figure {graph_id}")


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_the_verdict_opens_the_trace_page(stack, driver):
    d = driver
    # A random tiny model's answer probability barely moves: a zero rise threshold gives every task
    # particles that move between resamples, so the strip has a histogram to draw.
    trace = stack.post("/traces", {
        "model_id": stack.model["id"], "task_sets": ["antonyms_en", "plural_en", "arithmetic_en"],
        "perturbations": ["skip"],
        "options": {"limit": 8, "batch_size": 8, "particle_delta": 0.0, "particle_floor": 0.0, "seed": 3},
    })
    stack.wait_finished(f"/traces/{trace['id']}", TRACE_TIMEOUT)
    result = stack.get(f"/traces/{trace['id']}/result")
    plan = result["freeze_plan"]
    L = result["num_layers"]
    d.get(f"{stack.url}/traces/{trace['id']}")
    head = wait(d, lambda drv: drv.find_elements(By.ID, "trace-verdict-plan"), timeout=60, what="the verdict")[0]
    assert " ".join(head.text.split()).startswith(f"Verdict: train {plan['train_ranges']} · freeze {plan['freeze_ranges']}")
    assert d.find_element(By.ID, "trace-verdict-share").text.startswith(f"{len(plan['train_layers'])} of {L} blocks trainable")
    stability = d.find_element(By.ID, "trace-verdict-stability").text
    assert stability.startswith(f"this plan in {round(100 * plan['stability']['share'])}% of 1000 resamples")
    warnings = [t["particle_bootstrap"]["warning"] for t in result["tasks"].values() if t["particle_bootstrap"]["warning"]]
    assert warnings  # 8 prompts a task are fewer than the advised 20
    assert d.find_element(By.ID, "trace-verdict-warnings").text.splitlines() == warnings
    # The verdict is the first thing on the page, above the summary and the other figures.
    panel = d.find_element(By.ID, "trace-verdict-panel")
    assert panel.location["y"] < d.find_element(By.ID, "trace-legend").location["y"]
    assert panel.location["y"] < d.find_element(By.ID, "trace-tasks").location["y"]
    drawn = figure(d, "trace-verdict")
    by_name = {t.get("name"): t for t in drawn["data"]}
    assert by_name["vulnerable layer"]["x"] == [result["vulnerable_layer"]] and by_name["vulnerable layer"]["yaxis"] == "y4"
    assert by_name["task particle"]["yaxis"] == "y2"
    for name, task in result["tasks"].items():
        counts = task["particle_bootstrap"]["counts"]
        assert by_name[name]["y"] == pytest.approx([counts.get(str(l), 0) / 1000 for l in range(L)])
    boxes = d.execute_script(MARKER_BOXES, VULNERABLE_RGB)
    assert len(boxes["vulnerable"]) == 1 and boxes["diamonds"], boxes
    assert not [box for box in boxes["diamonds"] if overlaps(box, boxes["vulnerable"][0])]
    browser.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = browser.ARTIFACTS / "verdict-panel.png"
    d.set_window_size(1280, 1700)  # the whole panel in the window: an element's screenshot stops at its edge
    assert panel.screenshot(str(shot)) and shot.stat().st_size > 10_000
    d.set_window_size(1280, 900)
    # The depth-axis switch redraws the strip on the normalised depth.
    d.find_element(By.CSS_SELECTOR, "#trace-norm input[type=checkbox]").click()
    wait(d, lambda drv: figure(drv, "trace-verdict")["data"][0]["x"][0] == pytest.approx(1 / L), what="the normalised strip")
    vulnerable = next(t for t in figure(d, "trace-verdict")["data"] if t.get("name") == "vulnerable layer")
    assert vulnerable["x"] == [pytest.approx((result["vulnerable_layer"] + 1) / L)]
    # The line view follows the metric: log10(1 + rank) per task, as the API's overview has it.
    overview = stack.get(f"/traces/{trace['id']}/overview")
    d.find_element(By.CSS_SELECTOR, "#trace-metric input[value=logrank]").click()
    wait(d, lambda drv: "log10(1 + rank)" in figure(drv, "trace-lines")["layout"]["title"]["text"], what="the log-rank lines")
    lines = {t.get("name"): t for t in figure(d, "trace-lines")["data"]}
    for name, task in overview["tasks"].items():
        assert lines[name]["y"] == pytest.approx(task["mean_log_rank"])
    card = d.find_element(By.ID, "trace-lines")
    d.set_window_size(1280, 1700)
    # below the sticky view controls, which would cover the top of the card
    d.execute_script("window.scrollTo(0, arguments[0].getBoundingClientRect().top + window.scrollY - 360)", card)
    assert card.screenshot(str(browser.ARTIFACTS / "depth-lines.png"))
    d.set_window_size(1280, 900)
    assert [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]] == []
