"""Payouts from funded accounts: request, prepare, approve (maker-checker), reject.

A payout can only pay what the rules allow, once:

* **Eligibility** is a list of checks, each shown with its result (``domain.payouts.Check``); a
  request that fails any is stored as ``refused`` with the failed checks, never raised.
* **The amount** is derived step by step (``domain.payouts.amount``) from the engine's state of the
  account — closed balance, deducted profit — and the pack's split, rounded down to the cent. Profit
  a scaling carried over to the account (``scalings.carried_parts``) is paid, at the account's first
  payout, at the split in force when it was earned (``carried_over``).
* **One open request per account** (a unique constraint on ``payouts.open_slot``), and the account
  row is locked while a request changes, so two requests, or two approvals, never both pay.
* **Nothing is paid twice**: approval writes the withdrawal as a ``balance`` event with reason
  ``payout`` (id ``payout-<id>``, idempotent like every event), which takes the whole profit since
  the last payout out of the account. Until the worker has applied it, the account is not
  ``settled`` and no new payout can be prepared or approved; a withdrawal the worker rejected keeps
  it unsettled for good (a person must look). The withdrawal is stored exactly once: when an event
  with its id already exists and is something else, or ingestion refuses it, the approval is refused
  (409), audited as ``payout.withdrawal_refused``, and nothing of it is recorded.
  In the scale-out deployment (``PROPCRM_NATS_URL``) the event log is the JetStream stream: the
  withdrawal is committed as a ``bus_event`` outbox row in the approval's transaction, published by
  the dispatcher with a message id derived from the event id and applied once by id by the
  partition worker, which audits ``payout.withdrawal_applied`` (what ``settled`` reads there).
* **Maker-checker**: the finance user who prepared a payout cannot approve it; above the firm's
  ``dual_approval_over`` it needs two different approvers. Each approver must be independent of the
  preparer and of the other approvers: not sponsored by them, not their sponsor, no sponsor in common
  (``users.dependence``), so one admin cannot create two finance users and pay alone. Approval
  re-checks everything and refuses when the amount has changed since it was prepared.
* **Paying out**: the trader names a method and a destination with the request (:data:`METHODS`);
  after approval finance records the payment's reference when the money is sent (:func:`mark_sent`,
  audited, the trader told), and the trader downloads a statement (``services/documents.py``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import Payout, PayoutApproval, Scaling
from ..domain.money import HUNDRED, ZERO, fmt, fmt_pct
from ..domain.payouts import Amount, Carried, Check, amount as payout_amount, consistency_check, split_for
from ..domain.program import PhaseProgram
from ..domain.state import AccountState
from . import audit
from .accounts import compiled_pack, get_account, money
from .cases import open_cases_touching
from .communications import notify_trader
from .errors import Invalid, NotFound
from .evaluation import STATE_DECODER
from .lifecycle import Refusal, decimal_of, kyc_cleared, now_utc, reason_text, settings_of

UTC = dt.timezone.utc
SOURCE = "propcrm-payouts"
OPEN = ("requested", "prepared")
FUNDED_STATUSES = ("funded",)
#: how a trader may be paid (value stored -> words shown)
METHODS = {"bank_transfer": "bank transfer", "wise": "Wise", "paypal": "PayPal", "crypto_usdt": "USDT (crypto)"}
MAX_DESTINATION = 200
MAX_REFERENCE = 200


def method_words(method: str | None) -> str:
    return METHODS.get(method or "", "not given")


def _printable(name: str, value: Any, limit: int) -> str:
    """A one-line text of 3 to ``limit`` printable characters, or Invalid naming the field."""
    text = value.strip() if isinstance(value, str) else ""
    if not 3 <= len(text) <= limit or not text.isprintable():
        raise Invalid(f"{name}: 3 to {limit} printable characters on one line are required")
    return text


def payment_details(method: Any, destination: Any) -> tuple[str, str]:
    """The method (one of :data:`METHODS`) and destination of a request, validated at the edge."""
    if method not in METHODS:
        raise Invalid(f"method: one of {', '.join(METHODS)} is required")
    return method, _printable("destination", destination, MAX_DESTINATION)


def lineage_of(external_id: str) -> str:
    """The challenge account an account descends from: successors are named ``<id>.<phase>`` and
    scaled accounts ``<id>.s<k>``, so it is the part before the first dot."""
    return external_id.split(".", 1)[0]


def lineage_accounts(session: Session, account: m.Account) -> list[m.Account]:
    root = lineage_of(account.external_id)
    rows = session.scalars(select(m.Account).where(
        m.Account.firm_id == account.firm_id,
        (m.Account.external_id == root) | m.Account.external_id.like(root.replace("%", r"\%").replace("_", r"\_") + ".%",
                                                                       escape="\\"),
    ))
    return [a for a in rows if a.trader_id == account.trader_id]


@dataclass
class Assessment:
    """Everything known about paying an account now."""

    account: m.Account
    checks: list[Check] = field(default_factory=list)
    amount: Amount | None = None
    state_seq: int | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def _program(session: Session, account: m.Account) -> PhaseProgram:
    version = session.get(m.RulePackVersion, account.pack_version_id)
    return compiled_pack(version).phase(account.phase)


def unresolved_violations(session: Session, account: m.Account) -> list[m.Decision]:
    """Breaches and violations of the account not cleared or resolved by an override; a violation that
    only deducted profit (news ``partial_profit``) is already paid for by the deduction."""
    cleared = set(session.scalars(select(m.Override.decision_id).where(
        m.Override.firm_id == account.firm_id, m.Override.account_id == account.id,
        m.Override.decision_id.is_not(None))))
    out = []
    for row in session.scalars(select(m.Decision).where(
            m.Decision.firm_id == account.firm_id, m.Decision.account_id == account.id,
            m.Decision.kind.in_(("breach", "violation"))).order_by(m.Decision.id)):
        if row.id in cleared:
            continue
        try:
            details = json.loads(row.body).get("details") or {}
        except ValueError:
            details = {}
        if row.kind == "violation" and "deducted" in details:
            continue
        out.append(row)
    return out


def approved_count(session: Session, *, firm_id: str, lineage: str) -> int:
    return session.scalar(select(func.count()).select_from(Payout).where(
        Payout.firm_id == firm_id, Payout.lineage == lineage, Payout.status == "approved")) or 0


def penalties_since_last_payout(session: Session, account: m.Account, program: PhaseProgram,
                                st: AccountState) -> Decimal:
    """The deducted profit of the current period. The engine's counter starts again at a payout unless
    the pack's ``payout.resets`` leaves ``deductions`` out; then it still holds what earlier payouts of
    this account already deducted (their withdrawal took that profit out), which is not deducted twice."""
    if "deductions" in program.payout_policy.resets:
        return st.deductions
    earlier = ZERO
    for penalties in session.scalars(select(Payout.penalties).where(
            Payout.firm_id == account.firm_id, Payout.account_id == account.id, Payout.status == "approved")):
        earlier += penalties or ZERO
    return _penalties_net(program, st, earlier)


def _penalties_net(program: PhaseProgram, st: AccountState, earlier: Decimal) -> Decimal:
    """:func:`penalties_since_last_payout` given ``earlier``, the penalties the account's approved
    payouts already deducted (only read when the pack's ``payout.resets`` leaves ``deductions`` out)."""
    if "deductions" in program.payout_policy.resets:
        return st.deductions
    return max(st.deductions - earlier, ZERO)


def carried_over(session: Session, account: m.Account) -> tuple[Carried, ...]:
    """Profit a scaling carried over to ``account`` and not paid yet, each part with the split it was
    earned at (``scalings.carried_parts``). The account's first approved payout withdraws its whole
    profit, the carried part included, so after it nothing is carried any more."""
    row = session.scalar(select(Scaling).where(
        Scaling.firm_id == account.firm_id, Scaling.new_account_id == account.id, Scaling.status == "applied")
        .order_by(Scaling.id.desc()).limit(1))
    if not _carries(row):
        return ()
    paid = session.scalar(select(Payout.id).where(
        Payout.firm_id == account.firm_id, Payout.account_id == account.id, Payout.status == "approved").limit(1))
    if paid is not None:
        return ()
    old = session.get(m.Account, row.account_id) if not row.carried_parts else None
    return _carried_parts(row, old.external_id if old is not None else None)


def _carries(row: Scaling | None) -> bool:
    """Whether the account's latest applied scaling (``row``) carried profit over to it."""
    return row is not None and bool(row.carried_profit) and row.carried_profit > 0


def _carried_parts(row: Scaling, old_external_id: str | None) -> tuple[Carried, ...]:
    """The carried-over parts of a scaling that carried profit (:func:`_carries`) to an account without an
    approved payout yet; ``old_external_id``: the old account's external id (None: not found), only
    used for a scaling stored without its parts."""
    if row.carried_parts:
        return tuple(Carried.from_dict(part) for part in row.carried_parts)
    # a scaling stored without its parts: the carried profit at the old account's phase split (none: 100%)
    return (Carried(amount=row.carried_profit, split_pct=row.from_split if row.from_split is not None else HUNDRED,
                    source=old_external_id if old_external_id is not None else f"scaling {row.id}"),)


def amount_now(session: Session, account: m.Account, program: PhaseProgram, st: AccountState, *,
               manual_deduction: Decimal = ZERO, manual_reason: str | None = None) -> Amount:
    """The amount paying ``account`` now, step by step: its profit since the last payout at the split
    for the payouts already approved in its lineage, a carried-over part at the split it was earned at."""
    done = approved_count(session, firm_id=account.firm_id, lineage=lineage_of(account.external_id))
    return _amount_of(program, st, external_id=account.external_id, done=done,
                      penalties=penalties_since_last_payout(session, account, program, st),
                      carried=carried_over(session, account), manual_deduction=manual_deduction,
                      manual_reason=manual_reason)


def _amount_of(program: PhaseProgram, st: AccountState, *, external_id: str, done: int, penalties: Decimal,
               carried: tuple[Carried, ...], manual_deduction: Decimal = ZERO,
               manual_reason: str | None = None) -> Amount:
    """:func:`amount_now` from what it reads: ``done`` approved payouts in the lineage, the penalties of
    the period (:func:`penalties_since_last_payout`), the carried-over parts (:func:`carried_over`)."""
    split, source = split_for(program.payout_policy, program.phase.profit_split, done)
    return payout_amount(balance=st.balance, baseline=program.initial, penalties=penalties,
                         manual_deduction=manual_deduction, manual_reason=manual_reason, split_pct=split,
                         split_source=source, carried=carried, account=external_id)


def unsettled_reason(session: Session, account: m.Account) -> str | None:
    """Why the account's stored state is not final enough to pay from, or ``None``: a withdrawal of an
    approved payout not applied yet, or events not evaluated yet. In the scale-out deployment the
    withdrawals are checked through what the partition worker recorded, and "evaluated" means no
    committed decision of the account is newer than its stored state (the partition's snapshot)."""
    from ..adapters.bus import bus_mode

    if bus_mode():
        for payout_id, event_id in session.execute(select(Payout.id, Payout.event_id).where(
                Payout.firm_id == account.firm_id, Payout.account_id == account.id, Payout.status == "approved")):
            problem = _bus_withdrawal_problem(session, account, payout_id, event_id)
            if problem is not None:
                return problem
        stored_at = session.scalar(select(m.AccountState.last_seq).where(m.AccountState.account_id == account.id))
        newer = session.scalar(select(func.count()).select_from(m.Decision).where(
            m.Decision.firm_id == account.firm_id, m.Decision.account_id == account.id,
            m.Decision.event_seq > (stored_at or 0)))
        if stored_at is not None and newer:
            return f"{newer} decision(s) of the account are newer than its stored state (the partition's next snapshot)"
        return None
    waiting = session.scalar(select(func.count()).select_from(m.RawEvent).where(
        m.RawEvent.firm_id == account.firm_id, m.RawEvent.account_id == account.id, m.RawEvent.status == "pending"))
    for payout_id, event_id in session.execute(select(Payout.id, Payout.event_id).where(
            Payout.firm_id == account.firm_id, Payout.account_id == account.id, Payout.status == "approved")):
        status, reason = session.execute(select(m.RawEvent.status, m.RawEvent.reason).where(
            m.RawEvent.firm_id == account.firm_id, m.RawEvent.source == SOURCE,
            m.RawEvent.event_id == event_id)).first() or ("missing", None)
        if status != "applied":
            return (f"the withdrawal of payout {payout_id} is {status}" + (f" ({reason})" if reason else "")
                    + "; it must be applied to the account first")
    if waiting:
        return f"{waiting} event(s) of the account are not evaluated yet"
    return None


def assess(session: Session, *, account: m.Account, manual_deduction: Decimal = ZERO,
           manual_reason: str | None = None, ignore_open: int | None = None, write: bool = True) -> Assessment:
    """Every eligibility check of paying ``account`` now, and the amount when there is one.
    ``write=False`` (a GET) writes nothing, not even an expired KYC approval."""
    out = Assessment(account=account)
    checks = out.checks
    program = _program(session, account)
    policy = program.payout_policy
    funded = account.status in FUNDED_STATUSES and program.target is None
    checks.append(Check("funded_and_active", funded,
                        f"account {account.external_id} is {account.status} in {account.phase}"
                        + ("" if funded else "; only an active funded account can be paid")))
    state_row = session.get(m.AccountState, account.id)
    st: AccountState | None = STATE_DECODER.decode(state_row.state) if state_row is not None else None
    out.state_seq = state_row.last_seq if state_row is not None else None
    unsettled = unsettled_reason(session, account)
    checks.append(Check("settled", unsettled is None and st is not None,
                        unsettled or ("every event of the account is evaluated" if st is not None
                                      else "no trading on the account has been evaluated yet")))
    open_other = session.scalar(select(Payout.id).where(
        Payout.firm_id == account.firm_id, Payout.account_id == account.id, Payout.status.in_(OPEN),
        *( [Payout.id != ignore_open] if ignore_open is not None else [])).limit(1))
    checks.append(Check("no_open_request", open_other is None,
                        f"payout {open_other} of this account is still open" if open_other else
                        "no other payout request of this account is open"))
    problems = unresolved_violations(session, account)
    checks.append(Check(
        "no_unresolved_violation", not problems,
        "no unresolved breach or violation" if not problems else
        "unresolved: " + "; ".join(f"#{d.id} {d.kind} {d.rule}: {d.message}" for d in problems[:3])
        + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""),
        value=str(len(problems)), required="0"))
    days = st.active_days if st is not None else 0
    since = "since the last payout" if "trading_days" in policy.resets else "since funding"
    checks.append(Check("min_trading_days", days >= policy.min_trading_days,
                        f"{days} trading day(s) {since}; at least {policy.min_trading_days} required",
                        value=str(days), required=str(policy.min_trading_days)))
    trader = session.get(m.Trader, account.trader_id) if account.trader_id is not None else None
    if trader is None:
        checks.append(Check("compliance", False, "the account has no trader to pay"))
    else:
        cleared, why = kyc_cleared(session, trader, write=write)
        checks.append(Check("compliance", cleared, why, value=trader.kyc_status, required="approved"))
    ids = [a.id for a in lineage_accounts(session, account)] or [account.id]
    cases = open_cases_touching(session, firm_id=account.firm_id, account_ids=ids, include_linked=True)
    # the trader reads this reason (and the stored refusal): the case's number, never its title or
    # detector, which are the risk team's working text and may name other traders
    checks.append(Check("no_open_case", not cases,
                        "no open investigation case on the account or an account linked to it" if not cases else
                        "under investigation: " + ", ".join(f"case {c.id} ({c.status})" for c in cases[:3])
                        + (f" and {len(cases) - 3} more" if len(cases) > 3 else "")
                        + "; a payout waits until the investigation is closed",
                        value=str(len(cases)), required="0"))
    if policy.require_flat:
        flat = st is not None and not st.positions
        checks.append(Check("flat", flat, "no open positions" if flat else
                            f"{len(st.positions) if st else 0} position(s) open; close them before a payout"))
    if st is None:
        return out
    profit = st.balance - program.initial
    best_day = max(st.best_day_profit, st.day_profit)
    checks.append(consistency_check(policy, best_day=best_day, profit=profit))
    out.amount = amount_now(session, account, program, st, manual_deduction=manual_deduction,
                            manual_reason=manual_reason)
    checks.append(Check("profit", profit > 0, f"profit since the last payout {fmt(profit)}"
                        + ("" if profit > 0 else "; there is nothing to pay"), value=money(profit), required="> 0"))
    minimum = policy.min_amount
    got = out.amount.trader_amount
    checks.append(Check("min_amount", got >= minimum and got > 0,
                        f"the trader's amount {fmt(got)} " + ("≥" if got >= minimum else "<")
                        + f" the minimum {fmt(minimum)}", value=money(got), required=money(minimum)))
    return out


