"""Security review of the web back office and trader portal (issue 7): each test pins one defect found
in review and fails until it is fixed. Comments name the defect and where it lives."""

from __future__ import annotations

import re

import pytest

from propcrm.adapters.db import models as m
from propcrm.api.auth import COOKIE_NAME
from propcrm.services import users
from support.staff import PASSWORD, build_world, seed
from support.web import browse


pytestmark = pytest.mark.usefixtures("cheap_argon2")

@pytest.fixture
def world(tmp_path):
    app, world = build_world(f"sqlite:///{tmp_path / 'review.db'}")
    with world.client:
        yield seed(world)


@pytest.fixture
def both(db_url):
    app, world = build_world(db_url)
    with world.client:
        yield seed(world)


# --------------------------------------------------------------------------------------------------
# DEFECT: web/routes/audit.py:42 (_when) — a date at the edge of the calendar overflows. "until=9999-12-31"
# adds a day past datetime.max, and "since=0001-01-01T00:00+01:00" converted to UTC falls before
# datetime.min: OverflowError escapes (only ValueError is caught) and the audit search answers 500
# instead of the form's 422 with a message. One GET by any risk user takes a 500 (and an error log line).


@pytest.mark.parametrize("query", ["until=9999-12-31", "since=0001-01-01T00:00%2B01:00",
                                   "until=0001-01-01T00:30%2B01:00"])
def test_audit_search_dates_at_the_calendar_edge_are_a_form_error_not_a_500(world, query):
    response = browse(world, "risk").get(f"/office/audit?{query}")
    assert response.status_code == 422, (query, response.status_code)


# --------------------------------------------------------------------------------------------------
# DEFECT: web/core.py:135-139 (csrf_token) + web/routes/session.py:25-33 (_login_page) — the login form's
# token is HMAC(session cookie) whenever a propcrm_session cookie is present, even a dead one (revoked,
# expired, of a deactivated user, of another deployment), but POST /login compares it with the
# double-submit login cookie. A browser holding a dead session cookie is sent to /login by every page
# and then every login attempt is refused as "The form expired" (403): the user is locked out until they
# clear cookies by hand. (Same for a logged-in user who opens /login to switch account.)


def test_a_dead_session_cookie_does_not_lock_the_user_out_of_the_login_form(world):
    token = world.fresh_token("risk")
    with world.sessions.begin() as s:
        users.revoke_token(s, token=token, actor="test")
    client = world.client
    client.cookies.clear()
    client.cookies.set(COOKIE_NAME, token)  # the browser still holds the revoked session's cookie
    page = client.get("/office/accounts", follow_redirects=True)
    assert page.status_code == 200 and 'name="password"' in page.text  # sent to the login form
    sent = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    response = client.post("/login", data={"csrf": sent, "firm": "fa", "email": "risk@fa.example",
                                           "password": PASSWORD, "next": "/office/accounts"},
                           follow_redirects=False)
    assert response.status_code == 303, (response.status_code, "the login with the correct password was refused")
    assert response.headers["location"] == "/office/accounts"


# --------------------------------------------------------------------------------------------------
# DEFECT: web/routes/payouts.py:30 and web/routes/cases.py:30 — MAX_ID = 2**63-1 for ids stored in
# INTEGER columns (payouts.id, scalings.id, cases.id; the API's routes cap at 2**31-1). On PostgreSQL an id
# above 2**31-1 reaches the database, fails to bind ("integer out of range") and the page answers 422 with
# an empty message, where the rule is "data that does not exist is 404" (SQLite answers 404).


@pytest.mark.parametrize("method, path, who", [
    ("GET", "/office/payouts/3000000000", "risk"),
    ("GET", "/office/cases/3000000000", "risk"),
    ("POST", "/office/payouts/3000000000/approve", "finance"),
    ("POST", "/office/cases/3000000000/notes", "risk"),
    ("POST", "/office/scalings/3000000000/approve", "risk"),
])
def test_an_id_beyond_the_integer_columns_is_404_on_every_backend(both, method, path, who):
    page = browse(both, who)
    response = page.get(path) if method == "GET" else page.post_form(path, {"text": "a note long enough"})
    assert response.status_code == 404, (path, response.status_code)


