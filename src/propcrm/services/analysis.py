"""Abuse analysis over the trade-history projection: full passes, incremental passes, and what they write.

Trading comes from the projections the evaluation write path keeps in both deployments (embedded and
scaled out, :mod:`propcrm.services.trades`): positions from ``trades`` and ``trade_closes``, logins
and the ip/device of opens from ``account_activity`` — never from the event log, which the scale-out
deployment does not fill. Only market data (reference ``price`` quotes and ``news``) is read from
``raw_events``, where the embedded deployment keeps it (:func:`_events`).

A **full** pass reads the firm's projected trades and logins (and the stored quotes and news), runs
every detector (:mod:`propcrm.analytics`) and rewrites the firm's account links, fingerprints and risk
scores; each finding opens or updates a case (:func:`propcrm.services.cases.record_finding`). An
**incremental** pass reads only the activity after the firm's watermark (``analysis_watermarks.last_seq``:
an ``account_activity.id``) and re-analyses the accounts it touches together with their possible
counterparts — accounts that opened a trade inside the matching windows around the new trades, and
accounts sharing an IP, device or payment method with them — so its cost follows the new batch, not the
firm's history. Run one before any payout decision (:func:`refresh`), and continuously with
``propcrm analyze db --follow``. What the analysis sees is what was evaluated: an event still waiting
for the evaluation is seen by the next pass.

Everything a pass writes is one transaction: a crash loses the pass (the watermark did not move), never
half of it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_analytics import AccountFingerprint, AccountLink, AnalysisWatermark, RiskScore
from ..domain.events import DECODER, TradeClosed, TradeOpened
from . import audit
from .cases import record_finding
from .errors import Invalid

UTC = dt.timezone.utc
MAX_SCOPE_ROUNDS = 3
VALUE_MAX = 200  # account_fingerprints.value / account_links.value


@dataclass
class AnalysisRun:
    mode: str
    events_read: int = 0
    accounts_analysed: int = 0
    trades: int = 0
    findings: dict[str, int] = field(default_factory=dict)
    cases: dict[str, int] = field(default_factory=dict)
    scores_written: int = 0
    links_written: int = 0
    last_seq: int = 0
    undecodable: int = 0
    seconds: float = 0.0
    population: Any = field(default=None, repr=False)  # a full pass's feature quantiles (kept on the watermark)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "population"}


def _config(config):
    from ..analytics.detect import AnalysisConfig

    return config or AnalysisConfig()


def _decode(bodies: list[bytes]) -> tuple[list, int]:
    events, bad = [], 0
    for body in bodies:
        try:
            events.append(DECODER.decode(body))
        except (msgspec.ValidationError, msgspec.DecodeError):
            bad += 1  # stored before a contract change; it cannot be judged, and it is counted
    return events, bad


def _watermark(session: Session, firm_id: str) -> AnalysisWatermark | None:
    query = select(AnalysisWatermark).where(AnalysisWatermark.firm_id == firm_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def _accounts(session: Session, firm_id: str) -> tuple[dict[str, int], dict[int, str], dict[int, int | None]]:
    rows = session.execute(select(m.Account.id, m.Account.external_id, m.Account.trader_id)
                           .where(m.Account.firm_id == firm_id)).all()
    return ({r.external_id: r.id for r in rows}, {r.id: r.external_id for r in rows},
            {r.id: r.trader_id for r in rows})


PAYMENT_KINDS = ("card", "wallet", "bank")


def payment_value(kind: str | None, fingerprint: Any) -> str:
    """The linkage value of a payment instrument: ``kind:fingerprint`` (a card and a wallet hash never collide).

    ``fingerprint`` is the provider's hash of the card, wallet or bank account — never the number itself."""
    if kind is not None and kind not in PAYMENT_KINDS:
        raise Invalid(f"`kind`: one of {', '.join(PAYMENT_KINDS)}")
    text = fingerprint.strip() if isinstance(fingerprint, str) else ""
    if not 1 <= len(text) <= 180 or not text.isprintable():
        raise Invalid("`fingerprint`: 1 to 180 printable characters")
    return f"{kind}:{text}" if kind else text