# --------------------------------------------------------------------------------------------------
# views


def payout_view(session: Session, row: Payout, *, for_trader: bool = False) -> dict[str, Any]:
    approvers = _standing_approvers(session, row.id) if row.status == "prepared" else list(session.scalars(
        select(PayoutApproval.user_id).where(PayoutApproval.payout_id == row.id).order_by(PayoutApproval.created_at)))
    account = session.get(m.Account, row.account_id)
    return {
        "id": row.id, "account_id": row.account_id, "account": account.external_id if account else None,
        "trader_id": row.trader_id, "status": row.status, "requested_by": None if for_trader else row.requested_by,
        "prepared_by_user_id": None if for_trader else row.prepared_by_user_id,
        "approved_by_user_ids": [] if for_trader else approvers, "approvals": len(approvers),
        "approvals_needed": row.approvals_needed,
        "profit": money(row.profit), "penalties": money(row.penalties), "deduction": money(row.manual_deduction),
        "deduction_reason": row.deduction_reason, "split_pct": money(row.split_pct),
        "carried_profit": money(row.carried_profit),
        "trader_amount": money(row.trader_amount), "firm_amount": money(row.firm_amount),
        "withdrawal": money(row.withdrawal), "checks": row.checks or [], "steps": row.steps or [],
        "failed_checks": [c for c in (row.checks or []) if not c.get("ok")],
        "reason": row.reason, "created_at": row.created_at, "prepared_at": row.prepared_at,
        "decided_at": row.decided_at, "method": row.method, "method_words": method_words(row.method),
        "destination": row.destination, "payment_reference": row.payment_reference, "sent_at": row.sent_at,
    }


