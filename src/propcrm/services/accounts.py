"""Accounts as a firm's staff and traders see them: lists, and the numbers of one account.

Every function takes the caller's ``firm_id`` and, for a trader, ``trader_id`` (the only trader whose
accounts they may see); anything outside that scope is :class:`~propcrm.services.errors.NotFound`,
never "forbidden", so ids of other firms' accounts reveal nothing.

The figures of an account (floors, levels, distances, target progress, trading days) are read from
the engine's stored state with the account's own compiled pack phase — the same numbers the rules
decide on, not a re-derivation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Context, Decimal, InvalidOperation
from typing import Any, Iterable

from sqlalchemy import Numeric, bindparam, cast, func, or_, select, update
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_analytics import RiskScore
from ..domain.money import wide_context
from ..domain.program import PhaseProgram
from ..domain.rules.limits import DailyLossRule, MaxLossRule
from ..domain.state import AccountState
from . import audit
from .catalog import CatalogError, compiled_pack, pack_of  # noqa: F401 - compiled_pack re-exported
from .catalog import create_account as catalog_create_account
from .errors import Conflict, Invalid, NotFound
from .state_codec import STATE_DECODER

STATUSES = ("active", "paused", "breached", "passed", "funded", "suspended", "halted", "closed")
SORT_KEYS = ("id", "external_id", "status", "phase", "created_at", "balance", "equity", "daily_distance",
             "max_loss_distance", "nearest", "target_pct", "trading_days", "risk_score")
MAX_PAGE = 500
HUNDRED = Decimal(100)
#: counting the matches of a filtered or searched list stops here ("more than 10,000"): an exact count
#: of a search over 100,000 accounts costs as much as the page itself; the unfiltered count is exact
COUNT_CAP = 10_000

_EXTERNAL_ID = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


@dataclass(frozen=True)
class Page:
    total: int
    limit: int
    offset: int
    items: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "limit": self.limit, "offset": self.offset, "items": self.items}


@dataclass(frozen=True)
class AccountPage(Page):
    """A page of accounts; ``total_capped``: ``total`` is :data:`COUNT_CAP` + 1, i.e. "more than COUNT_CAP"."""

    total_capped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "total_capped": self.total_capped}


# --------------------------------------------------------------------------------------------------
# reading


def money(value: Decimal | None) -> str | None:
    """Decimal text for JSON without trailing zeros (``"99000"``, ``"539.99"``) — the same on every backend,
    whatever scale the column keeps; ``None`` for no value or a level that does not exist yet (±infinity)."""
    if value is None or not value.is_finite():
        return None
    if not value:
        return "0"
    if value.adjusted() >= 28:  # only a state an older version stored before the bounds: not written out
        return str(value)
    return format(value.normalize(), "f")


def _scoped(query, *, firm_id: str, trader_id: int | None):
    query = query.where(m.Account.firm_id == firm_id)
    if trader_id is not None:
        query = query.where(m.Account.trader_id == trader_id)
    return query


def get_account(session: Session, *, firm_id: str, account_id: int, trader_id: int | None = None,
                for_update: bool = False) -> m.Account:
    """The account with this id in the caller's scope, or :class:`NotFound`."""
    query = _scoped(select(m.Account).where(m.Account.id == account_id), firm_id=firm_id, trader_id=trader_id)
    if for_update and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    account = session.scalars(query).one_or_none()
    if account is None:
        raise NotFound(f"no account {account_id}")
    return account


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _page_columns():
    return (
        m.Account,
        m.AccountState.balance, m.AccountState.equity, m.AccountState.daily_floor, m.AccountState.daily_distance,
        m.AccountState.max_loss_level, m.AccountState.max_loss_distance, m.AccountState.nearest_bp,
        m.AccountState.target_bp, m.AccountState.trading_days, m.AccountState.updated_at,
        RiskScore.score, m.Trader.name,
    )


def _joined(query):
    return (
        query.outerjoin(m.AccountState, m.AccountState.account_id == m.Account.id)
        .outerjoin(RiskScore, RiskScore.account_id == m.Account.id)
        .outerjoin(m.Trader, m.Trader.id == m.Account.trader_id)
    )


