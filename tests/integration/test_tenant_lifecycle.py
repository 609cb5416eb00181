"""Tenants' left-overs of issue 16 (docs/tenants.md), on both backends: a firm's own login page
(``/login?firm=``), the one-time password changed before anything else, the operator suspending and resuming
a firm, a firm webhook URL refused without its secret, leads marked lost and reopened, and near-breach alerts
in the audit log."""

from __future__ import annotations

import json
import re
import time

import pytest
from sqlalchemy import func, select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import Lead, NearBreachAlert
from propcrm.services import firms, near_breach
from propcrm.services.apikeys import sign
from propcrm.services.catalog import ensure_firm
from support.routes_firms import seed_operator
from support.staff import PASSWORD
from support.web import browse, csrf_for

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
NEW_PASSWORD = "a brand new passphrase of mine"


@pytest.fixture
def world(world):
    return seed_operator(world)


def flash_of(response) -> str:
    found = re.search(r'<p class="flash" role="status">(.*?)</p>', response.text, re.S)
    return found.group(1) if found else ""


def web_login(world, firm: str, email: str, password: str):
    world.client.cookies.clear()
    world.client.get(f"/login?firm={firm}")
    csrf = world.client.cookies.get("propcrm_login_csrf")
    return world.client.post("/login", data={"firm": firm, "email": email, "password": password, "csrf": csrf},
                             follow_redirects=False)


# --------------------------------------------------------------------------------------------------
# 1. the login page of a firm


def test_the_login_page_of_a_firm_carries_its_branding_and_hides_whether_a_firm_exists(world):
    with world.sessions.begin() as s:
        firms.update_settings(s, firm_id="fb", changes={"product_name": "B Desk", "accent_colour": "#aa3300"},
                              actor="test")
        firms.set_logo(s, firm_id="fb", store=world.client.app.state.documents, data=PNG, actor="test")
        ensure_firm(s, firm_id="plain", name="Plain Secret Name")
    c = world.client
    c.cookies.clear()
    page = c.get("/login?firm=fb")
    assert page.status_code == 200
    assert "<title>Log in · B Desk</title>" in page.text and 'data-testid="product-name">B Desk<' in page.text
    assert 'name="firm" value="fb"' in page.text
    css = re.search(r'href="(/login/brand\.css\?firm=fb[^"]*)"', page.text).group(1).replace("&amp;", "&")
    assert "--accent: #aa3300" in c.get(css).text
    logo = re.search(r'src="(/login/logo\?firm=fb[^"]*)"', page.text).group(1).replace("&amp;", "&")
    answer = c.get(logo)
    assert answer.status_code == 200 and answer.content == PNG and answer.headers["content-type"] == "image/png"
    # a wrong password keeps the firm and its branding on the form
    csrf = c.cookies.get("propcrm_login_csrf")
    wrong = c.post("/login", data={"firm": "fb", "email": "admin@fb.example", "password": "wrong one",
                                   "csrf": csrf}, follow_redirects=False)
    assert wrong.status_code == 401 and "B Desk" in wrong.text and 'name="firm" value="fb"' in wrong.text
    # an unknown firm and a firm without settings: the same page (default branding, never the firm's name)
    unknown, plain = c.get("/login?firm=nosuch"), c.get("/login?firm=plain")
    assert unknown.status_code == plain.status_code == 200
    assert unknown.text.replace("nosuch", "X") == plain.text.replace("plain", "X")
    assert "Plain Secret Name" not in plain.text and "propcrm</span>" in unknown.text
    assert "--accent: #1f5eff" in c.get("/login/brand.css?firm=nosuch").text
    assert c.get("/login/logo?firm=nosuch").status_code == c.get("/login/logo?firm=plain").status_code == 404
    assert c.get("/login?firm=" + "x" * 500).status_code == 200  # nonsense is the default page too


