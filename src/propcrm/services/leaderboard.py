"""The opt-in, pseudonymous leaderboard of a firm's traders.

**Who is on it.** Only traders who opted in (from the portal's profile), under a pseudonym they chose or
were given (:func:`opt_in`); never a name, an e-mail or an account id — a pseudonym may not contain the
trader's name, their e-mail's name part, nor be one of the firm's account ids or logins. Staff hide an
entry (:func:`hide`, with a reason, audited); a hide outlives an opt-out and a new opt-in, and only staff
lift it. Opting out takes the trader off at once.

**What ranks.** Each live account (challenge: ``active``, ``paused``, ``passed``; or ``funded``) of those
traders, by its *return over the period*: the net closed result (profit with commission and swap) of its
closes in the period, in percent of the account's initial balance — the same figure for a 10k and a 200k
account, so sizes compare fairly; the size filter narrows the board to one size. Ties go to the higher net
result, then the earlier opt-in. Breached, suspended, halted and closed accounts are not listed.

**Fair.** An account is ranked only after :attr:`Fairness.min_trades` closes *and* closes on
:attr:`Fairness.min_days` distinct trading days in the period (a trading day in the pack's timezone,
starting at its ``day_start``), per firm (:func:`set_fairness`; defaults :data:`DEFAULT_MIN_TRADES`,
:data:`DEFAULT_MIN_DAYS`): one lucky trade does not top the board. A trader with several ranked accounts
appears once, with their best (highest return, then net result); with a size filter, their best of that size.

**Cheap.** The board of a (firm, period) is computed once and kept for :data:`CACHE_SECONDS` in the
process (:class:`BoardCache`) while the firm's entries are unchanged: an opt-in, opt-out, pseudonym change
or hide (in any process), or a change of the fairness setting, shows on the next read; new trades within
the TTL. The sums are exact: every close of the period is read (NUMERIC as :class:`~decimal.Decimal` on
PostgreSQL, the decimal text on SQLite, which keeps money as text) and summed here, where its trading day
is counted too. The pseudonym check against account ids and logins is two index probes
(:func:`is_account_name`)."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import String, cast, func, select
from sqlalchemy import text as sql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_leaderboard import LeaderboardEntry, LeaderboardSettings
from . import audit
from .catalog import compiled_pack
from .errors import Conflict, Invalid, NotFound
from .lifecycle import reason_text

UTC = dt.timezone.utc
ZERO = Decimal(0)
PERIODS: dict[str, tuple[str, int | None]] = {
    "7d": ("Last 7 days", 7), "30d": ("Last 30 days", 30), "90d": ("Last 90 days", 90), "all": ("All time", None)}
DEFAULT_PERIOD = "30d"
LISTED_STATUSES = ("active", "paused", "passed", "funded")
CACHE_SECONDS = 60.0
MAX_ROWS = 100  # shown per board
MIN_PSEUDONYM, MAX_PSEUDONYM = 3, 24
PSEUDONYM = re.compile(r"^[A-Za-z][A-Za-z0-9 _.-]*[A-Za-z0-9]$")
RESERVED = ("admin", "support", "staff", "risk", "finance", "propcrm", "moderator", "official")
_ADJECTIVES = ("amber", "bold", "brisk", "calm", "clever", "cobalt", "crimson", "daring", "eager", "golden", "jade",
               "keen", "lucid", "nimble", "quiet", "rapid", "silver", "steady", "swift", "vivid")
_ANIMALS = ("badger", "bison", "crane", "falcon", "fox", "heron", "ibex", "jaguar", "lynx", "marten", "orca", "osprey",
            "otter", "owl", "panther", "puma", "raven", "stag", "tiger", "wolf")
CENT = Decimal("0.01")
DEFAULT_MIN_TRADES, DEFAULT_MIN_DAYS = 5, 2
MAX_MINIMUM = 1000


# --------------------------------------------------------------------------------------------------
# fairness: who is ranked


@dataclass(frozen=True)
class Fairness:
    min_trades: int = DEFAULT_MIN_TRADES  # closes in the period
    min_days: int = DEFAULT_MIN_DAYS  # distinct trading days with a close in the period


def fairness(session: Session, *, firm_id: str) -> Fairness:
    row = session.get(LeaderboardSettings, firm_id)
    return Fairness() if row is None else Fairness(min_trades=row.min_trades, min_days=row.min_days)


def _minimum(field_name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{field_name}: a whole number from 1 to {MAX_MINIMUM} is required")
    if not 1 <= value <= MAX_MINIMUM:
        raise Invalid(f"{field_name}: from 1 to {MAX_MINIMUM}")
    return value


def set_fairness(session: Session, *, firm_id: str, min_trades: object, min_days: object, actor: str,
                 now: dt.datetime | None = None) -> Fairness:
    """Set the firm's thresholds (both checked before anything is written; audited)."""
    trades, days = _minimum("min_trades", min_trades), _minimum("min_days", min_days)
    if days > trades:
        raise Invalid("min_days: at most min_trades (each trading day counted needs a close)")
    now = now or dt.datetime.now(UTC)
    before = fairness(session, firm_id=firm_id)
    row = session.get(LeaderboardSettings, firm_id)
    if row is None:
        row = LeaderboardSettings(firm_id=firm_id)
        session.add(row)
    row.min_trades, row.min_days, row.updated_at, row.updated_by = trades, days, now, actor
    session.flush()
    audit.append(session, actor=actor, action="leaderboard.fairness", entity="firm", entity_id=firm_id,
                 before={"min_trades": before.min_trades, "min_days": before.min_days},
                 after={"min_trades": trades, "min_days": days}, firm_id=firm_id)
    return Fairness(min_trades=trades, min_days=days)


