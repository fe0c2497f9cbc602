"""Headless Chromium (Debian's, driven by Playwright) against the same stack as
tests/integration (its fixtures come from tests/support/stack_fixtures.py, so a
whole `pytest tests` run starts one stack).

Every page a test lands on is saved as a full-page screenshot under
.aiport/screenshots/<test>/<nn>-<page>.png, for a reviewer to see what users
see. Any browser console error (a CSP violation, a script error, a resource
that failed to load) fails the test, except the error status a test asked for.

AIPORT_CHROMIUM names the browser (default /usr/bin/chromium; `make test`
installs Debian's package there when it is missing)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    Playwright,
    Response,
    sync_playwright,
)

from deploy.local.stack import Stack

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = PROJECT_ROOT / ".aiport" / "screenshots"
CHROMIUM = os.environ.get("AIPORT_CHROMIUM", "/usr/bin/chromium")
# The main document's own error status, which Chromium reports on the console too.
_STATUS_RE = re.compile(r"the server responded with a status of (\d{3})")


def page_name(url: str) -> str:
    """`/dashboard/api-keys?x=1` -> `dashboard-api-keys`, `/` -> `home`."""
    path = urlsplit(url).path.strip("/")
    return re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "home"


def folder_name(test_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name).strip("_")


@dataclass
class Album:
    """A test's screenshot folder; its tabs number their pictures in one sequence."""

    folder: Path
    taken: list[Path] = field(default_factory=list)

    def next_path(self, name: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        self.taken.append(path)
        return path


@dataclass
class Tab:
    """One browser tab of its own (own cookies) with a test's checks around it."""

    page: Page
    album: Album
    errors: list[str] = field(default_factory=list)
    # Console lines about this (url, status) pair are the test's own doing.
    _expected: set[tuple[str, int]] = field(default_factory=set)
    _pending: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self._pending.append((f"script: {error}", "")))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self._pending.append((message.text, str(message.location.get("url", ""))))

    def open(self, path: str, *, status: int = 200) -> Response:
        """Go to `path` (relative to the edge), expecting `status` at the end."""
        response = self.page.goto(path)
        assert response is not None, path
        return self._landed(response, status)

    def click(
        self, target: str, *, status: int = 200, to: str | re.Pattern[str] | None = None
    ) -> Response:
        """Click a link or a form's button and wait for the page it leads to
        (after any redirects), expecting `status` there. With `to` (a URL glob or pattern),
        wait past pages that send the browser on by themselves (a meta refresh)
        for the page at that URL."""
        with self.page.expect_navigation(url=to) as navigation:
            self.page.click(target)
        response = navigation.value
        assert response is not None, target
        return self._landed(response, status)

    def wait_for(self, selector: str, *, timeout_ms: int = 30_000) -> None:
        """Wait for `selector` on a page that reloads itself until it is there
        (a meta refresh), then look at that page as `open` does."""
        self.page.wait_for_selector(selector, timeout=timeout_ms)
        self.page.wait_for_load_state("load")
        self.screenshot()
        self.check_console()

    def _landed(self, response: Response, status: int) -> Response:
        self.page.wait_for_load_state("load")
        assert response.status == status, (
            f"{response.url}: HTTP {response.status}, expected {status}"
        )
        if status >= 400:
            self._expected.add((response.url, status))
        self.screenshot()
        self.check_console()
        return response

    def screenshot(self, name: str = "") -> Path:
        """The whole page as it is now, as <nn>-<page>.png."""
        path = self.album.next_path(name or page_name(self.page.url))
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def check_console(self) -> None:
        """Fail on every console error seen so far, but the asked-for statuses."""
        for text, url in self._pending:
            found = _STATUS_RE.search(text)
            if found and (url, int(found.group(1))) in self._expected:
                continue
            self.errors.append(f"{text} ({url})" if url else text)
        self._pending.clear()
        assert not self.errors, "browser console errors:\n" + "\n".join(self.errors)

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector).strip()


# Package scope, not session: while Playwright's sync driver is alive its event
# loop counts as running in this thread, and pytest-asyncio's tests elsewhere
# (tests/unit, ...) could not start theirs.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run `make browser-deps` (installs Debian's chromium"
            " as root, or prints the steps), or set AIPORT_CHROMIUM"
        )
    # Debian's browser, never one Playwright would download; headless; loopback only.
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=["--no-proxy-server"]
    )
    yield browser
    browser.close()


def new_tab(chromium: Browser, base_url: str, album: Album, locale: str = "en-US") -> Iterator[Tab]:
    # A context per tab: its own cookies, as a person on another computer, at an
    # address of their own (the stack trusts one proxy hop), so the per-address
    # limits on log-in and sign-up never carry from one test to the next.
    address = f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"
    context = chromium.new_context(
        base_url=base_url,
        locale=locale,
        viewport={"width": 1280, "height": 800},
        extra_http_headers={"X-Forwarded-For": address},
    )
    context.set_default_timeout(15_000)
    try:
        tab = Tab(context.new_page(), album)
        yield tab
        try:
            tab.page.wait_for_load_state("load")
        except Error:
            pass  # a page closed by the test: nothing left to wait for
        tab.check_console()
    finally:
        context.close()


@pytest.fixture
def album(request: pytest.FixtureRequest) -> Album:
    """This test's screenshot folder, emptied of an earlier run's pictures."""
    folder = SCREENSHOTS / folder_name(request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return Album(folder)


@pytest.fixture
def tab(chromium: Browser, stack: Stack, album: Album) -> Iterator[Tab]:
    """A tab whose browser asks for English (Accept-Language: en-US)."""
    yield from new_tab(chromium, stack.config.base_url, album)


@pytest.fixture
def tab_id(chromium: Browser, stack: Stack, album: Album) -> Iterator[Tab]:
    """A tab whose browser asks for Bahasa Indonesia (Accept-Language: id-ID)."""
    yield from new_tab(chromium, stack.config.base_url, album, locale="id-ID")
