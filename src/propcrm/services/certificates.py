"""Certificates of a trader's achievements — a phase passed, a funded account, a payout — with a public,
unguessable verification link.

A certificate is issued once per achievement (``certificates``: unique per firm, kind and subject) the
first time the trader's certificates are listed, from the records that prove it: the engine's
``phase_passed`` decision, the account's ``funded`` status, the approved payout. Its facts are frozen at
issue; ``GET /verify/{id}`` shows them to anyone holding the link (the id carries 144 random bits), and
nothing else of the trader.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import Certificate, Payout
from ..domain.money import fmt
from .accounts import compiled_pack
from .errors import NotFound
from .lifecycle import now_utc

KINDS = {"phase_passed": "Phase passed", "funded": "Funded trader", "payout": "Payout"}


def _pack_words(session: Session, account: m.Account) -> tuple[str, str]:
    version = session.get(m.RulePackVersion, account.pack_version_id)
    pack = compiled_pack(version).pack
    return f"{fmt(pack.initial_balance)} {pack.currency}", version.pack_id


def _facts(session: Session, kind: str, account: m.Account, trader: m.Trader, when, **extra: Any) -> dict[str, Any]:
    size, pack_id = _pack_words(session, account)
    return {"title": KINDS[kind], "name": trader.name, "account": account.external_id, "size": size,
            "program": pack_id, "date": when.date().isoformat(), **extra}


def issue_for_trader(session: Session, *, firm_id: str, trader_id: int) -> list[Certificate]:
    """The trader's certificates, newest first, issuing those of achievements that have none yet."""
    trader = session.get(m.Trader, trader_id)
    if trader is None or trader.firm_id != firm_id:
        raise NotFound(f"no trader {trader_id}")
    accounts = {a.id: a for a in session.scalars(select(m.Account).where(m.Account.firm_id == firm_id,
                                                                          m.Account.trader_id == trader_id))}
    have = {(c.kind, c.subject) for c in session.scalars(select(Certificate).where(
        Certificate.firm_id == firm_id, Certificate.trader_id == trader_id))}
    wanted: list[tuple[str, str, dict[str, Any]]] = []
    if accounts:
        for decision in session.scalars(select(m.Decision).where(
                m.Decision.firm_id == firm_id, m.Decision.account_id.in_(list(accounts)),
                m.Decision.kind == "phase_passed").order_by(m.Decision.id)):
            account = accounts[decision.account_id]
            wanted.append(("phase_passed", f"decision:{decision.id}", _facts(
                session, "phase_passed", account, trader, decision.ts, phase=decision.phase,
                lines=[f"passed {decision.phase} of the {_pack_words(session, account)[0]} evaluation"])))
        for account in accounts.values():
            if account.status == "funded":
                wanted.append(("funded", f"account:{account.id}", _facts(
                    session, "funded", account, trader, account.created_at, phase=account.phase,
                    lines=[f"trades a funded account of {_pack_words(session, account)[0]}"])))
    for payout in session.scalars(select(Payout).where(Payout.firm_id == firm_id, Payout.trader_id == trader_id,
                                                       Payout.status == "approved").order_by(Payout.id)):
        account = accounts.get(payout.account_id) or session.get(m.Account, payout.account_id)
        currency = compiled_pack(session.get(m.RulePackVersion, account.pack_version_id)).pack.currency
        wanted.append(("payout", f"payout:{payout.id}", _facts(
            session, "payout", account, trader, payout.decided_at or payout.created_at,
            amount=f"{fmt(payout.trader_amount)} {currency}", payout=payout.id,
            lines=[f"was paid {fmt(payout.trader_amount)} {currency} of profit"])))
    for kind, subject, facts in wanted:
        if (kind, subject) not in have:
            session.add(Certificate(id=secrets.token_urlsafe(18), firm_id=firm_id, trader_id=trader_id, kind=kind,
                                    subject=subject, facts=facts, issued_at=now_utc()))
    session.flush()
    return list(session.scalars(select(Certificate).where(Certificate.firm_id == firm_id,
                                                          Certificate.trader_id == trader_id)
                                .order_by(Certificate.issued_at.desc(), Certificate.kind, Certificate.subject)))


def certificates_of(session: Session, *, firm_id: str, trader_id: int) -> list[Certificate]:
    """The trader's certificates issued so far (read only)."""
    return list(session.scalars(select(Certificate).where(Certificate.firm_id == firm_id,
                                                          Certificate.trader_id == trader_id)
                                .order_by(Certificate.issued_at.desc(), Certificate.kind, Certificate.subject)))


def get_certificate(session: Session, *, certificate_id: str, firm_id: str | None = None,
                    trader_id: int | None = None) -> Certificate:
    """A certificate by its id (anyone: the verification page), or within a trader's scope."""
    row = session.get(Certificate, certificate_id) if 10 <= len(certificate_id) <= 32 else None
    if row is None or (firm_id is not None and row.firm_id != firm_id) or (
            trader_id is not None and row.trader_id != trader_id):
        raise NotFound("no such certificate")
    return row


def facts_rows(row: Certificate) -> list[tuple[str, str]]:
    """The certificate's facts as (label, value) rows, as the PDF and the verification page show them."""
    facts = row.facts or {}
    rows = [("Trader", facts.get("name", "")), ("Account", facts.get("account", "")),
            ("Account size", facts.get("size", "")), ("Program", facts.get("program", ""))]
    if facts.get("phase"):
        rows.append(("Phase", facts["phase"]))
    if facts.get("amount"):
        rows.append(("Amount paid", facts["amount"]))
    rows += [("Date", facts.get("date", "")), ("Certificate", row.id)]
    return rows


__all__ = ["KINDS", "certificates_of", "facts_rows", "get_certificate", "issue_for_trader"]
