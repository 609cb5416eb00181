"""The audit log's key and its anchors outside the database.

A hash chain alone cannot show that its newest entries were removed, nor stop someone who can write to
the table from appending entries with valid hashes. Two things close that (docs/service.md, "Audit log"):

* **The audit key** (configuration, never in the database or any log): every entry carries
  HMAC-SHA256(key, its hash) (:func:`propcrm.services.audit.entry_mac`), so an entry appended without the
  key does not verify.
* **Anchors**: the serve process and the workers append, every ``PROPCRM_AUDIT_ANCHOR_INTERVAL`` seconds
  when the log has grown, one line to a file in the anchor directory — every chain's newest entry (per
  firm, and the operators' chain: ``chain_seq`` and ``hash``; the pre-upgrade chain's ``seq`` and
  ``hash``), when, by whom, and an HMAC of all that with the key. Lines of format 1 (written before
  migration 0027: ``seq``/``hash`` of the one global chain) are still read: they pin the pre-upgrade
  chain, whose entries the migration left untouched, so they check exactly. A line is written only after what is new
  since the previous anchor verified (chain and key marks), so an anchor never vouches for a forgery.
  ``propcrm audit verify`` checks every anchor with the key and the log against them: entries an anchor
  saw that are gone (the newest ones deleted) or changed are reported. Put the directory where the
  database's administrators cannot rewrite it (another host's mount, a write-once bucket the files are
  shipped to); what happens after the latest anchor is covered by the key marks alone.

Configuration, read once per process and database:

=====================================  ==================================================================
``PROPCRM_AUDIT_KEY``                  the key itself (at least 32 characters)
``PROPCRM_AUDIT_KEY_FILE``             a file holding the key (first line)
``PROPCRM_AUDIT_ANCHOR_DIR``           where anchors go
``PROPCRM_AUDIT_ANCHOR_INTERVAL``      seconds between anchors (default 60)
=====================================  ==================================================================

On the embedded SQLite default, without those, the key is the file ``audit.key`` beside the database
(``propcrm serve`` creates it, mode 0600, on its first start) and anchors go to ``audit-anchors/`` beside
it. Without a key nothing is keyed or anchored, and ``propcrm audit verify`` says so.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..adapters.db.models import AuditEntry
from . import audit
from .audit_config import (  # noqa: F401 - the configuration, re-exported: callers and tests read it from here
    ANCHOR_DIR, DIR_ENV, INTERVAL_ENV, KEY_ENV, KEY_FILE, KEY_FILE_ENV, MIN_KEY, AnchorConfig, AnchorConfigError,
    config_for, ensure_embedded_key, forget_configuration, read_key,
)

UTC = dt.timezone.utc
_LOG = AuditEntry.__table__
log = logging.getLogger("propcrm.audit")


# --------------------------------------------------------------------------------------------------
# anchor lines


@dataclass(frozen=True)
class Anchor:
    seq: int
    """The pre-upgrade chain's newest entry it saw (0: none)."""
    hash: str
    anchored_at: str
    key_id: str
    writer: str
    where: str
    """file:line, for messages"""
    chains: dict[str | None, tuple[int, str]] = field(default_factory=dict)
    """Format 2: each chain's newest entry it saw (firm id, None for the operators'): ``chain_seq``, hash."""
    order: int = 0
    """Position among the anchors read (files by name, lines in order): the newest is the highest."""


def _anchor_mac(key: bytes, record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "mac"}
    return hmac.new(key, audit.canonical_json(body), hashlib.sha256).hexdigest()