def parse_near(value: str | Decimal | None) -> Decimal | None:
    """The ``near`` filter's percentage: 0 to 100 with at most two places."""
    if value is None or value == "":
        return None
    try:
        near = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise Invalid("near must be a percentage of equity, e.g. 5 or 2.5") from None
    if not near.is_finite() or not 0 <= near <= 100 or near != near.quantize(Decimal("0.01")):
        raise Invalid("near must be a percentage of equity between 0 and 100 with at most two decimal places")
    return near


def parse_near_amount(value: str | Decimal | None) -> Decimal | None:
    """The ``near_amount`` filter: a distance in the account's currency, 0 to 10^12, whole cents."""
    if value is None or value == "":
        return None
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise Invalid("near_amount must be an amount, e.g. 500 or 1250.50") from None
    if not amount.is_finite() or not 0 <= amount <= Decimal(10) ** 12 or amount != amount.quantize(Decimal("0.01")):
        raise Invalid("near_amount must be an amount between 0 and 1000000000000 with at most two decimal places")
    return amount


def list_accounts(
    session: Session,
    *,
    firm_id: str,
    trader_id: int | None = None,
    status: str | None = None,
    phase: str | None = None,
    search: str | None = None,
    near: str | Decimal | None = None,
    near_amount: str | Decimal | None = None,
    sort: str = "id",
    limit: int = 50,
    offset: int = 0,
) -> AccountPage:
    """Accounts of the firm (of one trader), filtered, sorted (``-key`` for descending) and paged.

    ``search`` matches part of the external id, the login, the trader's name or e-mail (case-insensitive).
    ``near`` (a percentage of equity, e.g. ``5``) keeps the accounts whose distance to the daily floor
    or to the max-loss level is at most that share of their equity (``nearest`` in the item: the
    smaller of the two ``distance_pct_of_equity`` the account page shows; a breached account's is
    negative, so it is near too). ``near_amount`` (an amount of the account's currency, e.g. ``500``) keeps
    the accounts whose distance to the daily floor or to the max-loss level is at most that amount.

    Sorting by a figure (``daily_distance``, ``max_loss_distance``, ``nearest``, ``target_pct``,
    ``trading_days``, ``risk_score``, ``balance``, ``equity``) puts accounts without one (not
    evaluated yet, no such level yet) last in either direction; money figures sort by their value
    floored to the cent, ties by id.

    ``total`` is exact for an unfiltered list; with a filter or search it is exact up to
    :data:`COUNT_CAP` and ``COUNT_CAP + 1`` beyond (``total_capped`` tells which).
    """
    if status is not None and status not in STATUSES:
        raise Invalid(f"status must be one of {', '.join(STATUSES)}")
    descending = sort.startswith("-")
    key = sort[1:] if descending else sort
    if key not in SORT_KEYS:
        raise Invalid(f"sort must be one of {', '.join(SORT_KEYS)}, optionally prefixed with '-' (descending)")
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(f"limit must be between 1 and {MAX_PAGE}")
    if offset < 0:
        raise Invalid("offset must not be negative")
    near_value = parse_near(near)
    conditions = []
    needs_state = False
    if status is not None:
        conditions.append(m.Account.status == status)
    if phase is not None:
        conditions.append(m.Account.phase == phase)
    if search and not search.isprintable():
        raise Invalid("search must not contain control characters")
    if search:
        pattern = _like(search[:200])
        # the firm's matching traders once (not a join per account row)
        traders = select(m.Trader.id).where(m.Trader.firm_id == firm_id, or_(
            m.Trader.name.ilike(pattern, escape="\\"), m.Trader.email.ilike(pattern, escape="\\")))
        conditions.append(or_(m.Account.external_id.ilike(pattern, escape="\\"),
                              m.Account.login.ilike(pattern, escape="\\"),
                              m.Account.trader_id.in_(traders.scalar_subquery())))
    if near_value is not None:
        conditions.append(m.AccountState.nearest_bp <= int(near_value * HUNDRED))
        needs_state = True
    amount = parse_near_amount(near_amount)
    if amount is not None:
        cents = int(amount * HUNDRED)
        conditions.append(or_(m.AccountState.daily_distance_cents <= cents,
                              m.AccountState.max_loss_distance_cents <= cents))
        needs_state = True

    def matching(query, *, state_joined: bool = False):
        """The accounts of the caller's scope that pass the filters (joins only what they need)."""
        if needs_state and not state_joined:
            query = query.join(m.AccountState, m.AccountState.account_id == m.Account.id)
        return _scoped(query, firm_id=firm_id, trader_id=trader_id).where(*conditions)

    # 1. the page's ids in order, from narrow rows; a figure sort walks its (firm_id, figure) index
    #    (the table's id is the index's last column) and then, past the accounts with the figure,
    #    those without one, by id
    def by_id(column):
        return column.desc() if descending else column.asc()

    if key in _ACCOUNT_SORTS:
        column = _ACCOUNT_SORTS[key]
        ids = list(session.scalars(matching(select(m.Account.id).select_from(m.Account))
                                   .order_by(by_id(column), by_id(m.Account.id)).limit(limit).offset(offset)))
    else:
        table, column = _FIGURE_SORTS[key]
        joined = table is m.AccountState
        if trader_id is None and status is None and phase is None and not search and (joined or not needs_state):
            # nothing to check on the account: the figure's index alone (its rows are the firm's accounts)
            having = select(table.account_id).where(table.firm_id == firm_id, column.is_not(None), *conditions)
        else:
            having = matching(select(m.Account.id).select_from(m.Account).join(table, table.account_id == m.Account.id),
                              state_joined=joined).where(table.firm_id == firm_id, column.is_not(None))
        ids = list(session.scalars(having.order_by(by_id(column), by_id(table.account_id)).limit(limit).offset(offset)))
        if len(ids) < limit:
            with_figure = offset + len(ids) if ids or offset == 0 else session.scalar(
                select(func.count()).select_from(having.subquery())) or 0
            missing = matching(select(m.Account.id).select_from(m.Account)
                               .outerjoin(table, table.account_id == m.Account.id), state_joined=joined)
            missing = missing.where(column.is_(None)).order_by(by_id(m.Account.id))
            ids += list(session.scalars(missing.limit(limit - len(ids)).offset(max(offset - with_figure, 0))))

    # 2. the count: known when this page is the last one; exact without filters; capped with them
    capped = False
    if len(ids) < limit and (ids or offset == 0):
        total = offset + len(ids)
    elif not conditions:
        total = session.scalar(_scoped(select(func.count()).select_from(m.Account), firm_id=firm_id,
                                       trader_id=trader_id)) or 0
    else:
        counted = matching(select(m.Account.id).select_from(m.Account)).limit(COUNT_CAP + 1)
        total = session.scalar(select(func.count()).select_from(counted.subquery())) or 0
        capped = total > COUNT_CAP

    # 3. the rows of the page, complete
    rows = _rows(session, firm_id=firm_id, trader_id=trader_id, ids=ids)
    items = [rows[i] for i in ids if i in rows]
    return AccountPage(total=total, limit=limit, offset=offset, items=items, total_capped=capped)