def get_payout(session: Session, *, firm_id: str, payout_id: int, trader_scope: int | None = None,
               for_update: bool = False) -> Payout:
    query = select(Payout).where(Payout.id == payout_id, Payout.firm_id == firm_id)
    if trader_scope is not None:
        query = query.where(Payout.trader_id == trader_scope)
    if for_update and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise NotFound(f"no payout {payout_id}")
    return row


def payouts_query(*, firm_id: str, trader_scope: int | None = None, status: str | None = None,
                  account_id: int | None = None) -> Select:
    """The payouts list's one read model: a firm's payouts (a trader's own, a status, an account), for the
    API's list and the back office's CSV export, which add their order and columns."""
    query = select(Payout).where(Payout.firm_id == firm_id)
    if trader_scope is not None:
        query = query.where(Payout.trader_id == trader_scope)
    if status is not None:
        query = query.where(Payout.status == status)
    if account_id is not None:
        query = query.where(Payout.account_id == account_id)
    return query


def list_payouts(session: Session, *, firm_id: str, trader_scope: int | None = None, status: str | None = None,
                 account_id: int | None = None) -> list[Payout]:
    query = payouts_query(firm_id=firm_id, trader_scope=trader_scope, status=status, account_id=account_id)
    return list(session.scalars(query.order_by(Payout.id)))