def trading_day(instant: dt.datetime, *, zone: str, day_start: str) -> dt.date:
    """The trading day of ``instant``: its date in ``zone`` after taking off the day's start (``17:00``:
    16:59 local is still the day before)."""
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    hours, minutes = (int(part) for part in day_start.split(":"))
    local = instant.astimezone(ZoneInfo(zone))
    return (local - dt.timedelta(hours=hours, minutes=minutes)).date()


# --------------------------------------------------------------------------------------------------
# taking part


def _key(pseudonym: str) -> str:
    return pseudonym.casefold()


def pseudonym_problem(session: Session, *, firm_id: str, trader: m.Trader, pseudonym: object,
                      entry_id: int | None = None) -> str | None:
    """Why ``pseudonym`` may not be the trader's, or ``None`` when it may."""
    if not isinstance(pseudonym, str):
        return "pseudonym: text is required"
    text = pseudonym.strip()
    if not MIN_PSEUDONYM <= len(text) <= MAX_PSEUDONYM:
        return f"pseudonym: {MIN_PSEUDONYM} to {MAX_PSEUDONYM} characters"
    if not PSEUDONYM.match(text) or "  " in text:
        return ("pseudonym: letters, digits, spaces, '.', '_' and '-', starting with a letter and ending with a "
                "letter or digit")
    folded = _key(text)
    words = [w for w in re.split(r"[^\w]+", (trader.name or "").casefold()) if len(w) >= 3]
    local = (trader.email or "").casefold().split("@", 1)[0]
    if any(w in folded for w in words) or (len(local) >= 3 and local in folded):
        return "pseudonym: it must not contain your name or your e-mail address (the board is pseudonymous)"
    if any(word in folded for word in RESERVED):
        return "pseudonym: it must not suggest staff (admin, support, official, …)"
    if is_account_name(session, firm_id=firm_id, text=folded):
        return "pseudonym: it must not be an account id or login"
    taken = session.scalar(select(LeaderboardEntry.id).where(LeaderboardEntry.firm_id == firm_id,
                                                             LeaderboardEntry.pseudonym_key == folded))
    if taken is not None and taken != entry_id:
        return "pseudonym: another trader has it; choose another"
    return None


