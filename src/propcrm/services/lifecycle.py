"""The trader's life in the firm: leads, conversion, KYC, orders and payments, challenge assignment,
stages (``domain.lifecycle``), suspension and termination, reset and re-purchase.

Stages follow the facts: :func:`sync` reads the trader's accounts and orders and walks the state
machine to the stage they imply (a paid order → customer → evaluation once the account exists;
the final phase passed → funded; a breach → failed), one audited transition at a time, with the
fact as the reason. Staff move a trader only along allowed transitions (suspend, reinstate,
terminate); an illegal move is refused with the list of allowed ones, never an exception.
Everything that changes is audited (actor, before, after, reason) in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import (DiscountCode, Lead, LifecycleSettings, Order, ProviderDelivery, StageChange,
                                            TraderStage)
from ..domain import lifecycle as machine
from ..domain.money import HUNDRED, ZERO, to_cents
from . import audit
from .accounts import compiled_pack, money
from .accounts import create_account as create_platform_account
from .communications import notify_trader, trader_in_firm
from .errors import Conflict, Invalid, NotFound

UTC = dt.timezone.utc
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
LIVE = ("active", "paused", "passed", "funded", "suspended", "halted")
MIN_REASON, MAX_REASON = 3, 2000


def now_utc() -> dt.datetime:
    return dt.datetime.now(UTC)


def reason_text(reason: str, name: str = "reason") -> str:
    text = (reason or "").strip() if isinstance(reason, str) else ""
    if not MIN_REASON <= len(text) <= MAX_REASON or "\x00" in text:
        raise Invalid(f"{name}: {MIN_REASON} to {MAX_REASON} characters are required")
    return text


MAX_AMOUNT = Decimal("1000000000000")  # money columns are NUMERIC(24, 8): far below what they hold


def decimal_of(name: str, value: Any, *, minimum: Decimal = ZERO, maximum: Decimal | None = MAX_AMOUNT,
               cents: bool = False) -> Decimal:
    """An amount given by a person or a provider: finite, within bounds (so that it can be stored
    exactly on both backends) and, with ``cents``, to the cent at most."""
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise Invalid(f"{name}: must be a decimal amount such as \"540.00\"") from None
    if not amount.is_finite() or amount < minimum or (maximum is not None and amount > maximum):
        raise Invalid(f"{name}: must be between {minimum} and {maximum if maximum is not None else 'any'}")
    if cents and amount != amount.quantize(Decimal("0.01"), rounding=ROUND_DOWN):
        raise Invalid(f"{name}: an amount to the cent at most (such as \"12.34\")")
    return amount


@dataclass
class Refusal:
    """A request that the rules do not allow: the reason, and what is allowed instead."""

    reason: str
    allowed: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# settings


def settings_of(session: Session, firm_id: str) -> LifecycleSettings:
    row = session.get(LifecycleSettings, firm_id)
    if row is None:
        row = LifecycleSettings(firm_id=firm_id, dual_approval_over=None, scaling_mode="approval", updated_at=now_utc())
    return row


def update_settings(session: Session, *, firm_id: str, dual_approval_over: Any, scaling_mode: str | None,
                    actor: str) -> LifecycleSettings:
    row = session.get(LifecycleSettings, firm_id)
    before = None
    if row is None:
        row = LifecycleSettings(firm_id=firm_id, scaling_mode="approval")
        session.add(row)
    else:
        before = {"dual_approval_over": row.dual_approval_over, "scaling_mode": row.scaling_mode}
    if dual_approval_over is not None:
        row.dual_approval_over = decimal_of("dual_approval_over", dual_approval_over, cents=True)
    if scaling_mode is not None:
        if scaling_mode not in ("auto", "approval"):
            raise Invalid("scaling_mode: must be auto or approval")
        row.scaling_mode = scaling_mode
    row.updated_at = now_utc()
    session.flush()
    audit.append(session, actor=actor, action="lifecycle.settings", entity="firm", entity_id=firm_id, before=before,
                 after={"dual_approval_over": row.dual_approval_over, "scaling_mode": row.scaling_mode},
                 firm_id=firm_id)
    return row


# --------------------------------------------------------------------------------------------------
# leads


def capture_lead(session: Session, *, firm_id: str, name: str, email: str, source: str, consent: bool,
                 consent_text: str | None = None, country: str | None = None, actor: str) -> Lead:
    name = (name or "").strip()
    if not 1 <= len(name) <= 200 or not name.isprintable():
        raise Invalid("name: 1 to 200 printable characters are required")
    email = (email or "").strip().lower()
    if not _EMAIL.fullmatch(email) or not email.isprintable():
        raise Invalid(f"email: not an e-mail address: {email[:80]!r}")
    source = (source or "").strip()
    if not 1 <= len(source) <= 64 or not source.isprintable():
        raise Invalid("source: 1 to 64 printable characters are required (web, affiliate:…, event:…)")
    if not isinstance(consent, bool):
        raise Invalid("consent: true or false is required")
    if country is not None and not re.fullmatch(r"[A-Z]{2}", country):
        raise Invalid("country: two capital letters (ISO 3166-1 alpha-2)")
    if session.scalar(select(Lead.id).where(Lead.firm_id == firm_id, Lead.email == email)) is not None:
        raise Conflict(f"a lead with e-mail {email} already exists")
    lead = Lead(firm_id=firm_id, name=name, email=email, source=source, consent=consent,
                consent_text=(consent_text or None), country=country, status="new", created_at=now_utc())
    session.add(lead)
    session.flush()
    audit.append(session, actor=actor, action="lead.capture", entity="lead", entity_id=str(lead.id),
                 after={"email": email, "source": source, "consent": consent}, firm_id=firm_id)
    return lead


def lead_view(lead: Lead) -> dict[str, Any]:
    return {"id": lead.id, "name": lead.name, "email": lead.email, "country": lead.country, "source": lead.source,
            "consent": lead.consent, "status": lead.status, "trader_id": lead.trader_id, "created_at": lead.created_at,
            "lost_reason": lead.lost_reason}


def list_leads(session: Session, *, firm_id: str, status: str | None = None, limit: int | None = None,
               offset: int = 0, newest_first: bool = False) -> list[Lead]:
    """The firm's leads (oldest first, or ``newest_first``); ``limit``/``offset``: one page of them."""
    query = select(Lead).where(Lead.firm_id == firm_id)
    if status is not None:
        query = query.where(Lead.status == status)
    query = query.order_by(Lead.id.desc() if newest_first else Lead.id)
    if limit is not None:
        query = query.limit(limit).offset(offset)
    return list(session.scalars(query))