def preview(session: Session, *, firm_id: str, account_id: int, trader_scope: int | None = None) -> dict[str, Any]:
    """What a request would meet now: every check and the amount (nothing is stored)."""
    account = get_account(session, firm_id=firm_id, account_id=account_id, trader_id=trader_scope)
    found = assess(session, account=account, write=False)
    return {"account_id": account.id, "account": account.external_id, "eligible": found.ok,
            "checks": [c.to_dict() for c in found.checks], "failed_checks": [c.to_dict() for c in found.failed],
            "steps": found.amount.steps_dicts() if found.amount else [],
            "trader_amount": money(found.amount.trader_amount) if found.amount else None}


# --------------------------------------------------------------------------------------------------
# the workflow


def _freeze(row: Payout, found: Assessment) -> None:
    a = found.amount
    row.checks = [c.to_dict() for c in found.checks]
    if a is not None:
        row.profit, row.penalties, row.split_pct = a.profit, a.penalties, a.split_pct
        row.carried_profit = a.carried_payable if any(p.carried for p in a.parts) else None
        row.trader_amount, row.firm_amount, row.withdrawal = a.trader_amount, a.firm_amount, a.withdrawal
        row.steps = a.steps_dicts()
    row.state_seq = found.state_seq


def request_payout(session: Session, *, firm_id: str, account_id: int, actor: str,
                   trader_scope: int | None = None, method: str | None = None,
                   destination: str | None = None) -> Payout:
    """A payout request. Always stored: ``requested`` when every check passes, otherwise ``refused``
    with the checks that failed (the trader sees which and why). ``method`` and ``destination``: how the
    trader wants to be paid (:func:`payment_details`; both or neither)."""
    if method is not None or destination is not None:
        method, destination = payment_details(method, destination)
    account = get_account(session, firm_id=firm_id, account_id=account_id, trader_id=trader_scope, for_update=True)
    found = assess(session, account=account)
    row = Payout(firm_id=firm_id, account_id=account.id, trader_id=account.trader_id,
                 lineage=lineage_of(account.external_id), status="requested" if found.ok else "refused",
                 open_slot=1 if found.ok else None, requested_by=actor, manual_deduction=ZERO, approvals_needed=1,
                 created_at=now_utc(), method=method, destination=destination)
    _freeze(row, found)
    if not found.ok:
        row.reason = "; ".join(f"{c.name}: {c.reason}" for c in found.failed)
        row.decided_at = now_utc()
    session.add(row)
    session.flush()  # the unique open slot refuses a second open request (409 from the API)
    audit.append(session, actor=actor, action=f"payout.{row.status}", entity="payout", entity_id=str(row.id),
                 after={"account": account.external_id, "trader_amount": row.trader_amount,
                        "failed": [c.name for c in found.failed], "method": method}, firm_id=firm_id)
    if account.trader_id is not None:
        if found.ok:
            text = f"Your payout request {row.id} for {fmt(row.trader_amount)} is received and will be reviewed."
        else:
            text = f"Your payout request {row.id} cannot be accepted: {row.reason}"
        notify_trader(session, firm_id=firm_id, trader_id=account.trader_id, kind="payout",
                      key=f"payout:{row.id}:{row.status}", account=account.external_id,
                      title=f"Payout request {row.id}: {row.status}", message=text, author=actor)
    return row


def prepare_payout(session: Session, *, firm_id: str, payout_id: int, user_id: int, actor: str,
                   deduction: Any = None, deduction_reason: str | None = None) -> Payout | Refusal:
    """Finance checks the request again, adds a deduction with a reason if any, and freezes the amount."""
    row = get_payout(session, firm_id=firm_id, payout_id=payout_id, for_update=True)
    if row.status not in OPEN:
        return Refusal(f"payout {row.id} is {row.status}; only a requested (or prepared) payout can be prepared")
    before = row.status
    manual = decimal_of("deduction", deduction, cents=True) if deduction not in (None, "", 0) else ZERO
    reason = reason_text(deduction_reason, "deduction_reason") if manual else None
    own = _own_payout(session, row, user_id)
    if own is not None:
        return own
    account = get_account(session, firm_id=firm_id, account_id=row.account_id, for_update=True)
    from .analysis import refresh as refresh_analysis

    # the payout review: abuse analysis is brought up to the last stored event first, so a case the
    # newest trades would open holds the payout now, not at the next background pass
    refresh_analysis(session, firm_id=firm_id)
    found = assess(session, account=account, manual_deduction=manual, manual_reason=reason, ignore_open=row.id)
    if not found.ok:  # nothing of the payout changes: a prepared amount and its approvals stay as they were
        return Refusal("the payout is not eligible now: " + "; ".join(f"{c.name}: {c.reason}" for c in found.failed),
                       [c.name for c in found.failed])
    _freeze(row, found)
    row.manual_deduction, row.deduction_reason = manual, reason
    if before == "prepared":  # prepared again (the account changed): earlier approvals no longer count
        session.execute(delete(PayoutApproval).where(PayoutApproval.payout_id == row.id))
    threshold = settings_of(session, firm_id).dual_approval_over
    row.approvals_needed = 2 if threshold is not None and row.trader_amount > threshold else 1
    row.status, row.prepared_by_user_id, row.prepared_at = "prepared", user_id, now_utc()
    audit.append(session, actor=actor, action="payout.prepared", entity="payout", entity_id=str(row.id),
                 before={"status": before},
                 after={"status": "prepared", "trader_amount": row.trader_amount, "deduction": manual,
                        "deduction_reason": reason, "approvals_needed": row.approvals_needed}, firm_id=firm_id)
    return row


