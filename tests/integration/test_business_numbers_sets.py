"""``services.business.business_numbers`` and ``services.payouts.open_liability`` read sets (accounts counted per
product and phase in SQL, funded accounts' states in chunks, each pack compiled once), and give exactly the
numbers of the straightforward per-account computation below (the code they replaced), on both backends — on
a mixed firm: several products and pack versions, every phase, first outcomes in either order, funded accounts
with gains, losses and deducted profit, approved payouts (split tiers, penalties already deducted), scalings
that carried profit over (with and without their parts), and another firm's rows that must not count.

The web pages' cached copies (``business.cached_numbers``, ``cached_liability``) are the reference's figures too,
computed again as soon as the firm's audit log, decisions or accounts move (the marker is read from the database, so
a change in any process counts), after the TTL otherwise, and never shared between firms or databases.

Also: the web indexes of migration 0008 exist after migrating and agree with the models."""

from __future__ import annotations

import datetime as dt
import json
import statistics
from decimal import ROUND_HALF_EVEN, Decimal

import msgspec
import pytest
from sqlalchemy import func, select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import Order, Payout, Scaling
from propcrm.adapters.db.session import make_engine, migrate, sessions
from propcrm.domain.money import ZERO
from propcrm.domain.rulepack import parse_pack
from propcrm.domain.state import AccountState
from propcrm.services import audit, business, payouts
from propcrm.services.accounts import money
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.evaluation import STATE_DECODER
from propcrm.services.firm_cache import FirmCache, change_marker
from propcrm.services.lifecycle import paid_revenue
from support.lifecycle import LIFE_PACK, funded_account

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 5, 9, 30, tzinfo=UTC)

# a second version: a lower phase split raised by tiers, and deducted profit NOT reset by a payout
PACK_V2 = LIFE_PACK.replace("version: 1", "version: 2").replace("profit_split: 80", "profit_split: 75").replace(
    "split_tiers: [{after_payouts: 3, split: 85}]",
    "split_tiers: [{after_payouts: 1, split: 80}, {after_payouts: 3, split: 90}], resets: [trading_days, best_day]")
# another pack: a funded phase without any profit split (100%)
PACK_NOSPLIT = LIFE_PACK.replace("id: life-10k", "id: life-nosplit").replace("    profit_split: 80\n", "").replace(
    ", split_tiers: [{after_payouts: 3, split: 85}]", "")


# --------------------------------------------------------------------------------------------------
# the reference: one account at a time, as business_numbers and open_liability used to compute them


def _ratio(part: Decimal, whole: Decimal) -> str | None:
    if not whole:
        return None
    return format((part / whole).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN), "f")


def reference_liability(s, firm_id):
    total = ZERO
    rows = []
    for account in s.scalars(select(m.Account).where(m.Account.firm_id == firm_id, m.Account.status == "funded")
                             .order_by(m.Account.id)):
        program = payouts._program(s, account)
        state_row = s.get(m.AccountState, account.id)
        if state_row is None or program.target is not None:
            continue
        a = payouts.amount_now(s, account, program, STATE_DECODER.decode(state_row.state))
        if a.trader_amount > 0:
            total += a.trader_amount
            rows.append({"account_id": account.id, "account": account.external_id,
                         "trader_amount": money(a.trader_amount)})
    return total, rows


