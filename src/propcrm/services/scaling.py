"""Capital scaling of funded accounts, by the pack's scaling plan (``RulePack.scaling``).

A review checks, for one funded account, each condition of the plan (shown with its result, like a
payout's checks): the review period has passed since funding or the last scaling, the period's net
profit (payouts withdrawn + unpaid profit) reaches ``min_profit_pct`` of the size, enough payouts,
the balance in profit, the risk score below the threshold, no unresolved violation, no open case,
the account flat and settled, and the size below the cap.

An eligible account is scaled at once (firm setting ``scaling_mode: auto``) or queued for a risk
officer's approval (``approval``, the default). Scaling stores a scaled pack version
(``domain.scaling.scaled_pack``: the size grown, absolute amounts in proportion, the split raised),
opens a new funded account ``<challenge>.s<k>`` bound to it (created on the platform through the
outbox), carries the unpaid profit over as an ``adjustment`` balance event, and closes the old
account (``disable``). The carried profit is recorded with the split in force when it was earned
(``scalings.carried_parts``: the old account's split for its payout count, tier included), and the
new account's first payout pays it at that split, not at the raised one (``payouts.carried_over``).
Each account keeps one pack version for its whole life, so its decisions replay byte for byte; the
history is the ``scalings`` table and the audit chain.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import Payout, Scaling
from ..domain.money import HUNDRED, ZERO, fmt, fmt_pct
from ..domain.payouts import Carried, Check
from ..domain.scaling import add_months, next_size, scaled_pack, split_after
from . import audit
from .accounts import compiled_pack, get_account, money
from .cases import open_cases_touching, risk_score_of
from .catalog import add_pack, create_account, pack_of
from .communications import notify_trader
from .errors import NotFound
from .evaluation import STATE_DECODER
from .lifecycle import Refusal, now_utc, reason_text, settings_of
from .payouts import OPEN, SOURCE, queue_bus_event, unresolved_violations, unsettled_reason, withdrawal_ts, amount_now, lineage_accounts, lineage_of


@dataclass
class Review:
    account: m.Account
    checks: list[Check] = field(default_factory=list)
    from_size: Decimal | None = None
    to_size: Decimal | None = None
    from_split: Decimal | None = None
    to_split: Decimal | None = None
    step: int = 0
    carry: Decimal = ZERO
    carried: tuple[Carried, ...] = ()  # ``carry`` by the split it was earned at

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"account_id": self.account.id, "account": self.account.external_id, "eligible": self.ok,
                "checks": [c.to_dict() for c in self.checks],
                "failed_checks": [c.to_dict() for c in self.checks if not c.ok],
                "from_size": money(self.from_size), "to_size": money(self.to_size),
                "from_split": money(self.from_split), "to_split": money(self.to_split), "step": self.step,
                "carried_profit": money(self.carry), "carried_parts": [c.to_dict() for c in self.carried]}


def _steps_done(session: Session, account: m.Account) -> int:
    return session.scalar(select(func.count()).select_from(Scaling).where(
        Scaling.firm_id == account.firm_id, Scaling.lineage == lineage_of(account.external_id),
        Scaling.status == "applied")) or 0


def review(session: Session, *, account: m.Account, now: dt.datetime | None = None,
           ignore_open: int | None = None) -> Review:
    """Every condition of the pack's scaling plan for ``account`` now."""
    now = now or now_utc()
    out = Review(account=account)
    checks = out.checks
    version = session.get(m.RulePackVersion, account.pack_version_id)
    pack = pack_of(version)
    program = compiled_pack(version).phase(account.phase)
    plan = pack.scaling
    if plan is None:
        checks.append(Check("plan", False, f"pack {pack.id} v{pack.version} has no scaling plan"))
        return out
    funded = account.status == "funded" and program.target is None
    checks.append(Check("funded_and_active", funded, f"account {account.external_id} is {account.status}"
                        + ("" if funded else "; only an active funded account is scaled")))
    state_row = session.get(m.AccountState, account.id)
    st = STATE_DECODER.decode(state_row.state) if state_row is not None else None
    unsettled = unsettled_reason(session, account)
    checks.append(Check("settled", unsettled is None and st is not None,
                        unsettled or ("every event is evaluated" if st else "no trading evaluated yet")))
    if st is None or st.phase_start is None:
        return out
    size = program.initial
    out.from_size, out.from_split = size, program.phase.profit_split
    out.step = _steps_done(session, account) + 1
    out.to_size = next_size(plan, size)
    out.to_split = split_after(plan, out.step, program.phase.profit_split)
    due = add_months(st.phase_start, plan.every_months)
    checks.append(Check("period", now >= due,
                        f"the review is due {due:%Y-%m-%d} ({plan.every_months} month(s) after "
                        f"{st.phase_start:%Y-%m-%d}, the start of this account)", value=f"{now:%Y-%m-%d}",
                        required=f"{due:%Y-%m-%d}"))
    withdrawn = ZERO
    payouts = 0
    for amount in session.scalars(select(Payout.withdrawal).where(
            Payout.firm_id == account.firm_id, Payout.account_id == account.id, Payout.status == "approved")):
        withdrawn += amount or ZERO
        payouts += 1
    unpaid = st.balance - size
    period = withdrawn + unpaid
    needed = size * plan.min_profit_pct / HUNDRED
    checks.append(Check("profit", period >= needed,
                        f"net profit of the period {fmt(period)} (withdrawn {fmt(withdrawn)} + unpaid {fmt(unpaid)}); "
                        f"at least {fmt_pct(plan.min_profit_pct)} of {fmt(size)} = {fmt(needed)}",
                        value=money(period), required=money(needed)))
    checks.append(Check("payouts", payouts >= plan.min_payouts,
                        f"{payouts} payout(s) in the period; at least {plan.min_payouts}",
                        value=str(payouts), required=str(plan.min_payouts)))
    if plan.require_balance_in_profit:
        checks.append(Check("balance_in_profit", st.balance > size,
                            f"balance {fmt(st.balance)} " + (">" if st.balance > size else "≤") + f" {fmt(size)}"))
    if plan.max_risk_score is not None:
        score = risk_score_of(session, firm_id=account.firm_id, account_id=account.id)
        checks.append(Check("risk_score", score is None or score < plan.max_risk_score,
                            ("never scored" if score is None else f"risk score {score}")
                            + f"; below {plan.max_risk_score} required",
                            value=None if score is None else str(score), required=f"< {plan.max_risk_score}"))
    if plan.require_no_violations:
        problems = unresolved_violations(session, account)
        checks.append(Check("no_unresolved_violation", not problems,
                            "no unresolved breach or violation" if not problems else
                            "unresolved: " + "; ".join(f"#{d.id} {d.rule}" for d in problems[:5])))
    ids = [a.id for a in lineage_accounts(session, account)] or [account.id]
    cases = open_cases_touching(session, firm_id=account.firm_id, account_ids=ids, include_linked=True)
    # the trader reads this: the case's number, never its title (the risk team's text, may name others)
    checks.append(Check("no_open_case", not cases, "no open investigation case" if not cases else
                        "under investigation: " + ", ".join(f"case {c.id} ({c.status})" for c in cases[:3])
                        + (f" and {len(cases) - 3} more" if len(cases) > 3 else "")))
    checks.append(Check("flat", not st.positions, "no open positions" if not st.positions else
                        f"{len(st.positions)} position(s) open; the account is scaled when flat"))
    open_payout = session.scalar(select(Payout.id).where(Payout.firm_id == account.firm_id,
                                                         Payout.account_id == account.id, Payout.status.in_(OPEN)))
    checks.append(Check("no_open_payout", open_payout is None,
                        f"payout {open_payout} is open" if open_payout else "no open payout request"))
    open_scaling = session.scalar(select(Scaling.id).where(
        Scaling.firm_id == account.firm_id, Scaling.account_id == account.id, Scaling.status == "pending",
        *([Scaling.id != ignore_open] if ignore_open is not None else [])))
    checks.append(Check("no_pending_scaling", open_scaling is None,
                        f"scaling {open_scaling} awaits approval" if open_scaling else "no scaling awaiting approval"))
    checks.append(Check("below_cap", size < plan.max_balance,
                        f"size {fmt(size)} → {fmt(out.to_size)}; the cap is {fmt(plan.max_balance)}",
                        value=money(size), required=f"< {money(plan.max_balance)}"))
    # what paying the account now would pay, part by part: the payable profit (unpaid profit net of its
    # deducted profit) at the split in force now — and a part it was itself carried, at that part's split
    owed = amount_now(session, account, program, st)
    out.carry, out.carried = owed.payable, owed.still_owed()
    return out