# --------------------------------------------------------------------------------------------------
# DEFECT: web/routes/live.py:14-25 and web/live.py:314-340 (stream) — the session is checked once, when
# GET /live opens; the stream then runs for as long as the browser keeps it (a heartbeat every 15 s keeps
# proxies from closing it) and never looks at the session again. After logout, a revoked session, or a
# deactivated user (an employee who left), an open tab keeps receiving every new decision of the firm —
# account, rule, message, value — indefinitely. Fix: re-resolve the token every few seconds in stream()
# (or on each poll per subscriber) and end the stream when it no longer resolves to the same user.


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_open_live_stream_stops_delivering_once_its_session_is_revoked(tmp_path):
    import datetime as dt
    import json
    import threading
    import time
    from decimal import Decimal

    import httpx
    import uvicorn

    from propcrm.adapters.db.session import migrate

    url = f"sqlite:///{tmp_path / 'live.db'}"
    migrate(url)
    app, world = build_world(url)
    seed(world)
    token = world.tokens["fa:risk"]
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    runner = threading.Thread(target=server.run, daemon=True)
    runner.start()
    base = f"http://127.0.0.1:{port}"
    received: list[bytes] = []
    stop = threading.Event()

    def watch():
        try:
            with httpx.stream("GET", f"{base}/live?decisions=1", cookies={COOKIE_NAME: token},
                              timeout=httpx.Timeout(20, read=20)) as response:
                for chunk in response.iter_raw():
                    received.append(chunk)
                    if stop.is_set():
                        return
        except httpx.HTTPError:
            pass

    def new_decision(n: int) -> None:
        with world.sessions.begin() as s:
            account = s.get(m.Account, world.accounts["A1"])
            body = {"account": account.external_id, "event_id": f"review-{n}", "kind": "breach"}
            s.add(m.Decision(firm_id="fa", account_id=account.id, event_seq=None, event_id=f"review-{n}",
                             ts=dt.datetime(2026, 3, 3, 10, n, tzinfo=dt.timezone.utc), kind="breach",
                             rule="daily_loss", phase=account.phase, message=f"review decision {n}",
                             value=Decimal("1"), threshold=Decimal("2"), body=json.dumps(body).encode()))

    def wait_for(marker: bytes, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if marker in b"".join(received):
                return True
            time.sleep(0.1)
        return False

    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        reader = threading.Thread(target=watch, daemon=True)
        reader.start()
        assert wait_for(b"retry:", 10)
        deadline = time.monotonic() + 10
        while getattr(getattr(app.state, "live_hub", None), "cursor", None) is None:  # its first poll sets it
            assert time.monotonic() < deadline, "the live hub did not poll"
            time.sleep(0.05)
        new_decision(1)
        assert wait_for(b"review decision 1", 8), "the stream does not deliver at all (test setup)"

        with world.sessions.begin() as s:  # what POST /logout does (or an admin revoking the user's sessions)
            users.revoke_token(s, token=token, actor="test")
        time.sleep(1.0)  # longer than live.RECHECK: the stream must ask again before its next event
        new_decision(2)
        # the decision, or the end of the stream (a revoked session's stream ends at its next event), or 5 s
        deadline = time.monotonic() + 5
        while b"review decision 2" not in b"".join(received) and reader.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        leaked = b"review decision 2" in b"".join(received)
        assert not leaked, "a revoked session's open /live stream still receives the firm's new decisions"
    finally:
        stop.set()
        server.should_exit = server.force_exit = True  # do not wait for the open stream
        runner.join(10)


# --------------------------------------------------------------------------------------------------
# DEFECT: form ids are checked with str.isdigit(), which is true for non-ASCII digits ("²", "٣") that int()
# refuses: the ValueError escapes and the form answers 500 instead of its flash/422.
#   web/routes/cases.py:70      (assign: user_id)
#   web/routes/portal.py:137     (request a payout: account_id; any trader can trigger it)
#   web/routes/packs.py:129      (save a draft: from)
# (audit.py already guards with isascii(); these three do not.) Fix: `raw.isascii() and raw.isdigit()`,
# or try/except ValueError.


def test_a_non_ascii_digit_in_a_form_id_is_refused_not_a_500(world):
    from support.lifecycle import open_case

    case = open_case(world, firm="fa", account_ids=[world.accounts["A1"]])
    posts = [
        ("risk", f"/office/cases/{case}/assign", {"user_id": "²"}),
        ("trader", "/portal/payouts", {"account_id": "²"}),
        ("admin", "/office/packs/two-step-100k/draft", {"pack": "id: two-step-100k", "from": "²"}),
    ]
    failures = []
    for who, path, fields in posts:
        response = browse(world, who).post_form(path, fields)
        if response.status_code >= 500:
            failures.append((path, response.status_code))
    assert not failures, failures
