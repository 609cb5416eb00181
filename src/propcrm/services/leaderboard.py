"""The opt-in, pseudonymous leaderboard of a firm's traders.

**Who is on it.** Only traders who opted in (from the portal's profile), under a pseudonym they chose or
were given (:func:`opt_in`); never a name, an e-mail or an account id — a pseudonym may not contain the
trader's name, their e-mail's name part, nor be one of the firm's account ids or logins. Staff hide an
entry (:func:`hide`, with a reason, audited); a hide outlives an opt-out and a new opt-in, and only staff
lift it. Opting out takes the trader off at once.

**What ranks.** Each live account (challenge: ``active``, ``paused``, ``passed``; or ``funded``) of those
traders, by its *return over the period*: the net closed result (profit with commission and swap) of its
closes in the period, in percent of the account's initial balance — the same figure for a 10k and a 200k
account, so sizes compare fairly; the size filter narrows the board to one size. An account needs at least
one close in the period to be listed. Ties go to the higher net result, then the earlier opt-in.
Breached, suspended, halted and closed accounts are not listed.

**Cheap.** The board of a (firm, period) is computed once and kept for :data:`CACHE_SECONDS` in the
process (:class:`BoardCache`) while the firm's entries are unchanged: an opt-in, opt-out, pseudonym change
or hide (in any process) shows on the next read; new trades within the TTL. The sums are exact: ``SUM`` of NUMERIC on PostgreSQL, the decimal
text summed as :class:`~decimal.Decimal` on SQLite (which keeps money as text).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_leaderboard import LeaderboardEntry
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
    compact = re.sub(r"[ _.-]", "", folded)
    ids = session.scalar(select(func.count()).select_from(m.Account).where(
        m.Account.firm_id == firm_id, or_(func.lower(m.Account.external_id).in_([folded, compact]),
                                          func.lower(m.Account.login).in_([folded, compact]))))
    if ids:
        return "pseudonym: it must not be an account id or login"
    taken = session.scalar(select(LeaderboardEntry.id).where(LeaderboardEntry.firm_id == firm_id,
                                                             LeaderboardEntry.pseudonym_key == folded))
    if taken is not None and taken != entry_id:
        return "pseudonym: another trader has it; choose another"
    return None


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


def unhide(session: Session, *, firm_id: str, entry_id: int, actor: str) -> LeaderboardEntry:
    entry = _entry(session, firm_id, entry_id)
    if entry.hidden_at is None:
        raise Conflict(f"{entry.pseudonym} is not hidden")
    before = {"hidden_by": entry.hidden_by, "reason": entry.hidden_reason}
    entry.hidden_at = entry.hidden_by = entry.hidden_reason = None
    entry.updated_at = dt.datetime.now(UTC)
    audit.append(session, actor=actor, action="leaderboard.unhide", entity="trader", entity_id=str(entry.trader_id),
                 before=before, after={"pseudonym": entry.pseudonym, "entry": entry.id}, firm_id=firm_id)
    return entry


def entries(session: Session, *, firm_id: str) -> list[LeaderboardEntry]:
    """Every entry of the firm (staff: who takes part, who is hidden), newest first."""
    return list(session.scalars(select(LeaderboardEntry).where(LeaderboardEntry.firm_id == firm_id)
                                .order_by(LeaderboardEntry.id.desc())))


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


@dataclass(frozen=True)
class Board:
    period: str
    since: dt.datetime | None
    computed_at: dt.datetime
    rows: tuple[Standing, ...]
    sizes: tuple[tuple[Decimal, str], ...] = field(default=())  # (initial balance, currency) on the board

    def filtered(self, size: Decimal | None, limit: int = MAX_ROWS) -> tuple[Standing, ...]:
        """The board of one account size (ranks counted within it), at most ``limit`` rows."""
        chosen = [row for row in self.rows if size is None or row.size == size]
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
    accounts = {aid: (eid, pseudonym, opted, status, version) for aid, eid, pseudonym, opted, status, version in
                session.execute(select(account.c.id, entry.c.id, entry.c.pseudonym, entry.c.opted_in_at,
                                       account.c.status, account.c.pack_version_id).where(*listed))}
    if not accounts:
        return Board(period=period, since=since, computed_at=now, rows=())
    closes = m.TradeClose.__table__
    window = [closes.c.firm_id == firm_id, closes.c.account_id == account.c.id, *listed]
    if since is not None:
        window += [closes.c.ts >= since, closes.c.ts < now]
    sums: dict[int, tuple[Decimal, int]] = {}
    if session.get_bind().dialect.name == "postgresql":  # exact NUMERIC sums in the database
        for aid, total, count in session.execute(select(closes.c.account_id, func.sum(closes.c.net), func.count())
                                                 .where(*window).group_by(closes.c.account_id)):
            sums[aid] = (Decimal(total), count)
    else:  # SQLite keeps money as decimal text: sum it exactly here (SUM would be a float)
        for aid, text in session.execute(select(closes.c.account_id, cast(closes.c.net, String)).where(*window)):
            total, count = sums.get(aid, (ZERO, 0))
            sums[aid] = (total + Decimal(text), count + 1)
    packs: dict[int, tuple[Decimal, str]] = {}
    ranked = []
    for aid, (net, count) in sums.items():
        eid, pseudonym, opted, status, version = accounts[aid]
        if version not in packs:
            pack = compiled_pack(session.get(m.RulePackVersion, version)).pack
            packs[version] = (Decimal(pack.initial_balance), pack.currency)
        initial, currency = packs[version]
        if initial <= 0:
            continue
        pct = (net * 100 / initial).quantize(CENT, rounding=ROUND_HALF_EVEN)
        ranked.append((pct, net, opted, pseudonym, eid, "funded" if status == "funded" else "challenge", initial,
                       currency, count))
    ranked.sort(key=lambda r: (-r[0], -r[1], r[2], r[3]))
    rows = tuple(Standing(rank=i, pseudonym=pseudonym, kind=kind, size=initial, currency=currency, return_pct=pct,
                          net=net, trades=count, entry_id=eid)
                 for i, (pct, net, _opted, pseudonym, eid, kind, initial, currency, count) in enumerate(ranked, 1))
    sizes = tuple(sorted({(row.size, row.currency) for row in rows}))
    return Board(period=period, since=since, computed_at=now, rows=rows, sizes=sizes)


def entries_version(session: Session, *, firm_id: str) -> tuple[int, dt.datetime | None]:
    """What names the firm's entries as they are: (how many, the latest change). Every opt-in, opt-out,
    pseudonym change, hide and unhide moves ``updated_at``; one walk of ``ix_leaderboard_entries_changed``."""
    table = LeaderboardEntry.__table__
    count, latest = session.execute(select(func.count(), func.max(table.c.updated_at))
                                    .where(table.c.firm_id == firm_id)).one()
    return count or 0, latest


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


__all__ = ["CACHE", "PERIODS", "Board", "LeaderboardEntry", "BoardCache", "Standing", "board", "compute", "entries", "entries_version", "entry_of",
           "generate_pseudonym", "hide", "opt_in", "opt_out", "period_of", "pseudonym_problem", "size_of", "unhide"]