def count_leads(session: Session, *, firm_id: str, status: str | None = None) -> int:
    query = select(func.count()).select_from(Lead).where(Lead.firm_id == firm_id)
    if status is not None:
        query = query.where(Lead.status == status)
    return session.scalar(query) or 0


def convert_lead(session: Session, *, firm_id: str, lead_id: int, actor: str) -> m.Trader:
    """The lead becomes a trader (stage ``registered``); an existing trader with the same e-mail is linked."""
    lead = session.get(Lead, lead_id)
    if lead is None or lead.firm_id != firm_id:
        raise NotFound(f"no lead {lead_id}")
    if lead.status == "converted":
        raise Conflict(f"lead {lead_id} was already converted to trader {lead.trader_id}")
    if lead.status == "lost":  # the trail stays readable: lost, reopened (audited), then converted
        raise Conflict(f"lead {lead_id} is marked lost ({lead.lost_reason}); reopen it before converting it")
    trader = session.scalar(select(m.Trader).where(m.Trader.firm_id == firm_id, m.Trader.email == lead.email))
    if trader is None:
        trader = m.Trader(firm_id=firm_id, name=lead.name, email=lead.email, country=lead.country,
                          kyc_status="pending", created_at=now_utc())
        session.add(trader)
        session.flush()
    lead.status, lead.trader_id = "converted", trader.id
    stage = stage_row(session, trader)
    _record(session, trader, stage, "lead", stage.stage, actor, f"converted from lead {lead.id} ({lead.source})")
    audit.append(session, actor=actor, action="lead.convert", entity="lead", entity_id=str(lead.id),
                 after={"trader_id": trader.id}, firm_id=firm_id)
    return trader


def mark_lead_lost(session: Session, *, firm_id: str, lead_id: int, reason: str, actor: str) -> Lead:
    """A new lead did not become a trader (why: ``reason``, required); audited. :func:`reopen_lead` undoes it."""
    lead = _lead(session, firm_id, lead_id)
    if lead.status != "new":
        raise Conflict(f"lead {lead_id} is {lead.status}: only a new lead can be marked lost")
    text = reason_text(reason)
    lead.status, lead.lost_reason = "lost", text
    audit.append(session, actor=actor, action="lead.lost", entity="lead", entity_id=str(lead.id),
                 before={"status": "new"}, after={"status": "lost", "reason": text}, firm_id=firm_id)
    return lead


def reopen_lead(session: Session, *, firm_id: str, lead_id: int, actor: str) -> Lead:
    """A lost lead is new again (it can be converted); the reason it was lost stays in the audit log."""
    lead = _lead(session, firm_id, lead_id)
    if lead.status != "lost":
        raise Conflict(f"lead {lead_id} is {lead.status}: only a lost lead can be reopened")
    before = {"status": "lost", "reason": lead.lost_reason}
    lead.status, lead.lost_reason = "new", None
    audit.append(session, actor=actor, action="lead.reopen", entity="lead", entity_id=str(lead.id),
                 before=before, after={"status": "new"}, firm_id=firm_id)
    return lead


def _lead(session: Session, firm_id: str, lead_id: int) -> Lead:
    lead = session.get(Lead, lead_id)
    if lead is None or lead.firm_id != firm_id:
        raise NotFound(f"no lead {lead_id}")
    return lead


# --------------------------------------------------------------------------------------------------
# stages


def stage_row(session: Session, trader: m.Trader) -> TraderStage:
    row = session.get(TraderStage, trader.id)
    if row is None:
        row = TraderStage(trader_id=trader.id, firm_id=trader.firm_id, stage="registered", updated_at=now_utc())
        session.add(row)
        session.flush()
    return row