def read_anchors(directory: Path | None, key: bytes, *, files: list[Path] | None = None) -> tuple[list[Anchor], list[str]]:
    """Every anchor line in ``directory`` (``anchors-*.ndjson``; or in ``files``), checked with ``key``: the
    authentic anchors, and a problem for each line that is not (unreadable, altered, forged, another key)."""
    if directory is None or not directory.is_dir():
        return [], []
    if files is None:
        files = sorted(directory.glob("anchors-*.ndjson"))
    anchors, problems = [], []
    key_id = AnchorConfig(key=key, key_source=None, directory=None).key_id
    for path in files:
        try:
            lines = path.read_bytes().splitlines()
        except OSError as exc:
            problems.append(f"cannot read {path}: {type(exc).__name__}")
            continue
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                record = json.loads(raw)
                chains: dict[str | None, tuple[int, str]] = {}
                if record.get("v") == 2:
                    legacy = record["legacy"] or [0, ""]
                    seq, digest, mark = legacy[0], legacy[1], record["mac"]
                    for firm_id, chain_seq, chain_hash in record["chains"]:
                        if not (firm_id is None or isinstance(firm_id, str)) or not isinstance(chain_seq, int) \
                                or not isinstance(chain_hash, str):
                            raise ValueError("wrong types")
                        chains[firm_id] = (chain_seq, chain_hash)
                else:
                    seq, digest, mark = record["seq"], record["hash"], record["mac"]
                if not isinstance(seq, int) or not isinstance(digest, str) or not isinstance(mark, str):
                    raise ValueError("wrong types")
            except (ValueError, KeyError, TypeError):
                problems.append(f"anchor {where} cannot be read")
                continue
            if record.get("key_id") != key_id:
                problems.append(f"anchor {where} was made with another audit key (key id {record.get('key_id')!r}, "
                                f"this key's is {key_id!r})")
                continue
            if not hmac.compare_digest(_anchor_mac(key, record), mark):
                problems.append(f"anchor {where} is not authentic: its content does not match its MAC "
                                "(altered or forged)")
                continue
            anchors.append(Anchor(seq=seq, hash=digest, anchored_at=str(record.get("anchored_at")),
                                  key_id=key_id, writer=str(record.get("writer")), where=where, chains=chains,
                                  order=len(anchors)))
    return anchors, problems


def _latest_anchor(directory: Path, key: bytes) -> Anchor | None:
    """The newest authentic anchor, reading files from the newest back until one has an anchor (so a new
    day's empty file does not send the writer back to verifying the whole log)."""
    if not directory.is_dir():
        return None
    for path in sorted(directory.glob("anchors-*.ndjson"), reverse=True):
        anchors, _ = read_anchors(directory, key, files=[path])
        if anchors:
            return anchors[-1]  # lines are appended in time order
    return None


def _stored_hash(session: Session, firm_id: str | None, chain_seq: int) -> str | None:
    return session.execute(select(_LOG.c.hash).where(func.coalesce(_LOG.c.firm_id, "") == (firm_id or ""),
                                                     _LOG.c.chain_seq == chain_seq)).scalar()


def _append_line(directory: Path, record: dict, now: dt.datetime) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"anchors-{now.strftime('%Y-%m-%d')}.ndjson"
    line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(descriptor, line)  # one write of a short line with O_APPEND: never interleaved
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return path


@dataclass(frozen=True)
class AnchorOutcome:
    written: Anchor | None = None
    problem: str | None = None
    """Why no anchor was written when one was due (the log does not verify): an alarm."""


