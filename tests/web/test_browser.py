"""The web app in a real browser (Debian's headless Chromium at /usr/bin/chromium, driven by Playwright).

A tour of the three tabs: type a prompt, compose a plan with auto adapters, pick the gated fusion
method and see its schedule plot, generate a batch and read each image's caption; search the
Library; open Train. The server holds the shipped toy base and the starter library when they are
present (a random base and a synthetic library otherwise). The page must render offline: every
request to a host other than the local server is blocked and fails the test.

With MEDLEY_SCREENSHOTS=1 each tab is saved to docs/screenshots/<tab>.png (the README's tour) and the
images are rendered at 20 steps (4 otherwise, to keep the check quick):

    MEDLEY_SCREENSHOTS=1 .venv/bin/pytest tests/web/test_browser.py

Skipped when Chromium or the playwright package is missing (``.ci/run`` installs Chromium; no
browser is downloaded).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from web.servers import WebServer, WebSetup, starter_library_present

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
TABS = ("generate", "library", "train")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 600_000  # the machine may be busy: generation on a loaded CPU can be slow
SCREENSHOTS_WANTED = os.environ.get("MEDLEY_SCREENSHOTS") == "1"
BATCH = 4
STEPS = 20 if SCREENSHOTS_WANTED else 4  # the base's default for the pictures; few for a quick check
SHAPE = "heart"  # a content adapter of both libraries (the starter one, else the synthetic one)
ERROR_TOAST = ".toast-body.error"


@pytest.fixture(scope="module")
def web_setup() -> WebSetup:
    """The shipped base and starter library (when present): what a user sees, and the screenshots show."""
    starters = starter_library_present()
    return WebSetup(starters=True, embedded_base=True, synthetic=not starters)


@pytest.fixture(scope="module")
def chromium() -> str:
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run does)")
    return executable


@pytest.fixture
def page(server: WebServer, chromium: str) -> Iterator[Any]:
    """A page on the server that may reach nothing else; asserts that it did not try."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - depends on the environment
        pytest.skip("the playwright package is not installed (pip install -e '.[dev]')")
    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.route("**/*", _only_local(urlparse(server.url).netloc, outside))
            page.goto(server.url)
            yield page
        finally:
            browser.close()
    assert outside == [], f"the page asked for outside resources: {outside[:5]}"


def _only_local(local: str, outside: list[str]) -> Callable[[Any, Any], None]:
    def route(route: Any, request: Any) -> None:
        if request.url.startswith(("data:", "blob:")) or urlparse(request.url).netloc == local:
            route.continue_()
        else:
            outside.append(request.url)
            route.abort()

    return route


def _shot(page: Any, tab: str) -> None:
    if SCREENSHOTS_WANTED:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{tab}.png"), full_page=True)


def _wait(page: Any, condition: str, arg: Any = None) -> None:
    """Wait until ``condition`` (a JavaScript function of ``arg``) holds; fail at once on an error toast."""
    page.wait_for_function(f"(arg) => Boolean(document.querySelector('{ERROR_TOAST}')) || ({condition})(arg)",
                           arg=arg)
    errors = page.locator(ERROR_TOAST)
    assert errors.count() == 0, f"the page shows an error: {errors.first.inner_text()}"


def _text_in(page: Any, selector: str, text: str) -> None:
    _wait(page, "([selector, text]) => (document.querySelector(selector)?.innerText || '').includes(text)",
          [selector, text])


def _tour_prompt(server: WebServer) -> tuple[str, str]:
    """A prompt for a shape (content) and stripes (style), and the trigger word the plan must add."""
    records = server.services.catalog.list()
    contents = [r for r in records if r.kind == "content" and r.triggers] or [r for r in records if r.triggers]
    shape = next((r for r in contents if r.name == SHAPE), min(contents, key=lambda r: r.name))
    return f"a red {shape.name} shape with diagonal stripes on a blue background", shape.triggers[0]


def _generate_tour(page: Any, prompt: str, trigger: str) -> None:
    """Auto adapters, the gated schedule editor, a batch, per-image captions."""
    page.locator("#prompt textarea").fill(prompt)
    for slider, value in (("#steps", STEPS), ("#batch", BATCH)):
        page.locator(f"{slider} input[type=number]").fill(str(value))
        page.locator(f"{slider} input[type=number]").press("Tab")
    page.locator("#auto-adapters input").check()
    _text_in(page, "#adapter-table", "auto")  # the composer's plan, with its reasons
    page.locator("#fusion-method input").click()
    page.get_by_role("option", name="gated", exact=True).click()
    page.locator("#schedule-plot").wait_for(state="visible")
    page.locator("#content-curve textarea, #content-curve input").first.fill("0=1, 0.7=1, 1=0.5")
    page.locator("#generate-button").click()
    _wait(page, "(n) => document.querySelectorAll('#gallery img').length >= n", BATCH)
    _wait(page, "() => [...document.querySelectorAll('#gallery .caption-label')]"
                ".some(label => label.innerText.startsWith('seed 0 · '))")
    assert trigger in page.locator("#final-prompt textarea").input_value()  # added by the plan


def _library_tour(page: Any, server: WebServer) -> None:
    """Search by meaning for the last name alphabetically (the unfiltered grid does not start with it), open
    its card."""
    page.get_by_role("tab", name="Library").click()
    _wait(page, "() => document.querySelectorAll('#library-cards .caption-label').length > 1")
    records = server.services.catalog.list()
    starters = [record for record in records if record.source == "starter"]
    target = max(starters or records, key=lambda record: record.name)
    page.locator("#library-search textarea").fill(target.description or target.name)
    page.locator("#library-search-button").click()
    _wait(page, "(name) => (document.querySelector('#library-cards .caption-label')?.innerText || '')"
                ".startsWith(name + ' ·')", target.name)
    page.locator("#library-cards img").first.click()  # its details, editable
    _wait(page, "(name) => document.querySelector('#library-selected textarea')?.value === name", target.name)


def test_the_three_tabs_in_a_browser(server: WebServer, page: Any) -> None:
    _generate_tour(page, *_tour_prompt(server))
    _shot(page, "generate")
    _library_tour(page, server)
    _shot(page, "library")
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-start").wait_for(state="visible")
    _shot(page, "train")


def _tour_section(readme: str) -> str:
    start = readme.index("## Web app")
    end = readme.find("\n## ", start + 1)
    return readme[start:] if end < 0 else readme[start:end]


def test_the_readme_tour_shows_each_tab() -> None:
    section = _tour_section((ROOT / "README.md").read_text(encoding="utf-8"))
    for tab in TABS:
        assert f"(docs/screenshots/{tab}.png)" in section, f"the README's tour lacks the {tab} screenshot"
        assert (SCREENSHOTS / f"{tab}.png").is_file()
    assert "MEDLEY_SCREENSHOTS=1" in section  # how to take them again