def scaling_view(row: Scaling, *, for_trader: bool = False) -> dict[str, Any]:
    """A scaling; a trader's view names no staff member (``actor`` is None)."""
    return {"id": row.id, "account_id": row.account_id, "step": row.step, "status": row.status,
            "from_size": money(row.from_size), "to_size": money(row.to_size), "from_split": money(row.from_split),
            "to_split": money(row.to_split), "to_pack_version_id": row.to_pack_version_id,
            "new_account_id": row.new_account_id, "carried_profit": money(row.carried_profit),
            "carried_parts": row.carried_parts or [],
            "checks": row.checks or [], "actor": None if for_trader else row.actor, "reason": row.reason,
            "created_at": row.created_at,
            "decided_at": row.decided_at}


def history(session: Session, *, firm_id: str, account_id: int | None = None,
            trader_scope: int | None = None) -> list[Scaling]:
    query = select(Scaling).where(Scaling.firm_id == firm_id)
    if account_id is not None:
        account = get_account(session, firm_id=firm_id, account_id=account_id, trader_id=trader_scope)
        query = query.where(Scaling.lineage == lineage_of(account.external_id))
    return list(session.scalars(query.order_by(Scaling.id)))


def scale_account(session: Session, *, firm_id: str, account_id: int, actor: str,
                  now: dt.datetime | None = None) -> Scaling | Refusal:
    """Review one account; if eligible, scale it now (``auto``) or queue it for approval."""
    account = get_account(session, firm_id=firm_id, account_id=account_id, for_update=True)
    found = review(session, account=account, now=now)
    if not found.ok:
        failed = [c for c in found.checks if not c.ok]
        return Refusal("not eligible for scaling: " + "; ".join(f"{c.name}: {c.reason}" for c in failed),
                       [c.name for c in failed])
    row = Scaling(firm_id=firm_id, account_id=account.id, lineage=lineage_of(account.external_id), step=found.step,
                  status="pending", open_slot=1, from_size=found.from_size, to_size=found.to_size,
                  from_split=found.from_split, to_split=found.to_split, checks=[c.to_dict() for c in found.checks],
                  actor=actor, created_at=now_utc())
    session.add(row)
    session.flush()
    audit.append(session, actor=actor, action="scaling.eligible", entity="account", entity_id=account.external_id,
                 after={"scaling": row.id, "from": found.from_size, "to": found.to_size}, firm_id=firm_id)
    if settings_of(session, firm_id).scaling_mode == "auto":
        _apply(session, row, account, found, actor, now=now)
    return row


