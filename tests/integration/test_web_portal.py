"""The trader portal through its pages, on both backends: only traders get in, a trader sees only their
own accounts, the bars show the engine's numbers, a failed account says why with the exact event, a
payout is requested through the form (and a second one refused), messages are escaped, CSRF holds."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import Communication, Payout
from propcrm.services.accounts import account_detail
from propcrm.services.communications import add_note
from propcrm.http.pages import fmt_money
from support.lifecycle import add_life_pack, add_user, approve_kyc, funded_account
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")

STAFF = ("admin", "risk", "finance", "support")


def opened(eid, account, ts):
    return {"id": eid, "type": "trade_opened", "account": account, "ts": ts, "position": f"p-{eid}",
            "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"}


def equity(eid, account, ts, value, balance="100000.00"):
    return {"id": eid, "type": "equity", "account": account, "ts": ts, "equity": value, "balance": balance}


def text_of(html: str) -> str:
    """The page's words without tags and with single spaces (what a reader sees)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def pages(world) -> list[str]:
    a1 = world.accounts["A1"]
    return ["/portal", f"/portal/accounts/{a1}", f"/portal/accounts/{a1}/why", f"/portal/accounts/{a1}/card",
            f"/portal/accounts/{a1}/series.json", "/portal/payouts", "/portal/profile", "/portal/messages"]


# --------------------------------------------------------------------------------------------------
# who may


def test_only_traders_open_the_portal_and_logged_out_visitors_are_sent_to_log_in(world):
    for role in STAFF:
        page = browse(world, f"fa:{role}")
        for path in pages(world):
            response = page.get(path)
            assert response.status_code == 403, (role, path)
            assert "may not open this page" in response.text
        assert page.post_form("/portal/payouts", {"account_id": str(world.accounts["A1"])}).status_code == 403
        assert page.post_form("/portal/messages", {"subject": "s", "text": "t"}).status_code == 403
        forged = page.post_form("/portal/messages", {"subject": "s", "text": "t"}, csrf=False)
        assert forged.status_code == 403 and "expired" in forged.text  # the token is checked first
        foreign = page.post_form("/portal/payouts", {}, headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403 and "cross-site" in foreign.text
    trader = browse(world, "fa:trader")
    for path in pages(world):
        assert trader.get(path).status_code == 200, path
    world.client.cookies.clear()
    for path in pages(world):
        response = world.client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), path


def test_a_trader_gets_404_for_another_traders_or_another_firms_account(world):
    page = browse(world, "fa:trader")  # t1: A1 and A3
    for external in ("A2", "B1"):  # t2's account, firm fb's account
        account = world.accounts[external]
        for path in (f"/portal/accounts/{account}", f"/portal/accounts/{account}/why",
                     f"/portal/accounts/{account}/series.json", f"/portal/accounts/{account}/card"):
            assert page.get(path).status_code == 404, path
        refused = page.post_form("/portal/payouts", {"account_id": str(account)})
        assert refused.status_code == 404
    assert page.get("/portal/accounts/999999").status_code == 404
    home = page.get("/portal").text
    assert ">A1<" in home and ">A3<" in home and ">A2<" not in home and ">B1<" not in home
    # firm fb's trader sees only B1
    other = browse(world, "fb:trader")
    assert other.get(f"/portal/accounts/{world.accounts['A1']}").status_code == 404
    assert ">B1<" in other.get("/portal").text
    # each trader's own profile and KYC
    pending = text_of(other.get("/portal/profile").text)
    assert "Identity verification is pending; it must be approved." in pending and "tb@traders.example" in pending
    approve_kyc(world.sessions, world.traders["t1"])
    mine = text_of(browse(world, "fa:trader").get("/portal/profile").text)
    assert "approved" in mine and "Identity verification approved." in mine
    assert "E-mail t1@traders.example" in mine and "Log-in trader@fa.example" in mine
    assert "Stage evaluation" in mine  # brought up to date from the accounts, as GET /traders/{id} does


# --------------------------------------------------------------------------------------------------
# numbers


