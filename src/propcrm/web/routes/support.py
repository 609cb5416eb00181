"""Back office support inbox: every trader's conversation, assignment, reply, close.

The support desk (``roles.SUPPORT_DESK``: admin, support) reads and acts; the other roles get 403.
A reply is :func:`services.support.reply` — the same message path as the API's staff message (outbox:
in-app, e-mail when configured; the trader reads it in the portal's messages).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from ...http.auth import Db
from ...http.pages import Form, Role, redirect, render
from ...roles import SUPPORT_DESK
from ...services import communications as comms
from ...services import support as service
from ...services.errors import Conflict, Invalid
from .accounts import int_param

router = APIRouter()

MAX_ID = 2**31 - 1
ConversationId = Annotated[int, Path(ge=1, le=MAX_ID)]
PAGE = 50
VIEWS = (("open", "Open"), ("mine", "Assigned to me"), ("unassigned", "Unassigned"), ("closed", "Closed"), ("all", "All"))


@router.get("/office/support")
def inbox_page(request: Request, user: Role(*SUPPORT_DESK), session: Db) -> Response:
    view = request.query_params.get("view") or "open"
    if view not in dict(VIEWS):
        view = "open"
    offset = int_param(request.query_params.get("offset"), 0, 0, 1_000_000_000)
    status = {"mine": "open", "unassigned": "open"}.get(view, view)
    rows, total = service.inbox(session, firm_id=user.firm_id, status=status,
                                assigned_user_id=user.user_id if view == "mine" else None,
                                unassigned=view == "unassigned", limit=PAGE, offset=offset)

    def link(**changes: Any) -> str:
        merged = {"view": view if view != "open" else None, **changes}
        return "/office/support?" + urlencode({k: v for k, v in merged.items() if v not in (None, "", 0)})

    return render(request, "support/inbox.html", {
        "rows": rows, "total": total, "view": view, "views": VIEWS,
        "prev_href": link(offset=max(offset - PAGE, 0) or None) if offset > 0 else None,
        "next_href": link(offset=offset + PAGE) if offset + PAGE < total else None,
    })


@router.get("/office/support/{conversation_id}")
def conversation_page(request: Request, conversation_id: ConversationId, user: Role(*SUPPORT_DESK),
                      session: Db) -> Response:
    row = service.get_conversation(session, firm_id=user.firm_id, conversation_id=conversation_id)
    trader = comms.trader_in_firm(session, firm_id=user.firm_id, trader_id=row.trader_id)
    messages = service.messages(session, firm_id=user.firm_id, trader_id=trader.id)
    last_in = next((msg for msg in reversed(messages) if msg.kind == "message_in"), None)
    return render(request, "support/conversation.html", {
        "conversation": row, "trader": trader, "messages": messages, "desk": service.desk(session, firm_id=user.firm_id),
        "reply_subject": ("Re: " + last_in.subject if last_in and not last_in.subject.startswith("Re:") else
                          (last_in.subject if last_in else ""))[:200],
    })


def _act(request: Request, session, conversation_id: int, done: str, action) -> Response:
    back = f"/office/support/{conversation_id}"
    try:
        with session.begin_nested():
            action()
    except (Invalid, Conflict) as exc:
        return redirect(request, back, flash=f"Not done: {exc}")
    return redirect(request, back, flash=done)


@router.post("/office/support/{conversation_id}/assign")
def assign(request: Request, conversation_id: ConversationId, form: Form, user: Role(*SUPPORT_DESK),
           session: Db) -> Response:
    raw = form.get("user_id", "")
    if raw == "me":
        raw = str(user.user_id)
    if raw and not (raw.isdigit() and len(raw) < 10):
        return redirect(request, f"/office/support/{conversation_id}", flash="Not done: user_id: choose a person")
    user_id = int(raw) if raw else None
    return _act(request, session, conversation_id, "Assigned." if user_id else "Unassigned.",
                lambda: service.assign(session, firm_id=user.firm_id, conversation_id=conversation_id,
                                       user_id=user_id, actor=user.actor))


@router.post("/office/support/{conversation_id}/reply")
def reply(request: Request, conversation_id: ConversationId, form: Form, user: Role(*SUPPORT_DESK),
          session: Db) -> Response:
    close = form.get("close") == "yes"
    return _act(request, session, conversation_id,
                "Reply sent to the trader" + (" and the conversation closed." if close else "."),
                lambda: service.reply(session, firm_id=user.firm_id, conversation_id=conversation_id,
                                      subject=form.get("subject", ""), text=form.get("text", ""), actor=user.actor,
                                      close=close))


@router.post("/office/support/{conversation_id}/close")
def close(request: Request, conversation_id: ConversationId, form: Form, user: Role(*SUPPORT_DESK),
          session: Db) -> Response:
    return _act(request, session, conversation_id, "Conversation closed.",
                lambda: service.set_status(session, firm_id=user.firm_id, conversation_id=conversation_id,
                                           status="closed", actor=user.actor))


@router.post("/office/support/{conversation_id}/reopen")
def reopen(request: Request, conversation_id: ConversationId, form: Form, user: Role(*SUPPORT_DESK),
           session: Db) -> Response:
    return _act(request, session, conversation_id, "Conversation reopened.",
                lambda: service.set_status(session, firm_id=user.firm_id, conversation_id=conversation_id,
                                           status="open", actor=user.actor))
