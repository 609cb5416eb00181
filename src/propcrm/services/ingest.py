"""Ingestion: platform events (GUIDE §2) into the event log, once each; everything else into quarantine.

A request body is NDJSON (one event a line) or a JSON array of events. Every line gets an answer:

* ``accepted`` — stored in ``raw_events`` (``status='pending'``; firm-wide clock/news/price events
  ``'stored'``) with the original bytes of the line, so
  fields the decoder does not know are kept;
* ``duplicate`` — the firm already has an event with this source and id (or an earlier line of the
  same request had it): nothing is stored again, which makes re-sending a batch harmless;
* ``rejected`` — malformed (the field and the problem, a value outside the bounds of money, prices and
  lots), dated more than :func:`max_ahead_from_env` ahead of the server's clock, for an account the
  firm does not have, or (with ``only_platform``) for an account on another platform; the line is kept
  in ``quarantine`` with its reason, so a risk officer can inspect it and :func:`resubmit` it once the
  problem is fixed. Nothing sent is lost.

An event the worker later sets aside (out of order, or an account whose events could not be
evaluated or stored) is kept in ``raw_events`` as ``rejected`` and in ``quarantine`` with the reason;
its id is not spent: the same source may send a corrected event with that id, which replaces it.

The work is done in bulk and inside the caller's transaction (the caller commits): one query
resolves every account of the batch; ``INSERT … ON CONFLICT DO NOTHING RETURNING event_id`` stores
the events and says which ids were new — on PostgreSQL one statement for the whole batch (the
columns travel as arrays through ``unnest``), on SQLite one multi-row statement per 1,000 rows.

On PostgreSQL the batch takes a per-firm transaction-scoped advisory lock before it inserts: ``seq``
values are then committed in the order they were drawn, so a worker that remembers "evaluated up to
seq N" can never miss a row that commits late with a smaller ``seq``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import msgspec
from sqlalchemy import DateTime, Integer, String, Text, bindparam, delete, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from ..adapters.bus import bus_mode
from ..adapters.db import models as m
from ..adapters.db.models_cluster import LOG_WRITERS_LOCK
from ..adapters.settings import DEFAULT_MAX_AHEAD, MAX_AHEAD_ENV, SettingsError, parse_max_ahead
from ..adapters.settings import current as current_settings
from ..domain.events import DECODER, AnyEvent, News, decode_lines
from .wakeup import events_stored

UTC = dt.timezone.utc
Status = Literal["accepted", "duplicate", "rejected"]

MAX_SOURCE = 64
MAX_AHEAD_VARIABLE = MAX_AHEAD_ENV
_ACCOUNT_CHUNK = 5000  # external ids per lookup query (well under SQLite's and PostgreSQL's bind limits)
_INSERT_PAGE = 1000  # rows per multi-row INSERT round trip on SQLite (4 shared binds + 5 a row)
_TAGS = {cls: tag for tag, cls in ((c.__struct_config__.tag, c) for c in AnyEvent.__args__)}  # type: ignore[attr-defined]
_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])


class IngestError(ValueError):
    """A refused ingestion request (not a refused line: those are answered per line)."""


class LineOutcome(msgspec.Struct, frozen=True, omit_defaults=True):
    """What happened to one line (NDJSON line number, or array index + 1)."""

    line: int
    status: Status
    id: str | None = None
    reason: str | None = None
    quarantine_id: int | None = None


class IngestReport(msgspec.Struct):
    lines: list[LineOutcome] = msgspec.field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(1 for o in self.lines if o.status == "accepted")

    @property
    def duplicates(self) -> int:
        return sum(1 for o in self.lines if o.status == "duplicate")

    @property
    def rejected(self) -> int:
        return sum(1 for o in self.lines if o.status == "rejected")

    def rejections(self) -> list[LineOutcome]:
        return [o for o in self.lines if o.status == "rejected"]

    def to_dict(self) -> dict:
        """The API answer: counts, then every line."""
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "lines": msgspec.to_builtins(self.lines),
        }

    def to_json(self) -> bytes:
        return _ENCODER.encode(self.to_dict())


_ENCODER = msgspec.json.Encoder()


BUS_MODE_MESSAGE = (
    "this deployment's event log is the NATS JetStream stream (PROPCRM_NATS_URL is set): events written to "
    "the embedded log would never be evaluated; send them through POST /api/v1/events instead"
)


def max_ahead_from_env(env: Mapping[str, str] | None = None) -> dt.timedelta:
    """How far ahead of the server's clock an event's time may be: ``PROPCRM_MAX_EVENT_AHEAD_MINUTES``
    (default 5; 0 to 1440, fractions allowed). Platforms' clocks drift a little; an event from the
    future would freeze its account (every real event after it would be out of order), so it is refused.

    Without ``env``: the process's settings (``Settings.max_event_ahead``, read once at its start, see
    ``adapters/settings.current()``) — the default of the callers that pass no ``max_ahead`` (the
    evaluation drivers, ingestion from the platform and payout paths)."""
    try:
        if env is None:
            return current_settings().max_event_ahead
        return parse_max_ahead(env.get(MAX_AHEAD_VARIABLE, ""))
    except SettingsError as exc:
        raise IngestError(str(exc)) from None


def ahead_of_clock(event: AnyEvent, horizon: dt.datetime, max_ahead: dt.timedelta) -> str | None:
    """Why ``event`` is refused as dated in the future (``ts``, or ``order_ts`` of an opening, later than
    ``horizon`` = server time + ``max_ahead``), or ``None``. A ``news`` event is the one exception:
    its ``ts`` is when the news is scheduled, published in advance, and it moves no account's time."""
    if type(event) is News:
        return None
    for name in ("ts", "order_ts"):
        value = getattr(event, name, None)
        if value is not None and value > horizon:
            now = horizon - max_ahead
            return (f"`{name}`: {value.isoformat()} is ahead of the server's clock "
                    f"({now.isoformat(timespec='seconds')}) by more than {_minutes(max_ahead)} "
                    f"(at most {_minutes(max_ahead)} ahead is accepted, {MAX_AHEAD_VARIABLE}); "
                    "send events when they happen")
    return None


