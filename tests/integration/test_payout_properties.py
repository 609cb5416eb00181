"""No sequence of trades, evaluations, payout requests, preparations, approvals and rejections ever pays
more than the rules allow, or pays twice — a hypothesis state machine over the real services, on
SQLite and PostgreSQL.

The model keeps what the rules say: the evaluated balance (initial + evaluated profit − applied
withdrawals) and the withdrawals approved but not yet applied. Every approval must then be of an
account that is settled (nothing pending, no withdrawal outstanding), withdraw exactly the profit
since the last payout, and pay the trader exactly that profit less the finance deduction, times the
split, rounded down to the cent; the one who prepared never approves; above the threshold two do.

The account may be scaled (to 12,500 at 90%) once a payout is done: the unpaid profit is carried over
to a new account, and its first payout must pay the carried profit at the split it was earned at (80%,
or 85% after three payouts) and only the profit earned since scaling at 90% — a loss since scaling
eating into the carried part, the deduction taken from the 90% part first. The total paid never
exceeds each withdrawn profit at the split it was earned at.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import Payout, PayoutApproval
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.domain.money import CENT, to_cents
from propcrm.services import lifecycle, payouts, scaling
from propcrm.services.catalog import ensure_firm
from propcrm.services.evaluation import EvaluationWorker
from propcrm.services.ingest import ingest
from propcrm.services.lifecycle import Refusal
from support.lifecycle import add_life_pack, funded_account

D = Decimal
UTC = dt.timezone.utc
INITIAL = D(10000)
THRESHOLD = D(300)
CTX: dict = {}


class PayoutMachine(RuleBasedStateMachine):
    payouts = Bundle("payouts")

    def __init__(self) -> None:
        super().__init__()
        self.sessions = CTX["sessions"]
        n = CTX["n"] = CTX["n"] + 1
        with self.sessions.begin() as s:
            trader = m.Trader(firm_id="pp", name="P", email=f"p{n}@x.example", kyc_status="approved")
            s.add(trader)
            s.flush()
            trader_id = trader.id
        self.account_id = funded_account(self.sessions, firm="pp", version_id=CTX["version"], external_id=f"P{n}",
                                         trader_id=trader_id, balance=INITIAL, active_days=0)
        self.external = f"P{n}"
        self.account_ids = [self.account_id]  # and the scaled account, once scaled
        # A trading day per step (at most 26), all of it in the past — events dated ahead of the server's clock
        # are refused — and recent enough that a scaled account (which starts at its carry event) is not due
        # for its monthly review again within the example.
        self.clock = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(days=27)
        self.evaluated_balance = INITIAL
        self.pending_profit = D(0)
        self.outstanding_withdrawal = D(0)
        self.evaluated_profit = D(0)
        self.best_profit = D(0)
        self.withdrawn = D(0)
        self.paid = D(0)
        self.approved: set[int] = set()
        self.breached = False
        self.baseline = INITIAL  # the initial balance of the account paid now
        self.split = None  # the account's own split once scaled (90%), else the tier's
        self.carried: tuple[D, D] | None = None  # (amount, split it was earned at), until paid
        self.pending_carry = D(0)  # the carry's balance event, not evaluated yet
        self.allowed = D(0)  # each withdrawn profit at the split it was earned at

    # ------------------------------------------------------------------ the world moves
    @initialize(profit=st.decimals(min_value=D("0"), max_value=D("900"), places=2))
    def first_trade(self, profit):
        self.trade(profit, True)

    @rule(profit=st.one_of(st.sampled_from([D("250.00"), D("612.34"), D("-90.00"), D("73.21")]),
                           st.decimals(min_value=D("-90"), max_value=D("600"), places=2)),
          evaluate=st.booleans())
    def trade(self, profit, evaluate):
        self.clock += dt.timedelta(days=1)
        tag = f"{self.external}-{self.clock:%Y%m%d}"
        lines = [
            {"id": f"{tag}-o", "type": "trade_opened", "account": self.external, "ts": self.clock.isoformat(),
             "position": tag, "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.1"},
            {"id": f"{tag}-c", "type": "trade_closed", "account": self.external,
             "ts": (self.clock + dt.timedelta(minutes=30)).isoformat(), "position": tag, "lots": "1", "price": "1.1",
             "profit": str(profit)},
        ]
        with self.sessions.begin() as s:
            ingest(s, firm_id="pp", source="mt5", body=b"".join(json.dumps(x).encode() + b"\n" for x in lines))
        self.pending_profit += profit
        if evaluate:
            self.evaluate()

    @rule()
    def evaluate(self):
        EvaluationWorker(self.sessions).run_until_idle(firm_id="pp")
        with self.sessions() as s:
            status = s.get(m.Account, self.account_id).status
            balance = s.get(m.AccountState, self.account_id).balance
        if not self.breached:
            self.evaluated_balance += self.pending_profit - self.outstanding_withdrawal + self.pending_carry
            self.evaluated_profit += self.pending_profit
            self.best_profit = max(self.best_profit, self.evaluated_profit)
        self.pending_profit = D(0)
        self.outstanding_withdrawal = D(0)
        self.pending_carry = D(0)
        self.breached = self.breached or status == "breached"
        if not self.breached:
            assert balance == self.evaluated_balance

    # ------------------------------------------------------------------ people
    @rule(target=payouts)
    def request(self):
        with self.sessions.begin() as s:
            row = payouts.request_payout(s, firm_id="pp", account_id=self.account_id, actor="trader")
            if row.status == "requested":
                assert self.pending_profit == self.pending_carry == self.outstanding_withdrawal == 0
                assert not self.breached
                return row.id
            assert row.status == "refused" and row.reason
        return multiple()

    @rule(payout=payouts, who=st.sampled_from(["f1", "f2", "f3"]),
          deduction=st.sampled_from([None, D("0.01"), D("25.55"), D("5000")]))
    def prepare(self, payout, who, deduction):
        with self.sessions.begin() as s:
            result = payouts.prepare_payout(s, firm_id="pp", payout_id=payout, user_id=CTX["users"][who],
                                            actor=who, deduction=deduction,
                                            deduction_reason="fee" if deduction else None)
            if not isinstance(result, Refusal):
                assert result.status == "prepared" and result.prepared_by_user_id == CTX["users"][who]

    @rule(payout=payouts, who=st.sampled_from(["f1", "f2", "f3"]))
    def approve(self, payout, who):
        with self.sessions.begin() as s:
            before = s.get(Payout, payout).status
            result = payouts.approve_payout(s, firm_id="pp", payout_id=payout, user_id=CTX["users"][who], actor=who)
            if isinstance(result, Refusal) or result.status != "approved":
                return
            assert before == "prepared" and payout not in self.approved
            # settled: nothing pending, the previous withdrawal applied, the account alive
            assert self.pending_profit == self.pending_carry == self.outstanding_withdrawal == 0
            assert not self.breached
            # exactly the profit since the last payout leaves the account
            profit = result.withdrawal
            assert profit == self.evaluated_balance - self.baseline > 0
            split = self.split or (D(85) if len(self.approved) >= 3 else D(80))
            payable = max(profit - result.manual_deduction, D(0))
            if self.carried is None:
                assert result.trader_amount == to_cents(payable * split / 100) > 0
                self.allowed += profit * split / 100
            else:  # the first payout of the scaled account
                carry, carry_split = self.carried
                earned, kept = max(profit - carry, D(0)), min(carry, profit)  # a loss eats the carried part
                cut = profit - payable  # the deduction: off the 90% part first, then the carried part
                earned_net, kept_net = max(earned - cut, D(0)), max(kept - max(cut - earned, D(0)), D(0))
                assert result.trader_amount == to_cents(kept_net * carry_split / 100 + earned_net * split / 100)
                assert result.carried_profit == kept_net
                self.allowed += kept * carry_split / 100 + earned * split / 100
                self.carried = None
            approvers = set(s.scalars(select(PayoutApproval.user_id).where(PayoutApproval.payout_id == payout)))
            assert result.prepared_by_user_id not in approvers
            assert len(approvers) == (2 if result.trader_amount > THRESHOLD else 1)
            self.approved.add(payout)
            self.outstanding_withdrawal = result.withdrawal
            self.withdrawn += result.withdrawal
            self.paid += result.trader_amount

    @rule(target=payouts, preparer=st.sampled_from(["f1", "f2", "f3"]),
          approvers=st.permutations(["f1", "f2", "f3"]),
          deduction=st.sampled_from([None, D("0.01"), D("99.99")]))
    def pay_out(self, preparer, approvers, deduction):
        """The whole way at once (each step still checked): request, prepare, then approvals in turn."""
        found = self.request()
        if not isinstance(found, int):  # an open request (from the other rules) is taken further instead
            with self.sessions() as s:
                found = s.scalar(select(Payout.id).where(Payout.account_id == self.account_id,
                                                         Payout.status.in_(payouts.OPEN)))
            if found is None:
                return multiple()
        self.prepare(found, preparer, deduction)
        for who in approvers:
            self.approve(found, who)
        return found

    @rule()
    def scale(self):
        """The risk officer scales the account (refused unless every check of the plan passes)."""
        with self.sessions.begin() as s:
            row = scaling.scale_account(s, firm_id="pp", account_id=self.account_id, actor="risk")
            if isinstance(row, Refusal):
                return
            row = scaling.approve_scaling(s, firm_id="pp", scaling_id=row.id, actor="risk")
            assert not isinstance(row, Refusal) and row.status == "applied"
            assert self.pending_profit == self.outstanding_withdrawal == 0 and not self.breached
            carry = self.evaluated_balance - self.baseline
            earned_at = D(85) if len(self.approved) >= 3 else D(80)
            assert carry > 0 and row.carried_profit == carry and self.carried is None and self.split is None
            assert row.carried_parts == [{"amount": format(carry.normalize(), "f"), "split_pct": str(earned_at),
                                          "source": self.external}]
            self.account_id, self.external = row.new_account_id, s.get(m.Account, row.new_account_id).external_id
            self.account_ids.append(self.account_id)
        self.baseline = self.evaluated_balance = D(12500)
        self.pending_carry, self.carried, self.split = carry, (carry, earned_at), D(90)

    @rule(target=payouts, preparer=st.sampled_from(["f1", "f2", "f3"]),
          approvers=st.permutations(["f1", "f2", "f3"]),
          profit=st.decimals(min_value=D("1"), max_value=D("600"), places=2))
    def pay_out_trade_and_scale(self, preparer, approvers, profit):
        """A payout, more trading, then scaling: the way to a scaled account's first payout."""
        found = self.pay_out(preparer, approvers, None)
        self.evaluate()
        self.trade(profit, True)
        self.scale()
        return found

    @rule(payout=payouts)
    def reject(self, payout):
        with self.sessions.begin() as s:
            payouts.reject_payout(s, firm_id="pp", payout_id=payout, reason="not today", actor="f1")

    # ------------------------------------------------------------------ what must always hold
    @invariant()
    def never_more_than_the_rules_allow(self):
        assert self.paid <= self.allowed <= self.withdrawn * (D("0.9") if self.split else D("0.85"))
        assert self.withdrawn <= self.best_profit  # each withdrawal took exactly the profit evaluated then
        assert self.paid == self.paid.quantize(CENT)

    @invariant()
    def never_twice(self):
        with self.sessions() as s:
            rows = list(s.scalars(select(Payout).where(Payout.account_id.in_(self.account_ids))))
            for account_id in self.account_ids:
                assert sum(1 for r in rows if r.status in payouts.OPEN and r.account_id == account_id) <= 1
            approved = [r for r in rows if r.status == "approved"]
            assert {r.id for r in approved} == self.approved
            assert sum((r.trader_amount for r in approved), D(0)) == self.paid
            events = s.scalar(select(func.count()).select_from(m.RawEvent).where(
                m.RawEvent.account_id.in_(self.account_ids), m.RawEvent.source == payouts.SOURCE,
                m.RawEvent.event_id.like("payout-%")))
            assert events == len(approved)


