"""The outbox dispatcher: the effects of decisions, delivered to the world at least once.

The evaluation worker (and overrides) write outbox rows in the same transaction as the decisions
that cause them. The dispatcher delivers them after commit:

``platform_command``
    to the account's platform through a :class:`~propcrm.adapters.platforms.PlatformConnector`
    (``disable``, ``enable``, ``pause``, ``resume``, ``create_account``). The command carries the
    row's ``dedupe_key`` as ``idempotency_key`` so a bridge can drop a repeat.
``bus_event``
    an event line (a payout's withdrawal) published to its account's partition of the scale-out
    event log (``PROPCRM_NATS_URL``), ``Nats-Msg-Id`` derived from the event's id: the event is in the
    log once however often the row is delivered, and the partition worker applies it once by its id.
``notify``
    fanned out in one transaction: in-app notifications for the firm's admin and risk users and
    the trader's own user, plus one new row per e-mail recipient (``notify_email``: the trader,
    the risk desk) and one for the firm's webhook (``notify_webhook``), each retried on its own so
    a dead SMTP server never re-sends a webhook that already arrived.

**Per firm.** E-mail and webhook go through the firm's own settings (SMTP server, sender, risk desk,
webhook URL and secret: services/firms.py) where it has them, else through the process's defaults from the
environment; they are looked up for every message (a cache keyed by the settings' ``updated_at``), so a
change made on the firm's settings page applies to the next message without a restart.

**Claiming.** A short transaction selects due rows (``status = 'pending' AND next_attempt_at <=
now``; on PostgreSQL ``FOR UPDATE SKIP LOCKED``, on SQLite under the database's single write lock),
counts the attempt (``attempts + 1``) and leases each row by moving ``next_attempt_at`` to ``now +
lease``; it commits *before* any network I/O, so no lock is held while a platform answers. A row is
then finished in its own transaction — ``sent`` (with ``sent_at``), rescheduled with exponential
backoff and jitter, or ``dead`` after ``max_attempts`` — only if its ``attempts`` is still the
claimed value: if this dispatcher was so slow that its lease ran out and another one re-claimed
the row, the later claim owns it. A dispatcher killed mid-delivery loses nothing: its leased rows
come due again when the lease ends (at least once; hence the idempotency key).

**Platform commands first.** A pass claims due platform commands before other rows (then by id): a
breach's ``disable`` never waits behind a batch of e-mails to a slow SMTP server or webhooks, because
the time from a breach to the platform refusing the account's orders is what limits a trader's
further losses (issue 20). Notifications keep their order among themselves. A command committed
while a pass works through a batch of notifications does not wait for the batch's end either: when
outbox rows were committed meanwhile (:data:`~.wakeup.OUTBOX`, which other processes' commits reach
through :func:`~.wakeup.listen_outbox` on PostgreSQL), the pass claims due commands before its next
notification.

**Order per account.** Platform commands for one account are delivered in the order they were
written: a command waits while an earlier command for the same account is still pending and
either due or already tried (in flight, or failing and backing off). So a ``resume`` never
overtakes a ``pause`` that could not be delivered yet, nor an ``enable`` a ``disable``. A
``resume`` not yet due does not hold back later commands; and a ``resume`` is not sent to an
account that has meanwhile been breached, suspended or closed — it is ``cancelled`` instead.
So a claim holds at most one command per account, and on PostgreSQL the claimed commands of different
accounts are delivered side by side (``command_workers`` threads; a burst of breaches' disables
no longer queue one behind the other's platform round trips); SQLite delivers them one at a time.

**Audit.** Every row's final status is audited with :func:`services.audit.append` in the same
transaction: ``platform.<command>`` for a delivered platform command, ``notification.sent`` /
``notification.email`` / ``notification.webhook``, ``platform.cancelled`` and ``outbox.dead``.

**Time** comes from ``run_once(now=…)`` (tests pass it), otherwise the wall clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, exists, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from ..adapters.db import models as m
from ..adapters.delivery import DeliveryError, safe_url
from ..adapters.notify import EmailNotifier, WebhookNotifier, add_in_app, notice_of
from ..adapters.platforms import LoggingConnector, PlatformConnector, SignedWebhookConnector
from . import audit, firms
from ..adapters.db.models_tenants import FirmSettings
from ..adapters.logs import configure_logging
from ..adapters.settings import Delivery, Settings, SettingsError
from ..adapters.settings import current as current_settings

log = logging.getLogger("propcrm.dispatch")

UTC = dt.timezone.utc
ACTOR = "dispatcher"
ANY_PLATFORM = "*"
"""Key of ``connectors`` used for platforms without a connector of their own."""
RESUME_CANCELLED_WHEN = ("breached", "suspended", "halted", "closed")  # halted: a kill switch (services/halts.py)
ERROR_LIMIT = 500
DEDUPE_LIMIT = 200  # outbox.dedupe_key is VARCHAR(200)


class DispatchConfigError(ValueError):
    """The dispatcher's configuration (environment) is incomplete or contradictory."""


