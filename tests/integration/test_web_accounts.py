"""The back office's accounts pages on both backends: the live accounts table, the account page with its
chart series and actions, the decisions feed, and the live event stream's filtering and shutdown."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.domain.events import DECODER
from propcrm.engine.runner import Engine
from propcrm.services import accounts as account_service
from propcrm.services.catalog import create_account
from propcrm.web import live
from propcrm.web.queries_accounts import downsample
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")

STAFF = ("admin", "risk", "finance", "support")
PAGES = ("/office/accounts", "/office/accounts/{A1}", "/office/accounts/{A1}/series.json", "/office/decisions")


def opened(eid, account, ts, position="p1"):
    return {"id": eid, "type": "trade_opened", "account": account, "ts": ts, "position": position,
            "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"}


def equity(eid, account, ts, value, balance="100000"):
    return {"id": eid, "type": "equity", "account": account, "ts": ts, "equity": value, "balance": balance}


def closed(eid, account, ts, profit, position="p1"):
    return {"id": eid, "type": "trade_closed", "account": account, "ts": ts, "position": position, "lots": "1",
            "price": "1.09", "profit": profit}


def _breach_a1(world):
    world.ingest(opened("o1", "A1", "2026-03-02T09:00:00Z"), equity("e1", "A1", "2026-03-02T10:00:00Z", "94000"))
    world.evaluate()
    assert world.status_of(world.accounts["A1"]) == "breached"


# --------------------------------------------------------------------------------------------------
# who may open what


def test_every_staff_role_sees_the_pages_a_trader_gets_403_and_a_visitor_is_sent_to_login(world):
    urls = [p.format(A1=world.accounts["A1"]) for p in PAGES]
    for role in STAFF:
        page = browse(world, f"fa:{role}")
        for url in urls:
            response = page.get(url)
            assert response.status_code == 200, (role, url, response.text[:300])
    trader = browse(world, "fa:trader")
    for url in urls:
        assert trader.get(url).status_code == 403, url
    # the live stream is for any logged-in user (what it sends is filtered); bad parameters are refused
    assert trader.get("/live?accounts=abc").status_code == 422
    assert trader.get("/live?decisions=7").status_code == 422
    world.client.cookies.clear()
    for url in [*urls, "/live?decisions=1"]:
        response = world.client.get(url, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login"), url


def test_another_firms_account_is_404_and_its_rows_and_decisions_never_show(world):
    other = browse(world, "fb:admin")
    a1 = world.accounts["A1"]
    for url in (f"/office/accounts/{a1}", f"/office/accounts/{a1}/series.json", "/office/accounts/999999"):
        assert other.get(url).status_code == 404, url
    listing = other.get("/office/accounts").text
    assert "B1" in listing and ">A1<" not in listing and ">A2<" not in listing
    feed = browse(world, "fa:risk").get("/office/decisions").text
    assert "B1" not in feed and "A1" in feed and "A2" in feed


def test_only_risk_and_admin_may_act_and_a_post_without_csrf_is_refused(world):
    a2 = world.accounts["A2"]
    for role in ("finance", "support", "trader"):
        page = browse(world, f"fa:{role}")
        for action, data in (("stop", {"reason": "nope", "confirm": "yes"}), ("override", {"reason": "nope"}),
                             ("suspend-trader", {"reason": "nope"})):
            assert page.post_form(f"/office/accounts/{a2}/{action}", data).status_code == 403, (role, action)
    support_page = browse(world, "fa:support").get(f"/office/accounts/{a2}").text
    assert "Emergency stop" not in support_page and "Overrides" not in support_page
    risk = browse(world, "fa:risk")
    refused = risk.post_form(f"/office/accounts/{a2}/stop", {"reason": "no token", "confirm": "yes"}, csrf=False)
    assert refused.status_code == 403
    foreign = risk.post_form(f"/office/accounts/{a2}/stop", {"reason": "cross site", "confirm": "yes"},
                             headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert world.status_of(a2) == "active"
    # another firm's account: 404, nothing changes
    assert browse(world, "fb:risk").post_form(f"/office/accounts/{a2}/stop",
                                              {"reason": "other firm", "confirm": "yes"}).status_code == 404
    assert world.status_of(a2) == "active"


# --------------------------------------------------------------------------------------------------
# what the pages show


def sorted_by(html: str) -> list[tuple[str, str]]:
    """(heading, aria-sort) of every column heading of the accounts table that says the rows are sorted by it."""
    head = html.split('<table id="accounts-table"')[1].split("</thead>")[0]
    return [(label.strip(), aria) for aria, label in
            re.findall(r'<th scope="col" aria-sort="(\w+)"[^>]*>\s*<a [^>]*>([^<]+)', head)]


def test_the_table_shows_the_figures_sorts_filters_and_pages(world):
    world.ingest(opened("o1", "A2", "2026-03-02T09:00:00Z"), equity("e1", "A2", "2026-03-02T10:00:00Z", "98500.50"))
    world.evaluate()
    page = browse(world, "fa:risk")
    html = page.get("/office/accounts").text
    row = html.split(f'data-account-id="{world.accounts["A2"]}"')[1].split("</tr>")[0]
    assert ">98,500.50<" in row and ">100,000.00<" in row  # equity, balance
    assert "t2" in row  # the trader's name
    # daily floor 95,000 (balance at day start − 5 % of initial): 3,500.50 to go; max loss 90,000: 8,500.50
    assert ">3,500.50<" in row and ">8,500.50<" in row
    assert ">1 / 4<" in row  # trading days
    # the heading of the sorted column says so (aria-sort); the default order (by id) is no column's
    assert sorted_by(html) == [] and "aria-sort" not in html
    assert sorted_by(page.get("/office/accounts?sort=-equity").text) == [("Equity", "descending")]
    assert sorted_by(page.get("/office/accounts?sort=equity").text) == [("Equity", "ascending")]
    assert sorted_by(page.get("/office/accounts?sort=external_id").text) == [("Account", "ascending")]
    assert page.get("/office/accounts?status=breached").text.count("data-account-id=") == 0
    assert page.get("/office/accounts?q=A2").text.count("data-account-id=") == 1
    first = page.get("/office/accounts?limit=25&sort=external_id")
    assert first.status_code == 200 and "Accounts 1–3 of 3" in first.text
    for _ in range(30):
        world.new_account()
    second = page.get("/office/accounts?limit=25&offset=25&sort=external_id").text
    assert "Accounts 26–33 of 33" in second and 'rel="prev"' in second and 'rel="next"' not in second
    # a bad sort or page size never breaks the page
    assert page.get("/office/accounts?sort=password&limit=99999&offset=-3").status_code == 200


def test_user_text_is_escaped_on_every_page(world):
    with world.sessions.begin() as s:
        account = create_account(s, firm_id="fa", external_id="<script>x</script>",
                                 pack_version_id=world.version["fa"], trader_id=world.traders["t1"])
        evil = account.id
        s.add(m.Decision(firm_id="fa", account_id=evil, event_seq=None, event_id="ev-evil",
                         ts=dt.datetime(2026, 3, 2, 11, tzinfo=dt.timezone.utc),
                         kind="warning", rule="daily_loss", phase="phase-1", message="<img src=x onerror=alert(1)>",
                         value=None, threshold=None, body=b"{}"))
    page = browse(world, "fa:risk")
    for url in ("/office/accounts", f"/office/accounts/{evil}", "/office/decisions"):
        html = page.get(url).text
        assert "<script>x</script>" not in html and "<img src=x" not in html, url
        assert "&lt;script&gt;x&lt;/script&gt;" in html, url
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.get("/office/decisions").text


def test_the_decisions_feed_filters_by_kind_and_rule_and_pages(world):
    _breach_a1(world)
    page = browse(world, "fa:support")
    breaches = page.get("/office/decisions?kind=breach").text
    assert breaches.count("data-decision-id=") == 1 and "fell below the daily floor 95,000.00" in breaches
    daily = page.get("/office/decisions?rule=daily_loss").text.split("<tbody>")[1]
    assert daily.count("data-decision-id=") >= 2 and "badge breach" in daily  # the breach and the seeded warning
    assert page.get("/office/decisions?rule=daily_loss&kind=breach").text.count("data-decision-id=") == 1
    assert page.get("/office/decisions?rule=profit_target").text.count("data-decision-id=") == 0
    everything = page.get("/office/decisions?limit=25").text
    assert 'data-live-decisions="1"' in everything
    assert page.get("/office/decisions?kind=nonsense&rule=" + "x" * 500).status_code == 200


# --------------------------------------------------------------------------------------------------
# actions


def test_clearing_a_breach_through_the_form_changes_the_status_and_is_audited(world):
    _breach_a1(world)
    a1 = world.accounts["A1"]
    risk = browse(world, "fa:risk")
    html = risk.get(f"/office/accounts/{a1}").text
    assert "Clear breach" in html and "max_loss" in html
    with world.sessions() as s:
        breach = s.scalars(select(m.Decision).where(m.Decision.account_id == a1, m.Decision.kind == "breach")).one()
    # a reason is required: the page says why, nothing changes
    short = risk.post_form(f"/office/accounts/{a1}/override", {"action": "clear_breach", "reason": "x",
                                                               "decision_id": str(breach.id)})
    assert short.status_code == 303 and world.status_of(a1) == "breached"
    assert "reason" in risk.get(f"/office/accounts/{a1}").text.split('class="flash"')[1].split("</p>")[0]
    done = risk.post_form(f"/office/accounts/{a1}/override", {"action": "clear_breach", "decision_id": str(breach.id),
                                                              "reason": "feed glitch <b>confirmed</b>"})
    assert done.status_code == 303 and done.headers["location"] == f"/office/accounts/{a1}"
    assert world.status_of(a1) == "active"
    entry = world.audit("account.clear_breach")[-1]
    assert entry.actor.startswith(f"user:{world.user_ids['fa:risk']}:")
    assert entry.after["reason"] == "feed glitch <b>confirmed</b>" and entry.after["decision"] == breach.id
    after = risk.get(f"/office/accounts/{a1}").text
    assert "Breach cleared" in after and "feed glitch &lt;b&gt;confirmed&lt;/b&gt;" in after
    # clearing twice is a conflict, explained, not an error page
    again = risk.post_form(f"/office/accounts/{a1}/override", {"action": "clear_breach", "reason": "once more"})
    assert again.status_code == 303 and "not breached" in risk.get(f"/office/accounts/{a1}").text
    # the chart goes on after the cleared breach, as the account did
    world.ingest(equity("e2", "A1", "2026-03-02T11:00:00Z", "96500"))
    world.evaluate()
    assert world.status_of(a1) == "active"
    points = risk.get(f"/office/accounts/{a1}/series.json").json()["points"]
    assert [p["equity"] for p in points] == ["100000", "94000", "96500"]
    assert points[1]["decisions"] == ["breach: daily_loss"] and points[2]["decisions"] == []


def test_emergency_stop_then_lift_through_the_forms(world):
    a2 = world.accounts["A2"]
    admin = browse(world, "fa:admin")
    unconfirmed = admin.post_form(f"/office/accounts/{a2}/stop", {"reason": "takeover suspected"})
    assert unconfirmed.status_code == 303 and world.status_of(a2) == "active"
    admin.post_form(f"/office/accounts/{a2}/stop", {"reason": "takeover suspected", "confirm": "yes"})
    assert world.status_of(a2) == "suspended"
    assert world.audit("account.emergency_stop")[-1].after["reason"] == "takeover suspected"
    html = admin.get(f"/office/accounts/{a2}").text
    assert "Lift stop" in html and "emergency_stop" in html  # the form and the overrides list
    admin.post_form(f"/office/accounts/{a2}/override", {"action": "lift_stop", "reason": "owner verified"})
    assert world.status_of(a2) == "active"
    assert world.audit("account.lift_stop")[-1].after["reason"] == "owner verified"


def test_suspending_the_trader_stops_their_accounts(world):
    a1, a3 = world.accounts["A1"], world.accounts["A3"]
    risk = browse(world, "fa:risk")
    # without the confirmation box nothing happens (issue 16: "Suspend trader" had no confirmation)
    unconfirmed = risk.post_form(f"/office/accounts/{a1}/suspend-trader", {"reason": "chargeback fraud"})
    assert unconfirmed.status_code == 303 and world.status_of(a1) == "active"
    assert "tick the box" in risk.get(f"/office/accounts/{a1}").text
    response = risk.post_form(f"/office/accounts/{a1}/suspend-trader", {"reason": "chargeback fraud", "confirm": "yes"})
    assert response.status_code == 303
    assert world.status_of(a1) == "suspended" and world.status_of(a3) == "suspended"
    assert world.status_of(world.accounts["A2"]) == "active"
    assert "Trader suspended" in risk.get(f"/office/accounts/{a1}").text


# --------------------------------------------------------------------------------------------------
# the chart's series


def test_series_json_equals_the_engine_replayed_event_by_event(world):
    events = [
        opened("s1", "A1", "2026-03-02T09:00:00Z"),
        equity("s2", "A1", "2026-03-02T10:00:00Z", "99500"),
        equity("s3", "A1", "2026-03-02T11:00:00Z", "101200.25"),
        closed("s4", "A1", "2026-03-02T12:00:00Z", "1200.25"),
        equity("s5", "A1", "2026-03-03T09:00:00Z", "101200.25", balance="101200.25"),
        opened("s6", "A1", "2026-03-03T09:30:00Z", position="p2"),
        equity("s7", "A1", "2026-03-03T10:00:00Z", "97000", balance="101200.25"),
    ]
    world.ingest(*events)
    world.evaluate()
    a1 = world.accounts["A1"]
    doc = browse(world, "fa:finance").get(f"/office/accounts/{a1}/series.json").json()
    # the engine, by hand, on the same events
    with world.sessions() as s:
        account = s.get(m.Account, a1)
        program = account_service.compiled_pack(s.get(m.RulePackVersion, account.pack_version_id)).phase(account.phase)
        detail = account_service.account_detail(s, firm_id="fa", account_id=a1)
    engine = Engine(lambda name: program if name == "A1" else None, dedupe=False)
    expected = []
    for event in events:
        engine.feed([DECODER.decode(json.dumps(event).encode())])
        st = engine.states["A1"]
        summary = program.summary(st)
        expected.append((st.equity, st.balance, summary["daily_loss"]["level"], summary["max_loss"]["level"]))
    got = [(Decimal(p["equity"]), Decimal(p["balance"]),
            Decimal(p["daily_floor"]) if p["daily_floor"] else None, Decimal(p["max_loss"])) for p in doc["points"]]
    assert doc["count"] == doc["shown"] == len(events)
    assert got == [(e, b, d if d.is_finite() else None, x) for e, b, d, x in expected]
    # the last point is what the account page's figures say now
    last = doc["points"][-1]
    assert (last["equity"], last["balance"]) == (detail["equity"], detail["balance"])
    assert last["daily_floor"] == detail["daily_floor"]["level"] and last["max_loss"] == detail["max_loss_level"]["level"]
    assert doc["target"] == "110000" and [d["label"] for d in doc["datasets"]][-1] == "Target"
    assert doc["points"][1]["t"] == 1772445600000  # 2026-03-02T10:00:00Z in epoch ms
    assert any("warning" in text for p in doc["points"] for text in p["decisions"])


def test_downsampling_keeps_ends_extremes_and_decisions():
    points = [{"t": i, "equity": Decimal(100000 + (i * 7919) % 5000), "balance": Decimal(100000), "daily_floor": None,
               "max_loss": None, "decisions": []} for i in range(20_000)]
    points[12_345]["equity"] = Decimal(1)  # the deepest low
    points[777]["equity"] = Decimal(10**7)  # the highest high
    points[4_242]["decisions"] = [("breach", "max_loss")]
    shown = downsample(points, 2000)
    assert len(shown) <= 2000
    times = [p["t"] for p in shown]
    assert times == sorted(times) and times[0] == 0 and times[-1] == 19_999
    assert {12_345, 777, 4_242} <= set(times)


# --------------------------------------------------------------------------------------------------
# the live stream


def test_the_hub_delivers_only_what_each_stream_may_see():
    a1, a2, b1 = 1, 2, 3
    t1, t2 = 11, 12
    notes = [live.DecisionNote(id=i, firm_id=f, trader_id=t, account_id=a, external_id=x, kind="breach", rule="r",
                               message="m", ts="2026-03-02T10:00:00Z")
             for i, (f, t, a, x) in enumerate((("fa", t1, a1, "A1"), ("fa", t2, a2, "A2"), ("fb", None, b1, "B1")), 1)]
    rows = [live.AccountNote(id=a, firm_id=f, trader_id=t, row={"id": a, "status": "breached"})
            for f, t, a in (("fa", t1, a1), ("fa", t2, a2), ("fb", None, b1))]
    staff = live.Subscriber(live.Scope("fa", None), decisions="all", accounts=frozenset({a1, a2, b1}))
    trader = live.Subscriber(live.Scope("fa", t1), decisions="all", accounts=frozenset({a1, a2}))
    page = live.Subscriber(live.Scope("fa", None), decisions="accounts", accounts=frozenset({a2}))
    quiet = live.Subscriber(live.Scope("fa", None), decisions="", accounts=frozenset())
    other = live.Subscriber(live.Scope("fb", None), decisions="all", accounts=frozenset({a1, b1}))

    def got(sub):
        return [(event, data.get("account_id", data["id"])) for event, data in live.select_for(sub, notes, rows)]

    assert got(staff) == [("decision", a1), ("decision", a2), ("account", a1), ("account", a2)]
    assert got(trader) == [("decision", a1), ("account", a1)]
    assert got(page) == [("decision", a2), ("account", a2)]
    assert got(quiet) == []
    assert got(other) == [("decision", b1), ("account", b1)]
    assert live.parse_params("1", "3, 4,3") == ("all", frozenset({3, 4}))
    for bad in (("2", ""), ("1", "x"), ("1", ",".join(str(i) for i in range(1, 502)))):
        with pytest.raises(ValueError):
            live.parse_params(*bad)


def test_the_hub_reads_new_decisions_and_changed_rows_from_the_database(world):
    a1, a2 = world.accounts["A1"], world.accounts["A2"]
    hub = live.LiveHub(world.sessions)
    # the first poll sets the cursor and the baseline, and sends the rows as they are now: a page that just
    # subscribed loses no change made between its rendering and this poll (issue 16)
    decisions, accounts = hub.poll([a1, a2])
    assert decisions == [] and sorted((n.id, n.row["status"]) for n in accounts) == [(a1, "active"), (a2, "active")]
    assert hub.poll([a1, a2]) == ([], [])
    _breach_a1(world)
    decisions, accounts = hub.poll([a1, a2])
    assert {(d.account_id, d.kind) for d in decisions} >= {(a1, "breach")}
    assert all(d.firm_id == "fa" for d in decisions)
    assert [(n.id, n.row["status"]) for n in accounts] == [(a1, "breached")]
    assert accounts[0].row["equity"] == "94,000.00" and accounts[0].trader_id == world.traders["t1"]
    assert hub.poll([a1, a2]) == ([], [])
    # a status set by staff (no evaluation, no state write) is a change too
    browse(world, "fa:risk").post_form(f"/office/accounts/{a2}/stop", {"reason": "stop it", "confirm": "yes"})
    assert [(n.id, n.row["status"]) for n in hub.poll([a1, a2])[1]] == [(a2, "suspended")]


class QuietHub(live.LiveHub):
    def poll(self, wanted):  # the stream's own behaviour: news are dispatched by hand below
        return [], []


def test_a_stream_sends_events_a_heartbeat_and_ends_when_the_server_stops():
    async def scenario():
        hub = QuietHub(None, interval=0.05)
        sub = live.Subscriber(live.Scope("fa", None), decisions="all", accounts=frozenset())
        stopping = threading.Event()

        async def never():
            return False

        body = live.stream(hub, sub, never, heartbeat=0.1, tick=0.05, exiting=stopping.is_set)
        assert (await body.__anext__()).startswith("retry: 3000")
        assert sub in hub.subscribers and hub.task is not None
        hub.dispatch([live.DecisionNote(id=9, firm_id="fa", trader_id=None, account_id=1, external_id="A</script>",
                                        kind="breach", rule="max_loss", message="m", ts="t")], [])
        chunk = await body.__anext__()
        assert chunk.startswith("event: decision\ndata: ") and chunk.endswith("\n\n") and chunk.count("\n") == 3
        assert json.loads(chunk.split("data: ", 1)[1])["account"] == "A</script>"
        assert await body.__anext__() == ": keepalive\n\n"
        stopping.set()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(body.__anext__(), 2)
        assert sub not in hub.subscribers
        await hub.close()

    asyncio.run(scenario())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_propcrm_serve_exits_promptly_with_a_live_page_open(tmp_path):
    """Ctrl-C (SIGINT) with a page's stream open: uvicorn waits for open responses, so the stream must end
    by itself (SIGTERM goes through the same uvicorn handler)."""
    from propcrm.adapters.db.session import make_engine, migrate, sessions
    from propcrm.services import users
    from propcrm.services.catalog import ensure_firm

    url = f"sqlite:///{tmp_path / 'serve.db'}"
    migrate(url)
    engine = make_engine(url)
    with sessions(engine).begin() as s:
        ensure_firm(s, firm_id="fa")
        user = users.create_user(s, firm_id="fa", email="risk@fa.example", password="correct horse battery staple",
                                 role="risk")
        token, _ = users.issue_token(s, user=user)
    engine.dispose()
    port = _free_port()
    env = {**os.environ, "PROPCRM_ANALYSIS_INTERVAL": "3600"}
    env.pop("PROPCRM_NATS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-c", "from propcrm.cli import app; app()", "serve", "--no-demo", "--host", "127.0.0.1",
         "--port", str(port), "--database-url", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        first: list[bytes] = []
        opened_stream = threading.Event()

        def watch():
            try:
                with httpx.stream("GET", f"{base}/live?decisions=1", cookies={"propcrm_session": token},
                                  timeout=httpx.Timeout(30, read=30)) as response:
                    assert response.headers["content-type"].startswith("text/event-stream")
                    for chunk in response.iter_raw():
                        first.append(chunk)
                        opened_stream.set()
            except httpx.HTTPError:
                pass
            finally:
                opened_stream.set()

        reader = threading.Thread(target=watch, daemon=True)
        reader.start()
        assert opened_stream.wait(15) and first and first[0].startswith(b"retry:")
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
        print(f"serve exited {time.monotonic() - stopped_at:.2f} s after SIGINT")
        assert time.monotonic() - stopped_at < 6, "the server waited for the open stream"
        reader.join(5)
        assert not reader.is_alive(), "the stream did not end"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
