"""The forms' Advanced sections, the spec's messages next to their fields, clone links and the
corpus / benchmark checks, in headless Chromium against the real stack (``layertracer up``): what is
set in the browser is what the job's stored spec carries. Screenshots: tests/frontend/artifacts/
forms-*.png. Every wait polls with a deadline; no job is waited for (only its spec is read)."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

import browser
from browser import wait
import tiny_models
from stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not browser.available():
    pytest.skip("headless Chromium (Debian chromium + chromium-driver) is not installed", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("forms-e2e")
    models = root / "models"
    tiny_models.save_tiny_model("qwen3", models / "tiny", tiny_models.build_tokenizer())
    shutil.copytree(FIXTURES / "ceval", models / "ceval")
    (models / "corpus.txt").write_text("\n".join(f"Fact {i}: river {i} runs to sea {i % 5}." for i in range(200)),
                                       encoding="utf-8")
    service = Stack(root, (models,)).start()
    try:
        service.model = service.register_model(models / "tiny", "tiny-qwen3")
        service.models_dir = models.resolve()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def state():
    return {}


def choose(d, dropdown_id: str, label: str) -> None:
    """Pick the option of a Dash 4 dropdown whose label is ``label`` (once it is drawn: dropdowns load
    their code after the page)."""
    wait(d, lambda drv: drv.find_elements(By.ID, dropdown_id), what=f"the dropdown {dropdown_id}")[0].click()
    option = wait(d, lambda drv: [o for o in drv.find_elements(By.CSS_SELECTOR, ".dash-dropdown-option")
                                  if o.text.strip() == label or (label in o.text and len(label) > 6)],
                  what=f"option {label}")[0]
    option.click()
    wait(d, lambda drv: label in drv.find_element(By.ID, f"{dropdown_id}-value").text, what=f"{label} chosen")


def set_input(d, input_id: str, text: str) -> None:
    element = d.find_element(By.ID, input_id)
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def check(d, checklist_id: str, value: str) -> None:
    box = d.find_element(By.CSS_SELECTOR, f"#{checklist_id} input[value='{value}']")
    if not box.is_selected():
        box.find_element(By.XPATH, "./ancestor::label").click()
    wait(d, lambda drv: drv.find_element(By.CSS_SELECTOR, f"#{checklist_id} input[value='{value}']").is_selected(),
         what=f"{value} checked")


def severe_console_errors(d) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]


def test_the_trace_forms_advanced_options_reach_the_jobs_spec(stack, driver, state):
    d = driver
    d.get(stack.url + "/new/trace")
    wait(d, lambda drv: drv.find_elements(By.ID, "newtrace-submit"), what="the trace form")
    choose(d, "newtrace-model", "tiny-qwen3")
    check(d, "newtrace-tasks", "antonyms_en")
    set_input(d, "newtrace-limit", "4")
    d.find_element(By.CSS_SELECTOR, "#newtrace-advanced summary").click()
    # the lens field, added to the spec by another change, is there with its choices (no code of its own)
    wait(d, lambda drv: drv.find_element(By.ID, "newtrace-lens").is_displayed(), what="the lens field")
    set_input(d, "newtrace-top_k", "7")
    set_input(d, "newtrace-draws", "0")
    choose(d, "newtrace-plan_boundary", "min")
    d.find_element(By.ID, "newtrace-submit").click()
    # a bad value: the spec's message next to its field, and the page stays
    message = wait(d, lambda drv: drv.find_element(By.ID, "newtrace-draws-error").text, what="the draws message")
    assert message == "Input should be greater than or equal to 1"
    assert "Draws averaged for noise and mask: Input should be greater than or equal to 1." in \
        d.find_element(By.ID, "newtrace-errors").text
    assert urlparse(d.current_url).path == "/new/trace"
    browser.screenshot(d, "forms-01-trace-advanced-message")
    set_input(d, "newtrace-draws", "2")
    d.find_element(By.ID, "newtrace-submit").click()
    wait(d, lambda drv: urlparse(drv.current_url).path.startswith("/traces/"), what="the trace page")
    trace_id = urlparse(d.current_url).path.rsplit("/", 1)[1]
    trace = stack.get(f"/traces/{trace_id}")
    options = trace["spec"]["options"]
    assert (options["top_k"], options["draws"], options["plan_boundary"], options["limit"]) == (7, 2, "min", 4)
    state["trace_job"] = trace["job"]["id"]


def test_a_clone_link_fills_the_trace_form(stack, driver, state):
    d = driver
    d.get(stack.url + f"/new/trace?clone={state['trace_job']}")
    wait(d, lambda drv: "Every field is that of trace" in drv.find_element(By.TAG_NAME, "main").text, what="the clone")
    d.find_element(By.CSS_SELECTOR, "#newtrace-advanced summary").click()
    assert d.find_element(By.ID, "newtrace-top_k").get_attribute("value") == "7"
    assert d.find_element(By.ID, "newtrace-limit").get_attribute("value") == "4"
    assert "min" in d.find_element(By.ID, "newtrace-plan_boundary-value").text
    assert d.find_element(By.CSS_SELECTOR, "#newtrace-tasks input[value='antonyms_en']").is_selected()
    assert "tiny-qwen3" in d.find_element(By.ID, "newtrace-model-value").text
    browser.screenshot(d, "forms-02-trace-clone")


def test_the_trial_form_checks_paths_and_sends_its_advanced_options(stack, driver):
    d = driver
    models = stack.models_dir
    d.get(stack.url + f"/new/trial?model={stack.model['id']}&ranges=1-2")
    wait(d, lambda drv: "Trainable" in drv.find_element(By.ID, "newtrial-count").text, what="the trial form")
    set_input(d, "newtrial-corpus", str(models / "nope.txt"))
    d.find_element(By.ID, "newtrial-corpus").send_keys(Keys.TAB)
    wait(d, lambda drv: "does not exist" in drv.find_element(By.ID, "newtrial-corpus-check").text, what="the missing corpus")
    set_input(d, "newtrial-corpus", "/etc/passwd")
    d.find_element(By.ID, "newtrial-corpus").send_keys(Keys.TAB)
    wait(d, lambda drv: "outside the allowed roots" in drv.find_element(By.ID, "newtrial-corpus-check").text,
         what="the corpus outside the roots")
    set_input(d, "newtrial-corpus", str(models / "corpus.txt"))
    d.find_element(By.ID, "newtrial-corpus").send_keys(Keys.TAB)
    wait(d, lambda drv: drv.find_element(By.ID, "newtrial-corpus-check").text.startswith("✓"), what="the corpus check")
    set_input(d, "newtrial-benchmarks", f"ceval:{models / 'ceval'}")
    d.find_element(By.ID, "newtrial-benchmarks").send_keys(Keys.TAB)
    wait(d, lambda drv: drv.find_element(By.ID, "newtrial-benchmarks-check").text.startswith("✓ ceval"),
         what="the benchmark check")
    set_input(d, "newtrial-seeds", "3")
    set_input(d, "newtrial-steps", "2")
    set_input(d, "newtrial-batch_size", "2")
    set_input(d, "newtrial-block_size", "32")
    d.find_element(By.CSS_SELECTOR, "#newtrial-advanced summary").click()
    set_input(d, "newtrial-warmup_steps", "1")
    set_input(d, "newtrial-eval_shots", "0")
    set_input(d, "newtrial-eval_limit", "3")
    choose(d, "newtrial-eval_mode", "cloze")
    set_input(d, "newtrial-labels", "1-2 = middle two")
    browser.screenshot(d, "forms-03-trial-advanced")
    d.find_element(By.ID, "newtrial-submit").click()
    outcome = wait(d, lambda drv: ("page" if urlparse(drv.current_url).path.startswith("/experiments/") else
                                   drv.find_element(By.ID, "newtrial-errors").text), what="the trial page")
    assert outcome == "page" or "queued" in outcome, outcome
    wait(d, lambda drv: urlparse(drv.current_url).path.startswith("/experiments/"), what="the trial page")
    spec = stack.get(f"/experiments/{urlparse(d.current_url).path.rsplit('/', 1)[1]}")["spec"]
    assert (spec["warmup_steps"], spec["eval_shots"], spec["eval_limit"], spec["eval_mode"]) == (1, 0, 3, "cloze")
    assert spec["labels"] == {"1-2": "middle two"} and spec["allocations"] == ["1-2"] and spec["seeds"] == [3]
    assert spec["corpus"] == str(models / "corpus.txt") and spec["benchmarks"] == [f"ceval:{models / 'ceval'}"]
    assert severe_console_errors(d) == []


def test_new_experiment_previews_each_allocation_and_offers_what_was_used_before(stack, driver):
    d = driver
    models = stack.models_dir
    d.get(stack.url + f"/new/experiment?model={stack.model['id']}&allocations=train-shallow;0;full")
    wait(d, lambda drv: drv.find_elements(By.CSS_SELECTOR, "#newexp-preview .js-plotly-plot"), what="the preview")
    info = stack.model["info"]
    blocks, total = info["block_parameters"], info["num_parameters"]
    lines = wait(d, lambda drv: drv.find_element(By.ID, "newexp-preview-text").text, what="the shares").splitlines()
    # trainable shares as the model's own per-block counts give them (full: everything)
    assert lines[0] == f"train-shallow: {blocks[0] + blocks[1]:,} of {total:,} parameters ({(blocks[0] + blocks[1]) / total:.1%})"
    assert lines[1] == f"0: {blocks[0]:,} of {total:,} parameters ({blocks[0] / total:.1%})"
    assert lines[2].startswith(f"full: {total:,} of {total:,} parameters (100.0%)")
    rows = d.execute_script("return document.querySelector('#newexp-preview .js-plotly-plot').data[0].y")
    assert rows == [f"train-shallow · {(blocks[0] + blocks[1]) / total:.1%}", f"0 · {blocks[0] / total:.1%}",
                    "full · 100.0%"]
    estimate = d.find_element(By.ID, "newexp-estimate").text
    assert f"9 trials, {100 * 8 * 1 * 256 * 9:,} training tokens" in estimate  # 3 seeds x 3 allocations, defaults
    set_input(d, "newexp-allocations", "train-deep")
    wait(d, lambda drv: drv.find_element(By.ID, "newexp-preview-text").text.startswith("train-deep:"), what="the update")
    wait(d, lambda drv: "3 trials" in drv.find_element(By.ID, "newexp-estimate").text, what="the estimate's update")
    # the corpus the trial before used is offered, and fills the field
    choose(d, "newexp-used", str(models / "corpus.txt"))
    wait(d, lambda drv: drv.find_element(By.ID, "newexp-corpus").get_attribute("value") == str(models / "corpus.txt"),
         what="the corpus filled")
    wait(d, lambda drv: drv.find_element(By.ID, "newexp-corpus-check").text.startswith("✓"), what="its check")
    # registered under a name (with the tab's token), it is offered by that name
    set_input(d, "newexp-register-name", "river facts")
    d.find_element(By.ID, "newexp-register").click()
    wait(d, lambda drv: drv.find_element(By.ID, "newexp-register-status").text.startswith("registered as 'river facts'"),
         what="the registration")
    registered = [e for e in stack.api.get("/paths/registered").json()["data"] if e["kind"] == "corpus"]
    assert [(e["name"], e["path"]) for e in registered] == [("river facts", str((models / "corpus.txt").resolve()))]
    choose(d, "newexp-used", "river facts")
    browser.screenshot(d, "forms-04-experiment-preview")
    assert severe_console_errors(d) == []