def reference_numbers(s, firm_id):
    products = {p.id: p.name for p in s.scalars(select(m.Product).where(m.Product.firm_id == firm_id))}
    accounts = {a.id: a for a in s.scalars(select(m.Account).where(m.Account.firm_id == firm_id))}
    outcome = {}
    for account_id, kind, ts in s.execute(
            select(m.Decision.account_id, m.Decision.kind, m.Decision.ts).where(
                m.Decision.firm_id == firm_id, m.Decision.kind.in_(("phase_passed", "breach")))
            .order_by(m.Decision.id)):
        outcome.setdefault(account_id, (kind, ts))
    starts = dict(s.execute(
        select(m.AccountActivity.account_id, func.min(m.AccountActivity.ts)).where(
            m.AccountActivity.firm_id == firm_id, m.AccountActivity.kind != "session")
        .group_by(m.AccountActivity.account_id)).all())
    groups = {}
    for account in accounts.values():
        key = (account.product_id, account.phase)
        group = groups.setdefault(key, {"product_id": account.product_id, "product": products.get(account.product_id),
                                        "phase": account.phase, "accounts": 0, "passed": 0, "failed": 0, "days": []})
        group["accounts"] += 1
        found = outcome.get(account.id)
        if found is None:
            continue
        kind, ts = found
        if kind == "phase_passed":
            group["passed"] += 1
            start = starts.get(account.id)
            if start is not None:
                group["days"].append((ts - start).total_seconds() / 86400)
        else:
            group["failed"] += 1
    pass_rates = []
    for key in sorted(groups, key=lambda k: (k[0] or 0, k[1])):
        g = groups[key]
        decided = g["passed"] + g["failed"]
        days = g.pop("days")
        pass_rates.append({**g, "in_progress": g["accounts"] - decided,
                           "pass_rate": _ratio(Decimal(g["passed"]), Decimal(decided)),
                           "days_to_pass_median": round(statistics.median(days), 2) if days else None,
                           "days_to_pass_mean": round(statistics.fmean(days), 2) if days else None})
    breaches = [{"rule": rule, "phase": phase, "count": n} for rule, phase, n in s.execute(
        select(m.Decision.rule, m.Decision.phase, func.count()).where(
            m.Decision.firm_id == firm_id, m.Decision.kind == "breach")
        .group_by(m.Decision.rule, m.Decision.phase).order_by(func.count().desc(), m.Decision.rule))]
    paid_out = ZERO
    for amount in s.scalars(select(Payout.trader_amount).where(Payout.firm_id == firm_id, Payout.status == "approved")):
        paid_out += amount or ZERO
    revenue = paid_revenue(s, firm_id=firm_id)
    liability, by_account = reference_liability(s, firm_id)
    return {
        "pass_rates": pass_rates,
        "breaches_by_rule": breaches,
        "payouts": {"paid": money(paid_out), "challenge_revenue": money(revenue),
                    "payout_ratio": _ratio(paid_out, revenue)},
        "open_liability": {"total": money(liability), "accounts": by_account,
                           "basis": "each funded account's trader amount if paid now (profit − penalties) × split, "
                                    "rounded down to the cent"},
    }


# --------------------------------------------------------------------------------------------------
# a mixed firm


def _decision(s, firm, account_id, kind, ts, rule="max_loss", phase="phase-1"):
    s.add(m.Decision(firm_id=firm, account_id=account_id, event_id=f"d-{account_id}-{kind}-{ts.timestamp()}", ts=ts,
                     kind=kind, rule=rule, phase=phase, message=kind, body=json.dumps({"details": {}}).encode()))


def _event(s, firm, account_id, n, ts, type_="opened"):
    """What the evaluation projects of an account's trading (account_activity): a trade or a login."""
    s.add(m.AccountActivity(firm_id=firm, account_id=account_id, kind=type_, ts=ts))


def _payout(s, firm, account_id, lineage, status="approved", penalties=None, amount=Decimal("100")):
    s.add(Payout(firm_id=firm, account_id=account_id, lineage=lineage, status=status, requested_by="tests",
                 penalties=penalties, manual_deduction=ZERO, trader_amount=amount))


