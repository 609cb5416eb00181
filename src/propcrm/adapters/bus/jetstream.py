"""NATS JetStream adapter: the partitioned event stream, batch publishing with de-duplication, and
partition leases in a key-value bucket.

Configuration (environment): ``PROPCRM_NATS_URL`` (setting it switches ingestion to the bus),
``PROPCRM_NATS_STREAM`` (default ``PROPCRM_EVENTS``), ``PROPCRM_PARTITIONS`` (default 64, fixed per
deployment), ``PROPCRM_NATS_DEDUPE_WINDOW`` (seconds, default 900), ``PROPCRM_NATS_MAX_AGE`` (seconds
the stream keeps events, default 7 days — a partition checkpoint must never be older than that),
``PROPCRM_LEASE_TTL`` (seconds, default 3).

nats-py is imported inside functions: the embedded mode never needs it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import NATS_URL_ENV, nats_url
from .partitions import (
    DEFAULT_PARTITIONS,
    DEFAULT_STREAM,
    HEADER_COUNT,
    HEADER_FIRM,
    HEADER_MSG_ID,
    HEADER_PUBLISHED,
    HEADER_SOURCE,
    BatchMessage,
    describe_partitions,
    partitions_in_description,
    split_into_messages,
    subjects_wildcard,
    subject_of,
)


class BusError(RuntimeError):
    """The bus is unreachable or refused a publish; the request may be retried as is."""


class BusConfigError(ValueError):
    """The deployment's bus configuration contradicts the stream that exists."""


@dataclass(frozen=True)
class BusConfig:
    url: str
    stream: str = DEFAULT_STREAM
    partitions: int = DEFAULT_PARTITIONS
    duplicate_window_s: float = 900.0
    max_age_s: float = 7 * 86400.0
    lease_ttl_s: float = 3.0
    publish_timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, url: str | None = None) -> BusConfig | None:
        if env is None:  # the process's settings (adapters/settings.current), not the environment now
            from ..settings import current

            env = current().env
        url = url or nats_url(env)
        if not url:
            return None
        stream = env.get("PROPCRM_NATS_STREAM", DEFAULT_STREAM)
        if not stream.replace("_", "").replace("-", "").isalnum():
            raise BusConfigError(f"PROPCRM_NATS_STREAM must be letters, digits, _ and -, got {stream!r}")
        try:
            partitions = int(env.get("PROPCRM_PARTITIONS", DEFAULT_PARTITIONS))
            window = float(env.get("PROPCRM_NATS_DEDUPE_WINDOW", 900))
            max_age = float(env.get("PROPCRM_NATS_MAX_AGE", 7 * 86400))
            ttl = float(env.get("PROPCRM_LEASE_TTL", 3))
        except ValueError as exc:
            raise BusConfigError(f"bus configuration: {exc}") from None
        if not 1 <= partitions <= 4096:
            raise BusConfigError(f"PROPCRM_PARTITIONS must be 1..4096, got {partitions}")
        if ttl < 1:
            raise BusConfigError(f"PROPCRM_LEASE_TTL must be at least 1 second, got {ttl}")
        return cls(url=url, stream=stream, partitions=partitions, duplicate_window_s=min(window, max_age),
                   max_age_s=max_age, lease_ttl_s=ttl)

    @property
    def leases_bucket(self) -> str:
        return f"{self.stream}_LEASES"

    @property
    def commits_subject(self) -> str:
        """Core-NATS subject where workers announce committed positions (for benchmarks and tooling)."""
        return f"{self.stream.lower()}.committed"

    def subject(self, partition: int) -> str:
        return subject_of(self.stream, partition)

    def as_env(self) -> dict[str, str]:
        return {NATS_URL_ENV: self.url, "PROPCRM_NATS_STREAM": self.stream,
                "PROPCRM_PARTITIONS": str(self.partitions), "PROPCRM_NATS_DEDUPE_WINDOW": str(self.duplicate_window_s),
                "PROPCRM_NATS_MAX_AGE": str(self.max_age_s), "PROPCRM_LEASE_TTL": str(self.lease_ttl_s)}