def record_payment_method(session: Session, *, firm_id: str, account_id: int, fingerprint: str,
                          kind: str | None = None, seen_at: dt.datetime | None = None,
                          actor: str | None = None) -> str:
    """Remember that ``account_id`` was paid for with this payment instrument (card, wallet or bank account
    fingerprint) for linkage; with an ``actor`` the change is an audit entry. Returns the stored value."""
    from .accounts import get_account

    value = payment_value(kind, fingerprint)
    account = get_account(session, firm_id=firm_id, account_id=account_id)  # another firm's account: 404
    _upsert_fingerprints(session, firm_id, {(account.id, "payment", value): [seen_at, seen_at, 1]})
    if actor is not None:
        audit.append(session, actor=actor, action="account.payment_method", entity="account",
                     entity_id=account.external_id, after={"payment_method": value}, firm_id=firm_id)
    return value


def _upsert_fingerprints(session: Session, firm_id: str, values: dict[tuple[int, str, str], list]) -> None:
    if not values:
        return
    clipped: dict[tuple[int, str, str], list] = {}
    for (account_id, via, value), (first, last, seen) in values.items():
        key = (account_id, via, value[:VALUE_MAX])  # the column's width: the stored value is the key
        slot = clipped.get(key)
        if slot is None:
            clipped[key] = [first, last, seen]
        else:
            slot[0] = min((t for t in (slot[0], first) if t is not None), default=None)
            slot[1] = max((t for t in (slot[1], last) if t is not None), default=None)
            slot[2] += seen
    values = clipped
    by_account = defaultdict(list)
    for (account_id, via, value), slot in values.items():
        by_account[account_id].append((via, value, slot))
    existing = {}
    ids = list(by_account)
    for chunk in range(0, len(ids), 500):
        for row in session.scalars(select(AccountFingerprint).where(
                AccountFingerprint.firm_id == firm_id, AccountFingerprint.account_id.in_(ids[chunk:chunk + 500]))):
            existing[(row.account_id, row.via, row.value)] = row
    for key, slot in values.items():
        row = existing.get(key)
        first, last, seen = slot
        if row is None:
            session.add(AccountFingerprint(firm_id=firm_id, account_id=key[0], via=key[1], value=key[2],
                                           first_seen=first, last_seen=last, seen=seen))
        else:
            if first is not None and (row.first_seen is None or first < row.first_seen):
                row.first_seen = first
            if last is not None and (row.last_seen is None or last > row.last_seen):
                row.last_seen = last
            row.seen += seen
    session.flush()


def _fingerprints_of(frame, ids: dict[str, int]) -> dict[tuple[int, str, str], list]:
    """The ip/device values each account of the frame used, with first/last time and count."""
    from ..analytics.frame import from_ms

    out: dict[tuple[int, str, str], list] = {}
    for a, t, ip, device in zip(frame.session_acc.tolist(), frame.session_ms.tolist(), frame.session_ip,
                                frame.session_device):
        account_id = ids.get(frame.accounts[a])
        if account_id is None:
            continue
        for via, value in (("ip", ip), ("device", device)):
            if not value:
                continue
            slot = out.get((account_id, via, value))
            if slot is None:
                out[(account_id, via, value)] = [t, t, 1]
            else:
                slot[0], slot[1], slot[2] = min(slot[0], t), max(slot[1], t), slot[2] + 1
    return {k: [from_ms(v[0]), from_ms(v[1]), v[2]] for k, v in out.items()}


def _without_crowded(session: Session, firm_id: str, rows: list, limit: int) -> list:
    """Drop the IPs more than ``limit`` accounts of the *firm* share (a scope sees only some of them; a crowded IP
    links only with corroboration, which the full pass judges). Devices and payment methods stay: more sharers
    are stronger evidence."""
    from sqlalchemy import tuple_

    values = sorted({(r.via, r.value) for r in rows if r.via == "ip"})
    crowded = set()
    for chunk in range(0, len(values), 300):
        part = values[chunk:chunk + 300]
        crowded |= {(via, value) for via, value, n in session.execute(
            select(AccountFingerprint.via, AccountFingerprint.value, func.count())
            .where(AccountFingerprint.firm_id == firm_id, tuple_(AccountFingerprint.via, AccountFingerprint.value).in_(part))
            .group_by(AccountFingerprint.via, AccountFingerprint.value)) if n > limit}
    return [r for r in rows if (r.via, r.value) not in crowded]