def test_the_login_form_remembers_the_firm_of_the_last_login(world):
    with world.sessions.begin() as s:
        firms.update_settings(s, firm_id="fb", changes={"product_name": "B Desk"}, actor="test")
    assert web_login(world, "fb", "risk@fb.example", PASSWORD).status_code == 303
    out = world.client.post("/logout", data={"csrf": csrf_for(world.client.cookies.get("propcrm_session"))},
                            follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    page = world.client.get("/login")
    assert 'name="firm" value="fb"' in page.text and 'data-testid="product-name">B Desk<' in page.text
    # a firm in the address wins over the remembered one
    assert 'name="firm" value="fa"' in world.client.get("/login?firm=fa").text


# --------------------------------------------------------------------------------------------------
# 2. a one-time password is changed before anything else


def test_an_onboarded_admin_must_choose_a_password_before_anything_else(world):
    c, op = world.client, world.headers("operator")
    made = c.post("/api/v1/operator/firms", headers=op, json={"id": "nova", "name": "Nova", "admin_email": "boss@nova.example"})
    assert made.status_code == 201, made.text
    once = made.json()["admin_password"]
    # the API: every call but the password change (and who am I, logout) is 403 naming the reason
    token = c.post("/api/v1/login", json={"firm": "nova", "email": "boss@nova.example", "password": once}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    c.cookies.clear()
    refused = c.get("/api/v1/users", headers=bearer)
    assert refused.status_code == 403 and "password change required" in refused.json()["error"]
    assert c.get("/api/v1/firm/settings", headers=bearer).status_code == 403
    assert c.get("/api/v1/me", headers=bearer).status_code == 200
    # the pages: every page redirects to the password page, which opens
    logged = web_login(world, "nova", "boss@nova.example", once)
    assert logged.status_code == 303
    office = c.get("/office/users", follow_redirects=False)
    assert office.status_code == 303 and office.headers["location"] == "/account/password"
    assert c.get("/operator/firms", follow_redirects=False).headers["location"] == "/account/password"
    assert c.get("/account/password").status_code == 200
    session_token = c.cookies.get("propcrm_session")
    posted = c.post("/office/firm", data={"csrf": csrf_for(session_token), "product_name": "Sneaky"},
                    follow_redirects=False)
    assert posted.status_code == 303 and posted.headers["location"] == "/account/password"
    with world.sessions() as s:
        from propcrm.adapters.db.models_tenants import FirmSettings
        row = s.get(FirmSettings, "nova")
        assert row is None or row.product_name is None
    # changed: everything opens (the API token, whose session was kept, too)
    changed = c.post("/account/password", data={"csrf": csrf_for(session_token), "current_password": once,
                                                "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD},
                     follow_redirects=False)
    assert changed.status_code == 303 and changed.headers["location"] == "/office/accounts"
    assert c.get("/office/users").status_code == 200
    with world.sessions() as s:
        assert not s.scalar(select(m.User).where(m.User.firm_id == "nova")).must_change_password


def test_an_admin_s_reset_makes_the_user_choose_their_own_password(world):
    c = world.client
    reset = c.post(f"/api/v1/users/{world.user_ids['fa:risk']}/password", headers=world.headers("admin"), json={})
    assert reset.status_code == 200, reset.text
    given = reset.json()["password"]
    token = c.post("/api/v1/login", json={"firm": "fa", "email": "risk@fa.example", "password": given}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    c.cookies.clear()
    assert c.get("/api/v1/accounts", headers=bearer).status_code == 403
    assert c.post("/api/v1/me/password", headers=bearer,
                  json={"current_password": given, "new_password": NEW_PASSWORD}).status_code == 200
    assert c.get("/api/v1/accounts", headers=bearer).status_code == 200


# --------------------------------------------------------------------------------------------------
# 3. suspending a firm


def _signed_post(world, firm: str, body: bytes):
    key_id = world.key[firm]
    with world.sessions() as s:
        secret = s.get(m.ApiKey, key_id).secret
    ts = str(int(time.time()))
    return world.client.post("/api/v1/events", content=body, headers={
        "X-Propcrm-Key": key_id, "X-Propcrm-Timestamp": ts, "X-Propcrm-Signature": sign(secret, ts, body),
        "Content-Type": "application/x-ndjson"})


def _stored(world, firm: str) -> int:
    """Events and quarantined lines of the firm."""
    with world.sessions() as s:
        return (s.scalar(select(func.count()).select_from(m.RawEvent).where(m.RawEvent.firm_id == firm))
                + s.scalar(select(func.count()).select_from(m.Quarantine).where(m.Quarantine.firm_id == firm)))


def test_the_operator_suspends_and_resumes_a_firm(world):
    c = world.client
    ops = browse(world, "ops:operator")
    # stored before the suspension: evaluated after it all the same
    world.ingest({"id": "s1", "type": "equity", "account": "A1", "ts": "2026-03-02T10:00:00Z", "equity": "93000",
                  "balance": "100000"})
    no_reason = ops.post_form("/operator/firms/fa/suspend", {"reason": ""}, follow_redirects=True)
    assert "Not suspended: reason" in flash_of(no_reason)
    done = ops.post_form("/operator/firms/fa/suspend", {"reason": "unpaid invoice"}, follow_redirects=True)
    assert "Firm fa suspended." in flash_of(done)
    row = re.search(r'<tr data-firm="fa">.*?</tr>', done.text, re.S).group(0)
    assert "Suspended" in row and "unpaid invoice" in row and "Resume" in row
    assert "Suspended" not in re.search(r'<tr data-firm="fb">.*?</tr>', done.text, re.S).group(0)
    assert [e.after["reason"] for e in world.audit("firm.suspended")] == ["unpaid invoice"]
    # tokens: refused, saying why; another firm's work on
    c.cookies.clear()
    refused = c.get("/api/v1/accounts", headers=world.headers("risk"))
    assert refused.status_code == 403 and "suspended" in refused.json()["error"] and "unpaid invoice" in refused.json()["error"]
    assert c.get("/api/v1/accounts", headers=world.headers("fb:risk")).status_code == 200
    # logging in: refused with the reason after the right password, the generic answer after a wrong one
    login = c.post("/api/v1/login", json={"firm": "fa", "email": "risk@fa.example", "password": PASSWORD})
    assert login.status_code == 403 and "suspended" in login.json()["error"]
    wrong = c.post("/api/v1/login", json={"firm": "fa", "email": "risk@fa.example", "password": "not it at all"})
    assert wrong.status_code == 401 and "suspended" not in wrong.text
    page = web_login(world, "fa", "risk@fa.example", PASSWORD)
    assert page.status_code == 403 and "suspended" in page.text
    # ingestion: 403 naming the suspension, nothing stored
    before = _stored(world, "fa")
    body = json.dumps({"id": "s2", "type": "equity", "account": "A1", "ts": "2026-03-02T11:00:00Z",
                       "equity": "99000", "balance": "100000"}).encode() + b"\n"
    answer = _signed_post(world, "fa", body)
    assert answer.status_code == 403 and "suspended" in answer.json()["error"]
    assert _stored(world, "fa") == before
    # evaluation of what was stored goes on
    world.evaluate()
    with world.sessions() as s:
        assert s.scalar(select(func.count()).select_from(m.Decision).where(
            m.Decision.account_id == world.accounts["A1"])) >= 1
    # resumed: everything works again
    assert "Not resumed" in flash_of(browse(world, "ops:operator").post_form("/operator/firms/fb/resume",
                                                                        {"reason": "why not"}, follow_redirects=True))
    resumed = browse(world, "ops:operator").post_form("/operator/firms/fa/resume", {"reason": "paid"}, follow_redirects=True)
    assert "Firm fa resumed." in flash_of(resumed)
    assert world.audit("firm.resumed")[0].after == {"reason": "paid"}
    c.cookies.clear()
    assert c.get("/api/v1/accounts", headers=world.headers("risk")).status_code == 200
    read = _signed_post(world, "fa", body)  # read and answered line by line again (A1 is not an mt5 account)
    assert read.status_code == 200 and len(read.json()["lines"]) == 1, read.text
    assert _stored(world, "fa") == before + 1


def test_only_the_operator_suspends(world):
    admin = browse(world, "admin")
    assert admin.post_form("/operator/firms/fa/suspend", {"reason": "mine"}).status_code == 403
    with world.sessions() as s:
        assert s.get(m.Firm, "fa").suspended_at is None


def test_the_operator_suspends_and_resumes_through_the_api_too(world):
    c, ops = world.client, world.headers("ops:operator")
    assert c.post("/api/v1/operator/firms/fa/suspend", headers=ops, json={"reason": ""}).status_code == 422
    assert c.post("/api/v1/operator/firms/nowhere/suspend", headers=ops, json={"reason": "x"}).status_code == 404
    done = c.post("/api/v1/operator/firms/fa/suspend", headers=ops, json={"reason": "unpaid invoice"})
    assert done.status_code == 200 and done.json()["suspended_reason"] == "unpaid invoice", done.text
    assert done.json()["suspended_at"] is not None
    again = c.post("/api/v1/operator/firms/fa/suspend", headers=ops, json={"reason": "twice"})
    assert again.status_code == 409 and "suspended already" in again.json()["error"]
    listed = {f["id"]: f for f in c.get("/api/v1/operator/firms", headers=ops).json()}
    assert listed["fa"]["suspended_reason"] == "unpaid invoice" and listed["fb"]["suspended_at"] is None
    c.cookies.clear()
    assert c.get("/api/v1/accounts", headers=world.headers("risk")).status_code == 403
    resumed = c.post("/api/v1/operator/firms/fa/resume", headers=ops, json={"reason": "paid"})
    assert resumed.status_code == 200 and resumed.json()["suspended_at"] is None
    assert c.post("/api/v1/operator/firms/fa/resume", headers=ops, json={"reason": "paid"}).status_code == 409
    c.cookies.clear()
    assert c.get("/api/v1/accounts", headers=world.headers("risk")).status_code == 200
    assert [(e.action, (e.after or {}).get("reason")) for e in world.audit("firm.suspended") + world.audit("firm.resumed")] \
        == [("firm.suspended", "unpaid invoice"), ("firm.resumed", "paid")]


# --------------------------------------------------------------------------------------------------
# 4. a firm webhook needs its own secret


def test_a_firm_webhook_url_without_a_secret_is_refused_by_name(world):
    c, fa = world.client, world.headers("admin")
    refused = c.put("/api/v1/firm/settings", headers=fa, json={"webhook_url": "https://hooks.fa.example/in"})
    assert refused.status_code == 422 and "webhook_secret" in refused.json()["error"]
    assert c.get("/api/v1/firm/settings", headers=fa).json()["webhook_url"] is None
    onboard = c.post("/api/v1/operator/firms", headers=world.headers("operator"), json={
        "id": "hooky", "name": "Hooky", "admin_email": "a@hooky.example",
        "settings": {"webhook_url": "https://hooks.hooky.example/"}})
    assert onboard.status_code == 422 and "webhook_secret" in onboard.json()["error"]
    both = c.put("/api/v1/firm/settings", headers=fa, json={"webhook_url": "https://hooks.fa.example/in",
                                                             "webhook_secret": "s3cret-of-fa"})
    assert both.status_code == 200
    # clearing the secret alone would leave the URL without one: refused; clearing both is fine
    alone = c.put("/api/v1/firm/settings", headers=fa, json={"webhook_secret": ""})
    assert alone.status_code == 422 and "webhook_secret" in alone.json()["error"]
    assert c.put("/api/v1/firm/settings", headers=fa, json={"webhook_url": "", "webhook_secret": ""}).status_code == 200
    page = browse(world, "admin").post_form("/office/firm", {"webhook_url": "https://hooks.fa.example/page"},
                                            follow_redirects=True)
    assert "Not saved: webhook_secret" in flash_of(page)


# --------------------------------------------------------------------------------------------------
# 5. leads lost and reopened; near-breach alerts audited


def test_a_lead_is_marked_lost_with_a_reason_and_reopened(world):
    support = browse(world, "support")
    assert support.post_form("/office/leads", {"name": "Lia Lead", "email": "lia@lead.example", "source": "web",
                                               "consent": "yes"}).status_code == 303
    with world.sessions() as s:
        lead_id = s.scalar(select(Lead.id).where(Lead.email == "lia@lead.example"))
    no_reason = support.post_form(f"/office/leads/{lead_id}/lost", {"reason": ""}, follow_redirects=True)
    assert "Not marked lost: reason" in flash_of(no_reason)
    lost = support.post_form(f"/office/leads/{lead_id}/lost", {"reason": "chose another firm"}, follow_redirects=True)
    assert "marked lost" in flash_of(lost) and "chose another firm" in lost.text
    assert "Not marked lost" in flash_of(support.post_form(f"/office/leads/{lead_id}/lost", {"reason": "again!"},
                                                           follow_redirects=True))
    assert world.audit("lead.lost")[0].after == {"status": "lost", "reason": "chose another firm"}
    reopened = support.post_form(f"/office/leads/{lead_id}/reopen", {}, follow_redirects=True)
    assert "reopened" in flash_of(reopened)
    with world.sessions() as s:
        lead = s.get(Lead, lead_id)
        assert lead.status == "new" and lead.lost_reason is None
    assert world.audit("lead.reopen")[0].before == {"status": "lost", "reason": "chose another firm"}
    assert "Not reopened" in flash_of(support.post_form(f"/office/leads/{lead_id}/reopen", {}, follow_redirects=True))
    # another firm's lead is not there
    assert browse(world, "fb:admin").post_form(f"/office/leads/{lead_id}/lost", {"reason": "mine now"}).status_code == 404


def test_a_lead_is_marked_lost_and_reopened_through_the_api_too(world):
    c, support = world.client, world.headers("support")
    lead = c.post("/api/v1/leads", headers=support, json={"name": "Lou Lead", "email": "lou@lead.example",
                                                            "source": "web", "consent": True}).json()
    assert c.post(f"/api/v1/leads/{lead['id']}/lost", headers=support, json={"reason": ""}).status_code == 422
    lost = c.post(f"/api/v1/leads/{lead['id']}/lost", headers=support, json={"reason": "no budget this year"})
    assert lost.status_code == 200 and (lost.json()["status"], lost.json()["lost_reason"]) == ("lost", "no budget this year")
    assert c.post(f"/api/v1/leads/{lead['id']}/convert", headers=support).status_code == 409  # a lost lead is not
    assert c.post(f"/api/v1/leads/{lead['id']}/lost", headers=support, json={"reason": "again"}).status_code == 409
    assert c.post(f"/api/v1/leads/{lead['id']}/reopen", headers=world.headers("fb:admin")).status_code == 404
    reopened = c.post(f"/api/v1/leads/{lead['id']}/reopen", headers=support)
    assert reopened.status_code == 200 and reopened.json()["status"] == "new"
    assert c.post(f"/api/v1/leads/{lead['id']}/convert", headers=support).status_code == 201
    assert [e.action for e in world.audit("lead.lost") + world.audit("lead.reopen")] == ["lead.lost", "lead.reopen"]


def test_each_near_breach_alert_is_audited_once(world):
    with world.sessions.begin() as s:
        near_breach.update_settings(s, firm_id="fa", within_pct=None, within_amount="1500", actor="test")
    equity = [{"id": f"n{i}", "type": "equity", "account": "A1", "ts": f"2026-03-02T1{i}:00:00Z",
               "equity": value, "balance": "100000"} for i, value in enumerate(("96200", "96100", "96300"))]
    world.ingest(*equity[:2])
    world.evaluate()
    world.ingest(equity[2])
    world.evaluate()
    with world.sessions() as s:
        alerts = s.scalars(select(NearBreachAlert).where(NearBreachAlert.firm_id == "fa")).all()
    entries = world.audit("near_breach.alert")
    assert alerts and len(entries) == len(alerts)
    assert sorted(e.after["alert"] for e in entries) == sorted(a.id for a in alerts)
    assert all(e.actor == "system:near_breach" and e.firm_id == "fa" for e in entries)
