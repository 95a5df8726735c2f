"""Debian's Chromium, headless, driven through Debian's chromedriver (Selenium): what the web UI's
tests and its benchmark share.

Nothing is downloaded when it runs: the driver and the browser are named by path, so Selenium
Manager (which would look for or fetch a driver) is never started, and Chromium runs with a fresh
profile and its background networking (component updates, sync, field trials) switched off.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DESKTOP = (1280, 800)
PHONE = (390, 844)

# As root Chromium needs --no-sandbox; the rest keep it from reaching out on its own (without the
# background-networking flags its connections out are refused many at a time here).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--disable-search-engine-choice-screen",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--no-pings",
    "--metrics-recording-only",
    "--password-store=basic",
    # Pages are served on loopback addresses: no name is ever looked up, so nothing can leave.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
)


def available() -> str | None:
    """Why no browser can run here, or None when one can."""
    for needed in (CHROMIUM, CHROMEDRIVER):
        if not needed.exists():
            return f"{needed} is missing: scripts/bootstrap.sh installs Debian's chromium and chromium-driver"
    return None


@contextlib.contextmanager
def chromium(log: Path | None = None, size: tuple[int, int] = DESKTOP) -> Iterator[WebDriver]:
    """A headless Chromium with a profile of its own (removed afterwards), its viewport `size`."""
    missing = available()
    if missing is not None:
        raise RuntimeError(missing)
    profile = Path(tempfile.mkdtemp(prefix="fleet-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(log) if log else None)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(60)
        set_viewport(driver, size)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def set_viewport(driver: WebDriver, size: tuple[int, int]) -> None:
    """The page's viewport exactly `size` CSS pixels (a phone's width is a mobile viewport, which
    honours the page's `<meta name="viewport">`)."""
    width, height = size
    driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )


def wait_for(driver: WebDriver, condition: Any, timeout: float = 30, message: str = "") -> Any:
    """What `condition(driver)` returns once it is truthy (polled every 0.1 s)."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)


def element(driver: WebDriver, css: str, timeout: float = 30) -> WebElement:
    """The first element matching `css`, once there is one."""
    found: WebElement = wait_for(
        driver, lambda d: (d.find_elements(By.CSS_SELECTOR, css) or [None])[0], timeout, f"no {css}"
    )
    return found


def paint_timing(driver: WebDriver, timeout: float = 60) -> dict[str, float]:
    """Of the page in the browser: first-contentful-paint and the navigation's load end (ms from
    the navigation's start), once both are known (the paint entry comes after the frame is shown,
    which on a busy machine may be after the load event); -1 for what never came."""
    try:
        return dict(
            wait_for(
                driver,
                lambda d: (t := _timing(d))["firstContentfulPaint"] >= 0 and t["load"] > 0 and t,
                timeout,
            )
        )
    except TimeoutException:
        return _timing(driver)


def _timing(driver: WebDriver) -> dict[str, float]:
    found: dict[str, float] = driver.execute_script(
        """
        const paint = performance.getEntriesByType('paint');
        const nav = performance.getEntriesByType('navigation')[0];
        const fcp = paint.find(e => e.name === 'first-contentful-paint');
        return {
            firstContentfulPaint: fcp ? fcp.startTime : -1,
            firstPaint: (paint.find(e => e.name === 'first-paint') || {startTime: -1}).startTime,
            responseStart: nav ? nav.responseStart : -1,
            domContentLoaded: nav ? nav.domContentLoadedEventEnd : -1,
            load: nav ? nav.loadEventEnd : -1,
        };
        """
    )
    return found


def horizontal_overflow(driver: WebDriver) -> int:
    """CSS pixels the page is wider than its viewport (0 when nothing needs a sideways scroll)."""
    found: int = driver.execute_script(
        "return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - document.documentElement.clientWidth;"
    )
    return found


def sign_in(driver: WebDriver, base_url: str, token: str) -> None:
    """Through the login form, as a person would: the token typed, the form sent."""
    driver.delete_all_cookies()
    driver.get(f"{base_url}/ui/login")
    field = element(driver, "input[name=token]")
    field.send_keys(token)
    field.submit()
    wait_for(driver, lambda d: d.current_url.rstrip("/").endswith("/ui"), message="not signed in")
