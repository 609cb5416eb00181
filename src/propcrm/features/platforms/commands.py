"""Platform commands from the outbox, carried out on a connected platform.

The dispatcher (``services/dispatch.py``) hands every ``platform_command`` row to a
:class:`~propcrm.adapters.platforms.PlatformConnector`; :class:`PlatformCommands` is the one for
platforms that have a stored connection (firm + ``platform`` = connection name) and passes the rest
to the connector configured before (the signed bridge webhook or the logging connector). Commands:

=================  =============================================================================
``disable``        trading disabled (MT5: ``USER_RIGHT_TRADE_DISABLED``), and the open positions
``pause``          closed when the connection's ``flatten_on_disable`` is on (the default)
``enable``         trading allowed again
``resume``
``close_positions``  every open position closed at market
``adjust_balance`` a balance operation: ``amount`` (signed) with ``reason`` ``deposit``,
                   ``withdrawal`` or ``payout``; ``reset`` brings the balance to ``target_balance``
``create_account`` an account in the phase's group (``groups_by_phase``, ``*`` the default) with
                   the connection's ``leverage``; the new login is mapped to the propcrm account,
                   the starting balance deposited, and the trader told the login and password
``change_group``   the account moved to ``group``
=================  =============================================================================

Delivery is at least once, so every command is made idempotent here: rights and groups are states;
a balance operation carries ``pc <reason> <key>`` (from the command's idempotency key) in its comment
and is not repeated when a deal with that comment exists; a new account carries ``propcrm <account>``
in its record and is found again instead of created twice. Operations propcrm records itself
(``pc init``, ``pc payout``) are skipped by the deal mapping when they come back from the platform.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import threading
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ...adapters.db import models as m
from ...adapters.db.models_platforms import PlatformConnection
from ...adapters.db.session import readonly_sessions
from ...adapters.delivery import DeliveryError
from ...adapters.platforms.metrics import ConnectorMetrics, default_metrics
from ...adapters.platforms.port import NewAccount, NotConnected, PlatformError, PlatformGateway
from ...adapters.platforms.secrets import SecretBox
from ...services.catalog import pack_of
from .connections import find_connection, gateway_for, login_of, map_login
from .families import parse_settings

log = logging.getLogger("propcrm.platforms.commands")
UTC = dt.timezone.utc
COMMANDS = ("disable", "pause", "enable", "resume", "close_positions", "adjust_balance", "create_account",
            "change_group")
BALANCE_REASONS = ("deposit", "withdrawal", "payout", "reset")


def _close_quietly(gateway: PlatformGateway) -> None:
    try:
        gateway.close()
    except Exception:  # noqa: BLE001 - closing a broken session is best effort
        pass


class CommandError(DeliveryError):
    """A command the platform connection cannot carry out (the message says why; never a secret)."""


def _key8(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


class PlatformCommands:
    def __init__(self, session_factory: sessionmaker[Session], *, fallback: Any = None, box: SecretBox | None = None,
                 metrics: ConnectorMetrics | None = None, gateway_factory: Any = None,
                 on_mapped: Any = None, sessions_per_connection: int = 4) -> None:
        self.sessions = session_factory
        self._reads = readonly_sessions(session_factory)  # lookups never wait for the write lock (SQLite)
        self.fallback = fallback
        self._box = box
        self.metrics = metrics or default_metrics()
        self._factory = gateway_factory or (lambda row: gateway_for(row, self._box_()))
        #: gateways (platform sessions) per connection, idle ones ready for the next command; at most
        #: ``sessions_per_connection`` per connection, each used by one command at a time, so the dispatcher's
        #: commands for different accounts run side by side instead of queueing behind one session
        self.sessions_per_connection = max(1, int(sessions_per_connection))
        self._idle: dict[int, list[PlatformGateway]] = {}
        self._open: dict[int, int] = {}
        self._lock = threading.Condition()
        self.on_mapped = on_mapped  # called with the connection name after a login is mapped

    def _box_(self) -> SecretBox:
        if self._box is None:
            self._box = SecretBox()
        return self._box

    def __repr__(self) -> str:
        return f"PlatformCommands(fallback={self.fallback!r})"

    # ------------------------------------------------------------------ PlatformConnector
    def send(self, command: dict[str, Any]) -> None:
        firm, platform = command.get("firm"), command.get("platform")
        with self._reads() as session:
            row = find_connection(session, firm_id=str(firm), name=str(platform)) if firm and platform else None
            if row is not None:
                session.expunge(row)
        if row is None:
            if self.fallback is None:
                raise CommandError(f"no platform connection {platform!r} in firm {firm!r}")
            self.fallback.send(command)
            return
        if not row.enabled:
            raise CommandError(f"platform connection {row.name!r} is disabled")
        name = str(command.get("command") or "")
        if name not in COMMANDS:
            raise CommandError(f"unknown platform command {name!r}; known: {', '.join(COMMANDS)}")
        started = time.perf_counter()
        gateway: PlatformGateway | None = None
        try:
            gateway = self._checkout(row)
            getattr(self, f"_{name}")(row, gateway, command)
        except NotConnected as exc:
            if gateway is not None:
                self._discard(row.id, gateway)
                gateway = None
            self.metrics.commands.labels(row.name, name, "retry").inc()
            raise CommandError(f"{row.name}: {exc}") from None
        except PlatformError as exc:
            self.metrics.commands.labels(row.name, name, "failed").inc()
            raise CommandError(f"{row.name}: {exc}") from None
        finally:
            if gateway is not None:
                self._checkin(row.id, gateway)
        self.metrics.commands.labels(row.name, name, "done").inc()
        log.info("platform %s (firm %s): %s %s done", row.name, row.firm_id, name, command.get("account"))
        self.metrics.command_seconds.labels(row.name, name).observe(time.perf_counter() - started)

    def close(self) -> None:
        with self._lock:
            idle = [g for gateways in self._idle.values() for g in gateways]
            self._idle.clear()
            self._open.clear()  # a gateway still in use is closed when its command gives it back
        for gateway in idle:
            _close_quietly(gateway)
        closer = getattr(self.fallback, "close", None)
        if callable(closer):
            closer()

    # ------------------------------------------------------------------ sessions
    def _checkout(self, row: PlatformConnection) -> PlatformGateway:
        """An idle gateway of the connection, a new one while fewer than ``sessions_per_connection`` are
        open, else the next one a command gives back."""
        with self._lock:
            while True:
                idle = self._idle.get(row.id)
                if idle:
                    return idle.pop()
                if self._open.get(row.id, 0) < self.sessions_per_connection:
                    self._open[row.id] = self._open.get(row.id, 0) + 1
                    break
                self._lock.wait()
        try:
            gateway = self._factory(row)
            gateway.open()
        except BaseException:
            self._forget(row.id)
            raise
        return gateway

    def _checkin(self, connection_id: int, gateway: PlatformGateway) -> None:
        with self._lock:
            if connection_id in self._open:
                self._idle.setdefault(connection_id, []).append(gateway)
                self._lock.notify()
                return
        _close_quietly(gateway)  # closed meanwhile (``close``)

    def _discard(self, connection_id: int, gateway: PlatformGateway) -> None:
        """A gateway whose session broke: closed, and its place given to a new one."""
        self._forget(connection_id)
        _close_quietly(gateway)

    def _forget(self, connection_id: int) -> None:
        with self._lock:
            if self._open.get(connection_id, 0) > 0:
                self._open[connection_id] -= 1
            self._lock.notify()

    def _login(self, row: PlatformConnection, command: dict[str, Any]) -> str:
        account = str(command.get("account") or "")
        with self._reads() as session:
            account_id = session.scalar(select(m.Account.id).where(m.Account.firm_id == row.firm_id,
                                                                   m.Account.external_id == account))
            login = None if account_id is None else login_of(session, connection_id=row.id, account_id=account_id)
        if login is None:
            raise CommandError(f"account {account!r} has no login on platform {row.name!r} (map it first)")
        return login

    @staticmethod
    def _settings(row: PlatformConnection) -> Any:
        return parse_settings(row.family, dict(row.settings or {}))

    # ------------------------------------------------------------------ commands
    def _disable(self, row: PlatformConnection, gateway: PlatformGateway, command: dict[str, Any]) -> None:
        login = self._login(row, command)
        gateway.set_trading(login, False)
        if getattr(self._settings(row), "flatten_on_disable", True):
            gateway.close_positions(login)

    _pause = _disable

    def _enable(self, row: PlatformConnection, gateway: PlatformGateway, command: dict[str, Any]) -> None:
        gateway.set_trading(self._login(row, command), True)

    _resume = _enable

    def _close_positions(self, row: PlatformConnection, gateway: PlatformGateway, command: dict[str, Any]) -> None:
        gateway.close_positions(self._login(row, command))

    def _change_group(self, row: PlatformConnection, gateway: PlatformGateway, command: dict[str, Any]) -> None:
        group = str(command.get("group") or "").strip()
        if not group:
            raise CommandError("change_group needs a `group`")
        gateway.change_group(self._login(row, command), group)

    def _adjust_balance(self, row: PlatformConnection, gateway: PlatformGateway, command: dict[str, Any]) -> None:
        login = self._login(row, command)
        reason = str(command.get("reason") or "")
        if reason not in BALANCE_REASONS:
            raise CommandError(f"adjust_balance needs a `reason` among {', '.join(BALANCE_REASONS)}, got {reason!r}")
        key = str(command.get("idempotency_key") or "")
        tag = str(command.get("payout")) if reason == "payout" and command.get("payout") else _key8(key)
        comment = f"pc {reason} {tag}"[:31]
        since = dt.datetime.now(UTC) - dt.timedelta(days=45)
        if gateway.find_balance_operation(login, comment, since) is not None:
            return
        try:
            if reason == "reset":
                gateway.close_positions(login)
                target = Decimal(str(command["target_balance"]))
                readings = gateway.readings([login])
                if not readings:
                    raise CommandError(f"cannot read the balance of {login} on {row.name}")
                amount = target - readings[0].balance
            else:
                amount = Decimal(str(command["amount"]))
        except (KeyError, InvalidOperation):
            raise CommandError("adjust_balance needs a decimal `amount` (`target_balance` for a reset)") from None
        if reason in ("withdrawal", "payout") and amount > 0:
            amount = -amount
        if amount == 0:
            return
        gateway.balance_operation(login, amount, comment)

    def _create_account(self, row: PlatformConnection, gateway: PlatformGateway, command: dict[str, Any]) -> None:
        external = str(command.get("account") or "")
        settings = self._settings(row)
        with self.sessions() as session:
            account = session.scalar(select(m.Account).where(m.Account.firm_id == row.firm_id,
                                                             m.Account.external_id == external))
            if account is None:
                raise CommandError(f"no account {external!r} in firm {row.firm_id}")
            existing = login_of(session, connection_id=row.id, account_id=account.id)
            trader = session.get(m.Trader, account.trader_id) if account.trader_id else None
            version = session.get(m.RulePackVersion, account.pack_version_id)
            initial = pack_of(version).initial_balance if version is not None else None
            phase, trader_id = account.phase, account.trader_id
            name = trader.name if trader is not None else external
            email = trader.email if trader is not None else None
        groups = getattr(settings, "groups_by_phase", {}) or {}
        group = groups.get(phase) or groups.get("*")
        if not group:
            raise CommandError(f"connection {row.name!r} names no group for phase {phase!r} (settings.groups_by_phase)")
        key = str(command.get("idempotency_key") or external)
        spec = NewAccount(group=group, leverage=int(getattr(settings, "leverage", 100)), name=name[:120], email=email,
                          tag=f"propcrm {external}"[:64])
        password = None
        login = existing
        if login is None:
            login = gateway.find_account(spec)
        if login is None:
            from ...adapters.platforms.mt5.webapi import new_password

            password = new_password()
            spec = dataclasses.replace(spec, password=password)
            login = gateway.create_account(spec)
        if existing is None:
            with self.sessions.begin() as session:
                map_login(session, firm_id=row.firm_id, connection=row.name, login=login, account=external,
                          actor=f"connector:{row.name}")
                if password is not None and trader_id is not None:
                    from ...services.communications import notify_trader

                    notify_trader(session, firm_id=row.firm_id, trader_id=trader_id, kind="platform_account",
                                  title=f"Your trading account {external} is ready",
                                  message=(f"Your account {external} is open on {row.name}: login {login}, "
                                           f"password {password}. Change the password after your first login."),
                                  key=f"platform:{row.id}:{external}:credentials", account=external,
                                  author=f"connector:{row.name}")
            if self.on_mapped is not None:
                self.on_mapped(row.name)
        if getattr(settings, "deposit_on_create", True):
            amount_text = command.get("account_size")
            amount = Decimal(str(amount_text)) if amount_text not in (None, "") else initial
            if amount is not None and amount > 0:
                comment = f"pc init {_key8(key)}"
                since = dt.datetime.now(UTC) - dt.timedelta(days=45)
                if gateway.find_balance_operation(login, comment, since) is None:
                    gateway.balance_operation(login, amount, comment)


class ConnectedPlatforms(dict):
    """The dispatcher's ``connectors`` with stored connections in front: ``get(platform)`` of a platform
    without a connector of its own answers the :class:`PlatformCommands` router, which carries the
    command out on the firm's connection of that name or hands it to the ``*`` connector as before."""

    def __init__(self, base: dict[str, Any], router: PlatformCommands) -> None:
        super().__init__(base)
        self.router = router

    def get(self, name: Any, default: Any = None) -> Any:  # noqa: D401
        if name in self or name == "*":
            return super().get(name, default)
        return self.router

    def values(self):  # so that Dispatcher.close() closes the router's sessions too
        return [*super().values(), self.router]


def with_connections(session_factory: sessionmaker[Session], connectors: dict[str, Any]) -> ConnectedPlatforms:
    class _Fallback:
        def send(self, command: dict[str, Any]) -> None:
            target = connectors.get("*")
            if target is None:
                raise CommandError(f"no connector for platform {command.get('platform')!r}")
            target.send(command)

    return ConnectedPlatforms(connectors, PlatformCommands(session_factory, fallback=_Fallback()))


__all__ = ["BALANCE_REASONS", "COMMANDS", "CommandError", "ConnectedPlatforms", "PlatformCommands",
           "with_connections"]