@dataclass
class DispatchReport:
    claimed: int = 0
    delivered: int = 0
    """Rows marked ``sent`` (a ``notify`` row counts once its fan-out is written)."""
    failed: int = 0
    """Attempts that failed and were rescheduled."""
    dead: int = 0
    cancelled: int = 0
    lost: int = 0
    """Claims another dispatcher took over after this one's lease ran out (nothing was recorded)."""
    notifications: int = 0
    """In-app notifications written."""
    seconds: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, other: DispatchReport) -> None:
        for name in ("claimed", "delivered", "failed", "dead", "cancelled", "lost", "notifications"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.seconds += other.seconds
        for kind, n in other.by_kind.items():
            self.by_kind[kind] = self.by_kind.get(kind, 0) + n


@dataclass(frozen=True)
class _Claim:
    id: int
    firm_id: str
    kind: str
    payload: dict[str, Any]
    dedupe_key: str
    attempts: int
    """The attempt this claim is (1 for the first)."""


_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_URL_QUERY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s?#]*)[?#][^\s]*")


def describe_error(exc: BaseException) -> str:
    """What went wrong, fit for ``last_error`` and logs: no URL credentials or query strings, bounded."""
    text = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
    text = _URL_QUERY.sub(r"\1", _URL_USERINFO.sub(r"\1", text))
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 1] + "…"


#: ``Dispatcher(bus=...)`` default: the bus of the process's settings (``adapters/settings.current()``)
PROCESS_BUS: Any = object()


