"""The people pages (issue 16) on both backends: an admin adds a staff member, manages API keys and switches
a lost two-factor off; a staff member enrols TOTP two-factor login and then logs in with a code — on the web
form and through the API — with each code working once and recovery codes (kept as argon2 hashes) once
each. Who may: users and keys pages admin only; the two-factor page every user (traders too)."""

from __future__ import annotations

import datetime as dt
import re

import pyotp
import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.api.auth import COOKIE_NAME
from support.staff import PASSWORD, build_world, seed
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")
UTC = dt.timezone.utc


@pytest.fixture
def world(db_url):
    app, world = build_world(db_url)
    with world.client:
        seed(world)
        yield world


def flash(response) -> str:
    found = re.search(r'<p class="flash" role="status">(.*?)</p>', response.text, re.S)
    return found.group(1) if found else ""


def code_at(secret: str, seconds_ahead: int = 0) -> str:
    return pyotp.TOTP(secret).at(dt.datetime.now(UTC) + dt.timedelta(seconds=seconds_ahead))


def web_login(world, email: str, password: str = PASSWORD):
    world.client.cookies.clear()
    world.client.get("/login")
    csrf = world.client.cookies.get("propcrm_login_csrf")
    answer = world.client.post("/login", data={"firm": "fa", "email": email, "password": password, "csrf": csrf},
                               follow_redirects=False)
    return answer, csrf


def enrol(world, who: str) -> tuple[str, list[str]]:
    page = browse(world, who)
    assert page.post_form("/account/two-factor/start", {}).status_code == 303
    html = page.get("/account/two-factor").text
    secret = re.search(r'data-testid="totp-secret">([A-Z2-7]+)<', html).group(1)
    assert 'src="data:image/svg+xml' in html
    wrong = page.post_form("/account/two-factor/confirm", {"code": "000000" if code_at(secret) != "000000" else "111111"})
    assert "Not done: code" in flash(page.get("/account/two-factor"))
    assert wrong.status_code == 303
    done = page.post_form("/account/two-factor/confirm", {"code": code_at(secret)})
    codes = re.findall(r"<li><code>([0-9a-f]{8}-[0-9a-f]{8})</code></li>", done.text)
    assert done.status_code == 200 and len(codes) == 10
    return secret, codes


def test_who_may_open_the_people_pages(world):
    for url, allowed in (("/office/users", ("admin",)), ("/office/api-keys", ("admin",)),
                         ("/account/two-factor", ("admin", "risk", "finance", "support", "trader"))):
        for role in ("admin", "risk", "finance", "support", "trader"):
            assert browse(world, role).get(url).status_code == (200 if role in allowed else 403), (url, role)
    for role in ("risk", "support", "trader"):
        page = browse(world, role)
        assert page.post_form("/office/users", {"email": "x@fa.example", "role": "admin"}).status_code == 403
        assert page.post_form("/office/api-keys", {"platform": "mt5"}).status_code == 403
        assert page.post_form(f"/office/users/{world.user_ids['fa:risk']}/two-factor/off", {}).status_code == 403
    # a trader enrols too (issue 17: from the portal's profile; test_web_portal_profile.py logs in with a code)
    assert browse(world, "trader").post_form("/account/two-factor/start", {}).status_code == 303


def test_an_admin_adds_a_staff_member_with_a_generated_or_chosen_password(world):
    admin = browse(world, "admin")
    shown = admin.post_form("/office/users", {"email": "New.Person@fa.example", "role": "support"})
    generated = re.search(r"<code>(.+?)</code>", shown.text.split('data-testid="generated-password"')[1]).group(1)
    assert shown.status_code == 200 and "new.person@fa.example" in shown.text
    world.client.cookies.clear()
    assert world.client.post("/api/v1/login", json={"firm": "fa", "email": "new.person@fa.example",
                                                    "password": generated}).status_code == 200
    admin = browse(world, "admin")
    admin.post_form("/office/users", {"email": "chosen@fa.example", "role": "risk", "password": "a fine long passphrase"})
    assert "chosen@fa.example is added as risk" in flash(admin.get("/office/users"))
    # a trader login, a weak password, a duplicate: refused with the reason
    admin.post_form("/office/users", {"email": "t@fa.example", "role": "trader"})
    assert "Not done: role" in flash(admin.get("/office/users"))
    admin.post_form("/office/users", {"email": "weak@fa.example", "role": "risk", "password": "short"})
    assert "Not done" in flash(admin.get("/office/users"))
    admin.post_form("/office/users", {"email": "chosen@fa.example", "role": "risk", "password": "another long passphrase"})
    assert "already exists" in flash(admin.get("/office/users"))
    created = world.audit("user.create")
    assert [e.after["email"] for e in created][-2:] == ["new.person@fa.example", "chosen@fa.example"]
    assert all(e.after["created_by_user_id"] == world.user_ids["fa:admin"] for e in created[-2:])