def _record(session: Session, trader: m.Trader, stage: TraderStage, before: str, after: str, actor: str,
            reason: str) -> None:
    stage.stage, stage.reason, stage.updated_at = after, reason, now_utc()
    session.add(StageChange(firm_id=trader.firm_id, trader_id=trader.id, from_stage=before, to_stage=after,
                            actor=actor, reason=reason, created_at=now_utc()))
    session.flush()
    audit.append(session, actor=actor, action="trader.stage", entity="trader", entity_id=str(trader.id),
                 before={"stage": before}, after={"stage": after, "reason": reason}, firm_id=trader.firm_id)


def derived_stage(session: Session, trader: m.Trader) -> tuple[str, str]:
    """The stage the trader's accounts and orders say, and the fact that says it."""
    accounts = list(session.scalars(select(m.Account).where(m.Account.firm_id == trader.firm_id,
                                                            m.Account.trader_id == trader.id).order_by(m.Account.id)))
    funded, evaluating, failed = [], [], []
    for account in accounts:
        version = session.get(m.RulePackVersion, account.pack_version_id)
        program = compiled_pack(version).phase(account.phase)
        if account.status in LIVE:
            (funded if program.target is None else evaluating).append(account)
        elif account.status == "breached":
            failed.append(account)
    if funded:
        return "funded", f"account {funded[-1].external_id} is funded ({funded[-1].phase})"
    if evaluating:
        return "evaluation", f"challenge account {evaluating[-1].external_id} is in {evaluating[-1].phase}"
    if failed:
        return "failed", f"account {failed[-1].external_id} breached"
    paid = session.scalar(select(Order.id).where(Order.firm_id == trader.firm_id, Order.trader_id == trader.id,
                                                 Order.status == "paid").limit(1))
    if paid is not None:
        return "customer", f"order {paid} is paid"
    return "registered", "no paid order and no account"


def _locked(session: Session, *, firm_id: str, trader_id: int) -> m.Trader:
    """The trader, row-locked on PostgreSQL until the transaction ends, so that two requests moving one
    trader take turns (the second reads the stage the first left). SQLite's units of work already
    take turns (BEGIN IMMEDIATE)."""
    trader = trader_in_firm(session, firm_id=firm_id, trader_id=trader_id)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(m.Trader.id).where(m.Trader.id == trader.id).with_for_update())
        session.expire(trader)
        stage = session.get(TraderStage, trader.id)
        if stage is not None:
            session.refresh(stage)
    return trader


def sync(session: Session, *, firm_id: str, trader_id: int, actor: str = "system") -> TraderStage:
    """Walk the trader to the stage the facts say (not out of suspended or terminated: people do that)."""
    trader = _locked(session, firm_id=firm_id, trader_id=trader_id)
    stage = stage_row(session, trader)
    _expire_kyc(session, trader, stage)
    if stage.stage in machine.HELD:
        return stage
    target, why = derived_stage(session, trader)
    chain = machine.path(stage.stage, target)
    for nxt in chain or ():
        _record(session, trader, stage, stage.stage, nxt, actor, why)
    return stage


def sync_firm(session: Session, *, firm_id: str) -> int:
    moved = 0
    for trader_id in session.scalars(select(m.Trader.id).where(m.Trader.firm_id == firm_id).order_by(m.Trader.id)):
        before = session.get(TraderStage, trader_id)
        before_stage = before.stage if before is not None else None
        if sync(session, firm_id=firm_id, trader_id=trader_id).stage != before_stage:
            moved += 1
    return moved


def transition(session: Session, *, firm_id: str, trader_id: int, to: str, reason: str, actor: str,
               actor_user_id: int | None) -> TraderStage | Refusal:
    """A person moves the trader (suspend, reinstate, terminate…). Illegal: a :class:`Refusal` naming
    the allowed stages. Suspending stops the trader's live accounts; terminating closes them;
    reinstating lifts the stops and returns the trader to the stage the facts say."""
    from . import overrides

    text = reason_text(reason)
    trader = _locked(session, firm_id=firm_id, trader_id=trader_id)
    stage = stage_row(session, trader)
    if to not in machine.STAGES:
        return Refusal(f"unknown stage {to!r}; stages: {', '.join(machine.STAGES)}", list(machine.allowed(stage.stage)))
    if not machine.can(stage.stage, to):
        return Refusal(machine.refusal(stage.stage, to), list(machine.allowed(stage.stage)))
    before = stage.stage
    accounts = list(session.scalars(select(m.Account).where(m.Account.firm_id == firm_id,
                                                            m.Account.trader_id == trader.id).order_by(m.Account.id)))
    if to == "suspended":
        for account in accounts:
            if account.status in ("active", "paused", "funded", "passed") and actor_user_id is not None:
                overrides.emergency_stop(session, firm_id=firm_id, account_id=account.id, reason=f"trader suspended: {text}",
                                         actor_user_id=actor_user_id, actor=actor)
        _record(session, trader, stage, before, to, actor, text)
    elif to == "terminated":
        for account in accounts:
            if account.status not in ("closed", "breached"):
                previous = account.status
                account.status = "closed"
                session.add(m.OutboxMessage(
                    firm_id=firm_id, kind="platform_command", dedupe_key=f"lifecycle:terminate:{account.id}",
                    payload={"command": "disable", "account": account.external_id, "platform": account.platform,
                             "login": account.login, "trader_id": trader.id}))
                audit.append(session, actor=actor, action="account.close", entity="account",
                             entity_id=account.external_id, before={"status": previous},
                             after={"status": "closed", "reason": f"trader terminated: {text}"}, firm_id=firm_id)
        _record(session, trader, stage, before, to, actor, text)
    else:
        if before == "suspended":
            for account in accounts:
                if account.status == "suspended" and actor_user_id is not None:
                    overrides.override_account(session, firm_id=firm_id, account_id=account.id, action="lift_stop",
                                               reason=f"trader reinstated: {text}", actor_user_id=actor_user_id,
                                               actor=actor)
        _record(session, trader, stage, before, to, actor, text)
        sync(session, firm_id=firm_id, trader_id=trader.id, actor=actor)
    notify_trader(session, firm_id=firm_id, trader_id=trader.id, kind="stage", key=f"stage:{trader.id}:{stage.updated_at.timestamp()}",
                  title=f"Your status: {stage.stage}", message=f"Your status changed from {before} to {stage.stage}: {text}",
                  author=actor)
    return stage


