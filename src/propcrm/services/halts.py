"""The firm-wide kill switch: halt trading on a group of a firm's accounts at once, and resume — audited.

A halt takes the accounts in its scope that may trade now (``active``, ``paused``, ``funded``), marks each
``halted`` with the halt's id (``accounts.halt_id``) and asks its platform to ``disable`` it through the
outbox, in one transaction with the halt's row and its audit entries. ``halted`` is a staff status
(:data:`propcrm.services.outcomes.HELD`): events keep being evaluated during a halt — the state, the
decisions and their effects move on (a breach still sends its own ``disable``) — but the status stays
``halted``, and a soft pause's delayed ``resume`` is cancelled by the dispatcher.

A resume restores exactly the accounts the halt stopped and that are still ``halted`` by it: each gets the
status its evaluation says now (as lifting an emergency stop does) and an ``enable`` command when that
status lets it trade. An account breached during the halt becomes ``breached`` and stays disabled; one a
person suspended meanwhile stays ``suspended``. Accounts already stopped (breached, suspended, halted by
another halt, passed, closed) are not part of a halt, so its resume never touches them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from . import audit
from .catalog import compiled_pack
from .errors import Conflict, Invalid, NotFound
from .outcomes import account_status
from .state_codec import STATE_DECODER

UTC = dt.timezone.utc
MIN_REASON, MAX_REASON = 3, 2000
TRADING = ("active", "paused", "funded")  # what a halt stops
MAX_LIST = 10_000
MAX_SHOWN = 50


def reason_text(reason: object) -> str:
    """A required reason, trimmed: 3 to 2,000 characters (:class:`Invalid` naming the field otherwise)."""
    text = reason.strip() if isinstance(reason, str) else ""
    if not MIN_REASON <= len(text) <= MAX_REASON:
        raise Invalid(f"reason: a reason of {MIN_REASON} to {MAX_REASON} characters is required")
    return text


@dataclass(frozen=True)
class HaltScope:
    """Which accounts: every filter given must hold (all of the firm's accounts with ``everything``)."""

    everything: bool = False
    product_id: int | None = None
    pack_id: str | None = None
    pack_version_id: int | None = None
    phase: str | None = None
    accounts: tuple[str, ...] = ()  # external ids

    def __post_init__(self) -> None:
        narrowed = (self.product_id is not None or self.pack_id is not None or self.pack_version_id is not None
                    or self.phase is not None or bool(self.accounts))
        if self.everything and narrowed:
            raise Invalid("scope: either all accounts of the firm or filters (product, pack, version, phase, "
                          "accounts), not both")
        if not self.everything and not narrowed:
            raise Invalid("scope: name the accounts to halt (product, pack, version, phase or a list of accounts), "
                          "or all=true for every account of the firm")
        if len(self.accounts) > MAX_LIST:
            raise Invalid(f"scope.accounts: at most {MAX_LIST:,} accounts")

    def to_dict(self) -> dict[str, Any]:
        if self.everything:
            return {"all": True}
        out: dict[str, Any] = {}
        for name in ("product_id", "pack_id", "pack_version_id", "phase"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.accounts:
            out["accounts"] = list(self.accounts)
        return out

    def describe(self) -> str:
        if self.everything:
            return "all accounts of the firm"
        words = [f"{name.replace('_', ' ')} {value}" for name, value in self.to_dict().items() if name != "accounts"]
        if self.accounts:
            words.append(f"{len(self.accounts):,} listed account(s)")
        return ", ".join(words)


def _matching(session: Session, *, firm_id: str, scope: HaltScope, statuses: tuple[str, ...] | None = TRADING):
    query = select(m.Account).where(m.Account.firm_id == firm_id)
    if statuses is not None:
        query = query.where(m.Account.status.in_(statuses))
    if scope.product_id is not None:
        query = query.where(m.Account.product_id == scope.product_id)
    if scope.pack_version_id is not None:
        query = query.where(m.Account.pack_version_id == scope.pack_version_id)
    if scope.pack_id is not None:
        versions = select(m.RulePackVersion.id).where(m.RulePackVersion.firm_id == firm_id,
                                                      m.RulePackVersion.pack_id == scope.pack_id)
        query = query.where(m.Account.pack_version_id.in_(versions))
    if scope.phase is not None:
        query = query.where(m.Account.phase == scope.phase)
    if scope.accounts:
        query = query.where(m.Account.external_id.in_(sorted(set(scope.accounts))))
    return query.order_by(m.Account.id)


@dataclass
class HaltPreview:
    scope: HaltScope
    count: int  # accounts the halt would stop
    shown: list[str]  # the first of them (external ids)
    unknown: list[str] = field(default_factory=list)  # listed external ids the firm has no account for
    not_trading: int = 0  # accounts in scope that are already stopped and stay out of it


def preview_halt(session: Session, *, firm_id: str, scope: HaltScope) -> HaltPreview:
    """How many accounts a halt of ``scope`` would stop (what the confirmation shows), changing nothing."""
    accounts = list(session.scalars(_matching(session, firm_id=firm_id, scope=scope, statuses=None)))
    trading = [a for a in accounts if a.status in TRADING]
    known = {a.external_id for a in accounts}
    return HaltPreview(scope=scope, count=len(trading), shown=[a.external_id for a in trading[:MAX_SHOWN]],
                       unknown=[x for x in scope.accounts if x not in known][:MAX_SHOWN],
                       not_trading=len(accounts) - len(trading))


def halt(session: Session, *, firm_id: str, scope: HaltScope, reason: str, actor: str,
         expected_count: int | None = None) -> m.TradingHalt:
    """Halt the trading accounts of ``scope``; ``expected_count`` (the count the person confirmed) must
    still be the count, else :class:`Conflict` and nothing changes."""
    text = reason_text(reason)
    query = _matching(session, firm_id=firm_id, scope=scope)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()  # the evaluation worker skips locked accounts; overrides wait
    accounts = list(session.scalars(query))
    if expected_count is not None and expected_count != len(accounts):
        raise Conflict(f"expected_count: {expected_count:,} account(s) were confirmed but {len(accounts):,} would "
                       "be halted now; look at the count again")
    if not accounts:
        raise Conflict(f"no trading account matches the scope ({scope.describe()}): nothing to halt")
    now = dt.datetime.now(UTC)
    row = m.TradingHalt(firm_id=firm_id, scope=scope.to_dict(), reason=text, actor=actor, accounts=len(accounts),
                        created_at=now)
    session.add(row)
    session.flush()
    entries = [dict(actor=actor, action="trading.halt", entity="trading_halt", entity_id=str(row.id),
                    after={"scope": scope.to_dict(), "accounts": len(accounts), "reason": text}, firm_id=firm_id,
                    ts=now)]
    for account in accounts:
        entries.append(dict(actor=actor, action="account.halt", entity="account", entity_id=account.external_id,
                            before={"status": account.status}, after={"status": "halted", "halt": row.id},
                            firm_id=firm_id, ts=now))
        session.add(_command(account, row, "disable", now))
        account.status = "halted"
        account.halt_id = row.id
    session.flush()
    audit.append_many(session, entries)
    return row


def resume(session: Session, *, firm_id: str, halt_id: int, reason: str, actor: str) -> m.TradingHalt:
    """Let the accounts this halt stopped trade again — those still ``halted`` by it, each with the status
    its evaluation says now (an account breached meanwhile is ``breached`` and stays disabled)."""
    text = reason_text(reason)
    row = get_halt(session, firm_id=firm_id, halt_id=halt_id)
    if row.resumed_at is not None:
        raise Conflict(f"halt {row.id} was already resumed at {row.resumed_at.isoformat()} by {row.resumed_by}")
    query = select(m.Account).where(m.Account.firm_id == firm_id, m.Account.halt_id == row.id).order_by(m.Account.id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    accounts = list(session.scalars(query))
    now = dt.datetime.now(UTC)
    entries: list[dict] = []
    enabled = 0
    outcomes: dict[str, int] = {}
    for account in accounts:
        account.halt_id = None
        if account.status != "halted":  # a person stopped or closed it meanwhile: theirs to lift
            continue
        status = _evaluated_status(session, account)
        entries.append(dict(actor=actor, action="account.resume", entity="account", entity_id=account.external_id,
                            before={"status": "halted", "halt": row.id}, after={"status": status}, firm_id=firm_id,
                            ts=now))
        account.status = status
        outcomes[status] = outcomes.get(status, 0) + 1
        if status in TRADING:
            session.add(_command(account, row, "enable", now))
            enabled += 1
    row.resumed_at, row.resumed_by, row.resume_reason, row.resumed = now, actor, text, enabled
    session.flush()
    audit.append_many(session, [dict(actor=actor, action="trading.resume", entity="trading_halt",
                                     entity_id=str(row.id),
                                     after={"scope": row.scope, "halted": row.accounts, "resumed": enabled,
                                            "statuses": outcomes, "reason": text},
                                     firm_id=firm_id, ts=now), *entries])
    return row


def _evaluated_status(session: Session, account: m.Account) -> str:
    """The account status the account's evaluation says (``active`` when it has no state yet)."""
    version = session.get(m.RulePackVersion, account.pack_version_id)
    program = compiled_pack(version).phase(account.phase)
    state_row = session.get(m.AccountState, account.id)
    engine_status = STATE_DECODER.decode(state_row.state).status if state_row is not None else "active"
    return account_status(engine_status, program)


def _command(account: m.Account, row: m.TradingHalt, command: str, now: dt.datetime) -> m.OutboxMessage:
    return m.OutboxMessage(
        firm_id=account.firm_id, kind="platform_command",
        payload={"command": command, "account": account.external_id, "platform": account.platform,
                 "login": account.login, "trader_id": account.trader_id, "halt": row.id,
                 "action": "halt" if command == "disable" else "resume"},
        dedupe_key=f"halt:{row.id}:{account.id}:{command}", status="pending", attempts=0, next_attempt_at=now,
        created_at=now)


def get_halt(session: Session, *, firm_id: str, halt_id: int) -> m.TradingHalt:
    row = session.scalars(select(m.TradingHalt).where(m.TradingHalt.firm_id == firm_id,
                                                      m.TradingHalt.id == halt_id)).one_or_none()
    if row is None:
        raise NotFound(f"no trading halt {halt_id}")
    return row


def list_halts(session: Session, *, firm_id: str, limit: int = 100) -> list[m.TradingHalt]:
    return list(session.scalars(select(m.TradingHalt).where(m.TradingHalt.firm_id == firm_id)
                                .order_by(m.TradingHalt.id.desc()).limit(limit)))


def still_halted(session: Session, *, firm_id: str, halt_id: int) -> int:
    """Accounts of the halt that are still ``halted`` (what a resume would restore)."""

    return session.scalar(select(func.count()).select_from(m.Account).where(
        m.Account.firm_id == firm_id, m.Account.halt_id == halt_id, m.Account.status == "halted")) or 0


def halt_view(row: m.TradingHalt, *, still: int | None = None) -> dict[str, Any]:
    return {"id": row.id, "scope": row.scope, "reason": row.reason, "actor": row.actor, "accounts": row.accounts,
            "created_at": row.created_at, "resumed_at": row.resumed_at, "resumed_by": row.resumed_by,
            "resume_reason": row.resume_reason, "resumed": row.resumed, "still_halted": still}


__all__ = ["HaltPreview", "HaltScope", "get_halt", "halt", "halt_view", "list_halts", "preview_halt", "reason_text",
           "resume", "still_halted"]