class Dispatcher:
    """Delivers due outbox rows. Any number of dispatchers may run side by side (see the module doc)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        connectors: Mapping[str, PlatformConnector],
        email: EmailNotifier | None = None,
        webhook: WebhookNotifier | None = None,
        max_attempts: int = 8,
        base_delay_s: float = 2,
        max_delay_s: float = 3600,
        batch: int = 50,
        lease_s: float = 600,
        max_rows: int = 1000,
        bus: Any = PROCESS_BUS,
        command_workers: int = 4,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if batch < 1 or max_rows < 1:
            raise ValueError("batch and max_rows must be at least 1")
        self.sessions = session_factory
        self.connectors = dict(connectors)
        self.email = email
        self.webhook = webhook
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.batch = batch
        self.lease = dt.timedelta(seconds=lease_s)
        self.max_rows = max_rows
        #: the scale-out event log bus events go to (a ``BusConfig``; ``None``: none), by default the process's
        self.bus = bus
        #: platform commands of different accounts delivered side by side (PostgreSQL; :meth:`_deliver_commands`)
        self.command_workers = max(1, int(command_workers))
        self._pool: Any = None
        self._firm_channels: dict[str, tuple[Any, tuple[EmailNotifier | None, WebhookNotifier | None]]] = {}

    def channels(self, session: Session, firm_id: str) -> tuple[EmailNotifier | None, WebhookNotifier | None]:
        """The firm's e-mail and webhook channels: its own settings over the process's (services/firms.py)."""
        row = session.get(FirmSettings, firm_id)
        stamp = row.updated_at if row is not None else None
        cached = self._firm_channels.get(firm_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        channels = firms.channels_for(row, email=self.email, webhook=self.webhook)
        old = cached[1][1] if cached is not None else None
        if old is not None and old is not self.webhook and old is not channels[1]:
            old.close()
        self._firm_channels[firm_id] = (stamp, channels)
        return channels

    # ------------------------------------------------------------------ public
    def run_once(self, now: dt.datetime | None = None) -> DispatchReport:
        """Deliver what is due at ``now`` (up to ``max_rows`` rows), including what a fan-out adds."""
        started = time.perf_counter()
        now = (now or dt.datetime.now(UTC)).astimezone(UTC)
        report = DispatchReport()
        from .wakeup import OUTBOX

        while report.claimed < self.max_rows:
            seen = OUTBOX.generation
            claims = self._claim(now, min(self.batch, self.max_rows - report.claimed))
            if not claims:
                break
            report.claimed += len(claims)
            commands = [c for c in claims if c.kind == "platform_command"]
            if commands:
                report.by_kind["platform_command"] = report.by_kind.get("platform_command", 0) + len(commands)
                self._deliver_commands(commands, now, report)
            for claim in claims:
                if claim.kind == "platform_command":
                    continue
                if OUTBOX.generation != seen:
                    # outbox rows were committed meanwhile (a worker's breach, woken across processes by
                    # NOTIFY): its command goes before the rest of this batch of notifications
                    seen = OUTBOX.generation
                    urgent = self._claim(now, self.batch, commands_only=True)
                    if urgent:
                        report.claimed += len(urgent)
                        report.by_kind["platform_command"] = report.by_kind.get("platform_command", 0) + len(urgent)
                        self._deliver_commands(urgent, now, report)
                report.by_kind[claim.kind] = report.by_kind.get(claim.kind, 0) + 1
                self._deliver(claim, now, report)
        report.seconds = time.perf_counter() - started
        return report

    def _deliver_commands(self, claims: list[_Claim], now: dt.datetime, report: DispatchReport) -> None:
        """Claimed platform commands, those of different accounts side by side (``command_workers``
        threads; SQLite: one at a time, it has one writer), those of one account one after the other in
        claim order; returns when all are finished. A command is mostly waiting for its platform (a
        ``disable`` on the MT5 Web API: the user read, the rights update, the positions read, a close
        request per position and its result), so in a burst of breaches the last account's ``disable``
        no longer waits for every one before it (issue 20)."""
        lanes: dict[tuple[str, str], list[_Claim]] = {}
        for claim in claims:  # a claim holds at most one command per account; a lane keeps order if not
            lanes.setdefault((claim.firm_id, str(claim.payload.get("account"))), []).append(claim)
        if len(lanes) == 1 or self.command_workers == 1 or self._single_writer():
            for claim in claims:
                self._deliver(claim, now, report)
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.command_workers, thread_name_prefix="dispatch-command")

        def lane(items: list[_Claim]) -> DispatchReport:
            own = DispatchReport()  # one per thread: merged below, never shared while in flight
            for item in items:
                self._deliver(item, now, own)
            return own

        for future in [self._pool.submit(lane, items) for items in lanes.values()]:
            report.add(future.result())

    def _single_writer(self) -> bool:
        bind = self.sessions.kw.get("bind")
        return bind is None or bind.dialect.name == "sqlite"

    def retry_delay(self, attempts: int, row_id: int) -> dt.timedelta:
        """Wait after failed attempt number ``attempts``: ``base · 2^(attempts−1)``, capped, plus up to
        25% jitter that is deterministic in the row and the attempt (so dispatchers agree and tests
        can predict it) yet spreads rows that failed together."""
        exponent = min(max(attempts - 1, 0), 40)
        delay = min(self.base_delay_s * (2 ** exponent), self.max_delay_s)
        digest = hashlib.sha256(f"{row_id}:{attempts}".encode()).digest()
        jitter = int.from_bytes(digest[:8], "big") / 2**64 * 0.25
        return dt.timedelta(seconds=delay * (1 + jitter))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        own = [hook for _, (_, hook) in self._firm_channels.values() if hook is not None and hook is not self.webhook]
        for thing in [*self.connectors.values(), self.email, self.webhook, *own]:
            closer = getattr(thing, "close", None)
            if callable(closer):
                closer()

    # ------------------------------------------------------------------ claiming
    def _claim(self, now: dt.datetime, limit: int, *, commands_only: bool = False) -> list[_Claim]:
        o = m.OutboxMessage
        earlier = aliased(m.OutboxMessage)
        held_back = exists().where(
            earlier.firm_id == o.firm_id,
            earlier.kind == "platform_command",
            earlier.status == "pending",
            earlier.id < o.id,
            earlier.payload["account"].as_string() == o.payload["account"].as_string(),
            or_(earlier.attempts > 0, earlier.next_attempt_at <= now),
        )
        query = (
            select(o.id, o.firm_id, o.kind, o.payload, o.dedupe_key, o.attempts)
            .where(o.status == "pending", o.next_attempt_at <= now, or_(o.kind != "platform_command", ~held_back))
            .order_by(case((o.kind == "platform_command", 0), else_=1), o.id)  # commands first: module doc
            .limit(limit)
        )
        if commands_only:
            query = query.where(o.kind == "platform_command")
        with self.sessions.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=o)
            rows = session.execute(query).all()
            if not rows:
                return []
            session.execute(
                update(o)
                .where(o.id.in_([r.id for r in rows]))
                .values(attempts=o.attempts + 1, next_attempt_at=now + self.lease)
                .execution_options(synchronize_session=False)
            )
        return [
            _Claim(id=r.id, firm_id=r.firm_id, kind=r.kind, payload=dict(r.payload or {}), dedupe_key=r.dedupe_key,
                   attempts=r.attempts + 1)
            for r in rows
        ]

    @staticmethod
    def _take(session: Session, claim: _Claim, **values: Any) -> bool:
        """Record an outcome if the claim is still ours (nobody re-claimed the row since)."""
        o = m.OutboxMessage
        result = session.execute(
            update(o)
            .where(o.id == claim.id, o.status == "pending", o.attempts == claim.attempts)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    # ------------------------------------------------------------------ delivering
    def _deliver(self, claim: _Claim, now: dt.datetime, report: DispatchReport) -> None:
        try:
            if claim.kind == "platform_command":
                self._platform_command(claim, now, report)
            elif claim.kind == "notify":
                self._fan_out(claim, now, report)
            elif claim.kind == "notify_email":
                self._email(claim, now, report)
            elif claim.kind == "notify_webhook":
                self._webhook(claim, now, report)
            elif claim.kind == "bus_event":
                self._bus_event(claim, now, report)
            else:
                raise DeliveryError(f"no delivery for outbox kind {claim.kind!r}")
        except Exception as exc:  # noqa: BLE001 - any failure is recorded on the row and retried
            self._failed(claim, now, describe_error(exc), report)

    def _platform_command(self, claim: _Claim, now: dt.datetime, report: DispatchReport) -> None:
        payload = claim.payload
        command = str(payload.get("command") or "")
        account = payload.get("account")
        if command == "resume":
            status = self._account_status(claim.firm_id, account)
            if status in RESUME_CANCELLED_WHEN:
                self._cancelled(claim, now, f"account is {status}: trading must not resume", report)
                return
        platform = str(payload.get("platform") or "")
        connector = self.connectors.get(platform) or self.connectors.get(ANY_PLATFORM)
        if connector is None:
            raise DeliveryError(f"no connector for platform {platform!r}")
        connector.send({**payload, "firm": claim.firm_id, "idempotency_key": claim.dedupe_key})
        self._sent(
            claim, now, report,
            action=f"platform.{command or 'command'}", entity="account", entity_id=account,
            after={"outbox": claim.id, "command": command, "platform": platform,
                   "idempotency_key": claim.dedupe_key, "attempt": claim.attempts,
                   **({"until": payload["until"]} if payload.get("until") else {})},
        )

    def _bus_event(self, claim: _Claim, now: dt.datetime, report: DispatchReport) -> None:
        """An event the system wrote in its own transaction (a payout's withdrawal), published to its
        account's partition of the scale-out event log with a de-duplication id of the event's own
        identity: a retry after a lost answer is the same message, and the partition worker applies the
        event once by its id even past the stream's de-duplication window."""
        from ..adapters.bus.jetstream import BusConfig, publish_event

        config = BusConfig.from_env() if self.bus is PROCESS_BUS else self.bus
        if config is None:
            raise DeliveryError("a bus event needs the scale-out event log (PROPCRM_NATS_URL is not set)")
        payload = claim.payload
        published = publish_event(config, firm_id=claim.firm_id, source=str(payload["source"]),
                                  account=payload.get("account"), line=str(payload["line"]).encode(),
                                  event_id=str(payload["event_id"]))
        self._sent(claim, now, report, action="event.published", entity="event", entity_id=payload["event_id"],
                   after={"outbox": claim.id, "source": payload["source"], "account": payload.get("account"),
                          "stream_seq": published.seq, "duplicate": published.duplicate, "attempt": claim.attempts})

    def _fan_out(self, claim: _Claim, now: dt.datetime, report: DispatchReport) -> None:
        """One ``notify`` row → in-app rows now, and an outbox row per e-mail recipient and webhook."""
        payload = claim.payload
        notice = notice_of(payload)
        trader_id = payload.get("trader_id")
        with self.sessions.begin() as session:
            if not self._take(session, claim, status="sent", sent_at=now):
                report.lost += 1
                return
            firm = session.get(m.Firm, claim.firm_id)
            firm_name = firm.name if firm is not None else claim.firm_id
            in_app = add_in_app(session, firm_id=claim.firm_id, trader_id=trader_id, notice=notice, now=now)
            audiences: list[str] = []
            email, webhook = self.channels(session, claim.firm_id)
            if email is not None:
                for address, audience in self._email_recipients(session, claim, trader_id, email):
                    self._add_row(session, claim, now, kind="notify_email", suffix=f"email:{audience}",
                                  payload={**payload, "to": address, "audience": audience, "firm_name": firm_name})
                    audiences.append(audience)
            if webhook is not None:
                self._add_row(session, claim, now, kind="notify_webhook", suffix="webhook",
                              payload={**payload, "firm_name": firm_name})
            audit.append(
                session, actor=ACTOR, action="notification.sent", entity="account", entity_id=payload.get("account"),
                after={"outbox": claim.id, "kind": payload.get("kind"), "decision": payload.get("decision"),
                       "in_app": in_app, "email": audiences, "webhook": webhook is not None},
                firm_id=claim.firm_id, ts=now,
            )
        report.delivered += 1
        report.notifications += in_app

    def _email_recipients(self, session: Session, claim: _Claim, trader_id: Any,
                          email: EmailNotifier) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if email.notify_traders and isinstance(trader_id, int):
            trader = session.get(m.Trader, trader_id)
            if trader is not None and trader.firm_id == claim.firm_id and trader.email:
                out.append((trader.email, "trader"))
        if email.risk_address and claim.payload.get("kind") in email.risk_kinds:
            out.append((email.risk_address, "risk"))
        return out

    @staticmethod
    def _add_row(session: Session, claim: _Claim, now: dt.datetime, *, kind: str, suffix: str, payload: dict) -> None:
        key = f"{claim.dedupe_key}:{suffix}"
        if len(key) > DEDUPE_LIMIT:
            key = f"outbox:{claim.id}:{suffix}"
        session.add(m.OutboxMessage(firm_id=claim.firm_id, kind=kind, payload=payload, dedupe_key=key,
                                    status="pending", attempts=0, next_attempt_at=now, created_at=now))

    def _channels_of(self, firm_id: str) -> tuple[EmailNotifier | None, WebhookNotifier | None]:
        with self.sessions() as session:
            return self.channels(session, firm_id)

    def _email(self, claim: _Claim, now: dt.datetime, report: DispatchReport) -> None:
        email = self._channels_of(claim.firm_id)[0]
        if email is None:
            raise DeliveryError("e-mail is not configured (the firm's SMTP settings, or PROPCRM_SMTP_HOST)")
        payload = claim.payload
        notice = notice_of(payload)
        firm_name = payload.get("firm_name") or claim.firm_id
        email.send(to=str(payload["to"]), subject=f"[{firm_name}] {notice.title}", body=notice.body,
                   idempotency_key=claim.dedupe_key)
        self._sent(
            claim, now, report, action="notification.email", entity="account", entity_id=payload.get("account"),
            after={"outbox": claim.id, "audience": payload.get("audience"), "kind": payload.get("kind"),
                   "decision": payload.get("decision"), "attempt": claim.attempts},
        )

    def _webhook(self, claim: _Claim, now: dt.datetime, report: DispatchReport) -> None:
        webhook = self._channels_of(claim.firm_id)[1]
        if webhook is None:
            raise DeliveryError("the firm webhook is not configured (the firm's settings, or PROPCRM_FIRM_WEBHOOK_URL)")
        payload = claim.payload
        notice = notice_of(payload)
        document = {
            "type": "notification",
            "idempotency_key": claim.dedupe_key,
            "firm": claim.firm_id,
            "title": notice.title,
            **{name: payload.get(name) for name in
               ("account", "platform", "login", "kind", "rule", "message", "decision", "trader_id")},
        }
        webhook.send(document)
        self._sent(
            claim, now, report, action="notification.webhook", entity="account", entity_id=payload.get("account"),
            after={"outbox": claim.id, "kind": payload.get("kind"), "decision": payload.get("decision"),
                   "attempt": claim.attempts},
        )

    # ------------------------------------------------------------------ outcomes
    def _sent(self, claim: _Claim, now: dt.datetime, report: DispatchReport, *, action: str, entity: str,
              entity_id: Any, after: dict) -> None:
        with self.sessions.begin() as session:
            if not self._take(session, claim, status="sent", sent_at=now):
                report.lost += 1
                log.warning("outbox #%s was delivered, but another dispatcher had re-claimed it", claim.id)
                return
            audit.append(session, actor=ACTOR, action=action, entity=entity,
                         entity_id=None if entity_id is None else str(entity_id), before={"status": "pending"},
                         after={"status": "sent", **after}, firm_id=claim.firm_id, ts=now)
        report.delivered += 1

    def _cancelled(self, claim: _Claim, now: dt.datetime, reason: str, report: DispatchReport) -> None:
        with self.sessions.begin() as session:
            if not self._take(session, claim, status="cancelled", last_error=reason):
                report.lost += 1
                return
            audit.append(session, actor=ACTOR, action="platform.cancelled", entity="account",
                         entity_id=claim.payload.get("account"), before={"status": "pending"},
                         after={"status": "cancelled", "outbox": claim.id, "command": claim.payload.get("command"),
                                "reason": reason},
                         firm_id=claim.firm_id, ts=now)
        report.cancelled += 1
        log.info("outbox #%s (%s %s) cancelled: %s", claim.id, claim.payload.get("command"),
                 claim.payload.get("account"), reason)

    def _failed(self, claim: _Claim, now: dt.datetime, error: str, report: DispatchReport) -> None:
        dead = claim.attempts >= self.max_attempts
        with self.sessions.begin() as session:
            if dead:
                if not self._take(session, claim, status="dead", last_error=error):
                    report.lost += 1
                    return
                audit.append(session, actor=ACTOR, action="outbox.dead", entity="outbox", entity_id=str(claim.id),
                             before={"status": "pending"},
                             after={"status": "dead", "kind": claim.kind, "account": claim.payload.get("account"),
                                    "command": claim.payload.get("command"), "attempts": claim.attempts,
                                    "last_error": error},
                             firm_id=claim.firm_id, ts=now)
            else:
                retry_at = now + self.retry_delay(claim.attempts, claim.id)
                if not self._take(session, claim, next_attempt_at=retry_at, last_error=error):
                    report.lost += 1
                    return
        if dead:
            report.dead += 1
            log.error("outbox #%s (%s) is dead after %s attempts: %s", claim.id, claim.kind, claim.attempts, error)
        else:
            report.failed += 1
            log.warning("outbox #%s (%s) attempt %s failed: %s; retrying at %s", claim.id, claim.kind,
                        claim.attempts, error, retry_at.isoformat())

    def _account_status(self, firm_id: str, external_id: Any) -> str | None:
        if not isinstance(external_id, str):
            return None
        with self.sessions() as session:
            return session.scalar(
                select(m.Account.status).where(m.Account.firm_id == firm_id, m.Account.external_id == external_id)
            )


# ---------------------------------------------------------------------------------------------------
# configuration from the environment and the `propcrm dispatch` loop


def _delivery(env: Mapping[str, str]) -> Delivery:
    try:
        return Delivery.from_env(env)
    except SettingsError as exc:
        raise DispatchConfigError(str(exc)) from None


def connectors_from(delivery: Delivery) -> dict[str, PlatformConnector]:
    """The platform bridge of ``delivery`` (``PROPCRM_PLATFORM_BRIDGE_URL`` + ``…_SECRET``, ``…_TIMEOUT``): one
    signed-webhook bridge for every platform; neither: the logging connector. A URL without a secret is
    refused rather than quietly falling back to logging, which would leave breached accounts trading."""
    url, secret = delivery.bridge_url, delivery.bridge_secret
    if url:
        if not secret:
            raise DispatchConfigError("PROPCRM_PLATFORM_BRIDGE_URL is set but PROPCRM_PLATFORM_BRIDGE_SECRET is not")
        try:
            return {ANY_PLATFORM: SignedWebhookConnector(url, secret, delivery.bridge_timeout)}
        except ValueError as exc:
            raise DispatchConfigError(f"PROPCRM_PLATFORM_BRIDGE_URL: {exc}") from None
    if secret:
        raise DispatchConfigError("PROPCRM_PLATFORM_BRIDGE_SECRET is set but PROPCRM_PLATFORM_BRIDGE_URL is not")
    return {ANY_PLATFORM: LoggingConnector()}


def email_from(delivery: Delivery) -> EmailNotifier | None:
    """The default SMTP server of ``delivery`` (``PROPCRM_SMTP_HOST``, required to send e-mail; ``…_PORT``: 25,
    587 with STARTTLS, 465 with SSL; ``…_FROM``, ``…_STARTTLS``, ``…_SSL``, ``…_USER``, ``…_PASSWORD``,
    ``…_TIMEOUT``; ``PROPCRM_RISK_EMAIL``: the firm's risk desk)."""
    if not delivery.smtp_host:
        return None
    starttls, use_ssl = delivery.smtp_starttls, delivery.smtp_ssl
    if starttls and use_ssl:
        raise DispatchConfigError("set PROPCRM_SMTP_STARTTLS or PROPCRM_SMTP_SSL, not both")
    port = delivery.smtp_port or (465 if use_ssl else 587 if starttls else 25)
    return EmailNotifier(
        delivery.smtp_host, port, delivery.smtp_sender or "propcrm@localhost",
        starttls=starttls, use_ssl=use_ssl, username=delivery.smtp_user, password=delivery.smtp_password,
        timeout=delivery.smtp_timeout, risk_address=delivery.risk_email,
    )


def webhook_from(delivery: Delivery) -> WebhookNotifier | None:
    """The firm webhook of ``delivery`` (``PROPCRM_FIRM_WEBHOOK_URL`` + ``…_SECRET``): signed notifications."""
    if not delivery.webhook_url:
        return None
    if not delivery.webhook_secret:
        raise DispatchConfigError("PROPCRM_FIRM_WEBHOOK_URL is set but PROPCRM_FIRM_WEBHOOK_SECRET is not")
    try:
        return WebhookNotifier(delivery.webhook_url, delivery.webhook_secret, delivery.webhook_timeout)
    except ValueError as exc:
        raise DispatchConfigError(f"PROPCRM_FIRM_WEBHOOK_URL: {exc}") from None


def connectors_from_env(env: Mapping[str, str]) -> dict[str, PlatformConnector]:
    """:func:`connectors_from` the variables of ``env`` (a mapping: tests, tools)."""
    return connectors_from(_delivery(env))


def email_from_env(env: Mapping[str, str]) -> EmailNotifier | None:
    """:func:`email_from` the variables of ``env``."""
    return email_from(_delivery(env))


def webhook_from_env(env: Mapping[str, str]) -> WebhookNotifier | None:
    """:func:`webhook_from` the variables of ``env``."""
    return webhook_from(_delivery(env))


def build_dispatcher(session_factory: sessionmaker[Session], env: Settings | Mapping[str, str] | None = None,
                     **options: Any) -> Dispatcher:
    """A dispatcher configured from the typed settings of an entry point (``settings.delivery``; the bus of
    ``settings.nats_url``), or from a mapping of variables (tests, tools); ``None``: the process's settings
    (``adapters/settings.current()``)."""
    settings = current_settings() if env is None else env
    if isinstance(settings, Settings):
        delivery = settings.delivery
        options.setdefault("bus", _bus_config(settings))
    else:
        delivery = _delivery(settings)
    dispatcher = Dispatcher(session_factory, connectors=connectors_from(delivery), email=email_from(delivery),
                            webhook=webhook_from(delivery), **options)
    # issue 20: platforms with a stored connection (`propcrm platforms add`) are commanded through it
    from ..features.platforms.commands import with_connections

    dispatcher.connectors = with_connections(session_factory, dispatcher.connectors)
    return dispatcher


def _bus_config(settings: Settings) -> Any:
    """The scale-out event log of ``settings`` (``None``: the embedded deployment)."""
    if settings.nats_url is None:
        return None
    from ..adapters.bus.jetstream import BusConfig

    return BusConfig.from_env(settings.env, url=settings.nats_url)


def describe_setup(dispatcher: Dispatcher) -> str:
    """One line on where things go (no secrets)."""
    platforms = ", ".join(
        f"{name}: {safe_url(c.url) if isinstance(c, SignedWebhookConnector) else type(c).__name__}"
        for name, c in dispatcher.connectors.items()
    )
    email = (f"SMTP {dispatcher.email.host}:{dispatcher.email.port}"
             + (f", risk desk {dispatcher.email.risk_address}" if dispatcher.email.risk_address else "")
             if dispatcher.email else "off")
    webhook = safe_url(dispatcher.webhook.url) if dispatcher.webhook else "off"
    return (f"platforms [{platforms}]; e-mail {email}; firm webhook {webhook}; in-app on "
            "(defaults: a firm's own settings take precedence, docs/tenants.md)")


def summary(report: DispatchReport) -> str:
    return (f"{report.delivered:,} delivered, {report.failed:,} to retry, {report.dead:,} dead, "
            f"{report.cancelled:,} cancelled, {report.notifications:,} in-app notifications "
            f"({report.claimed:,} claimed, {report.seconds:.2f} s)")


def dispatch_loop(dispatcher: Dispatcher, stop: threading.Event, *, fallback: float = 0.5,
                  total: DispatchReport | None = None) -> None:
    """Passes until ``stop``: while a pass delivers or fails something, the next one at once; when idle,
    wait until outbox rows are committed in this process (:data:`~.wakeup.OUTBOX` — the worker's
    decisions in ``propcrm serve``), or in another one when :func:`~.wakeup.listen_outbox` runs
    (PostgreSQL ``NOTIFY``), or ``fallback`` seconds pass (SQLite's other processes, retries coming due). There is no poll interval between a breach's commit and its ``disable`` being sent.
    Whoever sets ``stop`` should also call ``OUTBOX.notify()`` to end the wait at once."""
    from .wakeup import OUTBOX

    while not stop.is_set():
        seen = OUTBOX.generation  # read before the pass: a commit during the pass wakes the next wait
        try:
            report = dispatcher.run_once()
        except Exception:  # noqa: BLE001 - a failed pass is retried; each outcome committed on its own
            log.exception("dispatch pass failed; retrying")
            stop.wait(min(fallback, 1.0))
            continue
        if total is not None:
            total.add(report)
        if not report.delivered and not report.failed and not report.cancelled and not report.dead:
            OUTBOX.wait(seen, fallback)


def run_dispatcher(*, database_url: str | None, once: bool = False, interval: float = 1.0,
                   env: Settings | Mapping[str, str] | None = None, stop: threading.Event | None = None,
                   print_: Callable[[str], None] = print) -> DispatchReport:
    """A dispatcher process: passes until stopped (``once``: a single pass). Returns the total report."""
    from ..adapters.db.session import database_url as default_database_url
    from ..adapters.db.session import make_engine, migrate, sessions

    if not logging.getLogger().handlers:
        configure_logging()
    url = database_url or default_database_url()
    migrate(url)
    engine = make_engine(url)
    total = DispatchReport()
    dispatcher: Dispatcher | None = None
    try:
        dispatcher = build_dispatcher(sessions(engine), env)
        log.info("dispatching: %s", describe_setup(dispatcher))
        if once:
            total = dispatcher.run_once()
            print_(summary(total))
            return total
        stop = stop or threading.Event()
        from .wakeup import listen_outbox

        listening = listen_outbox(engine, stop)  # PostgreSQL: other processes' outbox commits wake the loop
        try:
            dispatch_loop(dispatcher, stop, fallback=interval, total=total)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            if listening is not None:
                listening.join(timeout=5)
        print_(summary(total))
        return total
    finally:
        if dispatcher is not None:
            dispatcher.close()
        engine.dispose()


__all__ = [
    "ANY_PLATFORM",
    "DispatchConfigError",
    "DispatchReport",
    "Dispatcher",
    "build_dispatcher",
    "connectors_from",
    "connectors_from_env",
    "dispatch_loop",
    "describe_error",
    "email_from",
    "email_from_env",
    "run_dispatcher",
    "summary",
    "webhook_from",
    "webhook_from_env",
]
