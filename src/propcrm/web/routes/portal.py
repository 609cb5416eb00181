"""The trader portal: my accounts with progress bars, one account with its decisions and "why did my
account fail", payouts (eligibility, request, history), profile (KYC documents, two-factor and password
links, orders, taking part in the leaderboard), the pseudonymous leaderboard, messages.

Only the ``trader`` role opens these pages (every staff role gets 403); everything is read with the
trader's scope (``Principal.trader_scope``), so another trader's account, payout or timeline is 404
exactly like one that does not exist. The actions call the same service functions as the JSON API
with the trader's scope: ``POST /portal/payouts`` is ``POST /api/v1/payouts`` (``payouts.request_payout``)
and ``POST /portal/messages`` is ``POST /api/v1/traders/{id}/messages`` (``communications.add_message``,
``from_trader``), so the same checks, audit entries and notifications apply.

Form routes list ``form: Form`` before the user: the CSRF token and origin are checked first, so a
forged post is refused as such whoever sends it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from ...http.auth import Db
from ...services import communications as comms
from ...services import decisions as decision_service
from ...services import lifecycle as lifecycle_service
from ...services import payouts as payout_service
from ...services.accounts import get_account, list_accounts
from ...services.errors import Conflict, Invalid, NotFound
from .. import queries_portal as q
from ...adapters.db import models as m
from ...services import certificates as certificate_service
from ..documents import certificate_pdf, pdf_response, statement_pdf
from ..queries_trades import journal_view
from ...http.pages import Form, Role, checked_form, fmt_money, redirect, render
from ...services import kyc_documents, leaderboard, totp
from ...services import users as user_service
from ...roles import TRADER

router = APIRouter()

MAX_ID = 2_147_483_647
AccountId = Annotated[int, Path(ge=1, le=MAX_ID)]
CertificateId = Annotated[str, Path(min_length=10, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
Trader = Role(*TRADER)
DECISIONS_PER_PAGE = 25


def _scope(user) -> int:
    return user.trader_scope  # a trader's own id (-1 for a trader user without a trader: sees nothing)


# --------------------------------------------------------------------------------------------------
# accounts


@router.get("/portal")
def portal_home(request: Request, user: Trader, session: Db) -> Response:
    cards = q.my_accounts(session, firm_id=user.firm_id, trader_id=_scope(user))
    return render(request, "portal/index.html", {"cards": cards})


@router.get("/portal/accounts/{account_id}")
def portal_account(request: Request, account_id: AccountId, user: Trader, session: Db,
                   offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Response:
    card = q.card(session, firm_id=user.firm_id, trader_id=_scope(user), account_id=account_id)
    decisions = decision_service.list_decisions(session, firm_id=user.firm_id, trader_id=_scope(user),
                                                account_id=account_id, limit=DECISIONS_PER_PAGE, offset=offset)
    return render(request, "portal/account.html", {
        "card": card, "a": card.detail, "decisions": decisions, "series_url": _series_url(account_id),
        "positions": _positions(session, user, account_id) if card.detail["open_positions"] else [],
    })


def _positions(session, user, account_id: int) -> list[dict]:
    """The account's open positions (the accounts area's reader of the engine's state), when installed."""
    try:
        from ..queries_accounts import open_positions
    except ImportError:  # pragma: no cover - the accounts area ships with it
        return []
    return open_positions(session, get_account(session, firm_id=user.firm_id, account_id=account_id,
                                               trader_id=_scope(user)))


@router.get("/portal/accounts/{account_id}/trades")
def portal_trades(request: Request, account_id: AccountId, user: Trader, session: Db,
                  offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
                  month: Annotated[str | None, Query(max_length=7)] = None) -> Response:
    """The account's trade journal: statistics, the daily P/L calendar and the closed trades."""
    account = get_account(session, firm_id=user.firm_id, account_id=account_id, trader_id=_scope(user))  # 404
    journal = journal_view(session, account, offset=offset, month=month)
    return render(request, "portal/trades.html", {"a": journal["account"], "j": journal})


@router.get("/portal/accounts/{account_id}/card")
def portal_card(request: Request, account_id: AccountId, user: Trader, session: Db) -> Response:
    """One account's card alone (HTML fragment): what the live updates of /portal swap in."""
    card = q.card(session, firm_id=user.firm_id, trader_id=_scope(user), account_id=account_id)
    return render(request, "portal/card.html", {"c": card})


