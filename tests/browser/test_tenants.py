"""Firms as tenants in a real browser (issue 16): an operator onboards a firm with its own branding and
settings; its admin logs in with the password shown once, sees the firm's branding, adds a staff member,
and that staff member enrols two-factor login and logs in with a code."""

from __future__ import annotations

import datetime as dt
import struct
import time
import zlib

import pyotp

from propcrm.services import users
from propcrm.services.catalog import ensure_firm


def _png(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (170, 51, 0)) -> bytes:
    """A real (tiny, one-colour) PNG: the browser decodes and shows it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _login(browser, site, contexts, *, firm: str, email: str, password: str, path: str = "/login"):
    context = browser.new_context(viewport={"width": 1366, "height": 800}, base_url=site.url)
    contexts.append(context)
    page = context.new_page()
    page.set_default_timeout(20_000)  # six engineers share two cores: argon2 logins queue
    page.console_errors = []
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    page.goto(path)
    page.get_by_label("Firm").fill(firm)
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    return page


def test_an_operator_onboards_a_branded_firm_whose_admin_adds_staff_who_enrol_two_factor(site, browser, shot, tmp_path):
    n = time.time_ns()
    firm_id, operator_email, password = f"nova-{n % 10**8}", f"op{n}@ops.example", "the operator's long passphrase"
    with site.sessions.begin() as s:
        ensure_firm(s, firm_id="ops", name="White Label Ops")
        users.create_user(s, firm_id="ops", email=operator_email, password=password, role="operator")
    contexts: list = []
    try:
        # the operator lands on the firms and onboards one with its own branding and settings
        operator = _login(browser, site, contexts, firm="ops", email=operator_email, password=password)
        operator.wait_for_url("**/operator/firms")
        assert [a.inner_text() for a in operator.locator("header nav a").all()] == ["Firms"]
        operator.get_by_label("Firm id (typed at login)").fill(firm_id)
        operator.get_by_label("Display name").fill("Nova Funding")
        operator.get_by_label("First admin's e-mail").fill(f"boss@{firm_id}.example")
        operator.get_by_label("Product name (header, titles)").fill("Nova Desk")
        operator.get_by_label("Accent colour").fill("#aa3300")
        operator.get_by_label("Risk desk e-mail").fill(f"risk@{firm_id}.example")
        operator.get_by_label("Webhook URL").fill("https://hooks.nova.example/propcrm")
        operator.get_by_label("Webhook secret").fill("nova-webhook-secret")
        operator.get_by_role("button", name="Onboard firm").click()
        operator.wait_for_load_state()
        admin_password = operator.get_by_test_id("admin-password").inner_text()
        assert len(admin_password) >= 12
        shot(operator, "operator-onboarded")
        # its settings page: what it set is its own, the rest the defaults; the secret is only "set"; a logo
        operator.locator(f"tr[data-firm='{firm_id}'] a").click()
        operator.wait_for_url(f"**/operator/firms/{firm_id}")
        assert operator.get_by_test_id("effective-risk_email").inner_text() == "the firm's own"
        assert operator.get_by_test_id("webhook-secret-state").inner_text() == "a secret is set"
        assert "nova-webhook-secret" not in operator.content()
        logo = tmp_path / "nova.png"
        logo.write_bytes(_png())
        operator.get_by_label("Logo (PNG or JPEG").set_input_files(str(logo))
        operator.get_by_role("button", name="Upload logo").click()
        operator.wait_for_load_state()
        assert "Logo saved" in operator.locator(".flash").inner_text()
        operator.reload()  # the password was on the onboarding answer only
        operator.goto("/operator/firms")
        assert admin_password not in operator.content()

        # the firm's admin logs in with it and sees the firm's branding
        # on the firm's own login page (its product name), and chooses their own password before anything else
        admin = _login(browser, site, contexts, firm=firm_id, email=f"boss@{firm_id}.example", password=admin_password,
                       path=f"/login?firm={firm_id}")
        admin.wait_for_url("**/account/password")
        assert admin.get_by_test_id("product-name").inner_text() == "Nova Desk"
        admin.get_by_label("Current password").fill(admin_password)
        admin.get_by_label("New password", exact=True).fill("a brand new passphrase of mine")
        admin.get_by_label("New password again").fill("a brand new passphrase of mine")
        admin.get_by_role("button", name="Change password").click()
        admin.wait_for_url("**/office/accounts")
        assert admin.get_by_test_id("product-name").inner_text() == "Nova Desk"
        assert admin.title().endswith("· Nova Desk")
        assert admin.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--accent').trim()") == "#aa3300"
        assert admin.evaluate("document.querySelector('header .brand-logo').naturalWidth") == 8
        assert "Nova Funding" in admin.locator("header .who").inner_text()
        admin.get_by_role("link", name="Firm settings").click()
        admin.wait_for_url("**/office/firm")
        assert admin.get_by_label("Risk desk e-mail").input_value() == f"risk@{firm_id}.example"
        admin.get_by_label("E-mail sender (From)").fill(f"desk@{firm_id}.example")
        admin.get_by_role("button", name="Save settings").click()
        admin.wait_for_load_state()
        assert "Settings saved" in admin.locator(".flash").inner_text()
        shot(admin, "firm-settings")

        # adds a staff member
        staff_email, staff_password = f"riskdesk@{firm_id}.example", "sam's long staff passphrase"
        admin.get_by_role("link", name="Users").click()
        admin.wait_for_url("**/office/users")
        admin.get_by_label("New staff member's e-mail").fill(staff_email)
        admin.get_by_label("Role", exact=True).select_option("risk")
        admin.get_by_label("Password (empty: generate one)").fill(staff_password)
        admin.get_by_role("button", name="Add staff member").click()
        admin.wait_for_load_state()
        assert f"{staff_email} is added as risk" in admin.locator(".flash").inner_text()

        # who enrols two-factor login (the authenticator shows the firm's product) and logs in with a code
        sam = _login(browser, site, contexts, firm=firm_id, email=staff_email, password=staff_password)
        sam.wait_for_url("**/office/accounts")
        sam.get_by_role("link", name="Two-factor").click()
        sam.wait_for_url("**/account/two-factor")
        sam.get_by_role("button", name="Set up two-factor login").click()
        sam.wait_for_load_state()
        secret = sam.get_by_test_id("totp-secret").inner_text()
        totp = pyotp.TOTP(secret)
        sam.get_by_label("Code from the app").fill(totp.now())
        sam.get_by_role("button", name="Switch two-factor on").click(timeout=30_000)  # ten argon2 hashes, on a busy machine
        sam.wait_for_load_state()
        assert sam.get_by_test_id("recovery-codes").locator("li").count() == 10
        sam.get_by_role("button", name="Log out").click()
        sam.wait_for_url("**/login")
        sam.get_by_label("Firm").fill(firm_id)
        sam.get_by_label("E-mail").fill(staff_email)
        sam.get_by_label("Password").fill(staff_password)
        sam.get_by_role("button", name="Log in").click()
        sam.wait_for_load_state()
        sam.get_by_label("Authentication code").fill(totp.at(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30)))
        sam.get_by_role("button", name="Verify").click()
        sam.wait_for_url("**/office/accounts")
        assert sam.get_by_test_id("product-name").inner_text() == "Nova Desk"

        # the secret is kept sealed, and the operator still sees nothing of the firm's business
        with site.sessions() as s:
            from sqlalchemy import select

            from propcrm.adapters.db import models as m

            stored = s.scalar(select(m.User.totp_secret).where(m.User.firm_id == firm_id, m.User.email == staff_email))
            assert stored and secret not in stored
        assert operator.goto("/office/accounts").status == 403
        assert not [e for p in (operator, admin, sam) for e in p.console_errors if "Content Security Policy" in e]
    finally:
        for context in contexts:
            context.close()
