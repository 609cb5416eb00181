"""The back office CRM and support inbox (issue 16) on both backends: who may open and act (role matrix,
another firm's traders are 404), the trader list's search and paging, a profile with accounts and orders,
KYC documents (type and size limits, stored outside the web root, served only to the KYC roles) and the
review queue (approve/reject with a reason, audited, the trader told), notes, the support inbox (a trader's
message opens a conversation; assign, reply — read in the portal —, close), the confirmation before
suspending a trader, and the notice to a trader whose accounts a confirmed case stopped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import Communication, KycDocument, SupportConversation
from propcrm.adapters.documents import DOCUMENTS_DIR_ENV
from propcrm.services import kyc_documents
from support.lifecycle import open_case
from support.staff import build_world, seed
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def world(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv(DOCUMENTS_DIR_ENV, str(tmp_path / "documents"))
    app, world = build_world(db_url)
    with world.client:
        seed(world)
        world.documents_dir = tmp_path / "documents"
        yield world


def flash(response) -> str:
    found = re.search(r'<p class="flash" role="status">(.*?)</p>', response.text, re.S)
    return found.group(1) if found else ""


def upload(page, trader_id: int, data: bytes, filename: str = "passport.pdf", kind: str = "id_document", **kwargs):
    from support.web import csrf_for

    return page.client.post(f"/office/traders/{trader_id}/documents",
                            data={"csrf": kwargs.pop("csrf", csrf_for(page.token)), "kind": kind},
                            files={"file": (filename, data, "application/octet-stream")}, follow_redirects=False,
                            **kwargs)


def test_who_may_open_the_crm_pages(world):
    t1 = world.traders["t1"]
    pages = {"/office/traders": ("admin", "risk", "finance", "support"),
             f"/office/traders/{t1}": ("admin", "risk", "finance", "support"),
             "/office/kyc": ("admin", "risk", "support"),
             "/office/support": ("admin", "support")}
    for url, allowed in pages.items():
        for role in ("admin", "risk", "finance", "support", "trader"):
            status = browse(world, role).get(url).status_code
            assert status == (200 if role in allowed else 403), (url, role, status)
    # the navigation shows each role only what it may open
    nav = browse(world, "support").get("/office/traders").text
    assert 'href="/office/support"' in nav and 'href="/office/kyc"' in nav
    nav = browse(world, "finance").get("/office/traders").text
    assert 'href="/office/support"' not in nav and 'href="/office/kyc"' not in nav
    # another firm's trader does not exist for fb, and is not listed
    other = browse(world, "fb:admin")
    assert other.get(f"/office/traders/{t1}").status_code == 404
    assert f"/office/traders/{t1}\"" not in other.get("/office/traders").text
    assert other.post_form(f"/office/traders/{t1}/notes", {"text": "hello"}).status_code == 404
    # logged out: to the login page; a form without its token: refused
    world.client.cookies.clear()
    assert world.client.get("/office/traders", follow_redirects=False).status_code == 303
    assert browse(world, "admin").post_form(f"/office/traders/{t1}/notes", {"text": "x"}, csrf=False).status_code == 403


def test_who_may_act_on_a_trader(world):
    t1 = world.traders["t1"]
    refused = {"finance": ["messages", "suspend", "kyc-review"], "support": ["suspend"],
               "risk": ["messages"], "trader": ["notes", "messages", "suspend", "kyc-review"]}
    data = {"messages": {"subject": "s", "text": "t"}, "suspend": {"reason": "because", "confirm": "yes"},
            "kyc-review": {"decision": "approved", "reason": "looks fine"}, "notes": {"text": "n"}}
    for role, actions in refused.items():
        page = browse(world, role)
        for action in actions:
            assert page.post_form(f"/office/traders/{t1}/{action}", data[action]).status_code == 403, (role, action)
        if role in ("finance", "trader"):
            assert upload(page, t1, PDF).status_code == 403, role
    with world.sessions() as s:
        assert s.get(m.Trader, t1).kyc_status == "pending"
        assert not s.scalars(select(Communication).where(Communication.trader_id == t1)).all()
        assert not s.scalars(select(KycDocument)).all()


def test_the_trader_list_searches_and_pages(world):
    with world.sessions.begin() as s:
        for n in range(30):
            s.add(m.Trader(firm_id="fa", name=f"Paged Person {n:02d}", email=f"paged{n}@x.example"))
        s.add(m.Trader(firm_id="fa", name="100% under_score", email="odd@x.example"))
    admin = browse(world, "admin")
    first = admin.get("/office/traders?limit=25").text
    assert "Traders 1–25 of 33" in first and 'rel="next"' in first
    second = admin.get("/office/traders?limit=25&offset=25").text
    assert "Traders 26–33 of 33" in second and 'rel="prev"' in second and 'rel="next"' not in second
    found = admin.get("/office/traders?q=PAGED+person+07").text
    assert "Paged Person 07" in found and "Paged Person 08" not in found and "of 1<" in found
    # LIKE wildcards are matched as text
    assert "of 1<" in admin.get("/office/traders?q=%25").text
    assert "of 1<" in admin.get("/office/traders?q=r_s").text or "No traders match" in admin.get("/office/traders?q=r_s").text
    assert "100% under_score" in admin.get("/office/traders?q=under_score").text
    # by id, by KYC status; a bad filter is ignored rather than an error
    t2 = world.traders["t2"]
    assert f'href="/office/traders/{t2}"' in admin.get(f"/office/traders?q={t2}").text
    assert admin.get("/office/traders?kyc=approved").text.count('data-trader=') == 0
    assert admin.get("/office/traders?kyc=bogus&stage=nope&limit=x&offset=-4").status_code == 200


def test_a_profile_shows_accounts_orders_and_the_timeline_with_names(world):
    t1 = world.traders["t1"]
    support = browse(world, "support")
    assert support.post_form(f"/office/traders/{t1}/notes", {"text": "called, <b>wants</b> a reset"}).status_code == 303
    html = support.get(f"/office/traders/{t1}").text
    a1, a3 = world.accounts["A1"], world.accounts["A3"]
    assert f'href="/office/accounts/{a1}"' in html and f'href="/office/accounts/{a3}"' in html
    assert "two-step-100k v1" in html and "No orders." in html
    assert "called, &lt;b&gt;wants&lt;/b&gt; a reset" in html  # escaped
    assert "support@fa.example" in html and "user:" not in html  # the author by e-mail, not "user:4:…"
    assert world.audit("trader.note")[-1].entity_id == str(t1)
    # the account page links its trader to the profile
    assert f'href="/office/traders/{t1}"' in browse(world, "risk").get(f"/office/accounts/{a1}").text
    # a note too long is refused with the field's name, nothing saved
    support = browse(world, "support")
    response = support.post_form(f"/office/traders/{t1}/notes", {"text": "x" * 10_001})
    assert "Not saved: text" in flash(support.get(f"/office/traders/{t1}"))
    assert response.status_code == 303


def test_kyc_documents_are_checked_stored_outside_the_web_root_and_served_to_kyc_roles_only(world, monkeypatch):
    t1 = world.traders["t1"]
    support = browse(world, "support")
    # not a document we take: named .pdf but an HTML page; an empty file; too large
    assert upload(support, t1, b"<html><script>alert(1)</script>", "evil.pdf").status_code == 303
    assert "only PDF, PNG or JPEG" in flash(support.get(f"/office/traders/{t1}"))
    upload(support, t1, b"", "empty.pdf")
    monkeypatch.setattr(kyc_documents, "MAX_BYTES", 1024)
    upload(support, t1, PDF + b"0" * 2048, "big.pdf")
    assert "at most" in flash(support.get(f"/office/traders/{t1}"))
    monkeypatch.undo()
    with world.sessions() as s:
        assert s.scalars(select(KycDocument)).all() == []
    # a PDF and a PNG: kept under random names in the document directory, not under static/
    assert upload(support, t1, PDF, "../../etc/pass<port>.pdf").status_code == 303
    assert upload(support, t1, PNG, "selfie.png", kind="selfie").status_code == 303
    with world.sessions() as s:
        docs = s.scalars(select(KycDocument).order_by(KycDocument.id)).all()
    assert [(d.content_type, d.status, d.filename) for d in docs] == [
        ("application/pdf", "pending", "passport.pdf"), ("image/png", "pending", "selfie.png")]
    stored = sorted(p for p in Path(world.documents_dir).rglob("*") if p.is_file())
    assert len(stored) == 2 and stored[0].read_bytes() in (PDF, PNG)
    assert not any(Path(world.documents_dir).rglob("*.pdf"))
    pdf = docs[0]
    url = f"/office/traders/{t1}/documents/{pdf.id}"
    for role in ("admin", "risk", "support"):
        got = browse(world, role).get(url)
        assert got.status_code == 200 and got.content == PDF, role
        assert got.headers["content-type"] == "application/pdf"
        assert got.headers["content-disposition"].startswith("attachment;")
        assert "sandbox" in got.headers["content-security-policy"] and got.headers["x-content-type-options"] == "nosniff"
    for role in ("finance", "trader"):
        assert browse(world, role).get(url).status_code == 403, role
    assert browse(world, "fb:admin").get(url).status_code == 404
    assert browse(world, "admin").get(f"/office/traders/{world.traders['t2']}/documents/{pdf.id}").status_code == 404
    assert world.client.get(f"/static/{pdf.storage_key}").status_code == 404
    # the finance role sees the profile but not the documents
    assert "passport.pdf" not in browse(world, "finance").get(f"/office/traders/{t1}").text


def test_compliance_approves_or_rejects_from_the_documents_with_a_reason(world):
    t1, t2 = world.traders["t1"], world.traders["t2"]
    risk = browse(world, "risk")
    assert "Nothing to review" in risk.get("/office/kyc").text
    # no documents: nothing to decide from
    risk.post_form(f"/office/traders/{t1}/kyc-review", {"decision": "approved", "reason": "fine"})
    assert "no documents awaiting review" in flash(risk.get(f"/office/traders/{t1}"))
    upload(risk, t1, PDF)
    upload(risk, t2, PNG, "bill.png", kind="proof_of_address")
    queue = risk.get("/office/kyc").text
    assert f'href="/office/traders/{t1}#kyc"' in queue and f'href="/office/traders/{t2}#kyc"' in queue
    # a reason is required; a made-up decision is refused
    risk.post_form(f"/office/traders/{t1}/kyc-review", {"decision": "approved", "reason": ""})
    assert "reason" in flash(risk.get(f"/office/traders/{t1}"))
    risk.post_form(f"/office/traders/{t1}/kyc-review", {"decision": "expired", "reason": "whatever"})
    with world.sessions() as s:
        assert s.get(m.Trader, t1).kyc_status == "pending"
    done = risk.post_form(f"/office/traders/{t1}/kyc-review", {"decision": "approved", "reason": "passport matches"})
    assert done.status_code == 303 and done.headers["location"] == "/office/kyc"
    risk.post_form(f"/office/traders/{t2}/kyc-review", {"decision": "rejected", "reason": "bill is 2 years old"})
    with world.sessions() as s:
        assert s.get(m.Trader, t1).kyc_status == "approved" and s.get(m.Trader, t2).kyc_status == "rejected"
        assert {d.status for d in s.scalars(select(KycDocument).where(KycDocument.trader_id == t1))} == {"approved"}
        told = s.scalars(select(Communication).where(Communication.trader_id == t2,
                                                     Communication.kind == "notification")).all()
    assert any("bill is 2 years old" in c.body for c in told)
    reviews = world.audit("trader.kyc_review")
    assert [(e.entity_id, e.after["decision"]) for e in reviews] == [(str(t1), "approved"), (str(t2), "rejected")]
    assert reviews[0].actor.endswith("risk@fa.example")
    assert "Nothing to review" in risk.get("/office/kyc").text


def test_support_answers_assigns_and_closes_a_traders_conversation(world):
    t1 = world.traders["t1"]
    trader = browse(world, "trader")
    assert trader.post_form("/portal/messages", {"subject": "Payout question", "text": "When is my payout?"}).status_code == 303
    support = browse(world, "support")
    inbox = support.get("/office/support").text
    with world.sessions() as s:
        conversation = s.scalars(select(SupportConversation)).one()
        conversation_id = conversation.id
    assert f'href="/office/support/{conversation_id}"' in inbox and "to answer" in inbox and "Payout question" in inbox
    assert "No conversations here" in support.get("/office/support?view=mine").text
    # assign to yourself; to a finance user: refused
    support.post_form(f"/office/support/{conversation_id}/assign", {"user_id": str(world.user_ids["fa:finance"])})
    assert "Not done: user_id" in flash(support.get(f"/office/support/{conversation_id}"))
    support.post_form(f"/office/support/{conversation_id}/assign", {"user_id": str(world.user_ids["fa:support"])})
    assert "Payout question" in support.get("/office/support?view=mine").text
    assert "No conversations here" in support.get("/office/support?view=unassigned").text
    # an empty reply is refused; a reply with "close" goes out and closes the conversation
    support.post_form(f"/office/support/{conversation_id}/reply", {"subject": "Re: Payout question", "text": ""})
    assert "Not done: text" in flash(support.get(f"/office/support/{conversation_id}"))
    support.post_form(f"/office/support/{conversation_id}/reply",
                      {"subject": "Re: Payout question", "text": "Tomorrow, after approval.", "close": "yes"})
    with world.sessions() as s:
        row = s.get(SupportConversation, conversation_id)
        assert (row.status, row.waiting_on) == ("closed", "trader")
        outbox = s.scalars(select(m.OutboxMessage).where(m.OutboxMessage.kind == "notify")).all()
    assert any(o.payload.get("message") == "Tomorrow, after approval." for o in outbox)
    assert "Tomorrow, after approval." in browse(world, "trader").get("/portal/messages").text
    assert [e.action for e in world.audit("support.assign")] == ["support.assign"]
    assert world.audit("support.close")[-1].entity_id == str(t1)
    support = browse(world, "support")
    assert "No conversations here" in support.get("/office/support").text
    # the trader writes again: the conversation reopens, waiting on the firm
    browse(world, "trader").post_form("/portal/messages", {"subject": "Thanks", "text": "And the amount?"})
    with world.sessions() as s:
        assert (s.get(SupportConversation, conversation_id).status,
                s.get(SupportConversation, conversation_id).waiting_on) == ("open", "firm")
    # closing twice is refused; risk and finance may not act; another firm sees nothing
    support = browse(world, "support")
    support.post_form(f"/office/support/{conversation_id}/close", {})
    support.post_form(f"/office/support/{conversation_id}/close", {})
    assert "already closed" in flash(support.get(f"/office/support/{conversation_id}"))
    for role in ("risk", "finance", "trader"):
        page = browse(world, role)
        assert page.get(f"/office/support/{conversation_id}").status_code == 403
        assert page.post_form(f"/office/support/{conversation_id}/reopen", {}).status_code == 403
    assert browse(world, "fb:admin").get(f"/office/support/{conversation_id}").status_code == 404


def test_suspending_from_the_profile_needs_the_confirmation(world):
    t1, a1 = world.traders["t1"], world.accounts["A1"]
    risk = browse(world, "risk")
    assert "I want to suspend t1" in risk.get(f"/office/traders/{t1}").text
    risk.post_form(f"/office/traders/{t1}/suspend", {"reason": "chargeback"})
    assert "tick the box" in flash(risk.get(f"/office/traders/{t1}")) and world.status_of(a1) == "active"
    risk.post_form(f"/office/traders/{t1}/suspend", {"reason": "chargeback", "confirm": "yes"})
    assert world.status_of(a1) == "suspended"
    assert "Suspend trader" not in risk.get(f"/office/traders/{t1}").text
    with world.sessions() as s:
        notices = s.scalars(select(Communication).where(Communication.trader_id == t1)).all()
    assert any("suspended" in n.subject for n in notices)


def test_a_trader_stopped_through_a_confirmed_case_is_told(world):
    a1, a2 = world.accounts["A1"], world.accounts["A2"]
    case_id = open_case(world, firm="fa", account_ids=[a1, a2])
    risk = browse(world, "risk")
    risk.post_form(f"/office/cases/{case_id}/status", {"status": "under_review", "reason": "looking"})
    risk.post_form(f"/office/cases/{case_id}/status", {"status": "confirmed", "reason": "copy ring with t2 (score 91)",
                                                       "enforce": "yes"})
    assert world.status_of(a1) == "suspended" and world.status_of(a2) == "suspended"
    with world.sessions() as s:
        for trader, account in (("t1", "A1"), ("t2", "A2")):
            rows = s.scalars(select(Communication).where(Communication.trader_id == world.traders[trader],
                                                         Communication.kind == "notification")).all()
            assert len(rows) == 1 and account in rows[0].subject, trader
            assert "score 91" not in rows[0].body  # the finding stays with the firm
    assert "stopped" in browse(world, "trader").get("/portal/messages").text


def test_an_upload_that_fails_after_storing_leaves_no_file(world, monkeypatch):
    from propcrm.services import kyc_documents as service

    def broken(*args, **kwargs):
        raise RuntimeError("audit is down")

    monkeypatch.setattr(service.audit, "append", broken)
    response = upload(browse(world, "support"), world.traders["t1"], PDF)
    assert response.status_code == 500
    assert not [p for p in Path(world.documents_dir).rglob("*") if p.is_file()]
    with world.sessions() as s:
        assert s.scalars(select(KycDocument)).all() == []
