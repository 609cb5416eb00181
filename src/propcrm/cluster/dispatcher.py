"""The outbox dispatcher as a role of the scale-out deployment (``propcrm cluster dispatch``).

It is ``propcrm dispatch`` — the same :class:`~propcrm.services.dispatch.Dispatcher`, which claims
rows with ``FOR UPDATE SKIP LOCKED`` and leases, so any number run side by side and each can be
restarted at any time — plus the ``/metrics`` (outbox backlog, due, dead, deliveries) and ``/healthz``
endpoints a cluster needs. Workers only write outbox rows; delivery never slows evaluation down.

It does not wait a poll interval for the workers' rows: on PostgreSQL it listens for the
``NOTIFY`` their commits send (:func:`propcrm.services.wakeup.listen_outbox`) and starts a pass at
once; ``interval`` is the fallback when nothing wakes it.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time

from sqlalchemy import func, select

from ..adapters.db import models as m
from ..adapters.db.session import make_engine, migrate, sessions
from ..adapters.settings import Settings
from ..services.dispatch import build_dispatcher, describe_setup
from ..services.wakeup import OUTBOX, listen_outbox
from .metrics import DispatcherMetrics, serve_http

log = logging.getLogger("propcrm.dispatch")
UTC = dt.timezone.utc


def run_dispatcher_role(*, database_url: str, metrics_port: int | None, metrics_host: str = "127.0.0.1",
                        interval: float = 0.5, stop: threading.Event | None = None,
                        settings: Settings | None = None, wake: bool = True) -> None:
    """The outbox dispatcher as a cluster role; ``settings``: the entry point's (default: the process's);
    ``wake=False``: poll only (no ``LISTEN``, for comparisons)."""
    if not logging.getLogger().handlers:
        from ..adapters.logs import configure_logging

        configure_logging()
        logging.getLogger("alembic").setLevel(logging.WARNING)
    migrate(url := database_url)
    engine = make_engine(url)
    session_factory = sessions(engine)
    dispatcher = build_dispatcher(session_factory, settings)
    metrics = DispatcherMetrics()
    stop = stop or threading.Event()
    state = {"last_pass": 0.0, "last_error": None}

    def health() -> tuple[bool, dict]:
        fresh = time.monotonic() - state["last_pass"] < max(30.0, 10 * interval)
        return fresh, {"role": "dispatcher", "last_pass_s_ago": round(time.monotonic() - state["last_pass"], 1),
                       "last_error": state["last_error"]}

    http = serve_http(metrics_host, metrics_port, metrics.registry, health) if metrics_port is not None else None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: (stop.set(), OUTBOX.notify()))
    listening = listen_outbox(engine, stop) if wake else None
    log.info("dispatcher role: %s; woken by %s", describe_setup(dispatcher),
             f"the outbox channel, else every {interval:g} s" if listening else f"a poll every {interval:g} s")
    last_counts = 0.0
    try:
        while not stop.is_set():
            seen = OUTBOX.generation  # read before the pass: a commit during it wakes the next wait
            try:
                report = dispatcher.run_once()
                state["last_pass"], state["last_error"] = time.monotonic(), None
            except Exception as exc:  # noqa: BLE001 - a failed pass is retried
                state["last_error"] = type(exc).__name__
                log.exception("dispatch pass failed; retrying")
                stop.wait(interval)
                continue
            for kind, n in report.by_kind.items():
                metrics.delivered.labels(kind).inc(n)
            metrics.failed.inc(report.failed)
            if time.monotonic() - last_counts > 2.0:  # the backlog figures: a cheap grouped count
                last_counts = time.monotonic()
                _count(session_factory, metrics)
            if report.claimed == 0:
                OUTBOX.wait(seen, interval)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if listening is not None:
            listening.join(timeout=5)
        dispatcher.close()
        if http is not None:
            http.shutdown()
        engine.dispose()


def _count(session_factory, metrics: DispatcherMetrics) -> None:
    try:
        with session_factory() as session:
            by_status = dict(session.execute(
                select(m.OutboxMessage.status, func.count()).group_by(m.OutboxMessage.status)).all())
            due = session.scalar(select(func.count()).select_from(m.OutboxMessage).where(
                m.OutboxMessage.status == "pending", m.OutboxMessage.next_attempt_at <= dt.datetime.now(UTC)))
    except Exception:  # noqa: BLE001 - a metric is never worth a failed pass
        return
    metrics.backlog.set(by_status.get("pending", 0))
    metrics.dead.set(by_status.get("dead", 0))
    metrics.due.set(due or 0)


__all__ = ["run_dispatcher_role"]
