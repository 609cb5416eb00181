"""Rows the storage-seam contract tests seed in a real database, named ``"<firm>:<name>"`` as their fakes are."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from propcrm.adapters.db import models as m
from propcrm.services import users


def sql_traders(s: Session, keys: Iterable[str]) -> dict[str, int]:
    """A trader per ``"fa:t1"``-style key (firm ``fa``, name ``t1``); their ids by key."""
    found = {}
    for key in keys:
        firm, name = key.split(":", 1)
        trader = m.Trader(firm_id=firm, name=name, email=f"{name}@traders.example")
        s.add(trader)
        s.flush()
        found[key] = trader.id
    return found


def sql_user(s: Session, key: str, *, role: str, active: bool = True) -> int:
    """A staff user for a ``"fa:risk"``-style key (firm ``fa``, mailbox ``risk``) with ``role``; its id."""
    firm, name = key.split(":", 1)
    user = users.create_user(s, firm_id=firm, email=f"{name}@{firm}.example", password="correct horse battery staple",
                             role=role)
    user.active = active
    return user.id