def is_account_name(session: Session, *, firm_id: str, text: str) -> bool:
    """Whether ``text`` (or it without spaces, '.', '_' and '-') is one of the firm's account ids or logins,
    without case. Two probes of the (firm, lower(…)) expression indexes (migration 0024), one per column —
    not a walk of the firm's accounts, which an ``OR`` of both or a ``lower()`` without the index would be."""
    folded = text.casefold()
    names = sorted({folded, re.sub(r"[ _.-]", "", folded)})
    sqlite = session.get_bind().dialect.name == "sqlite"
    for column, index in (("external_id", "ix_accounts_external_id_folded"), ("login", "ix_accounts_login_folded")):
        # SQLite without statistics prefers the covering (firm, external_id) index — every account of the
        # firm — so the index is named there; PostgreSQL picks it by its statistics. Names are constants.
        hint = f" INDEXED BY {index}" if sqlite else ""
        found = session.scalar(sql(f"SELECT id FROM accounts{hint} WHERE firm_id = :firm "
                                    f"AND lower({column}) IN (:folded, :compact) LIMIT 1"),
                               {"firm": firm_id, "folded": names[0], "compact": names[-1]})
        if found is not None:
            return True
    return False


def generate_pseudonym(session: Session, *, firm_id: str, trader: m.Trader) -> str:
    """A free pseudonym such as ``Swift Otter 417`` (random, unrelated to the trader)."""
    for _ in range(50):
        candidate = (f"{secrets.choice(_ADJECTIVES).title()} {secrets.choice(_ANIMALS).title()} "
                     f"{secrets.randbelow(900) + 100}")
        if pseudonym_problem(session, firm_id=firm_id, trader=trader, pseudonym=candidate) is None:
            return candidate
    raise Conflict("pseudonym: no free pseudonym was found; choose one")  # pragma: no cover - 20·20·900 names


def entry_of(session: Session, *, firm_id: str, trader_id: int) -> LeaderboardEntry | None:
    return session.scalar(select(LeaderboardEntry).where(LeaderboardEntry.firm_id == firm_id,
                                                         LeaderboardEntry.trader_id == trader_id))


def _trader(session: Session, firm_id: str, trader_id: int) -> m.Trader:
    trader = session.get(m.Trader, trader_id)
    if trader is None or trader.firm_id != firm_id:
        raise NotFound(f"no trader {trader_id}")
    return trader


def opt_in(session: Session, *, firm_id: str, trader_id: int, pseudonym: str | None, actor: str,
           now: dt.datetime | None = None) -> LeaderboardEntry:
    """Take part under ``pseudonym`` (empty: keep the current one, or get one), or change the pseudonym."""
    now = now or dt.datetime.now(UTC)
    trader = _trader(session, firm_id, trader_id)
    entry = entry_of(session, firm_id=firm_id, trader_id=trader_id)
    wanted = (pseudonym or "").strip() if isinstance(pseudonym, str) else pseudonym
    if not wanted:
        wanted = entry.pseudonym if entry is not None else generate_pseudonym(session, firm_id=firm_id, trader=trader)
    problem = pseudonym_problem(session, firm_id=firm_id, trader=trader, pseudonym=wanted,
                                entry_id=entry.id if entry is not None else None)
    if problem is not None and not (entry is not None and wanted == entry.pseudonym):
        raise Invalid(problem)
    before = None if entry is None else {"pseudonym": entry.pseudonym, "opted_in": entry.opted_in}
    try:
        with session.begin_nested():  # two traders taking one free pseudonym at once: one gets it, one is told
            if entry is None:
                entry = LeaderboardEntry(firm_id=firm_id, trader_id=trader_id, pseudonym=wanted,
                                         pseudonym_key=_key(wanted), opted_in=True, opted_in_at=now, updated_at=now)
                session.add(entry)
            else:
                if not entry.opted_in:
                    entry.opted_in_at = now
                entry.pseudonym, entry.pseudonym_key, entry.opted_in, entry.updated_at = (wanted, _key(wanted), True,
                                                                                          now)
            session.flush()
    except IntegrityError:
        raise Conflict("pseudonym: another trader has it; choose another") from None
    audit.append(session, actor=actor, action="leaderboard.opt_in", entity="trader", entity_id=str(trader_id),
                 before=before, after={"pseudonym": entry.pseudonym, "entry": entry.id}, firm_id=firm_id)
    return entry


