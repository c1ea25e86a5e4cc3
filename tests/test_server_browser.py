"""The web UI in a real headless browser (SPEC §10): Playwright for Python driving Debian's chromium
(`apt-get install chromium`; launched from its path, nothing downloaded). A flow runs; the runs page
lists it; the flow run's page shows its task runs, a retry (AwaitingRetry on the timeline) and a log
line; a run started by another process appears on the open pages and finishes there, without a reload.

With ASYNCFLOW_UI_SCREENSHOTS=1 the test saves the screenshots docs/ui.md shows (docs/images/ui-*.png);
normal runs leave docs/ alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("jinja2")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from helpers import run_in_thread  # noqa: E402
from server_helpers import running_server  # noqa: E402

from asyncflow import flow, get_run_logger, tags, task  # noqa: E402
from asyncflow.testing import isolated_home  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs" / "images"
SCREENSHOTS = os.environ.get("ASYNCFLOW_UI_SCREENSHOTS") == "1"
WAIT_MS = 30_000  # a busy CI machine: generous, the checks themselves are exact
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
COMPLETED_RGB = "rgb(33, 157, 75)"  # Prefect's #219D4B


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("ASYNCFLOW_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is not installed (apt-get install chromium); .ci/run installs it")
        pytest.skip("chromium is not installed: apt-get install chromium (CI installs it)")
    return found


TRIES: dict[int, int] = {}


@task(retries=1, retry_delay_seconds=0.3)
def fetch(i: int) -> int:
    TRIES[i] = TRIES.get(i, 0) + 1
    get_run_logger().info("fetching page %s (attempt %s)", i, TRIES[i])
    time.sleep(0.05)
    if i == 2 and TRIES[i] == 1:
        raise ConnectionError("the server hung up")
    return i


@task(cache_key_fn=lambda context, parameters: f"totals-{parameters['pages']}")
def total(pages: list[int]) -> int:
    time.sleep(0.05)
    return sum(pages)


@flow
def summarize(pages: list[int]) -> int:
    return total(pages)


@flow(log_prints=True)
def crawl(n: int = 4) -> int:
    print(f"crawling {n} pages")
    pages = [fetch(i) for i in range(n)]
    return summarize(pages)


@task
def parse() -> None:
    raise ValueError("unexpected <html> in a JSON reply")


@flow
def ingest() -> None:
    parse()


LIVE_FLOW = """
import sys, time
from pathlib import Path
from asyncflow import flow, task, get_run_logger

gate = Path(sys.argv[1])

@task
def prepare():
    get_run_logger().info("prepared the batch")

@task
def wait_for_gate():
    while not gate.exists():
        time.sleep(0.02)
    get_run_logger().info("the gate opened")

@task
def load(i):
    get_run_logger().info("loaded part %s", i)

@task
def notify():
    get_run_logger().info("notified the team")

@flow
def publish():
    notify()

@flow
def live_report():
    prepare()
    wait_for_gate()
    for i in range(3):
        load(i)
    publish()

live_report()
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("ASYNCFLOW_") and name != "ASYNCFLOW_HOME":
            monkeypatch.delenv(name)
    TRIES.clear()
    with isolated_home(tmp_path / "home") as store:
        yield store


@pytest.fixture
def browser_page(tmp_path):
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright:
        profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860}, device_scale_factor=1)
        context.set_default_timeout(WAIT_MS)
        sync_api.expect.set_options(timeout=WAIT_MS)
        page = context.pages[0] if context.pages else context.new_page()
        try:
            yield page
        finally:
            context.close()


def shot(page, name: str, full_page: bool = False) -> None:
    if SCREENSHOTS:
        DOCS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS / f"ui-{name}.png"), full_page=full_page)


def record_runs(home) -> None:
    """Flows run in a thread of their own: Playwright's sync API runs an event loop in the test's thread
    (where a sync flow called from a running loop would hand back a coroutine)."""
    def runs() -> None:
        with tags("nightly"):
            crawl(4)
        ingest(return_state=True)
        crawl(2)
        home.flush()

    run_in_thread(runs, timeout=60)