def _minutes(span: dt.timedelta) -> str:
    minutes = span.total_seconds() / 60
    return f"{minutes:g} minute{'' if minutes == 1 else 's'}"


def _embedded_log_only() -> None:
    """In the scale-out deployment nothing may be written to ``raw_events``: no worker reads it."""
    if bus_mode():
        raise IngestError(BUS_MODE_MESSAGE)


# --------------------------------------------------------------------------------------------- public
class Checks(msgspec.Struct, frozen=True):
    """What every line is checked against besides its own validity: the server's clock (``horizon`` =
    now + ``max_ahead``) and, for a platform's key, the platform its accounts must be on."""

    horizon: dt.datetime
    max_ahead: dt.timedelta
    only_platform: str | None = None

    @classmethod
    def now(cls, *, max_ahead: dt.timedelta | None = None, only_platform: str | None = None) -> Checks:
        ahead = max_ahead_from_env() if max_ahead is None else max_ahead
        return cls(dt.datetime.now(UTC) + ahead, ahead, only_platform)


def ingest(
    session: Session, *, firm_id: str, source: str, body: bytes, content_type: str | None = None,
    max_ahead: dt.timedelta | None = None, only_platform: str | None = None,
) -> IngestReport:
    """Store the events of one request body; quarantine what cannot be accepted. The caller commits.
    (The embedded event log; with ``PROPCRM_NATS_URL`` set this refuses: see :func:`prepare_for_bus`.)

    ``max_ahead``: how far ahead of the server's clock an event may be (default: the environment,
    :func:`max_ahead_from_env`). ``only_platform``: lines for accounts on another platform are rejected
    (a platform's key writes only to its own accounts)."""
    _embedded_log_only()
    _check_source(source)
    received_at = dt.datetime.now(UTC)
    checks = Checks.now(max_ahead=max_ahead, only_platform=only_platform)
    candidates, whole_body_problem = split_body(body, content_type)
    if whole_body_problem is not None:
        rejected = [_Rejected(1, body, whole_body_problem)]
        outcomes: dict[int, LineOutcome] = {}
    else:
        outcomes, rejected = _store(session, firm_id=firm_id, source=source, candidates=candidates,
                                    received_at=received_at, checks=checks)
    if rejected:
        rows = [
            {"firm_id": firm_id, "source": source, "line": r.line, "body": r.raw, "reason": r.reason,
             "received_at": received_at}
            for r in rejected
        ]
        ids = quarantine_lines(session, rows, returning_ids=True)
        for r, quarantine_id in zip(rejected, ids):
            outcomes[r.line] = LineOutcome(r.line, "rejected", id=r.event_id, reason=r.reason,
                                           quarantine_id=quarantine_id)
    return IngestReport([outcomes[n] for n in sorted(outcomes)])