# --------------------------------------------------------------------------------------------------
# KYC


def set_kyc(session: Session, *, firm_id: str, trader_id: int, status: str, reason: str, actor: str,
            reference: str | None = None, expires_at: dt.datetime | None = None) -> m.Trader:
    if status not in machine.KYC_STATUSES:
        raise Invalid(f"status: must be one of {', '.join(machine.KYC_STATUSES)}")
    text = reason_text(reason)
    if expires_at is not None and expires_at.tzinfo is None:
        raise Invalid("expires_at: must carry a timezone (e.g. 2027-01-01T00:00:00Z)")
    trader = trader_in_firm(session, firm_id=firm_id, trader_id=trader_id)
    stage = stage_row(session, trader)
    before = trader.kyc_status
    trader.kyc_status = status
    stage.kyc_reference = (reference or stage.kyc_reference)
    stage.kyc_updated_at = now_utc()
    stage.kyc_expires_at = expires_at
    audit.append(session, actor=actor, action="trader.kyc", entity="trader", entity_id=str(trader.id),
                 before={"kyc_status": before},
                 after={"kyc_status": status, "reason": text, "reference": reference, "expires_at": expires_at},
                 firm_id=firm_id)
    if before != status:
        notify_trader(session, firm_id=firm_id, trader_id=trader.id, kind="kyc",
                      key=f"kyc:{trader.id}:{stage.kyc_updated_at.timestamp()}",
                      title=f"Identity verification: {status}", message=f"Your verification is {status}: {text}",
                      author=actor)
    return trader


REPLAY_WINDOW = dt.timedelta(minutes=10)  # twice the signature's clock skew: older deliveries are refused anyway


def first_delivery(session: Session, *, firm_id: str, key_id: str, timestamp: str, signature: str) -> bool:
    """Record a signed provider webhook; ``False`` when the very same signed request was taken before
    (a replay or a provider's retry), which then must change nothing."""
    signed_at = dt.datetime.fromtimestamp(int(timestamp), UTC)
    text = signature.strip().lower()[:80]
    if session.scalar(select(ProviderDelivery.id).where(ProviderDelivery.key_id == key_id,
                                                        ProviderDelivery.signature == text)) is not None:
        return False
    try:
        with session.begin_nested():  # two deliveries at once: the unique constraint lets one through
            session.add(ProviderDelivery(firm_id=firm_id, key_id=key_id, signature=text, signed_at=signed_at,
                                         received_at=now_utc()))
    except IntegrityError:
        return False
    session.execute(delete(ProviderDelivery).where(ProviderDelivery.key_id == key_id,
                                                   ProviderDelivery.signed_at < now_utc() - REPLAY_WINDOW))
    return True


def _expire_kyc(session: Session, trader: m.Trader, stage: TraderStage) -> None:
    if trader.kyc_status == "approved" and stage.kyc_expires_at is not None and stage.kyc_expires_at <= now_utc():
        set_kyc(session, firm_id=trader.firm_id, trader_id=trader.id, status="expired",
                reason=f"the verification expired at {stage.kyc_expires_at.isoformat()}", actor="system",
                expires_at=stage.kyc_expires_at)


def kyc_cleared(session: Session, trader: m.Trader, *, write: bool = True) -> tuple[bool, str]:
    """Whether the trader's identity verification lets them be paid. ``write=False`` (a read, e.g. the
    eligibility page) writes nothing: an approval past its expiry is reported expired, not stored so."""
    stage = stage_row(session, trader) if write else session.get(TraderStage, trader.id)
    expires = stage.kyc_expires_at if stage is not None else None
    if write:
        _expire_kyc(session, trader, stage)
    elif trader.kyc_status == "approved" and expires is not None and expires <= now_utc():
        return False, f"identity verification is expired (since {expires:%Y-%m-%d}); it must be approved"
    if trader.kyc_status == "approved":
        return True, "identity verification approved" + (f" (valid until {expires:%Y-%m-%d})" if expires else "")
    return False, f"identity verification is {trader.kyc_status}; it must be approved"