def test_runs_page_to_a_flow_run_its_task_runs_a_retry_and_a_log_line(home, browser_page):
    expect = sync_api.expect
    record_runs(home)
    page = browser_page
    with running_server() as (url, _app):
        page.goto(url + "/runs")
        runs = page.locator("#runs tbody tr")
        expect(runs).to_have_count(5)  # 2 crawls, their 2 summarize subflows, 1 ingest
        first = page.locator("#runs tbody tr", has_text="crawl").filter(has_text="nightly")
        badge = first.locator(".badge")
        expect(badge).to_have_text("Completed")
        assert badge.evaluate("e => getComputedStyle(e).backgroundColor") == COMPLETED_RGB
        failed = page.locator("#runs tbody tr", has_text="ingest").locator(".badge")
        expect(failed).to_have_text("Failed")
        assert failed.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(222, 5, 41)"  # #DE0529
        expect(page.locator("#chart svg rect").first).to_be_attached()  # the chart came after the page
        shot(page, "runs")

        first.locator("a.run-link").click()
        expect(page).to_have_url(re.compile(r"/flow-runs/[0-9a-f-]{36}$"))
        expect(page.locator("h1")).not_to_be_empty()
        expect(page.locator("#run-state")).to_have_text("Completed")
        expect(page.locator("#task-runs tbody tr")).to_have_count(4)
        expect(page.locator("#task-runs tbody tr", has_text="fetch-2").locator(".history")).to_contain_text(
            "AwaitingRetry")
        retry = page.locator('#timeline .tl-row:has-text("fetch-2") .seg[data-state="AwaitingRetry"]')
        expect(retry).to_be_visible()
        assert retry.bounding_box()["width"] >= 3
        subflow = page.locator("#timeline .tl-row.flow_run")
        expect(subflow).to_contain_text("summarize")
        expect(page.locator("#timeline .tl-row.depth-1.task_run")).to_contain_text("total-0")  # nested
        expect(page.locator("#logs")).to_contain_text("fetching page 2 (attempt 2)")
        expect(page.locator("#logs")).to_contain_text("crawling 4 pages")
        shot(page, "flow-run", full_page=True)

        page.select_option('select[name="level"]', "WARNING")  # the level filter (submits the form)
        expect(page).to_have_url(re.compile(r"level=WARNING"))
        expect(page.locator("#logs")).to_contain_text("Retry 1/1")
        expect(page.locator("#logs")).not_to_contain_text("crawling 4 pages")

        page.locator("#task-runs a", has_text="fetch-2").click()
        expect(page.locator("#history tbody tr")).to_have_count(5)
        expect(page.locator("#history")).to_contain_text("AwaitingRetry")
        expect(page.locator("#logs")).to_contain_text("the server hung up")
        shot(page, "task-run", full_page=True)

        page.goto(url + "/runs?flow=ingest")
        page.locator("a.run-link").click()
        expect(page.locator("#traceback")).to_contain_text("ValueError: unexpected <html> in a JSON reply")
        if SCREENSHOTS:
            page.locator("#traceback").scroll_into_view_if_needed()
            shot(page, "failed-run")

        page.goto(url + "/flow-runs/00000000-0000-4000-8000-000000000000")
        expect(page.locator("#error-message")).to_contain_text("No flow run with id")
        page.goto(url + "/runs?since=tomorrow-ish")
        expect(page.locator("#error-parameter")).to_have_text("since")

        # an action behind a confirmation: delete the failed run
        page.goto(url + "/runs?flow=ingest")
        page.locator("a.run-link").click()
        page.locator("a.button.danger").click()
        expect(page.locator("h1")).to_contain_text("Delete flow run")
        page.locator("#confirm").click()
        expect(page.locator("#notice")).to_contain_text("Deleted flow run")
        expect(page.locator("#runs tbody tr")).to_have_count(4)


def test_a_run_started_elsewhere_appears_and_finishes_live(home, browser_page, tmp_path):
    expect = sync_api.expect
    run_in_thread(lambda: (crawl(2), home.flush()), timeout=60)
    page = browser_page
    script, gate = tmp_path / "live_report.py", tmp_path / "gate"
    script.write_text(textwrap.dedent(LIVE_FLOW))
    log = open(tmp_path / "live.log", "w")  # noqa: SIM115 - closed below
    proc = None
    with running_server() as (url, _app):
        try:
            page.goto(url + "/runs")
            expect(page.locator("#runs tbody tr")).to_have_count(2)
            expect(page.locator("#live")).to_have_class(re.compile("connected"))
            page.evaluate("window.notReloaded = true")
            proc = subprocess.Popen([sys.executable, str(script), str(gate)], stdout=log, stderr=subprocess.STDOUT,
                                    env=os.environ.copy())  # another process writes the store
            row = page.locator("#runs tbody tr", has_text="live-report")
            expect(row.locator(".badge")).to_have_text("Running")
            expect(page.locator("#runs tbody tr")).to_have_count(3)
            assert page.evaluate("window.notReloaded") is True

            row.locator("a.run-link").click()  # its page, while it waits for the gate
            expect(page.locator("#run-state")).to_have_text("Running")
            expect(page.locator("#live")).to_have_class(re.compile("connected"))
            expect(page.locator("#logs")).to_contain_text("prepared the batch")
            page.evaluate("window.notReloaded = true")
            rows_before = page.locator("#task-runs tbody tr").count()
            assert rows_before == 2  # prepare, wait_for_gate
            shot(page, "live-running", full_page=True)
            gate.write_text("go")
            expect(page.locator("#run-state")).to_have_text("Completed")
            expect(page.locator("#task-runs tbody tr")).to_have_count(5)
            expect(page.locator("#task-runs tbody tr", has_text="load-2").locator(".badge")).to_have_text("Completed")
            expect(page.locator("#timeline .tl-row.flow_run")).to_contain_text("publish")  # a subflow, live
            expect(page.locator("#timeline .tl-row.depth-1.task_run")).to_contain_text("notify-0")  # nested in it
            expect(page.locator("#timeline .tl-row.task_run")).to_have_count(6)
            expect(page.locator("#logs")).to_contain_text("loaded part 2")
            expect(page.locator("#logs")).to_contain_text("notified the team")  # a subflow's line
            expect(page.locator("#logs")).to_contain_text("the gate opened")
            assert page.evaluate("window.notReloaded") is True

            page.go_back()
            expect(page.locator("#runs tbody tr", has_text="live-report").locator(".badge")).to_have_text("Completed")
            assert proc.wait(60) == 0
        finally:
            if proc is not None and proc.poll() is None:
                gate.write_text("go")
                proc.wait(30)
            log.close()
