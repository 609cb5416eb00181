"""In-app notifications: rows in ``notifications``, one per user who should see the news.

Who: the firm's active users of role ``admin`` and ``risk``, and the trader's own active user(s) when
the account has a trader with a login. Written inside the caller's transaction.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..db import models as m
from .notices import Notice

STAFF_ROLES = ("admin", "risk")


def in_app_recipients(session: Session, *, firm_id: str, trader_id: int | None) -> list[int]:
    """User ids, ascending, without repeats."""
    who = m.User.role.in_(STAFF_ROLES)
    if trader_id is not None:
        who = or_(who, (m.User.role == "trader") & (m.User.trader_id == trader_id))
    query = select(m.User.id).where(m.User.firm_id == firm_id, m.User.active.is_(True), who).order_by(m.User.id)
    return list(dict.fromkeys(session.scalars(query)))


def add_in_app(session: Session, *, firm_id: str, trader_id: int | None, notice: Notice, now: dt.datetime) -> int:
    """Add the notice to every recipient's list; returns how many rows were added."""
    users = in_app_recipients(session, firm_id=firm_id, trader_id=trader_id)
    for user_id in users:
        session.add(m.Notification(firm_id=firm_id, user_id=user_id, title=notice.title, body=notice.body,
                                   created_at=now))
    return len(users)


__all__ = ["STAFF_ROLES", "add_in_app", "in_app_recipients"]