def quarantine_lines(session: Session, rows: list[dict], *, returning_ids: bool = False) -> list[int] | None:
    """The one way lines enter the quarantine (ingestion, evaluation and the cluster's dead letters):
    ``rows`` of ``firm_id, source, line, body, reason, received_at`` (and ``resolved_at``); with
    ``returning_ids`` the new entries' ids, in the order of ``rows``."""
    if not rows:
        return [] if returning_ids else None
    if returning_ids:
        return list(session.scalars(
            insert(m.Quarantine).returning(m.Quarantine.id, sort_by_parameter_order=True), rows).all())
    session.execute(insert(m.Quarantine.__table__), rows)
    return None


class PreparedBatch(msgspec.Struct):
    """A request checked and ready for the bus: the lines to publish, and the outcomes known already
    (rejections, quarantined in the caller's transaction, and ids repeated within the request)."""

    firm_id: str
    source: str
    lines: list[tuple[int, str | None, bytes, str]]  # (line, account or None, raw, event id)
    outcomes: dict[int, LineOutcome]


def prepare_for_bus(
    session: Session, *, firm_id: str, source: str, body: bytes, content_type: str | None = None,
    max_ahead: dt.timedelta | None = None, only_platform: str | None = None,
) -> PreparedBatch:
    """The scale-out path, first half (synchronous, in the caller's transaction): the same checks as
    :func:`ingest` — malformed lines, events from the future, unknown accounts and (with
    ``only_platform``) other platforms' accounts are quarantined with their reason — but nothing is
    written to ``raw_events``: the event log is the JetStream stream, and :func:`publish_prepared` puts
    the lines on it. The caller commits (the quarantine) first."""
    _check_source(source)
    received_at = dt.datetime.now(UTC)
    checks = Checks.now(max_ahead=max_ahead, only_platform=only_platform)
    candidates, whole_body_problem = split_body(body, content_type)
    if whole_body_problem is not None:
        valid, outcomes, rejected = [], {}, [_Rejected(1, body, whole_body_problem)]
    else:
        valid, outcomes, rejected = _validate(session, firm_id=firm_id, candidates=candidates, checks=checks)
    if rejected:
        rows = [{"firm_id": firm_id, "source": source, "line": r.line, "body": r.raw, "reason": r.reason,
                 "received_at": received_at} for r in rejected]
        ids = quarantine_lines(session, rows, returning_ids=True)
        for r, quarantine_id in zip(rejected, ids):
            outcomes[r.line] = LineOutcome(r.line, "rejected", id=r.event_id, reason=r.reason,
                                           quarantine_id=quarantine_id)
    lines = [(v.line, getattr(v.event, "account", None), v.raw, v.event.id) for v in valid]
    return PreparedBatch(firm_id, source, lines, outcomes)


async def publish_prepared(publisher, prepared: PreparedBatch) -> IngestReport:
    """The scale-out path, second half: publish the checked lines to the partitioned stream
    (:class:`propcrm.adapters.bus.jetstream.EventPublisher`) and answer per line. A line is
    ``duplicate`` when JetStream recognised its message as already stored (a retried request within
    the de-duplication window). Raises :class:`propcrm.adapters.bus.jetstream.BusError` when the bus
    did not take the batch: the request may then be retried as is."""
    from ..adapters.bus.partitions import partition_of

    outcomes = dict(prepared.outcomes)
    published = await publisher.publish(prepared.firm_id, prepared.source,
                                        [(account, raw) for _, account, raw, _ in prepared.lines])
    partitions = publisher.config.partitions
    fresh = {p.message.partition for p in published if not p.duplicate}
    for line, account, _, event_id in prepared.lines:
        if account is None:  # copied to every partition: new if any copy was new
            new = bool(fresh)
        else:
            new = partition_of(prepared.firm_id, account, partitions) in fresh
        outcomes[line] = LineOutcome(line, "accepted" if new else "duplicate", id=event_id)
    return IngestReport([outcomes[n] for n in sorted(outcomes)])