def behind(session: Session, *, firm_id: str, trader_id: int) -> bool:
    """Whether :func:`sync` would change anything for the trader (read only): no stage row yet, a KYC
    approval past its expiry, or a stage the facts have moved on from."""
    trader = trader_in_firm(session, firm_id=firm_id, trader_id=trader_id)
    stage = session.get(TraderStage, trader.id)
    if stage is None:
        return True
    if trader.kyc_status == "approved" and stage.kyc_expires_at is not None and stage.kyc_expires_at <= now_utc():
        return True
    if stage.stage in machine.HELD:
        return False
    return bool(machine.path(stage.stage, derived_stage(session, trader)[0]))


def trader_view(session: Session, *, firm_id: str, trader_id: int, trader_scope: int | None = None) -> dict[str, Any]:
    trader = trader_in_firm(session, firm_id=firm_id, trader_id=trader_id, trader_scope=trader_scope)
    stage = session.get(TraderStage, trader.id)  # a read writes nothing: no row yet reads as registered
    if stage is None:
        stage = TraderStage(trader_id=trader.id, firm_id=firm_id, stage="registered", reason=None)
    accounts = session.scalars(select(m.Account).where(m.Account.firm_id == firm_id, m.Account.trader_id == trader.id)
                               .order_by(m.Account.id))
    return {
        "id": trader.id, "name": trader.name, "email": trader.email, "country": trader.country,
        "stage": stage.stage, "stage_reason": stage.reason, "allowed_transitions": list(machine.allowed(stage.stage)),
        "kyc": {"status": trader.kyc_status, "updated_at": stage.kyc_updated_at, "expires_at": stage.kyc_expires_at},
        "accounts": [{"id": a.id, "external_id": a.external_id, "phase": a.phase, "status": a.status} for a in accounts],
        "created_at": trader.created_at,
    }


def stage_history(session: Session, *, firm_id: str, trader_id: int) -> list[StageChange]:
    return list(session.scalars(select(StageChange).where(StageChange.firm_id == firm_id,
                                                          StageChange.trader_id == trader_id).order_by(StageChange.id)))


# --------------------------------------------------------------------------------------------------
# discount codes and orders


def create_discount_code(session: Session, *, firm_id: str, code: str, percent_off: Any = None, amount_off: Any = None,
                         max_uses: int | None = None, expires_at: dt.datetime | None = None,
                         actor: str) -> DiscountCode:
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise Invalid("code: 1 to 64 letters, digits, '_' or '-'")
    if (percent_off is None) == (amount_off is None):
        raise Invalid("give exactly one of percent_off and amount_off")
    pct = decimal_of("percent_off", percent_off, maximum=HUNDRED) if percent_off is not None else None
    off = decimal_of("amount_off", amount_off, cents=True) if amount_off is not None else None
    if max_uses is not None and max_uses < 1:
        raise Invalid("max_uses: at least 1")
    if expires_at is not None and expires_at.tzinfo is None:
        raise Invalid("expires_at: must carry a timezone")
    if session.scalar(select(DiscountCode.id).where(DiscountCode.firm_id == firm_id,
                                                    DiscountCode.code == code.upper())) is not None:
        raise Conflict(f"discount code {code.upper()} already exists")
    row = DiscountCode(firm_id=firm_id, code=code.upper(), percent_off=pct, amount_off=off, max_uses=max_uses, uses=0,
                       active=True, expires_at=expires_at, created_at=now_utc())
    session.add(row)
    session.flush()
    audit.append(session, actor=actor, action="discount.create", entity="discount_code", entity_id=row.code,
                 after={"percent_off": pct, "amount_off": off, "max_uses": max_uses, "expires_at": expires_at},
                 firm_id=firm_id)
    return row


def discount_view(row: DiscountCode) -> dict[str, Any]:
    return {"id": row.id, "code": row.code, "percent_off": money(row.percent_off), "amount_off": money(row.amount_off),
            "max_uses": row.max_uses, "uses": row.uses, "active": row.active, "expires_at": row.expires_at}


def list_discount_codes(session: Session, *, firm_id: str, limit: int | None = None, offset: int = 0,
                        newest_first: bool = False) -> list[DiscountCode]:
    """The firm's discount codes (oldest first, or ``newest_first``); ``limit``/``offset``: one page of them."""
    query = select(DiscountCode).where(DiscountCode.firm_id == firm_id).order_by(
        DiscountCode.id.desc() if newest_first else DiscountCode.id)
    if limit is not None:
        query = query.limit(limit).offset(offset)
    return list(session.scalars(query))


def count_discount_codes(session: Session, *, firm_id: str) -> int:
    return session.scalar(select(func.count()).select_from(DiscountCode).where(DiscountCode.firm_id == firm_id)) or 0


def get_discount_code(session: Session, *, firm_id: str, code_id: int) -> DiscountCode:
    row = session.get(DiscountCode, code_id)
    if row is None or row.firm_id != firm_id:
        raise NotFound(f"no discount code {code_id}")
    return row