@pytest.fixture
def payout_world(db_url, monkeypatch):
    # Preparing a payout runs the firm-wide abuse analysis first (tested in test_lifecycle_review.py).
    # Here every example of the state machine trades in the one firm "pp" at the same hours, so the
    # analysis would link them as a copy group and an earlier example's case would hold a later
    # example's payouts: the rules' preconditions would depend on earlier examples. The invariants
    # under test are the payout arithmetic and maker-checker, so the analysis is left out.
    from propcrm.services import analysis

    monkeypatch.setattr(analysis, "refresh", lambda session, *, firm_id: None)
    engine = make_engine(db_url)
    factory = sessions(engine)
    with factory.begin() as s:
        ensure_firm(s, firm_id="pp")
        ids = {}
        for name in ("f1", "f2", "f3"):
            s.add(m.User(firm_id="pp", email=f"{name}@pp.example", password_hash="x", role="finance", active=True))
            s.flush()
            ids[name] = s.scalar(select(m.User.id).where(m.User.email == f"{name}@pp.example"))
        lifecycle.update_settings(s, firm_id="pp", dual_approval_over=str(THRESHOLD), scaling_mode=None, actor="test")
    CTX.update(sessions=factory, version=add_life_pack(factory, "pp"), users=ids, n=0)
    yield db_url
    engine.dispose()