_ACCOUNT_SORTS = {
    "id": m.Account.id,
    "external_id": m.Account.external_id,
    "status": m.Account.status,
    "phase": m.Account.phase,
    "created_at": m.Account.created_at,
}
_FIGURE_SORTS = {
    # money is text on SQLite: order by its numeric value, not its spelling (no index: a full sort)
    "balance": (m.AccountState, cast(m.AccountState.balance, Numeric)),
    "equity": (m.AccountState, cast(m.AccountState.equity, Numeric)),
    "daily_distance": (m.AccountState, m.AccountState.daily_distance_cents),
    "max_loss_distance": (m.AccountState, m.AccountState.max_loss_distance_cents),
    "nearest": (m.AccountState, m.AccountState.nearest_bp),
    "target_pct": (m.AccountState, m.AccountState.target_bp),
    "trading_days": (m.AccountState, m.AccountState.trading_days),
    "risk_score": (RiskScore, RiskScore.score),
}


def _rows(session: Session, *, firm_id: str, trader_id: int | None, ids: list[int]) -> dict[int, dict[str, Any]]:
    wanted = sorted(set(ids))
    rows = []
    for start in range(0, len(wanted), 500):
        query = _scoped(_joined(select(*_page_columns()).select_from(m.Account)), firm_id=firm_id, trader_id=trader_id)
        rows.extend(session.execute(query.where(m.Account.id.in_(wanted[start : start + 500]))).all())
    return {item["id"]: item for item in _items(session, rows)}