def update_discount_code(session: Session, *, firm_id: str, code_id: int, max_uses: int | None,
                         expires_at: dt.datetime | None, actor: str) -> DiscountCode:
    """A code's limits (uses, expiry) change; what it takes off does not — orders already placed with it
    were priced by it, so a different discount is a new code."""
    row = get_discount_code(session, firm_id=firm_id, code_id=code_id)
    if not row.active:
        raise Conflict(f"discount code {row.code} is retired")
    if max_uses is not None and max_uses < max(1, row.uses):
        raise Invalid(f"max_uses: at least {max(1, row.uses)} (it has been used {row.uses} times)")
    if expires_at is not None and expires_at.tzinfo is None:
        raise Invalid("expires_at: must carry a timezone")
    before = {"max_uses": row.max_uses, "expires_at": row.expires_at}
    after = {"max_uses": max_uses, "expires_at": expires_at}
    if before == after:
        return row
    row.max_uses, row.expires_at = max_uses, expires_at
    audit.append(session, actor=actor, action="discount.update", entity="discount_code", entity_id=row.code,
                 before=before, after=after, firm_id=firm_id)
    return row


def retire_discount_code(session: Session, *, firm_id: str, code_id: int, actor: str) -> DiscountCode:
    """The code stops working for new orders; retiring is final (the code stays taken)."""
    row = get_discount_code(session, firm_id=firm_id, code_id=code_id)
    if not row.active:
        raise Conflict(f"discount code {row.code} is already retired")
    row.active = False
    audit.append(session, actor=actor, action="discount.retire", entity="discount_code", entity_id=row.code,
                 before={"active": True}, after={"active": False}, firm_id=firm_id)
    return row


def _discount(session: Session, firm_id: str, code: str | None, price: Decimal) -> tuple[DiscountCode | None, Decimal]:
    """The discount a code gives on ``price``: percent rounded DOWN to the cent, never more than the price."""
    if not code:
        return None, ZERO
    row = session.scalar(select(DiscountCode).where(DiscountCode.firm_id == firm_id,
                                                    DiscountCode.code == str(code).strip().upper()))
    if row is None or not row.active:
        raise Invalid(f"discount_code: {str(code)[:64]!r} is not a valid code")
    if row.expires_at is not None and row.expires_at <= now_utc():
        raise Invalid(f"discount_code: {row.code} expired at {row.expires_at.isoformat()}")
    if row.max_uses is not None and row.uses >= row.max_uses:
        raise Invalid(f"discount_code: {row.code} has been used {row.uses} of {row.max_uses} times")
    off = to_cents(price * row.percent_off / HUNDRED) if row.percent_off is not None else row.amount_off
    return row, min(off, price)


def order_view(order: Order) -> dict[str, Any]:
    return {"id": order.id, "trader_id": order.trader_id, "product_id": order.product_id, "kind": order.kind,
            "replaces_account_id": order.replaces_account_id, "list_price": money(order.list_price),
            "discount": money(order.discount), "amount": money(order.amount), "currency": order.currency,
            "status": order.status, "provider_ref": order.provider_ref, "account_id": order.account_id,
            "platform": order.platform, "refund_reason": order.refund_reason, "created_at": order.created_at,
            "paid_at": order.paid_at, "refunded_at": order.refunded_at}


def create_order(session: Session, *, firm_id: str, trader_id: int, product_id: int | None = None,
                 discount_code: str | None = None, platform: str = "demo", reset_account_id: int | None = None,
                 actor: str, trader_scope: int | None = None) -> Order | Refusal:
    """A purchase of a product, or (``reset_account_id``) a reset of a failed account with the same product.
    The order waits for the payment provider's webhook."""
    trader = trader_in_firm(session, firm_id=firm_id, trader_id=trader_id, trader_scope=trader_scope)
    stage = sync(session, firm_id=firm_id, trader_id=trader.id)
    if stage.stage in machine.HELD:
        return Refusal(f"the trader is {stage.stage}: nothing can be sold to them")
    replaced = None
    if reset_account_id is not None:
        replaced = session.get(m.Account, reset_account_id)
        if replaced is None or replaced.firm_id != firm_id or replaced.trader_id != trader.id:
            raise NotFound(f"no account {reset_account_id}")
        if replaced.status != "breached":
            return Refusal(f"account {replaced.external_id} is {replaced.status}; only a failed (breached) account "
                           "can be reset")
        if replaced.product_id is None:
            return Refusal(f"account {replaced.external_id} was not sold as a product; buy a product instead")
        product_id = replaced.product_id
    if product_id is None:
        raise Invalid("product_id: required")
    product = session.get(m.Product, product_id)
    if product is None or product.firm_id != firm_id:
        raise NotFound(f"no product {product_id}")
    if not product.active:
        return Refusal(f"product {product.name} is not on sale")
    version = session.get(m.RulePackVersion, product.pack_version_id)
    if version is None or version.status == "retired":
        # A paid order must always become an account: never take an order that could not become one.
        which = f"rule pack {version.pack_id} v{version.version}" if version is not None else "its rule pack version"
        return Refusal(f"product {product.name} is not on sale: {which} is retired; "
                       "sell a product on the pack's live version")
    if not platform or len(platform) > 64:
        raise Invalid("platform: 1 to 64 characters")
    code, discount = _discount(session, firm_id, discount_code, product.price)
    order = Order(firm_id=firm_id, trader_id=trader.id, product_id=product.id,
                  kind="reset" if replaced is not None else "purchase",
                  replaces_account_id=replaced.id if replaced is not None else None, list_price=product.price,
                  discount_code_id=code.id if code is not None else None, discount=discount,
                  amount=product.price - discount, currency=product.currency, status="pending", platform=platform,
                  created_at=now_utc())
    session.add(order)
    session.flush()
    audit.append(session, actor=actor, action="order.create", entity="order", entity_id=str(order.id),
                 after={"trader_id": trader.id, "product_id": product.id, "kind": order.kind, "amount": order.amount,
                        "discount": discount, "code": code.code if code else None}, firm_id=firm_id)
    return order