def test_the_cards_show_the_engine_figures_of_account_detail(world):
    world.ingest(opened("o1", "A3", "2026-03-02T09:00:00Z"), equity("e1", "A3", "2026-03-02T09:05:00Z", "99500.00"),
                 opened("o2", "A3", "2026-03-03T09:00:00Z"),
                 equity("e2", "A3", "2026-03-03T09:05:00Z", "101200.00", balance="101000.00"))
    world.evaluate()
    with world.sessions() as s:
        detail = account_detail(s, firm_id="fa", account_id=world.accounts["A3"], trader_id=world.traders["t1"])
    html = browse(world, "fa:trader").get("/portal").text
    card = html[html.index('id="acct-%d"' % world.accounts["A3"]):]
    card = text_of(card[:card.index("</section>")])
    assert f"Balance {fmt_money(detail['balance'])} USD" in card and "Balance 101,000.00 USD" in card
    assert f"Equity {fmt_money(detail['equity'])} USD" in card and "Equity 101,200.00 USD" in card
    # daily: floor = day-start balance 100,000 − 5,000 → 95,000; equity 101,200 may fall 6,200 (capped at the room)
    daily = detail["daily_floor"]
    assert (daily["level"], daily["distance"]) == ("95000", "6200")
    assert "Daily loss left 6,200.00 left (allowance 5,000.00)" in card
    assert f"daily floor {fmt_money(daily['level'])}; equity may fall {fmt_money(daily['distance'])} more" in card
    most = detail["max_loss_level"]
    assert most["distance"] == "11200"
    assert f"Max loss left {fmt_money(most['distance'])} left (allowance 10,000.00)" in card
    assert f"Profit target {detail['target']['progress_pct']}% of the way" in card
    assert "Trading days 2 of 4 days" in card and detail["trading_days"] == {"count": 2, "required": 4}
    assert '<progress max="4.00" value="2.00"' in html
    assert '<meter min="0" max="5000.00" value="5000.00"' in html


def test_the_account_page_lists_limits_with_their_formula_and_decisions(world):
    world.ingest(opened("o1", "A3", "2026-03-02T09:00:00Z"), equity("e1", "A3", "2026-03-02T09:05:00Z", "96100.00"))
    world.evaluate()
    page = browse(world, "fa:trader")
    text = text_of(page.get(f"/portal/accounts/{world.accounts['A3']}").text)
    assert "Daily loss left 1,100.00 of 5,000.00 left" in text
    assert "balance at day start 100,000.00 − 5% of initial 100,000.00" in text  # the engine's own words
    assert "Max loss left 6,100.00 of 10,000.00 left" in text
    assert "Open positions" in text and "EURUSD buy 1 1.08512" in text
    series = page.get(f"/portal/accounts/{world.accounts['A3']}/series.json").json()
    assert [p["equity"] for p in series["points"]][-1] == "96100"
    fragment = page.get(f"/portal/accounts/{world.accounts['A3']}/card").text
    assert fragment.lstrip().startswith("<section") and "1,100.00 of 5,000.00 left" in fragment


# --------------------------------------------------------------------------------------------------
# why did my account fail