def write_anchor(session: Session, config: AnchorConfig, *, now: dt.datetime | None = None,
                 writer: str | None = None) -> AnchorOutcome:
    """Anchor the newest entry when the log has grown since the latest anchor, after checking what is
    new (chain and key marks) — never anchoring a log that does not verify."""
    if config.key is None or config.directory is None:
        return AnchorOutcome()
    latest = _latest_anchor(config.directory, config.key)
    after_seq, after_hash = 0, audit.GENESIS
    after_chains: dict[str | None, tuple[int, str]] = {}
    if latest is not None:
        if latest.seq:
            stored = session.execute(select(_LOG.c.hash).where(_LOG.c.seq == latest.seq,
                                                               _LOG.c.chain_seq.is_(None))).scalar()
            if stored != latest.hash:
                return AnchorOutcome(problem=f"entry #{latest.seq}, seen by anchor {latest.where}, is "
                                             f"{'gone' if stored is None else 'changed'}: run propcrm audit verify")
            after_seq, after_hash = latest.seq, latest.hash
        for firm_id, (chain_seq, digest) in latest.chains.items():
            stored = _stored_hash(session, firm_id, chain_seq)
            if stored != digest:
                return AnchorOutcome(problem=f"#{chain_seq} of {audit.chain_name(firm_id)}, seen by anchor "
                                             f"{latest.where}, is {'gone' if stored is None else 'changed'}: "
                                             "run propcrm audit verify")
        after_chains = dict(latest.chains)
    result = audit.verify(session, key=config.key, after_seq=after_seq, after_hash=after_hash,
                          after_chains=after_chains)
    if not result.ok:
        return AnchorOutcome(problem=f"the audit log does not verify at entry #{result.first_bad_seq} "
                                     f"({result.broken_chain}): {result.problem}")
    if result.entries == 0:
        return AnchorOutcome()  # nothing new
    if result.keyed_from is None and latest is None:
        return AnchorOutcome()  # nothing keyed yet: the first keyed entry starts the anchors
    now = (now or dt.datetime.now(UTC)).astimezone(UTC)
    legacy = list(result.legacy_head) if result.legacy_head else None
    record = {"v": 2, "legacy": legacy,
              "chains": [[firm_id, chain_seq, digest] for firm_id, (chain_seq, digest)
                         in sorted(result.heads.items(), key=lambda item: (item[0] is not None, item[0] or ""))],
              "anchored_at": audit.rfc3339(now), "key_id": config.key_id,
              "writer": writer or f"{socket.gethostname()}/{os.getpid()}"}
    record["mac"] = _anchor_mac(config.key, record)
    path = _append_line(config.directory, record, now)
    return AnchorOutcome(written=Anchor(seq=legacy[0] if legacy else 0, hash=legacy[1] if legacy else "",
                                        anchored_at=record["anchored_at"], key_id=record["key_id"],
                                        writer=record["writer"], where=path.name, chains=dict(result.heads)))


def anchor_loop(read_sessions: sessionmaker[Session], database_url: str, stop: threading.Event, *,
                first_delay: float = 0.0) -> None:
    """Write anchors every interval until ``stop`` (a thread of ``propcrm serve`` and of the workers);
    ``first_delay``: seconds to wait before the first (a worker that migrates the schema first)."""
    if first_delay and stop.wait(first_delay):
        return
    try:
        config = config_for(database_url)
    except AnchorConfigError as exc:
        log.error("audit anchoring is off: %s", exc)
        return
    if config.key is None or config.directory is None:
        log.warning("audit anchoring is off: no audit key configured (%s or %s); truncation of the newest "
                    "entries and forged appends cannot be detected", KEY_ENV, KEY_FILE_ENV)
        return
    log.info("audit anchors every %.0f s to %s (key %s from %s)", config.interval, config.directory,
             config.key_id, config.key_source)
    while True:
        try:
            with read_sessions() as session:
                outcome = write_anchor(session, config)
            if outcome.problem:
                log.error("audit log NOT anchored: %s", outcome.problem)
        except Exception:  # noqa: BLE001 - a failed anchor is retried at the next interval
            log.exception("writing an audit anchor failed; retrying")
        if stop.wait(config.interval):
            return


# --------------------------------------------------------------------------------------------------
# checking the log against the anchors


@dataclass(frozen=True)
class AnchorCheck:
    ok: bool
    anchors: int
    latest: Anchor | None
    problems: list[str]