def get_order(session: Session, *, firm_id: str, order_id: int, trader_scope: int | None = None) -> Order:
    order = session.get(Order, order_id)
    if order is None or order.firm_id != firm_id or (trader_scope is not None and order.trader_id != trader_scope):
        raise NotFound(f"no order {order_id}")
    return order


def list_orders(session: Session, *, firm_id: str, trader_id: int | None = None) -> list[Order]:
    query = select(Order).where(Order.firm_id == firm_id)
    if trader_id is not None:
        query = query.where(Order.trader_id == trader_id)
    return list(session.scalars(query.order_by(Order.id)))


def payment_update(session: Session, *, firm_id: str, order_id: int, status: str, provider_ref: str | None,
                   amount: Any, actor: str, reason: str | None = None,
                   payment_methods: list[tuple[str, str]] | None = None) -> Order | Refusal:
    """The payment provider says an order is ``paid``, ``failed`` or ``refunded``. Repeating the same
    news changes nothing (webhooks are delivered at least once). ``payment_methods`` — (kind, fingerprint)
    of the card, wallet or bank account that paid — go to the order's account for linkage analysis."""
    if status not in ("paid", "failed", "refunded"):
        raise Invalid("status: must be paid, failed or refunded")
    from .analysis import payment_value

    methods = list(payment_methods or ())
    for kind, fingerprint in methods:
        payment_value(kind, fingerprint)  # refused (422, naming the field) before anything changes
    order = get_order(session, firm_id=firm_id, order_id=order_id)
    if order.status == status:
        _record_payment_methods(session, order, methods, actor)
        return order
    result = _payment_update(session, order, firm_id=firm_id, status=status, provider_ref=provider_ref, amount=amount,
                             actor=actor, reason=reason)
    if not isinstance(result, Refusal):
        _record_payment_methods(session, order, methods, actor)
    return result


def _record_payment_methods(session: Session, order: Order, methods: list[tuple[str, str]], actor: str) -> None:
    """The instruments that paid an order, on the order's account (none yet: nothing to link)."""
    from .analysis import record_payment_method

    if order.account_id is None:
        return
    for kind, fingerprint in methods:
        record_payment_method(session, firm_id=order.firm_id, account_id=order.account_id, kind=kind,
                              fingerprint=fingerprint, seen_at=now_utc(), actor=actor)


def _payment_update(session: Session, order: Order, *, firm_id: str, status: str, provider_ref: str | None,
                    amount: Any, actor: str, reason: str | None) -> Order | Refusal:
    allowed = {"pending": ("paid", "failed"), "failed": ("paid",), "paid": ("refunded",), "refunded": ()}[order.status]
    if status not in allowed:
        return Refusal(f"order {order.id} is {order.status}; it can become: {', '.join(allowed) or 'nothing'}",
                       list(allowed))
    if status == "paid" and amount is not None and decimal_of("amount", amount) != order.amount:
        return Refusal(f"the provider reports {amount} paid but the order is for {money(order.amount)}")
    before = order.status
    order.status = status
    order.provider_ref = (provider_ref or order.provider_ref)
    if status == "paid":
        order.paid_at = now_utc()
        if order.discount_code_id is not None:
            code = session.get(DiscountCode, order.discount_code_id)
            code.uses += 1
        audit.append(session, actor=actor, action="order.paid", entity="order", entity_id=str(order.id),
                     before={"status": before}, after={"status": status, "provider_ref": order.provider_ref},
                     firm_id=firm_id)
        held = stage_row(session, session.get(m.Trader, order.trader_id)).stage
        if held in machine.HELD:  # paid meanwhile, but no account for a suspended or terminated trader
            audit.append(session, actor=actor, action="order.not_assigned", entity="order", entity_id=str(order.id),
                         after={"reason": f"the trader is {held}; refund the order or reinstate the trader"},
                         firm_id=firm_id)
        else:
            _assign_challenge(session, order, actor)
    elif status == "refunded":
        order.refunded_at = now_utc()
        order.refund_reason = reason or "refunded by the payment provider"
        audit.append(session, actor=actor, action="order.refunded", entity="order", entity_id=str(order.id),
                     before={"status": before}, after={"status": status, "reason": order.refund_reason},
                     firm_id=firm_id)
        _close_for_refund(session, order, actor)
        notify_trader(session, firm_id=firm_id, trader_id=order.trader_id, kind="order", key=f"order:{order.id}:refunded",
                      title=f"Order {order.id} refunded", message=f"Your order {order.id} of {money(order.amount)} "
                      f"{order.currency} was refunded: {order.refund_reason}", author=actor)
    else:
        audit.append(session, actor=actor, action="order.failed", entity="order", entity_id=str(order.id),
                     before={"status": before}, after={"status": status}, firm_id=firm_id)
    sync(session, firm_id=firm_id, trader_id=order.trader_id, actor=actor)
    return order


