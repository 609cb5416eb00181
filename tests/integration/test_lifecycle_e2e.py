"""A trader's whole life through the API, in both deployments: embedded (SQLite and PostgreSQL, the
evaluation worker in the test's process) and scaled out (NATS JetStream and PostgreSQL: the API as the
ingest node publishing to the stream, a ``propcrm worker`` process evaluating, the dispatcher publishing
the payout's withdrawal and the scaling's carried profit to the stream).

A lead is captured and converted; the trader buys a challenge with a discount code (the payment
provider's signed webhook marks it paid and the challenge account is created); real trading events
(signed ``POST /api/v1/events``, evaluated by the worker) pass phase 1 and phase 2 and fund the
trader; KYC is approved by the provider's webhook; a payout request is refused because of an open
investigation case; the case is dismissed; the next request is prepared by one finance user, refused
to that same user's approval (maker-checker), approved by another, and recorded on the account as a
``balance`` payout event; the funded account trades on and is scaled to a bigger account whose limits
follow the new size. The trader's timeline and the firm's business numbers tell the story.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from propcrm.adapters.db import models as m
from propcrm.domain.rulepack import canonical_json
from support.lifecycle import add_user, life_pack, open_case, provider_key, signed_post
from support.staff import build_world, seed
from integration.test_cluster import bus, nats_url, pg_url  # noqa: F401 - fixtures of the scale-out variant

UTC = dt.timezone.utc
CASE_STATUS_ROUTE = "/api/v1/cases/{case_id}/status"


def _ok(response, status=200):
    assert response.status_code == status, response.text
    return response.json()


def _dismiss(world, case_id: int) -> None:
    """Dismiss through the cases API (issue 4's contract: risk or admin, a reason)."""
    _ok(world.client.post(CASE_STATUS_ROUTE.format(case_id=case_id),
                          json={"status": "dismissed", "reason": "same household, no coordination found"},
                          headers=world.headers("risk")))


def test_a_trader_buys_passes_gets_funded_is_paid_after_a_case_is_dismissed_and_is_scaled(world):
    _life(world, world.evaluate)


def test_the_same_life_in_the_scaled_out_deployment(pg_url, bus, tmp_path, monkeypatch):
    """The same story with ``PROPCRM_NATS_URL`` set: nothing goes through ``raw_events``."""
    import os

    from integration.test_cluster import _last_seq_per_partition, _start_worker, _stop, _tail
    from propcrm.adapters.db.models_cluster import DeadLetter, PartitionCheckpoint
    from propcrm.services.dispatch import build_dispatcher

    for key, value in bus.as_env().items():
        monkeypatch.setenv(key, value)
    _, world = build_world(pg_url)  # (the app reads the bus configuration when it is made)
    from propcrm.adapters.settings import Settings, install

    scale_out = Settings.from_env()  # what build_world's app installed
    install(Settings.from_env({k: v for k, v in scale_out.env.items() if k not in bus.as_env()}))
    seed(world)  # seed's quarantine fixture writes to the embedded log
    install(scale_out)
    monkeypatch.setenv("PROPCRM_SNAPSHOT_INTERVAL", "0.2")  # stored states follow the decisions quickly
    log = tmp_path / "worker.log"
    worker = _start_worker(pg_url, bus, log)

    def settle(timeout: float = 60.0) -> None:
        """What ``world.evaluate`` is embedded: the outbox's stream events published, then every message of
        the stream evaluated by the worker and its states stored."""
        import asyncio
        import time

        build_dispatcher(world.sessions, env=dict(os.environ)).run_once()
        targets = asyncio.run(_last_seq_per_partition(bus))
        began = time.monotonic()
        while True:
            with world.sessions() as s:
                points = {p: (seq, state_seq) for p, seq, state_seq in s.execute(
                    select(PartitionCheckpoint.partition, PartitionCheckpoint.seq, PartitionCheckpoint.state_seq)
                    .where(PartitionCheckpoint.stream == bus.stream))}
            if all(points.get(p, (0, 0))[0] >= seq and points[p][1] >= seq for p, seq in targets.items()):
                return
            if time.monotonic() - began > timeout:
                with world.sessions() as s:
                    letters = s.execute(select(DeadLetter.event_id, DeadLetter.reason)).all()
                raise AssertionError(f"not settled: {targets} vs {points}; dead letters {letters}\n{_tail(log)}")
            time.sleep(0.05)

    try:
        with world.client:  # the lifespan connects the ingest node to the stream
            _life(world, settle, bus=True)
        with world.sessions() as s:
            assert s.scalar(select(func.count()).select_from(m.RawEvent).where(m.RawEvent.status != "rejected")) == 0
            assert s.scalar(select(func.count()).select_from(DeadLetter)) == 0
        assert worker.poll() is None, _tail(log)
    finally:
        _stop([worker])


def _life(world, evaluate, *, bus: bool = False) -> None:
    c = world.client
    admin, finance, support, risk = (world.headers(r) for r in ("admin", "finance", "support", "risk"))
    second_finance = world.headers(add_user(world, firm="fa", role="finance", name="finance2"))

    # the firm's catalogue: a pack with payouts and scaling, a product, a discount code
    added = _ok(c.post("/api/v1/packs?activate=true", content=canonical_json(life_pack()),
                       headers={**admin, "Content-Type": "application/json"}), 201)
    version_id = added["id"] if "id" in added else added["version"]["id"]
    product = _ok(c.post("/api/v1/products", json={"name": "Challenge 10k", "pack_version_id": version_id,
                                                   "price": "99.00"}, headers=finance), 201)
    _ok(c.post("/api/v1/discount-codes", json={"code": "welcome10", "percent_off": "10"}, headers=finance), 201)

    # lead → trader → trader user
    lead = _ok(c.post("/api/v1/leads", json={"name": "Ada Trader", "email": "ada@traders.example", "source": "web",
                                             "consent": True, "consent_text": "e-mail me about my challenge"},
                      headers=support), 201)
    trader = _ok(c.post(f"/api/v1/leads/{lead['id']}/convert", headers=support), 201)
    assert trader["stage"] == "registered"
    me = world.headers(add_user(world, firm="fa", role="trader", name="ada", trader_id=trader["id"]))

    # an illegal transition is refused with the allowed ones
    refused = c.post(f"/api/v1/traders/{trader['id']}/transition", json={"to": "funded", "reason": "skip ahead"},
                     headers=risk)
    assert refused.status_code == 409 and set(refused.json()["allowed"]) == {"customer", "suspended", "terminated"}

    # the trader orders with a discount code; the payment provider says it is paid
    order = _ok(c.post("/api/v1/orders", json={"product_id": product["id"], "discount_code": "WELCOME10",
                                               "platform": "mt5"}, headers=me), 201)
    assert (order["list_price"], order["discount"], order["amount"], order["status"]) == ("99", "9.9", "89.1", "pending")
    payments = provider_key(world, platform="payments")
    paid = signed_post(world, "/api/v1/webhooks/payments",
                       {"order_id": order["id"], "status": "paid", "amount": "89.10", "provider_ref": "pi_1"}, payments)
    assert paid.status_code == 200, paid.text
    again = signed_post(world, "/api/v1/webhooks/payments",
                        {"order_id": order["id"], "status": "paid", "amount": "89.10", "provider_ref": "pi_1"}, payments)
    assert again.status_code == 200 and again.json()["account_id"] == paid.json()["account_id"]
    challenge = paid.json()["account_id"]
    assert _ok(c.get(f"/api/v1/traders/{trader['id']}", headers=me))["stage"] == "evaluation"
    with world.sessions() as s:
        commands = [o.payload for o in s.scalars(select(m.OutboxMessage).where(m.OutboxMessage.kind == "platform_command"))]
    assert any(p["command"] == "create_account" and p["account"] == "CH-%d" % order["id"] for p in commands)

    # real trading events pass phase 1, phase 2; the funded account trades
    mt5 = provider_key(world, platform="mt5")
    start = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(days=60)
    ext = f"CH-{order['id']}"

    def trade(account: str, day: int, profit: str, tag: str, hold: dt.timedelta = dt.timedelta(hours=1)) -> None:
        at = start + dt.timedelta(days=day, hours=10)
        lines = [
            {"id": f"{tag}-o", "type": "trade_opened", "account": account, "ts": at.isoformat(), "position": tag,
             "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.1"},
            {"id": f"{tag}-c", "type": "trade_closed", "account": account,
             "ts": (at + hold).isoformat(), "position": tag, "lots": "1", "price": "1.2",
             "profit": profit},
        ]
        body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        response = signed_post(world, "/api/v1/events", body, mt5)
        assert response.status_code == 200 and response.json()["rejected"] == 0, response.text
        evaluate()

    trade(ext, 0, "1000", "p1")
    trade(f"{ext}.phase-2", 1, "500", "p2")
    funded_ext = f"{ext}.phase-2.funded"
    trade(funded_ext, 2, "2000", "f1")
    with world.sessions() as s:
        funded = s.scalar(select(m.Account).where(m.Account.external_id == funded_ext))
        assert funded.status == "funded" and funded.trader_id == trader["id"]
        funded_id = funded.id
    assert _ok(c.get(f"/api/v1/traders/{trader['id']}", headers=me))["stage"] == "funded"

    # KYC from the provider's webhook
    kyc = provider_key(world, platform="kyc")
    _ok(signed_post(world, "/api/v1/webhooks/kyc", {"trader_id": trader["id"], "status": "approved",
                                                     "reference": "idv-77", "reason": "passport verified"}, kyc))

    # an open case on the challenge account (linked by lineage): the request is refused, with the reason
    case_id = open_case(world, firm="fa", account_ids=[challenge])
    first = _ok(c.post("/api/v1/payouts", json={"account_id": funded_id}, headers=me), 201)
    assert first["status"] == "refused"
    assert [f["name"] for f in first["failed_checks"]] == ["no_open_case"]
    assert f"case {case_id}" in first["failed_checks"][0]["reason"]

    # dismissed → the next request passes every check and shows the amount step by step
    _dismiss(world, case_id)
    second = _ok(c.post("/api/v1/payouts", json={"account_id": funded_id}, headers=me), 201)
    assert second["status"] == "requested" and all(check["ok"] for check in second["checks"])
    assert second["trader_amount"] == "1600" and second["withdrawal"] == "2000"
    assert [s["label"] for s in second["steps"]][:2] == ["profit since the last payout", "deducted profit (penalties)"]
    duplicate = c.post("/api/v1/payouts", json={"account_id": funded_id}, headers=me).json()
    assert duplicate["status"] == "refused" and "no_open_request" in [f["name"] for f in duplicate["failed_checks"]]

    # maker-checker
    _ok(c.post(f"/api/v1/payouts/{second['id']}/prepare", json={}, headers=finance))
    same = c.post(f"/api/v1/payouts/{second['id']}/approve", headers=finance)
    assert same.status_code == 409 and "maker-checker" in same.json()["error"]
    approved = _ok(c.post(f"/api/v1/payouts/{second['id']}/approve", headers=second_finance))
    assert approved["status"] == "approved" and approved["trader_amount"] == "1600"

    # the withdrawal is a balance event with reason payout; the account is back at its initial balance
    evaluate()
    if bus:  # through the stream: applied once by the worker, audited with its stream position
        from propcrm.services.payouts import WITHDRAWAL_APPLIED

        [applied_once] = world.audit(WITHDRAWAL_APPLIED)
        assert applied_once.entity_id == str(second["id"]) and applied_once.after["event"] == f"payout-{second['id']}"
    else:
        with world.sessions() as s:
            event = s.scalar(select(m.RawEvent).where(m.RawEvent.event_id == f"payout-{second['id']}"))
            assert event.status == "applied" and json.loads(event.body)["reason"] == "payout"
            assert json.loads(event.body)["amount"] == "-2000"
    detail = _ok(c.get(f"/api/v1/accounts/{funded_id}", headers=me))
    assert detail["status"] == "funded" and detail["balance"] == "10000"
    assert detail["max_loss_level"]["level"] == "9000"  # the trailing level moved down with the withdrawal
    again = _ok(c.get(f"/api/v1/accounts/{funded_id}/payout-eligibility", headers=me))
    assert not again["eligible"] and {f["name"] for f in again["failed_checks"]} >= {"profit", "min_trading_days"}

    # trading after the payout, then scaling (queued for approval, the firm's default)
    later = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(hours=2)  # events are never from the future
    hold = dt.timedelta(hours=1)
    if bus:  # the stream cannot be searched: the withdrawal was stamped at the approval, and an account's
        # events older than it would be refused as out of order (services/payouts.py withdrawal_ts)
        from propcrm.services.evaluation import STATE_DECODER as DECODE_STATE

        with world.sessions() as s:
            later = DECODE_STATE.decode(s.get(m.AccountState, funded_id).state).last_ts + dt.timedelta(seconds=1)
        hold = dt.timedelta(seconds=1)
    start = later - dt.timedelta(days=2, hours=10)
    trade(funded_ext, 2, "300", "f2", hold)
    review = _ok(c.get(f"/api/v1/accounts/{funded_id}/scaling", headers=me))
    assert review["eligible"], review["failed_checks"]
    queued = _ok(c.post(f"/api/v1/accounts/{funded_id}/scale", headers=risk), 201)
    assert queued["status"] == "pending" and (queued["from_size"], queued["to_size"]) == ("10000", "12500")
    applied = _ok(c.post(f"/api/v1/scalings/{queued['id']}/approve", headers=risk))
    assert applied["status"] == "applied" and applied["to_split"] == "90" and applied["carried_profit"] == "300"
    # the carried profit keeps the split it was earned at (80%), not the scaled account's 90%
    assert applied["carried_parts"] == [{"amount": "300", "split_pct": "80", "source": funded_ext}]
    evaluate()
    bigger = _ok(c.get(f"/api/v1/accounts/{applied['new_account_id']}", headers=me))
    assert bigger["external_id"] == f"{ext}.s1" and bigger["initial_balance"] == "12500"
    assert bigger["balance"] == "12800"  # the unpaid profit came along
    assert {limit["rule"]: limit["level"] for limit in bigger["limits"]}["max_loss"] == "11550"  # 12,800 − 1,250 trailing
    assert _ok(c.get(f"/api/v1/accounts/{funded_id}", headers=me))["status"] == "closed"

    # the trader's timeline: what was sent to them, in one place; staff notes stay with staff
    _ok(c.post(f"/api/v1/traders/{trader['id']}/notes", json={"text": "called about payout timing"}, headers=support),
        201)
    _ok(c.post(f"/api/v1/traders/{trader['id']}/messages", json={"subject": "Payout", "text": "When?"}, headers=me), 201)
    mine = _ok(c.get(f"/api/v1/traders/{trader['id']}/timeline", headers=me))
    subjects = " | ".join(item["subject"] for item in mine)
    for expected in ("Order", "Payout request", "approved", "scaled", "phase_passed", "Payout"):
        assert expected in subjects, subjects
    assert all(item["kind"] != "note" for item in mine)
    assert any(item["kind"] == "note" for item in _ok(c.get(f"/api/v1/traders/{trader['id']}/timeline",
                                                             headers=support)))

    # the owner's numbers
    numbers = _ok(c.get("/api/v1/metrics/business", headers=finance))
    rates = {(row["product_id"], row["phase"]): row for row in numbers["pass_rates"]}
    assert rates[(product["id"], "phase-1")]["pass_rate"] == "1.0000"
    assert numbers["payouts"] == {"paid": "1600", "challenge_revenue": "89.1", "payout_ratio": "17.9574"}
    assert numbers["open_liability"]["total"] == "240"  # 300 carried to the scaled account × 80%, its split then
    owed = _ok(c.get(f"/api/v1/accounts/{applied['new_account_id']}/payout-eligibility", headers=me))
    assert owed["trader_amount"] == "240"
    steps = {step["label"]: (step["amount"], step["note"]) for step in owed["steps"]}
    assert steps[f"carried over from {funded_ext} at 80%"] == ("240", "300.00 × 80% = 240.00")
    assert steps["earned since scaling at 90%"] == ("0", "0.00 × 90% = 0.00")

    # the funded account's trades as projected (both deployments): the four trades, payout or not
    trades = _ok(c.get(f"/api/v1/trades?account_id={funded_id}", headers=finance))["items"]
    assert [(t["position"], t["status"], t["profit"].split(".")[0]) for t in trades] == [
        ("f1", "closed", "2000"), ("f2", "closed", "300")]

    # every step is in the audit chain, and the chain holds
    actions = {e.action for e in world.audit("payout.approved") + world.audit("account.scale")
               + world.audit("trader.stage") + world.audit("order.paid")}
    assert actions == {"payout.approved", "account.scale", "trader.stage", "order.paid"}
    from propcrm.services.audit import verify

    with world.sessions() as s:
        assert verify(s).ok
    if bus:
        return  # (the scale-out replay equality is tests/integration/test_cluster.py's kill test)

    # the funded account's history, payout withdrawal included, replays to the stored state and decisions
    from propcrm.domain.decisions import ENCODER
    from propcrm.domain.events import DECODER
    from propcrm.domain.program import compile_pack
    from propcrm.engine.runner import Engine
    from propcrm.services.evaluation import STATE_DECODER

    with world.sessions() as s:
        bodies = s.scalars(select(m.RawEvent.body).where(m.RawEvent.account_id == funded_id).order_by(m.RawEvent.seq))
        events = [DECODER.decode(b) for b in bodies]
        stored_state = STATE_DECODER.decode(s.get(m.AccountState, funded_id).state)
        stored = [d.body for d in s.scalars(select(m.Decision).where(m.Decision.account_id == funded_id)
                                            .order_by(m.Decision.id))]
    engine = Engine(compile_pack(life_pack()), phase="funded")
    replayed = engine.feed(events)
    assert [ENCODER.encode(d) for d in replayed] == stored
    assert engine.states[funded_ext] == stored_state
