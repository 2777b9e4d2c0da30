"""The Dagster UI in a real browser: headless Chromium (the Debian package, found on PATH)
driven by playwright, against the running webserver of tests/e2e/conftest.py. A user finds the
poll job, its schedule and the new-meter sensor, and opens the latest poll run; each page is
saved as a screenshot under the test's tmp folder."""

from __future__ import annotations

import re
import shutil
from urllib.parse import urlsplit

import pytest
from e2e_system import LOCATION, unavailable

# dagster-graphql's own client calls gql the deprecated way; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning")

#: The machine's network is closed: without these Chromium hangs on background connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-extensions",
]
TIMEOUT_MS = 30_000
LAUNCH_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        unavailable("chromium is not on PATH; scripts/ensure-services.sh installs it")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as error:
        unavailable(f"playwright is not installed ({error}); `uv sync` installs it")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=chromium,
                headless=True,
                args=CHROMIUM_ARGS,
                timeout=LAUNCH_TIMEOUT_MS,
            )
        except Error as error:
            unavailable(f"{chromium} could not be started: {error}")
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, running_system, tmp_path):
    """A fresh page that may only talk to the webserver (anything else is aborted, so a UI
    asset fetched from the internet shows up as a failure, not as a hang). What it showed last
    is saved as last-page.png, to see why a wait timed out."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    outside: list[str] = []

    def only_the_webserver(route):
        url = route.request.url
        if (
            url.startswith(("data:", "blob:"))
            or urlsplit(url).netloc == urlsplit(running_system.url).netloc
        ):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", only_the_webserver)
    # A fresh instance greets its first visitor on 127.0.0.1 with a "Join the Dagster
    # community" dialog over every page; this is what its Skip button does.
    assert running_system.gql("mutation E2eNuxSeen { setNuxSeen }") == {"setNuxSeen": True}
    page = context.new_page()
    try:
        yield page
    finally:
        try:
            page.screenshot(path=str(tmp_path / "last-page.png"), full_page=True)
        finally:
            context.close()
    assert not outside, f"the UI tried to reach beyond the webserver: {outside}"


def _shot(page, tmp_path, name: str):
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path


def test_the_poll_job_page_leads_to_its_schedule(page, running_system, tmp_path):
    page.goto(f"{running_system.url}/locations/{LOCATION}/jobs/poll_meters_job")
    page.get_by_text("poll_meters_job").first.wait_for()
    # The job's graph: its ops, by name.
    for op in ("load_definitions", "read_meters", "validate_readings", "write_readings"):
        page.get_by_text(op, exact=True).first.wait_for()
    # The header shows the job's schedule by its cron ("* * * * *": every minute, ticked a
    # minute ahead of the minute it polls).
    schedule = page.get_by_text("Every minute", exact=True).first
    schedule.wait_for()
    _shot(page, tmp_path, "poll_meters_job")

    schedule.click()
    page.wait_for_url(re.compile(r"/schedules/poll_meters_schedule"))
    page.get_by_text("poll_meters_schedule").first.wait_for()
    page.get_by_text("Polls every enabled meter").first.wait_for()  # its description
    page.get_by_text("poll_meters_job", exact=True).first.wait_for()  # its target
    page.get_by_text("(* * * * *)").first.wait_for()
    _shot(page, tmp_path, "poll_meters_schedule")


def test_the_automation_page_lists_the_schedules_and_the_sensor(page, running_system, tmp_path):
    page.goto(f"{running_system.url}/automation")
    for name in ("poll_meters_schedule", "purge_old_runs_schedule", "new_meter_sensor"):
        page.get_by_text(name, exact=True).first.wait_for()
    _shot(page, tmp_path, "automation")

    page.get_by_text("new_meter_sensor", exact=True).first.click()
    page.wait_for_url(re.compile(r"/sensors/new_meter_sensor"))
    page.get_by_text("Checks every new, edited or re-enabled meter").first.wait_for()
    page.get_by_text("connectivity_check_job", exact=True).first.wait_for()  # its target
    page.get_by_text("~5 sec", exact=True).first.wait_for()  # ENERGYMON_SENSOR_INTERVAL_S
    # Its first tick requested a check of the seeded meter, and that run succeeded.
    page.get_by_text("1 run requested").first.wait_for()
    _shot(page, tmp_path, "new_meter_sensor")


def test_the_latest_poll_run_opens_and_shows_success(page, running_system, poll_run, tmp_path):
    assert poll_run["status"] == "SUCCESS"
    [latest] = running_system.runs("poll_meters_job", limit=1, statuses=["SUCCESS"])
    page.goto(f"{running_system.url}/runs")
    page.get_by_text("poll_meters_job").first.wait_for()
    short_id = latest["runId"][:8]
    page.get_by_text(short_id, exact=True).first.wait_for()
    # The sensor's connectivity checks are listed too, launched by the sensor.
    page.get_by_text("connectivity_check_job").first.wait_for()
    page.get_by_text("new_meter_sensor").first.wait_for()
    _shot(page, tmp_path, "runs")

    page.get_by_text(short_id, exact=True).first.click()
    page.wait_for_url(re.compile(latest["runId"]))
    page.get_by_text("Success", exact=True).first.wait_for()
    page.get_by_text("poll_meters_job").first.wait_for()
    # The run's metadata: the per-meter table of write_readings.
    page.get_by_text("test_energy_meter").first.wait_for()
    page.get_by_text("RUN_SUCCESS").first.wait_for()
    _shot(page, tmp_path, "latest_poll_run")