def _load_linkage(session: Session, firm_id: str, frame, account_ids: set[int] | None, names: dict[int, str],
                  limit: int = 12) -> None:
    """Replace the frame's sessions by the stored fingerprints of its accounts (and read payment methods)."""
    import numpy as np

    from ..analytics.frame import to_ms

    index = {name: i for i, name in enumerate(frame.accounts)}
    query = select(AccountFingerprint).where(AccountFingerprint.firm_id == firm_id)
    rows = []
    if account_ids is None:
        rows = list(session.scalars(query))
    else:
        ids = sorted(account_ids)
        for chunk in range(0, len(ids), 500):
            rows += list(session.scalars(query.where(AccountFingerprint.account_id.in_(ids[chunk:chunk + 500]))))
    if account_ids is not None and rows:
        rows = _without_crowded(session, firm_id, rows, limit)
    acc, ms, ip, device = [], [], [], []
    payments: dict[int, list[str]] = defaultdict(list)
    for row in rows:
        name = names.get(row.account_id)
        if name is None:
            continue
        if name not in index:
            index[name] = len(frame.accounts)
            frame.accounts.append(name)
        a = index[name]
        if row.via == "payment":
            payments[a].append(row.value)
            continue
        for stamp in {row.first_seen, row.last_seen}:
            acc.append(a)
            ms.append(to_ms(stamp) if stamp is not None else 0)
            ip.append(row.value if row.via == "ip" else "")
            device.append(row.value if row.via == "device" else "")
    frame.session_acc = np.asarray(acc, np.int32)
    frame.session_ms = np.asarray(ms, np.int64)
    frame.session_ip, frame.session_device = ip, device
    frame.payments_of = dict(payments)


def _write_scores(session: Session, firm_id: str, analysis, ids: dict[str, int], only: set[str] | None) -> int:
    now = dt.datetime.now(UTC)
    written = []
    for a, name in enumerate(analysis.frame.accounts):
        account_id = ids.get(name)
        if account_id is None or (only is not None and name not in only):
            continue
        explanation = analysis.scores.explain(a)
        written.append(RiskScore(account_id=account_id, firm_id=firm_id, score=explanation["score"],
                                 explanation=explanation, computed_at=now))
    targets = [r.account_id for r in written]
    for chunk in range(0, len(targets), 500):
        session.execute(delete(RiskScore).where(RiskScore.firm_id == firm_id,
                                                RiskScore.account_id.in_(targets[chunk:chunk + 500])))
    session.add_all(written)
    session.flush()
    return len(written)


def _write_links(session: Session, firm_id: str, links: list[dict], ids: dict[str, int], only: set[str] | None) -> int:
    wanted = {}
    for link in links:
        if link["via"] == "trader":
            continue
        a, b = ids.get(link["account_a"]), ids.get(link["account_b"])
        if a is None or b is None:
            continue
        if only is not None and link["account_a"] not in only and link["account_b"] not in only:
            continue
        a, b = min(a, b), max(a, b)
        first = dt.datetime.fromisoformat(link["first_seen"].replace("Z", "+00:00")) if link.get("first_seen") else None
        last = dt.datetime.fromisoformat(link["last_seen"].replace("Z", "+00:00")) if link.get("last_seen") else None
        wanted[(a, b, link["via"], link["value"][:200])] = (first, last, link)
    if only is None:
        session.execute(delete(AccountLink).where(AccountLink.firm_id == firm_id))
        existing = {}
    else:
        accounts = sorted({x for key in wanted for x in key[:2]})
        existing = {}
        for chunk in range(0, len(accounts), 500):
            part = accounts[chunk:chunk + 500]
            for row in session.scalars(select(AccountLink).where(AccountLink.firm_id == firm_id,
                                                                 AccountLink.account_a.in_(part))):
                existing[(row.account_a, row.account_b, row.via, row.value)] = row
    now = dt.datetime.now(UTC)
    for key, (first, last, link) in wanted.items():
        row = existing.get(key)
        if row is None:
            session.add(AccountLink(firm_id=firm_id, account_a=key[0], account_b=key[1], via=key[2], value=key[3],
                                    first_seen=first or now, last_seen=last or now, evidence=link))
        else:
            row.last_seen, row.evidence = last or row.last_seen, link
    session.flush()
    return len(wanted)


