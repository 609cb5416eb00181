"""A finance lead's and risk officer's review of payouts and the lifecycle, on SQLite and PostgreSQL:
each test is an attempt to pay what the rules do not allow, to approve one's own payout, to replay a
provider's news or to show a trader what is not theirs, that once succeeded."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from propcrm.adapters.db.models_analytics import Case
from propcrm.services import users
from support.lifecycle import approve_kyc, funded_account, open_case, provider_key, signed_post
from support.routes_lifecycle import _life, _product
from support.staff import PASSWORD


def _finance(world, name: str, email: str | None = None) -> dict[str, str]:
    with world.sessions.begin() as s:
        user = users.create_user(s, firm_id="fa", email=email or f"{name}@fa.example", password=PASSWORD,
                                 role="finance")
        world.tokens[f"fa:{name}"], _ = users.issue_token(s, user=user)
    return world.headers(f"fa:{name}")


def test_a_refused_preparation_leaves_the_prepared_amount_and_its_approvers_alone(world):
    """Maker-checker bypass: a preparer re-prepared an already prepared payout without the deduction
    while the account was briefly ineligible; the refusal (409) was committed with the new, larger
    amount and the old approval count, so one approver then paid an amount that needed two."""
    version = _life(world)
    approve_kyc(world.sessions, world.traders["t1"])
    assert world.client.post("/api/v1/lifecycle/settings", json={"dual_approval_over": "100"},
                             headers=world.headers("admin")).status_code == 200
    finance, f2 = world.headers("finance"), _finance(world, "f2")
    account = funded_account(world.sessions, firm="fa", version_id=version, external_id="MC1",
                             trader_id=world.traders["t1"], balance=Decimal("10500"))
    payout = world.client.post("/api/v1/payouts", json={"account_id": account}, headers=finance).json()
    assert payout["trader_amount"] == "400"
    small = world.client.post(f"/api/v1/payouts/{payout['id']}/prepare",
                              json={"deduction": "400", "deduction_reason": "chargeback on the challenge fee"},
                              headers=finance).json()
    assert (small["trader_amount"], small["approvals_needed"]) == ("80", 1)
    case = open_case(world, firm="fa", account_ids=[account])
    again = world.client.post(f"/api/v1/payouts/{payout['id']}/prepare", json={}, headers=finance)
    assert again.status_code == 409 and "no_open_case" in again.json()["allowed"]
    seen = world.client.get(f"/api/v1/payouts/{payout['id']}", headers=finance).json()
    assert (seen["status"], seen["trader_amount"], seen["deduction"], seen["approvals_needed"]) == \
        ("prepared", "80", "400", 1)
    with world.sessions.begin() as s:
        s.get(Case, case).status = "dismissed"
    paid = world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=f2).json()
    assert (paid["status"], paid["trader_amount"], paid["approvals_needed"]) == ("approved", "80", 1)


def test_a_finance_user_who_is_the_trader_neither_prepares_nor_approves_their_own_payout(world):
    """Staff users are not linked to traders, so the only tie is the e-mail address: a finance
    employee trading at the firm under the same address approved their own payout."""
    version = _life(world)
    approve_kyc(world.sessions, world.traders["t1"])
    finance, f2 = world.headers("finance"), _finance(world, "f2")
    own = _finance(world, "t1self", email="T1@traders.example")  # the trader t1's address
    account = funded_account(world.sessions, firm="fa", version_id=version, external_id="SELF",
                             trader_id=world.traders["t1"], balance=Decimal("10500"))
    payout = world.client.post("/api/v1/payouts", json={"account_id": account}, headers=finance).json()
    refused = world.client.post(f"/api/v1/payouts/{payout['id']}/prepare", json={}, headers=own)
    assert refused.status_code == 409 and "your own payout" in refused.json()["error"]
    assert world.client.post(f"/api/v1/payouts/{payout['id']}/prepare", json={}, headers=finance).status_code == 200
    refused = world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=own)
    assert refused.status_code == 409 and "your own payout" in refused.json()["error"]
    assert world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=f2).json()["status"] == "approved"


def test_a_refunded_challenge_closes_the_funded_account_it_led_to(world):
    """Refund after funding: the provider's refund closed only CH-<order> (already passed), and the
    funded account CH-<order>.funded stayed payable: the trader got the fee back and kept being paid."""
    payments = provider_key(world, platform="payments")
    approve_kyc(world.sessions, world.traders["t1"])
    order = world.client.post("/api/v1/orders", json={"product_id": _product(world)},
                              headers=world.headers("trader")).json()
    body = {"order_id": order["id"], "status": "paid", "amount": "99"}
    assert signed_post(world, "/api/v1/webhooks/payments", body, payments).status_code == 200
    funded = funded_account(world.sessions, firm="fa", version_id=_life(world),
                            external_id=f"CH-{order['id']}.phase-2.funded", trader_id=world.traders["t1"],
                            balance=Decimal("10500"))
    me = world.headers("trader")
    assert world.client.get(f"/api/v1/accounts/{funded}/payout-eligibility", headers=me).json()["eligible"]
    refunded = signed_post(world, "/api/v1/webhooks/payments", {**body, "status": "refunded", "reason": "chargeback"},
                           payments)
    assert refunded.status_code == 200 and refunded.json()["status"] == "refunded"
    assert world.status_of(funded) == "closed"
    asked = world.client.post("/api/v1/payouts", json={"account_id": funded}, headers=me).json()
    assert asked["status"] == "refused" and "funded_and_active" in [c["name"] for c in asked["failed_checks"]]


def test_a_replayed_kyc_approval_does_not_undo_a_later_rejection(world):
    """Replay: the same signed ``approved`` delivered again inside the 5-minute window turned a
    rejection made meanwhile back into an approval, and the payout compliance check passed."""
    kyc = provider_key(world, platform="kyc")
    t1 = world.traders["t1"]
    stamp = int(time.time())
    approved = {"trader_id": t1, "status": "approved", "reference": "idv-9"}
    assert signed_post(world, "/api/v1/webhooks/kyc", approved, kyc, ts=stamp).status_code == 200
    rejected = world.client.post(f"/api/v1/traders/{t1}/kyc", json={"status": "rejected", "reason": "forged passport"},
                                 headers=world.headers("risk"))
    assert rejected.json()["kyc"]["status"] == "rejected"
    replay = signed_post(world, "/api/v1/webhooks/kyc", approved, kyc, ts=stamp)
    assert replay.status_code == 200 and replay.json()["duplicate"] is True  # a retry is answered, not failed
    assert replay.json()["kyc"]["status"] == "rejected"
    seen = world.client.get(f"/api/v1/traders/{t1}", headers=world.headers("risk")).json()
    assert seen["kyc"]["status"] == "rejected"
    # the provider's genuinely new news (a new signature) still counts
    assert signed_post(world, "/api/v1/webhooks/kyc", {**approved, "reference": "idv-10"}, kyc,
                       ts=stamp + 1).json()["kyc"]["status"] == "approved"


def test_a_trader_never_reads_the_investigation_behind_a_blocked_payout(world):
    """A case's title is the risk team's working text and may name other traders; the payout check
    the trader reads (eligibility, the stored refusal, the notification) said it verbatim."""
    version = _life(world)
    approve_kyc(world.sessions, world.traders["t1"])
    account = funded_account(world.sessions, firm="fa", version_id=version, external_id="INV",
                             trader_id=world.traders["t1"], balance=Decimal("10500"))
    secret = "ring with t2@traders.example, same device"
    case = open_case(world, firm="fa", account_ids=[account, world.accounts["A2"]], title=secret)
    me = world.headers("trader")
    seen = world.client.get(f"/api/v1/accounts/{account}/payout-eligibility", headers=me).json()
    assert [c["name"] for c in seen["failed_checks"]] == ["no_open_case"]
    asked = world.client.post("/api/v1/payouts", json={"account_id": account}, headers=me).json()
    timeline = world.client.get(f"/api/v1/traders/{world.traders['t1']}/timeline", headers=me).json()
    for text in (str(seen), str(asked), str(timeline)):
        assert secret not in text and "t2@" not in text
    staff = world.client.get(f"/api/v1/accounts/{account}/payout-eligibility", headers=world.headers("risk")).json()
    assert f"case {case}" in staff["failed_checks"][0]["reason"]


def test_a_trader_reads_their_scaling_without_staff_names_or_case_titles(world):
    """``GET /accounts/{id}/scaling`` (a trader's own) listed each scaling's ``actor`` (the risk
    officer's user and e-mail) and the review's ``no_open_case`` check quoted the case title."""
    from support.routes_lifecycle import _scalable

    account = int(_scalable(world))
    queued = world.client.post(f"/api/v1/accounts/{account}/scale", headers=world.headers("risk"))
    assert queued.status_code == 201 and queued.json()["status"] == "pending"
    secret = "same device as t2@traders.example"
    open_case(world, firm="fa", account_ids=[account], title=secret)
    me = world.headers("trader")
    seen = world.client.get(f"/api/v1/accounts/{account}/scaling", headers=me)
    assert seen.status_code == 200 and seen.json()["history"]
    assert "no_open_case" in [c["name"] for c in seen.json()["failed_checks"]]
    assert "risk@fa.example" not in str(seen.json()) and secret not in str(seen.json())
    assert all(item["actor"] is None for item in seen.json()["history"])
    staff = world.client.get(f"/api/v1/accounts/{account}/scaling", headers=world.headers("risk")).json()
    assert "risk@fa.example" in staff["history"][0]["actor"]


@pytest.mark.parametrize("path, body", [
    ("/api/v1/lifecycle/settings", {"dual_approval_over": "1e30"}),
    ("/api/v1/discount-codes", {"code": "HUGE", "amount_off": "1e30"}),
])
def test_an_amount_too_large_to_store_is_a_named_422_not_a_500(world, path, body):
    who = world.headers("admin")
    got = world.client.post(path, json=body, headers=who)
    assert got.status_code == 422, got.text
    assert next(iter(k for k in body if k != "code")) in got.json()["error"]


def test_a_deduction_is_an_amount_in_cents_that_can_be_stored(world):
    """A deduction beyond 8 decimals was frozen unrounded but stored rounded on PostgreSQL
    (NUMERIC(24, 8)), so the approval's recomputation never matched ("prepare it again", forever); one
    of 1e30 was not named as the deduction's fault. Deductions are money: to the cent."""
    version = _life(world)
    approve_kyc(world.sessions, world.traders["t1"])
    finance = world.headers("finance")
    account = funded_account(world.sessions, firm="fa", version_id=version, external_id="DED",
                             trader_id=world.traders["t1"], balance=Decimal("10500"))
    payout = world.client.post("/api/v1/payouts", json={"account_id": account}, headers=finance).json()
    for amount in ("1e30", "0.000000001", "0.001", "-1", "NaN"):
        got = world.client.post(f"/api/v1/payouts/{payout['id']}/prepare",
                                json={"deduction": amount, "deduction_reason": "wire fee"}, headers=finance)
        assert got.status_code == 422 and "deduction" in got.json()["error"], (amount, got.text)
    ok = world.client.post(f"/api/v1/payouts/{payout['id']}/prepare",
                           json={"deduction": "0.01", "deduction_reason": "wire fee"}, headers=finance).json()
    assert ok["trader_amount"] == "399.99"  # (500 − 0.01) × 80% = 399.992 → rounded down


def test_lifecycle_commands_answer_an_impossible_id_without_a_traceback(world, db_url):
    from typer.testing import CliRunner

    from propcrm.cli import app

    for args in (["trader", str(2**70)], ["eligibility", str(2**70)]):
        result = CliRunner().invoke(app, ["lifecycle", *args, "--firm", "fa", "--database-url", db_url])
        assert result.exit_code == 2 and "Invalid value" in result.output, (args, result.output, result.exception)


def test_reading_a_trader_while_the_worker_commits_does_not_fail(world, monkeypatch):
    """GET requests run in a deferred (read) transaction on SQLite; ``GET /traders/{id}`` caught the
    trader's stage up (and ``GET …/payout-eligibility`` expired KYC) by writing in it, and a write
    that follows another connection's commit fails at once: 503 "storage busy" whenever the
    evaluation worker committed during the page load."""
    from sqlalchemy import update

    from propcrm.adapters.db import models as m
    from propcrm.services import lifecycle as service

    t1, risk = world.traders["t1"], world.headers("risk")
    assert world.client.get(f"/api/v1/traders/{t1}", headers=risk).json()["stage"] == "evaluation"
    real, calls = service.derived_stage, []

    def meanwhile(session, trader):  # the worker commits while the request reads (once)
        if not calls:
            with world.sessions.begin() as other:
                other.execute(update(m.Firm).where(m.Firm.id == "fb").values(name="busy"))
        calls.append(1)
        return real(session, trader)

    with world.sessions.begin() as s:  # a fact the stored stage does not know yet
        s.execute(update(m.Account).where(m.Account.trader_id == t1).values(status="breached"))
    monkeypatch.setattr(service, "derived_stage", meanwhile)
    seen = world.client.get(f"/api/v1/traders/{t1}", headers=risk)
    assert seen.status_code == 200 and seen.json()["stage"] == "failed", seen.text
    # a KYC approval that has expired: the eligibility page (a read) still answers, and says so
    version = _life(world)
    account = funded_account(world.sessions, firm="fa", version_id=version, external_id="KYCX",
                             trader_id=t1, balance=Decimal("10500"))
    signed_post(world, "/api/v1/webhooks/kyc", {"trader_id": t1, "status": "approved",
                                                "expires_at": "2020-01-01T00:00:00Z"},
                provider_key(world, platform="kyc"))
    real_cleared = service.kyc_cleared

    cleared_calls = []

    def busy_cleared(session, trader, **kw):
        if not cleared_calls:
            with world.sessions.begin() as other:
                other.execute(update(m.Firm).where(m.Firm.id == "fb").values(name="busier"))
        cleared_calls.append(1)
        return real_cleared(session, trader, **kw)

    monkeypatch.setattr("propcrm.services.payouts.kyc_cleared", busy_cleared)
    check = world.client.get(f"/api/v1/accounts/{account}/payout-eligibility", headers=world.headers("trader"))
    assert check.status_code == 200, check.text
    compliance = next(c for c in check.json()["checks"] if c["name"] == "compliance")
    assert not compliance["ok"] and "expired" in compliance["reason"]


def test_a_penalty_is_deducted_from_one_payout_only_when_the_pack_keeps_the_counter(world):
    """A pack whose ``payout.resets`` leaves out ``deductions`` (to keep, say, the best day) kept the
    news penalty in the engine's counter after the payout that deducted it: the next payout deducted
    it again from profit made later — the trader paid the same penalty twice."""
    from propcrm.services.catalog import add_pack, create_account
    from support.lifecycle import LIFE_PACK

    from propcrm.domain.rulepack import parse_pack

    body = LIFE_PACK.replace("id: life-10k", "id: life-keep").replace(
        "split_tiers: [{after_payouts: 3, split: 85}]}", "split_tiers: [{after_payouts: 3, split: 85}],\n"
        "             resets: [trading_days, best_day]}")
    with world.sessions.begin() as s:
        version = add_pack(s, firm_id="fa", pack=parse_pack(body), activate=True).id
    approve_kyc(world.sessions, world.traders["t1"])
    with world.sessions.begin() as s:
        account = create_account(s, firm_id="fa", external_id="KEEP1", pack_version_id=version, phase="funded",
                                 trader_id=world.traders["t1"]).id
    world.ingest(
        {"id": "nfp", "type": "news", "ts": "2026-03-06T13:30:00Z", "title": "US Non-Farm Payrolls",
         "currency": "USD", "impact": "high"},
        {"id": "k-o", "type": "trade_opened", "account": "KEEP1", "ts": "2026-03-06T13:29:00Z", "position": "p1",
         "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08"},
        {"id": "k-c", "type": "trade_closed", "account": "KEEP1", "ts": "2026-03-06T15:00:00Z", "position": "p1",
         "lots": "1", "price": "1.09", "profit": "1000"},
    )
    world.evaluate()
    me, finance, f2 = world.headers("trader"), world.headers("finance"), _finance(world, "f2")
    first = world.client.post("/api/v1/payouts", json={"account_id": account}, headers=me).json()
    assert (first["penalties"], first["trader_amount"]) == ("500", "400")
    world.client.post(f"/api/v1/payouts/{first['id']}/prepare", json={}, headers=finance)
    assert world.client.post(f"/api/v1/payouts/{first['id']}/approve", headers=f2).json()["status"] == "approved"
    world.evaluate()
    world.ingest(
        {"id": "k-o2", "type": "trade_opened", "account": "KEEP1", "ts": "2026-03-09T10:00:00Z", "position": "p2",
         "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08"},
        {"id": "k-c2", "type": "trade_closed", "account": "KEEP1", "ts": "2026-03-09T11:00:00Z", "position": "p2",
         "lots": "1", "price": "1.083", "profit": "300"},
    )
    world.evaluate()
    after = world.client.get(f"/api/v1/accounts/{account}/payout-eligibility", headers=me).json()
    steps = {step["label"]: step["amount"] for step in after["steps"]}
    assert steps["profit since the last payout"] == "300"
    assert steps["deducted profit (penalties)"] == "0" and after["trader_amount"] == "240", after


def test_two_catch_ups_of_one_trader_at_once_record_each_stage_change_once(world, monkeypatch):
    """Two requests reading (or ordering for) one trader at the same time both walked the trader's
    stage on PostgreSQL: each transition was recorded and audited twice (nothing locked the trader)."""
    import threading

    from sqlalchemy import func, select, update

    from propcrm.adapters.db import models as m
    from propcrm.adapters.db.models_lifecycle import StageChange
    from propcrm.services import lifecycle as service

    t1 = world.traders["t1"]
    with world.sessions.begin() as s:
        service.sync(s, firm_id="fa", trader_id=t1)
    with world.sessions.begin() as s:
        s.execute(update(m.Account).where(m.Account.trader_id == t1).values(status="breached"))
    barrier, real = threading.Barrier(2), service.derived_stage

    def in_step(session, trader):  # both requests have read the stage before either writes
        try:
            barrier.wait(timeout=2)
        except threading.BrokenBarrierError:
            pass
        return real(session, trader)

    monkeypatch.setattr(service, "derived_stage", in_step)
    errors = []

    def catch_up():
        try:
            with world.sessions.begin() as s:
                service.sync(s, firm_id="fa", trader_id=t1)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=catch_up) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    with world.sessions.begin() as s:
        moves = s.scalar(select(func.count()).select_from(StageChange).where(
            StageChange.trader_id == t1, StageChange.to_stage == "failed"))
    assert moves == 1


def test_the_approval_of_a_user_disabled_since_does_not_complete_a_dual_approval(world):
    """An approver disabled after approving (left the firm, or suspected) still counted: the next
    approval alone paid a payout that needs two current finance users."""
    from propcrm.adapters.db import models as m

    version = _life(world)
    approve_kyc(world.sessions, world.traders["t1"])
    world.client.post("/api/v1/lifecycle/settings", json={"dual_approval_over": "100"}, headers=world.headers("admin"))
    finance, f2, f3, f4 = world.headers("finance"), _finance(world, "f2"), _finance(world, "f3"), _finance(world, "f4")
    account = funded_account(world.sessions, firm="fa", version_id=version, external_id="GONE",
                             trader_id=world.traders["t1"], balance=Decimal("10500"))
    payout = world.client.post("/api/v1/payouts", json={"account_id": account}, headers=finance).json()
    assert world.client.post(f"/api/v1/payouts/{payout['id']}/prepare", json={},
                             headers=finance).json()["approvals_needed"] == 2
    assert world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=f2).json()["approvals"] == 1
    with world.sessions.begin() as s:
        s.scalar(select_user(m, "f2@fa.example")).active = False
    third = world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=f3).json()
    assert (third["status"], third["approvals"]) == ("prepared", 1)
    assert world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=f4).json()["status"] == "approved"