def test_enrolling_two_factor_then_logging_in_needs_the_code(world):
    secret, recovery = enrol(world, "risk")
    assert world.audit("user.totp_enabled")[-1].entity_id == str(world.user_ids["fa:risk"])
    with world.sessions() as s:
        hashes = s.scalars(select(m.RecoveryCode.code_hash)).all()
    assert len(hashes) == 10 and all(h.startswith("$argon2") for h in hashes)
    assert not any(code.replace("-", "") in h for code in recovery for h in hashes)
    # the password alone: no session, the code page
    answer, csrf = web_login(world, "risk@fa.example")
    assert answer.status_code == 200 and "Authentication code" in answer.text
    assert COOKIE_NAME not in world.client.cookies
    wrong = world.client.post("/login/code", data={"code": "12345x", "csrf": csrf}, follow_redirects=False)
    assert wrong.status_code == 401 and "Wrong code" in wrong.text and COOKIE_NAME not in world.client.cookies
    ahead = code_at(secret, 30)  # the enrolment used the current step: each step's code works once
    right = world.client.post("/login/code", data={"code": ahead, "csrf": csrf}, follow_redirects=False)
    assert right.status_code == 303 and world.client.cookies.get(COOKIE_NAME)
    assert world.client.get("/office/accounts").status_code == 200
    assert world.audit("user.login")[-1].after["second_factor"] == "totp"
    # the same code again: refused
    answer, csrf = web_login(world, "risk@fa.example")
    again = world.client.post("/login/code", data={"code": ahead, "csrf": csrf}, follow_redirects=False)
    assert again.status_code == 401
    # a recovery code works, once
    used = world.client.post("/login/code", data={"code": recovery[0].upper(), "csrf": csrf}, follow_redirects=False)
    assert used.status_code == 303 and world.audit("user.login")[-1].after["second_factor"] == "recovery"
    answer, csrf = web_login(world, "risk@fa.example")
    assert world.client.post("/login/code", data={"code": recovery[0], "csrf": csrf},
                             follow_redirects=False).status_code == 401
    # the API: the password alone is refused with the reason; with a code it logs in
    world.client.cookies.clear()
    refused = world.client.post("/api/v1/login", json={"firm": "fa", "email": "risk@fa.example", "password": PASSWORD})
    assert refused.status_code == 401 and "two-factor" in refused.json()["error"]
    ok = world.client.post("/api/v1/login", json={"firm": "fa", "email": "risk@fa.example", "password": PASSWORD,
                                                  "code": recovery[1]})
    assert ok.status_code == 200 and ok.json()["user"]["role"] == "risk"
    # without a ticket (or with a made-up one) the code step leads back to the password
    world.client.cookies.clear()
    world.client.get("/login")
    csrf = world.client.cookies.get("propcrm_login_csrf")
    lost = world.client.post("/login/code", data={"code": code_at(secret), "csrf": csrf}, follow_redirects=False)
    assert lost.status_code == 401 and "enter your password again" in lost.text


def test_a_ticket_allows_a_few_codes_and_the_admin_switches_a_lost_two_factor_off(world):
    secret, _ = enrol(world, "support")
    answer, csrf = web_login(world, "support@fa.example")
    for _ in range(5):
        world.client.post("/login/code", data={"code": "000001", "csrf": csrf}, follow_redirects=False)
    used_up = world.client.post("/login/code", data={"code": code_at(secret, 30), "csrf": csrf}, follow_redirects=False)
    assert used_up.status_code == 401 and COOKIE_NAME not in world.client.cookies
    admin = browse(world, "admin")
    assert "Switch two-factor off" in admin.get("/office/users").text
    admin.post_form(f"/office/users/{world.user_ids['fa:support']}/two-factor/off", {})
    assert "is off" in flash(admin.get("/office/users"))
    assert world.audit("user.totp_disabled")[-1].entity_id == str(world.user_ids["fa:support"])
    answer, _ = web_login(world, "support@fa.example")
    assert answer.status_code == 303 and world.client.cookies.get(COOKIE_NAME)
    # an admin cannot switch their own off
    enrol(world, "admin")
    admin = browse(world, "admin")
    admin.post_form(f"/office/users/{world.user_ids['fa:admin']}/two-factor/off", {})
    with world.sessions() as s:
        assert s.get(m.User, world.user_ids["fa:admin"]).totp_enabled_at is not None


def test_api_keys_are_created_with_the_secret_shown_once_and_revoked(world):
    admin = browse(world, "admin")
    made = admin.post_form("/office/api-keys", {"platform": "ctrader"})
    issued = made.text.split('data-testid="issued-key"')[1]
    key_id, secret = re.findall(r"<code>(.+?)</code>", issued)[:2]
    assert made.status_code == 200 and len(secret) >= 20
    listing = admin.get("/office/api-keys").text
    assert key_id in listing and secret not in listing
    admin.post_form("/office/api-keys", {"platform": ""})
    assert "Not done" in flash(admin.get("/office/api-keys"))
    admin.post_form(f"/office/api-keys/{key_id}/revoke", {})
    assert "revoked" in flash(admin.get("/office/api-keys"))
    with world.sessions() as s:
        assert s.get(m.ApiKey, key_id).active is False
    assert browse(world, "fb:admin").post_form(f"/office/api-keys/{key_id}/revoke", {}).status_code == 404
    assert [e.action for e in world.audit("api_key.revoke")] == ["api_key.revoke"]


def test_a_recovery_code_is_checked_while_no_write_transaction_is_open(world, monkeypatch, db_url):
    """argon2 on a recovery code inside a write transaction would hold SQLite's write lock (every ingestion
    waiting); it is checked in a read unit of work first."""
    import sqlite3

    from propcrm.services import totp

    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's transactions do not lock the database while reading; the lock is SQLite's")
    _, recovery = enrol(world, "finance")
    path = db_url.removeprefix("sqlite:///")
    seen = []
    real = totp.verify_password

    def verify(stored: str, password: str) -> bool:
        probe = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")  # fails at once if a writer is open
            probe.execute("ROLLBACK")
            seen.append("free")
        except sqlite3.OperationalError as exc:
            seen.append(str(exc))
        finally:
            probe.close()
        return real(stored, password)

    monkeypatch.setattr(totp, "verify_password", verify)
    answer, csrf = web_login(world, "finance@fa.example")
    done = world.client.post("/login/code", data={"code": recovery[3], "csrf": csrf}, follow_redirects=False)
    assert done.status_code == 303 and seen and set(seen) == {"free"}