def approve_scaling(session: Session, *, firm_id: str, scaling_id: int, actor: str,
                    now: dt.datetime | None = None) -> Scaling | Refusal:
    row = _get(session, firm_id, scaling_id)
    if row.status != "pending":
        return Refusal(f"scaling {row.id} is {row.status}; only a pending scaling can be approved")
    account = get_account(session, firm_id=firm_id, account_id=row.account_id, for_update=True)
    found = review(session, account=account, now=now, ignore_open=row.id)
    if not found.ok:
        failed = [c for c in found.checks if not c.ok]
        return Refusal("no longer eligible: " + "; ".join(f"{c.name}: {c.reason}" for c in failed),
                       [c.name for c in failed])
    _apply(session, row, account, found, actor, now=now)
    return row


def reject_scaling(session: Session, *, firm_id: str, scaling_id: int, reason: str, actor: str) -> Scaling | Refusal:
    text = reason_text(reason)
    row = _get(session, firm_id, scaling_id)
    if row.status != "pending":
        return Refusal(f"scaling {row.id} is {row.status}; only a pending scaling can be rejected")
    row.status, row.open_slot, row.reason, row.decided_at = "rejected", None, text, now_utc()
    audit.append(session, actor=actor, action="scaling.rejected", entity="scaling", entity_id=str(row.id),
                 after={"reason": text}, firm_id=firm_id)
    return row


def _get(session: Session, firm_id: str, scaling_id: int) -> Scaling:
    row = session.get(Scaling, scaling_id)
    if row is None or row.firm_id != firm_id:
        raise NotFound(f"no scaling {scaling_id}")
    return row