def _standing_approvers(session: Session, payout_id: int) -> list[int]:
    """The approvers whose approval still counts: users active now (a user disabled since approving —
    gone, or under suspicion — no longer completes a payout)."""
    return list(session.scalars(
        select(PayoutApproval.user_id).join(m.User, m.User.id == PayoutApproval.user_id)
        .where(PayoutApproval.payout_id == payout_id, m.User.active.is_(True))
        .order_by(PayoutApproval.created_at, PayoutApproval.user_id)))


def _own_payout(session: Session, row: Payout, user_id: int) -> Refusal | None:
    """Staff users are not linked to traders; a staff user with the payout's trader's e-mail address is
    the trader, and neither prepares nor approves their own payout."""
    user = session.get(m.User, user_id)
    trader = session.get(m.Trader, row.trader_id) if row.trader_id is not None else None
    if user is None or trader is None or not trader.email:
        return None
    if user.email.strip().lower() == trader.email.strip().lower():
        return Refusal(f"maker-checker: payout {row.id} is your own payout (trader {trader.id}); "
                       "other finance users must prepare and approve it")
    return None


def independence_refusal(session: Session, row: Payout, user_id: int, approvers: set[int]) -> Refusal | None:
    """Maker-checker between people, not accounts: the approver must be independent of the preparer and
    of every approval that still counts — not sponsored by them, not their sponsor, no sponsor in common
    (``users.dependence``: who created a user, reset their password or set their role). Otherwise one
    admin could create two finance users and pay alone."""
    from .users import dependence

    others = ([("prepared it", row.prepared_by_user_id)] if row.prepared_by_user_id is not None else []) + \
        [("approved it", other) for other in sorted(approvers)]
    for did, other in others:
        why = dependence(session, firm_id=row.firm_id, first=other, second=user_id)
        if why is not None:
            return Refusal(f"maker-checker: you are not independent of the user who {did}: {why}. No one person may "
                           f"choose the people who pay a payout and pay it; payout {row.id} needs an approver "
                           "independent of them")
    return None


def approve_payout(session: Session, *, firm_id: str, payout_id: int, user_id: int, actor: str,
                   now: dt.datetime | None = None) -> Payout | Refusal:
    """One approval. The last one needed pays: the withdrawal is recorded on the account."""
    row = get_payout(session, firm_id=firm_id, payout_id=payout_id, for_update=True)
    if row.status != "prepared":
        return Refusal(f"payout {row.id} is {row.status}; only a prepared payout can be approved")
    if row.prepared_by_user_id == user_id:
        return Refusal("maker-checker: you prepared this payout; another finance user must approve it")
    own = _own_payout(session, row, user_id)
    if own is not None:
        return own
    if user_id in set(session.scalars(select(PayoutApproval.user_id).where(PayoutApproval.payout_id == row.id))):
        return Refusal(f"you have already approved payout {row.id}; it needs {row.approvals_needed} different approvers")
    done = set(_standing_approvers(session, row.id))
    independent = independence_refusal(session, row, user_id, done)
    if independent is not None:
        return independent
    account = get_account(session, firm_id=firm_id, account_id=row.account_id, for_update=True)
    found = assess(session, account=account, manual_deduction=row.manual_deduction,
                   manual_reason=row.deduction_reason, ignore_open=row.id)
    if not found.ok:
        return Refusal("the payout is not eligible now: " + "; ".join(f"{c.name}: {c.reason}" for c in found.failed),
                       [c.name for c in found.failed])
    a = found.amount
    assert a is not None
    if (a.trader_amount, a.withdrawal, a.penalties) != (row.trader_amount, row.withdrawal, row.penalties):
        return Refusal(f"the account has changed since payout {row.id} was prepared (now {fmt(a.trader_amount)} "
                       f"instead of {fmt(row.trader_amount)}); prepare it again")
    final = len(done) + 1 >= row.approvals_needed
    if final:
        # the withdrawal first: when it cannot be stored as this payout's, nothing of the approval is
        failure = _withdraw(session, row, account, now=now)
        if failure is not None:
            audit.append(session, actor=actor, action="payout.withdrawal_refused", entity="payout",
                         entity_id=str(row.id), before={"status": row.status},
                         after={"status": row.status, "event": f"payout-{row.id}", "reason": failure},
                         firm_id=firm_id)
            return Refusal(f"payout {row.id} is not approved and nothing was withdrawn: {failure}. A person must "
                           "look at the stored event before this payout can be paid")
    session.add(PayoutApproval(payout_id=row.id, user_id=user_id, firm_id=firm_id, created_at=now_utc()))
    session.flush()
    audit.append(session, actor=actor, action="payout.approval", entity="payout", entity_id=str(row.id),
                 after={"approvals": len(done) + 1, "needed": row.approvals_needed}, firm_id=firm_id)
    if not final:
        return row
    _mark_paid(session, row, account, actor)
    return row


def withdrawal_ts(session: Session, account: m.Account, now: dt.datetime | None) -> dt.datetime:
    """When the withdrawal happens for the engine: right after the latest event stored for the account
    (or the firm's clock), so that it is never out of order and a platform event that arrives late
    is refused no more than it would have been without it; now, for an account without events. News is
    left out (its time is when it is scheduled, often ahead, and it moves no account's time), and so are
    events evaluation set aside (never applied).

    In the scale-out deployment the log is the stream, which the database cannot search: the
    withdrawal is stamped with the approval's time and carries ``"at": "position"``, so the engine
    applies it at its place in the stream — at the time of the account's last applied event
    (:class:`~propcrm.domain.events.Balance`) — and a platform event older than the approval that
    arrives afterwards is applied as it would have been without the withdrawal. ``propcrm replay`` of
    the stream applies it at the same point."""
    from ..adapters.bus import bus_mode

    if bus_mode():
        return (now or now_utc()).astimezone(UTC)
    latest = session.scalar(select(func.max(m.RawEvent.ts)).where(
        m.RawEvent.firm_id == account.firm_id,
        (m.RawEvent.account_id == account.id) | m.RawEvent.account_id.is_(None),
        m.RawEvent.type != "news", m.RawEvent.status != "rejected"))
    return latest if latest is not None else (now or now_utc()).astimezone(UTC)