@router.get("/portal/accounts/{account_id}/why")
def portal_why(request: Request, account_id: AccountId, user: Trader, session: Db) -> Response:
    card = q.card(session, firm_id=user.firm_id, trader_id=_scope(user), account_id=account_id)
    breaches, zone = q.why(session, firm_id=user.firm_id, trader_id=_scope(user), account_id=account_id)
    return render(request, "portal/why.html", {"card": card, "a": card.detail, "breaches": breaches, "zone": zone,
                                               "detail_rows": q.detail_rows, "comparators": q.COMPARATOR_WORDS})


def _series_source():
    """The accounts area's chart series (``queries_accounts.series``: the same points, levels and target
    the back office draws), when that module is installed."""
    try:
        from .. import queries_accounts
    except ImportError:  # pragma: no cover - the accounts area ships with it
        return None
    return getattr(queries_accounts, "series", None)


def _series_url(account_id: int) -> str | None:
    return f"/portal/accounts/{account_id}/series.json" if _series_source() is not None else None


@router.get("/portal/accounts/{account_id}/series.json")
def portal_series(account_id: AccountId, user: Trader, session: Db) -> Response:
    account = get_account(session, firm_id=user.firm_id, account_id=account_id, trader_id=_scope(user))  # 404
    source = _series_source()
    if source is None:
        raise NotFound("no chart data for this account")
    return JSONResponse(source(session, account), headers={"Cache-Control": "no-store"})


# --------------------------------------------------------------------------------------------------
# payouts (as GET/POST /api/v1/accounts/{id}/payout-eligibility, /payouts)


def _payout_views(session, user) -> list[dict]:
    rows = payout_service.list_payouts(session, firm_id=user.firm_id, trader_scope=_scope(user))
    return [payout_service.payout_view(session, row, for_trader=True) for row in reversed(rows)]


@router.get("/portal/payouts")
def portal_payouts(request: Request, user: Trader, session: Db) -> Response:
    mine = list_accounts(session, firm_id=user.firm_id, trader_id=_scope(user), sort="-id", limit=200).items
    eligibility = [payout_service.preview(session, firm_id=user.firm_id, account_id=a["id"],
                                          trader_scope=_scope(user)) for a in mine if a["status"] == "funded"]
    others = [a for a in mine if a["status"] != "funded"]
    return render(request, "portal/payouts.html", {
        "eligibility": eligibility, "others": others, "payouts": _payout_views(session, user),
        "methods": payout_service.METHODS,
    })


@router.get("/portal/payouts/{payout_id}/statement.pdf")
def portal_payout_statement(payout_id: AccountId, user: Trader, session: Db) -> Response:
    """The statement of an approved payout (404 for another trader's, 409 before approval)."""
    row = payout_service.get_payout(session, firm_id=user.firm_id, payout_id=payout_id, trader_scope=_scope(user))
    return pdf_response(statement_pdf(session, row), f"payout-{row.id}-statement.pdf")


# --------------------------------------------------------------------------------------------------
# certificates (issued from the records; verified by anyone holding the link)


@router.get("/portal/certificates")
def portal_certificates(request: Request, user: Trader, session: Db) -> Response:
    with request.app.state.sessions.begin() as writer:  # issues the certificates of new achievements
        rows = certificate_service.issue_for_trader(writer, firm_id=user.firm_id, trader_id=_scope(user))
        items = [{"id": c.id, "kind": c.kind, "title": c.facts.get("title"), "facts": certificate_service.facts_rows(c),
                  "issued_at": c.issued_at} for c in rows]
    return render(request, "portal/certificates.html", {"items": items, "base": str(request.base_url).rstrip("/")})


@router.get("/portal/certificates/{certificate_id}.pdf")
def portal_certificate_pdf(request: Request, certificate_id: CertificateId, user: Trader, session: Db) -> Response:
    row = certificate_service.get_certificate(session, certificate_id=certificate_id, firm_id=user.firm_id,
                                              trader_id=_scope(user))
    return pdf_response(certificate_pdf(session, row, str(request.base_url).rstrip("/")), f"certificate-{row.kind}.pdf")