def _write_cases(session: Session, firm_id: str, analysis, ids: dict[str, int], only: set[str] | None) -> dict[str, int]:
    outcome: dict[str, int] = defaultdict(int)
    for finding in analysis.all_findings():
        if only is not None and not set(finding.accounts) & only:
            continue
        account_ids = [ids[a] for a in finding.accounts if a in ids]
        if not account_ids:
            continue
        _case, what = record_finding(session, firm_id=firm_id, detector=finding.detector,
                                     fingerprint=finding.fingerprint, account_ids=account_ids, title=finding.title,
                                     score=finding.score, evidence=finding.evidence)
        outcome[what] += 1
    return dict(outcome)


def _events(session: Session, firm_id: str, *, types: tuple[str, ...],
            ts_range: tuple[dt.datetime, dt.datetime] | None = None) -> list[bytes]:
    """The firm's stored market data (``price`` and ``news`` events: reference quotes for the latency
    detector, the news calendar for the risk score) — not trading, which comes from the projections. Only
    the embedded deployment stores them (``raw_events``); scaled out there are none and the detectors
    that need them see no quotes and no news."""
    query = select(m.RawEvent.body).where(m.RawEvent.firm_id == firm_id, m.RawEvent.type.in_(types),
                                          m.RawEvent.account_id.is_(None), m.RawEvent.status != "rejected")
    if ts_range is not None:
        query = query.where(m.RawEvent.ts >= ts_range[0], m.RawEvent.ts <= ts_range[1])
    return [bytes(b) for b in session.scalars(query.order_by(m.RawEvent.seq))]


def _sent(as_sent: str | None, lots: Decimal, price: Decimal) -> tuple[Decimal, Decimal]:
    """A lot size and price as the platform wrote them (``as_sent``: PostgreSQL's NUMERIC(24, 8) gives
    1.08500 back as 1.08500000), or the stored values when the text was not kept."""
    if as_sent:
        try:
            sent_lots, sent_price = (Decimal(part) for part in as_sent.split(" "))
        except (ArithmeticError, ValueError):
            return lots, price
        if sent_lots == lots and sent_price == price:
            return sent_lots, sent_price
    return lots, price


_CENT = Decimal("0.01")


def _money(value: Decimal) -> Decimal:
    """A profit or cost without PostgreSQL's padding to 8 places (35.00000000 → 35.00), exact."""
    if value.as_tuple().exponent == -8:
        value = value.normalize()
        if value.as_tuple().exponent > -2:
            value = value.quantize(_CENT)
    return value


def _chunked(query, column, ids: list[int] | None):
    if ids is None:
        yield query
        return
    for chunk in range(0, len(ids), 500):
        yield query.where(column.in_(ids[chunk:chunk + 500]))


def _trading(session: Session, firm_id: str, names: dict[int, str], *, account_ids: list[int] | None = None,
             upto: int) -> tuple[list, int]:
    """The accounts' positions from the trade projection (``trades`` with their ``trade_closes``) and
    their logins and opens' identities from ``account_activity`` up to ``upto``, as the events the
    frame builder reads (:class:`~propcrm.analytics.frame.FrameBuilder`). Positions without an open side
    (opened before propcrm saw the account) have nothing to compare and are left out, as before.
    Returns (events, rows read)."""
    trades = m.Trade.__table__
    closes = m.TradeClose.__table__
    activity = m.AccountActivity.__table__
    events: list = []
    read = 0
    query = (select(trades.c.id, trades.c.account_id, trades.c.position, trades.c.symbol, trades.c.side,
                    trades.c.lots, trades.c.open_ts, trades.c.open_price, trades.c.order_ts, trades.c.open_event_id,
                    trades.c.as_sent)
             .where(trades.c.firm_id == firm_id, trades.c.open_ts.is_not(None)).order_by(trades.c.id))
    opened: dict[int, tuple[str, str]] = {}
    for part in _chunked(query, trades.c.account_id, account_ids):
        for row in session.execute(part):
            read += 1
            name = names.get(row.account_id)
            if name is None:
                continue
            opened[row.id] = (name, row.position)
            lots, price = _sent(row.as_sent, row.lots, row.open_price)
            events.append(TradeOpened(id=row.open_event_id or f"trade-{row.id}", ts=row.open_ts, account=name,
                                      position=row.position, symbol=row.symbol, side=row.side, lots=lots,
                                      price=price, order_ts=row.order_ts))
    query = (select(closes.c.trade_id, closes.c.event_id, closes.c.ts, closes.c.lots, closes.c.price, closes.c.profit,
                    closes.c.commission, closes.c.swap, closes.c.as_sent)
             .where(closes.c.firm_id == firm_id).order_by(closes.c.id))
    for part in _chunked(query, closes.c.account_id, account_ids):
        for row in session.execute(part):
            read += 1
            owner = opened.get(row.trade_id)
            if owner is None:
                continue
            lots, price = _sent(row.as_sent, row.lots, row.price)
            events.append(TradeClosed(id=row.event_id, ts=row.ts, account=owner[0], position=owner[1], lots=lots,
                                      price=price, profit=_money(row.profit), commission=_money(row.commission),
                                      swap=_money(row.swap)))
    query = (select(activity.c.account_id, activity.c.ts, activity.c.ip, activity.c.device)
             .where(activity.c.firm_id == firm_id, activity.c.id <= upto,
                    (activity.c.ip.is_not(None)) | (activity.c.device.is_not(None))).order_by(activity.c.id))
    for part in _chunked(query, activity.c.account_id, account_ids):
        for row in session.execute(part):
            read += 1
            name = names.get(row.account_id)
            if name is not None:
                events.append(_Login(name, row.ts, row.ip or "", row.device or ""))
    return events, read