def resubmit(session: Session, *, firm_id: str, quarantine_ids: Sequence[int]) -> IngestReport:
    """Ingest quarantined lines again (say, after their account was created).

    A line that is now stored — accepted, or a duplicate of a stored event — is marked resolved; one
    that is still refused stays in quarantine with its up-to-date reason. The report's ``line`` is the
    position in ``quarantine_ids`` (1-based) and ``quarantine_id`` names the entry.
    """
    wanted = list(dict.fromkeys(int(i) for i in quarantine_ids))
    if not wanted:
        return IngestReport()
    rows = {
        row.id: row
        for row in session.scalars(
            select(m.Quarantine).where(m.Quarantine.firm_id == firm_id, m.Quarantine.id.in_(wanted))
        )
    }
    missing = [i for i in wanted if i not in rows]
    if missing:
        raise IngestError(f"no quarantine entr{'y' if len(missing) == 1 else 'ies'} "
                          f"{', '.join(map(str, missing))} in firm {firm_id}")
    now = dt.datetime.now(UTC)
    checks = Checks.now()
    outcomes: dict[int, LineOutcome] = {}
    by_source: dict[str, list[tuple[int, bytes]]] = {}
    for position, quarantine_id in enumerate(wanted, start=1):
        by_source.setdefault(rows[quarantine_id].source, []).append((position, rows[quarantine_id].body))
    for source, candidates in by_source.items():
        if bus_mode():
            stored, rejected = _queue_for_bus(session, firm_id=firm_id, source=source, candidates=candidates,
                                              checks=checks, now=now)
        else:
            stored, rejected = _store(session, firm_id=firm_id, source=source, candidates=candidates,
                                      received_at=now, checks=checks)
        outcomes.update(stored)
        for r in rejected:
            outcomes[r.line] = LineOutcome(r.line, "rejected", id=r.event_id, reason=r.reason)
    lines = []
    for position, quarantine_id in enumerate(wanted, start=1):
        outcome = msgspec.structs.replace(outcomes[position], quarantine_id=quarantine_id)
        row = rows[quarantine_id]
        if outcome.status == "rejected":
            row.reason = outcome.reason or row.reason
        elif row.resolved_at is None:
            row.resolved_at = now
        lines.append(outcome)
    session.flush()
    return IngestReport(lines)


def resubmit_outbox_key(firm_id: str, source: str, event_id: str) -> str:
    digest = hashlib.blake2b(f"{firm_id}\x1f{source}\x1f{event_id}".encode(), digest_size=16).hexdigest()
    return f"resubmit:{digest}"


def _queue_for_bus(session: Session, *, firm_id: str, source: str, candidates: list[tuple[int, bytes]],
                   checks: Checks, now: dt.datetime) -> tuple[dict[int, LineOutcome], list[_Rejected]]:
    """Re-submission in the scale-out deployment: the lines pass ingestion's checks, then each is
    committed as a ``bus_event`` outbox row in the caller's transaction (with the entry resolved) and
    the dispatcher publishes it to its account's partition, ``Nats-Msg-Id`` derived from the event id.
    An event re-submitted before (same firm, source and id) is a ``duplicate`` and is not queued again."""
    valid, outcomes, rejected = _validate(session, firm_id=firm_id, candidates=candidates, checks=checks)
    for v in valid:
        key = resubmit_outbox_key(firm_id, source, v.event.id)
        if session.scalar(select(m.OutboxMessage.id).where(m.OutboxMessage.dedupe_key == key)) is not None:
            outcomes[v.line] = LineOutcome(v.line, "duplicate", id=v.event.id)
            continue
        session.add(m.OutboxMessage(firm_id=firm_id, kind="bus_event", dedupe_key=key, status="pending", attempts=0,
                                    next_attempt_at=now, created_at=now,
                                    payload={"source": source, "event_id": v.event.id,
                                             "account": getattr(v.event, "account", None),
                                             "line": v.raw.decode("utf-8", "replace")}))
        outcomes[v.line] = LineOutcome(v.line, "accepted", id=v.event.id)
    session.flush()
    return outcomes, rejected


