"""The tamper-evident audit log: an append-only, SHA-256 hash chain over ``audit_log``.

Every entry carries ``prev_hash`` (the ``hash`` of the entry before it, or 64 zeros for the first) and
``hash``, the SHA-256 (lower-case hex) of the entry's canonical JSON::

    {"action": …, "actor": …, "after": …, "before": …, "entity": …, "entity_id": …,
     "firm_id": …, "prev_hash": …, "seq": …, "ts": "2026-03-02T14:03:11.000000Z"}

Canonical JSON is UTF-8 with sorted keys, no insignificant whitespace (``","`` and ``":"``), non-ASCII
characters written as themselves and NaN/Infinity refused. ``ts`` is RFC 3339 in UTC with exactly six
fractional digits and a ``Z``. ``before``/``after`` are stored exactly as they are hashed: before
hashing they are reduced to plain JSON — a :class:`~decimal.Decimal` becomes its exact decimal text
(``Decimal("100000.00")`` → ``"100000.00"``, never a binary float), a datetime becomes RFC 3339 UTC
text like ``ts``, a date its ISO text, an enum its value, a tuple a list; mapping keys must be text.
Anyone can therefore re-compute every hash from the rows alone, in any language.

Editing an entry in place breaks its own hash; deleting one leaves a gap in ``seq`` and breaks the
next entry's link; moving one changes its ``seq`` (which is hashed). :func:`verify` walks the chain and
names the first such entry. Two things a chain on its own cannot show, by construction: removal of the
*newest* entries (the tail simply gets shorter) and entries appended (or a tail rewritten) by someone
who can write to the table, since anyone can compute a SHA-256. Both are caught by the **key** and the
**anchors** (:mod:`propcrm.services.audit_anchors`):

* with an audit key configured, every entry also carries ``mac`` = HMAC-SHA256(key, ``hash``) (lower-case
  hex of the hash's ASCII). Without the key nobody can append an entry that verifies; the key lives in
  the configuration, never in the database or the log. Entries written before the key was configured
  carry none; every entry after the first keyed one must.
* the serve process and the workers export, on a schedule, keyed **anchors** — the newest entry's
  ``seq`` and ``hash``, MAC'd — to files outside the database; ``propcrm audit verify`` checks every anchor
  with the key and the log against them, so removing the newest entries is caught up to the latest
  anchor.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import false, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..adapters.db.models import AuditEntry
from .audit_config import config_for

UTC = dt.timezone.utc
GENESIS = "0" * 64
"""``prev_hash`` of the first entry."""

# pg_advisory_xact_lock key for "the audit chain's tail": the first 8 bytes of SHA-256("propcrm.audit_log").
LOCK_KEY = int.from_bytes(hashlib.sha256(b"propcrm.audit_log").digest()[:8], "big", signed=True)

_TABLE = AuditEntry.__table__
_FIELDS = ("seq", "firm_id", "ts", "actor", "action", "entity", "entity_id", "before", "after", "prev_hash")


# --------------------------------------------------------------------------------------------------
# canonical form


def rfc3339(value: dt.datetime) -> str:
    """``2026-03-02T14:03:11.000000Z``: UTC, always six fractional digits. Naive times are refused."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def plain(value: Any, *, _path: str = "$") -> Any:
    """``value`` reduced to plain JSON (dict/list/str/int/float/bool/None), deterministically.

    Decimals become their exact text, datetimes RFC 3339 UTC text. Anything else that JSON cannot say
    exactly (sets, bytes, objects, non-text keys, NaN) is refused with a :class:`TypeError` or
    :class:`ValueError` naming where it sits, rather than being stringified in some ad-hoc way.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)  # int subclasses (IntEnum handled below) become plain ints
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{_path}: {value} is not a finite amount")
        return format(value, "f")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{_path}: {value} is not a finite number")
        return value
    if isinstance(value, dt.datetime):
        try:
            return rfc3339(value)
        except ValueError:
            raise ValueError(f"{_path}: timestamps must be timezone-aware") from None
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return plain(value.value, _path=_path)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{_path}: keys must be text, got {type(key).__name__} {key!r}")
            out[key] = plain(item, _path=f"{_path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [plain(item, _path=f"{_path}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{_path}: cannot record a {type(value).__name__} in the audit log")


def canonical_json(document: Any) -> bytes:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def entry_hash(
    *,
    seq: int,
    firm_id: str | None,
    ts: dt.datetime,
    actor: str,
    action: str,
    entity: str,
    entity_id: str | None,
    before: Any,
    after: Any,
    prev_hash: str,
) -> str:
    """SHA-256 hex of an entry's canonical JSON (see the module docstring)."""
    document = {
        "seq": seq,
        "firm_id": firm_id,
        "ts": rfc3339(ts),
        "actor": actor,
        "action": action,
        "entity": entity,
        "entity_id": entity_id,
        "before": before,
        "after": after,
        "prev_hash": prev_hash,
    }
    return hashlib.sha256(canonical_json(document)).hexdigest()


