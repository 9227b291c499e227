"""Browser tests: Playwright's sync API driving Debian's Chromium against a real ``contactcentre serve``.

How to use (fixtures come in through tests/conftest.py; nothing to import for them)::

    from tests.browser import login, open_chat, screenshot

    def test_something(live_server, new_page):
        agent = new_page()                      # a fresh browser context each: own cookies, own storage
        login(agent, live_server, "ada")        # the agent's landing page (/agent) is open afterwards
        customer = new_page()
        open_chat(customer, live_server, text="hello")  # the widget at /chat, pre-chat form filled, message sent
        expect(agent.locator("...")).to_have_text("...", timeout=T_MS)
        screenshot(agent, "console")            # docs/console.png, only with SCREENSHOTS=1

* ``chromium`` (module scope): a headless Chromium from /usr/bin/chromium (``apt-get install chromium``; never
  ``playwright install``). Missing: the test fails under CI=true and is skipped elsewhere.
* ``live_server`` (per test): ``contactcentre serve`` in a subprocess on a fresh SQLite store, every port
  ephemeral, contactcentre/data/default.toml with the outgoing smarthost pointed at an SMTP sink (``live_server.sink``
  keeps what the server mails). Users, passwords in ``live_server.passwords`` and API tokens in
  ``live_server.tokens``: ``ada`` and ``grace`` (agents ``ada`` and ``grace`` of the config), ``boss``
  (supervisor), ``root`` (admin). ``live_server.url("/agent")`` builds page URLs; ``live_server.server``
  is the tests/server_proc.py ``Server`` (ports, ``ws(path)``). Stopped after the test; a server that
  crashed or logged a traceback fails the test. Another configuration: ``start_live_server(tmp_path, Sink(),
  edit=lambda toml_text: ...)`` in a fixture of your own (tests/test_admin.py ``admin_server``).
* ``login(page, live, user)`` / ``logout(page)``: through the forms (``password=`` to try a wrong one).
* ``new_page()``: a page in a new browser context; dialogs (``alert``) are dismissed and recorded, and
  uncaught script errors and CSP violations recorded: ``watch(page).dialogs`` / ``.errors``. The test fails
  at teardown if any page had an uncaught script error, unless it sets ``watch(page).allow_errors = True``.
* ``screenshot(page, name)``: writes ``docs/NAME.png`` when SCREENSHOTS=1 is set (``SCREENSHOTS=1 pytest
  tests/test_browser_*.py`` refreshes the README's pictures); otherwise does nothing and returns None.
* ``run_async(coro)``: runs a coroutine (e.g. a ``websockets`` client playing an agent or customer) on a
  fresh event loop in a worker thread and returns its result; ``start_async(coro)`` starts it and returns a
  ``concurrent.futures.Future`` at once, so the browser can play the other side meanwhile
  (tests/test_browser_auth.py has an agent on the WebSocket protocol chatting with the widget).

Why the thread: while Playwright's sync API is alive it marks its own asyncio loop as running in the main
thread, so ``asyncio.run`` and the ``reactor_loop`` fixture cannot be used there. For the same reason the
``chromium`` fixture is module-scoped (other test modules run after it has stopped), and a browser test must
not use ``reactor_loop``: the server under test is always a subprocess.

Waiting is by Playwright (``expect(...)``, ``wait_for_*`` with a timeout), never by sleeping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.server_proc import REPO, Server, Sink, start_server

__all__ = [
    "CHROMIUM",
    "T_MS",
    "LiveServer",
    "PageWatch",
    "chromium",
    "live_server",
    "login",
    "logout",
    "new_page",
    "open_chat",
    "run_async",
    "screenshot",
    "start_async",
    "start_live_server",
    "watch",
]

CHROMIUM = Path(os.environ.get("CONTACTCENTRE_CHROMIUM", "/usr/bin/chromium"))
T_MS = 30_000  # Playwright timeout for any single step, in ms: generous for a slow, shared CI machine
DOCS = REPO / "docs"

# Known passwords for the test users: long enough for `user add` (8+ characters), fixed so failures reproduce.
USERS: dict[str, tuple[str, str | None]] = {  # name: (role, agent id)
    "ada": ("agent", "ada"),
    "grace": ("agent", "grace"),
    "boss": ("supervisor", None),
    "root": ("admin", None),
}
PASSWORD = "correct horse {name}"


# ------------------------------------------------------------------------------------------------- chromium


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium (Debian's), shared by the tests of one module."""
    if not CHROMIUM.exists():
        message = f"Chromium is not installed at {CHROMIUM} (Debian package 'chromium'; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        pw.stop()