def opt_out(session: Session, *, firm_id: str, trader_id: int, actor: str,
            now: dt.datetime | None = None) -> LeaderboardEntry:
    entry = entry_of(session, firm_id=firm_id, trader_id=trader_id)
    if entry is None or not entry.opted_in:
        raise Conflict("you are not on the leaderboard")
    entry.opted_in, entry.updated_at = False, now or dt.datetime.now(UTC)
    audit.append(session, actor=actor, action="leaderboard.opt_out", entity="trader", entity_id=str(trader_id),
                 after={"pseudonym": entry.pseudonym, "entry": entry.id}, firm_id=firm_id)
    return entry


def _entry(session: Session, firm_id: str, entry_id: int) -> LeaderboardEntry:
    entry = session.get(LeaderboardEntry, entry_id)
    if entry is None or entry.firm_id != firm_id:
        raise NotFound(f"no leaderboard entry {entry_id}")
    return entry


def hide(session: Session, *, firm_id: str, entry_id: int, reason: str, actor: str,
         now: dt.datetime | None = None) -> LeaderboardEntry:
    """Staff take an entry off the board (an offensive pseudonym, a suspected abuse), with a reason."""
    text = reason_text(reason)[:500]
    entry = _entry(session, firm_id, entry_id)
    if entry.hidden_at is not None:
        raise Conflict(f"{entry.pseudonym} is already hidden")
    now = now or dt.datetime.now(UTC)
    entry.hidden_at, entry.hidden_by, entry.hidden_reason, entry.updated_at = now, actor, text, now
    audit.append(session, actor=actor, action="leaderboard.hide", entity="trader", entity_id=str(entry.trader_id),
                 after={"pseudonym": entry.pseudonym, "entry": entry.id, "reason": text}, firm_id=firm_id)
    return entry


def unhide(session: Session, *, firm_id: str, entry_id: int, actor: str, reason: str | None = None) -> LeaderboardEntry:
    """Show a hidden entry again (while its trader is opted in); ``reason`` (the API requires one) is audited."""
    text = reason_text(reason)[:500] if reason is not None else None
    entry = _entry(session, firm_id, entry_id)
    if entry.hidden_at is None:
        raise Conflict(f"{entry.pseudonym} is not hidden")
    before = {"hidden_by": entry.hidden_by, "reason": entry.hidden_reason}
    entry.hidden_at = entry.hidden_by = entry.hidden_reason = None
    entry.updated_at = dt.datetime.now(UTC)
    audit.append(session, actor=actor, action="leaderboard.unhide", entity="trader", entity_id=str(entry.trader_id),
                 before=before, after={"pseudonym": entry.pseudonym, "entry": entry.id,
                                       **({"reason": text} if text is not None else {})}, firm_id=firm_id)
    return entry


def entries(session: Session, *, firm_id: str, limit: int | None = None, offset: int = 0) -> list[LeaderboardEntry]:
    """The firm's entries (staff: who takes part, who is hidden), newest first; ``limit``/``offset``: a page."""
    query = select(LeaderboardEntry).where(LeaderboardEntry.firm_id == firm_id).order_by(LeaderboardEntry.id.desc())
    if limit is not None:
        query = query.limit(limit).offset(offset)
    return list(session.scalars(query))


# --------------------------------------------------------------------------------------------------
# the board


