"""The equity-points projection replayed from the embedded event log: for accounts evaluated before the
projection existed (``propcrm trades backfill``) and for an account whose rule pack version changed (a re-bind
moves its floors and decisions, so its chart is rebuilt under the new version in the re-bind's transaction)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..domain.events import DECODER
from ..domain.market import Market
from ..domain.rules.limits import DailyLossRule, MaxLossRule
from ..engine.runner import Engine
from . import equity_points, equity_rollup
from .accounts import compiled_pack
from .evaluation import firm_wide
from .symbols import table_for

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _aware(ts: dt.datetime) -> dt.datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=dt.timezone.utc)


def _ms(ts: dt.datetime) -> int:
    return int(_aware(ts).timestamp() * 1000)


def _finite(value: Decimal | None) -> Decimal | None:
    return value if value is not None and value.is_finite() else None


def replay_points(session: Session, account: m.Account) -> tuple[list[dict[str, Any]], Any]:
    """Every point of the account's history from the embedded event log — what ``propcrm trades backfill``
    fills the equity-points projection with for accounts evaluated before it existed (the chart reads
    the projection): its applied events (and the firm's clock and news events
    among them) replayed through the engine with the account's pack phase, a point after each account
    event with the levels ``program.summary`` gives at that moment. Returns (points, program).

    A breach that staff cleared is cleared in the replay too, as ``services.overrides`` does it (the
    engine's state back to active, deadlines and watch band recomputed), before the first event that
    arrived after the override — so the line goes on after a cleared breach as the account did.
    """
    version = session.get(m.RulePackVersion, account.pack_version_id)
    program = compiled_pack(version).phase(account.phase)
    state = session.get(m.AccountState, account.id)
    if state is None:
        return [], program
    own = session.execute(
        select(m.RawEvent.seq, m.RawEvent.body, m.RawEvent.received_at).where(
            m.RawEvent.firm_id == account.firm_id, m.RawEvent.account_id == account.id,
            m.RawEvent.seq <= state.last_seq, m.RawEvent.status == "applied")
        .order_by(m.RawEvent.seq)
    ).all()
    if not own:
        return [], program
    first = own[0].seq
    shared = session.execute(
        firm_wide(m.RawEvent.seq, m.RawEvent.type, m.RawEvent.body, firm_id=account.firm_id)
        .where(m.RawEvent.seq <= state.last_seq).order_by(m.RawEvent.seq)
    ).all()
    clears = list(session.scalars(select(m.Override.created_at).where(
        m.Override.firm_id == account.firm_id, m.Override.account_id == account.id,
        m.Override.action == "clear_breach").order_by(m.Override.id)))
    engine = Engine(lambda external: program if external == account.external_id else None, dedupe=False)
    engine.market = Market()
    engine.set_symbols(table_for(session, account.firm_id))  # ticks mark its positions, as in the worker
    # news and prices before the account's first event only shape the market; clocks before it touch nothing
    stream = [(seq, body, received) for seq, body, received in own]
    stream += [(seq, body, None) for seq, kind, body in shared if kind != "clock" or seq > first]
    stream.sort(key=lambda item: item[0])
    limits = [(rule.rule_id, isinstance(rule, DailyLossRule), isinstance(rule, MaxLossRule)) for rule in program.limits]
    daily_id = next((rid for rid, daily, _ in limits if daily), None)
    max_id = next((rid for rid, _, maxloss in limits if maxloss), None)
    points: list[dict[str, Any]] = []
    name = account.external_id
    for _, body, received in stream:
        mine = received is not None
        if mine and clears and _aware(received) > _aware(clears[0]):
            while clears and _aware(received) > _aware(clears[0]):
                clears.pop(0)
            st = engine.states.get(name)
            if st is not None and st.status == "breached":  # as services.overrides.override_account
                st.status = "active"
                st.paused_until = None
                program.refresh_deadline(st)
                program.refresh_watch(st)
        event = DECODER.decode(body)
        decisions = engine.feed([event])
        st = engine.states.get(name)
        if st is None or not (mine or decisions):
            continue
        summary = program.summary(st)
        points.append({
            "t": _ms(event.ts), "equity": st.equity, "balance": st.balance,
            "daily_floor": _finite(summary.get(daily_id, {}).get("level")) if daily_id else None,
            "max_loss": _finite(summary.get(max_id, {}).get("level")) if max_id else None,
            "decisions": [(d.kind, d.rule) for d in decisions],
        })
    return points, program



def backfill_points(session: Session, *, firm_id: str, account_ids: Sequence[int] | None = None) -> tuple[int, int]:
    """Rebuild the points of a firm's accounts (all, or ``account_ids``) from the embedded event log,
    through the chart's replay (:func:`replay_points`), under the same rule.
    What was stored for them is replaced: running it twice gives the same rows. Returns (accounts,
    points written)."""
    query = select(m.Account).where(m.Account.firm_id == firm_id)
    if account_ids is not None:
        query = query.where(m.Account.id.in_(list(account_ids)))
    accounts = written = 0
    for account in session.scalars(query.order_by(m.Account.id)).all():
        session.execute(delete(m.EquityPoint).where(m.EquityPoint.account_id == account.id)
                        .execution_options(synchronize_session=False))
        points, _program = replay_points(session, account)
        series = [equity_points.Point(_EPOCH + dt.timedelta(milliseconds=p["t"]), p["equity"], p["balance"],
                                      p["daily_floor"], p["max_loss"], tuple(p["decisions"])) for p in points]
        written += equity_points.record(session, [(firm_id, account.id, series)])
        equity_rollup.forget(session, firm_id=firm_id, account_ids=[account.id])  # the rebuilt points are rolled up afresh
        accounts += 1
    return accounts, written