def refund(session: Session, *, firm_id: str, order_id: int, reason: str, actor: str) -> Order | Refusal:
    """Finance refunds a paid order (the provider's own ``refunded`` webhook then changes nothing)."""
    text = reason_text(reason)
    return payment_update(session, firm_id=firm_id, order_id=order_id, status="refunded", provider_ref=None,
                          amount=None, actor=actor, reason=text)


def _assign_challenge(session: Session, order: Order, actor: str) -> m.Account:
    """The paid order's challenge account: created here and on the platform (``create_account`` through
    the outbox and the platform connector). A reset closes the failed account it replaces."""
    product = session.get(m.Product, order.product_id)
    external_id = f"CH-{order.id}"
    # The order was taken while its version was on sale: the account keeps the version it was sold,
    # even if that version has been retired since (a paid order never goes without its account).
    account = create_platform_account(session, firm_id=order.firm_id, external_id=external_id,
                                      pack_version_id=product.pack_version_id, platform=order.platform,
                                      trader_id=order.trader_id, product_id=product.id, actor=actor,
                                      sold_before_retirement=True)
    order.account_id = account.id
    session.add(m.OutboxMessage(
        firm_id=order.firm_id, kind="platform_command", dedupe_key=f"lifecycle:order:{order.id}:create_account",
        payload={"command": "create_account", "account": external_id, "platform": order.platform,
                 "phase": account.phase, "trader_id": order.trader_id, "order": order.id,
                 "account_size": money(product.account_size)}))
    if order.replaces_account_id is not None:
        old = session.get(m.Account, order.replaces_account_id)
        if old is not None and old.status == "breached":
            old.status = "closed"
            audit.append(session, actor=actor, action="account.close", entity="account", entity_id=old.external_id,
                         before={"status": "breached"}, after={"status": "closed", "reason": f"reset by order {order.id}"},
                         firm_id=order.firm_id)
    notify_trader(session, firm_id=order.firm_id, trader_id=order.trader_id, kind="order",
                  key=f"order:{order.id}:paid", account=external_id, title=f"Order {order.id} paid",
                  message=f"Thank you: order {order.id} ({product.name}) is paid. Your challenge account {external_id} "
                          f"is being created on {order.platform}.", author=actor)
    return account


def _close_for_refund(session: Session, order: Order, actor: str) -> None:
    """A refunded order closes its challenge account and every account it led to (its next phases, the
    funded account, scaled accounts: ``CH-<order>.…``), so nothing bought with the refunded fee is paid."""
    if order.account_id is None:
        return
    root = session.get(m.Account, order.account_id)
    if root is None:
        return
    prefix = root.external_id.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + ".%"
    lineage = session.scalars(select(m.Account).where(
        m.Account.firm_id == order.firm_id, m.Account.trader_id == order.trader_id,
        (m.Account.id == root.id) | m.Account.external_id.like(prefix, escape="\\")).order_by(m.Account.id))
    for account in lineage:
        if account.status == "closed":
            continue
        before = account.status
        account.status = "closed"
        key = (f"lifecycle:order:{order.id}:refund_disable" if account.id == root.id
               else f"lifecycle:order:{order.id}:refund_disable:{account.id}")
        session.add(m.OutboxMessage(
            firm_id=order.firm_id, kind="platform_command", dedupe_key=key,
            payload={"command": "disable", "account": account.external_id, "platform": account.platform,
                     "login": account.login, "trader_id": order.trader_id, "order": order.id}))
        audit.append(session, actor=actor, action="account.close", entity="account", entity_id=account.external_id,
                     before={"status": before}, after={"status": "closed", "reason": f"order {order.id} refunded"},
                     firm_id=order.firm_id)


def paid_revenue(session: Session, *, firm_id: str) -> Decimal:
    """Challenge revenue: what paid (not refunded) orders brought in."""
    total = ZERO
    for amount in session.scalars(select(Order.amount).where(Order.firm_id == firm_id, Order.status == "paid")):
        total += amount
    return total


def count_orders(session: Session, *, firm_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Order).where(Order.firm_id == firm_id)) or 0


__all__ = [
    "Refusal", "behind", "capture_lead", "convert_lead", "create_discount_code", "create_order", "derived_stage", "first_delivery",
    "get_order", "kyc_cleared", "count_discount_codes", "count_leads", "list_discount_codes", "list_leads", "list_orders", "payment_update", "refund",
    "set_kyc", "settings_of", "stage_history", "sync", "sync_firm", "trader_view", "transition", "update_settings",
]
