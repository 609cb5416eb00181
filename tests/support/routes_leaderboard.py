"""Rows of the permission matrix for the leaderboard's API (issue 17; see support/routes.py): the board for
the firm's traders and its moderators, hide and unhide for the moderators (each call on a fresh entry of
firm fa), the fairness thresholds for the admin."""

from __future__ import annotations

from propcrm.adapters.db import models as m
from propcrm.services import leaderboard
from support.routes import ADMIN, Route
from support.staff import World

MODERATORS = ("admin", "risk", "support")
READERS = ("trader", *MODERATORS)


def _fresh_entry(w: World, who) -> str:
    """A new trader of firm fa who opted in (so every role's call has an entry of its own to act on)."""
    n = next(w.counter)
    with w.sessions.begin() as s:
        trader = m.Trader(firm_id="fa", name=f"Board Person {n}", email=f"board{n}@traders.example")
        s.add(trader)
        s.flush()
        return str(leaderboard.opt_in(s, firm_id="fa", trader_id=trader.id, pseudonym=None, actor="test").id)


def _hidden_entry(w: World, who) -> str:
    entry_id = _fresh_entry(w, who)
    with w.sessions.begin() as s:
        leaderboard.hide(s, firm_id="fa", entry_id=int(entry_id), reason="matrix test", actor="test")
    return entry_id


ROUTES = [
    Route("GET", "/api/v1/leaderboard", READERS),
    Route("POST", "/api/v1/leaderboard/entries/{entry_id}/hide", MODERATORS, path=_fresh_entry,
          body=lambda w, who: {"reason": "pseudonym reported"}),
    Route("POST", "/api/v1/leaderboard/entries/{entry_id}/unhide", MODERATORS, path=_hidden_entry,
          body=lambda w, who: {"reason": "report reviewed"}),
    Route("PUT", "/api/v1/leaderboard/settings", ADMIN, body=lambda w, who: {"min_trades": 5, "min_days": 2}),
]