def entry_mac(key: bytes, entry_hash_hex: str) -> str:
    """The key mark of an entry: HMAC-SHA256(key, its hash's hex text), lower-case hex."""
    return hmac.new(key, entry_hash_hex.encode("ascii"), hashlib.sha256).hexdigest()


class AuditKeyError(RuntimeError):
    """This process cannot append: the log is keyed and the process has no key, or another key."""


def _key_of(session: Session) -> bytes | None:
    """The audit key configured for the session's database (``audit_config.config_for``), if any."""
    bind = session.get_bind()
    url = getattr(bind, "url", None) or bind.engine.url
    return config_for(url.render_as_string(hide_password=False)).key


def _check_tail_key(key: bytes | None, tail: Any) -> None:
    """Refuse to append onto a keyed tail without its key (the entries would fail verification)."""
    if tail is None or tail.mac is None:
        return
    if key is None:
        raise AuditKeyError("the audit log is keyed but this process has no audit key: set PROPCRM_AUDIT_KEY or "
                            "PROPCRM_AUDIT_KEY_FILE as for the service (docs/service.md)")
    if not hmac.compare_digest(entry_mac(key, tail.hash), tail.mac):
        raise AuditKeyError(f"this process's audit key is not the one entry #{tail.seq} was written with "
                            "(or that entry was altered): nothing is appended; run propcrm audit verify")


# --------------------------------------------------------------------------------------------------
# appending