def check_anchors(session: Session, config: AnchorConfig) -> AnchorCheck:
    """Every anchor authentic (MAC with the key), and every entry an anchor saw — in every chain — still in
    the log, unchanged."""
    assert config.key is not None
    anchors, problems = read_anchors(config.directory, config.key)
    if not anchors:
        return AnchorCheck(ok=not problems, anchors=0, latest=None, problems=problems)
    latest = max(anchors, key=lambda a: (a.anchored_at, a.order))
    # the pre-upgrade chain, by seq (format-1 anchors and format 2's "legacy")
    last_seq = session.execute(select(func.max(_LOG.c.seq)).where(_LOG.c.chain_seq.is_(None))).scalar() or 0
    legacy = [a for a in anchors if a.seq]
    if legacy:
        furthest = max(legacy, key=lambda a: a.seq)
        if furthest.seq > last_seq:
            first = last_seq + 1
            span = f"entry #{first} is" if first == furthest.seq else f"entries #{first}–#{furthest.seq} are"
            problems.append(f"{span} missing: anchor {furthest.where}, written {furthest.anchored_at}, saw the log up to "
                            f"#{furthest.seq} (hash {furthest.hash[:12]}…) and the log now ends at "
                            f"{'#' + str(last_seq) if last_seq else 'nothing'}; the newest entries were removed")
        wanted = sorted({a.seq for a in legacy if a.seq <= last_seq})
        stored: dict[int, str] = {}
        for start in range(0, len(wanted), 500):
            stored.update(session.execute(select(_LOG.c.seq, _LOG.c.hash).where(
                _LOG.c.seq.in_(wanted[start:start + 500]), _LOG.c.chain_seq.is_(None))).all())
        for anchor in sorted(legacy, key=lambda a: a.seq):
            if anchor.seq <= last_seq and stored.get(anchor.seq) != anchor.hash:
                what = "is missing" if anchor.seq not in stored else "is not the entry it saw"
                problems.append(f"entry #{anchor.seq} {what}: anchor {anchor.where}, written {anchor.anchored_at}, "
                                f"saw hash {anchor.hash[:12]}…; the log was rewritten from there")
                break
    # every chain of every format-2 anchor
    points: dict[str | None, dict[int, tuple[str, Anchor]]] = {}
    for anchor in anchors:
        for firm_id, (chain_seq, digest) in anchor.chains.items():
            points.setdefault(firm_id, {}).setdefault(chain_seq, (digest, anchor))
    for firm_id in sorted(points, key=lambda f: (f is not None, f or "")):
        name = audit.chain_name(firm_id)
        in_chain = func.coalesce(_LOG.c.firm_id, "") == (firm_id or "")
        tail = session.execute(select(func.max(_LOG.c.chain_seq)).where(in_chain)).scalar() or 0
        seen = points[firm_id]
        furthest_seq = max(seen)
        if furthest_seq > tail:
            digest, anchor = seen[furthest_seq]
            span = (f"#{furthest_seq} in the chain is" if tail + 1 == furthest_seq
                    else f"#{tail + 1}–#{furthest_seq} in the chain are")
            problems.append(f"{name}: {span} missing: anchor {anchor.where}, "
                            f"written {anchor.anchored_at}, saw the chain up to #{furthest_seq} (hash {digest[:12]}…) "
                            f"and it now ends at {'#' + str(tail) if tail else 'nothing'}; the newest entries were "
                            "removed")
        wanted = sorted(chain_seq for chain_seq in seen if chain_seq <= tail)
        stored_chain: dict[int, str] = {}
        for start in range(0, len(wanted), 500):
            stored_chain.update(session.execute(select(_LOG.c.chain_seq, _LOG.c.hash).where(
                in_chain, _LOG.c.chain_seq.in_(wanted[start:start + 500]))).all())
        for chain_seq in wanted:
            digest, anchor = seen[chain_seq]
            if stored_chain.get(chain_seq) != digest:
                what = "is missing" if chain_seq not in stored_chain else "is not the entry it saw"
                problems.append(f"{name}: #{chain_seq} in the chain {what}: anchor {anchor.where}, written "
                                f"{anchor.anchored_at}, saw hash {digest[:12]}…; the chain was rewritten from there")
                break
    return AnchorCheck(ok=not problems, anchors=len(anchors), latest=latest, problems=problems)


__all__ = ["Anchor", "AnchorCheck", "AnchorConfig", "AnchorConfigError", "AnchorOutcome", "anchor_loop",
           "check_anchors", "config_for", "ensure_embedded_key", "forget_configuration", "read_anchors",
           "write_anchor"]