@dataclass(frozen=True)
class Standing:
    rank: int
    pseudonym: str
    kind: str  # challenge | funded
    size: Decimal  # the account's initial balance
    currency: str
    return_pct: Decimal  # net closed result in the period / initial balance · 100, to the cent
    net: Decimal
    trades: int  # closes in the period
    entry_id: int  # staff hide by it; never shown to traders
    days: int = 0  # trading days with a close in the period


@dataclass(frozen=True)
class Board:
    period: str
    since: dt.datetime | None
    computed_at: dt.datetime
    rows: tuple[Standing, ...]
    sizes: tuple[tuple[Decimal, str], ...] = field(default=())  # (initial balance, currency) on the board
    fair: Fairness = field(default_factory=Fairness)

    def filtered(self, size: Decimal | None, limit: int = MAX_ROWS) -> tuple[Standing, ...]:
        """The board of one account size (ranks counted within it), at most ``limit`` rows; each trader
        once, with their best account (of that size)."""
        chosen, seen = [], set()
        for row in self.rows:
            if (size is None or row.size == size) and row.entry_id not in seen:
                seen.add(row.entry_id)
                chosen.append(row)
        return tuple(replace(row, rank=i) for i, row in enumerate(chosen[:limit], start=1))


def period_of(text: object) -> str:
    return text if isinstance(text, str) and text in PERIODS else DEFAULT_PERIOD


def size_of(text: object) -> Decimal | None:
    """An account size from a query string (``100000``), or ``None`` for every size / nonsense."""
    if not isinstance(text, str) or not text or len(text) > 15 or not text.isascii() or not text.isdigit():
        return None
    return Decimal(text)


def compute(session: Session, *, firm_id: str, period: str, now: dt.datetime | None = None) -> Board:
    """The firm's board for ``period`` from the trade-history projection (see the module's docstring)."""
    now = now or dt.datetime.now(UTC)
    days = PERIODS[period][1]
    since = now - dt.timedelta(days=days) if days is not None else None
    entry = LeaderboardEntry.__table__
    account = m.Account.__table__
    listed = (entry.c.firm_id == firm_id, entry.c.opted_in.is_(True), entry.c.hidden_at.is_(None),
              account.c.firm_id == firm_id, account.c.trader_id == entry.c.trader_id,
              account.c.status.in_(LISTED_STATUSES))
    fair = fairness(session, firm_id=firm_id)
    accounts = {aid: (eid, pseudonym, opted, status, version) for aid, eid, pseudonym, opted, status, version in
                session.execute(select(account.c.id, entry.c.id, entry.c.pseudonym, entry.c.opted_in_at,
                                       account.c.status, account.c.pack_version_id).where(*listed))}
    if not accounts:
        return Board(period=period, since=since, computed_at=now, rows=(), fair=fair)
    closes = m.TradeClose.__table__
    window = [closes.c.firm_id == firm_id, closes.c.account_id == account.c.id, *listed]
    if since is not None:
        window += [closes.c.ts >= since, closes.c.ts < now]
    # SQLite keeps money as decimal text: read it as text and sum it exactly here; NUMERIC reads as Decimal
    net_column = cast(closes.c.net, String) if session.get_bind().dialect.name == "sqlite" else closes.c.net
    packs: dict[int, tuple[Decimal, str, str, str]] = {}

    def pack_of(version: int) -> tuple[Decimal, str, str, str]:
        if version not in packs:
            pack = compiled_pack(session.get(m.RulePackVersion, version)).pack
            packs[version] = (Decimal(pack.initial_balance), pack.currency, pack.timezone, pack.day_start)
        return packs[version]

    sums: dict[int, tuple[Decimal, int, set[dt.date]]] = {}
    for aid, ts, net in session.execute(select(closes.c.account_id, closes.c.ts, net_column).where(*window)):
        total, count, days = sums.get(aid) or (ZERO, 0, set())
        _initial, _currency, zone, day_start = pack_of(accounts[aid][4])
        days.add(trading_day(ts, zone=zone, day_start=day_start))
        sums[aid] = (total + Decimal(net), count + 1, days)
    ranked = []
    for aid, (net, count, days) in sums.items():
        if count < fair.min_trades or len(days) < fair.min_days:
            continue
        eid, pseudonym, opted, status, version = accounts[aid]
        initial, currency, _zone, _start = pack_of(version)
        if initial <= 0:
            continue
        pct = (net * 100 / initial).quantize(CENT, rounding=ROUND_HALF_EVEN)
        ranked.append((pct, net, opted, pseudonym, eid, "funded" if status == "funded" else "challenge", initial,
                       currency, count, len(days)))
    ranked.sort(key=lambda r: (-r[0], -r[1], r[2], r[3]))
    rows = tuple(Standing(rank=i, pseudonym=pseudonym, kind=kind, size=initial, currency=currency, return_pct=pct,
                          net=net, trades=count, entry_id=eid, days=days)
                 for i, (pct, net, _opted, pseudonym, eid, kind, initial, currency, count, days)
                 in enumerate(ranked, 1))
    sizes = tuple(sorted({(row.size, row.currency) for row in rows}))
    return Board(period=period, since=since, computed_at=now, rows=rows, sizes=sizes, fair=fair)


