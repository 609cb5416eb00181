"""A real server and a real browser: ``propcrm serve`` in a subprocess, Debian's Chromium driven by Playwright.

Fixtures:

- ``site`` (session): the server on a free port over a file SQLite database, seeded with firm ``acme``
  (pack two-step-100k active, traders t1 and t2, accounts ACME-1…ACME-3, a user of every role
  ``<role>@acme.example`` — the trader user is t1 — and a platform key). ``site.post_events`` sends
  signed NDJSON like a platform; the server's own worker evaluates it.
- ``page_as(role, mobile=False)``: a Playwright page logged in through the login form.
- ``shot(page, name)``: a screenshot in ``tests/browser/screenshots/`` (the docs use the best ones).

Chromium comes from Debian (``make test`` installs it; no browser download is possible here). Without
it these tests skip — except under ``CI=true``, where a missing browser fails.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

CHROMIUM = os.environ.get("PROPCRM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
SCREENSHOTS = Path(__file__).parent / "screenshots"
PASSWORD = "correct horse battery staple"
ROLES = ("admin", "risk", "finance", "support", "trader")
FIRM = "acme"


def _need_browser():
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium (make test does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Site:
    url: str
    database_url: str
    sessions: object
    key_id: str
    secret: str
    password: str = PASSWORD
    traders: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, int] = field(default_factory=dict)  # external id -> id
    version_id: int = 0
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    _counter: itertools.count = field(default_factory=lambda: itertools.count(100))

    def email(self, role: str) -> str:
        return f"{role}@{FIRM}.example"

    def new_account(self, trader: str | None = "t1", phase: str | None = None) -> dict:
        from propcrm.services.catalog import create_account

        external = f"ACME-{next(self._counter)}"
        with self.sessions.begin() as s:
            account = create_account(s, firm_id=FIRM, external_id=external, pack_version_id=self.version_id,
                                     platform="mt5", phase=phase,
                                     trader_id=self.traders[trader] if trader else None)
            account_id = account.id
        self.accounts[external] = account_id
        return {"id": account_id, "external_id": external}

    def post_events(self, events: list[dict]) -> dict:
        body = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)
        ts = str(int(time.time()))
        mac = hmac.new(self.secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        response = httpx.post(f"{self.url}/api/v1/events", content=body, timeout=30, headers={
            "X-Propcrm-Key": self.key_id, "X-Propcrm-Timestamp": ts, "X-Propcrm-Signature": f"sha256={mac}",
            "Content-Type": "application/x-ndjson"})
        assert response.status_code == 200, response.text
        return response.json()

    def status_of(self, account_id: int) -> str:
        from propcrm.adapters.db import models as m

        with self.sessions() as s:
            return s.get(m.Account, account_id).status

    def wait_status(self, account_id: int, status: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status_of(account_id) == status:
                return
            time.sleep(0.1)
        raise AssertionError(f"account {account_id} is {self.status_of(account_id)!r}, not {status!r}, "
                             f"after {timeout} s\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _seed(database_url: str) -> Site:
    from propcrm.adapters.db import models as m
    from propcrm.adapters.db.session import make_engine, migrate, sessions
    from propcrm.domain.rulepack import load_pack
    from propcrm.services import users
    from propcrm.services.apikeys import create_key
    from propcrm.services.catalog import add_pack, create_account, ensure_firm

    migrate(database_url)
    factory = sessions(make_engine(database_url))
    traders: dict[str, int] = {}
    accounts: dict[str, int] = {}
    with factory.begin() as s:
        ensure_firm(s, firm_id=FIRM, name="Acme Prop")
        version_id = add_pack(s, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True).id
        for name, email in (("t1", "tina@traders.example"), ("t2", "tom@traders.example")):
            trader = m.Trader(firm_id=FIRM, name={"t1": "Tina Trader", "t2": "Tom Trader"}[name], email=email,
                              country="GB")
            s.add(trader)
            s.flush()
            traders[name] = trader.id
        for number, trader in ((1, "t1"), (2, "t1"), (3, "t2")):
            account = create_account(s, firm_id=FIRM, external_id=f"ACME-{number}", pack_version_id=version_id,
                                     platform="mt5", trader_id=traders[trader])
            accounts[account.external_id] = account.id
        for role in ROLES:
            users.create_user(s, firm_id=FIRM, email=f"{role}@{FIRM}.example", password=PASSWORD, role=role,
                              trader_id=traders["t1"] if role == "trader" else None)
        key_id, secret = create_key(s, firm_id=FIRM, platform="mt5")
    return Site(url="", database_url=database_url, sessions=factory, key_id=key_id, secret=secret,
                traders=traders, accounts=accounts, version_id=version_id)


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    _need_browser()
    folder = tmp_path_factory.mktemp("site")
    database_url = f"sqlite:///{folder / 'site.db'}"
    site = _seed(database_url)
    port = _free_port()
    site.url = f"http://127.0.0.1:{port}"
    site.log_path = folder / "server.log"
    env = {**os.environ, "PROPCRM_ANALYSIS_INTERVAL": "3600", "PYTHONUNBUFFERED": "1"}
    env.pop("PROPCRM_NATS_URL", None)
    with open(site.log_path, "wb") as log:
        site.process = subprocess.Popen(
            [sys.executable, "-c", "from propcrm.cli import app; app()", "serve", "--no-demo", "--host", "127.0.0.1",
             "--port", str(port), "--database-url", database_url],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{site.url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if site.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the server did not start:\n{site.log_tail()}")
        time.sleep(0.2)
    yield site
    site.process.send_signal(signal.SIGINT)
    try:
        site.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(site.process.pid, signal.SIGKILL)
        site.process.wait()


@pytest.fixture(scope="session")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page_as(site, browser):
    """``page_as("risk")`` → a page logged in as that role through the login form (fresh context)."""
    contexts = []

    def login(role: str, mobile: bool = False, email: str | None = None, password: str | None = None):
        viewport = {"width": 390, "height": 844} if mobile else {"width": 1366, "height": 800}
        context = browser.new_context(viewport=viewport, base_url=site.url, is_mobile=mobile, has_touch=mobile,
                                      device_scale_factor=2 if mobile else 1)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.console_errors = []
        page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
        page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
        page.goto("/login")
        page.get_by_label("Firm").fill(FIRM)
        page.get_by_label("E-mail").fill(email or site.email(role))
        page.get_by_label("Password").fill(password or site.password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_load_state()
        assert "/login" not in page.url, f"login as {role} failed: {page.url}"
        return page

    yield login
    for context in contexts:
        context.close()


@pytest.fixture
def shot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str, full_page: bool = True) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return take


__all__ = ["Site", "PASSWORD", "ROLES", "FIRM", "shutil"]