def account_rows(session: Session, *, firm_id: str, trader_id: int | None = None, ids: Iterable[int]) -> list[dict[str, Any]]:
    """The list's items for these account ids (those in the caller's scope; others are left out), by id —
    what the live accounts page re-reads for the rows that changed."""
    rows = _rows(session, firm_id=firm_id, trader_id=trader_id, ids=[int(i) for i in ids])
    return [rows[i] for i in sorted(rows)]


def changed_since(session: Session, *, firm_id: str, since, trader_id: int | None = None,
                  limit: int = 500) -> list[tuple[int, Any]]:
    """``(account id, updated_at)`` of the accounts whose state was written after ``since`` (an aware
    datetime), oldest first, at most ``limit`` — the live page's "what changed" poll."""
    query = (
        select(m.AccountState.account_id, m.AccountState.updated_at)
        .where(m.AccountState.firm_id == firm_id, m.AccountState.updated_at > since)
        .order_by(m.AccountState.updated_at, m.AccountState.account_id)
        .limit(limit)
    )
    if trader_id is not None:
        query = query.join(m.Account, m.Account.id == m.AccountState.account_id).where(m.Account.trader_id == trader_id)
    return [(account_id, updated_at) for account_id, updated_at in session.execute(query)]


def _bp(value: int | None) -> str | None:
    """Basis points as a percentage with two places: 1250 -> "12.50"."""
    if value is None:
        return None
    return format(Decimal(value).scaleb(-2), "f")


def _items(session: Session, rows) -> list[dict[str, Any]]:
    required = _required_days(session, {(row[0].pack_version_id, row[0].phase) for row in rows})
    items = []
    for (account, balance, equity, daily_floor, daily_distance, max_loss_level, max_loss_distance, nearest,
         target, days, updated_at, score, trader_name) in rows:
        items.append({
            **account_summary(account),
            "balance": money(balance),
            "equity": money(equity),
            "daily_floor": money(daily_floor),
            "daily_distance": money(daily_distance),
            "max_loss_level": money(max_loss_level),
            "max_loss_distance": money(max_loss_distance),
            "nearest_pct": _bp(nearest),
            "target_pct": _bp(target),
            "trading_days": days,
            "trading_days_required": required.get((account.pack_version_id, account.phase)),
            "risk_score": score,
            "trader_name": trader_name,
            "updated_at": updated_at,
        })
    return items


_REQUIRED: dict[tuple[int, str, str], int | None] = {}


def _required_days(session: Session, keys: set[tuple[int, str]]) -> dict[tuple[int, str], int | None]:
    """The minimum trading days of each (pack version, phase): from the compiled pack, cached by the
    version's content hash (the pack body is read only the first time)."""
    out: dict[tuple[int, str], int | None] = {}
    versions = {version_id for version_id, _ in keys}
    hashes = dict(session.execute(select(m.RulePackVersion.id, m.RulePackVersion.content_hash)
                                  .where(m.RulePackVersion.id.in_(versions))).all()) if versions else {}
    for version_id, phase in keys:
        content_hash = hashes.get(version_id)
        cache_key = (version_id, content_hash or "", phase)
        if cache_key not in _REQUIRED:
            row = session.get(m.RulePackVersion, version_id) if content_hash is not None else None
            try:
                program = compiled_pack(row).phase(phase) if row is not None else None
            except KeyError:
                program = None
            if len(_REQUIRED) > 4096:
                _REQUIRED.clear()
            _REQUIRED[cache_key] = program.minimums[0].days if program is not None and program.minimums else None
        out[(version_id, phase)] = _REQUIRED[cache_key]
    return out


def account_summary(account: m.Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "external_id": account.external_id,
        "platform": account.platform,
        "login": account.login,
        "trader_id": account.trader_id,
        "product_id": account.product_id,
        "pack_version_id": account.pack_version_id,
        "phase": account.phase,
        "status": account.status,
        "created_at": account.created_at,
    }


def account_detail(session: Session, *, firm_id: str, account_id: int, trader_id: int | None = None) -> dict[str, Any]:
    """An account with its live figures: balance, equity, every loss limit and the distance to it,
    target and progress, trading days — from the engine's stored state."""
    with wide_context():  # a state stored before events were bounded still shows
        return _account_detail(session, firm_id=firm_id, account_id=account_id, trader_id=trader_id)