def test_a_breached_account_says_why_with_the_exact_event_and_numbers(world):
    world.ingest(opened("o1", "A1", "2026-03-02T14:03:11Z"),
                 equity("e-ok", "A1", "2026-03-02T14:05:00Z", "99820.00"),
                 equity("e-bad", "A1", "2026-03-02T14:07:00Z", "94800.00"))
    world.evaluate()
    assert world.status_of(world.accounts["A1"]) == "breached"
    page = browse(world, "fa:trader")
    home = text_of(page.get("/portal").text)
    assert "This account failed on rule daily_loss at 2026-03-02 14:07:00 UTC" in home
    assert f'href="/portal/accounts/{world.accounts["A1"]}/why"' in page.get("/portal").text
    why = text_of(page.get(f"/portal/accounts/{world.accounts['A1']}/why").text)
    assert "Why did A1 fail?" in why
    assert ("equity 94,800.00 fell below the daily floor 95,000.00 = balance at day start 100,000.00 − 5% of "
            "initial 100,000.00") in why
    assert "Value 94,800.00" in why and "Threshold 95,000.00" in why
    assert "daily_loss in phase phase-1 of two-step-100k v1" in why
    assert "breached when equity falls below it" in why
    assert "When (UTC) 2026-03-02 14:07:00 UTC" in why
    assert "When (Europe/Prague) 2026-03-02 15:07:00 CET (Europe/Prague)" in why
    assert "Loss allowed (room) 5,000.00" in why and "Trading day 2026-03-02" in why
    # the stored raw event, exactly as sent
    for field in ("id e-bad", "type equity", "equity 94800.00", "balance 100000.00", "ts 2026-03-02T14:07:00Z"):
        assert field in why, field
    # an account that did not fail says so
    ok = text_of(page.get(f"/portal/accounts/{world.accounts['A3']}/why").text)
    assert "has no breach" in ok
    # the risk desk clears the breach: the trader sees that and when, not the desk's note
    cleared = world.client.post(f"/api/v1/accounts/{world.accounts['A1']}/overrides",
                                json={"reason": "desk: feed glitch <b>internal</b>"}, headers=world.headers("risk"))
    assert cleared.status_code == 201, cleared.text
    html = page.get(f"/portal/accounts/{world.accounts['A1']}/why").text
    assert "clear breach by the firm on" in html
    assert "feed glitch" not in html and "internal" not in html


# --------------------------------------------------------------------------------------------------
# payouts


def test_a_payout_is_requested_through_the_form_and_a_second_request_is_refused(world):
    version = add_life_pack(world.sessions, "fa")
    approve_kyc(world.sessions, world.traders["t1"])
    funded = funded_account(world.sessions, firm="fa", version_id=version, external_id="F1",
                            trader_id=world.traders["t1"], balance=Decimal("10500"))
    page = browse(world, "fa:trader")
    before = text_of(page.get("/portal/payouts").text)
    assert "F1 eligible" in before and "Your amount now: 400.00" in before  # 500 profit × 80 %
    assert "✓ passed · compliance: identity verification approved" in before
    assert "Request a payout of 400.00 from F1" in before
    assert page.post_form("/portal/payouts", {"account_id": str(funded)}, csrf=False).status_code == 403
    with world.sessions() as s:
        assert s.scalars(select(Payout)).all() == []  # the refused form changed nothing
    # the portal asks how to be paid: without a method (or with an unknown one) nothing is stored
    for bad in ({}, {"method": "cash", "destination": "DE89 3704 0044 0532 0130 00"}, {"method": "wise"}):
        refused = text_of(page.post_form("/portal/payouts", {"account_id": str(funded), **bad},
                                         follow_redirects=True).text)
        assert "The request was not accepted: method" in refused or "destination: 3 to 200" in refused, bad
    with world.sessions() as s:
        assert s.scalars(select(Payout)).all() == []
    pay = {"method": "bank_transfer", "destination": "DE89 3704 0044 0532 0130 00"}
    response = page.post_form("/portal/payouts", {"account_id": str(funded), **pay})
    assert response.status_code == 303 and response.headers["location"].startswith("/portal/payouts")
    after = page.get("/portal/payouts")
    words = text_of(after.text)
    assert re.search(r"Payout request \d+ for 400.00 is received", words)
    assert "requested" in words and "400.00" in words
    with world.sessions() as s:
        row = s.scalars(select(Payout)).one()
        assert (row.status, row.account_id, row.trader_amount) == ("requested", funded, Decimal("400"))
        assert (row.method, row.destination) == ("bank_transfer", "DE89 3704 0044 0532 0130 00")
    assert [e.entity_id for e in world.audit("payout.requested")] == [str(row.id)]
    # the eligibility now fails "no open request", and a second post is stored as refused with the reason
    assert "no open request: payout" in words and "F1 not eligible now" in words
    second = page.post_form("/portal/payouts", {"account_id": str(funded), **pay}, follow_redirects=True)
    assert second.status_code == 200
    refused = text_of(second.text)
    assert re.search(rf"Payout request \d+ was refused: no_open_request: payout {row.id} of this account is still open",
                     refused)
    with world.sessions() as s:
        assert sorted(p.status for p in s.scalars(select(Payout))) == ["refused", "requested"]
    # the amount's derivation is on the history
    assert "trader" in refused.lower() and "400.00" in refused


