"""KYC documents and the compliance review queue.

A trader (portal) or staff (the trader's profile) uploads the files identity is checked from: PDF, PNG or
JPEG — told by the file's own first bytes, never by its name or the browser's word — up to
:data:`MAX_BYTES`. The bytes go to the document store (``adapters/documents.py``, outside the web root);
the row keeps a cleaned name, the type, size and SHA-256. A trader with a pending document is in the
review queue; the reviewer approves or rejects the trader's verification *from* those documents with a
reason: the documents are marked, the trader's KYC status is set through :func:`lifecycle.set_kyc` (audited,
the trader is told), and the review itself is audited.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_lifecycle import KycDocument
from ..adapters.documents import DocumentStore
from . import audit
from .communications import trader_in_firm
from .errors import Conflict, Invalid, NotFound
from .lifecycle import reason_text, set_kyc

UTC = dt.timezone.utc
MAX_BYTES = 10 * 1024 * 1024
KINDS = {"id_document": "Identity document", "proof_of_address": "Proof of address", "selfie": "Selfie with document",
         "other": "Other"}
TYPES = ((b"%PDF-", "application/pdf"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))
MAX_PENDING = 20  # documents awaiting review a trader may have: an upload loop does not fill the disk


def sniff(data: bytes) -> str | None:
    """The document's type from its first bytes, or ``None`` when it is none we take."""
    for magic, content_type in TYPES:
        if data.startswith(magic):
            return content_type
    return None


def clean_filename(name: str) -> str:
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch not in '"<>|:*?').strip(" .")
    return base[:200] or "document"


def upload(session: Session, store: DocumentStore, *, firm_id: str, trader_id: int, kind: str, filename: str,
           data: bytes, actor: str, trader_scope: int | None = None) -> KycDocument:
    trader = trader_in_firm(session, firm_id=firm_id, trader_id=trader_id, trader_scope=trader_scope)
    if kind not in KINDS:
        raise Invalid(f"kind: one of {', '.join(KINDS)}")
    if not data:
        raise Invalid("file: the file is empty")
    if len(data) > MAX_BYTES:
        raise Invalid(f"file: at most {MAX_BYTES // (1024 * 1024)} MB")
    content_type = sniff(data)
    if content_type is None:
        raise Invalid("file: only PDF, PNG or JPEG documents are taken")
    pending = session.scalar(select(func.count()).select_from(KycDocument).where(
        KycDocument.firm_id == firm_id, KycDocument.trader_id == trader.id, KycDocument.status == "pending"))
    if pending >= MAX_PENDING:
        raise Conflict(f"file: {pending} documents already await review; wait for the review")
    key = store.put(data)
    try:
        row = KycDocument(firm_id=firm_id, trader_id=trader.id, kind=kind, filename=clean_filename(filename),
                          content_type=content_type, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                          storage_key=key, status="pending", uploaded_by=actor, created_at=dt.datetime.now(UTC))
        session.add(row)
        session.flush()
        audit.append(session, actor=actor, action="trader.kyc_document", entity="trader", entity_id=str(trader.id),
                     after={"document": row.id, "kind": kind, "sha256": row.sha256, "size": row.size,
                            "content_type": content_type}, firm_id=firm_id)
    except BaseException:
        store.delete(key)  # no row, no file (a failure at the commit itself still leaves one: see the docs)
        raise
    return row


def documents_of(session: Session, *, firm_id: str, trader_id: int, trader_scope: int | None = None) -> list[KycDocument]:
    trader_in_firm(session, firm_id=firm_id, trader_id=trader_id, trader_scope=trader_scope)
    return list(session.scalars(select(KycDocument).where(KycDocument.firm_id == firm_id,
                                                          KycDocument.trader_id == trader_id)
                                .order_by(KycDocument.id.desc())))


def get_document(session: Session, *, firm_id: str, document_id: int) -> KycDocument:
    row = session.get(KycDocument, document_id)
    if row is None or row.firm_id != firm_id:
        raise NotFound(f"no document {document_id}")
    return row


def review_queue(session: Session, *, firm_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """Traders with documents awaiting review, the longest waiting first."""
    first = func.min(KycDocument.created_at)
    rows = session.execute(
        select(KycDocument.trader_id, func.count(), first, m.Trader.name, m.Trader.email, m.Trader.kyc_status)
        .join(m.Trader, m.Trader.id == KycDocument.trader_id)
        .where(KycDocument.firm_id == firm_id, KycDocument.status == "pending")
        .group_by(KycDocument.trader_id, m.Trader.name, m.Trader.email, m.Trader.kyc_status)
        .order_by(first, KycDocument.trader_id).limit(limit)).all()
    return [{"trader_id": t, "documents": n, "waiting_since": since, "name": name, "email": email, "kyc_status": kyc}
            for t, n, since, name, email, kyc in rows]


def review(session: Session, *, firm_id: str, trader_id: int, decision: str, reason: str, actor: str,
           expires_at: dt.datetime | None = None) -> list[KycDocument]:
    """Approve or reject the trader's verification from their pending documents (see the module's docstring)."""
    if decision not in ("approved", "rejected"):
        raise Invalid("decision: approved or rejected")
    text = reason_text(reason)
    trader = trader_in_firm(session, firm_id=firm_id, trader_id=trader_id)
    pending = list(session.scalars(select(KycDocument).where(
        KycDocument.firm_id == firm_id, KycDocument.trader_id == trader.id, KycDocument.status == "pending")
        .order_by(KycDocument.id).with_for_update()))
    if not pending:
        raise Conflict(f"{trader.name} has no documents awaiting review")
    now = dt.datetime.now(UTC)
    for row in pending:
        row.status, row.reviewed_by, row.review_reason, row.reviewed_at = decision, actor, text, now
    audit.append(session, actor=actor, action="trader.kyc_review", entity="trader", entity_id=str(trader.id),
                 after={"decision": decision, "reason": text, "documents": [row.id for row in pending]},
                 firm_id=firm_id)
    set_kyc(session, firm_id=firm_id, trader_id=trader.id, status=decision, actor=actor, expires_at=expires_at,
            reason=f"{text} (from {len(pending)} document{'s' if len(pending) != 1 else ''})",
            reference=f"documents:{','.join(str(row.id) for row in pending)}"[:200])
    return pending


__all__ = ["KINDS", "MAX_BYTES", "clean_filename", "documents_of", "get_document", "review", "review_queue", "sniff",
           "upload"]
