"""The leaderboard as staff see it (``LEADERBOARD`` roles: admin, risk, support): the same board traders
see, with a hide button per entry, and every entry (who takes part, who is hidden and why) with an unhide;
the admin sets the fairness thresholds (closes and trading days in the period to be ranked).
Staff see the pseudonyms only here too; the trader behind an entry is one link away, on the CRM profile.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from ...http.auth import Db
from ...http.pages import Form, Role, redirect, render
from ...roles import ADMIN, LEADERBOARD
from ...services import leaderboard
from ...services.errors import Conflict, Invalid

router = APIRouter()

EntryId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ENTRIES_PAGE = 50
Moderator = Role(*LEADERBOARD)
Admin = Role(*ADMIN)


@router.get("/office/leaderboard")
def office_leaderboard(request: Request, user: Moderator, session: Db,
                       period: Annotated[str, Query(max_length=8)] = leaderboard.DEFAULT_PERIOD,
                       size: Annotated[str, Query(max_length=16)] = "",
                       entries_offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0) -> Response:
    board = leaderboard.board(session, firm_id=user.firm_id, period=period)
    chosen = leaderboard.size_of(size)
    # the entries a page at a time (a big firm's traders opt in by the ten thousand); the count is the
    # one entries_version reads on every board read anyway
    total = leaderboard.entries_version(session, firm_id=user.firm_id)[0]
    shown = leaderboard.entries(session, firm_id=user.firm_id, limit=ENTRIES_PAGE, offset=entries_offset)

    def link(offset: int) -> str:
        return "/office/leaderboard?" + urlencode({"period": board.period, "size": size, "entries_offset": offset}) + "#entries"

    return render(request, "portal/leaderboard.html", {
        "board": board, "rows": [{"row": row, "you": False} for row in board.filtered(chosen)], "size": chosen,
        "periods": leaderboard.PERIODS, "entry": None, "staff": True,
        "entries": shown, "entries_total": total, "entries_offset": entries_offset,
        "entries_prev": link(max(entries_offset - ENTRIES_PAGE, 0)) if entries_offset > 0 else None,
        "entries_next": link(entries_offset + ENTRIES_PAGE) if entries_offset + ENTRIES_PAGE < total else None,
        "may_set": user.role in ADMIN, "max_minimum": leaderboard.MAX_MINIMUM})


def _whole(text: object) -> object:
    """A form's number as an int when it is one (``"5"``), else as it came (the service names the field)."""
    return int(text) if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 6 else text


@router.post("/office/leaderboard/settings")
def set_fairness(request: Request, form: Form, user: Admin, session: Db) -> Response:
    try:
        with session.begin_nested():
            fair = leaderboard.set_fairness(session, firm_id=user.firm_id, min_trades=_whole(form.get("min_trades")),
                                            min_days=_whole(form.get("min_days")), actor=user.actor)
    except Invalid as exc:
        return redirect(request, "/office/leaderboard", flash=f"Not done: {exc}")
    return redirect(request, "/office/leaderboard",
                    flash=f"Accounts are ranked after {fair.min_trades} closed trades on {fair.min_days} trading days.")


@router.post("/office/leaderboard/{entry_id}/hide")
def hide_entry(request: Request, entry_id: EntryId, form: Form, user: Moderator, session: Db) -> Response:
    try:
        with session.begin_nested():
            entry = leaderboard.hide(session, firm_id=user.firm_id, entry_id=entry_id, reason=form.get("reason", ""),
                                     actor=user.actor)
    except (Invalid, Conflict) as exc:
        return redirect(request, "/office/leaderboard", flash=f"Not done: {exc}")
    return redirect(request, "/office/leaderboard", flash=f"{entry.pseudonym} is hidden from the leaderboard.")


@router.post("/office/leaderboard/{entry_id}/unhide")
def unhide_entry(request: Request, entry_id: EntryId, form: Form, user: Moderator, session: Db) -> Response:
    try:
        with session.begin_nested():
            entry = leaderboard.unhide(session, firm_id=user.firm_id, entry_id=entry_id, actor=user.actor)
    except Conflict as exc:
        return redirect(request, "/office/leaderboard", flash=f"Not done: {exc}")
    return redirect(request, "/office/leaderboard", flash=f"{entry.pseudonym} is shown again (while opted in).")