async def connect(config: BusConfig, *, name: str = "propcrm", **options: Any):
    """A NATS connection and its JetStream context; the stream exists (and has our P) afterwards."""
    import nats

    try:
        nc = await nats.connect(config.url, name=name, connect_timeout=5, max_reconnect_attempts=-1,
                                reconnect_time_wait=0.5, **options)
    except Exception as exc:  # noqa: BLE001 - any failure to connect is "unreachable"
        raise BusError(f"NATS at {safe_url(config.url)} is not reachable: {type(exc).__name__}: {exc}") from None
    js = nc.jetstream(timeout=config.publish_timeout_s)
    await ensure_stream(js, config)
    return nc, js


async def ensure_stream(js, config: BusConfig) -> None:
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(config.stream)
    except NotFoundError:
        info = None
    if info is not None:
        existing = partitions_in_description(info.config.description)
        if existing is not None and existing != config.partitions:
            raise BusConfigError(f"stream {config.stream} has {existing} partitions, this process is configured "
                                 f"for {config.partitions} (PROPCRM_PARTITIONS); P is fixed per deployment")
        return
    try:
        await js.add_stream(StreamConfig(
            name=config.stream,
            description=describe_partitions(config.partitions),
            subjects=[subjects_wildcard(config.stream)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=config.max_age_s,
            duplicate_window=config.duplicate_window_s,
        ))
    except Exception as exc:  # noqa: BLE001 - a concurrent creator won: check it is ours
        try:
            info = await js.stream_info(config.stream)
        except Exception:  # noqa: BLE001
            raise BusError(f"cannot create stream {config.stream}: {exc}") from None
        existing = partitions_in_description(info.config.description)
        if existing != config.partitions:
            raise BusConfigError(f"stream {config.stream} exists with partitions={existing}") from None


async def delete_stream(js, config: BusConfig) -> None:
    """Remove the stream and the lease bucket (tests and benchmarks clean up after themselves)."""
    for name in (config.stream, f"KV_{config.leases_bucket}"):
        try:
            await js.delete_stream(name)
        except Exception:  # noqa: BLE001 - already gone
            pass


@dataclass(frozen=True)
class Published:
    message: BatchMessage
    seq: int
    duplicate: bool


class EventPublisher:
    """Publishes a request's events as batch messages; every partition's messages in order.
    ``headers``: added to every message (a platform connector's :data:`~.partitions.HEADER_ONCE`)."""

    def __init__(self, js, config: BusConfig, *, headers: Mapping[str, str] | None = None) -> None:
        self.js = js
        self.config = config
        self.headers = dict(headers or {})

    async def publish(self, firm_id: str, source: str, lines: Iterable[tuple[str | None, bytes]]) -> list[Published]:
        messages = split_into_messages(firm_id, source, lines, self.config.partitions)
        return await self.publish_messages(firm_id, source, messages)

    async def publish_messages(self, firm_id: str, source: str, messages: list[BatchMessage]) -> list[Published]:
        if not messages:
            return []
        published_ns = str(time.time_ns())
        futures = []
        try:
            # Sent one after another on one connection: the server stores them in this order.
            for message in messages:
                futures.append(await self.js.publish_async(
                    self.config.subject(message.partition),
                    message.body,
                    headers={HEADER_MSG_ID: message.msg_id, HEADER_FIRM: firm_id, HEADER_SOURCE: source,
                             HEADER_COUNT: str(message.count), HEADER_PUBLISHED: published_ns, **self.headers},
                    wait_stall=self.config.publish_timeout_s,
                ))
            acks = await asyncio.wait_for(asyncio.gather(*futures), timeout=self.config.publish_timeout_s)
        except asyncio.TimeoutError:
            for future in futures:
                future.cancel()
            raise BusError("JetStream did not acknowledge the batch in time; retry the request as is") from None
        except Exception as exc:  # noqa: BLE001 - connection lost, stream missing, …
            for future in futures:
                future.cancel()
            raise BusError(f"publishing to JetStream failed: {type(exc).__name__}: {exc}") from None
        return [Published(m, ack.seq, bool(ack.duplicate)) for m, ack in zip(messages, acks)]


def event_message_id(firm_id: str, source: str, event_id: str) -> str:
    """The de-duplication id of one event the system itself publishes (a payout's withdrawal, a
    re-submitted line): derived from the event's identity alone, so every re-publication of it — a
    dispatcher retry, a second dispatcher, a re-submit — is the same message to JetStream."""
    return f"event:{firm_id}:{source}:{event_id}"


def publish_event(config: BusConfig, *, firm_id: str, source: str, account: str | None, line: bytes,
                  event_id: str) -> Published:
    """Publish one event line to its account's partition (synchronously: for the outbox dispatcher and
    other rare, non-hot-path writers), with :func:`event_message_id` as ``Nats-Msg-Id``. Raises
    :class:`BusError` when the bus did not take it (retry as is)."""
    from .partitions import partition_of

    partitions = range(config.partitions) if account is None else [partition_of(firm_id, account, config.partitions)]
    body = line.rstrip(b"\n").replace(b"\n", b" ")
    msg_id = event_message_id(firm_id, source, event_id)
    messages = [BatchMessage(p, body, 1, msg_id if account is not None else f"{msg_id}:{p}") for p in partitions]

    async def go() -> list[Published]:
        nc, js = await connect(config, name="propcrm-publish")
        try:
            return await EventPublisher(js, config).publish_messages(firm_id, source, messages)
        finally:
            await nc.close()

    return asyncio.run(go())[0]


class Leases:
    """Partition leases and worker membership in a NATS KV bucket whose entries expire after the TTL.

    ``member.<worker>`` is a worker's heartbeat; ``part.<n>`` names the worker that owns partition n.
    Taking a lease is ``create`` (only when nobody holds it), keeping it is ``update`` on the revision
    the holder last wrote (compare-and-set), giving it up is ``delete`` on that revision. A worker that
    stops heartbeating loses both keys when the bucket's TTL passes, and the partition becomes free.
    """

    def __init__(self, kv) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js, config: BusConfig) -> Leases:
        from nats.js.api import KeyValueConfig
        from nats.js.errors import BucketNotFoundError

        try:
            kv = await js.key_value(config.leases_bucket)
        except BucketNotFoundError:
            try:
                kv = await js.create_key_value(KeyValueConfig(bucket=config.leases_bucket, history=1,
                                                              ttl=config.lease_ttl_s))
            except Exception:  # noqa: BLE001 - a concurrent creator won
                kv = await js.key_value(config.leases_bucket)
        return cls(kv)

    async def heartbeat(self, worker_id: str, info: dict) -> None:
        await self.kv.put(f"member.{worker_id}", json.dumps(info).encode())

    async def _keys(self, prefix: str) -> list[str]:
        from nats.js.errors import NoKeysError

        try:
            keys = await self.kv.keys()  # server 2.9 ignores key filters: filter here
        except NoKeysError:
            return []
        return [k for k in keys if k.startswith(prefix)]

    async def members(self) -> list[str]:
        return sorted(k.split(".", 1)[1] for k in await self._keys("member."))

    async def owners(self) -> dict[int, str]:
        out = {}
        for key in await self._keys("part."):
            try:
                entry = await self.kv.get(key)
            except Exception:  # noqa: BLE001 - expired between listing and reading
                continue
            if entry.value:
                out[int(key.split(".", 1)[1])] = entry.value.decode()
        return out

    async def acquire(self, partition: int, worker_id: str) -> int | None:
        try:
            return await self.kv.create(f"part.{partition}", worker_id.encode())
        except Exception:  # noqa: BLE001 - held by someone else
            return None

    async def renew(self, partition: int, worker_id: str, revision: int) -> int | None:
        try:
            return await self.kv.update(f"part.{partition}", worker_id.encode(), last=revision)
        except Exception:  # noqa: BLE001 - lost: expired and taken, or deleted
            return None

    async def release(self, partition: int, revision: int) -> None:
        try:
            await self.kv.delete(f"part.{partition}", last=revision)
        except Exception:  # noqa: BLE001 - already gone; nothing to give back
            pass


def safe_url(url: str) -> str:
    """A NATS URL without credentials, for messages."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://…@{rest.split('@', 1)[1]}"
    return url


__all__ = ["BusConfig", "BusConfigError", "BusError", "EventPublisher", "Leases", "Published", "connect", "safe_url",
           "delete_stream", "ensure_stream", "event_message_id", "publish_event"]
