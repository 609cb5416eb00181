"""Paying out, after approval: the method and destination the trader chose, a readable approval notice,
finance's audited "sent" step with the payment reference, the PDF statement, and certificates (phase
passed, funded, payout) as PDF with a public verification page."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from propcrm.adapters.db.models_lifecycle import Certificate, Communication, Payout
from support.lifecycle import add_user
from support.web import browse

from integration.test_web_payouts import flash, requested, world  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("cheap_argon2")

PAY = {"method": "wise", "destination": "t1@traders.example"}


def _approved(world, external_id: str = "D1") -> int:
    account, payout = requested(world, external_id, "10500")
    with world.sessions.begin() as s:
        row = s.get(Payout, payout)
        row.method, row.destination = PAY["method"], PAY["destination"]
    assert world.client.post(f"/api/v1/payouts/{payout}/prepare", json={}, headers=world.headers("finance")).status_code == 200
    approver = add_user(world, firm="fa", role="finance", name="f2")
    done = browse(world, approver).post_form(f"/office/payouts/{payout}/approve", {}, follow_redirects=True)
    assert "approved" in flash(done), flash(done)
    return payout


def test_the_approval_notice_reads_as_words_and_finance_marks_the_payout_sent(world):
    payout = _approved(world)
    with world.sessions() as s:
        notice = s.scalars(select(Communication).where(Communication.subject.like(f"Payout {payout} approved%"))).one()
    text = notice.body
    assert "exact" not in text and "profit split: 80" not in text
    assert f"Your payout {payout} of 400.00 USD from account D1 is approved." in text
    assert "your 80% share of the payable profit of 500.00 USD" in text
    assert "Finance sends it by Wise to t1@traders.example" in text
    # finance: a reference is required; then it is sent once, audited, and the trader told
    finance = browse(world, "finance")
    page = finance.get(f"/office/payouts/{payout}").text
    assert "Not marked sent yet." in page and "Mark payout sent" in page
    short = finance.post_form(f"/office/payouts/{payout}/sent", {"reference": "x"}, follow_redirects=True)
    assert "reference: 3 to 200" in flash(short)
    sent = finance.post_form(f"/office/payouts/{payout}/sent", {"reference": "WISE-TX-88121"}, follow_redirects=True)
    assert "marked sent (reference WISE-TX-88121)" in flash(sent)
    again = finance.post_form(f"/office/payouts/{payout}/sent", {"reference": "WISE-TX-2"}, follow_redirects=True)
    assert "was sent already" in flash(again)
    assert [e.after["reference"] for e in world.audit("payout.sent")] == ["WISE-TX-88121"]
    assert browse(world, "support").post_form(f"/office/payouts/{payout}/sent", {"reference": "abc"}).status_code == 403
    mine = browse(world, "trader").get("/portal/payouts").text
    assert "WISE-TX-88121" in mine and "Wise to t1@traders.example" in mine
    with world.sessions() as s:
        assert s.scalars(select(Communication).where(Communication.subject == f"Payout {payout} sent")).one()


def test_the_statement_is_a_pdf_of_an_approved_payout_for_its_trader_and_staff(world):
    account, pending = requested(world, "D2", "10500")
    trader = browse(world, "trader")
    assert trader.get(f"/portal/payouts/{pending}/statement.pdf").status_code == 409  # not approved yet
    world.client.post(f"/api/v1/payouts/{pending}/reject", json={"reason": "test over"}, headers=world.headers("finance"))
    payout = _approved(world, "D3")
    pdf = browse(world, "trader").get(f"/portal/payouts/{payout}/statement.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-") and "statement.pdf" in pdf.headers["content-disposition"]
    assert browse(world, "finance").get(f"/office/payouts/{payout}/statement.pdf").content.startswith(b"%PDF-")
    assert browse(world, "fb:trader").get(f"/portal/payouts/{payout}/statement.pdf").status_code == 404


def test_certificates_are_issued_once_downloaded_and_verified_by_anyone_with_the_link(world):
    payout = _approved(world, "D4")
    trader = browse(world, "trader")
    page = trader.get("/portal/certificates").text
    assert "Payout" in page and "Funded trader" in page and "400.00 USD" in page
    ids = re.findall(r'href="/verify/([A-Za-z0-9_-]+)"', page)
    assert len(ids) == 2 and all(len(i) >= 20 for i in ids)
    trader.get("/portal/certificates")
    with world.sessions() as s:
        assert len(s.scalars(select(Certificate)).all()) == 2  # issued once
    pdf = trader.get(f"/portal/certificates/{ids[0]}.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    world.client.cookies.clear()  # anyone, logged out
    verified = world.client.get(f"/verify/{ids[0]}")
    assert verified.status_code == 200 and "Certificate verified" in verified.text and "t1" in verified.text
    assert world.client.get("/verify/" + "A" * 24).status_code == 404
    assert world.client.get("/verify/abc").status_code in (404, 422)  # not even the shape of an id
    other = browse(world, "fb:trader")
    assert other.get(f"/portal/certificates/{ids[0]}.pdf").status_code == 404
    assert f"payout:{payout}" in {c.subject for c in _certificates(world)}


def _certificates(world) -> list[Certificate]:
    with world.sessions() as s:
        return list(s.scalars(select(Certificate)))


def test_the_api_takes_the_same_methods_and_refuses_a_half_given_destination(world):
    from support.lifecycle import funded_account
    from decimal import Decimal

    from propcrm.services.payouts import METHODS

    account = funded_account(world.sessions, firm="fa", version_id=world.life, external_id="D9",
                             trader_id=world.traders["t1"], balance=Decimal("10500"))
    world.client.cookies.clear()
    schema = world.client.get("/openapi.json").json()["components"]["schemas"]["PayoutIn"]["properties"]["method"]
    assert set(schema["anyOf"][0]["enum"]) == set(METHODS)  # the API's list is the service's
    half = world.client.post("/api/v1/payouts", json={"account_id": account, "method": "paypal"},
                             headers=world.headers("trader"))
    assert half.status_code == 422 and "destination" in half.text
    done = world.client.post("/api/v1/payouts", json={"account_id": account, "method": "paypal",
                                                      "destination": "t1@traders.example"}, headers=world.headers("trader"))
    assert done.status_code == 201 and done.json()["method"] == "paypal"
    assert done.json()["destination"] == "t1@traders.example"


def test_the_api_marks_an_approved_payout_sent_once(world):
    payout = _approved(world, "D8")
    url = f"/api/v1/payouts/{payout}/sent"
    world.client.cookies.clear()
    assert world.client.post(url, json={"reference": "TX-9"}, headers=world.headers("support")).status_code == 403
    assert world.client.post(url, json={"reference": "x"}, headers=world.headers("finance")).status_code == 422
    done = world.client.post(url, json={"reference": "TX-9001"}, headers=world.headers("finance"))
    assert done.status_code == 200 and done.json()["payment_reference"] == "TX-9001" and done.json()["sent_at"]
    again = world.client.post(url, json={"reference": "TX-9002"}, headers=world.headers("finance"))
    assert again.status_code == 409 and "sent already" in again.text