def _account_detail(session: Session, *, firm_id: str, account_id: int, trader_id: int | None) -> dict[str, Any]:
    account = get_account(session, firm_id=firm_id, account_id=account_id, trader_id=trader_id)
    version = session.get(m.RulePackVersion, account.pack_version_id)
    assert version is not None and version.firm_id == firm_id
    program = compiled_pack(version).phase(account.phase)
    state_row = session.get(m.AccountState, account.id)
    st = STATE_DECODER.decode(state_row.state) if state_row is not None else None
    out = account_summary(account)
    out["pack"] = {"version_id": version.id, "pack_id": version.pack_id, "version": version.version,
                   "status": version.status, "content_hash": version.content_hash}
    out["currency"] = program.pack.currency
    out["initial_balance"] = money(program.initial)
    out["evaluated"] = (
        {"last_event_seq": state_row.last_seq, "updated_at": state_row.updated_at,
         "last_event_at": st.last_ts if st is not None else None}
        if state_row is not None else None
    )
    out.update(figures(program, st))
    return out


def figures(program: PhaseProgram, st: AccountState | None) -> dict[str, Any]:
    """Balance, equity, limits with distances, target progress and trading days of a state.

    Before the first event there is no state: balance and equity are the initial balance, and a
    level that the first trading day sets (a daily floor) is ``None`` until then.
    """
    if st is None:
        st = program.new_state("-")
    summary = program.summary(st)
    equity = st.equity
    limits = []
    for rule in program.limits:
        numbers = summary.get(rule.rule_id, {})
        level = numbers.get("level")
        limits.append({
            "rule": rule.rule_id,
            "kind": rule.kind,
            "comparator": rule.cfg.comparator,
            "level": money(level),
            "distance": money(numbers.get("distance")) if level is not None and level.is_finite() else None,
            "distance_pct_of_equity": _pct(equity - level, equity) if level is not None and level.is_finite() else None,
        })

    def first(kind: type) -> dict[str, Any] | None:
        for rule, limit in zip(program.limits, limits):
            if isinstance(rule, kind):
                return {"rule": limit["rule"], "level": limit["level"], "distance": limit["distance"]}
        return None

    target = None
    if program.target is not None:
        goal = program.target.target_balance
        measured = program.target.measured(st)
        room = goal - program.initial
        target = {
            "rule": program.target.rule_id,
            "balance": money(goal),
            "measured": money(measured),
            "remaining": money(max(goal - measured, Decimal(0))),
            "progress_pct": _pct(measured - program.initial, room) if room > 0 else None,
            "met": program.target.met(st),
        }
    minimum = program.minimums[0] if program.minimums else None
    return {
        "engine_status": st.status,
        "balance": money(st.balance),
        "equity": money(equity),
        "open_positions": len(st.positions),
        "open_lots": money(st.open_lots),
        "trading_day": st.trading_day.isoformat() if st.trading_day else None,
        "paused_until": st.paused_until,
        "daily_floor": first(DailyLossRule),
        "max_loss_level": first(MaxLossRule),
        "limits": limits,
        "target": target,
        "trading_days": {
            "count": minimum.current(st) if minimum is not None else st.active_days,
            "required": minimum.days if minimum is not None else None,
        },
    }


_PCT_CONTEXT = Context(prec=60)  # room for any ratio of two bounded figures, quantized to the hundredth


def _pct_value(part: Decimal, whole: Decimal) -> Decimal | None:
    if not whole:
        return None
    return _PCT_CONTEXT.quantize(_PCT_CONTEXT.divide(_PCT_CONTEXT.multiply(part, HUNDRED), whole), Decimal("0.01"))


def _pct(part: Decimal, whole: Decimal) -> str | None:
    value = _pct_value(part, whole)
    return None if value is None else format(value, "f")  # always two places: "12.50"


# --------------------------------------------------------------------------------------------------
# the figures stored beside each state (account_states, migration 0007) for the accounts list

FIGURE_COLUMNS = ("daily_floor", "daily_distance", "daily_distance_cents", "max_loss_level", "max_loss_distance",
                  "max_loss_distance_cents", "nearest_bp", "target_bp", "trading_days",
                  # (migration 0020) when time alone can next change the state: the worker's clock catch-up
                  "next_due", "news_until")
NO_FIGURES: dict[str, Any] = dict.fromkeys(FIGURE_COLUMNS)


def cents(value: Decimal) -> int:
    """Exact money to whole cents for sorting: floored (``-0.001`` -> ``-1``), so the order never
    inverts; the exact value is kept beside it."""
    return int((value * HUNDRED).to_integral_value(ROUND_FLOOR))


