"""The web app in a real browser (Debian's headless Chromium driven by Playwright).

Type a prompt, click Generate, see an image; search the Library. The page must render
offline: every request to a host other than the local server is blocked and fails the test.
With MEDLEY_SCREENSHOTS=1 a screenshot of each tab is written to docs/screenshots/<tab>.png.
Skipped when Chromium or the playwright package is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from test_web_support import make_services, start_server

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 300_000  # the machine may be busy: generation on a loaded CPU can be slow

if not CHROMIUM.exists() and shutil.which("chromium") is None:
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("the playwright package is not installed (pip install -e '.[dev]')", allow_module_level=True)


@pytest.fixture(scope="module")
def web_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser") / "medley-home"


@pytest.fixture(autouse=True)
def medley_home(web_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDLEY_HOME", str(web_home))
    return web_home


@pytest.fixture(scope="module")
def server(web_home: Path):  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDLEY_HOME", str(web_home))
        services = make_services(web_home, starters=True)
        app, url = start_server(services)
        try:
            yield services, url
        finally:
            app.close()


def _shot(page, tab: str) -> None:  # type: ignore[no-untyped-def]
    if os.environ.get("MEDLEY_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{tab}.png"), full_page=True)


def test_generate_and_search_in_a_browser(server) -> None:  # type: ignore[no-untyped-def]
    services, url = server
    local = urlparse(url).netloc
    outside: list[str] = []

    def only_local(route, request) -> None:  # type: ignore[no-untyped-def]
        host = urlparse(request.url).netloc
        if request.url.startswith(("data:", "blob:")) or host == local:
            route.continue_()
        else:
            outside.append(request.url)
            route.abort()

    executable = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.route("**/*", only_local)
            page.goto(url)
            prompt = page.locator("#prompt textarea")
            prompt.fill("a red circle on a blue background")
            page.locator("#generate-button").click()
            page.locator("#gallery img").first.wait_for(state="visible")
            assert page.locator("#gallery img").count() >= 1
            _shot(page, "generate")

            page.get_by_role("tab", name="Library").click()
            page.locator("#library-cards img").first.wait_for(state="visible")
            page.wait_for_function("() => document.querySelectorAll('#library-cards .caption-label').length > 1")
            # the last name alphabetically: the unfiltered grid (sorted by name) does not start with it
            starters = sorted((r for r in services.catalog.list() if r.source == "starter"), key=lambda r: r.name)
            target = starters[-1] if starters else services.catalog.get("zigzag")
            page.locator("#library-search textarea").fill(target.description or target.name)
            page.locator("#library-search-button").click()
            page.wait_for_function(
                "(name) => (document.querySelector('#library-cards .caption-label')?.innerText || '')"
                ".startsWith(name + ' ·')", arg=target.name)
            _shot(page, "library")

            page.get_by_role("tab", name="Train").click()
            page.locator("#train-start").wait_for(state="visible")
            _shot(page, "train")
        finally:
            browser.close()
    assert outside == [], f"the page asked for outside resources: {outside[:5]}"
