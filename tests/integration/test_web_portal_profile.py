"""The portal's profile and leaderboard (issue 17) on both backends: a trader opts in to the leaderboard
(generated or chosen pseudonym, refused when it gives them away), the board ranks live accounts by return
over the period with period and size filters and never shows names, e-mails or account ids; staff hide an
entry (and the hide outlives a re-opt-in); a trader changes their password (current one required, other
sessions end), enrols two-factor login and then logs in with a code; uploads a KYC document (type and size
checked) and sees its status; sees their orders."""

from __future__ import annotations

import datetime as dt
import re

import pyotp
import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_leaderboard import LeaderboardEntry
from propcrm.adapters.db.models_lifecycle import KycDocument
from propcrm.api.auth import COOKIE_NAME
from propcrm.domain.rulepack import load_pack
from propcrm.services import leaderboard
from propcrm.services.errors import Conflict
from propcrm.services.catalog import add_pack, create_account
from propcrm.services.lifecycle import create_order
from propcrm.services.products import create_product
from support.staff import PASSWORD, build_world, seed
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")
UTC = dt.timezone.utc
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
NEW_PASSWORD = "violet marmalade drifts over quiet harbours"


@pytest.fixture
def world(db_url):
    _, world = build_world(db_url)
    leaderboard.CACHE.forget()
    with world.client:
        seed(world)
        yield world
    leaderboard.CACHE.forget()


def flash(response) -> str:
    found = re.search(r'<p class="flash" role="status">(.*?)</p>', response.text, re.S)
    return found.group(1) if found else ""


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def round_trip(account: str, n: str, closed_at: dt.datetime, profit: str) -> list[dict]:
    ts = lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return [{"id": f"o-{account}-{n}", "type": "trade_opened", "account": account, "ts": ts(closed_at - dt.timedelta(hours=1)),
             "position": f"p-{n}", "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"},
            {"id": f"c-{account}-{n}", "type": "trade_closed", "account": account, "ts": ts(closed_at),
             "position": f"p-{n}", "lots": "1", "price": "1.08612", "profit": profit, "commission": "-7.00"}]


def main_of(html: str) -> str:
    """The page without its header (which names the viewer's own login)."""
    return html[html.index("<main"):html.index("</main>")]


