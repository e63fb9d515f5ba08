"""With auth on (LAYERTRACER_AUTH=token): reads need a token or a share link. A user pastes a token,
the trace page loads, Share makes a read-only link, and a fresh browser with only that link sees the
same view; without it, the API's refusal is shown plainly."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

import browser
import tiny_models
from stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not browser.available():
    pytest.skip("headless Chromium (Debian chromium + chromium-driver) is not installed", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

from test_browser import figure, severe_console_errors, wait  # noqa: E402


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard-auth")
    models = root / "models"
    tiny_models.save_tiny_model("qwen3", models / "tiny", tiny_models.build_tokenizer())
    service = Stack(root, (models,), extra_env={"LAYERTRACER_AUTH": "token",
                                                 "LAYERTRACER_SECRET_KEY": "dashboard-e2e-secret-0123456789"}).start()
    try:
        token = service.admin("create-token", "dashboard-tester").splitlines()[-1].strip()
        assert service.api.get("/traces").status_code == 401
        service.use_token(token)
        model = service.register_model(models / "tiny", "tiny-qwen3")
        trace = service.post("/traces", {"model_id": model["id"], "task_sets": ["antonyms_en", "plural_en"],
                                         "perturbations": ["skip"], "options": {"limit": 4}})
        service.wait_finished(f"/traces/{trace['id']}", 240)
        service.token, service.trace_id = token, trace["id"]
        yield service
    finally:
        service.stop()


def test_token_then_read_only_share_link(secured):
    url = f"{secured.url}/traces/{secured.trace_id}?task=plural_en"
    a = browser.new_driver()
    b = browser.new_driver()
    try:
        a.get(url)
        refusal = wait(a, lambda d: d.find_elements(By.CSS_SELECTOR, ".lt-error"), what="the refusal")[0].text
        assert "could not be loaded" in refusal and "401" in refusal and "Paste an API token" in refusal
        browser.screenshot(a, "12-auth-refused", full_page=False)
        a.find_element(By.CSS_SELECTOR, ".lt-token-summary").click()
        field = a.find_element(By.ID, "auth-token-input")
        field.send_keys(secured.token)
        field.send_keys(Keys.ENTER)
        wait(a, lambda d: "token saved" in d.find_element(By.ID, "auth-token-msg").text, what="the token saved")
        a.get(url)  # same tab: the token stays in this tab's session storage
        prompts = figure(a, "trace-prompts")
        assert "plural_en" in prompts["layout"]["title"]["text"]
        a.find_element(By.ID, "trace-share-btn").click()
        wait(a, lambda d: "Read-only link" in d.find_element(By.ID, "trace-share-msg").text, what="a share link")
        link = a.find_element(By.ID, "trace-share-url").get_attribute("value")
        params = parse_qs(urlparse(link).query)
        assert params["task"] == ["plural_en"] and params["share"][0] and params["share"][0] != secured.token
        # A fresh browser with no token: the link alone shows the same view, read-only.
        b.get(link)
        shared = figure(b, "trace-prompts")
        assert shared["layout"]["title"]["text"] == prompts["layout"]["title"]["text"]
        assert shared["data"][0]["z"] == prompts["data"][0]["z"]
        browser.screenshot(b, "13-auth-share-link")
        assert severe_console_errors(b) == []
        # The share link grants this trace only: the runs list still refuses.
        b.get(f"{secured.url}/?share={params['share'][0]}")
        refused = wait(b, lambda d: d.find_elements(By.CSS_SELECTOR, "#runs-table .lt-error"), what="the runs refusal")[0]
        assert "could not be loaded" in refused.text
    finally:
        browser.quit_driver(a)
        browser.quit_driver(b)


def test_a_revoked_share_link_stops_the_cached_views(secured):
    """The figures come from caches; a view callback still asks the API whether the link is valid."""
    from frontend.api_client import ApiError
    from frontend.app import create_dash

    app = create_dash(api_url=secured.url)
    from frontend.pages import trace as page

    share = secured.post("/shares", {"kind": "trace", "id": secured.trace_id})
    with app.server.test_request_context("/"):
        figures = page.update_figures("prob", ["skip"], None, [], secured.trace_id, share["token"], None)
        assert "target probability" in figures[0].layout.title.text
        assert secured.api.delete(f"/shares/{share['id']}").status_code == 204
        for metric in ("prob", "entropy"):  # the view drawn before (cached) and a new one
            with pytest.raises(ApiError) as refused:
                page.update_figures(metric, ["skip"], None, [], secured.trace_id, share["token"], None)
            assert refused.value.status in (401, 403)
        # the token that made the link still reads it
        assert page.update_figures("entropy", ["skip"], None, [], secured.trace_id, None, secured.token)
