"""The dashboard in headless Chromium against the real stack in embedded mode (``layertracer up``):
launch a trace from the form, watch it finish, read the heatmap, change the view, share it and reopen
the link in a fresh browser, open the trial form from the freeze plan, launch a trial and see its page.
Screenshots of every page go to tests/frontend/artifacts/. Every wait polls with a deadline."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

import browser
from browser import wait
import tiny_models
from stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not browser.available():
    pytest.skip("headless Chromium (Debian chromium + chromium-driver) is not installed", allow_module_level=True)

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TRACE_TIMEOUT = 240
TRIAL_TIMEOUT = 420


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard-e2e")
    models = root / "models"
    tiny_models.save_tiny_model("qwen3", models / "tiny", tiny_models.build_tokenizer())
    shutil.copytree(FIXTURES / "ceval", models / "ceval")
    corpus = models / "corpus.txt"
    corpus.write_text("\n".join(f"The capital of country {i} is city {i * 7 % 13}. It is a fact number {i}." for i in range(200)),
                      encoding="utf-8")
    service = Stack(root, (models,)).start()
    try:
        service.model = service.register_model(models / "tiny", "tiny-qwen3")
        service.models_dir = models
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def driver(downloads):
    d = browser.new_driver(downloads=downloads)
    yield d
    browser.quit_driver(d)


@pytest.fixture(scope="module")
def state():
    return {}


def severe_console_errors(d) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]


def choose(d, dropdown_id: str, label_part: str) -> None:
    """Pick an option of a Dash 4 dropdown by (part of) its label."""
    d.find_element(By.ID, dropdown_id).click()
    option = wait(d, lambda drv: [o for o in drv.find_elements(By.CSS_SELECTOR, ".dash-dropdown-option")
                                  if label_part in o.text], what=f"option {label_part}")[0]
    option.click()
    wait(d, lambda drv: label_part in drv.find_element(By.ID, f"{dropdown_id}-value").text, what=f"{label_part} chosen")


def check(d, checklist_id: str, value: str) -> None:
    box = d.find_element(By.CSS_SELECTOR, f"#{checklist_id} input[value='{value}']")
    if not box.is_selected():
        box.find_element(By.XPATH, "./ancestor::label").click()
    wait(d, lambda drv: drv.find_element(By.CSS_SELECTOR, f"#{checklist_id} input[value='{value}']").is_selected(),
         what=f"{value} checked")


def set_input(d, input_id: str, text: str) -> None:
    element = d.find_element(By.ID, input_id)
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def figure(d, graph_id: str):
    """The figure plotly drew in the browser (its data and layout), once drawn."""
    script = f"var g = document.querySelector('#{graph_id} .js-plotly-plot'); return g && g.data ? {{data: g.data, layout: g.layout}} : null;"
    return wait(d, lambda drv: drv.execute_script(script), timeout=60, what=f"figure {graph_id}")


def query(d) -> dict:
    return {k: v[-1] for k, v in parse_qs(urlparse(d.current_url).query).items()}


def test_launch_a_trace_from_the_form_and_watch_it_finish(stack, driver, state):
    d = driver
    d.get(stack.url + "/new/trace")
    wait(d, lambda drv: drv.find_elements(By.ID, "newtrace-submit"), what="the trace form")
    # Submitting an empty form shows what to fix, and stays on the page.
    d.find_element(By.ID, "newtrace-submit").click()
    errors = wait(d, lambda drv: drv.find_element(By.ID, "newtrace-errors").text, what="validation messages")
    assert "Choose a model." in errors and "at least one task set" in errors
    assert urlparse(d.current_url).path == "/new/trace"
    choose(d, "newtrace-model", "tiny-qwen3")
    # Upload a task file: it is registered through the API and checked in the form.
    task_file = stack.models_dir / "colours.jsonl"
    task_file.write_text("\n".join('{"prompt": "The colour of %s is", "target": " %s"}' % pair for pair in
                                   [("grass", "green"), ("snow", "white"), ("coal", "black"), ("sky", "blue")]) + "\n")
    d.find_element(By.CSS_SELECTOR, ".lt-upload-block summary").click()
    set_input(d, "newtrace-upload-name", "colours")
    d.find_element(By.CSS_SELECTOR, "#newtrace-upload input[type=file]").send_keys(str(task_file))
    wait(d, lambda drv: "Uploaded colours (4 items)" in drv.find_element(By.ID, "newtrace-upload-msg").text,
         what="the upload")
    uploaded = [t for t in stack.get("/task-sets")["data"] if t["name"] == "colours"]
    assert uploaded and d.find_element(By.CSS_SELECTOR, f"#newtrace-tasks input[value='{uploaded[0]['id']}']").is_selected()
    check(d, "newtrace-tasks", "antonyms_en")
    check(d, "newtrace-tasks", "plural_en")
    check(d, "newtrace-perts", "mask")
    set_input(d, "newtrace-limit", "6")
    set_input(d, "newtrace-keep", "0.5")
    d.find_element(By.CSS_SELECTOR, "#newtrace-advanced summary").click()  # the options beyond the common ones
    set_input(d, "newtrace-position_task", "plural_en")
    set_input(d, "newtrace-position_prompt", "1")
    browser.screenshot(d, "01-new-trace-form")
    # Keyboard: focus the submit button and press Enter.
    submit = d.find_element(By.ID, "newtrace-submit")
    d.execute_script("arguments[0].focus()", submit)
    submit.send_keys(Keys.ENTER)
    wait(d, lambda drv: urlparse(drv.current_url).path.startswith("/traces/"), timeout=30, what="the trace page")
    trace_id = urlparse(d.current_url).path.rsplit("/", 1)[1]
    state["trace_id"] = trace_id
    spec = stack.get(f"/traces/{trace_id}")["spec"]
    assert spec["perturbations"] == ["skip", "mask:keep=0.5"] or spec.get("perturbations", [None])[0] == "skip"
    # The progress is shown until the figures replace it.
    seen = wait(d, lambda drv: drv.find_elements(By.ID, "trace-progress") or drv.find_elements(By.ID, "trace-tasks"),
                what="progress or figures")
    assert seen
    browser.screenshot(d, "02-trace-running", full_page=False)
    figure(d, "trace-tasks") if wait(d, lambda drv: drv.find_elements(By.CSS_SELECTOR, "#trace-tasks .js-plotly-plot"),
                                     timeout=TRACE_TIMEOUT, what="the trace to finish") else None
    assert stack.get(f"/traces/{trace_id}")["status"] == "succeeded"
    browser.screenshot(d, "03-trace-page")
    assert severe_console_errors(d) == []


def test_the_heatmap_shows_the_results_numbers(stack, driver, state, downloads):
    d = driver
    result = stack.get(f"/traces/{state['trace_id']}/result")
    fig = figure(d, "trace-tasks")
    heat = fig["data"][0]
    assert heat["y"] == list(result["tasks"])
    for name, row in zip(heat["y"], heat["z"]):
        assert row == pytest.approx(result["tasks"][name]["mean_target_prob"], rel=1e-9, abs=1e-12)
    assert "layer" in fig["layout"]["xaxis"]["title"]["text"]
    stability = figure(d, "trace-stability")
    lines = {t["name"]: t["y"] for t in stability["data"] if t.get("mode") == "lines+markers"}
    assert set(lines) == set(result["sensitivities"])
    assert lines["skip"] == pytest.approx(result["sensitivities"]["skip"]["mean_js"])
    assert f"vulnerable layer {result['vulnerable_layer']}" in d.find_element(By.ID, "trace-stability").text
    position = figure(d, "trace-position")
    view = result["position_view"]
    assert (view["task"], view["prompt_index"]) == ("plural_en", 1)
    assert "plural_en prompt #1" in position["layout"]["title"]["text"]
    legend = d.find_element(By.ID, "trace-legend").text
    assert "Task particle" in legend and "vulnerable layer" in legend
    # Exports: PNG/SVG buttons for each figure; the CSV of the heatmap downloads with the plotted numbers.
    assert len(d.find_elements(By.CSS_SELECTOR, "button[id*='img-export']")) >= 12
    d.find_element(By.XPATH, "//button[contains(@id, 'trace-dl') and contains(@id, '\"what\":\"tasks\"') and text()='CSV']").click()
    path = downloads / f"trace-{state['trace_id']}-tasks.csv"
    wait(d, lambda drv: path.is_file() and path.stat().st_size > 0, what="the CSV download")
    d.find_element(By.XPATH, "//button[contains(@id, 'img-export') and contains(@id, 'trace-tasks') and text()='SVG']").click()
    svg = downloads / "trace-tasks.svg"
    wait(d, lambda drv: svg.is_file() and svg.stat().st_size > 0, what="the SVG download")
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<svg") and "antonyms_en" in svg.read_text(encoding="utf-8")
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert len(rows) == result["num_layers"] * len(result["tasks"])
    assert float(rows[0]["prob"]) == pytest.approx(result["tasks"][rows[0]["task"]]["mean_target_prob"][0])


LAZY_PROBE = """
const done = arguments[arguments.length - 1];
const figure = title => ({data: [{type: 'bar', x: [1, 2], y: [3, 4]}], layout: {title: {text: title}, height: 321}});
const below = document.documentElement.scrollHeight + 3000;
function graph(offset) {
  const div = document.createElement('div');
  Object.assign(div.style, {position: 'absolute', left: '0', top: (below + offset) + 'px', width: '400px'});
  document.body.appendChild(div);
  return div;
}
const later = graph(0), gone = graph(2000), seen = graph(4000), now = graph(6000);  // in this document order
const order = [], out = {};
Plotly.react(later, figure('first')).then(() => order.push('later'));
Plotly.react(later, figure('second'));                 // a newer figure for a graph that still waits
Plotly.react(gone, figure('never')).then(() => order.push('gone'));
Plotly.react(seen, figure('seen')).then(() => order.push('seen'));
Plotly.react(now, figure('now'));
out.drawnAtOnce = [later, gone, seen, now].some(g => g._fullLayout);
out.waiting = LayerTracerFigures.waiting();
out.reserved = later.style.minHeight;
Plotly.purge(gone);                                     // the page was left before it was drawn
out.waitingAfterPurge = LayerTracerFigures.waiting();
LayerTracerFigures.drawNow(now);                        // what the PNG / SVG export does
out.drawNow = !!now._fullLayout;
window.scrollTo(0, below + 4000);                       // the last of the three scrolls into view
(function poll() {
  if (!(later._fullLayout && seen._fullLayout)) { setTimeout(poll, 20); return; }
  setTimeout(() => {
    Object.assign(out, {order, title: later._fullLayout.title.text, height: later._fullLayout.height,
                        reservedAfter: later.style.minHeight, goneDrawn: !!gone._fullLayout, waitingAtEnd: LayerTracerFigures.waiting()});
    [later, gone, seen, now].forEach(g => { Plotly.purge(g); g.remove(); });  // the page stays as it was for the tests after
    done(out);
  }, 200);
})();
"""


def test_figures_out_of_view_wait_and_are_drawn_when_seen_or_when_the_browser_is_idle(driver):
    """assets/lazy_figures.js: Plotly.react on a graph never drawn waits (its height reserved) until the
    graph scrolls into view or the browser is idle, the newest figure wins, purge forgets it, drawNow
    draws at once; drawn graphs (above) are updated at once."""
    d = driver
    figure(d, "trace-tasks")  # the trace page of the tests above: plotly.js is loaded
    out = d.execute_async_script(LAZY_PROBE)
    d.execute_script("window.scrollTo(0, 0)")
    assert out["drawnAtOnce"] is False and out["waiting"] == 4 and out["reserved"] == "321px"
    assert out["waitingAfterPurge"] == 3 and out["drawNow"] is True
    # The purged graph's promise settles at once (dcc.Graph goes on), without drawing; the graph scrolled
    # into view is drawn before the one above it, which waited for idle time.
    assert out["order"] == ["gone", "seen", "later"]
    assert (out["title"], out["height"], out["reservedAfter"]) == ("second", 321, "")
    assert out["goneDrawn"] is False and out["waitingAtEnd"] == 0


def test_the_view_lives_in_the_url_and_a_shared_link_restores_it(stack, driver, state):
    d = driver
    choose(d, "trace-task", "plural_en")
    d.find_element(By.CSS_SELECTOR, "#trace-metric input[value='entropy']").find_element(By.XPATH, "./ancestor::label").click()
    d.find_element(By.CSS_SELECTOR, "#trace-norm input[value='norm']").find_element(By.XPATH, "./ancestor::label").click()
    d.find_element(By.CSS_SELECTOR, "#trace-pert input[value='mask(keep=0.5)']").find_element(By.XPATH, "./ancestor::label").click()
    wait(d, lambda drv: query(drv) == {"task": "plural_en", "metric": "entropy", "pert": "skip", "norm": "1"},
         what="the URL to carry the view")
    wait(d, lambda drv: "plural_en" in (figure(drv, "trace-prompts")["layout"]["title"]["text"]), what="the prompt heatmap")
    d.find_element(By.ID, "trace-share-btn").click()
    link = wait(d, lambda drv: drv.find_element(By.ID, "trace-share-url").get_attribute("value"), what="the share link")
    assert link.startswith(stack.url + f"/traces/{state['trace_id']}?") and "task=plural_en" in link
    browser.screenshot(d, "04-trace-view-changed")
    # A new browser session (fresh profile) opens the link and finds the same view.
    other = browser.new_driver()
    try:
        other.get(link)
        prompts = figure(other, "trace-prompts")
        assert "plural_en" in prompts["layout"]["title"]["text"] and "entropy" in prompts["layout"]["title"]["text"]
        assert "normalised depth" in prompts["layout"]["xaxis"]["title"]["text"]
        assert other.find_element(By.ID, "trace-task-value").text == "plural_en"
        assert other.find_element(By.CSS_SELECTOR, "#trace-metric input[value='entropy']").is_selected()
        assert other.find_element(By.CSS_SELECTOR, "#trace-norm input[value='norm']").is_selected()
        assert not other.find_element(By.CSS_SELECTOR, "#trace-pert input[value='mask(keep=0.5)']").is_selected()
        stability = figure(other, "trace-stability")
        assert [t["name"] for t in stability["data"] if t.get("mode") == "lines+markers"] == ["skip"]
        browser.screenshot(other, "05-shared-link-fresh-browser")
        assert severe_console_errors(other) == []
    finally:
        browser.quit_driver(other)


def test_the_freeze_plan_opens_the_trial_form_with_its_ranges(stack, driver, state):
    d = driver
    plan = stack.get(f"/traces/{state['trace_id']}/result")["freeze_plan"]
    d.find_element(By.ID, "trace-launch").click()
    wait(d, lambda drv: urlparse(drv.current_url).path == "/new/trial", what="the trial form")
    assert query(d) == {"model": stack.model["id"], "ranges": plan["train_ranges"], "trace": state["trace_id"]}
    ranges = wait(d, lambda drv: drv.find_element(By.ID, "newtrial-ranges").get_attribute("value"), what="the ranges")
    assert ranges == plan["train_ranges"]
    info = stack.model["info"]
    trainable = sum(info["block_parameters"][l] for l in plan["train_layers"])
    count = d.find_element(By.ID, "newtrial-count").text
    assert f"{trainable:,} of {info['num_parameters']:,}" in count
    # The picker: a preset, then a click on the layer strip, update the ranges and the count live.
    d.find_element(By.XPATH, "//button[text()='train-deep']").click()
    wait(d, lambda drv: drv.find_element(By.ID, "newtrial-ranges").get_attribute("value") == "2-3", what="train-deep")
    expected = info["block_parameters"][2] + info["block_parameters"][3]
    wait(d, lambda drv: f"{expected:,} of" in drv.find_element(By.ID, "newtrial-count").text, what="the live count")
    d.find_element(By.XPATH, "//button[text()='train-shallow']").click()
    wait(d, lambda drv: drv.find_element(By.ID, "newtrial-ranges").get_attribute("value") == "0-1", what="train-shallow")
    bars = wait(d, lambda drv: drv.find_elements(By.CSS_SELECTOR, "#newtrial-strip .bars .point path"), what="the strip")
    ActionChains(d).move_to_element(bars[3]).pause(0.3).click().perform()  # plotly's click on bar 3
    wait(d, lambda drv: drv.find_element(By.ID, "newtrial-ranges").get_attribute("value") == "0-1,3", what="a strip click")
    browser.screenshot(d, "06-new-trial-from-plan")


def test_launch_a_trial_and_see_its_results(stack, driver, state):
    d = driver
    models = stack.models_dir
    set_input(d, "newtrial-corpus", str(models / "corpus.txt"))
    set_input(d, "newtrial-benchmarks", f"ceval:{models / 'ceval'}")
    set_input(d, "newtrial-seeds", "1, 1")
    set_input(d, "newtrial-steps", "2")
    set_input(d, "newtrial-batch_size", "2")
    set_input(d, "newtrial-block_size", "32")
    d.find_element(By.ID, "newtrial-submit").click()
    errors = wait(d, lambda drv: drv.find_element(By.ID, "newtrial-errors").text, what="the seed message")
    assert "a seed is listed twice" in errors
    set_input(d, "newtrial-seeds", "1")
    d.find_element(By.ID, "newtrial-submit").click()
    wait(d, lambda drv: urlparse(drv.current_url).path.startswith("/experiments/"), timeout=30, what="the trial page")
    experiment_id = urlparse(d.current_url).path.rsplit("/", 1)[1]
    exp = stack.get(f"/experiments/{experiment_id}")
    assert exp["kind"] == "trial" and exp["spec"]["allocations"] == ["0-1,3"] or exp["spec"].get("allocation") == "0-1,3"
    browser.screenshot(d, "07-trial-running", full_page=False)
    wait(d, lambda drv: drv.find_elements(By.CSS_SELECTOR, "#exp-scores .js-plotly-plot"), timeout=TRIAL_TIMEOUT,
         what="the trial to finish")
    stack.wait_finished(f"/experiments/{experiment_id}", 30)
    table = d.find_element(By.ID, "exp-table").text
    assert "0-1,3" in table and "base" in table
    assert d.find_element(By.ID, "exp-provenance").text.count("\n") >= 5
    loss = figure(d, "exp-loss")
    assert loss["data"] and loss["data"][0]["x"]
    browser.screenshot(d, "08-trial-page")
    # Lineage: the trial was launched from the trace's plan, and links back to it.
    assert exp["source_trace_id"] == state["trace_id"]
    assert d.find_element(By.ID, "exp-source-trace").get_attribute("href").endswith(f"/traces/{state['trace_id']}")
    # Name, tags and notes: edited on the page, saved through the API, shown in the heading.
    d.find_element(By.CSS_SELECTOR, "#exp-notes-box summary").click()
    set_input(d, "exp-name", "plan trial")
    set_input(d, "exp-tags", "demo, layer 0")
    notes = d.find_element(By.ID, "exp-notes")
    notes.clear()
    notes.send_keys("trained the plan's ranges edited to 0-1,3")
    d.find_element(By.ID, "exp-save").click()
    wait(d, lambda drv: drv.find_element(By.ID, "exp-save-msg").text == "Saved.", what="the notes saved")
    assert d.find_element(By.ID, "exp-title").text == "plan trial"
    saved = stack.get(f"/experiments/{experiment_id}")
    assert (saved["name"], saved["tags"], saved["notes"]) == ("plan trial", ["demo", "layer 0"],
                                                             "trained the plan's ranges edited to 0-1,3")
    browser.screenshot(d, "08b-trial-notes", full_page=False)
    state["experiment_id"] = experiment_id
    assert severe_console_errors(d) == []


def test_runs_and_compare_pages(stack, driver, state):
    d = driver
    d.find_element(By.LINK_TEXT, "Runs").click()  # the header's links change pages without reloading
    wait(d, lambda drv: urlparse(drv.current_url).path == "/" and drv.find_elements(By.ID, "runs-table"), what="the runs page")
    # runs are listed by name (the start of the id when unnamed), never by the 32-hex id
    wait(d, lambda drv: state["trace_id"][:8] in drv.find_element(By.ID, "runs-table").text, what="the runs list")
    assert state["trace_id"] not in d.find_element(By.ID, "runs-table").text
    set_input(d, "runs-q", "no-such-run-xyz")
    d.find_element(By.ID, "runs-q").send_keys(Keys.ENTER)
    wait(d, lambda drv: "No traces matching" in drv.find_element(By.ID, "runs-table").text, what="the empty state")
    assert query(d).get("q") == "no-such-run-xyz"
    set_input(d, "runs-q", "")
    d.find_element(By.ID, "runs-q").send_keys(Keys.ENTER)
    d.find_element(By.CSS_SELECTOR, "#runs-kind input[value='experiments']").find_element(By.XPATH, "./ancestor::label").click()
    wait(d, lambda drv: "trial" in drv.find_element(By.ID, "runs-table").text, what="the trials list")
    listed = d.find_element(By.ID, "runs-table").text
    assert "plan trial" in listed and "demo" in listed and "plan of trace" in listed
    assert "just now" in listed or " ago" in listed  # relative times, not ISO
    browser.screenshot(d, "09-runs")
    d.get(stack.url + f"/compare?traces={state['trace_id']}")
    chosen = wait(d, lambda drv: drv.find_elements(By.ID, "compare-ids"), what="the trace picker")[0]
    assert state["trace_id"][:8] in chosen.text
    curves = figure(d, "compare-curves")
    assert curves["data"] and curves["layout"]["xaxis"]["title"]["text"].startswith("normalised depth")
    browser.screenshot(d, "10-compare")
    # New experiment: presets added to the list of compared allocations, with the live count.
    d.get(stack.url + f"/new/experiment?model={stack.model['id']}")
    wait(d, lambda drv: "of 61,792 parameters" in drv.find_element(By.ID, "newexp-count").text or
         "Trainable" in drv.find_element(By.ID, "newexp-count").text, what="the experiment form")
    set_input(d, "newexp-allocations", "full")
    d.find_element(By.XPATH, "//button[text()='train-shallow']").click()
    wait(d, lambda drv: drv.find_element(By.ID, "newexp-ranges").get_attribute("value") == "0-1", what="train-shallow")
    d.find_element(By.ID, "newexp-add").click()
    wait(d, lambda drv: drv.find_element(By.ID, "newexp-allocations").get_attribute("value") == "full\ntrain-shallow",
         what="the allocation added")
    browser.screenshot(d, "10b-new-experiment")
    d.get(stack.url + "/traces/does-not-exist")
    message = wait(d, lambda drv: drv.find_elements(By.CSS_SELECTOR, ".lt-error"), what="the error box")[0].text
    assert "could not be loaded" in message and "404" in message
    browser.screenshot(d, "11-trace-not-found", full_page=False)


def test_a_running_trace_shows_progress_and_can_be_cancelled(stack, driver):
    d = driver
    trace = stack.post("/traces", {"model_id": stack.model["id"], "task_sets": ["all"],
                                   "perturbations": ["skip", "noise:scale=1.0", "mask:keep=0.5"],
                                   "options": {"draws": 20, "batch_size": 2}})
    d.get(stack.url + f"/traces/{trace['id']}")
    wait(d, lambda drv: drv.find_elements(By.ID, "trace-cancel"), timeout=60, what="the running trace's cancel button")
    assert d.find_elements(By.CSS_SELECTOR, "#trace-progress [role=progressbar]")
    d.find_element(By.ID, "trace-cancel").click()
    wait(d, lambda drv: "Cancel requested" in drv.find_element(By.ID, "trace-body").text or
         "cancelled" in drv.find_element(By.ID, "trace-body").text, what="the cancel acknowledged")
    wait(d, lambda drv: "was cancelled" in drv.find_element(By.ID, "trace-body").text, timeout=120,
         what="the page to show the cancelled trace")
    assert stack.get(f"/traces/{trace['id']}")["status"] == "cancelled"
    browser.screenshot(d, "14-trace-cancelled", full_page=False)
