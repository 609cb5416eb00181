"""Logging in, on both backends: no login CSRF, throttling per account and per address with a clear 429,
argon2 outside any write transaction, and failed attempts audited without flooding the log."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import func, select

from propcrm.adapters.db import models as m
from propcrm.services import logins
from propcrm.services.logins import LoginThrottle
from support.staff import PASSWORD

pytestmark = pytest.mark.usefixtures("cheap_argon2")


def api_login(world, email="risk@fa.example", password=PASSWORD, **kwargs):
    world.client.cookies.clear()
    return world.client.post("/api/v1/login", json={"firm": "fa", "email": email, "password": password}, **kwargs)


# --------------------------------------------------------------------------------------------------
# login CSRF


@pytest.mark.parametrize("how,headers,body", [
    ("a form from another site", {"Origin": "https://evil.example",
                                  "Content-Type": "application/x-www-form-urlencoded"},
     f"firm=fa&email=risk%40fa.example&password={PASSWORD.replace(' ', '+')}"),
    ("a form without an Origin", {"Content-Type": "application/x-www-form-urlencoded"},
     f"firm=fa&email=risk%40fa.example&password={PASSWORD.replace(' ', '+')}"),
    ("JSON as text/plain (a form can send that)", {"Content-Type": "text/plain"},
     f'{{"firm": "fa", "email": "risk@fa.example", "password": "{PASSWORD}"}}'),
    ("JSON from another origin", {"Origin": "https://evil.example", "Content-Type": "application/json"},
     f'{{"firm": "fa", "email": "risk@fa.example", "password": "{PASSWORD}"}}'),
    ("JSON a browser says is cross-site", {"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"},
     f'{{"firm": "fa", "email": "risk@fa.example", "password": "{PASSWORD}"}}'),
    ("JSON from a sandboxed page", {"Origin": "null", "Content-Type": "application/json"},
     f'{{"firm": "fa", "email": "risk@fa.example", "password": "{PASSWORD}"}}'),
])
def test_a_login_another_site_could_send_is_refused_and_sets_no_cookie(world, how, headers, body):
    world.client.cookies.clear()
    response = world.client.post("/api/v1/login", content=body.encode(), headers=headers)
    assert response.status_code in (403, 415), (how, response.status_code, response.text)
    assert "set-cookie" not in response.headers and "error" in response.json()
    assert world.audit("user.login") == []


def test_programs_and_this_sites_pages_still_log_in(world):
    assert api_login(world).status_code == 200  # a program: no Origin
    same = api_login(world, headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200 and "propcrm_session=" in same.headers["set-cookie"]
    # the web form, with its double-submit token
    world.client.cookies.clear()
    page = world.client.get("/login")
    token = world.client.cookies.get("propcrm_login_csrf")
    form = world.client.post("/login", data={"firm": "fa", "email": "risk@fa.example", "password": PASSWORD,
                                             "csrf": token}, headers={"Origin": "http://testserver"},
                             follow_redirects=False)
    assert page.status_code == 200 and form.status_code == 303 and "propcrm_session=" in form.headers["set-cookie"]


# --------------------------------------------------------------------------------------------------
# throttling


def small_throttle(world, **limits) -> LoginThrottle:
    throttle = LoginThrottle(**{"account_failures": 3, "address_failures": 5, **limits})
    world.client.app.state.login_throttle = throttle
    return throttle


def test_an_account_is_throttled_with_a_clear_429_and_retry_after_even_for_the_right_password(world):
    small_throttle(world)
    for _ in range(3):
        assert api_login(world, password="not the password").status_code == 401
    refused = api_login(world)  # the right password, but the account is throttled
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) == refused.json()["retry_after"] > 0
    assert "too many failed logins for this account" in refused.json()["error"]
    assert api_login(world, email="admin@fa.example").status_code == 200  # other accounts log in


def test_an_address_is_throttled_whatever_account_it_tries(world):
    small_throttle(world)
    for i in range(5):
        assert api_login(world, email=f"guess{i}@fa.example").status_code == 401
    refused = api_login(world, email="admin@fa.example")
    assert refused.status_code == 429 and "your address" in refused.json()["error"]


def test_failed_logins_are_audited_while_they_say_something_new(world):
    small_throttle(world, account_failures=10, address_failures=1000)
    for _ in range(25):
        api_login(world, password="guessing again")
    failed, throttled = world.audit("user.login_failed"), world.audit("user.login_throttled")
    # the first failure, the one that reached the limit, then the throttled attempts in one entry
    assert [e.after["failures_of_account"] for e in failed] == [1, 10]
    assert len(throttled) == 1 and throttled[0].after["limit"] == "account"
    assert throttled[0].after["retry_after_s"] > 0 and throttled[0].after["address"] == "testclient"
    with world.sessions() as s:
        assert s.scalar(select(func.count()).select_from(m.AuditEntry)
                        .where(m.AuditEntry.action.like("user.login%"))) == 3  # not 25


def test_the_web_login_form_is_throttled_too(world):
    small_throttle(world)
    world.client.cookies.clear()
    world.client.get("/login")
    token = world.client.cookies.get("propcrm_login_csrf")
    answers = [world.client.post("/login", data={"firm": "fa", "email": "risk@fa.example", "password": "nope nope",
                                                 "csrf": token}, follow_redirects=False) for _ in range(4)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert "Too many failed logins" in answers[-1].text and int(answers[-1].headers["retry-after"]) > 0


def test_changing_ones_password_counts_wrong_current_passwords_as_failed_logins(world):
    small_throttle(world)
    mine = {"Authorization": f"Bearer {world.tokens['fa:risk']}"}
    for _ in range(3):
        assert world.client.post("/api/v1/me/password", json={"current_password": "guess guess",
                                                              "new_password": "a brand new passphrase"},
                                 headers=mine).status_code == 403
    refused = world.client.post("/api/v1/me/password", json={"current_password": PASSWORD,
                                                             "new_password": "a brand new passphrase"}, headers=mine)
    assert refused.status_code == 429


def test_the_password_is_verified_while_no_write_transaction_is_open(world, monkeypatch, db_url):
    """On SQLite a write transaction holds the database's write lock: verifying inside one made every
    ingestion wait for argon2. While the password is checked, another connection can write at once."""
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's transactions do not lock the database while reading; the lock is SQLite's")
    path = db_url.removeprefix("sqlite:///")
    seen = []
    real = logins._verify

    def verify(stored: str, password: str) -> bool:
        probe = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")  # fails at once ("database is locked") if a writer is open
            probe.execute("ROLLBACK")
            seen.append("free")
        except sqlite3.OperationalError as exc:
            seen.append(str(exc))
        finally:
            probe.close()
        return real(stored, password)

    monkeypatch.setattr(logins, "_verify", verify)
    assert api_login(world).status_code == 200
    assert api_login(world, password="wrong wrong wrong").status_code == 401
    assert world.client.post("/api/v1/me/password", json={"current_password": PASSWORD, "new_password": PASSWORD},
                             headers={"Authorization": f"Bearer {world.tokens['fa:risk']}"}).status_code == 200
    assert seen == ["free", "free", "free"]