def select_user(m, email):
    from sqlalchemy import select

    return select(m.User).where(m.User.email == email)


@pytest.mark.parametrize("path, platform, document", [
    ("/api/v1/webhooks/kyc", "kyc", {"trader_id": 2**70, "status": "approved"}),
    ("/api/v1/webhooks/payments", "payments", {"order_id": 2**70, "status": "paid", "amount": "99"}),
    ("/api/v1/webhooks/payments", "payments", {"order_id": 0, "status": "paid", "amount": "99"}),
])
def test_a_provider_id_out_of_range_is_a_named_422(world, path, platform, document):
    """An id beyond 64 bits was a 500 on SQLite (OverflowError binding it) and an unnamed 422 on PostgreSQL."""
    got = signed_post(world, path, document, provider_key(world, platform=platform))
    assert got.status_code == 422 and next(iter(document)) in got.json()["error"], got.text


def test_in_the_scale_out_deployment_the_withdrawal_is_queued_for_the_stream_not_the_embedded_log(world, monkeypatch):
    """With PROPCRM_NATS_URL set the event log is the stream: the last approval commits the withdrawal as
    a ``bus_event`` outbox row (the dispatcher publishes it; tests/integration/test_cluster_payouts.py
    follows it to the worker), nothing is written to ``raw_events``, and a second approval pays nothing."""
    from sqlalchemy import func, select

    from propcrm.adapters.db import models as m

    version = _life(world)
    approve_kyc(world.sessions, world.traders["t1"])
    finance, f2 = world.headers("finance"), _finance(world, "f2")
    account = funded_account(world.sessions, firm="fa", version_id=version, external_id="BUS1",
                             trader_id=world.traders["t1"], balance=Decimal("10500"))
    payout = world.client.post("/api/v1/payouts", json={"account_id": account}, headers=finance).json()
    assert world.client.post(f"/api/v1/payouts/{payout['id']}/prepare", json={}, headers=finance).status_code == 200
    from propcrm.adapters.settings import Settings, install

    install(Settings.from_env({"PROPCRM_NATS_URL": "nats://127.0.0.1:4222"}))  # a scale-out deployment's process
    paid = world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=f2)
    assert paid.status_code == 200 and paid.json()["status"] == "approved", paid.text
    with world.sessions() as s:
        assert s.scalar(select(func.count()).select_from(m.RawEvent).where(
            m.RawEvent.event_id == f"payout-{payout['id']}")) == 0
        [row] = s.scalars(select(m.OutboxMessage).where(m.OutboxMessage.kind == "bus_event")).all()
    assert row.dedupe_key == f"payout:{payout['id']}:withdrawal" and row.payload["event_id"] == f"payout-{payout['id']}"
    assert '"amount": "-500"' in row.payload["line"] and row.payload["account"] == "BUS1"
    again = world.client.post(f"/api/v1/payouts/{payout['id']}/approve", headers=world.headers("admin"))
    assert again.status_code == 409
    check = world.client.get(f"/api/v1/accounts/{account}/payout-eligibility", headers=finance).json()
    settled = next(c for c in check["checks"] if c["name"] == "settled")
    assert not settled["ok"] and "is pending" in settled["reason"]  # until the worker has applied it