#: the basis-point columns are 32-bit integers: a percentage beyond ±21 million (a distance of
#: 94,999.99 from a floor when equity is 0.01) is stored at the limit, which sorts it just as well
MAX_BASIS_POINTS = 2**31 - 1


def basis_points(pct: Decimal) -> int:
    """A percentage with two places as an integer: ``12.50`` -> ``1250`` (exact within ±21,474,836.47 %,
    clamped beyond: only the order of such accounts matters)."""
    return max(-MAX_BASIS_POINTS, min(MAX_BASIS_POINTS, int(pct * HUNDRED)))


class _FigurePlan:
    """What :func:`stored_figures` reads of a phase, found once per compiled phase: the first daily-loss
    and max-loss rule (as :func:`figures` picks them), the target and the minimum-days rule."""

    __slots__ = ("daily", "max_loss", "target", "room", "minimum", "initial")

    def __init__(self, program: PhaseProgram) -> None:
        self.daily = next((rule for rule in program.limits if isinstance(rule, DailyLossRule)), None)
        self.max_loss = next((rule for rule in program.limits if isinstance(rule, MaxLossRule)), None)
        self.target = program.target
        self.initial = program.initial
        self.room = program.target.target_balance - program.initial if program.target is not None else None
        self.minimum = program.minimums[0] if program.minimums else None


_PLANS: dict[int, tuple[PhaseProgram, _FigurePlan]] = {}


def _plan(program: PhaseProgram) -> _FigurePlan:
    found = _PLANS.get(id(program))
    if found is None or found[0] is not program:
        if len(_PLANS) > 1024:
            _PLANS.clear()
        found = _PLANS[id(program)] = (program, _FigurePlan(program))
    return found[1]


def stored_figures(program: PhaseProgram, st: AccountState) -> dict[str, Any]:
    """The account_states figure columns of a state — the numbers :func:`figures` shows on the account's
    page (the level of the first daily-loss and max-loss rule in the state's slot, as ``program.summary``
    reads it, equity − level, target progress, trading days), cheap enough for every state written."""
    plan = _plan(program)
    equity = st.equity
    out = dict(NO_FIGURES)
    nearest: Decimal | None = None
    for prefix, rule, level_name in (("daily", plan.daily, "daily_floor"), ("max_loss", plan.max_loss, "max_loss_level")):
        if rule is None:
            continue
        level = st.levels[rule.slot]
        if not level.is_finite():
            continue
        distance = equity - level
        out[level_name] = level
        out[f"{prefix}_distance"] = distance
        out[f"{prefix}_distance_cents"] = cents(distance)
        pct = _pct_value(distance, equity)
        if pct is not None and (nearest is None or pct < nearest):
            nearest = pct
    out["nearest_bp"] = basis_points(nearest) if nearest is not None else None
    if plan.target is not None and plan.room > 0:
        progress = _pct_value(plan.target.measured(st) - plan.initial, plan.room)
        out["target_bp"] = basis_points(progress) if progress is not None else None
    out["trading_days"] = plan.minimum.current(st) if plan.minimum is not None else st.active_days
    out["next_due"] = program.next_due(st)
    out["news_until"] = program.news_until(st)
    return out


def figures_for_states(session: Session, pairs: Iterable[tuple[int, str, AccountState]]) -> list[dict[str, Any]]:
    """:func:`stored_figures` for ``(pack_version_id, phase, state)`` triples, packs compiled once (cached);
    a pack or phase that cannot be found gives no figures rather than failing the write."""
    programs: dict[tuple[int, str], PhaseProgram | None] = {}
    out = []
    for version_id, phase, st in pairs:
        key = (version_id, phase)
        if key not in programs:
            row = session.get(m.RulePackVersion, version_id)
            try:
                programs[key] = compiled_pack(row).phase(phase) if row is not None else None
            except KeyError:
                programs[key] = None
        program = programs[key]
        out.append(stored_figures(program, st) if program is not None else dict(NO_FIGURES))
    return out