def split_body(body: bytes, content_type: str | None = None) -> tuple[list[tuple[int, bytes]], str | None]:
    """The lines of a body as ``(line number, bytes)``, blank lines skipped.

    A body whose first non-blank byte is ``[`` is read as a JSON array (unless the content type says
    NDJSON): element *i* is line *i + 1* and keeps its own bytes. If such a body is not a valid array,
    it is judged line by line as NDJSON — except when it was sent as ``application/json``, where it is
    one document and is refused whole (the second value of the pair says why).
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    head = body.lstrip(b" \t\r\n")
    if head.startswith(b"[") and kind not in ("application/x-ndjson", "application/ndjson", "application/jsonl"):
        try:
            elements = _ARRAY.decode(body)
        except UnicodeDecodeError as exc:
            if kind == "application/json":
                return [], f"not valid UTF-8 at byte {exc.start}"
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if kind == "application/json":
                return [], f"not a valid JSON array of events: {exc}"
        else:
            return [(index, bytes(raw)) for index, raw in enumerate(elements, start=1)], None
    lines = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip(b" \t\r"):
            lines.append((number, line))
    return lines, None


# ------------------------------------------------------------------------------------------ internals
class _Rejected(msgspec.Struct):
    line: int
    raw: bytes
    reason: str
    event_id: str | None = None


def _check_source(source: str) -> None:
    if not source or len(source) > MAX_SOURCE or not source.isprintable():
        raise IngestError(f"source must be 1 to {MAX_SOURCE} printable characters, got {source!r}")


def _decode(line: int, raw: bytes, checks: Checks) -> AnyEvent | _Rejected:
    try:
        event = DECODER.decode(raw)
    except UnicodeDecodeError as exc:
        return _Rejected(line, raw, f"not valid UTF-8: {exc.reason} at byte {exc.start}")
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _Rejected(line, raw, _explain(raw))
    except Exception as exc:  # noqa: BLE001 - a line must never fail the request
        return _Rejected(line, raw, f"could not be decoded: {type(exc).__name__}")
    problem = _storable(event)
    if problem is not None:
        return _Rejected(line, raw, problem, _clean(event.id) if "`id`" not in problem else None)
    problem = ahead_of_clock(event, checks.horizon, checks.max_ahead)
    if problem is not None:
        return _Rejected(line, raw, problem, event.id)
    return event


def _explain(raw: bytes) -> str:
    """The decoder's reason (field and problem) for a line that failed to decode."""
    try:
        rejected = decode_lines(raw.replace(b"\n", b" "))[2]
    except Exception as exc:  # noqa: BLE001
        return f"not valid JSON: {type(exc).__name__}"
    return _clean(rejected[0].reason) if rejected else "not a single JSON object"


def _storable(event: AnyEvent) -> str | None:
    """What the decoder lets through but the database cannot hold (NUL characters, unrepresentable time)."""
    for name in ("id", "account"):
        value = getattr(event, name, None)
        if value is not None and "\x00" in value:
            return f"`{name}`: must not contain NUL characters"
    try:
        event.ts.astimezone(UTC)
    except (OverflowError, ValueError):
        return "`ts`: outside the representable range of times"
    return None


def _clean(text: str) -> str:
    return text.replace("\x00", "\\u0000")


class _Valid(msgspec.Struct):
    """A line that may enter the event log: decoded, its account (if any) resolved, first of its id."""

    line: int
    raw: bytes
    event: AnyEvent
    account_id: int | None