def test_the_payout_review_runs_the_abuse_analysis_first(world):
    """Two traders log in from one device; no background analysis has run yet. Preparing the payout
    (the finance review) brings the analysis up to the last stored event, which opens the linkage
    case, and the case holds the payout now rather than at the next background pass."""
    from sqlalchemy import func, select

    from propcrm.adapters.db import models as m
    from propcrm.services.evaluation import EvaluationWorker
    from propcrm.services.ingest import ingest

    version = _life(world)
    approve_kyc(world.sessions, world.traders["t1"])
    finance = world.headers("finance")
    account = funded_account(world.sessions, firm="fa", version_id=version, external_id="LNK1",
                             trader_id=world.traders["t1"], balance=Decimal("10500"))
    other = world.new_account(trader="t2")
    with world.sessions.begin() as s:
        names = {account: "LNK1", other: s.get(m.Account, other).external_id}
        lines = [f'{{"id":"s-{n}","type":"session","account":"{name}","ts":"2026-01-06T08:0{n}:00Z",'
                 f'"ip":"203.0.113.{10 + n}","device":"dev-7f3a9c"}}'
                 for n, name in enumerate(names.values())]
        ingest(s, firm_id="fa", source="mt5", body="\n".join(lines).encode())
    EvaluationWorker(world.sessions).run_until_idle(firm_id="fa")
    with world.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 0  # nothing has analysed the logins yet
    payout = world.client.post("/api/v1/payouts", json={"account_id": account}, headers=finance).json()
    refused = world.client.post(f"/api/v1/payouts/{payout['id']}/prepare", json={}, headers=finance)
    assert refused.status_code == 409 and "no_open_case" in refused.json()["allowed"], refused.text
    with world.sessions() as s:
        case = s.scalars(select(Case)).one()
        assert case.detector == "linkage" and case.status == "open"