class _Login:
    """A login (or an open's identity) from ``account_activity``: what the frame's sessions need. The ip
    is the network already (:func:`~propcrm.analytics.frame.network_of` gives it back unchanged)."""

    __slots__ = ("account", "ts", "ip", "device")

    def __init__(self, account: str, ts: dt.datetime, ip: str, device: str) -> None:
        self.account, self.ts, self.ip, self.device = account, ts, ip, device


def _frame(events: list, traders: dict[str, str] | None = None):
    """A frame of decoded events and :class:`_Login` rows (as :func:`~propcrm.analytics.frame.frame_from_events`:
    every account with a known trader is in it)."""
    from ..analytics.frame import FrameBuilder, to_ms

    builder = FrameBuilder()
    for item in events:
        if type(item) is _Login:
            builder.login(item.account, to_ms(item.ts), item.ip, item.device)
        else:
            builder.add((item,))
    for name in traders or {}:
        builder.account(name)
    frame = builder.build()
    index = {name: i for i, name in enumerate(frame.accounts)}
    frame.trader_of = {index[name]: str(t) for name, t in (traders or {}).items() if t is not None}
    return frame


def _cut(session: Session, firm_id: str) -> int:
    """The firm's last activity row: what a pass reads up to (its watermark afterwards)."""
    return session.scalar(select(func.max(m.AccountActivity.id)).where(m.AccountActivity.firm_id == firm_id)) or 0


def run(session: Session, *, firm_id: str, full: bool = False, config=None) -> AnalysisRun:
    """One analysis pass of the firm (incremental unless ``full`` or never analysed)."""
    started = time.perf_counter()
    cut = _cut(session, firm_id)
    mark = _watermark(session, firm_id)
    if mark is None:
        mark = AnalysisWatermark(firm_id=firm_id, last_seq=0, updated_at=dt.datetime.now(UTC))
        session.add(mark)
        session.flush()
        full = True
    result = _full(session, firm_id, cut, _config(config)) if full else _incremental(session, firm_id, mark, cut,
                                                                                       _config(config))
    if result.mode == "full":
        mark.full_at = dt.datetime.now(UTC)
        mark.population = result.population
    mark.last_seq = max(cut, mark.last_seq)
    mark.updated_at = dt.datetime.now(UTC)
    result.last_seq = mark.last_seq
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def refresh(session: Session, *, firm_id: str) -> AnalysisRun:
    """Bring the firm's cases and scores up to the last evaluated trade (call before deciding a payout)."""
    return run(session, firm_id=firm_id)


def _full(session: Session, firm_id: str, cut: int, config) -> AnalysisRun:
    from ..analytics.run import analyze

    ids, names, traders = _accounts(session, firm_id)
    trading, read = _trading(session, firm_id, names, upto=cut)
    market = _events(session, firm_id, types=("price", "news"))
    decoded, bad = _decode(market)
    frame = _frame([*decoded, *trading], traders={names[i]: str(t) for i, t in traders.items() if t is not None})
    session.execute(delete(AccountFingerprint).where(AccountFingerprint.firm_id == firm_id,
                                                     AccountFingerprint.via != "payment"))
    _upsert_fingerprints(session, firm_id, _fingerprints_of(frame, ids))
    _load_linkage(session, firm_id, frame, None, names)
    analysis = analyze(frame, config)
    result = AnalysisRun(mode="full", events_read=read + len(market), accounts_analysed=len(frame.accounts),
                         trades=frame.n, undecodable=bad, findings={d: len(v) for d, v in analysis.findings.items()})
    result.links_written = _write_links(session, firm_id, analysis.links, ids, None)
    result.cases = _write_cases(session, firm_id, analysis, ids, None)
    result.scores_written = _write_scores(session, firm_id, analysis, ids, None)
    result.population = analysis.scores.population
    return result


