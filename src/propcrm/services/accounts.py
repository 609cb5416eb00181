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
import threading
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Numeric, cast, func, or_, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..domain.program import CompiledPack, PhaseProgram, compile_pack
from ..domain.rules.limits import DailyLossRule, MaxLossRule
from ..domain.state import AccountState
from . import audit
from .catalog import CatalogError, pack_of
from .catalog import create_account as catalog_create_account
from .errors import Conflict, Invalid, NotFound
from .evaluation import STATE_DECODER

STATUSES = ("active", "paused", "breached", "passed", "funded", "suspended", "closed")
SORT_KEYS = ("id", "external_id", "status", "phase", "created_at", "balance", "equity")
MAX_PAGE = 500
HUNDRED = Decimal(100)

_EXTERNAL_ID = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


@dataclass(frozen=True)
class Page:
    total: int
    limit: int
    offset: int
    items: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "limit": self.limit, "offset": self.offset, "items": self.items}


# --------------------------------------------------------------------------------------------------
# compiled packs, cached per stored version (a version's content never changes: it is hashed)

_PACKS: OrderedDict[tuple[int, str], CompiledPack] = OrderedDict()
_PACKS_LOCK = threading.Lock()


def compiled_pack(row: m.RulePackVersion) -> CompiledPack:
    key = (row.id, row.content_hash)
    with _PACKS_LOCK:
        found = _PACKS.get(key)
        if found is not None:
            _PACKS.move_to_end(key)
            return found
    compiled = compile_pack(pack_of(row))
    with _PACKS_LOCK:
        _PACKS[key] = compiled
        while len(_PACKS) > 256:
            _PACKS.popitem(last=False)
    return compiled


# --------------------------------------------------------------------------------------------------
# reading


def money(value: Decimal | None) -> str | None:
    """Decimal text for JSON without trailing zeros (``"99000"``, ``"539.99"``) — the same on every backend,
    whatever scale the column keeps; ``None`` for no value or a level that does not exist yet (±infinity)."""
    if value is None or not value.is_finite():
        return None
    if not value:
        return "0"
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


def list_accounts(
    session: Session,
    *,
    firm_id: str,
    trader_id: int | None = None,
    status: str | None = None,
    phase: str | None = None,
    search: str | None = None,
    sort: str = "id",
    limit: int = 50,
    offset: int = 0,
) -> Page:
    """Accounts of the firm (of one trader), filtered, sorted (``-key`` for descending) and paged."""
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
    conditions = []
    if status is not None:
        conditions.append(m.Account.status == status)
    if phase is not None:
        conditions.append(m.Account.phase == phase)
    if search and not search.isprintable():
        raise Invalid("search must not contain control characters")
    if search:
        pattern = _like(search[:200])
        conditions.append(or_(m.Account.external_id.ilike(pattern, escape="\\"),
                              m.Account.login.ilike(pattern, escape="\\")))
    counted = _scoped(select(func.count()).select_from(m.Account), firm_id=firm_id, trader_id=trader_id)
    total = session.scalar(counted.where(*conditions)) or 0
    columns = {
        "id": m.Account.id,
        "external_id": m.Account.external_id,
        "status": m.Account.status,
        "phase": m.Account.phase,
        "created_at": m.Account.created_at,
        # money is text on SQLite: order by its numeric value, not its spelling
        "balance": cast(m.AccountState.balance, Numeric),
        "equity": cast(m.AccountState.equity, Numeric),
    }
    column = columns[key]
    order = column.desc() if descending else column.asc()
    if key in ("balance", "equity"):
        order = order.nulls_last()
    query = _scoped(
        select(m.Account, m.AccountState.balance, m.AccountState.equity).outerjoin(
            m.AccountState, m.AccountState.account_id == m.Account.id
        ),
        firm_id=firm_id,
        trader_id=trader_id,
    ).where(*conditions)
    query = query.order_by(order, m.Account.id.desc() if descending else m.Account.id.asc()).limit(limit).offset(offset)
    items = [
        {**account_summary(account), "balance": money(balance), "equity": money(equity)}
        for account, balance, equity in session.execute(query)
    ]
    return Page(total=total, limit=limit, offset=offset, items=items)


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


def _pct(part: Decimal, whole: Decimal) -> str | None:
    if not whole:
        return None
    return format((part * HUNDRED / whole).quantize(Decimal("0.01")), "f")  # always two places: "12.50"


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
) -> m.Account:
    """A new account bound to a pack version (the version it keeps until an audited re-bind); audited."""
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
    if version.status == "retired":
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
