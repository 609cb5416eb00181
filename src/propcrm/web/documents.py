"""The PDF documents of the portal and the back office (``services/documents.py`` lays them out): a
payout's statement and a certificate, from the stored records."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from fastapi.responses import Response
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import Certificate, Payout
from ..domain.money import fmt
from ..services import documents
from ..services.accounts import compiled_pack
from ..services.certificates import facts_rows
from ..services.errors import Conflict
from ..services.payouts import method_words

UTC = dt.timezone.utc


def pdf_response(body: bytes, filename: str) -> Response:
    return Response(body, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff"})


def _when(value: dt.datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value else "-"


def step_amount(step: dict, currency: str) -> str:
    """A stored step's amount as people read it: a split as a percentage, an exact share in full, money
    with separators and two places."""
    label, text = step.get("label", ""), str(step.get("amount", ""))
    if label == "profit split":
        return f"{text}%"
    try:
        value = Decimal(text)
    except ArithmeticError:
        return text
    if "exact" in label or "carried over" in label or "since scaling at" in label:
        return f"{value.normalize():,f} {currency}" if value != value.quantize(Decimal("0.01")) else f"{fmt(value)} {currency}"
    return f"{fmt(value)} {currency}"


def statement_pdf(session: Session, row: Payout) -> bytes:
    """The statement of an approved payout: its facts, how it is paid and its amount step by step."""
    if row.status != "approved":
        raise Conflict(f"payout {row.id} is {row.status}: a statement exists once it is approved")
    account = session.get(m.Account, row.account_id)
    trader = session.get(m.Trader, row.trader_id) if row.trader_id else None
    firm = session.get(m.Firm, row.firm_id)
    currency = compiled_pack(session.get(m.RulePackVersion, account.pack_version_id)).pack.currency
    facts = [("Trader", trader.name if trader else "-"), ("Account", account.external_id),
             ("Trader's amount", f"{fmt(row.trader_amount)} {currency}"),
             ("Requested", _when(row.created_at)), ("Approved", _when(row.decided_at)),
             ("Method", method_words(row.method)), ("Destination", row.destination or "-"),
             ("Sent", _when(row.sent_at) if row.sent_at else "not yet: finance records the payment when it is sent"),
             ("Payment reference", row.payment_reference or "-")]
    steps = [(s.get("label", ""), step_amount(s, currency), s.get("note", "")) for s in (row.steps or [])]
    return documents.payout_statement(firm=firm.name if firm else row.firm_id, payout_id=row.id, facts=facts,
                                      steps=steps, generated=dt.datetime.now(UTC))


def certificate_pdf(session: Session, row: Certificate, base_url: str) -> bytes:
    firm = session.get(m.Firm, row.firm_id)
    facts = row.facts or {}
    return documents.certificate(firm=firm.name if firm else row.firm_id, title=facts.get("title", "Certificate"),
                                 name=facts.get("name", ""), lines=facts.get("lines", []),
                                 facts=[r for r in facts_rows(row) if r[0] not in ("Trader", "Certificate")],
                                 verify_url=f"{base_url}/verify/{row.id}")


__all__ = ["certificate_pdf", "pdf_response", "statement_pdf"]