def _windows(opens_ms: list[int], window_ms: int, most: int = 200) -> list[tuple[int, int]]:
    """The time ranges around the new opens (±window), overlapping ones merged; at most ``most`` ranges
    (beyond that, neighbouring ranges are merged across the smallest gaps)."""
    ranges: list[list[int]] = []
    for t in opens_ms:
        if ranges and t - window_ms <= ranges[-1][1]:
            ranges[-1][1] = t + window_ms
        else:
            ranges.append([t - window_ms, t + window_ms])
    while len(ranges) > most:
        gaps = sorted(range(len(ranges) - 1), key=lambda k: ranges[k + 1][0] - ranges[k][1])[: len(ranges) - most]
        for k in sorted(gaps, reverse=True):
            ranges[k][1] = ranges[k + 1][1]
            del ranges[k + 1]
    return [(lo, hi) for lo, hi in ranges]


def _new_activity(session: Session, firm_id: str, after: int, upto: int, names: dict[int, str]):
    """The activity rows after the watermark: the accounts they touch, the new opens' times (ms) and the
    logins (and opens' identities) as :class:`_Login` rows."""
    from ..analytics.frame import to_ms

    table = m.AccountActivity.__table__
    touched: set[int] = set()
    opens: list[int] = []
    logins: list[_Login] = []
    rows = session.execute(select(table.c.account_id, table.c.kind, table.c.ts, table.c.ip, table.c.device).where(
        table.c.firm_id == firm_id, table.c.id > after, table.c.id <= upto).order_by(table.c.id)).all()
    for row in rows:
        if row.account_id not in names:
            continue
        touched.add(row.account_id)
        if row.kind == "opened":
            opens.append(to_ms(row.ts))
        if row.ip or row.device:
            logins.append(_Login(names[row.account_id], row.ts, row.ip or "", row.device or ""))
    return touched, sorted(opens), logins, len(rows)


def _incremental(session: Session, firm_id: str, mark: AnalysisWatermark, cut: int, config) -> AnalysisRun:
    from ..analytics.frame import from_ms
    from ..analytics.run import analyze

    result = AnalysisRun(mode="incremental")
    if cut <= mark.last_seq:
        return result
    ids, names, traders = _accounts(session, firm_id)
    touched, opens, logins, read = _new_activity(session, firm_id, mark.last_seq, cut, names)
    result.events_read = read
    if not touched:
        return result
    _upsert_fingerprints(session, firm_id, _fingerprints_of(_frame(logins), ids))
    scope = set(touched)
    # counterparts in time: accounts that opened inside the matching windows around the new opens
    window = dt.timedelta(seconds=max(config.hedge_max_delay_s, config.copy_window_s))
    activity = m.AccountActivity
    for lo, hi in _windows(opens, int(window.total_seconds() * 1000)):
        scope |= set(session.scalars(select(activity.account_id).where(
            activity.firm_id == firm_id, activity.kind == "opened", activity.ts >= from_ms(lo),
            activity.ts <= from_ms(hi), activity.id <= cut).distinct()))
    # counterparts in identity: accounts sharing a (not crowded) ip, device or payment method
    frontier = set(touched)
    for _ in range(MAX_SCOPE_ROUNDS):
        values = set()
        ids_list = sorted(frontier)
        for chunk in range(0, len(ids_list), 500):
            values |= set(session.execute(select(AccountFingerprint.via, AccountFingerprint.value).where(
                AccountFingerprint.firm_id == firm_id, AccountFingerprint.account_id.in_(ids_list[chunk:chunk + 500]))).all())
        found = set()
        for via, value in values:
            members = list(session.scalars(select(AccountFingerprint.account_id).where(
                AccountFingerprint.firm_id == firm_id, AccountFingerprint.via == via, AccountFingerprint.value == value)
                .limit(config.link_crowded_check_max + 1)))
            # an IP beyond a household's size is crowded (weak evidence): it does not widen the scope
            limit = config.link_household_max if via == "ip" else config.link_crowded_check_max
            if len(members) <= limit:
                found |= set(members)
        frontier = found - scope
        scope |= found
        if not frontier:
            break
    scope.discard(None)
    scope_list = sorted(scope)
    events, scope_read = _trading(session, firm_id, names, account_ids=scope_list, upto=cut)
    touched_names = {names[i] for i in touched}
    own = _frame([e for e in events if e.account in touched_names])
    market: list = []
    if own.n:
        lo = from_ms(int(min(own.open_ms.min(), own.order_ms.min()))) - dt.timedelta(minutes=5)
        hi = from_ms(int(own.open_ms.max()))
        market, _bad = _decode(_events(session, firm_id, types=("price",), ts_range=(lo, hi)))
    news, _bad = _decode(_events(session, firm_id, types=("news",)))
    trader_of = {names[i]: str(traders[i]) for i in scope if traders.get(i) is not None}
    frame = _frame([*market, *news, *events], traders=trader_of)
    _load_linkage(session, firm_id, frame, scope, names, config.link_household_max)
    analysis = analyze(frame, config, population=mark.population)
    only = touched_names
    result.events_read += scope_read
    result.accounts_analysed, result.trades = len(frame.accounts), frame.n
    result.findings = {d: sum(1 for f in v if set(f.accounts) & only) for d, v in analysis.findings.items()}
    result.links_written = _write_links(session, firm_id, analysis.links, ids, only)
    result.cases = _write_cases(session, firm_id, analysis, ids, only)
    result.scores_written = _write_scores(session, firm_id, analysis, ids, only)
    return result