def test_no_sequence_of_requests_approvals_and_rejections_pays_more_than_allowed_or_twice(payout_world):
    examples = 40 if payout_world.startswith("sqlite") else 12  # the same machine; PostgreSQL round trips cost more
    run_state_machine_as_test(
        PayoutMachine,
        settings=settings(max_examples=examples, stateful_step_count=25, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck)),
    )


def test_concurrent_requests_and_approvals_pay_once(payout_world):
    """Two requests at once open one; two approvals at once of a one-approver payout pay once."""
    import threading

    factory = CTX["sessions"]
    with factory.begin() as s:
        trader = m.Trader(firm_id="pp", name="C", email="concurrent@x.example", kyc_status="approved")
        s.add(trader)
        s.flush()
        trader_id = trader.id
    account = funded_account(factory, firm="pp", version_id=CTX["version"], external_id="CONC", trader_id=trader_id,
                             balance=D("10200"))  # 160 to the trader: one approver

    def race(work) -> list:
        barrier, results = threading.Barrier(2), []

        def run(arg):
            barrier.wait()
            try:
                with factory.begin() as s:
                    results.append(work(s, arg))
            except Exception as exc:  # noqa: BLE001 - a refused write (unique slot, lock) is an outcome too
                results.append(type(exc).__name__)

        threads = [threading.Thread(target=run, args=(arg,)) for arg in ("f1", "f2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return results

    opened = race(lambda s, who: payouts.request_payout(s, firm_id="pp", account_id=account, actor=who).status)
    assert sorted(opened) in (["refused", "requested"], ["IntegrityError", "requested"]), opened
    with factory.begin() as s:
        payout_id = s.scalar(select(Payout.id).where(Payout.account_id == account, Payout.status == "requested"))
        payouts.prepare_payout(s, firm_id="pp", payout_id=payout_id, user_id=CTX["users"]["f3"], actor="f3")
    paid = race(lambda s, who: getattr(payouts.approve_payout(s, firm_id="pp", payout_id=payout_id,
                                                              user_id=CTX["users"][who], actor=who), "status",
                                       "refused"))
    assert sorted(paid) == ["approved", "refused"], paid
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(m.RawEvent).where(m.RawEvent.account_id == account,
                                                                           m.RawEvent.source == payouts.SOURCE)) == 1
        assert s.scalar(select(func.count()).select_from(PayoutApproval)
                        .where(PayoutApproval.payout_id == payout_id)) == 1