def _withdrawal_line(row: Payout, account: m.Account, ts: dt.datetime, *, at_position: bool = False) -> bytes:
    event = {"id": f"payout-{row.id}", "type": "balance", "account": account.external_id,
             "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "amount": money(-row.withdrawal),
             "reason": "payout", "payout": row.id, "trader_amount": money(row.trader_amount)}
    if at_position:  # the scale-out log: applied at its place in the stream (withdrawal_ts)
        event["at"] = "position"
    return json.dumps(event).encode() + b"\n"


def _stored_withdrawal_problem(stored_account_id: int | None, body: bytes, row: Payout, account: m.Account) -> str | None:
    """Why a stored ``payout-<id>`` event of the payouts' source is not this payout's withdrawal, or
    ``None`` when it is exactly that (same account, a ``payout`` balance event of minus the withdrawal,
    naming this payout): then it is the one withdrawal, and is not written again."""
    try:
        event = json.loads(body)
        same = (stored_account_id == account.id and isinstance(event, dict) and event.get("type") == "balance"
                and event.get("reason") == "payout" and event.get("account") == account.external_id
                and event.get("payout") == row.id and Decimal(str(event.get("amount"))) == -row.withdrawal)
    except (ValueError, ArithmeticError):
        same = False
    if same:
        return None
    return (f"the event log already holds an event payout-{row.id} of source {SOURCE} that is not this payout's "
            f"withdrawal of {fmt(row.withdrawal)} from {account.external_id}")


def _withdraw(session: Session, row: Payout, account: m.Account, *, now: dt.datetime | None) -> str | None:
    """Store the payout's withdrawal — the balance event ``payout-<id>`` of source ``propcrm-payouts`` —
    so that it exists exactly once. ``None`` when it is stored (now, or already, exactly as this payout's);
    otherwise why not: an event with that id that is something else (the idempotency key would make the
    withdrawal a silent "duplicate" and the payout would be paid without being withdrawn), or a refusal by
    ingestion. Then nothing is stored (the line is not even quarantined, where it could be re-submitted
    without the payout)."""
    from ..adapters.bus import bus_mode
    from .ingest import ingest

    if bus_mode():
        return _withdraw_on_bus(session, row, account, now=now)
    event_id = f"payout-{row.id}"
    stored = session.execute(select(m.RawEvent.account_id, m.RawEvent.body).where(
        m.RawEvent.firm_id == account.firm_id, m.RawEvent.source == SOURCE, m.RawEvent.event_id == event_id)).first()
    if stored is not None:
        return _stored_withdrawal_problem(stored.account_id, stored.body, row, account)
    line = _withdrawal_line(row, account, withdrawal_ts(session, account, now))
    savepoint = session.begin_nested()
    report = ingest(session, firm_id=account.firm_id, source=SOURCE, body=line)
    outcome = report.lines[0] if len(report.lines) == 1 else None
    if outcome is not None and outcome.status == "accepted":
        savepoint.commit()
        return None
    savepoint.rollback()
    if outcome is None:
        return f"ingestion answered {len(report.lines)} outcomes for the one withdrawal line"
    if outcome.status == "duplicate":  # stored meanwhile by someone else: what is it?
        stored = session.execute(select(m.RawEvent.account_id, m.RawEvent.body).where(
            m.RawEvent.firm_id == account.firm_id, m.RawEvent.source == SOURCE,
            m.RawEvent.event_id == event_id)).first()
        if stored is None:
            return f"ingestion called the withdrawal {event_id} a duplicate, but no such event is stored"
        return _stored_withdrawal_problem(stored.account_id, stored.body, row, account)
    return f"ingestion refused the withdrawal event: {outcome.reason}"


WITHDRAWAL_APPLIED = "payout.withdrawal_applied"
"""The audit action the scale-out partition worker appends when it applies a payout's withdrawal."""


def withdrawal_outbox_key(payout_id: int) -> str:
    return f"payout:{payout_id}:withdrawal"


def _withdraw_on_bus(session: Session, row: Payout, account: m.Account, *, now: dt.datetime | None) -> str | None:
    """The scale-out deployment's :func:`_withdraw`: the withdrawal line is committed as an outbox row
    (``bus_event``) in the approval's transaction, so it exists exactly when the approval does; the
    dispatcher publishes it to the account's partition with a de-duplication id derived from the event
    id, and the partition worker applies it once by that id. The outbox row's unique key is the
    idempotency lock: a row already there must be exactly this payout's withdrawal."""
    from .ingest import prepare_for_bus

    event_id = f"payout-{row.id}"
    key = withdrawal_outbox_key(row.id)
    stored = session.scalar(select(m.OutboxMessage).where(m.OutboxMessage.dedupe_key == key))
    if stored is not None:
        payload = stored.payload or {}
        mine = stored.firm_id == account.firm_id and payload.get("account") == account.external_id
        return _stored_withdrawal_problem(account.id if mine else None, str(payload.get("line", "")).encode(), row,
                                          account)
    line = _withdrawal_line(row, account, withdrawal_ts(session, account, now), at_position=True)
    savepoint = session.begin_nested()
    # the checks of ingestion (an event's shape and bounds, its account), without writing to raw_events
    prepared = prepare_for_bus(session, firm_id=account.firm_id, source=SOURCE, body=line)
    savepoint.rollback()  # a refusal is not quarantined, where it could be re-submitted without the payout
    if prepared.outcomes or len(prepared.lines) != 1:
        reasons = "; ".join(o.reason or o.status for o in prepared.outcomes.values())
        return f"ingestion refused the withdrawal event: {reasons or 'no line to publish'}"
    queue_bus_event(session, firm_id=account.firm_id, key=key, source=SOURCE, event_id=event_id,
                    account=account.external_id, line=line, payout=row.id)
    return None


def queue_bus_event(session: Session, *, firm_id: str, key: str, source: str, event_id: str, account: str | None,
                    line: bytes, **extra: Any) -> None:
    """Commit an event the system writes itself (a withdrawal, a scaling's carried profit) to the
    scale-out event log: a ``bus_event`` outbox row in the caller's transaction, unique by ``key``,
    which the dispatcher publishes to the account's partition (``services.dispatch``)."""
    now = now_utc()
    session.add(m.OutboxMessage(firm_id=firm_id, kind="bus_event", dedupe_key=key, status="pending", attempts=0,
                                next_attempt_at=now, created_at=now,
                                payload={"source": source, "event_id": event_id, "account": account,
                                         "line": line.decode().rstrip("\n"), **extra}))
    session.flush()