def account_risk(session: Session, *, firm_id: str, account_id: int) -> dict[str, Any]:
    """An account's risk score with its explanation, its links and the open cases touching it."""
    from .accounts import get_account
    from .cases import linked_accounts, open_cases_touching

    account = get_account(session, firm_id=firm_id, account_id=account_id)
    score = session.scalars(select(RiskScore).where(RiskScore.firm_id == firm_id,
                                                    RiskScore.account_id == account.id)).one_or_none()
    links = session.scalars(select(AccountLink).where(AccountLink.firm_id == firm_id,
                                                      (AccountLink.account_a == account.id) |
                                                      (AccountLink.account_b == account.id)).order_by(AccountLink.id))
    linked = sorted(linked_accounts(session, firm_id=firm_id, account_id=account.id))
    cases = open_cases_touching(session, firm_id=firm_id, account_ids=[account.id])
    return {
        "account_id": account.id, "external_id": account.external_id,
        "score": score.score if score else None, "explanation": score.explanation if score else None,
        "computed_at": score.computed_at if score else None,
        "links": [{"account_id": l.account_b if l.account_a == account.id else l.account_a, "via": l.via,
                   "value": l.value, "first_seen": l.first_seen, "last_seen": l.last_seen} for l in links],
        "linked_accounts": linked,
        "open_cases": [{"id": c.id, "detector": c.detector, "status": c.status, "title": c.title,
                        "account_ids": list(c.account_ids)} for c in cases],
    }


def analysis_loop(session_factory, stop, *, interval: float) -> None:
    """The running service's analysis: an incremental pass of every firm, every ``interval`` seconds
    (``Settings.analysis_interval``, ``PROPCRM_ANALYSIS_INTERVAL``; 0 or less: off).

    A failed pass rolls back (the watermark stays) and is tried again at the next interval.
    """
    import logging

    log = logging.getLogger("propcrm.analysis")
    if interval <= 0:
        return
    while not stop.wait(interval):
        try:
            with session_factory() as s:
                firms = list(s.scalars(select(m.Firm.id).order_by(m.Firm.id)))
            for firm_id in firms:
                with session_factory.begin() as s:
                    result = run(s, firm_id=firm_id)
                if result.events_read:
                    log.info("analysis of %s: %s", firm_id, result.to_dict())
        except Exception:  # noqa: BLE001 - the pass rolled back; the next one starts from the same watermark
            log.exception("analysis pass failed; retrying at the next interval")


__all__ = ["AnalysisRun", "account_risk", "analysis_loop", "record_payment_method", "refresh", "run"]