def _lock_tail(session: Session) -> None:
    """Make this transaction the only one that may append until it ends.

    PostgreSQL: ``pg_advisory_xact_lock`` on :data:`LOCK_KEY`; released at commit or rollback. The
    tail is read *after* the lock is granted, so under READ COMMITTED (the default) it is the
    latest committed tail. (Under REPEATABLE READ/SERIALIZABLE a snapshot taken before the lock may
    be stale; the insert then fails on the unique ``seq``/``hash`` instead of forking the chain.)

    SQLite: BEGIN IMMEDIATE semantics, not "trust the single writer". A database-wide write lock is
    what SQLite has; a no-op ``UPDATE audit_log … WHERE 0 = 1`` acquires it (the driver opens the
    transaction just before it, and SQLite takes the write lock for any write statement, even one
    that matches no row), waiting up to the connection's busy timeout. From then on no other
    connection can commit, so the tail read next is the real tail until this transaction ends. If
    the caller's transaction already wrote, the lock is already held and this is free. (If the
    caller began a deferred transaction and read before writing while another writer committed,
    SQLite refuses the upgrade with "database is locked": the transaction fails, the chain stays
    linear.)
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
    elif dialect == "sqlite":
        session.execute(update(_TABLE).where(false()).values(seq=_TABLE.c.seq))
    else:  # pragma: no cover - only the two supported backends
        raise NotImplementedError(f"audit log: no append lock for {dialect}")


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: str | None = None,
    before: dict | None = None,
    after: dict | None = None,
    firm_id: str | None = None,
    ts: dt.datetime | None = None,
) -> AuditEntry:
    """Append one entry to the chain inside the caller's transaction (it commits or rolls back with it).

    Takes the append lock (see :func:`_lock_tail`) and keeps it until the caller's transaction ends,
    so append late in a unit of work and commit soon. The entry is flushed (with anything else
    pending in ``session``) so that a second append in the same transaction chains onto it.
    ``ts`` defaults to now, read after the lock, so default timestamps never go backwards along
    the chain. Returns the new :class:`AuditEntry`; its ``before``/``after`` hold the stored plain-JSON
    form (decimals as text).
    """
    before_plain = plain(before, _path="before")
    after_plain = plain(after, _path="after")
    if ts is not None:
        rfc3339(ts)  # refuse a naive time before taking the lock
    key = _key_of(session)
    _lock_tail(session)
    tail = session.execute(
        select(_TABLE.c.seq, _TABLE.c.hash, _TABLE.c.mac).order_by(_TABLE.c.seq.desc()).limit(1)
    ).first()
    _check_tail_key(key, tail)
    seq, prev_hash = (1, GENESIS) if tail is None else (tail.seq + 1, tail.hash)
    when = (ts or dt.datetime.now(UTC)).astimezone(UTC)
    fields = dict(
        seq=seq, firm_id=firm_id, ts=when, actor=actor, action=action, entity=entity, entity_id=entity_id,
        before=before_plain, after=after_plain, prev_hash=prev_hash,
    )
    digest = entry_hash(**fields)
    entry = AuditEntry(**fields, hash=digest, mac=entry_mac(key, digest) if key is not None else None)
    session.add(entry)
    session.flush()
    return entry


def append_many(session: Session, entries: list[dict[str, Any]]) -> list[int]:
    """Append several entries in one go: one lock, one read of the tail, one multi-row insert.

    Each entry is a mapping of :func:`append`'s keyword arguments (``actor``, ``action``, ``entity``,
    optional ``entity_id``, ``before``, ``after``, ``firm_id``, ``ts``). The entries are chained in the
    order given, exactly as consecutive :func:`append` calls would chain them, so :func:`verify`
    cannot tell the difference; only the cost differs (the lock and the tail read once per batch
    rather than once per entry). Returns the new entries' ``seq`` values.
    """
    if not entries:
        return []
    prepared = []
    for entry in entries:
        ts = entry.get("ts")
        if ts is not None:
            rfc3339(ts)
        prepared.append((entry, plain(entry.get("before"), _path="before"), plain(entry.get("after"), _path="after")))
    key = _key_of(session)
    _lock_tail(session)
    session.flush()
    tail = session.execute(select(_TABLE.c.seq, _TABLE.c.hash, _TABLE.c.mac)
                           .order_by(_TABLE.c.seq.desc()).limit(1)).first()
    _check_tail_key(key, tail)
    seq, prev_hash = (0, GENESIS) if tail is None else (tail.seq, tail.hash)
    now = dt.datetime.now(UTC)
    rows = []
    for entry, before_plain, after_plain in prepared:
        seq += 1
        fields = dict(
            seq=seq, firm_id=entry.get("firm_id"), ts=(entry.get("ts") or now).astimezone(UTC),
            actor=entry["actor"], action=entry["action"], entity=entry["entity"], entity_id=entry.get("entity_id"),
            before=before_plain, after=after_plain, prev_hash=prev_hash,
        )
        prev_hash = entry_hash(**fields)
        rows.append({**fields, "hash": prev_hash, "mac": entry_mac(key, prev_hash) if key is not None else None})
    session.execute(_TABLE.insert(), rows)
    return [row["seq"] for row in rows]


# --------------------------------------------------------------------------------------------------
# verifying


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    """Entries that verified: all of them when ``ok``, otherwise the intact prefix before the break."""
    first_bad_seq: int | None = None
    problem: str | None = None
    head_hash: str | None = None
    """Hash of the last intact entry: keep it elsewhere to detect later truncation or rewriting."""
    keyed_from: int | None = None
    """With a key: the first entry that carries a key mark (the ones before predate the key)."""


class _Unreadable:
    """A row whose stored values could not even be decoded (e.g. garbage written into SQLite)."""

    def __init__(self, seq: int, error: Exception) -> None:
        self.seq = seq
        self.error = error


def _short(digest: Any) -> str:
    text = str(digest)
    return text[:12] + "…" if len(text) > 12 else text


def _rows(session: Session, page_size: int, after: int | None = None) -> Iterator[Any]:
    """All entries in ``seq`` order (after ``after``), ``page_size`` at a time (keyset pagination)."""
    columns = [_TABLE.c[name] for name in _FIELDS] + [_TABLE.c.hash, _TABLE.c.mac]
    last: int | None = after
    while True:
        query = select(*columns).order_by(_TABLE.c.seq).limit(page_size)
        if last is not None:
            query = query.where(_TABLE.c.seq > last)
        try:
            page = session.execute(query).all()
        except DBAPIError:
            raise
        except Exception:  # noqa: BLE001 - a value the types cannot decode: find it row by row
            page = list(_rows_one_by_one(session, last, page_size))
        if not page:
            return
        yield from page
        last = page[-1].seq
        if len(page) < page_size:
            return


def _rows_one_by_one(session: Session, last: int | None, page_size: int) -> Iterator[Any]:
    seqs = select(_TABLE.c.seq).order_by(_TABLE.c.seq).limit(page_size)
    if last is not None:
        seqs = seqs.where(_TABLE.c.seq > last)
    columns = [_TABLE.c[name] for name in _FIELDS] + [_TABLE.c.hash, _TABLE.c.mac]
    for seq in session.scalars(seqs).all():
        try:
            yield session.execute(select(*columns).where(_TABLE.c.seq == seq)).one()
        except DBAPIError:
            raise
        except Exception as exc:  # noqa: BLE001
            yield _Unreadable(seq, exc)


def verify(session: Session, *, page_size: int = 1000, key: bytes | None = None, after_seq: int = 0,
           after_hash: str = GENESIS) -> VerifyResult:
    """Walk the whole chain in ``seq`` order and stop at the first entry that is not what was appended.

    Checks, entry by entry: ``seq`` continues without a gap (a gap = entries removed); the entry's
    own hash matches its content (else it was altered, or moved — ``seq`` is hashed); its
    ``prev_hash`` is the previous entry's hash (else the previous entry was altered and re-hashed,
    or this entry's link was rewritten); with ``key``, its key mark (``mac``) — required from the first
    keyed entry on (else it was appended or rewritten by someone without the key). Reads in pages of
    ``page_size``. ``after_seq``/``after_hash``: start after an entry already verified (the anchor
    writer checks only what is new); ``entries`` then counts from there.
    """
    count = 0
    prev_seq = after_seq
    prev_hash = after_hash
    heads: list[str | None] = [None]  # heads[-1]: hash of the last entry that verified
    keyed_from: int | None = None

    def broken(seq: int, problem: str) -> VerifyResult:
        intact = seq - 1 - after_seq  # entries after_seq+1 … seq-1 verified
        return VerifyResult(ok=False, entries=intact, first_bad_seq=seq, problem=problem,
                            head_hash=heads[-1] if intact == count else heads[-2], keyed_from=keyed_from)

    for row in _rows(session, page_size, after=after_seq or None):
        seq = row.seq
        if seq != prev_seq + 1:
            missing = prev_seq + 1
            if seq == missing + 1:
                span, gone = f"entry #{missing} is", "it was removed or moved"
            else:
                span, gone = f"entries #{missing}–#{seq - 1} are", "they were removed or moved"
            where = f"entry #{seq} follows #{prev_seq}" if prev_seq else f"the log starts at #{seq}"
            return broken(missing, f"{span} missing: {where}; {gone}")
        if isinstance(row, _Unreadable):
            return broken(seq, f"entry #{seq} was altered: its stored values can no longer be read "
                               f"({type(row.error).__name__}: {row.error})")
        fields = {name: getattr(row, name) for name in _FIELDS}
        try:
            recomputed = entry_hash(**fields)
        except (TypeError, ValueError, AttributeError) as exc:
            recomputed = None
            reason = f"its stored values are not valid for an entry ({exc})"
        else:
            reason = (f"its content no longer matches its hash (recorded {_short(row.hash)}, content "
                      f"hashes to {_short(recomputed)}); a field was changed, or it was moved from "
                      f"another position")
        if recomputed != row.hash:
            return broken(seq, f"entry #{seq} was altered: {reason}")
        if key is not None:
            mark = getattr(row, "mac", None)
            if mark is not None and hmac.compare_digest(entry_mac(key, row.hash), str(mark)):
                keyed_from = keyed_from or seq
            elif mark is not None or keyed_from is not None or after_seq:
                return broken(seq, f"entry #{seq} was not written by propcrm: its key mark is "
                                   f"{'missing' if mark is None else 'wrong'} (a forged append, or an entry "
                                   "rewritten by someone without the audit key — or the key is not the log's)")
        if row.prev_hash != prev_hash:
            if prev_seq == 0:
                return broken(seq, f"entry #{seq} should start the chain (previous hash of 64 zeros) but "
                                   f"records {_short(row.prev_hash)}; its link was rewritten")
            return broken(prev_seq, f"entry #{prev_seq} was altered and its hash recomputed: entry #{seq} "
                                    f"recorded the previous hash as {_short(row.prev_hash)}, but entry "
                                    f"#{prev_seq} now hashes to {_short(prev_hash)} (or entry #{seq}'s "
                                    f"link was rewritten)")
        count += 1
        prev_seq = seq
        prev_hash = row.hash
        heads = [heads[-1], prev_hash]
    return VerifyResult(ok=True, entries=count, head_hash=heads[-1], keyed_from=keyed_from)
