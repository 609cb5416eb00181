"""The MT5 Manager API bridge: runs on the Windows host next to the MT5 server (``propcrm mt5-bridge``).

It uses MetaQuotes' ``MT5Manager`` package (the Manager API for Python; Windows wheels only) as its
documentation describes it: ``MT5Manager.ManagerAPI()``, ``Connect(server, login, password,
pump_mode, timeout)`` (``MT5Manager.LastError()`` when it fails), sinks subscribed with
``DealSubscribe`` (``OnDealAdd``), ``PositionSubscribe`` (``OnPositionAdd/Update/Delete``),
``UserSubscribe`` (``OnUserLogin(ip, user, type)``) and ``DailySubscribe`` (``OnDailyAdd``), and
``UserGet``/``UserUpdate``/``UserAdd``/``UserGetByGroup``, ``UserAccountGet``, ``PositionGet``,
``DealRequest(login, from, to)``, ``DealerBalance(login, value, type, comment)`` and
``DealerSend(request, sink)`` for commands. Nothing else of the package is assumed; the tests hold the
bridge to a fake of exactly this surface (tests/support/fake_mt5manager.py), since the package cannot
be installed here.

What it does:

* **journal** — every deal (through the shared deal mapping, :mod:`.mapping`), login (``session``)
  and daily report (an end-of-day ``equity``) is journalled as a propcrm event *by login*, once per
  event id, with a sequence number, in a local SQLite file; propcrm's ``mt5-manager`` connector reads
  it from its cursor (see :mod:`.bridge_client` for the HTTP protocol);
* **back-fill** — on every (re)connection to the MT5 server it requests the deals since its last
  journalled deal (minus an overlap) for the groups it watches, so deals made while it was away are
  journalled too, and duplicates are dropped by id;
* **readings** — trading states from the pumped cache (``UserAccountGet``) on request;
* **commands** — rights (``USER_RIGHT_TRADE_DISABLED``), closing positions with dealer requests
  (``TA_DEALER_POS_EXECUTE`` on each ``Position``), balance operations (``DealerBalance``
  ``DEAL_BALANCE``), new accounts (``UserAdd``) and group changes (``UserUpdate``).

Money handed to ``DealerBalance`` is a double by the API's definition; amounts are rounded to the
cent before the conversion.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..port import PlatformEvent
from ..servertime import ServerClock
from .bridge_client import event_to_wire, verify
from .mapping import Mt5Deal, deal_events, money, position_from_record

log = logging.getLogger("propcrm.mt5_bridge")
UTC = dt.timezone.utc
USER_RIGHT_TRADE_DISABLED = 0x4
NEW_ACCOUNT_RIGHTS = 0x163
TA_DEALER_POS_EXECUTE = 200
DEAL_BALANCE = 2
REQUEST_DONE = 10009
CONNECTION_TYPES = {0: "mt5-desktop", 1: "mt5-desktop", 2: "mt5-mobile", 3: "mt5-mobile", 4: "mt5-mobile",
                    5: "mt5-mobile", 11: "mt5-web"}


@dataclass
class BridgeConfig:
    server: str
    manager: int
    password: str  # from the environment, never a command-line argument
    secret: str
    groups: str = "*"
    server_timezone: str = "UTC"
    journal: str = "mt5-bridge.db"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8765
    overlap_s: int = 60
    backfill_days: int = 7
    retention_days: int = 14
    connect_timeout_ms: int = 30_000
    command_timeout_s: float = 10.0


class Journal:
    """Events by login, each once (by id), numbered in the order they were journalled."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                        "event_id TEXT UNIQUE NOT NULL, login TEXT, ts_ms INTEGER NOT NULL, body TEXT NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def add(self, events: list[PlatformEvent]) -> int:
        rows = [(str(event.body["id"]), event.login, int(event.ts.timestamp() * 1000), json.dumps(event_to_wire(event)))
                for event in events]
        added = 0
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for row in rows:
                    added += self.db.execute("INSERT OR IGNORE INTO journal (event_id, login, ts_ms, body) "
                                             "VALUES (?, ?, ?, ?)", row).rowcount
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            if added:
                self.changed.notify_all()
        return added

    def after(self, seq: int, limit: int, wait: float) -> tuple[list[dict[str, Any]], int, int, int | None]:
        deadline = time.monotonic() + wait
        with self.lock:
            while True:
                rows = self.db.execute("SELECT seq, body, ts_ms FROM journal WHERE seq > ? ORDER BY seq LIMIT ?",
                                       (seq, limit)).fetchall()
                oldest = self.db.execute("SELECT min(seq) FROM journal").fetchone()[0] or 0
                remaining = deadline - time.monotonic()
                if rows or remaining <= 0:
                    break
                self.changed.wait(remaining)
        events = [json.loads(body) for _, body, _ in rows]
        newest_ms = max((ts for _, _, ts in rows), default=None)
        return events, (rows[-1][0] if rows else seq), oldest, newest_ms

    def meta(self, key: str, default: str | None = None) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def prune(self, before_ms: int) -> int:
        with self.lock:
            return self.db.execute("DELETE FROM journal WHERE ts_ms < ?", (before_ms,)).rowcount

    def close(self) -> None:
        self.db.close()


