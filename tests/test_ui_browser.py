"""The web UI in a real browser: Debian's Chromium against `fleet serve` on the example and its lab.

A reader signs in through the login form, filters the overview by a label selector, opens a
machine and sees the drift an `ipmitool` behind fleet's back caused; an operator suspends a
machine and starts an emergency reconcile (preview, then confirm) and watches its run finish on
the runs page, which updates without a reload; markup in an annotation or a reason is shown as
text and never runs; the keyboard reaches and opens racks and cells. Screenshots of each page go
to the test output directory ($FLEET_TEST_OUTPUT, else pytest's base temporary directory), under
ui-browser/. One lab, one `fleet serve` and one browser serve the whole module.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from browser_testing import (
    DESKTOP,
    PHONE,
    chromium,
    element,
    horizontal_overflow,
    set_viewport,
    sign_in,
    wait_for,
)
from controller_testing import DASHBOARDS, OPS, Served, bare_lab, push
from fleet_testing import example_documents
from ruamel.yaml import YAML
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from reconciler.spec import models

pytestmark = pytest.mark.slow  # a lab suite: left out of `make test-quick`

LAB_SUBNET = 83
DRIFTER = "ldn1-r02-06"  # power is observed, not enforced, in ldn1: an out-of-band change stays
SUSPENDED = "nyc1-r01-05"  # a gateway: no Cluster waits for it
RECONCILED = "nyc1-r02-05"  # storage, no Cluster's node
MARKED = "ldn1-r03-04"  # carries markup in its annotations
SELECTOR = "team=storage"
# Each would set a global and the title, or open an alert, if it ever ran.
SCRIPT = "<script>window.fleetMarkupRan='script';document.title='ran'</script>"
IMAGE = "<img src=x onerror=alert(window.fleetMarkupRan=document.title='ran')>"


def _machines() -> dict[str, models.Machine]:
    return {d.metadata.name: d for d in example_documents() if isinstance(d, models.Machine)}


def _annotate(repo: Path, name: str, annotations: dict[str, str]) -> None:
    """Add `annotations` to Machine `name` in its rack file (round trip: the rest stays)."""
    machine = _machines()[name]
    yaml = YAML()
    target = repo / "machines" / machine.spec.site / f"{machine.spec.rack}.yaml"
    documents = list(yaml.load_all(target.read_text()))
    for document in documents:
        if document["metadata"]["name"] == name:
            document["metadata"].setdefault("annotations", {}).update(annotations)
    with target.open("w") as handle:
        yaml.dump_all(documents, handle)


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $FLEET_TEST_OUTPUT/ui-browser, else under pytest's base temp."""
    base = Path(os.environ.get("FLEET_TEST_OUTPUT") or tmp_path_factory.getbasetemp())
    found = base / "ui-browser"
    found.mkdir(parents=True, exist_ok=True)
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, dict[str, str]]]:
    """The example (one Machine with markup in its annotations) and its lab, followed by `fleet
    serve` with a drift pass every few seconds, so that an out-of-band change shows soon."""
    directory = tmp_path_factory.mktemp("ui-browser")
    with bare_lab(directory, LAB_SUBNET, "--transition-seconds", "0.1", "--as-specified") as lab:
        _annotate(Path(lab["REPO"]), MARKED, {"note": SCRIPT, "photo": IMAGE})
        push(lab, "markup in an annotation")
        env = {
            **lab,
            "FLEET_STATE": str(directory / "state.db"),
            "FLEET_API_TOKEN_OPS": OPS,
            "FLEET_API_TOKEN_DASHBOARDS": DASHBOARDS,
            "XDG_CACHE_HOME": str(directory / "cache"),
        }
        server = Served(env, directory / "serve.log", "--drift-interval", "8")
        try:
            server.wait(
                lambda s: s["resources"].get("Machine", {}).get("in sync", 0) >= 20, timeout=240, idle=False
            )
            yield server, env
        finally:
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium") / "chromedriver.log") as driver:
        yield driver


def _base(server: Served) -> str:
    return f"http://127.0.0.1:{server.port}"


