"""Where an event goes on the bus: a stable partition per (firm, account), and the batch message format.

A partition is ``blake2b-64(firm_id + "\\x1f" + account) mod P``: the same on every ingest node, in
every process and Python version (``hash()`` is salted per process and would not do). P is fixed per
deployment and recorded in the stream's description; a worker refuses a stream whose P differs from
its own configuration, because a different P would move accounts between partitions and their
checkpoints.

Firm-wide events (``clock``, ``news``, ``price``) carry no account: they concern every account of the
firm, so ingestion puts a copy into *every* partition, at the same place relative to the account events
of that request. Each partition's stream is then, for its accounts, exactly the firm's stream that
``propcrm replay`` reads — which is why a partition's decisions equal replay's.

A message is one batch: the events' original NDJSON lines joined by ``\\n``, at most
:data:`MAX_MESSAGE_BYTES` (the server's default payload limit is 1 MiB), with headers naming the firm,
the source, the number of events and when the ingest node published it (for the event-to-decision
latency). ``Nats-Msg-Id`` is a digest of firm, source, partition and body, so a retried request
produces the same ids and JetStream stores each message once within its de-duplication window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

DEFAULT_PARTITIONS = 64
DEFAULT_STREAM = "PROPCRM_EVENTS"
MAX_MESSAGE_BYTES = 512 * 1024
MAX_MESSAGE_EVENTS = 2000

HEADER_FIRM = "Propcrm-Firm"
HEADER_SOURCE = "Propcrm-Source"
HEADER_COUNT = "Propcrm-Count"
HEADER_PUBLISHED = "Propcrm-Published-Ns"
HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_ONCE = "Propcrm-Once"
"""Set (to ``platform``) on the messages of a platform connector (features/platforms/store.BusStore): the
partition worker applies their events at most once by id, because a connector re-reads on purpose and
re-publishes a step after a crash between the publication and its cursor (cluster/partition.py)."""


def partition_of(firm_id: str, account: str, partitions: int) -> int:
    digest = hashlib.blake2b(f"{firm_id}\x1f{account}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def subject_of(stream: str, partition: int) -> str:
    return f"{stream.lower()}.p.{partition}"


def subjects_wildcard(stream: str) -> str:
    return f"{stream.lower()}.p.*"


def describe_partitions(partitions: int) -> str:
    return f"propcrm event log; partitions={partitions}"


def partitions_in_description(description: str | None) -> int | None:
    if not description or "partitions=" not in description:
        return None
    try:
        return int(description.rsplit("partitions=", 1)[1].split()[0].rstrip(";"))
    except ValueError:
        return None


@dataclass(frozen=True)
class BatchMessage:
    partition: int
    body: bytes
    count: int
    msg_id: str


def message_id(firm_id: str, source: str, partition: int, body: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in (firm_id.encode(), source.encode(), str(partition).encode()):
        h.update(part)
        h.update(b"\x00")
    h.update(body)
    return h.hexdigest()


def split_into_messages(
    firm_id: str,
    source: str,
    lines: Iterable[tuple[str | None, bytes]],
    partitions: int,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    max_events: int = MAX_MESSAGE_EVENTS,
) -> list[BatchMessage]:
    """``(account or None, raw line)`` in request order → messages per partition, order kept.

    An account-less (firm-wide) line goes to every partition. Within a partition the lines keep their
    request order, and a partition's messages are returned in order (publish them in that order).
    """
    per_partition: dict[int, list[bytes]] = {}
    cache: dict[str, int] = {}
    everyone = range(partitions)
    for account, raw in lines:
        if b"\n" in raw:  # a pretty-printed array element: a newline in valid JSON is only whitespace
            raw = raw.replace(b"\n", b" ")
        if account is None:
            for p in everyone:
                per_partition.setdefault(p, []).append(raw)
            continue
        p = cache.get(account)
        if p is None:
            p = cache[account] = partition_of(firm_id, account, partitions)
        per_partition.setdefault(p, []).append(raw)
    out: list[BatchMessage] = []
    for p in sorted(per_partition):
        for chunk in _chunks(per_partition[p], max_bytes, max_events):
            body = b"\n".join(chunk)
            out.append(BatchMessage(p, body, len(chunk), message_id(firm_id, source, p, body)))
    return out


def _chunks(lines: list[bytes], max_bytes: int, max_events: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    size = 0
    for raw in lines:
        if chunk and (size + len(raw) + 1 > max_bytes or len(chunk) >= max_events):
            yield chunk
            chunk, size = [], 0
        chunk.append(raw)
        size += len(raw) + 1
    if chunk:
        yield chunk


__all__ = [
    "BatchMessage",
    "DEFAULT_PARTITIONS",
    "DEFAULT_STREAM",
    "HEADER_COUNT",
    "HEADER_FIRM",
    "HEADER_MSG_ID",
    "HEADER_ONCE",
    "HEADER_PUBLISHED",
    "HEADER_SOURCE",
    "message_id",
    "partition_of",
    "split_into_messages",
    "subject_of",
]