def _validate(
    session: Session, *, firm_id: str, candidates: Iterable[tuple[int, bytes]], checks: Checks
) -> tuple[list[_Valid], dict[int, LineOutcome], list[_Rejected]]:
    """Decode and resolve accounts: the lines that may be stored (the first line of each id), the
    outcomes of repeated ids within the request, and the rejections."""
    decoded: list[tuple[int, bytes, AnyEvent]] = []
    rejected: list[_Rejected] = []
    for line, raw in candidates:
        result = _decode(line, raw, checks)
        if isinstance(result, _Rejected):
            rejected.append(result)
        else:
            decoded.append((line, raw, result))
    accounts = _resolve_accounts(session, firm_id, {getattr(e, "account", None) for _, _, e in decoded} - {None})

    outcomes: dict[int, LineOutcome] = {}
    seen: set[str] = set()
    valid: list[_Valid] = []
    only = checks.only_platform
    for line, raw, event in decoded:
        external = getattr(event, "account", None)
        account_id = None
        if external is not None:
            found = accounts.get(external)
            if found is None:
                rejected.append(_Rejected(line, raw, f"no account '{external}' in firm {firm_id}", event.id))
                continue
            account_id, platform = found
            if only is not None and platform != only:
                rejected.append(_Rejected(
                    line, raw, f"account '{external}' is on platform '{platform}': this key writes only to "
                               f"accounts on '{only}'", event.id))
                continue
        if event.id in seen:
            outcomes[line] = LineOutcome(line, "duplicate", id=event.id)
            continue
        seen.add(event.id)
        valid.append(_Valid(line, raw, event, account_id))
    return valid, outcomes, rejected


def _store(
    session: Session,
    *,
    firm_id: str,
    source: str,
    candidates: Iterable[tuple[int, bytes]],
    received_at: dt.datetime,
    checks: Checks,
) -> tuple[dict[int, LineOutcome], list[_Rejected]]:
    """Decode, resolve accounts, insert new events; the outcomes of stored lines and the rejections."""
    valid, outcomes, rejected = _validate(session, firm_id=firm_id, candidates=candidates, checks=checks)
    first_line_of = {v.event.id: v.line for v in valid}
    rows = [{
        "firm_id": firm_id, "source": source, "event_id": v.event.id, "account_id": v.account_id,
        "type": _TAGS[type(v.event)], "ts": v.event.ts, "body": v.raw, "received_at": received_at,
        "status": "pending",
    } for v in valid]
    new_ids = _insert_new(session, firm_id, rows)
    if new_ids:
        events_stored(session)  # the worker is woken when the caller commits (services/wakeup.py)
    if len(new_ids) < len(rows):  # some ids are stored already: those set aside by evaluation are free again
        replaced = _free_set_aside_ids(session, firm_id, source,
                                       [row["event_id"] for row in rows if row["event_id"] not in new_ids])
        if replaced:
            # the stored order must stay the line order: the rows this request stored after the first
            # replaced line are taken out again and stored once more with the replacements, in order
            first = next(i for i, row in enumerate(rows) if row["event_id"] in replaced)
            again = [row for row in rows[first:] if row["event_id"] in replaced or row["event_id"] in new_ids]
            moved = [row["event_id"] for row in again if row["event_id"] in new_ids]
            for start in range(0, len(moved), _ACCOUNT_CHUNK):
                session.execute(delete(m.RawEvent).where(
                    m.RawEvent.firm_id == firm_id, m.RawEvent.source == source,
                    m.RawEvent.event_id.in_(moved[start : start + _ACCOUNT_CHUNK])
                ).execution_options(synchronize_session=False))
            new_ids |= _insert_new(session, firm_id, again)
            # only now, with the new rows stored after them, may the old ones go: SQLite would hand the
            # highest seq out again if its row were deleted first, behind positions the worker holds
            session.execute(delete(m.RawEvent).where(m.RawEvent.seq.in_(list(replaced.values())))
                            .execution_options(synchronize_session=False))
    if any(row["account_id"] is None for row in rows):
        # clock/news/price concern the whole firm: the worker evaluates them per account through
        # account_states.last_seq, so they are "stored", never waiting in the pending queue
        session.execute(
            update(m.RawEvent)
            .where(m.RawEvent.firm_id == firm_id, m.RawEvent.status == "pending", m.RawEvent.account_id.is_(None))
            .values(status="stored")
            .execution_options(synchronize_session=False)
        )
    for event_id, line in first_line_of.items():
        outcomes[line] = LineOutcome(line, "accepted" if event_id in new_ids else "duplicate", id=event_id)
    rejected.sort(key=lambda r: r.line)
    return outcomes, rejected