@router.get("/verify/{certificate_id}")
def verify_certificate(request: Request, certificate_id: CertificateId, session: Db) -> Response:
    """Public: the certificate's facts, for anyone holding its link (nothing else of the trader)."""
    try:
        row = certificate_service.get_certificate(session, certificate_id=certificate_id)
    except NotFound:
        return render(request, "portal/verify.html", {"row": None}, status=404)
    firm = session.get(m.Firm, row.firm_id)
    return render(request, "portal/verify.html", {"row": row, "firm": firm.name if firm else row.firm_id,
                                                  "facts": certificate_service.facts_rows(row)})


@router.post("/portal/payouts")
def portal_request_payout(request: Request, form: Form, user: Trader, session: Db) -> Response:
    raw = (form.get("account_id") or "").strip()
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_ID:
        return redirect(request, "/portal/payouts", flash="Choose the account to be paid.")
    get_account(session, firm_id=user.firm_id, account_id=int(raw), trader_id=_scope(user))  # 404 outside scope
    try:  # the portal always asks how to pay: method and destination are required here
        method, destination = payout_service.payment_details(form.get("method"), form.get("destination"))
    except Invalid as exc:
        return redirect(request, "/portal/payouts", flash=f"The request was not accepted: {exc}")
    try:
        row = payout_service.request_payout(session, firm_id=user.firm_id, account_id=int(raw), actor=user.actor,
                                            trader_scope=_scope(user), method=method, destination=destination)
    except (Invalid, Conflict) as exc:
        return redirect(request, "/portal/payouts", flash=f"The request was not accepted: {exc}")
    if row.status == "requested":
        flash = (f"Payout request {row.id} for {fmt_money(row.trader_amount)} is received; finance will review "
                 "it and you will be told here and in your messages.")
    else:
        flash = f"Payout request {row.id} was refused: {row.reason}"
    return redirect(request, f"/portal/payouts#payout-{row.id}", flash=flash)


# --------------------------------------------------------------------------------------------------
# profile, messages


def _trader_view(request: Request, session, user) -> dict:
    """As ``GET /api/v1/traders/{id}``: the trader with their stage brought up to date. The page's own
    unit of work only reads; when the stage is behind the facts (a KYC approval expired, an account
    funded), the catch-up runs in a write unit of work of its own, exactly like the API's read."""
    comms.trader_in_firm(session, firm_id=user.firm_id, trader_id=_scope(user), trader_scope=_scope(user))
    if not lifecycle_service.behind(session, firm_id=user.firm_id, trader_id=_scope(user)):
        return lifecycle_service.trader_view(session, firm_id=user.firm_id, trader_id=_scope(user),
                                             trader_scope=_scope(user))
    with request.app.state.sessions.begin() as writer:
        lifecycle_service.sync(writer, firm_id=user.firm_id, trader_id=_scope(user))
        return lifecycle_service.trader_view(writer, firm_id=user.firm_id, trader_id=_scope(user),
                                             trader_scope=_scope(user))


@router.get("/portal/profile")
def portal_profile(request: Request, user: Trader, session: Db) -> Response:
    trader = _trader_view(request, session, user)
    record = comms.trader_in_firm(session, firm_id=user.firm_id, trader_id=_scope(user), trader_scope=_scope(user))
    cleared, kyc_words = lifecycle_service.kyc_cleared(session, record, write=False)
    orders = [lifecycle_service.order_view(o) for o in
              lifecycle_service.list_orders(session, firm_id=user.firm_id, trader_id=_scope(user))]
    account = user_service.get_user(session, firm_id=user.firm_id, user_id=user.user_id)
    return render(request, "portal/profile.html", {
        "trader": trader, "kyc_cleared": cleared, "kyc_words": kyc_words, "orders": orders, "login": user.email,
        "documents": kyc_documents.documents_of(session, firm_id=user.firm_id, trader_id=_scope(user),
                                                trader_scope=_scope(user)),
        "document_kinds": kyc_documents.KINDS, "max_mb": kyc_documents.MAX_BYTES // (1024 * 1024),
        "two_factor": totp.enabled(account),
        "entry": leaderboard.entry_of(session, firm_id=user.firm_id, trader_id=_scope(user)),
        "pseudonym_max": leaderboard.MAX_PSEUDONYM})


async def _upload_form(request: Request) -> Any:
    """The multipart form of an upload, its origin and CSRF token checked (a dependency, so that it runs
    before the role check, like ``Form``)."""
    return await checked_form(request, max_files=1, max_part_size=kyc_documents.MAX_BYTES + 1024)


