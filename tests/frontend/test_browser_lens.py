"""The trace page's live logit lens and header in headless Chromium against the real stack (``layertracer
up``, embedded mode: the API, the embedded broker and a worker): a typed prompt and target get their
layer x position lens drawn from the worker's ``lens`` job, the same numbers the API gives for that
prompt; the colour switches to the target's probability; a prompt taken from the trace fills side B and
is drawn beside A; the header names the trace, renames it, says when it ran and links the trial launched
from it. Screenshots: tests/frontend/artifacts/live-lens.png and trace-header.png."""

from __future__ import annotations

import pytest

import browser
from browser import wait
import tiny_models
from stack import Stack, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not browser.available():
    pytest.skip("headless Chromium (Debian chromium + chromium-driver) is not installed", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

TRACE_TIMEOUT = 240
PROMPT, TARGET = "三加四等于", "七"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("lens-e2e")
    models = root / "models"
    tiny_models.save_tiny_model("qwen3", models / "tiny", tiny_models.build_tokenizer())
    (models / "corpus.txt").write_text("\n".join(f"Country {i} has the capital city {i * 7 % 13}." for i in range(100)),
                                       encoding="utf-8")
    service = Stack(root, (models,)).start()
    service.models_dir = models
    try:
        service.model = service.register_model(models / "tiny", "tiny-qwen3")
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def trace(stack):
    body = {"model_id": stack.model["id"], "name": "lens e2e trace", "task_sets": ["arithmetic_zh", "antonyms_en"],
            "perturbations": ["skip"], "options": {"limit": 4, "batch_size": 4, "similarity": False}}
    created = stack.post("/traces", body)
    return stack.wait_finished(f"/traces/{created['id']}", TRACE_TIMEOUT)


def figure(d, graph_id: str):
    script = f"var g = document.querySelector('#{graph_id} .js-plotly-plot'); return g && g.data ? {{data: g.data, layout: g.layout}} : null;"
    return wait(d, lambda drv: drv.execute_script(script), timeout=60, what=f"figure {graph_id}")


def click(d, element) -> None:
    """Click an element in the middle of the window (the page's sticky view controls cover its top)."""
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def choose(d, dropdown_id: str, label: str) -> None:
    """Pick an option of a Dash 4 dropdown by its label."""
    click(d, d.find_element(By.ID, dropdown_id))
    option = wait(d, lambda drv: [o for o in drv.find_elements(By.CSS_SELECTOR, ".dash-dropdown-option")
                                  if o.text.strip() == label], what=f"option {label}")[0]
    option.click()


def type_into(d, element_id: str, text: str) -> None:
    element = d.find_element(By.ID, element_id)
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def api_lens(stack, trace_id: str, prompt: str, target=None) -> dict:
    """The lens of a prompt straight from the API (another job on the same worker): what the page must draw."""
    job = stack.api.post(f"/traces/{trace_id}/lens", json={"prompt": prompt, **({"target": target} if target else {})})
    assert job.status_code == 202, job.text
    job_id = job.json()["job"]["id"]
    done = wait_for(lambda: (x := stack.get(f"/traces/{trace_id}/lens/{job_id}"))["job"]["status"]
                    in ("succeeded", "failed") and x, 120, "the lens job")
    assert done["job"]["status"] == "succeeded", done["job"]["error"]
    return done["result"]


def lens_drawn(d, side: str, colour_key: str, expected: dict) -> bool:
    data = figure(d, f"trace-lens-{side}")["data"]  # the empty figure until the lens comes back
    if not data:
        return False
    drawn = data[0]
    z, shown = drawn.get("z") or [], min(16, len(expected["tokens"]))  # frontend.viz.trace.LIVE_LAST at first
    want = [row[-shown:] for row in expected[colour_key]]  # the last positions
    return len(z) == len(want) and all(list(row) == pytest.approx(w, rel=1e-9) for row, w in zip(z, want))


def test_a_typed_prompt_gets_its_lens_and_two_prompts_sit_side_by_side(stack, driver, trace):
    d = driver
    trace_id = trace["id"]
    d.get(f"{stack.url}/traces/{trace_id}")
    wait(d, lambda drv: drv.find_elements(By.ID, "trace-lens-panel"), timeout=60, what="the live-lens panel")
    type_into(d, "trace-lens-prompt-a", PROMPT)
    type_into(d, "trace-lens-target-a", TARGET)
    click(d, d.find_element(By.ID, "trace-lens-run-a"))
    expected = api_lens(stack, trace_id, PROMPT, TARGET)
    # The tiny tokenizer splits 七 into byte pieces: the scored first piece reads as its bytes, never "�".
    assert expected["target"] == TARGET and "\ufffd" not in "".join(expected["tokens"]) + expected["target_token"]
    L, T = trace["summary"]["num_layers"], len(expected["tokens"])
    wait(d, lambda drv: lens_drawn(drv, "a", "top1_probs", expected), timeout=120, what="lens A")
    drawn = figure(d, "trace-lens-a")
    cells = drawn["data"][0]
    assert cells["text"] == expected["top1_tokens"] and len(cells["z"]) == L and len(cells["z"][0]) == T
    assert cells["x"] == [f"{i}: {token!r}" for i, token in enumerate(expected["tokens"])]
    assert drawn["layout"]["title"]["text"] == f"A: '{PROMPT}' · target {expected['target_token']!r}"
    message = d.find_element(By.ID, "trace-lens-msg-a").text
    assert message.startswith(f"{T} tokens × {L} layers in ")
    # Coloured by the target's probability instead.
    click(d, d.find_element(By.CSS_SELECTOR, "#trace-lens-colour input[value=target]"))
    wait(d, lambda drv: lens_drawn(drv, "a", "target_prob", expected), what="the target colouring")

    # Side B: a prompt of the trace, taken by task and number, drawn beside A.
    task = stack.get(f"/traces/{trace_id}/tasks/antonyms_en")
    choose(d, "trace-lens-task-b", "antonyms_en")
    type_into(d, "trace-lens-index-b", "1")
    wait(d, lambda drv: drv.find_element(By.ID, "trace-lens-prompt-b").get_attribute("value") == task["prompts"][1],
         what="the trace's prompt in side B")
    assert d.find_element(By.ID, "trace-lens-target-b").get_attribute("value") == task["targets"][1]
    click(d, d.find_element(By.ID, "trace-lens-run-b"))
    expected_b = api_lens(stack, trace_id, task["prompts"][1], task["targets"][1])
    wait(d, lambda drv: lens_drawn(drv, "b", "target_prob", expected_b), timeout=120, what="lens B")
    # The trace's own numbers for that prompt: its answer position is the lens's last column.
    assert [row[-1] for row in expected_b["target_prob"]] == pytest.approx(task["target_prob"][1], abs=1e-6)
    tokens_b = expected_b["tokens"]
    shown = range(max(0, len(tokens_b) - 16), len(tokens_b))  # frontend.viz.trace.LIVE_LAST positions at first
    assert figure(d, "trace-lens-b")["data"][0]["x"] == [f"{i}: {tokens_b[i]!r}" for i in shown]
    # More positions on request: every one of the prompt's.
    type_into(d, "trace-lens-last", str(len(tokens_b)) + "\n")
    wait(d, lambda drv: len(figure(drv, "trace-lens-b")["data"][0]["x"]) == len(tokens_b), what="every position of B")
    type_into(d, "trace-lens-last", "16\n")
    wait(d, lambda drv: len(figure(drv, "trace-lens-b")["data"][0]["x"]) == min(16, len(tokens_b)), what="16 positions")
    a, b = d.find_element(By.ID, "trace-lens-side-a"), d.find_element(By.ID, "trace-lens-side-b")
    assert a.location["y"] == b.location["y"] and a.location["x"] < b.location["x"]  # side by side
    panel = d.find_element(By.ID, "trace-lens-panel")
    d.set_window_size(1500, 1500)
    # the sticky view controls would cover the top of the panel in its picture
    d.execute_script("document.querySelector('.lt-controls').style.position = 'static'; arguments[0].scrollIntoView()", panel)
    browser.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = browser.ARTIFACTS / "live-lens.png"
    assert panel.screenshot(str(shot)) and shot.stat().st_size > 10_000
    d.set_window_size(1280, 900)
    assert [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]] == []