def entries_version(session: Session, *, firm_id: str) -> tuple[int, dt.datetime | None, dt.datetime | None]:
    """What names the firm's entries as they are: (how many, the latest change, the fairness setting's
    change). Every opt-in, opt-out, pseudonym change, hide and unhide moves ``updated_at``; one walk of
    ``ix_leaderboard_entries_changed`` and one primary-key read."""
    table = LeaderboardEntry.__table__
    count, latest = session.execute(select(func.count(), func.max(table.c.updated_at))
                                    .where(table.c.firm_id == firm_id)).one()
    settings = session.scalar(select(LeaderboardSettings.updated_at).where(LeaderboardSettings.firm_id == firm_id))
    return count or 0, latest, settings


class BoardCache:
    """Boards per (firm, period), each kept ``ttl`` seconds *and* only while the firm's entries are as they
    were (:func:`entries_version`, asked on every read: a hide or an opt-out in any process shows at once;
    the TTL only bounds how late new trades show). One computation at a time per process (the others wait
    for it rather than compute the same board again)."""

    def __init__(self, ttl: float = CACHE_SECONDS, clock=time.monotonic, version=None) -> None:
        self.ttl, self._clock = ttl, clock
        self._version = version or entries_version
        self._boards: dict[tuple[str, str], tuple[float, object, Board]] = {}
        self._lock = threading.Lock()

    def _kept(self, key: tuple[str, str], version: object) -> Board | None:
        kept = self._boards.get(key)
        if kept is not None and self._clock() - kept[0] < self.ttl and kept[1] == version:
            return kept[2]
        return None

    def board(self, session: Session, *, firm_id: str, period: str) -> Board:
        key = (firm_id, period)
        version = self._version(session, firm_id=firm_id)
        found = self._kept(key, version)
        if found is not None:
            return found
        with self._lock:
            found = self._kept(key, version)
            if found is not None:
                return found
            started = self._clock()
            board = compute(session, firm_id=firm_id, period=period)
            self._boards[key] = (started, version, board)
            return board

    def forget(self, firm_id: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self._boards if firm_id is None or k[0] == firm_id]:
                del self._boards[key]


CACHE = BoardCache()


def board(session: Session, *, firm_id: str, period: str) -> Board:
    return CACHE.board(session, firm_id=firm_id, period=period_of(period))


__all__ = ["CACHE", "DEFAULT_MIN_DAYS", "DEFAULT_MIN_TRADES", "PERIODS", "Board", "Fairness", "fairness",
           "is_account_name", "set_fairness", "trading_day", "LeaderboardEntry", "BoardCache", "Standing", "board", "compute", "entries", "entries_version", "entry_of",
           "generate_pseudonym", "hide", "opt_in", "opt_out", "period_of", "pseudonym_problem", "size_of", "unhide"]