def _bus_withdrawal_problem(session: Session, account: m.Account, payout_id: int, event_id: str) -> str | None:
    """Scale-out: why an approved payout's withdrawal is not (yet) in the account's stored state, or
    ``None``. Applied means the partition worker audited :data:`WITHDRAWAL_APPLIED` for it and the
    account's stored state (a partition snapshot) is at or past the message that carried it."""
    from ..adapters.db.models_cluster import DeadLetter

    applied = session.scalar(select(m.AuditEntry.after).where(
        m.AuditEntry.firm_id == account.firm_id, m.AuditEntry.action == WITHDRAWAL_APPLIED,
        m.AuditEntry.entity == "payout", m.AuditEntry.entity_id == str(payout_id)).limit(1))
    if applied is None:
        refused = session.scalar(select(DeadLetter.reason).where(
            DeadLetter.firm_id == account.firm_id, DeadLetter.source == SOURCE,
            DeadLetter.event_id == event_id).limit(1))
        if refused is not None:
            return f"the withdrawal of payout {payout_id} is rejected ({refused}); it must be applied to the account first"
        return f"the withdrawal of payout {payout_id} is pending; it must be applied to the account first"
    state_row = session.get(m.AccountState, account.id)
    if state_row is None or state_row.last_seq < int((applied or {}).get("stream_seq") or 0):
        return (f"the withdrawal of payout {payout_id} is applied but not yet in the account's stored state "
                "(the partition's next snapshot)")
    return None


def _mark_paid(session: Session, row: Payout, account: m.Account, actor: str) -> None:
    """The payout is approved: its withdrawal is stored (:func:`_withdraw`); audit it and tell the trader."""
    event_id = f"payout-{row.id}"
    row.status, row.open_slot, row.event_id, row.decided_at = "approved", None, event_id, now_utc()
    # -- platforms (issue 20): withdraw it on the trading platform too, through the outbox
    from ..features.platforms.payouts import queue_platform_withdrawal
    queue_platform_withdrawal(session, account, payout_id=row.id, amount=row.withdrawal)
    # -- end platforms
    audit.append(session, actor=actor, action="payout.approved", entity="payout", entity_id=str(row.id),
                 before={"status": "prepared"},
                 after={"status": "approved", "account": account.external_id, "trader_amount": row.trader_amount,
                        "withdrawal": row.withdrawal, "event": event_id}, firm_id=account.firm_id)
    if account.trader_id is not None:
        notify_trader(session, firm_id=account.firm_id, trader_id=account.trader_id, kind="payout",
                      key=f"payout:{row.id}:approved", account=account.external_id,
                      title=f"Payout {row.id} approved: {fmt(row.trader_amount)}",
                      message=approval_notice(row, account, currency=_program(session, account).pack.currency),
                      author=actor)


def approval_notice(row: Payout, account: m.Account, *, currency: str) -> str:
    """The approval in words a trader reads: the amount, how it is made up, and how it will be paid."""
    parts = [f"Your payout {row.id} of {fmt(row.trader_amount)} {currency} from account {account.external_id} is "
             f"approved."]
    made = f"It is your {fmt_pct(row.split_pct) if row.split_pct is not None else '100%'} share of the payable profit of {fmt(_payable(row))} {currency}"
    taken = []
    if row.penalties:
        taken.append(f"{fmt(row.penalties)} of profit the rules count only partly")
    if row.manual_deduction:
        taken.append(f"{fmt(row.manual_deduction)} deducted by finance"
                     + (f" ({row.deduction_reason})" if row.deduction_reason else ""))
    if row.profit is not None and taken:
        made += f" (profit {fmt(row.profit)} less {' and '.join(taken)})"
    parts.append(made + ", rounded down to the cent.")
    if row.method:
        parts.append(f"Finance sends it by {method_words(row.method)} to {row.destination}; you will be told "
                     "when it is sent, with the payment's reference.")
    parts.append("Your statement is in the portal under Payouts.")
    return " ".join(parts)


def _payable(row: Payout) -> Decimal:
    for step in row.steps or ():
        if step.get("label") == "payable profit":
            return Decimal(str(step["amount"]))
    return (row.trader_amount or ZERO) + (row.firm_amount or ZERO)


def mark_sent(session: Session, *, firm_id: str, payout_id: int, reference: Any, actor: str) -> Payout | Refusal:
    """Finance records that an approved payout's money is sent, with the payment's reference (a bank
    transfer's id, a transaction hash). Once: a payout is sent at most once. Audited; the trader is told."""
    text = _printable("reference", reference, MAX_REFERENCE)
    row = get_payout(session, firm_id=firm_id, payout_id=payout_id, for_update=True)
    if row.status != "approved":
        return Refusal(f"payout {row.id} is {row.status}; only an approved payout is sent")
    if row.sent_at is not None:
        return Refusal(f"payout {row.id} was sent already on {row.sent_at:%Y-%m-%d %H:%M} UTC "
                       f"(reference {row.payment_reference})")
    row.payment_reference, row.sent_at, row.sent_by = text, now_utc(), actor
    audit.append(session, actor=actor, action="payout.sent", entity="payout", entity_id=str(row.id),
                 before={"sent": False}, after={"sent": True, "reference": text, "method": row.method},
                 firm_id=firm_id)
    if row.trader_id is not None:
        how = f" by {method_words(row.method)} to {row.destination}" if row.method else ""
        notify_trader(session, firm_id=firm_id, trader_id=row.trader_id, kind="payout",
                      key=f"payout:{row.id}:sent", title=f"Payout {row.id} sent",
                      message=f"Your payout {row.id} of {fmt(row.trader_amount)} was sent{how}; payment reference "
                              f"{text}.", author=actor)
    return row


def reject_payout(session: Session, *, firm_id: str, payout_id: int, reason: str, actor: str) -> Payout | Refusal:
    """Finance rejects a request with a reason the trader sees."""
    text = reason_text(reason)
    row = get_payout(session, firm_id=firm_id, payout_id=payout_id, for_update=True)
    if row.status not in OPEN:
        return Refusal(f"payout {row.id} is {row.status}; only a requested or prepared payout can be rejected")
    before = row.status
    row.status, row.open_slot, row.reason, row.decided_at = "rejected", None, text, now_utc()
    audit.append(session, actor=actor, action="payout.rejected", entity="payout", entity_id=str(row.id),
                 before={"status": before}, after={"status": "rejected", "reason": text}, firm_id=firm_id)
    if row.trader_id is not None:
        notify_trader(session, firm_id=firm_id, trader_id=row.trader_id, kind="payout",
                      key=f"payout:{row.id}:rejected", title=f"Payout {row.id} rejected",
                      message=f"Your payout request {row.id} was rejected: {text}", author=actor)
    return row


