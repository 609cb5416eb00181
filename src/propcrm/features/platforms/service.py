"""Running the connectors: one thread per enabled connection, as its own role (``propcrm connect``) or
inside ``propcrm serve`` in the embedded default.

The supervisor looks for connections every ``refresh_s`` seconds: a connection added, enabled or
changed is (re)started, one disabled or removed is stopped. Each runner reconnects by itself
(:class:`~propcrm.adapters.platforms.runner.ConnectorRunner`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ...adapters.db.models import Firm
from ...adapters.db.models_platforms import PlatformConnection
from ...adapters.platforms.metrics import ConnectorMetrics, default_metrics
from ...adapters.platforms.runner import ConnectorRunner, RunnerSettings
from ...adapters.platforms.secrets import SecretBox
from .connections import gateway_for
from .families import family, parse_settings
from .store import store_for

log = logging.getLogger("propcrm.platforms")


@dataclass
class _Running:
    runner: ConnectorRunner
    thread: threading.Thread
    stop: threading.Event
    version: Any


@dataclass
class ConnectorSupervisor:
    session_factory: sessionmaker[Session]
    firm_id: str | None = None
    names: tuple[str, ...] = ()
    refresh_s: float = 10.0
    wake: threading.Event | None = None
    metrics: ConnectorMetrics = field(default_factory=default_metrics)
    box: SecretBox | None = None
    settings_override: dict[str, Any] = field(default_factory=dict)
    bus: Any = None  # a BusConfig: publish to it (default: the process's PROPCRM_NATS_URL, else the database)
    running: dict[int, _Running] = field(default_factory=dict)

    def _wanted(self) -> list[PlatformConnection]:
        query = (select(PlatformConnection).join(Firm, Firm.id == PlatformConnection.firm_id)
                 .where(PlatformConnection.enabled.is_(True), Firm.suspended_at.is_(None)))  # a suspended firm's stop
        if self.firm_id is not None:
            query = query.where(PlatformConnection.firm_id == self.firm_id)
        if self.names:
            query = query.where(PlatformConnection.name.in_(self.names))
        with self.session_factory() as session:
            rows = list(session.scalars(query))
            for row in rows:
                session.expunge(row)
        return [r for r in rows if family(r.family).streams]

    def refresh(self) -> None:
        wanted = {row.id: row for row in self._wanted()}
        for connection_id in list(self.running):
            row = wanted.get(connection_id)
            if row is None or self.running[connection_id].version != (row.updated_at, row.family):
                self._stop_one(connection_id)
        for connection_id, row in wanted.items():
            if connection_id not in self.running:
                try:
                    self._start_one(row)
                except Exception as exc:  # noqa: BLE001 - a bad connection never stops the others
                    log.error("platform %s (firm %s) not started: %s", row.name, row.firm_id, exc)

    def _start_one(self, row: PlatformConnection) -> None:
        self.box = self.box or SecretBox()
        gateway = gateway_for(row, self.box)
        settings = parse_settings(row.family, dict(row.settings or {}))
        runner_settings = RunnerSettings(poll_interval_s=float(getattr(settings, "poll_interval_s", 0.25)),
                                         **self.settings_override)
        store = store_for(self.session_factory, firm_id=row.firm_id, connection_id=row.id, name=row.name,
                          bus=self.bus)
        runner = ConnectorRunner(gateway, store, settings=runner_settings, metrics=self.metrics)
        runner.wake = self.wake
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,), name=f"platform-{row.name}", daemon=True)
        self.running[row.id] = _Running(runner, thread, stop, (row.updated_at, row.family))
        thread.start()
        log.info("platform %s (%s, firm %s): connector started", row.name, row.family, row.firm_id)

    def _stop_one(self, connection_id: int) -> None:
        item = self.running.pop(connection_id, None)
        if item is not None:
            item.stop.set()
            item.thread.join(timeout=10)
            close = getattr(item.runner.store, "close", None)
            if close is not None:  # the bus store's connection
                close()

    def mapped(self, name: str) -> None:
        """A login was mapped on connection ``name``: its runner reads the mapping at its next step."""
        for item in self.running.values():
            if item.runner.name == name:
                item.runner.refresh_now()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.refresh()
            except Exception:  # noqa: BLE001
                log.exception("platform connectors: refresh failed; retrying")
            if stop.wait(self.refresh_s):
                break
        self.close()

    def close(self) -> None:
        for connection_id in list(self.running):
            self._stop_one(connection_id)

    def health(self) -> tuple[bool, dict[str, Any]]:
        details = {item.runner.name: item.runner.health.to_dict() for item in self.running.values()}
        ok = all(item.runner.health.connected for item in self.running.values())
        return ok, {"platforms": details}


__all__ = ["ConnectorSupervisor"]
