"""Headless Chromium for the browser tests and the dashboard benchmark (Debian's chromium and
chromium-driver; no downloaded browser). ``new_driver()`` returns None when they are not installed."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def available() -> bool:
    return bool(CHROMIUM and CHROMEDRIVER)


def new_driver(width: int = 1280, height: int = 900, downloads: Optional[Path] = None):
    """A fresh headless Chromium session with its own empty profile (a new browser, no shared state);
    files it downloads go to ``downloads``."""
    if not available():
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="lt-chromium-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if downloads is not None:
        downloads.mkdir(parents=True, exist_ok=True)
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                                  "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver._lt_profile = profile
    return driver


def wait(driver, condition, timeout: float = 30, what: str = "the page"):
    """``condition(driver)``'s first truthy value, polled every 0.1 s; a TimeoutException naming ``what``
    after ``timeout`` seconds."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d), message=f"waiting for {what}")


def quit_driver(driver) -> None:
    if driver is None:
        return
    profile: Optional[str] = getattr(driver, "_lt_profile", None)
    try:
        driver.quit()
    finally:
        if profile:
            shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver, name: str, full_page: bool = True) -> Path:
    """Save a PNG of the page (the whole page height when ``full_page``) under tests/frontend/artifacts."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    size = driver.get_window_size()
    if full_page:
        height = driver.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
        driver.set_window_size(size["width"], min(max(int(height) + 40, 600), 12000))
    try:
        # Figures that were outside the window are drawn now (frontend/assets/lazy_figures.js): wait for them.
        driver.execute_async_script(
            "const done = arguments[0]; (function poll() { const f = window.LayerTracerFigures;"
            " if (!f || f.waiting() === 0) done(); else setTimeout(poll, 20); })();")
        driver.save_screenshot(str(path))
    finally:
        if full_page:
            driver.set_window_size(size["width"], size["height"])
    return path
