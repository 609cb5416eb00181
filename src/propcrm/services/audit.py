"""The tamper-evident audit log: append-only SHA-256 hash chains over ``audit_log``, one per firm.

**Chains.** Every firm's entries form their own chain, and the entries without a firm (operator and system
actions) form one more; so appending takes a lock on one chain only and two firms never wait on each other
(:func:`_lock_tail`). Entries are staged in the session and written when its transaction commits, every
chain the transaction appended to locked together in one fixed order: a transaction appending for firm A
and later for firm B cannot deadlock with one doing the reverse, and the locks last only the commit. An entry's place in its chain is ``chain_seq`` (1, 2, …); ``seq`` is the log-wide
number the database gives it (increasing along every chain, with gaps where a transaction rolled back —
it orders the audit viewer and is not hashed). Entries written before migration 0027 have no
``chain_seq``: they stay, untouched, in the one global chain they were written in (format 1 below, linked
in ``seq`` order with no gap), which :func:`verify` checks as the *pre-upgrade chain*.

Every entry carries ``prev_hash`` (the ``hash`` of the entry before it in its chain, or 64 zeros for the
first) and ``hash``, the SHA-256 (lower-case hex) of the entry's canonical JSON. Format 2 (every entry
with a ``chain_seq``)::

    {"action": …, "actor": …, "after": …, "before": …, "entity": …, "entity_id": …,
     "firm_id": …, "prev_hash": …, "seq": <chain_seq>, "ts": "2026-03-02T14:03:11.000000Z", "v": 2}

Format 1 (the pre-upgrade chain: no ``"v"`` key, ``"seq"`` is the global ``seq``)::

    {"action": …, "actor": …, "after": …, "before": …, "entity": …, "entity_id": …,
     "firm_id": …, "prev_hash": …, "seq": …, "ts": "2026-03-02T14:03:11.000000Z"}

A verifier tells them apart by ``chain_seq`` being set, and a format-1 entry cannot pass as format 2 (the
``"v"`` key is hashed). ``firm_id`` is hashed, so moving an entry to another chain breaks it.

Canonical JSON is UTF-8 with sorted keys, no insignificant whitespace (``","`` and ``":"``), non-ASCII
characters written as themselves and NaN/Infinity refused. ``ts`` is RFC 3339 in UTC with exactly six
fractional digits and a ``Z``. ``before``/``after`` are stored exactly as they are hashed: before
hashing they are reduced to plain JSON — a :class:`~decimal.Decimal` becomes its exact decimal text
(``Decimal("100000.00")`` → ``"100000.00"``, never a binary float), a datetime becomes RFC 3339 UTC
text like ``ts``, a date its ISO text, an enum its value, a tuple a list; mapping keys must be text.
Anyone can therefore re-compute every hash from the rows alone, in any language.

Editing an entry in place breaks its own hash; deleting one leaves a gap in its chain's ``chain_seq``
and breaks the next entry's link; moving one changes its ``chain_seq`` (which is hashed). :func:`verify`
walks every chain and names, per chain, the first such entry. Two things a chain on its own cannot show, by construction: removal of the
*newest* entries (the tail simply gets shorter) and entries appended (or a tail rewritten) by someone
who can write to the table, since anyone can compute a SHA-256. Both are caught by the **key** and the
**anchors** (:mod:`propcrm.services.audit_anchors`):

* with an audit key configured, every entry also carries ``mac`` = HMAC-SHA256(key, ``hash``) (lower-case
  hex of the hash's ASCII). Without the key nobody can append an entry that verifies; the key lives in
  the configuration, never in the database or the log. Entries written before the key was configured
  carry none; every entry after the first keyed one must.
* the serve process and the workers export, on a schedule, keyed **anchors** — every chain's newest
  entry (``chain_seq`` and ``hash``), MAC'd — to files outside the database; ``propcrm audit verify``
  checks every anchor with the key and the log against them, so removing the newest entries of any
  chain is caught up to the latest anchor.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, event, false, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..adapters.db.models import AuditEntry
from .audit_config import config_for

UTC = dt.timezone.utc
GENESIS = "0" * 64
"""``prev_hash`` of the first entry."""

# pg_advisory_xact_lock key of the global chain's tail before migration 0027 (no longer taken).
LOCK_KEY = int.from_bytes(hashlib.sha256(b"propcrm.audit_log").digest()[:8], "big", signed=True)


def chain_lock_key(firm_id: str | None) -> int:
    """pg_advisory_xact_lock key for one chain's tail: the first 8 bytes of SHA-256 of
    ``propcrm.audit_log/<firm id>`` (``propcrm.audit_log/`` for the chain of entries without a firm)."""
    name = b"propcrm.audit_log/" + (firm_id or "").encode("utf-8")
    return int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)


def chain_name(firm_id: str | None) -> str:
    """How messages name a chain."""
    return "the operators' chain (no firm)" if firm_id is None else f"firm {firm_id}'s chain"

_TABLE = AuditEntry.__table__
_FIELDS = ("seq", "firm_id", "ts", "actor", "action", "entity", "entity_id", "before", "after", "prev_hash")
FORMAT = 2
"""Format of the entries appended now (see the module docstring)."""


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
    v: int = 1,
) -> str:
    """SHA-256 hex of an entry's canonical JSON (see the module docstring): format ``v`` — 1, the
    pre-upgrade chain (``seq`` = the global seq), or 2 (``seq`` = the entry's ``chain_seq``)."""
    document: dict[str, Any] = {
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
    if v != 1:
        document["v"] = v
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


def _is_keyed(session: Session) -> Any:
    """Some entry of the log carries a key mark (a new chain's first entry must then be keyed too)."""
    return session.execute(select(_TABLE.c.seq, _TABLE.c.hash, _TABLE.c.mac)
                           .where(_TABLE.c.mac.is_not(None)).order_by(_TABLE.c.seq.desc()).limit(1)).first()


def _chain_filter(firm_id: str | None) -> Any:
    return func.coalesce(_TABLE.c.firm_id, "") == (firm_id or "")


_TAIL = (select(_TABLE.c.seq, _TABLE.c.chain_seq, _TABLE.c.hash, _TABLE.c.mac)
         .where(func.coalesce(_TABLE.c.firm_id, "") == bindparam("chain"), _TABLE.c.chain_seq.is_not(None))
         .order_by(_TABLE.c.chain_seq.desc()).limit(1))
"""Built once (it is read on every append): the newest entry of one chain, through ``ux_audit_log_chain``."""
_NEXTVAL = (select(func.nextval(func.pg_get_serial_sequence("audit_log", "seq")))
            .select_from(func.generate_series(1, bindparam("count"))))
_TOP = select(func.max(_TABLE.c.seq))


def _tail(session: Session, firm_id: str | None) -> Any:
    """The newest entry of ``firm_id``'s chain (by ``chain_seq``), or None."""
    return session.execute(_TAIL, {"chain": firm_id or ""}).first()


def _next_seqs(session: Session, count: int) -> list[int]:
    """``count`` new log-wide numbers, increasing. PostgreSQL: from the column's sequence (no lock; a
    rolled-back transaction leaves a gap). SQLite: after the highest, under the write lock already held."""
    if session.get_bind().dialect.name == "postgresql":
        return sorted(session.execute(_NEXTVAL, {"count": count}).scalars().all())
    top = session.execute(_TOP).scalar() or 0
    return list(range(top + 1, top + 1 + count))


# --------------------------------------------------------------------------------------------------
# appending


def _lock_tail(session: Session, firm_ids: Iterable[str | None] = (None,)) -> None:
    """Make this transaction the only one that may append to these firms' chains until it ends.

    PostgreSQL: ``pg_advisory_xact_lock`` on :func:`chain_lock_key` of each chain, in a fixed order (so two
    transactions locking several chains cannot deadlock); released at commit or rollback. Another firm's
    appends do not wait. The tail is read *after* the lock is granted, so under READ COMMITTED (the
    default) it is the latest committed tail. (Under REPEATABLE READ/SERIALIZABLE a snapshot taken before
    the lock may be stale; the insert then fails on the unique (chain, ``chain_seq``) instead of forking
    the chain.)

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
        for lock_key in sorted({chain_lock_key(firm_id) for firm_id in firm_ids}):
            session.execute(select(func.pg_advisory_xact_lock(lock_key)))
    elif dialect == "sqlite":
        session.execute(update(_TABLE).where(false()).values(seq=_TABLE.c.seq))
    else:  # pragma: no cover - only the two supported backends
        raise NotImplementedError(f"audit log: no append lock for {dialect}")


def _chain_rows(session: Session, prepared: list[tuple[Mapping[str, Any], Any, Any]]) -> list[dict[str, Any]]:
    """The rows for ``prepared`` entries, chained onto their chains' tails under the chains' locks."""
    key = _key_of(session)
    firm_ids = list(dict.fromkeys(entry.get("firm_id") for entry, _, _ in prepared))
    _lock_tail(session, firm_ids)
    session.flush()
    tails: dict[str | None, tuple[int, str]] = {}
    log_keyed: list[Any] = []
    for firm_id in firm_ids:
        tail = _tail(session, firm_id)
        if tail is None:  # a new chain: keyed if the log is
            if not log_keyed:
                log_keyed.append(_is_keyed(session))
            _check_tail_key(key, log_keyed[0])
            tails[firm_id] = (0, GENESIS)
        else:
            _check_tail_key(key, tail)
            tails[firm_id] = (tail.chain_seq, tail.hash)
    seqs = _next_seqs(session, len(prepared))
    now = dt.datetime.now(UTC)
    rows = []
    for seq, (entry, before_plain, after_plain) in zip(seqs, prepared):
        firm_id = entry.get("firm_id")
        chain_seq, prev_hash = tails[firm_id]
        chain_seq += 1
        fields = dict(
            seq=chain_seq, firm_id=firm_id, ts=(entry.get("ts") or now).astimezone(UTC),
            actor=entry["actor"], action=entry["action"], entity=entry["entity"], entity_id=entry.get("entity_id"),
            before=before_plain, after=after_plain, prev_hash=prev_hash,
        )
        digest = entry_hash(**fields, v=FORMAT)
        tails[firm_id] = (chain_seq, digest)
        rows.append({**fields, "seq": seq, "chain_seq": chain_seq, "hash": digest,
                     "mac": entry_mac(key, digest) if key is not None else None})
    return rows


#: the text fields an entry is checked against at the call, with their column lengths (read from the table)
_LIMITS = tuple((name, _TABLE.c[name].type.length) for name in ("actor", "action", "entity", "entity_id", "firm_id"))


def _prepare(entry: Mapping[str, Any]) -> tuple[Mapping[str, Any], Any, Any]:
    """Everything that can be refused about an entry, refused at the call (not at the commit that writes
    it): a naive time, a value JSON cannot say exactly, a field longer than its column."""
    ts = entry.get("ts")
    if ts is not None:
        rfc3339(ts)
    for name, limit in _LIMITS:
        value = entry.get(name)
        if value is None and name in ("entity_id", "firm_id"):
            continue
        if not isinstance(value, str) or not value or len(value) > limit:
            raise ValueError(f"audit entry: {name} must be text of 1 to {limit} characters, got {value!r:.80}")
    return entry, plain(entry.get("before"), _path="before"), plain(entry.get("after"), _path="after")


# --------------------------------------------------------------------------------------------------
# staged appends: written, every chain of the transaction at once, when the transaction commits


_STAGED = "propcrm.audit.staged"


def _staged(session: Session) -> list[tuple[Any, tuple[Mapping[str, Any], Any, Any], AuditEntry]]:
    """The session's entries waiting for its commit, each with the (nested) transaction it was appended in."""
    staged = session.info.get(_STAGED)
    if staged is None:
        staged = session.info[_STAGED] = []
        event.listen(session, "before_commit", _write_staged)
        event.listen(session, "after_soft_rollback", _drop_rolled_back)
        event.listen(session, "after_transaction_end", _forget_ended)
    return staged


def _stage(session: Session, prepared: list[tuple[Mapping[str, Any], Any, Any]]) -> list[AuditEntry]:
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is None:  # (autobegin) the entries belong to the transaction that starts now
        session.connection()
        transaction = session.get_transaction()
    staged = _staged(session)
    entries = []
    for item in prepared:
        entry, before_plain, after_plain = item
        pending = AuditEntry(firm_id=entry.get("firm_id"), actor=entry["actor"], action=entry["action"],
                             entity=entry["entity"], entity_id=entry.get("entity_id"), before=before_plain,
                             after=after_plain)
        staged.append((transaction, item, pending))
        entries.append(pending)
    return entries


def _write_staged(session: Session) -> None:
    """``before_commit``: write the transaction's staged entries — every chain it appends to locked at once,
    in the fixed order (:func:`_lock_tail`), so no two transactions can wait on each other's chains.
    (A savepoint's release also fires ``before_commit``: only the outermost commit writes.)"""
    staged = session.info.get(_STAGED)
    if not staged or session.get_nested_transaction() is not None:
        return
    items = list(staged)
    staged.clear()
    rows = _chain_rows(session, [item for _, item, _ in items])
    session.execute(_TABLE.insert(), rows)
    for (_, _, pending), row in zip(items, rows):
        for name, value in row.items():
            setattr(pending, name, value)


def _within(transaction: Any, ended: Any) -> bool:
    while transaction is not None:
        if transaction is ended:
            return True
        transaction = transaction.parent
    return False


def _drop_rolled_back(session: Session, previous_transaction: Any) -> None:
    """A rolled-back transaction or savepoint takes the entries appended inside it along."""
    staged = session.info.get(_STAGED)
    if staged:
        staged[:] = [item for item in staged if not _within(item[0], previous_transaction)]


def _forget_ended(session: Session, transaction: Any) -> None:
    """The outermost transaction ended (committed: written; rolled back or closed: dropped)."""
    if transaction.parent is None and not transaction.nested:
        staged = session.info.get(_STAGED)
        if staged:
            staged.clear()


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
    """Append one entry to its firm's chain inside the caller's transaction (it commits or rolls back with it).

    The entry is checked now (a naive ``ts``, a value the log cannot record exactly, a field too long:
    :class:`ValueError`/:class:`TypeError` at the call) and written when the caller's transaction commits,
    with every other entry the transaction appended, under the locks of all their chains taken together
    in a fixed order (:func:`_lock_tail`): a transaction that appends for firm A and then for firm B can
    never deadlock with one doing the reverse, and the locks are held only for the commit. A savepoint
    rolled back drops the entries appended inside it. Entries of one chain are chained in the order
    appended. ``ts`` defaults to the commit's time, read under the locks, so default timestamps never go
    backwards along a chain. Returns the :class:`AuditEntry`, numbered (``seq``, ``chain_seq``, ``hash``)
    once the transaction has committed; its ``before``/``after`` hold the stored plain-JSON form
    (decimals as text). A key problem (:class:`AuditKeyError`) is raised by the commit.
    """
    prepared = _prepare(dict(actor=actor, action=action, entity=entity, entity_id=entity_id, before=before,
                             after=after, firm_id=firm_id, ts=ts))
    (entry,) = _stage(session, [prepared])
    return entry


def append_many(session: Session, entries: list[dict[str, Any]]) -> list[AuditEntry]:
    """Append several entries: :func:`append` for each, in the order given (the same chains, the same
    hashes as consecutive calls, written at the commit with one lock and one tail read per chain and one
    multi-row insert). Each entry is a mapping of :func:`append`'s keyword arguments (``actor``,
    ``action``, ``entity``, optional ``entity_id``, ``before``, ``after``, ``firm_id``, ``ts``). Returns
    the entries (numbered once the transaction has committed).
    """
    if not entries:
        return []
    return _stage(session, [_prepare(entry) for entry in entries])


# --------------------------------------------------------------------------------------------------
# verifying


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    """Entries that verified: all of them when ``ok``, otherwise every intact chain and the intact prefix
    of each broken one."""
    first_bad_seq: int | None = None
    """The log-wide ``seq`` of the first entry found bad (in the first broken chain)."""
    problem: str | None = None
    head_hash: str | None = None
    """Hash of the newest intact entry (by ``seq``): keep it elsewhere to detect later truncation or
    rewriting. Per chain: :attr:`heads`."""
    keyed_from: int | None = None
    """With a key: the first entry that carries a key mark (the ones before predate the key)."""
    broken_chain: str | None = None
    """Which chain broke first, in words (:func:`chain_name`, or "the pre-upgrade chain")."""
    broken_firm: str | None = None
    """The firm whose chain broke first (None: the operators' chain or the pre-upgrade chain)."""
    heads: dict[str | None, tuple[int, str]] = field(default_factory=dict)
    """Per chain (firm id, None for the operators'): the last intact entry's ``chain_seq`` and hash."""
    legacy_head: tuple[int, str] | None = None
    """The pre-upgrade chain's last intact entry: its ``seq`` and hash."""
    problems: tuple[str, ...] = ()
    """One problem per broken chain (every chain is walked, not only up to the first break)."""


class _Unreadable:
    """A row whose stored values could not even be decoded (e.g. garbage written into SQLite)."""

    def __init__(self, seq: int, chain_seq: int | None, error: Exception) -> None:
        self.seq = seq
        self.chain_seq = chain_seq
        self.error = error


def _short(digest: Any) -> str:
    text = str(digest)
    return text[:12] + "…" if len(text) > 12 else text


_COLUMNS = [_TABLE.c[name] for name in _FIELDS] + [_TABLE.c.hash, _TABLE.c.mac, _TABLE.c.chain_seq]
_LEGACY = object()
"""The chain argument of :func:`_rows` for the pre-upgrade chain."""


def _rows(session: Session, page_size: int, chain: Any, after: int | None = None) -> Iterator[Any]:
    """One chain's entries in order (after ``after``), ``page_size`` at a time (keyset pagination): the
    pre-upgrade chain (``chain`` is :data:`_LEGACY`) by ``seq``, a firm's (or None's) by ``chain_seq``."""
    if chain is _LEGACY:
        order, where = _TABLE.c.seq, _TABLE.c.chain_seq.is_(None)
    else:
        order, where = _TABLE.c.chain_seq, _chain_filter(chain) & _TABLE.c.chain_seq.is_not(None)
    last: int | None = after
    while True:
        query = select(*_COLUMNS).where(where).order_by(order).limit(page_size)
        if last is not None:
            query = query.where(order > last)
        try:
            page = session.execute(query).all()
        except DBAPIError:
            raise
        except Exception:  # noqa: BLE001 - a value the types cannot decode: find it row by row
            page = list(_rows_one_by_one(session, where, order, last, page_size))
        if not page:
            return
        yield from page
        last = getattr(page[-1], order.name)
        if len(page) < page_size:
            return


def _rows_one_by_one(session: Session, where: Any, order: Any, last: int | None, page_size: int) -> Iterator[Any]:
    keys = select(_TABLE.c.seq, _TABLE.c.chain_seq).where(where).order_by(order).limit(page_size)
    if last is not None:
        keys = keys.where(order > last)
    for seq, chain_seq in session.execute(keys).all():
        try:
            yield session.execute(select(*_COLUMNS).where(_TABLE.c.seq == seq)).one()
        except DBAPIError:
            raise
        except Exception as exc:  # noqa: BLE001
            yield _Unreadable(seq, chain_seq, exc)


@dataclass
class _Walk:
    entries: int = 0
    head: tuple[int, int, str] | None = None  # position, seq, hash of the last intact entry
    keyed_from: int | None = None
    bad_seq: int | None = None
    problem: str | None = None


def _walk(session: Session, chain: Any, *, page_size: int, key: bytes | None, after: int, after_hash: str) -> _Walk:
    """Walk one chain from after position ``after`` (hash ``after_hash``) and stop at its first bad entry.

    Checks, entry by entry: the position (``seq`` in the pre-upgrade chain, ``chain_seq`` in a firm's)
    continues without a gap (a gap = entries removed); the entry's own hash matches its content (else it
    was altered, or moved — the position is hashed); its ``prev_hash`` is the previous entry's hash (else
    the previous entry was altered and re-hashed, or this entry's link was rewritten); with ``key``, its
    key mark (``mac``) — required from the chain's first keyed entry on; in a firm's chain, ``seq``
    increases (the database numbers entries in the order they are appended).
    """
    legacy = chain is _LEGACY
    state = _Walk()
    prev_pos, prev_hash, prev_seq = after, after_hash, 0
    heads: list[tuple[int, int, str] | None] = [None]

    def name(pos: int, seq: int | None = None) -> str:
        """An entry in messages: by ``seq`` when known (a missing one of a firm's chain by its place)."""
        if legacy:
            return f"entry #{pos}"
        return f"entry #{seq}" if seq is not None else f"#{pos} in the chain"

    seen = [0]

    def broken(bad_seq: int | None, problem: str, *, previous_bad: bool = False) -> _Walk:
        """``previous_bad``: the break is the last entry that looked intact (it was re-hashed)."""
        state.entries = max(0, seen[0] - (1 if previous_bad else 0))
        state.head = heads[-2] if previous_bad else heads[-1]
        state.bad_seq, state.problem = bad_seq, problem
        return state

    for row in _rows(session, page_size, chain, after=after or None):
        seq = row.seq
        pos = seq if legacy else row.chain_seq
        if pos != prev_pos + 1:
            missing = prev_pos + 1
            if pos == missing + 1:
                span, gone = f"{name(missing)} is", "it was removed or moved"
            else:
                span = (f"entries #{missing}–#{pos - 1} are" if legacy
                        else f"#{missing}–#{pos - 1} in the chain are")
                gone = "they were removed or moved"
            follower = f"entry #{seq} (#{pos} in the chain)"
            before = f"entry #{prev_seq} (#{prev_pos})" if prev_seq else f"#{prev_pos}"
            where = f"{follower} follows {before}" if prev_pos else f"the chain starts at {follower}"
            if legacy:
                where = f"entry #{seq} follows #{prev_pos}" if prev_pos else f"the log starts at #{seq}"
            return broken(missing if legacy else seq, f"{span} missing: {where}; {gone}")
        if isinstance(row, _Unreadable):
            return broken(seq, f"{name(pos, seq)} was altered: its stored values can no longer be read "
                               f"({type(row.error).__name__}: {row.error})")
        fields = {name_: getattr(row, name_) for name_ in _FIELDS}
        if not legacy:
            fields["seq"] = pos
        try:
            recomputed = entry_hash(**fields, v=1 if legacy else FORMAT)
        except (TypeError, ValueError, AttributeError) as exc:
            recomputed = None
            reason = f"its stored values are not valid for an entry ({exc})"
        else:
            reason = (f"its content no longer matches its hash (recorded {_short(row.hash)}, content "
                      f"hashes to {_short(recomputed)}); a field was changed, or it was moved from "
                      f"another position")
        if recomputed != row.hash:
            return broken(seq, f"{name(pos, seq)} was altered: {reason}")
        if key is not None:
            mark = getattr(row, "mac", None)
            if mark is not None and hmac.compare_digest(entry_mac(key, row.hash), str(mark)):
                state.keyed_from = state.keyed_from or seq
            elif mark is not None or state.keyed_from is not None or after:
                return broken(seq, f"{name(pos, seq)} was not written by propcrm: its key mark is "
                                   f"{'missing' if mark is None else 'wrong'} (a forged append, or an entry "
                                   "rewritten by someone without the audit key — or the key is not the log's)")
        if row.prev_hash != prev_hash:
            if prev_pos == 0:
                return broken(seq, f"{name(pos, seq)} should start the chain (previous hash of 64 zeros) but "
                                   f"records {_short(row.prev_hash)}; its link was rewritten")
            previous = heads[-1][1] if heads[-1] else None
            return broken(prev_pos if legacy else (previous or seq),
                          f"{name(prev_pos, None if legacy else previous)} was altered and its hash recomputed: "
                          f"{name(pos, seq)} recorded the previous hash as {_short(row.prev_hash)}, but "
                          f"{name(prev_pos, None if legacy else previous)} now hashes to {_short(prev_hash)} "
                          f"(or {name(pos, seq)}'s link was rewritten)", previous_bad=True)
        if not legacy and prev_seq and seq <= prev_seq:
            return broken(seq, f"{name(pos, seq)} was moved: it comes after entry #{prev_seq} in the chain but "
                               "carries a smaller number")
        seen[0] += 1
        prev_pos, prev_hash, prev_seq = pos, row.hash, seq
        heads = [heads[-1], (pos, seq, prev_hash)]
    state.entries = seen[0]
    state.head = heads[-1]
    return state


def chains(session: Session) -> list[str | None]:
    """The firms with a chain (None: the operators' chain), operators' first, then by firm id."""
    found = session.execute(select(_TABLE.c.firm_id).where(_TABLE.c.chain_seq.is_not(None)).distinct()).scalars()
    return sorted(set(found), key=lambda firm: (firm is not None, firm or ""))


def verify(session: Session, *, page_size: int = 1000, key: bytes | None = None, after_seq: int = 0,
           after_hash: str = GENESIS, after_chains: Mapping[str | None, tuple[int, str]] | None = None) -> VerifyResult:
    """Walk every chain — the pre-upgrade chain, then the operators', then each firm's — and stop each at
    its first entry that is not what was appended (see :func:`_walk`); report the first broken chain in
    ``first_bad_seq``/``problem``/``broken_firm`` and every broken one in ``problems``.

    Reads in pages of ``page_size``. ``after_seq``/``after_hash`` (the pre-upgrade chain) and
    ``after_chains`` (per firm: ``chain_seq`` and hash): start after entries already verified (the anchor
    writer checks only what is new); ``entries`` then counts from there. With ``key``, an entry without
    a key mark appended after the log's first keyed entry is refused in any chain (a whole chain forged
    without the key).
    """
    after_chains = after_chains or {}
    walks: list[tuple[Any, _Walk]] = [(_LEGACY, _walk(session, _LEGACY, page_size=page_size, key=key,
                                                         after=after_seq, after_hash=after_hash))]
    for firm_id in chains(session):
        start, start_hash = after_chains.get(firm_id, (0, GENESIS))
        walks.append((firm_id, _walk(session, firm_id, page_size=page_size, key=key, after=start,
                                     after_hash=start_hash)))
    keyed = [w.keyed_from for _, w in walks if w.keyed_from is not None]
    keyed_from = min(keyed) if keyed else None
    if key is not None and keyed_from is not None:  # an unkeyed entry after the first keyed one, in any chain
        late = session.execute(select(_TABLE.c.seq, _TABLE.c.firm_id, _TABLE.c.chain_seq)
                               .where(_TABLE.c.mac.is_(None), _TABLE.c.seq > keyed_from)
                               .order_by(_TABLE.c.seq).limit(1)).first()
        if late is not None:
            for chain, w in walks:
                if w.problem is None and ((chain is _LEGACY and late.chain_seq is None)
                                          or (chain is not _LEGACY and late.chain_seq is not None
                                              and chain == late.firm_id)):
                    w.bad_seq = late.seq
                    w.problem = (f"entry #{late.seq} was not written by propcrm: its key mark is missing, and "
                                 f"entry #{keyed_from} already carries one (a forged append, or an entry written "
                                 "by someone without the audit key)")
                    if w.head is not None and w.head[1] >= late.seq:  # the intact part ends before it
                        w.head, w.entries = None, 0
    problems = []
    first: tuple[Any, _Walk] | None = None
    for chain, w in walks:
        if w.problem is not None:
            label = "the pre-upgrade chain" if chain is _LEGACY else chain_name(chain)
            problems.append(f"{label}: {w.problem}")
            first = first or (chain, w)
    heads = {chain: (w.head[0], w.head[2]) for chain, w in walks if chain is not _LEGACY and w.head is not None}
    for chain, position in after_chains.items():
        heads.setdefault(chain, position)
    legacy_walk = walks[0][1]
    legacy_head = ((legacy_walk.head[0], legacy_walk.head[2]) if legacy_walk.head is not None
                   else ((after_seq, after_hash) if after_seq else None))
    newest = max((w.head for _, w in walks if w.head is not None), key=lambda head: head[1], default=None)
    result = VerifyResult(ok=not problems, entries=sum(w.entries for _, w in walks),
                          head_hash=newest[2] if newest else None, keyed_from=keyed_from, heads=heads,
                          legacy_head=legacy_head, problems=tuple(problems))
    if first is None:
        return result
    chain, w = first
    return replace(result, first_bad_seq=w.bad_seq, problem=w.problem,
                   broken_chain="the pre-upgrade chain" if chain is _LEGACY else chain_name(chain),
                   broken_firm=None if chain is _LEGACY else chain)