@dataclass
class PageWatch:
    """What a page did that a test did not ask for: dialogs it opened, script errors it hit."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    allow_errors: bool = False


_WATCHES: dict[int, PageWatch] = {}


def watch(page: Any) -> PageWatch:
    """The dialogs and errors recorded for a page made by ``new_page``."""
    return _WATCHES[id(page)]


@pytest.fixture
def new_page(chromium: Any) -> Iterator[Callable[[], Any]]:
    """A factory of pages, each in a browser context of its own (an agent, a supervisor, a customer)."""
    contexts: list[Any] = []
    pages: list[Any] = []

    def make() -> Any:
        context = chromium.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(T_MS)
        contexts.append(context)
        page = context.new_page()
        seen = _WATCHES[id(page)] = PageWatch()

        def on_dialog(dialog: Any) -> None:
            seen.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        def on_console(msg: Any) -> None:
            # CSP violations reach only the console; a blocked inline script is a bug in a template.
            if msg.type == "error" and "Content Security Policy" in msg.text:
                seen.errors.append(msg.text)

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda exc: seen.errors.append(str(exc)))
        page.on("console", on_console)
        pages.append(page)
        return page

    yield make
    problems = []
    for page in pages:
        seen = _WATCHES.pop(id(page))
        if seen.errors and not seen.allow_errors:
            problems.append(f"{page.url}: {seen.errors}")
    for context in contexts:
        context.close()
    assert not problems, f"script errors in the pages: {problems}"


# ---------------------------------------------------------------------------------------------- the server


@dataclass
class LiveServer:
    server: Server
    sink: Sink
    database: Path
    config: Path
    passwords: dict[str, str]
    tokens: dict[str, str]

    @property
    def base(self) -> str:
        return self.server.url.rstrip("/")

    def url(self, path: str = "/") -> str:
        return self.base + path


def _config(tmp_path: Path, smarthost_port: int, edit: Callable[[str], str] | None) -> Path:
    from contactcentre.config import DEFAULT_CONFIG_PATH

    text = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^(\s*)smarthost_port = \d+", rf"\g<1>smarthost_port = {smarthost_port}", text)
    assert n == 1, "contactcentre/data/default.toml: expected one smarthost_port line"
    if edit is not None:
        text = edit(text)
    path = tmp_path / "centre.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _add_users(database: Path) -> tuple[dict[str, str], dict[str, str]]:
    from contactcentre.store.db import open_store
    from contactcentre.store.users import add_user

    passwords = {name: PASSWORD.format(name=name) for name in USERS}
    engine = open_store(database)
    try:
        with engine.begin() as conn:
            tokens = {
                name: add_user(conn, name, role, 0, agent_id=agent_id, password=passwords[name])
                for name, (role, agent_id) in USERS.items()
            }
    finally:
        engine.dispose()
    return passwords, tokens


def start_live_server(tmp_path: Path, sink: Sink, edit: Callable[[str], str] | None = None) -> LiveServer:
    """Start ``contactcentre serve`` on a fresh store with the test users; ``edit`` may change the config text."""
    database = tmp_path / "centre.sqlite"
    passwords, tokens = _add_users(database)
    config = _config(tmp_path, sink.port, edit)
    return LiveServer(start_server(config, database), sink, database, config, passwords, tokens)


@contextlib.contextmanager
def running_live_server(tmp_path: Path, edit: Callable[[str], str] | None = None) -> Iterator[LiveServer]:
    """A live server (``start_live_server``) stopped at the end, which must exit cleanly and without a traceback."""
    sink = Sink()
    try:
        live = start_live_server(tmp_path, sink, edit=edit)
        try:
            yield live
        finally:
            code, err = live.server.stop()
            assert code == 0, f"the server exited with {code}: {err}"
            assert "Traceback" not in err, err
    finally:
        sink.close()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    with running_live_server(tmp_path) as live:
        yield live


# ------------------------------------------------------------------------------------------------- helpers


def login(page: Any, live: LiveServer, user: str, password: str | None = None, *, next_path: str | None = None) -> None:
    """Log in through the form; waits until the browser has left /login (on a wrong password it stays)."""
    from playwright.sync_api import expect

    page.goto(live.url("/login" + (f"?next={next_path}" if next_path else "")))
    page.fill("#username", user)
    page.fill("#password", live.passwords[user] if password is None else password)
    page.click("#login button[type=submit]")
    if password is None:
        expect(page).not_to_have_url(re.compile(r"/login"), timeout=T_MS)


def logout(page: Any) -> None:
    """Press the page's log-out button (a form posting to /logout with the CSRF token)."""
    from playwright.sync_api import expect

    page.click("form[action='/logout'] button")
    expect(page).to_have_url(re.compile(r"/login"), timeout=T_MS)


def open_chat(
    page: Any,
    live: LiveServer,
    *,
    name: str = "Cleo Customer",
    topic: str = "My router blinks",
    email: str | None = "cleo@example.com",
    queue: str | None = None,
    text: str | None = None,
) -> None:
    """Open the customers' chat widget, start a chat and (with ``text``) send a first message.

    Returns once the server has answered the hello (waiting for an agent, or nobody online) and, with ``text``,
    once the message has been acknowledged."""
    from playwright.sync_api import expect

    page.goto(live.url("/chat"))
    page.fill("#name", name)
    page.fill("#topic", topic)
    if email:
        page.fill("#email", email)
    if queue is not None:
        page.select_option("#queue", queue)
    page.click("#prechat button[type=submit]")
    expect(page.locator("#status")).to_have_text(re.compile(r"Waiting for an agent|Nobody is online|Chatting"))
    if text is not None:
        page.fill("#text", text)
        page.click("#compose button[type=submit]")
        expect(page.locator("#log li.customer:not(.sending)").last).to_be_visible()


def screenshot(page: Any, name: str, *, full_page: bool = False) -> Path | None:
    """Save ``docs/NAME.png`` when SCREENSHOTS=1 (pictures for the README); a no-op otherwise."""
    if os.environ.get("SCREENSHOTS") != "1":
        return None
    path = DOCS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def start_async(coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
    """Start a coroutine on a new event loop in a worker thread and return at once (see the module's note):
    e.g. an agent or a customer speaking the WebSocket protocol while the browser plays the other side.
    Collect it with ``future.result(timeout=...)``; give the coroutine its own timeouts (``asyncio.timeout``)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(asyncio.run, coro)
    finally:
        pool.shutdown(wait=False)  # the thread ends with the coroutine


def run_async(coro: Coroutine[Any, Any, Any], timeout: float = T_MS / 1000 * 2) -> Any:
    """Run a coroutine to completion on a new event loop in a worker thread and return its result."""
    return start_async(coro).result(timeout=timeout)