def test_the_header_names_the_trace_renames_it_and_links_its_runs(stack, driver, trace):
    d = driver
    trace_id = trace["id"]
    trial = stack.post("/trials", {"model_id": stack.model["id"], "name": "lens trial", "allocation": "0-1",
                                   "corpus": str(stack.models_dir / "corpus.txt"), "steps": 1, "batch_size": 2,
                                   "block_size": 16, "source_trace_id": trace_id})
    d.get(f"{stack.url}/traces/{trace_id}")
    title = wait(d, lambda drv: drv.find_elements(By.ID, "trace-title"), timeout=60, what="the header")[0]
    assert title.text == "lens e2e trace"
    created = d.find_element(By.ID, "trace-created")
    assert created.text in ("just now", "1 min ago", "2 min ago", "3 min ago", "4 min ago") and created.get_attribute("title").endswith("UTC")
    link = d.find_element(By.CSS_SELECTOR, "#trace-runs a")
    assert link.text.startswith("lens trial (trial, ") and link.get_attribute("href").endswith(f"/experiments/{trial['id']}")
    click(d, d.find_element(By.CSS_SELECTOR, "#trace-notes-box summary"))
    type_into(d, "trace-name", "renamed lens trace")
    click(d, d.find_element(By.ID, "trace-save"))
    wait(d, lambda drv: drv.find_element(By.ID, "trace-title").text == "renamed lens trace", what="the new name")
    assert stack.get(f"/traces/{trace_id}")["name"] == "renamed lens trace"
    head = d.find_element(By.CSS_SELECTOR, ".lt-page-head")
    browser.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert head.screenshot(str(browser.ARTIFACTS / "trace-header.png"))
    stack.api.post(f"/jobs/{trial['job']['id']}/cancel")  # the worker is free again for the next test module