def _ipmitool(env: dict[str, str], name: str, *command: str) -> str:
    """Debian's ipmitool on the lab's BMC of Machine `name`, as someone behind fleet's back."""
    overrides = json.loads((Path(env["FLEET_LAB_DIR"]) / "overrides.json").read_text())
    bmc = _machines()[name].spec.bmc
    host = overrides["endpoints"][f"{bmc.address}:{bmc.port}"].rsplit(":", 1)[0]
    reference = bmc.credentialsRef if isinstance(bmc.credentialsRef, str) else None
    assert reference is not None, "the example's BMCs name their credentials"
    user, password = Path(overrides["credentials"][reference]["file"]).read_text().strip().split(":", 1)
    done = subprocess.run(
        ["ipmitool", "-I", "lanplus", "-H", host, "-U", user, "-P", password, *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _attributes(driver: WebDriver, css: str, attribute: str) -> set[str]:
    return {e.get_attribute(attribute) or "" for e in driver.find_elements(By.CSS_SELECTOR, css)}


def _tab_to(driver: WebDriver, css: str, presses: int = 300) -> None:
    """Press Tab until the focused element matches `css`."""
    for _ in range(presses):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        if driver.execute_script("return document.activeElement.matches(arguments[0])", css):
            return
    raise AssertionError(f"Tab never reached {css}")


def _no_alert(driver: WebDriver) -> None:
    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    raise AssertionError(f"an alert is open: {text}")


def _done(driver: WebDriver, what: str, name: str) -> None:
    """The page an operator's form answers with: what was done, naming the machine it changed."""
    wait_for(
        driver,
        lambda d: d.find_element(By.TAG_NAME, "h1").text == what,
        message=f"the answer is not {what!r}",
    )
    changed = _attributes(driver, "main a[href^='/ui/resources/']", "href")
    assert any(href.endswith(f"/ui/resources/machine/{name}") for href in changed), changed


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is no PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def _screenshot(driver: WebDriver, output: Path, name: str, size: tuple[int, int]) -> None:
    path = output / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    assert _png_size(path) == size, (name, _png_size(path))


def test_a_reader_signs_in_filters_by_label_and_sees_the_drift_of_a_machine(
    served: tuple[Served, dict[str, str]], browser: WebDriver, output: Path
) -> None:
    server, env = served
    base = _base(server)
    browser.get(f"{base}/ui/")
    assert browser.find_elements(By.NAME, "token"), "a page of the UI asks to sign in first"
    sign_in(browser, base, DASHBOARDS)
    cookies = {c["name"]: c for c in browser.get_cookies()}
    assert cookies and all(c["httpOnly"] and c.get("sameSite") == "Strict" for c in cookies.values()), cookies
    assert DASHBOARDS not in json.dumps(list(cookies.values())), "the cookie is a session, not the token"

    machines = _machines()
    sites = _attributes(browser, "section.site", "data-site") - {"-"}  # "-": what has no site
    assert sites == {m.spec.site for m in machines.values()}
    racks = {f"{m.spec.site}/{m.spec.rack}" for m in machines.values()}
    assert {r for r in _attributes(browser, "a.rack", "data-rack") if not r.startswith("-/")} == racks

    # Filter by a label selector: the URL holds the filter, and only racks with a match remain.
    field = element(browser, "input[name=selector]")
    field.clear()
    field.send_keys(SELECTOR)
    field.submit()
    wait_for(browser, lambda d: "selector=" in d.current_url, message="the URL holds no filter")
    assert parse_qs(urlparse(browser.current_url).query)["selector"] == [SELECTOR]
    matching = {
        f"{m.spec.site}/{m.spec.rack}" for m in machines.values() if m.metadata.labels["team"] == "storage"
    }
    assert _attributes(browser, "a.rack", "data-rack") == matching
    assert element(browser, "input[name=selector]").get_attribute("value") == SELECTOR
    browser.refresh()  # the filtered overview is a link to share
    assert _attributes(browser, "a.rack", "data-rack") == matching

    # A machine, from its rack: in sync, then drifted once its power was turned off behind fleet's back.
    drifter = machines[DRIFTER]
    element(browser, f'a.rack[data-rack="{drifter.spec.site}/{drifter.spec.rack}"]').click()
    cell = element(browser, f'a.cell[data-address="machine/{DRIFTER}"]')
    assert cell.get_attribute("title") == f"machine/{DRIFTER}: {cell.get_attribute('data-state')}"
    cell.click()
    wait_for(browser, lambda d: d.current_url.endswith(f"/ui/resources/machine/{DRIFTER}"))
    for section in ("spec", "observation", "drift", "actions", "lease", "suspension"):
        element(browser, f"#{section}")
    assert DRIFTER in browser.find_element(By.ID, "spec").text
    assert "is on" in _ipmitool(env, DRIFTER, "chassis", "power", "status")
    _ipmitool(env, DRIFTER, "chassis", "power", "off")
    try:
        deadline = time.monotonic() + 120
        while "power" not in browser.find_element(By.ID, "drift").text and time.monotonic() < deadline:
            time.sleep(2)  # the next drift pass observes it
            browser.refresh()
        drift = browser.find_element(By.ID, "drift").text
        assert "power" in drift and "off" in drift, drift
        assert "off" in browser.find_element(By.ID, "observation").text
        browser.back()  # the rack shows it too
        browser.refresh()
        assert element(browser, f'a.cell[data-address="machine/{DRIFTER}"]').get_attribute("data-state") == (
            "drifted"
        )
        _screenshot(browser, output, "rack-drifted", DESKTOP)
        browser.get(f"{base}/ui/")
        element(browser, "a.rack .s-drifted")
        _screenshot(browser, output, "overview-drifted", DESKTOP)
    finally:
        _ipmitool(env, DRIFTER, "chassis", "power", "on")


def test_the_keyboard_reaches_rack_tiles_and_cells_and_enter_opens_them(
    served: tuple[Served, dict[str, str]], browser: WebDriver
) -> None:
    server, _ = served
    base = _base(server)
    sign_in(browser, base, DASHBOARDS)
    browser.get(f"{base}/ui/")
    element(browser, "a.rack")
    _tab_to(browser, "a.rack")
    rack = browser.execute_script("return document.activeElement.dataset.rack")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(browser, lambda d: d.current_url.endswith(f"/ui/racks/{rack}"), message="Enter did not open it")
    element(browser, "a.cell")
    _tab_to(browser, "a.cell")
    address = browser.execute_script("return document.activeElement.dataset.address")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(browser, lambda d: d.current_url.endswith(f"/ui/resources/{address}"))
    element(browser, "#spec")


def test_an_operator_suspends_a_machine_and_watches_an_emergency_reconcile_finish(
    served: tuple[Served, dict[str, str]], browser: WebDriver
) -> None:
    server, _ = served
    base = _base(server)
    sign_in(browser, base, OPS)

    # Suspend: the form on the machine's page, with a reason.
    browser.get(f"{base}/ui/resources/machine/{SUSPENDED}")
    form = element(browser, "form[action$='/ui/suspend']")
    form.find_element(By.NAME, "reason").send_keys("PSU swap, INC-7")
    form.submit()
    _done(browser, "Suspended", SUSPENDED)
    browser.get(f"{base}/ui/resources/machine/{SUSPENDED}")
    assert "PSU swap, INC-7" in element(browser, "#suspension").text
    found = server.get(f"/api/v1/resources/machine/{SUSPENDED}").json()
    assert found["state"] == "suspended" and "PSU swap, INC-7" in found["detail"], found

    # The runs page, open in its own tab, is marked: a reload would lose the mark.
    runs_tab = browser.current_window_handle
    browser.get(f"{base}/ui/runs")
    element(browser, "#queue")
    browser.execute_script("window.fleetNotReloaded = true")

    # An emergency reconcile from another tab: the plan first, then the confirmation.
    browser.switch_to.new_window("tab")
    browser.get(f"{base}/ui/resources/machine/{RECONCILED}")
    form = element(browser, "form[action$='/ui/reconcile/preview']")
    form.find_element(By.NAME, "reason").send_keys("INC-42: BMC replaced")
    form.submit()
    confirm = element(browser, "form[action$='/ui/reconcile']")
    assert f"machine/{RECONCILED}" in browser.find_element(By.TAG_NAME, "main").text, "the preview names it"
    confirm.submit()
    wait_for(browser, lambda d: "/ui/reconcile" not in d.current_url, message="the confirmation stayed")
    mine = [r for r in server.get("/api/v1/runs").json()["items"] if r["reason"] == "INC-42: BMC replaced"]
    assert len(mine) == 1 and mine[0]["operator"].endswith(":ops"), mine  # the token's name
    run = mine[0]["id"]
    browser.close()

    browser.switch_to.window(runs_tab)
    row = f'[data-run-id="{run}"]'
    wait_for(
        browser,
        lambda d: any(
            e.get_attribute("data-status") not in ("running", "started", "")
            for e in d.find_elements(By.CSS_SELECTOR, row)
        ),
        timeout=120,
        message=f"run {run} never showed finished",
    )
    assert browser.execute_script("return window.fleetNotReloaded === true"), "the page was reloaded"
    statuses = {e.get_attribute("data-status") for e in browser.find_elements(By.CSS_SELECTOR, row)}
    assert "succeeded" in statuses, statuses

    # Resumed again: the rest of the module finds it as the lab left it.
    browser.get(f"{base}/ui/resources/machine/{SUSPENDED}")
    element(browser, "form[action$='/ui/resume']").submit()
    _done(browser, "Resumed", SUSPENDED)


def test_markup_in_an_annotation_or_a_reason_is_shown_as_text_and_never_runs(
    served: tuple[Served, dict[str, str]], browser: WebDriver
) -> None:
    server, _ = served
    base = _base(server)
    sign_in(browser, base, OPS)
    page = f"{base}/ui/resources/machine/{MARKED}"
    browser.get(page)
    form = element(browser, "form[action$='/ui/suspend']")
    form.find_element(By.NAME, "reason").send_keys(IMAGE)
    form.submit()
    _done(browser, "Suspended", MARKED)
    assert IMAGE in browser.find_element(By.TAG_NAME, "main").text, "the reason, as written"
    _no_alert(browser)
    assert browser.execute_script("return window.fleetMarkupRan === undefined")
    browser.get(page)
    _no_alert(browser)
    spec = browser.find_element(By.ID, "spec").text
    assert SCRIPT in spec and IMAGE in spec, spec
    assert IMAGE in browser.find_element(By.ID, "suspension").text
    assert browser.execute_script("return window.fleetMarkupRan === undefined")
    assert browser.title != "ran"
    assert not browser.find_elements(By.CSS_SELECTOR, "img[src='x']"), "the markup became an element"
    for listed in (f"{base}/ui/runs", f"{base}/ui/?q={MARKED}"):  # the reason and the name elsewhere
        browser.get(listed)
        _no_alert(browser)
        assert browser.execute_script("return window.fleetMarkupRan === undefined"), listed
    browser.get(page)
    element(browser, "form[action$='/ui/resume']").submit()
    _done(browser, "Resumed", MARKED)


def test_screenshots_at_desktop_and_phone_widths(
    served: tuple[Served, dict[str, str]], browser: WebDriver, output: Path
) -> None:
    server, _ = served
    base = _base(server)
    sign_in(browser, base, DASHBOARDS)
    machine = _machines()[RECONCILED]
    run = server.get("/api/v1/runs").json()["items"][0]["id"]
    set_viewport(browser, DESKTOP)
    for name, path in (
        ("overview", "/ui/"),
        ("rack", f"/ui/racks/{machine.spec.site}/{machine.spec.rack}"),
        ("resource", f"/ui/resources/machine/{RECONCILED}"),
        ("run", f"/ui/runs/{run}"),
    ):
        browser.get(base + path)
        element(browser, "main")
        _screenshot(browser, output, name, DESKTOP)
    try:
        set_viewport(browser, PHONE)
        browser.get(f"{base}/ui/")
        element(browser, "a.rack")
        assert horizontal_overflow(browser) <= 0, "the overview scrolls sideways on a phone"
        _screenshot(browser, output, "overview-phone", PHONE)
    finally:
        set_viewport(browser, DESKTOP)