def build_firm(make, firm: str) -> None:
    with make.begin() as s:
        ensure_firm(s, firm_id=firm)
        v1 = add_pack(s, firm_id=firm, pack=parse_pack(LIFE_PACK), activate=True).id
        v2 = add_pack(s, firm_id=firm, pack=parse_pack(PACK_V2), activate=True).id
        v3 = add_pack(s, firm_id=firm, pack=parse_pack(PACK_NOSPLIT), activate=True).id
        products = []
        for name, version, price in (("10k", v1, "99.00"), ("10k v2", v2, "149"), ("no split", v3, "59.9")):
            product = m.Product(firm_id=firm, name=name, pack_version_id=version, account_size=Decimal("10000"),
                                price=Decimal(price), currency="USD")
            s.add(product)
            s.flush()
            products.append(product)
        trader = m.Trader(firm_id=firm, name="T", email=f"t@{firm}.example")
        s.add(trader)
        s.flush()
        # challenge accounts in every product (and none) and phase, with first outcomes in either order
        challenge = []
        for i in range(24):
            product = (products + [None])[i % 4]
            version = product.pack_version_id if product is not None else v1
            account = create_account(s, firm_id=firm, external_id=f"C{i}", pack_version_id=version,
                                     phase=("phase-1", "phase-2")[(i // 4) % 2], trader_id=trader.id,
                                     product_id=product.id if product is not None else None)
            challenge.append(account.id)
            start = T0 + dt.timedelta(hours=7 * i, minutes=i)
            if i % 6 != 5:  # a passed account without events: no days to pass
                _event(s, firm, account.id, 0, start - dt.timedelta(hours=3), type_="session")  # never the start
                _event(s, firm, account.id, 1, start + dt.timedelta(hours=2), type_="closed")
                _event(s, firm, account.id, 2, start)
            kind = i % 5
            if kind == 0:
                _decision(s, firm, account.id, "phase_passed", start + dt.timedelta(days=3, seconds=i * 977))
            elif kind == 1:
                _decision(s, firm, account.id, "breach", start + dt.timedelta(days=1), rule="daily_loss")
            elif kind == 2:  # passed first, breached later: a pass
                _decision(s, firm, account.id, "warning", start + dt.timedelta(hours=5))
                _decision(s, firm, account.id, "phase_passed", start + dt.timedelta(days=2, microseconds=i))
                _decision(s, firm, account.id, "breach", start + dt.timedelta(days=4))
            elif kind == 3:  # breached first (by decision id), a later pass does not count
                _decision(s, firm, account.id, "breach", start + dt.timedelta(days=5), phase="phase-2")
                _decision(s, firm, account.id, "phase_passed", start + dt.timedelta(days=1))
            else:  # undecided: only a violation and a pause
                _decision(s, firm, account.id, "violation", start + dt.timedelta(days=1), rule="news")
                _decision(s, firm, account.id, "pause", start + dt.timedelta(days=1))
        orders = [("99.00", "paid"), ("99.00", "paid"), ("99", "paid"), ("149", "paid"), ("74.25", "paid"),
                  ("59.9", "refunded"), ("149", "pending"), ("0.01", "paid")]
        for amount, status in orders:
            s.add(Order(firm_id=firm, trader_id=trader.id, product_id=products[0].id, list_price=Decimal(amount),
                        discount=ZERO, amount=Decimal(amount), currency="USD", status=status))
        # an account marked funded while still in a challenge phase: it has a target, it owes nothing
        odd = create_account(s, firm_id=firm, external_id="ODD", pack_version_id=v1, phase="phase-2", trader_id=trader.id)
        odd.status = "funded"
        # a funded account without a state yet
        bare = create_account(s, firm_id=firm, external_id="BARE.funded", pack_version_id=v1, phase="funded")
        bare.status = "funded"
        s.flush()
        old_id = challenge[3]
    funded = {}
    for name, version, balance, deductions, status in (
            ("F1.phase-2.funded", v1, "10450.377", "0", "funded"),
            ("F2.phase-2.funded", v1, "10000.10", "0", "funded"),
            ("F3.funded", v1, "9999.99", "0", "funded"),  # a loss
            ("F4.funded", v1, "10321.5", "120.25", "funded"),  # deducted profit
            ("F5.funded", v1, "10800", "0", "funded"),  # 3 payouts in its lineage: tier 85%
            ("F6.funded", v2, "10640.01", "300", "funded"),  # v2: earlier payouts' penalties not deducted twice
            ("F7.funded", v2, "10100", "90", "funded"),  # v2: its penalties already deducted by payouts
            ("F8.funded", v3, "10033.333", "0", "funded"),  # no split: 100%
            ("F9.funded", v1, "10500", "0", "suspended"),  # not funded: not owed
            ("F10.s1", v1, "10400", "0", "funded"),  # scaled with carried parts
            ("F11.s1", v2, "10100", "0", "funded"),  # scaled, carried without parts, at the old account's split
            ("F12.s1", v1, "10200", "0", "funded"),  # scaled, carried without parts nor split: 100%
            ("F13.s1", v1, "10200", "0", "funded"),  # scaled, carried, but already paid once
            ("F14.s1", v1, "10050", "0", "funded"),  # two scalings: the latest carried nothing
            ("F15.s1", v1, "10050", "0", "funded"),  # scaling rejected: nothing carried
    ):
        funded[name.split(".")[0]] = funded_account(make, firm=firm, version_id=version, external_id=name,
                                                    trader_id=None, balance=Decimal(balance),
                                                    deductions=Decimal(deductions), status=status)
    with make.begin() as s:
        _payout(s, firm, funded["F1"], "F1", status="requested")
        _payout(s, firm, funded["F2"], "F2", status="rejected", penalties=Decimal("5"))
        for _ in range(3):
            _payout(s, firm, funded["F5"], "F5", penalties=Decimal("1.5"))
        _payout(s, firm, funded["F6"], "F6", penalties=Decimal("120.5"))
        _payout(s, firm, funded["F6"], "F6", penalties=None, amount=None)
        _payout(s, firm, funded["F7"], "F7", penalties=Decimal("100"))
        _payout(s, firm, challenge[0], "F4")  # an earlier account of F4's lineage was paid: the tier counts it
        _payout(s, firm, funded["F13"], "F13", amount=Decimal("10.10"))

        def scaling(account, status="applied", carried=None, parts=None, from_split=Decimal("80"), old=old_id):
            s.add(Scaling(firm_id=firm, account_id=old, lineage="x", step=1, status=status, from_size=Decimal("10000"),
                          to_size=Decimal("12500"), from_split=from_split, to_split=Decimal("90"),
                          new_account_id=account, carried_profit=carried, carried_parts=parts, actor="tests"))
            s.flush()

        scaling(funded["F10"], carried=Decimal("300.5"),
                parts=[{"amount": "200.5", "split_pct": "80", "source": "C3"},
                       {"amount": "100", "split_pct": "70", "source": "C2"}])
        scaling(funded["F11"], carried=Decimal("250"), from_split=Decimal("85"))
        scaling(funded["F12"], carried=Decimal("150.75"), from_split=None, old=funded["F9"])
        scaling(funded["F13"], carried=Decimal("150"), parts=[{"amount": "150", "split_pct": "70", "source": "C3"}])
        scaling(funded["F14"], carried=Decimal("500"), parts=[{"amount": "500", "split_pct": "80", "source": "C3"}])
        scaling(funded["F14"], carried=Decimal("0"))
        scaling(funded["F15"], status="rejected", carried=Decimal("700"))


@pytest.fixture
def firm(db_url):
    engine = make_engine(db_url)
    make = sessions(engine)
    build_firm(make, "fa")
    build_firm(make, "fb")  # the same again in another firm: none of it may count for fa
    with make.begin() as s:  # and something only fb has
        fb_account = s.scalar(select(m.Account.id).where(m.Account.firm_id == "fb", m.Account.external_id == "C4"))
        _decision(s, "fb", fb_account, "breach", T0, rule="only_fb")
    yield make
    engine.dispose()


def test_the_set_based_numbers_are_exactly_the_per_account_ones(firm):
    with firm() as s:
        got = business.business_numbers(s, firm_id="fa")
        want = reference_numbers(s, "fa")
        assert got == want
        assert json.dumps(got, default=str) == json.dumps(want, default=str)  # same order, same text
        # the firm is mixed enough to mean something
        liability = got["open_liability"]
        assert {row["account"] for row in liability["accounts"]} == {
            "F1.phase-2.funded", "F2.phase-2.funded", "F4.funded", "F5.funded", "F6.funded", "F7.funded", "F8.funded",
            "F10.s1", "F11.s1", "F12.s1", "F13.s1", "F14.s1", "F15.s1"}
        assert len({row["trader_amount"] for row in liability["accounts"]}) >= 10
        rates = got["pass_rates"]
        assert len(rates) >= 8 and sum(r["passed"] for r in rates) and sum(r["failed"] for r in rates)
        assert any(r["product_id"] is None for r in rates) and any(r["days_to_pass_median"] for r in rates)
        assert all(b["rule"] != "only_fb" for b in got["breaches_by_rule"])
        assert got["payouts"]["challenge_revenue"] == "520.26" and got["payouts"]["payout_ratio"] is not None
        other = business.business_numbers(s, firm_id="fb")
        assert other == reference_numbers(s, "fb") and other != got  # fb's own breach counts


@pytest.mark.parametrize("chunk", [1, 2, 5, 2000])
def test_open_liability_in_chunks_of_any_size(firm, chunk):
    with firm() as s:
        assert payouts.open_liability(s, firm_id="fa", chunk=chunk) == reference_liability(s, "fa")


def test_each_amount_equals_amount_now(firm):
    """Account by account: the amount open_liability adds is amount_now's (the payout rules' own)."""
    with firm() as s:
        _, rows = payouts.open_liability(s, firm_id="fa")
        for row in rows:
            account = s.get(m.Account, row["account_id"])
            program = payouts._program(s, account)
            st = STATE_DECODER.decode(s.get(m.AccountState, account.id).state)
            assert row["trader_amount"] == money(payouts.amount_now(s, account, program, st).trader_amount)


def test_the_partial_state_has_the_engine_states_types_and_defaults():
    full = {f.name: f for f in msgspec.structs.fields(AccountState)}
    for f in msgspec.structs.fields(payouts._PayoutFigures):
        assert f.name in full and f.type == full[f.name].type and f.default == full[f.name].default, f.name
    assert AccountState.__struct_config__.array_like is False  # a map: fields are found by name


def test_the_web_indexes_are_migrated_and_declared(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            found = {t: {i["name"]: tuple(i["column_names"]) for i in inspect(conn).get_indexes(t)}
                     for t in ("audit_log", "decisions")}
            diffs = compare_metadata(MigrationContext.configure(conn), m.Base.metadata)
    finally:
        engine.dispose()
    assert found["audit_log"]["ix_audit_log_firm_action"] == ("firm_id", "action", "seq")
    assert found["audit_log"]["ix_audit_log_firm_entity"] == ("firm_id", "entity", "entity_id", "seq")
    assert found["audit_log"]["ix_audit_log_firm_ts"] == ("firm_id", "ts")
    assert found["decisions"]["ix_decisions_firm_ts"] == ("firm_id", "ts")
    assert found["decisions"]["ix_decisions_account_ts"] == ("firm_id", "account_id", "ts")
    assert [d for d in diffs if any(t in repr(d) for t in ("'audit_log'", "'decisions'", "audit_log>", "decisions>"))] == []


# --------------------------------------------------------------------------------------------------
# the web pages' cached copies (services.firm_cache): the reference's figures, recomputed when the marker moves


T1 = dt.datetime(2026, 2, 2, 12, 0, tzinfo=dt.timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counting(compute):
    calls = []

    def run(session, *, firm_id):
        calls.append(firm_id)
        return compute(session, firm_id=firm_id)
    return run, calls


def test_the_cached_numbers_are_the_reference_ones_and_kept(firm):
    business.NUMBERS.forget()
    business.LIABILITY.forget()
    with firm() as s:
        numbers, at = business.cached_numbers(s, firm_id="fa")
        assert numbers == reference_numbers(s, "fa") and at.tzinfo is not None
        (total, rows), _ = business.cached_liability(s, firm_id="fa")
        assert (total, rows) == reference_liability(s, "fa") and total > 0 and len(rows) >= 10
        again, at_again = business.cached_numbers(s, firm_id="fa")
        assert again is numbers and at_again == at  # kept: nothing changed
        other, _ = business.cached_numbers(s, firm_id="fb")
        assert other == reference_numbers(s, "fb") and other != numbers  # per firm


def test_every_marker_move_recomputes_and_the_figures_follow(firm):
    clock = Clock()
    compute, calls = counting(business.business_numbers)
    cache = FirmCache(compute, ttl=30, clock=clock)
    with firm() as s:
        first, _ = cache.get(s, firm_id="fa")
        cache.get(s, firm_id="fa")
        assert len(calls) == 1
        # a payout approved (as approve_payout does: the status, and an audit entry): paid and liability move
        before = change_marker(s, firm_id="fa")
        payout = s.scalar(select(Payout).where(Payout.firm_id == "fa", Payout.status == "requested"))
        payout.status = "approved"
        audit.append(s, actor="tests", action="payout.approved", entity="payout", entity_id=str(payout.id),
                     after={"status": "approved"}, firm_id="fa")
        s.commit()  # (an audit entry is written by its transaction's commit; the marker is read after it)
        assert change_marker(s, firm_id="fa") != before
        second, _ = cache.get(s, firm_id="fa")
        assert len(calls) == 2 and second == reference_numbers(s, "fa")
        assert second["payouts"]["paid"] != first["payouts"]["paid"]
        # a breach decided by the evaluation (no audit entry): counted at once
        account_id = s.scalar(select(m.Account.id).where(m.Account.firm_id == "fa", m.Account.status == "active"))
        _decision(s, "fa", account_id, "breach", T1, rule="new_rule_only_here")
        s.flush()
        third, _ = cache.get(s, firm_id="fa")
        assert len(calls) == 3 and third == reference_numbers(s, "fa")
        assert any(b["rule"] == "new_rule_only_here" for b in third["breaches_by_rule"])
        # a new account: counted at once
        version = s.scalar(select(m.Account.pack_version_id).where(m.Account.id == account_id))
        create_account(s, firm_id="fa", external_id="NEW-1", pack_version_id=version)
        s.flush()
        fourth, _ = cache.get(s, firm_id="fa")
        assert len(calls) == 4 and fourth == reference_numbers(s, "fa")
        assert sum(g["accounts"] for g in fourth["pass_rates"]) == sum(g["accounts"] for g in third["pass_rates"]) + 1
        # another firm's change does not move fa's marker
        fb_account = s.scalar(select(m.Account.id).where(m.Account.firm_id == "fb"))
        _decision(s, "fb", fb_account, "breach", T1)
        s.flush()
        cache.get(s, firm_id="fa")
        assert len(calls) == 4
        # nothing changed but the TTL passed (a funded account's balance moving is not in the marker)
        clock.now += 29.9
        cache.get(s, firm_id="fa")
        assert len(calls) == 4
        clock.now += 0.2
        cache.get(s, firm_id="fa")
        assert len(calls) == 5


def test_the_liability_is_kept_apart_per_database(firm, tmp_path):
    """Two databases holding a firm of the same name (and the same marker) never share a value."""
    url = f"sqlite:///{tmp_path / 'other.db'}"
    migrate(url)
    other_engine = make_engine(url)
    try:
        with sessions(other_engine).begin() as s:
            ensure_firm(s, firm_id="fa")
        cache = FirmCache(payouts.open_liability, ttl=30, clock=Clock(), marker=lambda session, firm_id: 0)
        with firm() as s:
            full, _ = cache.get(s, firm_id="fa")
        with sessions(other_engine)() as s:
            empty, _ = cache.get(s, firm_id="fa")
        assert full[0] > 0 and empty == (Decimal(0), [])
    finally:
        other_engine.dispose()