def resolve_violation(session: Session, *, firm_id: str, decision_id: int, reason: str, actor_user_id: int,
                      actor: str) -> m.Override | Refusal:
    """A risk officer marks a violation as dealt with (it no longer blocks payouts); the decision stays."""
    text = reason_text(reason)
    decision = session.get(m.Decision, decision_id)
    if decision is None or decision.firm_id != firm_id:
        raise NotFound(f"no decision {decision_id}")
    if decision.kind != "violation":
        return Refusal(f"decision {decision_id} is a {decision.kind}; only violations are resolved here "
                       "(a breach is cleared with POST /accounts/{id}/overrides)")
    if session.scalar(select(m.Override.id).where(m.Override.decision_id == decision_id)) is not None:
        return Refusal(f"decision {decision_id} is already resolved")
    row = m.Override(firm_id=firm_id, account_id=decision.account_id, decision_id=decision_id,
                     action="resolve_violation", reason=text, actor_user_id=actor_user_id)
    session.add(row)
    session.flush()
    account = session.get(m.Account, decision.account_id)
    audit.append(session, actor=actor, action="account.resolve_violation", entity="account",
                 entity_id=account.external_id, after={"decision": decision_id, "override": row.id, "reason": text},
                 firm_id=firm_id)
    return row


class _PayoutFigures(msgspec.Struct):
    """The only fields of an engine state (``domain.state.AccountState``, a msgpack map) that an amount
    reads — ``balance`` and ``deductions``, with the same types and defaults; decoding just these skips
    the rest of the state (positions, recent actions, levels), which is most of the work of decoding."""

    balance: Decimal
    deductions: Decimal = Decimal(0)


_FIGURES_DECODER = msgspec.msgpack.Decoder(_PayoutFigures)


def open_liability(session: Session, *, firm_id: str, chunk: int = 2000) -> tuple[Decimal, list[dict[str, Any]]]:
    """What the firm would owe its funded accounts if each were paid now (trader's amounts, rounded down).

    Each account's amount is :func:`amount_now`'s, computed from a few set-wide reads instead of
    queries per account: the funded accounts with their states (in id order, ``chunk`` at a time), the
    firm's approved payouts (count per lineage, penalties per account), the latest applied scaling into
    each account, and each pack version compiled once."""
    approved_by_lineage: dict[str, int] = {}
    earlier_by_account: dict[int, Decimal] = {}
    for account_id, lineage, penalties in session.execute(
            select(Payout.account_id, Payout.lineage, Payout.penalties)
            .where(Payout.firm_id == firm_id, Payout.status == "approved")):
        approved_by_lineage[lineage] = approved_by_lineage.get(lineage, 0) + 1
        earlier_by_account[account_id] = earlier_by_account.get(account_id, ZERO) + (penalties or ZERO)
    latest_scaling: dict[int, Scaling] = {}
    for row in session.scalars(select(Scaling).where(Scaling.firm_id == firm_id, Scaling.status == "applied",
                                                     Scaling.new_account_id.is_not(None)).order_by(Scaling.id)):
        latest_scaling[row.new_account_id] = row  # by id: the last one kept is the latest
    carrying = {account_id: row for account_id, row in latest_scaling.items()
                if _carries(row) and account_id not in earlier_by_account}
    wanted = sorted({row.account_id for row in carrying.values() if not row.carried_parts})
    old_names: dict[int, str] = {}
    for start in range(0, len(wanted), 500):
        old_names.update(session.execute(select(m.Account.id, m.Account.external_id)
                                         .where(m.Account.id.in_(wanted[start:start + 500]))).all())
    versions: dict[int, m.RulePackVersion] = {}
    programs: dict[tuple[int, str], PhaseProgram] = {}

    def program_of(version_id: int, phase: str) -> PhaseProgram:
        key = (version_id, phase)
        found = programs.get(key)
        if found is None:
            version = versions.get(version_id)
            if version is None:
                version = versions[version_id] = session.get(m.RulePackVersion, version_id)
            found = programs[key] = compiled_pack(version).phase(phase)
        return found

    total = ZERO
    rows = []
    after = None
    while True:
        query = (select(m.Account.id, m.Account.external_id, m.Account.pack_version_id, m.Account.phase,
                        m.AccountState.state)
                 .outerjoin(m.AccountState, m.AccountState.account_id == m.Account.id)
                 .where(m.Account.firm_id == firm_id, m.Account.status == "funded")
                 .order_by(m.Account.id).limit(chunk))
        if after is not None:
            query = query.where(m.Account.id > after)
        batch = session.connection().execute(query).all()  # plain rows; the session flushed at its first query
        if not batch:
            break
        after = batch[-1].id
        for account_id, external_id, version_id, phase, state in batch:
            program = program_of(version_id, phase)
            if state is None or program.target is not None:
                continue
            st = _FIGURES_DECODER.decode(state)
            penalties = _penalties_net(program, st, earlier_by_account.get(account_id, ZERO))  # type: ignore[arg-type]
            done = approved_by_lineage.get(lineage_of(external_id), 0)
            scaling = carrying.get(account_id)
            carried = () if scaling is None else _carried_parts(scaling, old_names.get(scaling.account_id))
            trader_amount = _amount_of(program, st, external_id=external_id, done=done,  # type: ignore[arg-type]
                                       penalties=penalties, carried=carried).trader_amount
            if trader_amount > 0:
                total += trader_amount
                rows.append({"account_id": account_id, "account": external_id, "trader_amount": money(trader_amount)})
        if len(batch) < chunk:
            break
    return total, rows


__all__ = ["amount_now", "approve_payout", "assess", "queue_bus_event", "carried_over", "get_payout", "lineage_of", "list_payouts", "payouts_query",
           "open_liability", "payout_view", "prepare_payout", "preview", "reject_payout", "request_payout",
           "resolve_violation", "METHODS", "approval_notice", "mark_sent", "method_words", "payment_details"]