def refresh_figures(session: Session, *, firm_id: str | None = None, only_missing: bool = True,
                    batch: int = 2000) -> int:
    """Recompute the stored figures from the stored states (rows written before migration 0007 have
    none until their account's next event). Returns the number of rows written. Run in a write
    transaction; it does not change ``updated_at`` (the states themselves did not change)."""
    done = 0
    after = 0
    while True:
        query = (
            select(m.AccountState.account_id, m.AccountState.state, m.Account.pack_version_id, m.Account.phase)
            .join(m.Account, m.Account.id == m.AccountState.account_id)
            .where(m.AccountState.account_id > after)
            .order_by(m.AccountState.account_id)
            .limit(batch)
        )
        if firm_id is not None:
            query = query.where(m.AccountState.firm_id == firm_id)
        if only_missing:
            query = query.where(or_(m.AccountState.trading_days.is_(None), m.AccountState.next_due.is_(None)))
        rows = session.execute(query).all()
        if not rows:
            return done
        values = figures_for_states(session, ((r.pack_version_id, r.phase, STATE_DECODER.decode(r.state)) for r in rows))
        table = m.AccountState.__table__
        session.execute(
            update(table).where(table.c.account_id == bindparam("b_account_id")),
            [{"b_account_id": r.account_id, **v} for r, v in zip(rows, values)],
        )
        done += len(rows)
        after = rows[-1].account_id


# --------------------------------------------------------------------------------------------------
# creating


def resolve_pack_version(session: Session, *, firm_id: str, pack_id: str, version: int | None = None) -> m.RulePackVersion:
    """The named version of a pack, or (no version) its active one."""
    query = select(m.RulePackVersion).where(m.RulePackVersion.firm_id == firm_id, m.RulePackVersion.pack_id == pack_id)
    if version is not None:
        row = session.scalars(query.where(m.RulePackVersion.version == version)).one_or_none()
        if row is None:
            raise NotFound(f"no rule pack {pack_id} v{version} in firm {firm_id}")
        return row
    row = session.scalars(query.where(m.RulePackVersion.status == "active")).first()
    if row is None:
        raise NotFound(f"rule pack {pack_id} has no active version in firm {firm_id}; name a version ({pack_id}:N)")
    return row


def create_account(
    session: Session,
    *,
    firm_id: str,
    external_id: str,
    pack_version_id: int,
    phase: str | None = None,
    platform: str = "demo",
    login: str | None = None,
    trader_id: int | None = None,
    product_id: int | None = None,
    actor: str,
    sold_before_retirement: bool = False,
) -> m.Account:
    """A new account bound to a pack version (the version it keeps until an audited re-bind); audited.

    A retired version takes no new accounts, except the account of an order taken while the version
    was still on sale (``sold_before_retirement``: the lifecycle's paid order)."""
    if not isinstance(external_id, str) or not _EXTERNAL_ID.fullmatch(external_id) or external_id != external_id.strip():
        raise Invalid("external_id must be 1 to 200 characters without control characters or outer spaces")
    if not platform or len(platform) > 64:
        raise Invalid("platform must be 1 to 64 characters")
    if login is not None and not 1 <= len(login) <= 200:
        raise Invalid("login must be 1 to 200 characters")
    if trader_id is not None:
        trader = session.get(m.Trader, trader_id)
        if trader is None or trader.firm_id != firm_id:
            raise Invalid(f"no trader {trader_id} in firm {firm_id}")
    if product_id is not None:
        product = session.get(m.Product, product_id)
        if product is None or product.firm_id != firm_id:
            raise Invalid(f"no product {product_id} in firm {firm_id}")
    version = session.get(m.RulePackVersion, pack_version_id)
    if version is None or version.firm_id != firm_id:
        raise Invalid(f"no rule pack version {pack_version_id} in firm {firm_id}")
    if version.status == "retired" and not sold_before_retirement:
        raise Conflict(f"rule pack {version.pack_id} v{version.version} is retired; bind new accounts to a live version")
    try:
        account = catalog_create_account(
            session, firm_id=firm_id, external_id=external_id, pack_version_id=pack_version_id, platform=platform,
            login=login, phase=phase, trader_id=trader_id, product_id=product_id,
        )
    except CatalogError as exc:
        raise (Conflict if "already exists" in str(exc) else Invalid)(str(exc)) from None
    audit.append(
        session,
        actor=actor,
        action="account.create",
        entity="account",
        entity_id=account.external_id,
        after={"id": account.id, "pack": f"{version.pack_id} v{version.version}", "phase": account.phase,
               "platform": account.platform, "trader_id": trader_id, "product_id": product_id},
        firm_id=firm_id,
    )
    return account