def _free_set_aside_ids(session: Session, firm_id: str, source: str, event_ids: list[str]) -> dict[str, int]:
    """Of these stored ids, the ones whose event evaluation set aside (``rejected``: out of order, or
    its account's events could not be evaluated or stored), freed for the re-sent events: their rows
    are renamed (the caller deletes them once the new rows are stored) — the id was never spent.
    Returns ``{event id: seq of the old row}``. The set-aside line stays in the quarantine: an open
    entry holding exactly its bytes is marked resolved, and one is recorded (resolved) if none does (a
    line set aside before quarantine entries were written for it)."""
    found = []
    for start in range(0, len(event_ids), _ACCOUNT_CHUNK):
        found += session.execute(
            select(m.RawEvent.seq, m.RawEvent.event_id, m.RawEvent.body, m.RawEvent.reason, m.RawEvent.received_at)
            .where(m.RawEvent.firm_id == firm_id, m.RawEvent.source == source, m.RawEvent.status == "rejected",
                   m.RawEvent.event_id.in_(event_ids[start : start + _ACCOUNT_CHUNK]))
        ).all()
    if not found:
        return {}
    now = dt.datetime.now(UTC)
    for row in found:
        resolved = session.execute(
            update(m.Quarantine)
            .where(m.Quarantine.firm_id == firm_id, m.Quarantine.source == source,
                   m.Quarantine.resolved_at.is_(None), m.Quarantine.body == row.body)
            .values(resolved_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not resolved:
            quarantine_lines(session, [dict(
                firm_id=firm_id, source=source, line=None, body=row.body, received_at=row.received_at,
                resolved_at=now, reason=f"replaced by a re-sent event with the same id; set aside because: "
                                        f"{row.reason or 'rejected'}")])
        session.execute(update(m.RawEvent).where(m.RawEvent.seq == row.seq)
                        .values(event_id=f"\x1freplaced {row.seq} {secrets.token_hex(8)}")
                        .execution_options(synchronize_session=False))
    return {row.event_id: row.seq for row in found}


def _resolve_accounts(session: Session, firm_id: str, externals: set[str]) -> dict[str, tuple[int, str]]:
    """External id -> (account id, platform) for the firm's accounts among ``externals``."""
    found: dict[str, tuple[int, str]] = {}
    wanted = sorted(externals)
    for start in range(0, len(wanted), _ACCOUNT_CHUNK):
        chunk = wanted[start : start + _ACCOUNT_CHUNK]
        rows = session.execute(
            select(m.Account.external_id, m.Account.id, m.Account.platform).where(
                m.Account.firm_id == firm_id, m.Account.external_id.in_(chunk)
            )
        )
        found.update((external, (account_id, platform)) for external, account_id, platform in rows)
    return found


def _insert_new(session: Session, firm_id: str, rows: list[dict]) -> set[str]:
    """Insert the rows that are not stored yet; the event ids that were new."""
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return _insert_new_postgresql(session, firm_id, rows)
    if dialect == "sqlite":
        return _insert_new_sqlite(session, rows)
    raise IngestError(f"ingestion supports SQLite and PostgreSQL, not {dialect}")  # pragma: no cover


def _sqlite_time(value: dt.datetime) -> str:
    """A time as :class:`~propcrm.adapters.db.models.UtcDateTime` stores it on SQLite (naive UTC text)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _insert_new_sqlite(session: Session, rows: list[dict]) -> set[str]:
    """One multi-row ``INSERT … ON CONFLICT DO NOTHING RETURNING event_id`` per page of rows, written
    for the driver directly: SQLAlchemy's per-row parameter processing (the larger part of a batch's
    cost) is skipped, and the four values every row of a batch shares (firm, source, receipt time,
    status) are bound once as ``?1``–``?4`` and referred to by number, leaving five binds a row. The
    values are the ones the untyped table passed to the driver before (storage form, see
    :func:`_sqlite_time`), so the stored rows are the same bytes."""
    first = rows[0]
    shared = [first["firm_id"], first["source"], _sqlite_time(first["received_at"]), first["status"]]
    connection = session.connection()
    new: set[str] = set()
    for start in range(0, len(rows), _INSERT_PAGE):
        page = rows[start : start + _INSERT_PAGE]
        params = list(shared)
        for r in page:
            params += (r["event_id"], r["account_id"], r["type"], _sqlite_time(r["ts"]), r["body"])
        new.update(event_id for (event_id,) in connection.exec_driver_sql(_sqlite_insert_sql(len(page)), tuple(params)))
    return new


@functools.lru_cache(maxsize=16)
def _sqlite_insert_sql(count: int) -> str:
    """The statement of a page of ``count`` rows (made once per page size: a full page's and the few
    last, shorter pages' sizes a process meets)."""
    values = ", ".join(f"(?1, ?2, ?{b}, ?{b + 1}, ?{b + 2}, ?{b + 3}, ?{b + 4}, ?3, ?4)"
                       for b in range(5, 5 + 5 * count, 5))
    return ("INSERT INTO raw_events (firm_id, source, event_id, account_id, type, ts, body, received_at, status) "
            f"VALUES {values} ON CONFLICT (firm_id, source, event_id) DO NOTHING RETURNING event_id")


def _insert_new_postgresql(session: Session, firm_id: str, rows: list[dict]) -> set[str]:
    """One statement for the whole batch: ``INSERT … SELECT … FROM unnest(arrays) ON CONFLICT DO NOTHING``.

    The arrays are five bound parameters whatever the batch size, so there is no bind limit to page
    around and nothing for the driver to re-parse; ``WITH ORDINALITY`` keeps ``seq`` in line order.
    """
    _lock_firm(session, firm_id)
    raw_events = m.RawEvent.__table__
    first = rows[0]
    arrays = func.unnest(
        bindparam("event_ids", [r["event_id"] for r in rows], type_=postgresql.ARRAY(Text)),
        bindparam("account_ids", [r["account_id"] for r in rows], type_=postgresql.ARRAY(Integer)),
        bindparam("types", [r["type"] for r in rows], type_=postgresql.ARRAY(Text)),
        bindparam("stamps", [r["ts"] for r in rows], type_=postgresql.ARRAY(DateTime(timezone=True))),
        bindparam("bodies", [r["body"] for r in rows], type_=postgresql.ARRAY(postgresql.BYTEA)),
    ).table_valued("event_id", "account_id", "type", "ts", "body", with_ordinality="n").render_derived(name="batch")
    source_rows = select(
        literal(first["firm_id"], String),
        literal(first["source"], String),
        arrays.c.event_id,
        arrays.c.account_id,
        arrays.c.type,
        arrays.c.ts,
        arrays.c.body,
        literal(first["received_at"], DateTime(timezone=True)),
        literal("pending", String),
    ).order_by(arrays.c.n)
    statement = (
        postgresql.insert(raw_events)
        .from_select(
            ["firm_id", "source", "event_id", "account_id", "type", "ts", "body", "received_at", "status"],
            source_rows,
        )
        .on_conflict_do_nothing(index_elements=["firm_id", "source", "event_id"])
        .returning(raw_events.c.event_id)
    )
    return set(session.execute(statement).scalars())


def _lock_firm(session: Session, firm_id: str) -> None:
    """Serialise a firm's event inserts until commit, so ``seq`` order is commit order (PostgreSQL); and
    mark the transaction as one of the log's writers (:data:`LOG_WRITERS_LOCK`, shared) before it draws
    ``seq`` numbers: the table log's reader waits at a hole for this database's writers only."""
    key = int.from_bytes(hashlib.blake2b(f"raw_events:{firm_id}".encode(), digest_size=8).digest(), "big", signed=True)
    session.execute(select(func.pg_advisory_xact_lock_shared(*LOG_WRITERS_LOCK), func.pg_advisory_xact_lock(key)))


__all__ = ["Checks", "DEFAULT_MAX_AHEAD", "IngestError", "IngestReport", "LineOutcome", "MAX_AHEAD_VARIABLE",
           "PreparedBatch", "ahead_of_clock", "ingest", "max_ahead_from_env", "prepare_for_bus", "publish_prepared",
           "resubmit", "split_body"]