def _apply(session: Session, row: Scaling, account: m.Account, found: Review, actor: str,
           now: dt.datetime | None) -> None:
    from ..adapters.bus import bus_mode
    from .ingest import ingest

    version = session.get(m.RulePackVersion, account.pack_version_id)
    pack = pack_of(version)
    bigger = scaled_pack(pack, step=row.step, size=found.to_size, split=found.to_split, funded_phase=account.phase)
    scaled_version = add_pack(session, firm_id=account.firm_id, pack=bigger)
    root = lineage_of(account.external_id)
    new = create_account(session, firm_id=account.firm_id, external_id=f"{root}.s{row.step}",
                         pack_version_id=scaled_version.id, platform=account.platform, phase=account.phase,
                         trader_id=account.trader_id, product_id=account.product_id)
    new.status = "funded"
    before = account.status
    account.status = "closed"
    row.status, row.open_slot, row.decided_at = "applied", None, now_utc()
    row.to_pack_version_id, row.new_account_id, row.carried_profit = scaled_version.id, new.id, found.carry
    row.carried_parts = [c.to_dict() for c in found.carried]
    base = {"platform": account.platform, "trader_id": account.trader_id, "scaling": row.id}
    session.add(m.OutboxMessage(firm_id=account.firm_id, kind="platform_command",
                                dedupe_key=f"lifecycle:scaling:{row.id}:create_account",
                                payload={**base, "command": "create_account", "account": new.external_id,
                                         "phase": new.phase, "previous": account.external_id,
                                         "account_size": money(found.to_size)}))
    session.add(m.OutboxMessage(firm_id=account.firm_id, kind="platform_command",
                                dedupe_key=f"lifecycle:scaling:{row.id}:disable",
                                payload={**base, "command": "disable", "account": account.external_id,
                                         "login": account.login}))
    session.flush()
    if found.carry > 0:
        ts = withdrawal_ts(session, account, now)
        line = json.dumps({"id": f"scaling-{row.id}-carry", "type": "balance", "account": new.external_id,
                           "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "amount": money(found.carry),
                           "reason": "adjustment", "scaling": row.id})
        if bus_mode():  # the scale-out log: published by the dispatcher, applied once by its id
            queue_bus_event(session, firm_id=account.firm_id, key=f"scaling:{row.id}:carry", source=SOURCE,
                            event_id=f"scaling-{row.id}-carry", account=new.external_id, line=line.encode(),
                            scaling=row.id)
        else:
            ingest(session, firm_id=account.firm_id, source=SOURCE, body=line.encode() + b"\n")
    audit.append(session, actor=actor, action="account.scale", entity="account", entity_id=account.external_id,
                 before={"status": before, "size": found.from_size, "split": found.from_split,
                         "pack": f"{version.pack_id} v{version.version}"},
                 after={"status": "closed", "scaled_to": new.external_id, "size": found.to_size,
                        "split": found.to_split, "pack": f"{scaled_version.pack_id} v{scaled_version.version}",
                        "carried_profit": found.carry, "carried_parts": row.carried_parts, "scaling": row.id},
                 firm_id=account.firm_id)
    if account.trader_id is not None:
        notify_trader(session, firm_id=account.firm_id, trader_id=account.trader_id, kind="scaling",
                      key=f"scaling:{row.id}:applied", account=new.external_id,
                      title=f"Your account is scaled to {fmt(found.to_size)}",
                      message=f"Congratulations: account {account.external_id} is scaled from {fmt(found.from_size)} "
                              f"to {fmt(found.to_size)} as {new.external_id}"
                              + (f", profit split {fmt_pct(found.to_split)}" if found.to_split is not None else "")
                              + (f"; unpaid profit {fmt(found.carry)} carried over, paid at "
                                 + ", ".join(f"{fmt_pct(c.split_pct)} ({fmt(c.amount)})" for c in found.carried)
                                 + ", the split it was earned at" if found.carry else ""),
                      author=actor)


def run(session: Session, *, firm_id: str, actor: str = "system", now: dt.datetime | None = None) -> list[dict]:
    """Review every funded account of the firm whose pack has a scaling plan; scale or queue the eligible."""
    out = []
    for account in list(session.scalars(select(m.Account).where(m.Account.firm_id == firm_id,
                                                                m.Account.status == "funded").order_by(m.Account.id))):
        version = session.get(m.RulePackVersion, account.pack_version_id)
        if pack_of(version).scaling is None:
            continue
        result = scale_account(session, firm_id=firm_id, account_id=account.id, actor=actor, now=now)
        if isinstance(result, Refusal):
            out.append({"account": account.external_id, "result": "not eligible", "reason": result.reason})
        else:
            out.append({"account": account.external_id, "result": result.status, "scaling": result.id,
                        "to_size": money(result.to_size)})
    return out


__all__ = ["Review", "approve_scaling", "history", "reject_scaling", "review", "run", "scale_account", "scaling_view"]