def board_rows(html: str) -> list[list[str]]:
    body = html[html.index('id="leaderboard-table"'):]
    body = body[:body.index("</table>")]
    return [[text_of(cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body[body.index("<tbody>"):], re.S)]


# --------------------------------------------------------------------------------------------------
# the leaderboard


def test_the_leaderboard_ranks_opted_in_accounts_by_return_and_shows_only_pseudonyms(world):
    now = dt.datetime.now(UTC).replace(microsecond=0)
    with world.sessions.begin() as s:
        s.get(m.Trader, world.traders["t1"]).name = "Jane Doe"
        # one close ranks here (the fairness thresholds have their own test)
        leaderboard.set_fairness(s, firm_id="fa", min_trades=1, min_days=1, actor="test")
        small = add_pack(s, firm_id="fa", pack=load_pack("futures-eod-50k")).id
        world.accounts["A5"] = create_account(s, firm_id="fa", external_id="PX-50001", pack_version_id=small,
                                              trader_id=world.traders["t1"]).id
    world.ingest(*round_trip("A1", "1", now - dt.timedelta(days=2), "1007.00"),   # +1,000 on 100k: 1.00 %
                 *round_trip("PX-50001", "1", now - dt.timedelta(days=1), "757.00"),    # +750 on 50k: 1.50 %
                 *round_trip("A2", "2", now - dt.timedelta(days=40), "5007.00"),  # only in 90 days and all time
                 *round_trip("A2", "1", now - dt.timedelta(days=3), "2007.00"),   # +2,000 on 100k: 2.00 %
                 *round_trip("A3", "1", now - dt.timedelta(days=1), "9007.00"))   # A3 is breached below
    world.evaluate()
    with world.sessions.begin() as s:
        s.get(m.Account, world.accounts["A3"]).status = "breached"
    page = browse(world, "fa:trader")
    # nobody opted in: an empty board
    assert 'id="leaderboard-empty"' in page.get("/portal/leaderboard").text
    # a pseudonym that gives the trader away is refused with the reason; an empty one is made up
    for bad, why in (("Jane the trader", "your name"), ("px-50001", "account id"), ("x", "3 to 24"),
                     ("Support Desk", "suggest staff"), ("<b>x</b>", "letters, digits")):
        answer = page.post_form("/portal/leaderboard/join", {"pseudonym": bad})
        assert answer.status_code == 303 and why in flash(page.get("/portal/profile")), bad
    assert page.post_form("/portal/leaderboard/join", {"pseudonym": ""}).status_code == 303
    made_up = re.search(r'data-testid="my-pseudonym">([^<]+)<', page.get("/portal/profile").text).group(1)
    assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+ \d{3}", made_up)
    page.post_form("/portal/leaderboard/join", {"pseudonym": "Quiet Heron"})
    assert "as Quiet Heron" in flash(page.get("/portal/profile"))
    with world.sessions.begin() as s:  # t2 (no login of their own here) takes part through the service
        leaderboard.opt_in(s, firm_id="fa", trader_id=world.traders["t2"], pseudonym="Nimble Lynx", actor="test")
        with pytest.raises(Exception, match="another trader has it"):
            leaderboard.opt_in(s, firm_id="fa", trader_id=world.traders["t2"], pseudonym="quiet heron", actor="t")
    html = page.get("/portal/leaderboard").text  # last 30 days, every size; a trader once, with their best
    assert board_rows(html) == [
        ["1", "Nimble Lynx", "100,000.00 USD · challenge", "+2.00 %", "1"],
        ["2", "Quiet Heron you", "50,000.00 USD · challenge", "+1.50 %", "1"],
    ]
    assert "ranked after 1 closed trade on at least 1 trading day" in text_of(html)
    for secret in ("Jane", "t1@traders.example", "t2@traders.example", ">A1<", ">A2<", "PX-50001", "trader@fa.example"):
        assert secret not in main_of(html), secret
    for account in world.accounts.values():
        assert f"/accounts/{account}" not in html
    # the period and size filters
    assert [r[1] for r in board_rows(page.get("/portal/leaderboard?period=90d").text)][:1] == ["Nimble Lynx"]
    assert board_rows(page.get("/portal/leaderboard?period=90d").text)[0][3] == "+7.00 %"
    assert [r[3] for r in board_rows(page.get("/portal/leaderboard?period=7d&size=100000").text)] == ["+2.00 %", "+1.00 %"]
    only_small = board_rows(page.get("/portal/leaderboard?size=50000").text)
    assert only_small == [["1", "Quiet Heron you", "50,000.00 USD · challenge", "+1.50 %", "1"]]
    assert page.get("/portal/leaderboard?period=bogus&size=abc").status_code == 200  # defaults, not an error
    # staff: who may, hide (with a reason) and show again
    for role in ("finance",):
        assert browse(world, f"fa:{role}").get("/office/leaderboard").status_code == 403
    assert page.get("/office/leaderboard").status_code == 403
    staff_html = browse(world, "fa:risk").get("/office/leaderboard").text
    assert "Nimble Lynx" in staff_html and "Quiet Heron" in staff_html
    with world.sessions() as s:
        lynx = s.scalar(select(LeaderboardEntry.id).where(LeaderboardEntry.pseudonym == "Nimble Lynx"))
    risk = browse(world, "fa:risk")
    assert risk.post_form(f"/office/leaderboard/{lynx}/hide", {"reason": ""}).status_code == 303
    assert "Not done: reason" in flash(risk.get("/office/leaderboard"))
    browse(world, "fa:risk").post_form(f"/office/leaderboard/{lynx}/hide", {"reason": "pseudonym reported"})
    assert world.audit("leaderboard.hide")[-1].after["reason"] == "pseudonym reported"
    assert [r[1] for r in board_rows(browse(world, "fa:trader").get("/portal/leaderboard").text)] == ["Quiet Heron you"]
    assert browse(world, "fb:risk").post_form(f"/office/leaderboard/{lynx}/unhide", {}).status_code == 404
    with world.sessions.begin() as s:  # leaving and coming back does not lift a hide
        leaderboard.opt_out(s, firm_id="fa", trader_id=world.traders["t2"], actor="test")
    with world.sessions.begin() as s:
        leaderboard.opt_in(s, firm_id="fa", trader_id=world.traders["t2"], pseudonym="", actor="test")
    assert "Nimble Lynx" not in browse(world, "fa:trader").get("/portal/leaderboard").text
    browse(world, "fa:risk").post_form(f"/office/leaderboard/{lynx}/unhide", {})
    assert "Nimble Lynx" in browse(world, "fa:trader").get("/portal/leaderboard").text
    # the trader leaves: off the board at once
    assert browse(world, "fa:trader").post_form("/portal/leaderboard/leave", {}).status_code == 303
    assert [r[1] for r in board_rows(browse(world, "fa:trader").get("/portal/leaderboard").text)] == ["Nimble Lynx"]
    assert [e.action for e in world.audit("leaderboard.opt_out")][-1] == "leaderboard.opt_out"
    # another firm sees none of it
    assert 'id="leaderboard-empty"' in browse(world, "fb:trader").get("/portal/leaderboard").text


def test_the_board_is_kept_for_its_ttl_while_the_entries_are_unchanged(world, monkeypatch):
    now = dt.datetime.now(UTC).replace(microsecond=0)
    world.ingest(*round_trip("A2", "1", now - dt.timedelta(days=1), "507.00"))
    world.evaluate()
    with world.sessions.begin() as s:
        leaderboard.set_fairness(s, firm_id="fa", min_trades=1, min_days=1, actor="test")
    calls = []
    real = leaderboard.compute
    monkeypatch.setattr(leaderboard, "compute", lambda *a, **k: calls.append(1) or real(*a, **k))
    page = browse(world, "fa:trader")
    with world.sessions.begin() as s:
        leaderboard.opt_in(s, firm_id="fa", trader_id=world.traders["t2"], pseudonym="Calm Otter", actor="test")
    assert board_rows(page.get("/portal/leaderboard").text)[0][1:4] == ["Calm Otter", "100,000.00 USD · challenge",
                                                                         "+0.50 %"]
    page.get("/portal/leaderboard?size=100000")
    assert len(calls) == 1  # one computation for both sizes
    # a new close within the minute: the kept board is read (the TTL bounds how late trades show)
    world.ingest(*round_trip("A2", "2", now - dt.timedelta(hours=1), "1007.00"))
    world.evaluate()
    assert "+0.50 %" in page.get("/portal/leaderboard").text and len(calls) == 1
    # a change of the entries, written as another process would (no cache of this one is told): shown at once
    with world.sessions.begin() as s:
        entry = s.scalar(select(LeaderboardEntry))
        entry.hidden_at = entry.updated_at = dt.datetime.now(UTC)
        entry.hidden_by, entry.hidden_reason = "another process", "test"
    assert 'id="leaderboard-empty"' in page.get("/portal/leaderboard").text and len(calls) == 2
    with world.sessions.begin() as s:
        entry = s.scalar(select(LeaderboardEntry))
        entry.hidden_at = None
        entry.updated_at = dt.datetime.now(UTC)
    assert "+1.50 %" in page.get("/portal/leaderboard").text and len(calls) == 3  # and the new close with it


# --------------------------------------------------------------------------------------------------
# log-in security: password and two-factor


def web_login(world, password: str = PASSWORD):
    world.client.cookies.clear()
    world.client.get("/login")
    csrf = world.client.cookies.get("propcrm_login_csrf")
    answer = world.client.post("/login", data={"firm": "fa", "email": "trader@fa.example", "password": password,
                                               "csrf": csrf}, follow_redirects=False)
    return answer, csrf


def test_a_trader_changes_the_password_with_the_current_one_and_other_sessions_end(world):
    other = world.fresh_token("fa:trader")
    page = browse(world, "fa:trader")
    assert 'href="/account/password"' in page.get("/portal/profile").text
    wrong = page.post_form("/account/password", {"current_password": "not it at all, no", "new_password": NEW_PASSWORD,
                                                 "new_password_again": NEW_PASSWORD})
    assert wrong.status_code == 303 and "current password is wrong" in flash(page.get("/account/password"))
    weak = page.post_form("/account/password", {"current_password": PASSWORD, "new_password": "password1234",
                                                "new_password_again": "password1234"})
    assert weak.status_code == 303 and "Not done" in flash(page.get("/account/password"))
    page.post_form("/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                         "new_password_again": NEW_PASSWORD})
    assert "Your password is changed" in flash(page.get("/account/password"))
    assert page.get("/portal").status_code == 200  # this session stays
    assert world.client.get("/api/v1/me", headers={"Authorization": f"Bearer {other}"}).status_code == 401
    with world.sessions() as s:
        assert s.get(m.User, world.user_ids["fa:trader"]).password_hash.startswith("$argon2")
    assert web_login(world)[0].status_code != 303  # the old one no longer logs in
    assert web_login(world, NEW_PASSWORD)[0].status_code == 303


def test_a_trader_enrols_two_factor_from_the_profile_and_then_logs_in_with_a_code(world):
    page = browse(world, "fa:trader")
    profile = page.get("/portal/profile").text
    assert 'id="profile-two-factor">off<' in profile and 'href="/account/two-factor"' in profile
    assert page.post_form("/account/two-factor/start", {}).status_code == 303
    html = page.get("/account/two-factor").text
    secret = re.search(r'data-testid="totp-secret">([A-Z2-7]+)<', html).group(1)
    assert 'src="data:image/svg+xml' in html
    done = page.post_form("/account/two-factor/confirm", {"code": pyotp.TOTP(secret).now()})
    recovery = re.findall(r"<li><code>([0-9a-f]{8}-[0-9a-f]{8})</code></li>", done.text)
    assert done.status_code == 200 and len(recovery) == 10
    assert 'id="profile-two-factor">on<' in page.get("/portal/profile").text
    answer, csrf = web_login(world)
    assert answer.status_code == 200 and "Authentication code" in answer.text and COOKIE_NAME not in world.client.cookies
    ahead = pyotp.TOTP(secret).at(dt.datetime.now(UTC) + dt.timedelta(seconds=30))
    right = world.client.post("/login/code", data={"code": ahead, "csrf": csrf}, follow_redirects=False)
    assert right.status_code == 303 and right.headers["location"] == "/portal"
    assert world.client.get("/portal").status_code == 200
    assert world.audit("user.login")[-1].after == {"email": "trader@fa.example", "role": "trader",
                                                   "address": "testclient", "second_factor": "totp"}
    answer, csrf = web_login(world)
    used = world.client.post("/login/code", data={"code": recovery[0], "csrf": csrf}, follow_redirects=False)
    assert used.status_code == 303 and world.audit("user.login")[-1].after["second_factor"] == "recovery"


# --------------------------------------------------------------------------------------------------
# KYC documents and orders


def upload(page, data: bytes, name: str = "passport.png", kind: str = "id_document"):
    from support.web import csrf_for

    return page.client.post("/portal/kyc/documents", data={"kind": kind, "csrf": csrf_for(page.token)},
                            files={"file": (name, data, "image/png")}, follow_redirects=False)


def test_a_trader_uploads_a_kyc_document_checked_by_type_and_size_and_sees_its_status(world):
    page = browse(world, "fa:trader")
    assert "No documents yet." in page.get("/portal/profile").text
    assert upload(page, b"MZ\x90\x00 not an image", "passport.png").status_code == 303
    assert "only PDF, PNG or JPEG" in flash(page.get("/portal/profile"))
    upload(page, PNG, kind="passport")
    assert "kind: one of" in flash(page.get("/portal/profile"))
    too_big = upload(page, PNG + b"\x00" * (10 * 1024 * 1024))
    assert too_big.status_code in (303, 400, 413)
    with world.sessions() as s:
        assert s.scalar(select(KycDocument.id)) is None
    forged = page.client.post("/portal/kyc/documents", data={"kind": "id_document", "csrf": "x"},
                              files={"file": ("a.png", PNG, "image/png")}, follow_redirects=False)
    assert forged.status_code == 403
    assert upload(page, PNG, "../../etc/my passport.png").status_code == 303
    profile = page.get("/portal/profile")
    assert "my passport.png is uploaded; it awaits review" in flash(profile)
    row = profile.text[profile.text.index('id="kyc-documents"'):]
    assert "my passport.png" in row and "awaiting review" in row and "Identity document" in row
    with world.sessions() as s:
        doc = s.scalar(select(KycDocument))
        assert (doc.trader_id, doc.uploaded_by.startswith("user:"), doc.content_type) == (world.traders["t1"], True,
                                                                                          "image/png")
    assert world.client.app.state.documents.read(doc.storage_key) == PNG
    # compliance sees it in the queue; the trader of firm fb does not see it; staff may not use the portal's form
    assert "t1" in browse(world, "fa:support").get("/office/kyc").text
    assert "my passport.png" not in browse(world, "fb:trader").get("/portal/profile").text
    assert upload(browse(world, "fa:support"), PNG).status_code == 403
    # after a rejection the trader sees the reason
    world.client.cookies.clear()
    browse(world, "fa:support").post_form(f"/office/traders/{world.traders['t1']}/kyc-review",
                                          {"decision": "rejected", "reason": "the photo is blurred"})
    mine = browse(world, "fa:trader").get("/portal/profile").text
    assert "the photo is blurred" in mine and 'badge rejected">rejected<' in mine


def test_the_profile_lists_the_traders_orders_or_says_there_are_none(world):
    page = browse(world, "fa:trader")
    assert "No orders yet." in page.get("/portal/profile").text
    with world.sessions.begin() as s:
        product = create_product(s, firm_id="fa", name="Two-step 100k", pack_version_id=world.version["fa"],
                                 price="155.00", actor="test")
        create_order(s, firm_id="fa", trader_id=world.traders["t1"], product_id=product.id, actor="test")
    html = text_of(page.get("/portal/profile").text)
    assert "No orders yet." not in html and "155.00 USD" in html


def test_two_traders_taking_one_pseudonym_at_once_get_a_conflict_not_an_error(world, monkeypatch):
    with world.sessions.begin() as s:
        leaderboard.opt_in(s, firm_id="fa", trader_id=world.traders["t1"], pseudonym="Amber Crane", actor="test")
    # the check passed (as for a second trader whose check ran before the first one's commit)
    monkeypatch.setattr(leaderboard, "pseudonym_problem", lambda *a, **k: None)
    with world.sessions.begin() as s:
        with pytest.raises(Conflict, match="another trader has it"):
            leaderboard.opt_in(s, firm_id="fa", trader_id=world.traders["t2"], pseudonym="amber crane", actor="t")
        assert leaderboard.entry_of(s, firm_id="fa", trader_id=world.traders["t2"]) is None


def test_staff_read_the_leaderboard_entries_a_page_at_a_time(world):
    """Issue 16's scale bound: a big firm's traders opt in by the ten thousand; the staff page lists the
    entries 50 a page, newest first, with the total and a pager (it rendered every one)."""
    now = dt.datetime.now(UTC)
    with world.sessions.begin() as s:
        traders = [m.Trader(firm_id="fa", name=f"Bulk {k}", email=f"bulk{k}@x.example", kyc_status="approved")
                   for k in range(60)]
        s.add_all(traders)
        s.flush()
        s.add_all([LeaderboardEntry(firm_id="fa", trader_id=t.id, pseudonym=f"Owl{k:02d}", pseudonym_key=f"owl{k:02d}",
                                    opted_in=True, opted_in_at=now, updated_at=now) for k, t in enumerate(traders)])
    staff = browse(world, "risk")
    first = staff.get("/office/leaderboard")
    assert first.status_code == 200
    names = re.findall(r'<tr><th scope="row">(Owl\d+)</th>', first.text)
    assert names == [f"Owl{k:02d}" for k in range(59, 9, -1)] and "1–50 of 60" in first.text
    assert "entries_offset=50#entries" in first.text
    rest = staff.get("/office/leaderboard?entries_offset=50")
    assert re.findall(r'<tr><th scope="row">(Owl\d+)</th>', rest.text) == [f"Owl{k:02d}" for k in range(9, -1, -1)]
    assert 'rel="next"' not in rest.text.split('id="entries"')[1]