@router.post("/portal/kyc/documents")
async def portal_upload_document(request: Request, form: Annotated[Any, Depends(_upload_form)], user: Trader,
                                 session: Db) -> Response:
    """The trader sends an identity document (the service the back office's upload uses, in the trader's
    scope): PDF, PNG or JPEG told by its first bytes, at most ``MAX_BYTES``; it then awaits review."""
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return redirect(request, "/portal/profile#kyc", flash="Not uploaded: choose a file (PDF, PNG or JPEG).")
    data = await upload.read(kyc_documents.MAX_BYTES + 1)
    kind = form.get("kind")
    try:
        with session.begin_nested():
            row = kyc_documents.upload(session, request.app.state.documents, firm_id=user.firm_id,
                                       trader_id=_scope(user), kind=kind if isinstance(kind, str) else "",
                                       filename=upload.filename, data=data, actor=user.actor, trader_scope=_scope(user))
    except (Invalid, Conflict) as exc:
        return redirect(request, "/portal/profile#kyc", flash=f"Not uploaded: {exc}")
    return redirect(request, "/portal/profile#kyc", flash=f"{row.filename} is uploaded; it awaits review by compliance.")


# --------------------------------------------------------------------------------------------------
# the leaderboard (opt-in, pseudonymous: services/leaderboard.py)


@router.get("/portal/leaderboard")
def portal_leaderboard(request: Request, user: Trader, session: Db,
                       period: Annotated[str, Query(max_length=8)] = leaderboard.DEFAULT_PERIOD,
                       size: Annotated[str, Query(max_length=16)] = "") -> Response:
    board = leaderboard.board(session, firm_id=user.firm_id, period=period)
    chosen = leaderboard.size_of(size)
    entry = leaderboard.entry_of(session, firm_id=user.firm_id, trader_id=_scope(user))
    mine = entry.id if entry is not None and entry.opted_in and entry.hidden_at is None else None
    rows = [{"row": row, "you": row.entry_id == mine} for row in board.filtered(chosen)]
    return render(request, "portal/leaderboard.html", {
        "board": board, "rows": rows, "size": chosen, "periods": leaderboard.PERIODS, "entry": entry,
        "staff": False})


@router.post("/portal/leaderboard/join")
def portal_leaderboard_join(request: Request, form: Form, user: Trader, session: Db) -> Response:
    try:
        with session.begin_nested():
            entry = leaderboard.opt_in(session, firm_id=user.firm_id, trader_id=_scope(user),
                                       pseudonym=form.get("pseudonym", ""), actor=user.actor)
    except (Invalid, Conflict) as exc:
        return redirect(request, "/portal/profile#leaderboard", flash=f"Not done: {exc}")
    return redirect(request, "/portal/profile#leaderboard",
                    flash=f"You are on the leaderboard as {entry.pseudonym}; your name and accounts are never shown.")


@router.post("/portal/leaderboard/leave")
def portal_leaderboard_leave(request: Request, form: Form, user: Trader, session: Db) -> Response:
    try:
        with session.begin_nested():
            leaderboard.opt_out(session, firm_id=user.firm_id, trader_id=_scope(user), actor=user.actor)
    except Conflict as exc:
        return redirect(request, "/portal/profile#leaderboard", flash=f"Not done: {exc}")
    return redirect(request, "/portal/profile#leaderboard", flash="You are off the leaderboard.")


def _messages_page(request: Request, session, user, *, subject: str = "", text: str = "", error: str | None = None,
                   status: int = 200) -> Response:
    items = comms.timeline(session, firm_id=user.firm_id, trader_id=_scope(user), trader_scope=_scope(user))
    return render(request, "portal/messages.html", {"items": items, "subject": subject, "text": text,
                                                    "error": error, "max_body": comms.MAX_BODY}, status=status)


@router.get("/portal/messages")
def portal_messages(request: Request, user: Trader, session: Db) -> Response:
    return _messages_page(request, session, user)


@router.post("/portal/messages")
def portal_send_message(request: Request, form: Form, user: Trader, session: Db) -> Response:
    subject, text = form.get("subject", ""), form.get("text", "")
    try:
        comms.add_message(session, firm_id=user.firm_id, trader_id=_scope(user), subject=subject, text=text,
                          actor=user.actor, from_trader=True, trader_scope=_scope(user))
    except Invalid as exc:
        return _messages_page(request, session, user, subject=subject, text=text, error=str(exc), status=422)
    return redirect(request, "/portal/messages", flash="Your message is sent to support.")
