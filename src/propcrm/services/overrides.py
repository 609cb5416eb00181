"""A risk officer's hand on an account: clear a false-positive breach, emergency-stop, lift a stop.

Each is one unit of work: an ``overrides`` row (who, why, which decision), the account's status, the
engine's stored state where it matters, an audit entry with before/after, and the platform command
in the outbox (delivered after commit, with retries). The decision that was cleared stays as it was;
the override is recorded beside it.

The account row is locked first (``SELECT … FOR UPDATE`` on PostgreSQL, where the evaluation worker
claims accounts with ``SKIP LOCKED``; SQLite has one writer at a time), so an override and an
evaluation of the same account never interleave.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..domain.program import PhaseProgram
from . import audit
from .accounts import compiled_pack, get_account
from .errors import Conflict, Invalid, NotFound
from .evaluation import STATE_DECODER, STATE_ENCODER

UTC = dt.timezone.utc
MIN_REASON, MAX_REASON = 3, 2000
LIVE_STATUSES = ("active", "paused", "funded")

Action = Literal["clear_breach", "lift_stop"]


def _reason(reason: str) -> str:
    text = (reason or "").strip() if isinstance(reason, str) else ""
    if not MIN_REASON <= len(text) <= MAX_REASON:
        raise Invalid(f"a reason of {MIN_REASON} to {MAX_REASON} characters is required")
    return text


def _program(session: Session, account: m.Account) -> PhaseProgram:
    version = session.get(m.RulePackVersion, account.pack_version_id)
    assert version is not None
    return compiled_pack(version).phase(account.phase)


def _status_of(engine_status: str, program: PhaseProgram) -> str:
    """The account status an engine status means (as the evaluation worker maps it)."""
    return "funded" if engine_status == "active" and program.target is None else engine_status


def _command(session: Session, account: m.Account, override: m.Override, command: str, **extra) -> None:
    session.add(
        m.OutboxMessage(
            firm_id=account.firm_id,
            kind="platform_command",
            payload={"command": command, "account": account.external_id, "platform": account.platform,
                     "login": account.login, "trader_id": account.trader_id, "override": override.id,
                     "action": override.action, **extra},  # the reason stays in propcrm (audit, overrides)
            dedupe_key=f"override:{override.id}:{command}",
        )
    )


def override_account(
    session: Session,
    *,
    firm_id: str,
    account_id: int,
    reason: str,
    actor_user_id: int,
    actor: str,
    action: Action = "clear_breach",
    decision_id: int | None = None,
) -> m.Override:
    """``clear_breach``: a breached account returns to ``active`` (``funded`` in a funded phase).

    The engine's state goes back to ``active`` with its watch band and deadlines recomputed, so the
    next event is evaluated in full (a loss that is still there breaches again). The platform is asked
    to ``enable`` the account. ``decision_id`` names the breach being cleared; by default the account's
    latest breach.

    ``lift_stop``: a suspended (emergency-stopped) account returns to the status its evaluation says;
    the platform is asked to ``enable`` it when that status lets it trade.
    """
    text = _reason(reason)
    if action not in ("clear_breach", "lift_stop"):
        raise Invalid("action must be clear_breach or lift_stop")
    account = get_account(session, firm_id=firm_id, account_id=account_id, for_update=True)
    before = account.status
    program = _program(session, account)
    state_row = session.get(m.AccountState, account.id)
    if action == "clear_breach":
        if account.status != "breached":
            raise Conflict(f"account {account.external_id} is {account.status}, not breached: there is no breach to clear")
        decision = _breach_decision(session, account=account, decision_id=decision_id)
        if state_row is not None:
            st = STATE_DECODER.decode(state_row.state)
            if st.status == "breached":
                st.status = "active"
                st.paused_until = None
                program.refresh_deadline(st)
                program.refresh_watch(st)
                state_row.state = STATE_ENCODER.encode(st)
                state_row.updated_at = dt.datetime.now(UTC)
                state_row.generation = (state_row.generation or 0) + 1  # stale for any in-memory copy
        account.status = _status_of("active", program)
    else:
        if account.status != "suspended":
            raise Conflict(f"account {account.external_id} is {account.status}, not suspended: there is no stop to lift")
        if decision_id is not None:
            raise Invalid("decision_id applies to clear_breach only")
        decision = None
        engine_status = STATE_DECODER.decode(state_row.state).status if state_row is not None else "active"
        account.status = _status_of(engine_status, program)
    override = m.Override(
        firm_id=firm_id,
        account_id=account.id,
        decision_id=decision.id if decision is not None else None,
        action=action,
        reason=text,
        actor_user_id=actor_user_id,
    )
    session.add(override)
    session.flush()
    if account.status in LIVE_STATUSES:
        _command(session, account, override, "enable", decision=override.decision_id)
    audit.append(
        session,
        actor=actor,
        action=f"account.{action}",
        entity="account",
        entity_id=account.external_id,
        before={"status": before},
        after={"status": account.status, "override": override.id, "decision": override.decision_id, "reason": text},
        firm_id=firm_id,
    )
    return override


def _breach_decision(session: Session, *, account: m.Account, decision_id: int | None) -> m.Decision | None:
    query = select(m.Decision).where(
        m.Decision.firm_id == account.firm_id, m.Decision.account_id == account.id, m.Decision.kind == "breach"
    )
    if decision_id is not None:
        decision = session.scalars(query.where(m.Decision.id == decision_id)).one_or_none()
        if decision is None:
            raise NotFound(f"no breach decision {decision_id} on account {account.external_id}")
        return decision
    return session.scalars(query.order_by(m.Decision.id.desc()).limit(1)).first()


def emergency_stop(
    session: Session, *, firm_id: str, account_id: int, reason: str, actor_user_id: int, actor: str
) -> m.Override:
    """Suspend an account now, whatever its evaluation says, and ask the platform to ``disable`` it."""
    text = _reason(reason)
    account = get_account(session, firm_id=firm_id, account_id=account_id, for_update=True)
    if account.status in ("suspended", "closed"):
        raise Conflict(f"account {account.external_id} is already {account.status}")
    before = account.status
    override = m.Override(firm_id=firm_id, account_id=account.id, decision_id=None, action="emergency_stop",
                          reason=text, actor_user_id=actor_user_id)
    session.add(override)
    account.status = "suspended"
    session.flush()
    _command(session, account, override, "disable")
    audit.append(
        session,
        actor=actor,
        action="account.emergency_stop",
        entity="account",
        entity_id=account.external_id,
        before={"status": before},
        after={"status": "suspended", "override": override.id, "reason": text},
        firm_id=firm_id,
    )
    return override


def list_overrides(session: Session, *, firm_id: str, account_id: int) -> list[m.Override]:
    account = get_account(session, firm_id=firm_id, account_id=account_id)
    return list(
        session.scalars(
            select(m.Override)
            .where(m.Override.firm_id == firm_id, m.Override.account_id == account.id)
            .order_by(m.Override.id)
        )
    )