def test_a_rejected_payout_shows_the_reason_to_the_trader(world):
    text = text_of(browse(world, "fa:trader").get("/portal/payouts").text)
    assert "Only a funded account can be paid" in text and "A1 is active in phase-1" in text
    assert "Request a payout" not in text
    version = add_life_pack(world.sessions, "fa")
    approve_kyc(world.sessions, world.traders["t1"])
    funded = funded_account(world.sessions, firm="fa", version_id=version, external_id="F2",
                            trader_id=world.traders["t1"], balance=Decimal("10100"))
    payout = world.client.post("/api/v1/payouts", json={"account_id": funded}, headers=world.headers("finance")).json()
    world.client.post(f"/api/v1/payouts/{payout['id']}/reject", json={"reason": "bank name <i>mismatch</i>"},
                      headers=world.headers("finance"))
    html = browse(world, "fa:trader").get("/portal/payouts").text
    assert "rejected" in html and "Reason bank name &lt;i&gt;mismatch&lt;/i&gt;" in text_of(html)
    assert "finance@fa.example" not in html  # who requested it stays with staff


# --------------------------------------------------------------------------------------------------
# profile, messages


def test_a_message_to_support_is_stored_escaped_and_staff_notes_stay_hidden(world):
    with world.sessions.begin() as s:
        add_note(s, firm_id="fa", trader_id=world.traders["t1"], text="staff only: watch this one", actor="user:1:x")
    page = browse(world, "fa:trader")
    response = page.post_form("/portal/messages", {"subject": "<b>payout?</b>", "text": "<script>x</script> when?"})
    assert response.status_code == 303 and response.headers["location"] == "/portal/messages"
    html = page.get("/portal/messages").text
    assert "Your message is sent to support." in html
    assert "&lt;script&gt;x&lt;/script&gt; when?" in html and "<script>x</script>" not in html
    assert "&lt;b&gt;payout?&lt;/b&gt;" in html
    assert "staff only" not in html
    with world.sessions() as s:
        row = s.scalars(select(Communication).where(Communication.kind == "message_in")).one()
        assert (row.trader_id, row.subject, row.body) == (world.traders["t1"], "<b>payout?</b>", "<script>x</script> when?")
    assert len(world.audit("trader.message")) == 1
    # staff see it on the trader's timeline through the API
    timeline = world.client.get(f"/api/v1/traders/{world.traders['t1']}/timeline", headers=world.headers("support"))
    assert any(item["kind"] == "message_in" for item in timeline.json())


def test_an_empty_message_is_refused_with_the_reason_and_the_text_kept(world):
    page = browse(world, "fa:trader")
    response = page.post_form("/portal/messages", {"subject": "  ", "text": "keep <this>"})
    assert response.status_code == 422
    assert "subject: 1 to 200 characters are required" in response.text and "keep &lt;this&gt;" in response.text
    assert page.post_form("/portal/messages", {"subject": "s", "text": "t"}, csrf=False).status_code == 403
    with world.sessions() as s:
        assert s.scalars(select(Communication).where(Communication.kind == "message_in")).all() == []


def test_a_second_trader_of_the_firm_sees_only_their_own_timeline_and_payouts(world):
    version = add_life_pack(world.sessions, "fa")
    approve_kyc(world.sessions, world.traders["t1"])
    funded = funded_account(world.sessions, firm="fa", version_id=version, external_id="F3",
                            trader_id=world.traders["t1"], balance=Decimal("10500"))
    browse(world, "fa:trader").post_form("/portal/messages", {"subject": "mine", "text": "t1 private words"})
    browse(world, "fa:trader").post_form("/portal/payouts", {"account_id": str(funded)})
    key = add_user(world, firm="fa", role="trader", name="t2u", trader_id=world.traders["t2"])
    other = browse(world, key)
    assert "t1 private words" not in other.get("/portal/messages").text
    payouts = other.get("/portal/payouts").text
    assert "F3" not in payouts and "No payout requests yet." in payouts
    assert other.get(f"/portal/accounts/{funded}").status_code == 404
    with world.sessions() as s:
        assert s.scalars(select(m.Account.status).where(m.Account.id == funded)).one() == "funded"
