"""One web server per test module, on a free localhost port, with its own MEDLEY_HOME.

A module says what its server holds by overriding the module-scoped ``web_setup`` fixture;
by default that is a tiny random toy base (no assets needed) and a small synthetic library.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("gradio")

from test_web_support import start_server  # noqa: E402

from web.servers import WebServer, WebSetup, build_services  # noqa: E402


@pytest.fixture(scope="module")
def web_setup() -> WebSetup:
    return WebSetup()


@pytest.fixture(scope="module")
def web_home(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]) / "medley-home"


@pytest.fixture(autouse=True)
def medley_home(web_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One MEDLEY_HOME for the whole module: the server outlives each test."""
    monkeypatch.setenv("MEDLEY_HOME", str(web_home))
    return web_home


@pytest.fixture(scope="module")
def server(web_home: Path, web_setup: WebSetup) -> Iterator[WebServer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDLEY_HOME", str(web_home))
        services = build_services(web_home, web_setup)
        app, url = start_server(services)
        try:
            yield WebServer(services, app, url)
        finally:
            app.close()