class BridgeError(RuntimeError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ManagerBridge:
    config: BridgeConfig
    api_module: Any = None  # the MT5Manager module (a fake in the tests)
    now: Callable[[], float] = time.time
    journal: Journal = field(init=False)
    connected: bool = False

    def __post_init__(self) -> None:
        if self.api_module is None:
            import MT5Manager  # noqa: N813 - MetaQuotes' package name (Windows only)

            self.api_module = MT5Manager
        self.clock = ServerClock(self.config.server_timezone)
        self.journal = Journal(self.config.journal)
        self.manager: Any = None
        self._lock = threading.RLock()
        self._sinks: list[Any] = []

    # ------------------------------------------------------------------ session
    def connect(self) -> None:
        with self._lock:
            mt5 = self.api_module
            manager = mt5.ManagerAPI()
            self._sinks = [self._deal_sink(), self._user_sink(), self._daily_sink(), self._manager_sink()]
            deal_sink, user_sink, daily_sink, manager_sink = self._sinks
            manager.Subscribe(manager_sink)  # IMTManagerSink: OnConnect / OnDisconnect
            manager.DealSubscribe(deal_sink)
            manager.UserSubscribe(user_sink)
            manager.DailySubscribe(daily_sink)
            mode = mt5.ManagerAPI.EnPumpModes.PUMP_MODE_FULL
            if not manager.Connect(self.config.server, self.config.manager, self.config.password, mode,
                                   self.config.connect_timeout_ms):
                error = mt5.LastError()
                raise BridgeError(f"cannot connect to the MT5 server {self.config.server}: {error}", 503)
            self.manager = manager
            self.connected = True
        self.backfill()

    def disconnect(self) -> None:
        with self._lock:
            if self.manager is not None:
                try:
                    self.manager.Disconnect()
                except Exception:  # noqa: BLE001
                    pass
            self.manager = None
            self.connected = False

    def _require(self) -> Any:
        if self.manager is None or not self.connected:
            raise BridgeError("the bridge has no session with the MT5 server", 503)
        return self.manager

    # ------------------------------------------------------------------ sinks → journal
    def _journal_deals(self, deals: list[Any]) -> int:
        events: list[PlatformEvent] = []
        newest = int(self.journal.meta("last_deal_ms", "0") or 0)
        for record in deals:
            deal = Mt5Deal.from_record(record)
            events.extend(deal_events(deal, self.clock))
            newest = max(newest, deal.time_ms)
        added = self.journal.add(events) if events else 0
        self.journal.set_meta("last_deal_ms", str(newest))
        return added

    def _deal_sink(self) -> Any:
        bridge = self

        class DealSink:
            def OnDealAdd(self, deal: Any) -> None:  # noqa: N802 - the API's handler name
                try:
                    bridge._journal_deals([deal])
                except Exception:  # noqa: BLE001 - a sink must never throw into the API
                    log.exception("journalling deal failed")

        return DealSink()

    def _manager_sink(self) -> Any:
        bridge = self

        class ManagerSink:
            def OnConnect(self) -> None:  # noqa: N802
                pass

            def OnDisconnect(self) -> None:  # noqa: N802 - the server is gone: reconnect and back-fill
                bridge.connected = False
                log.warning("the MT5 server %s dropped the manager connection", bridge.config.server)

        return ManagerSink()

    def _user_sink(self) -> Any:
        bridge = self

        class UserSink:
            def OnUserLogin(self, ip: str, user: Any, kind: int = 0) -> None:  # noqa: N802
                try:
                    when = getattr(user, "LastAccess", 0) or int(bridge.now())
                    login = str(user.Login)
                    # the terminal's kind is no fingerprint (shared by every desktop user it would link them
                    # all in linkage analysis): the device is the kind on this login
                    device = f'{CONNECTION_TYPES.get(int(kind or 0), f"mt5-{int(kind or 0)}")}:{login}'
                    event = PlatformEvent(login, bridge.clock.to_utc(when) if getattr(user, "LastAccess", 0)
                                          else dt.datetime.fromtimestamp(when, UTC),
                                          {"id": f"login-{login}-{when}", "type": "session", "ip": ip or "0.0.0.0",
                                           "device": device}, "session")
                    bridge.journal.add([event])
                except Exception:  # noqa: BLE001
                    log.exception("journalling a login failed")

        return UserSink()

    def _daily_sink(self) -> Any:
        bridge = self

        class DailySink:
            def OnDailyAdd(self, daily: Any) -> None:  # noqa: N802
                try:
                    login = str(daily.Login)
                    stamp = int(daily.Datetime)
                    balance = money(getattr(daily, "Balance", 0))
                    equity = money(getattr(daily, "ProfitEquity", None) or 0) if getattr(daily, "ProfitEquity", None) \
                        is not None else balance
                    event = PlatformEvent(login, bridge.clock.to_utc(stamp),
                                          {"id": f"daily-{login}-{stamp}", "type": "equity", "equity": equity,
                                           "balance": balance, "daily_report": True}, "daily")
                    bridge.journal.add([event])
                except Exception:  # noqa: BLE001
                    log.exception("journalling a daily report failed")

        return DailySink()

    def backfill(self) -> int:
        """The deals since the last journalled one (minus the overlap) of the watched groups."""
        manager = self._require()
        last_ms = int(self.journal.meta("last_deal_ms", "0") or 0)
        if last_ms:
            start = last_ms // 1000 - self.config.overlap_s
        else:
            start = self.clock.to_server(dt.datetime.now(UTC) - dt.timedelta(days=self.config.backfill_days))
        end = self.clock.to_server(dt.datetime.now(UTC)) + 86_400
        deals = []
        for user in manager.UserGetByGroup(self.config.groups) or []:
            deals.extend(manager.DealRequest(int(user.Login), start, end) or [])
        added = self._journal_deals(deals)
        if added:
            log.info("back-filled %d event(s) from deals since %s (server time)", added, start)
        return added

    # ------------------------------------------------------------------ reading
    def readings(self, logins: list[str]) -> list[dict[str, Any]]:
        manager = self._require()
        observed = dt.datetime.now(UTC).isoformat()
        found = []
        for login in logins:
            user = manager.UserGet(int(login))
            if not user:
                continue
            account = manager.UserAccountGet(int(login))
            enabled = not (int(user.Rights) & USER_RIGHT_TRADE_DISABLED)
            if account:
                equity = money(account.Equity) - money(getattr(account, "Credit", 0))
                found.append({"login": login, "observed_at": observed, "balance": str(money(account.Balance)),
                              "equity": str(equity), "margin": str(money(getattr(account, "Margin", 0))),
                              "floating": str(money(getattr(account, "Floating", 0))), "trade_enabled": enabled,
                              "group": user.Group})
            else:
                found.append({"login": login, "observed_at": observed, "balance": str(money(user.Balance)),
                              "equity": None, "trade_enabled": enabled, "group": user.Group})
        return found

    def positions(self, logins: list[str]) -> list[dict[str, Any]]:
        manager = self._require()
        found = []
        for login in logins:
            for record in manager.PositionGet(int(login)) or []:
                p = position_from_record(record, self.clock)
                found.append({"login": p.login, "position": p.position, "symbol": p.symbol, "side": p.side,
                              "lots": str(p.lots), "price": str(p.price), "opened_at": p.opened_at.isoformat(),
                              "sl": None if p.sl is None else str(p.sl), "tp": None if p.tp is None else str(p.tp)})
        return found

    def deals(self, login: str, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
        manager = self._require()
        start = self.clock.to_server(dt.datetime.fromtimestamp(from_ms / 1000, UTC))
        end = self.clock.to_server(dt.datetime.fromtimestamp(to_ms / 1000, UTC))
        events = []
        for record in manager.DealRequest(int(login), start, end) or []:
            events.extend(deal_events(Mt5Deal.from_record(record), self.clock))
        return [event_to_wire(e) for e in events]

    # ------------------------------------------------------------------ commands
    def command(self, body: dict[str, Any]) -> Any:
        name = str(body.get("command") or "")
        handler = getattr(self, f"_do_{name}", None)
        if handler is None:
            raise BridgeError(f"unknown command {name!r}")
        with self._lock:
            return handler(body)

    def _user(self, login: Any) -> Any:
        user = self._require().UserGet(int(login))
        if not user:
            raise BridgeError(f"no MT5 account {login}: {self.api_module.LastError()}", 404)
        return user

    def _do_set_trading(self, body: dict[str, Any]) -> None:
        user = self._user(body["login"])
        rights = int(user.Rights)
        user.Rights = rights & ~USER_RIGHT_TRADE_DISABLED if body.get("enabled") else rights | USER_RIGHT_TRADE_DISABLED
        if user.Rights != rights and not self._require().UserUpdate(user):
            raise BridgeError(f"UserUpdate failed: {self.api_module.LastError()}", 502)

    def _do_close_positions(self, body: dict[str, Any]) -> int:
        manager = self._require()
        mt5 = self.api_module
        positions = list(manager.PositionGet(int(body["login"])) or [])
        for position in positions:
            request = mt5.MTRequest(manager)
            request.Action = TA_DEALER_POS_EXECUTE
            request.Login = int(position.Login)
            request.Symbol = position.Symbol
            request.Type = 1 if int(position.Action) == 0 else 0
            request.Volume = int(position.Volume)
            request.Position = int(position.Position)
            request.PriceOrder = float(getattr(position, "PriceCurrent", 0) or 0)
            result = _DealerResult()
            if not manager.DealerSend(request, result):
                raise BridgeError(f"DealerSend failed for position {position.Position}: {mt5.LastError()}", 502)
            code = result.wait(self.config.command_timeout_s)
            if code is None:
                raise BridgeError(f"no result for closing position {position.Position} within "
                                  f"{self.config.command_timeout_s} s", 504)
            if code != REQUEST_DONE:
                raise BridgeError(f"closing position {position.Position} ended with {code}", 502)
        return len(positions)

    def _do_balance_operation(self, body: dict[str, Any]) -> str:
        amount = Decimal(str(body["amount"])).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        deal = self._require().DealerBalance(int(body["login"]), float(amount), DEAL_BALANCE, str(body["comment"])[:31])
        if not deal:
            raise BridgeError(f"DealerBalance failed: {self.api_module.LastError()}", 502)
        return str(deal)

    def _do_find_balance_operation(self, body: dict[str, Any]) -> str | None:
        start = self.clock.to_server(dt.datetime.fromtimestamp(int(body["since_ms"]) / 1000, UTC)) - 60
        end = self.clock.to_server(dt.datetime.now(UTC)) + 86_400
        comment = str(body["comment"])[:31]
        for deal in self._require().DealRequest(int(body["login"]), start, end) or []:
            if int(deal.Action) == DEAL_BALANCE and str(deal.Comment) == comment:
                return str(deal.Deal)
        return None

    def _do_create_account(self, body: dict[str, Any]) -> str:
        manager = self._require()
        user = self.api_module.MTUser(manager)
        user.Group = str(body["group"])
        user.Leverage = int(body["leverage"])
        user.Name = str(body.get("name") or "")[:127]
        user.EMail = str(body.get("email") or "")
        user.Comment = str(body.get("tag") or "")[:63]
        user.Rights = NEW_ACCOUNT_RIGHTS
        if not manager.UserAdd(user, str(body.get("password") or ""), str(body.get("investor_password") or
                                                                            body.get("password") or "")):
            raise BridgeError(f"UserAdd failed: {self.api_module.LastError()}", 502)
        return str(user.Login)

    def _do_find_account(self, body: dict[str, Any]) -> str | None:
        for user in self._require().UserGetByGroup(str(body["group"])) or []:
            if str(user.Comment) == str(body["tag"]):
                return str(user.Login)
        return None

    def _do_change_group(self, body: dict[str, Any]) -> None:
        user = self._user(body["login"])
        user.Group = str(body["group"])
        if not self._require().UserUpdate(user):
            raise BridgeError(f"UserUpdate failed: {self.api_module.LastError()}", 502)

    # ------------------------------------------------------------------ running
    def keep_connected(self, stop: threading.Event, retry_s: float = 5.0) -> None:
        while not stop.is_set():
            if not self.connected:
                try:
                    self.connect()
                    log.info("connected to the MT5 server %s", self.config.server)
                except Exception as exc:  # noqa: BLE001
                    log.warning("MT5 server %s: %s; retrying in %.0f s", self.config.server, exc, retry_s)
            self.journal.prune(int((time.time() - self.config.retention_days * 86_400) * 1000))
            stop.wait(retry_s)

    def serve(self, *, certfile: str | None = None, keyfile: str | None = None) -> ThreadingHTTPServer:
        """The HTTP(S) endpoint propcrm's connector talks to (TLS with ``certfile``/``keyfile``)."""
        server = ThreadingHTTPServer((self.config.listen_host, self.config.listen_port), _handler(self))
        if certfile:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(certfile, keyfile)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, name="mt5-bridge-http", daemon=True).start()
        return server


class _DealerResult:
    """The ``MTDealerSink`` handed to ``DealerSend``: the request's result arrives asynchronously."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self.code: int | None = None

    def OnDealerResult(self, result: Any) -> None:  # noqa: N802
        self.code = int(str(getattr(result, "Retcode", getattr(result, "ResultRetcode", 0))).split(" ")[0])
        self._done.set()

    def OnDealerAnswer(self, request: Any) -> None:  # noqa: N802
        self.code = int(str(getattr(request, "ResultRetcode", 0)).split(" ")[0])
        self._done.set()

    def wait(self, timeout: float) -> int | None:
        return self.code if self._done.wait(timeout) else None


def _handler(bridge: ManagerBridge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, document: Any) -> None:
            body = json.dumps(document, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            if parts.path == "/healthz":
                self._send(200, {"connected": bridge.connected})
                return
            problem = verify(bridge.config.secret, self.headers, method, self.path, body)
            if problem is not None:
                self._send(401, {"error": problem})
                return
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            try:
                if method == "GET" and parts.path == "/events":
                    after = int(query.get("after", 0))
                    events, next_seq, oldest, newest_ms = bridge.journal.after(
                        after, min(int(query.get("limit", 5000)), 20_000), min(float(query.get("wait", 0)), 10.0))
                    if after and oldest and after < oldest - 1:
                        self._send(410, {"error": f"events after {after} were pruned (oldest kept: {oldest})"})
                        return
                    self._send(200, {"events": events, "next": next_seq, "oldest": oldest, "platform_ms": newest_ms})
                elif method == "GET" and parts.path == "/readings":
                    logins = [x for x in query.get("logins", "").split(",") if x]
                    self._send(200, {"readings": bridge.readings(logins)})
                elif method == "GET" and parts.path == "/positions":
                    logins = [x for x in query.get("logins", "").split(",") if x]
                    self._send(200, {"positions": bridge.positions(logins)})
                elif method == "GET" and parts.path == "/deals":
                    self._send(200, {"events": bridge.deals(query["login"], int(query["from"]), int(query["to"]))})
                elif method == "POST" and parts.path == "/commands":
                    self._send(200, {"result": bridge.command(json.loads(body or b"{}"))})
                else:
                    self._send(404, {"error": "no such endpoint"})
            except BridgeError as exc:
                self._send(exc.status, {"error": str(exc)})
            except (KeyError, ValueError, TypeError) as exc:
                self._send(400, {"error": f"bad request: {type(exc).__name__}: {exc}"})

        def do_GET(self) -> None:  # noqa: N802
            self._handle("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


__all__ = ["BridgeConfig", "BridgeError", "Journal", "ManagerBridge"]
