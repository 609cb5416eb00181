"""The ``mt5-manager`` gateway: propcrm's side of the MT5 Manager API bridge.

MetaQuotes ships the Manager API for Python as the ``MT5Manager`` package, Windows-only; the bridge
(:mod:`.manager_bridge`, ``propcrm mt5-bridge``) runs next to the MT5 server on a Windows host,
receives the server's deal, position, user and daily sinks, journals them as propcrm events by
login, and carries out commands. This gateway talks to the bridge over HTTPS with a small protocol
of propcrm's own (not MetaQuotes'):

=========================================  ==========================================================
``GET /events?after=SEQ&wait=S&limit=N``   journalled events after ``SEQ`` (long poll up to ``S`` s)
                                           → ``{"events": [...], "next": SEQ, "oldest": SEQ,
                                           "platform_ms": MS}``; 410 when ``SEQ`` was pruned
``GET /readings?logins=L1,L2``             trading states now (``UserAccountGet``) → ``{"readings"}``
``GET /positions?logins=…``                open positions (``PositionGet``)
``GET /deals?login=L&from=MS&to=MS``       a login's deals as events (reconciliation)
``POST /commands``                         ``{"command": …, …}`` → ``{"result": …}`` or an error
``GET /healthz``                           ``{"connected": bool}`` (no authentication, no data)
=========================================  ==========================================================

Every request but ``/healthz`` carries ``X-Propcrm-Timestamp`` (unix seconds) and
``X-Propcrm-Signature: sha256=HMAC(secret, timestamp + "." + METHOD + " " + path?query + "." + body)``;
the bridge refuses a bad or stale (±5 min) signature with 401. The cursor is the journal sequence, so
a reconnect — of propcrm, of the bridge, of the bridge to the MT5 server (which back-fills deals from
its last journalled deal) — loses and repeats nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import httpx
import msgspec

from ..port import AccountReading, NewAccount, NotConnected, PlatformError, PlatformEvent, PlatformPosition, Poll
from ..secrets import Secret

UTC = dt.timezone.utc
MAX_SKEW_S = 300


def sign(secret: str, timestamp: str, method: str, target: str, body: bytes) -> str:
    message = timestamp.encode() + b"." + f"{method} {target}".encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(secret: str, headers: Any, method: str, target: str, body: bytes, *, now: float | None = None) -> str | None:
    """None when the request is signed right and fresh; otherwise what is wrong (no secret in it)."""
    stamp = headers.get("X-Propcrm-Timestamp") or ""
    given = headers.get("X-Propcrm-Signature") or ""
    if not stamp or not given:
        return "missing X-Propcrm-Timestamp or X-Propcrm-Signature"
    try:
        skew = abs((now if now is not None else time.time()) - int(stamp))
    except ValueError:
        return "X-Propcrm-Timestamp is not unix seconds"
    if skew > MAX_SKEW_S:
        return "the request is stale (timestamp more than 5 minutes away)"
    if not hmac.compare_digest(given, sign(secret, stamp, method, target, body)):
        return "the signature does not match"
    return None


def event_from_wire(item: dict[str, Any]) -> PlatformEvent:
    return PlatformEvent(login=item.get("login"), ts=dt.datetime.fromisoformat(item["ts"]), body=dict(item["body"]),
                         kind=item.get("kind", "deal"))


def event_to_wire(event: PlatformEvent) -> dict[str, Any]:
    body = {k: str(v) if isinstance(v, Decimal) else v for k, v in event.body.items()}
    return {"login": event.login, "ts": event.ts.astimezone(UTC).isoformat(), "body": body, "kind": event.kind}


class BridgeSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Settings of an ``mt5-manager`` connection (the bridge's shared secret is the secret
    ``bridge_secret``)."""

    url: str
    verify_tls: bool = True
    ca_file: str | None = None
    timeout_s: float = 15.0
    wait_s: float = 1.0
    poll_interval_s: float = 0.0
    readings_interval_s: float = 1.0
    batch: int = 5000
    groups_by_phase: dict[str, str] = {}
    leverage: int = 100
    flatten_on_disable: bool = True
    deposit_on_create: bool = True


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


class BridgeGateway:
    family = "mt5-manager"

    def __init__(self, settings: BridgeSettings, secrets: dict[str, Secret], *,
                 transport: httpx.BaseTransport | None = None) -> None:
        secret = secrets.get("bridge_secret")
        if not secret:
            raise ValueError("an mt5-manager connection needs the bridge's shared secret (secret `bridge_secret`)")
        if not settings.url.startswith(("https://", "http://")):
            raise ValueError("the bridge URL must start with https:// (http:// only on a private network)")
        self.settings = settings
        self._secret = secret
        self._options = dict(timeout=settings.timeout_s + settings.wait_s, transport=transport,
                             verify=settings.ca_file or settings.verify_tls)
        self._client: httpx.Client | None = None
        self._readings_at = 0.0

    def __repr__(self) -> str:
        return f"BridgeGateway({self.settings.url!r})"

    def open(self) -> None:
        if self._client is None or self._client.is_closed:
            self._client = httpx.Client(base_url=self.settings.url.rstrip("/"), **self._options)
        self._call("GET", "/readings", {"logins": ""})  # proves the secret and the bridge's session

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _call(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        if self._client is None or self._client.is_closed:
            self._client = httpx.Client(base_url=self.settings.url.rstrip("/"), **self._options)
        query = str(httpx.QueryParams(params or {}))
        target = path + (f"?{query}" if query else "")
        data = b"" if body is None else msgspec.json.encode(body)
        stamp = str(int(time.time()))
        headers = {"X-Propcrm-Timestamp": stamp,
                   "X-Propcrm-Signature": sign(self._secret.reveal(), stamp, method, target, data),
                   "Content-Type": "application/json"}
        try:
            response = self._client.request(method, target, content=data or None, headers=headers)
        except httpx.TransportError as exc:
            raise NotConnected(f"bridge {path}: {type(exc).__name__}") from None
        if response.status_code == 503:
            raise NotConnected(f"bridge {path}: the bridge has no session with the MT5 server")
        if response.status_code == 410:
            raise PlatformError("the bridge no longer holds the events after propcrm's cursor (pruned from its "
                                "journal): re-sync from the deal history", retryable=False)
        if response.status_code != 200:
            try:
                reason = response.json().get("error", "")
            except ValueError:
                reason = ""
            raise PlatformError(f"bridge {path}: HTTP {response.status_code} {reason}".strip(),
                                retryable=response.status_code >= 500, code=str(response.status_code))
        return response.json()

    # -- reading
    def readings(self, logins: Sequence[str]) -> list[AccountReading]:
        answer = self._call("GET", "/readings", {"logins": ",".join(logins)})
        readings = []
        for item in answer.get("readings", []):
            readings.append(AccountReading(
                login=str(item["login"]), observed_at=dt.datetime.fromisoformat(item["observed_at"]),
                balance=Decimal(str(item["balance"])), equity=_decimal(item.get("equity")),
                margin=_decimal(item.get("margin")), floating=_decimal(item.get("floating")),
                trade_enabled=bool(item.get("trade_enabled", True)), group=item.get("group")))
        return readings

    def positions(self, logins: Sequence[str]) -> list[PlatformPosition]:
        answer = self._call("GET", "/positions", {"logins": ",".join(logins)})
        return [PlatformPosition(login=str(p["login"]), position=str(p["position"]), symbol=p["symbol"], side=p["side"],
                                 lots=Decimal(str(p["lots"])), price=Decimal(str(p["price"])),
                                 opened_at=dt.datetime.fromisoformat(p["opened_at"]), sl=_decimal(p.get("sl")),
                                 tp=_decimal(p.get("tp")))
                for p in answer.get("positions", [])]

    def poll(self, cursor: str | None, logins: Sequence[str], *, start: dt.datetime) -> Poll:
        poll = Poll()
        now = time.monotonic()
        if cursor is None or now - self._readings_at >= self.settings.readings_interval_s:
            poll.readings = self.readings(logins) if logins else []
            self._readings_at = now
        after = int(cursor) if cursor else 0
        answer = self._call("GET", "/events", {"after": after, "wait": self.settings.wait_s,
                                               "limit": self.settings.batch,
                                               "since_ms": int(start.timestamp() * 1000) if cursor is None else 0})
        poll.events = [event_from_wire(item) for item in answer.get("events", [])]
        poll.cursor = str(answer.get("next", after))
        if answer.get("platform_ms"):
            poll.platform_time = dt.datetime.fromtimestamp(answer["platform_ms"] / 1000, UTC)
        return poll

    def _deal_events(self, login: str, since: dt.datetime) -> list[PlatformEvent]:
        answer = self._call("GET", "/deals", {"login": login, "from": int(since.timestamp() * 1000) - 1000,
                                              "to": int(time.time() * 1000) + 86_400_000})
        return [event_from_wire(item) for item in answer.get("events", [])]

    def opening_events(self, position: PlatformPosition) -> list[PlatformEvent]:
        found = [e for e in self._deal_events(position.login, position.opened_at)
                 if e.body.get("type") == "trade_opened" and str(e.body.get("position")) == position.position]
        if found:
            return found
        from .mapping import opening_from_position

        return [opening_from_position(position)]

    def closing_events(self, login: str, position: str, since: dt.datetime) -> list[PlatformEvent]:
        return [e for e in self._deal_events(login, since)
                if e.body.get("type") == "trade_closed" and str(e.body.get("position")) == position]

    # -- commands
    def _command(self, command: str, /, **fields: Any) -> Any:
        return self._call("POST", "/commands", body={"command": command, **fields}).get("result")

    def set_trading(self, login: str, enabled: bool) -> None:
        self._command("set_trading", login=login, enabled=enabled)

    def close_positions(self, login: str) -> int:
        return int(self._command("close_positions", login=login) or 0)

    def balance_operation(self, login: str, amount: Decimal, comment: str) -> str:
        return str(self._command("balance_operation", login=login, amount=str(amount), comment=comment))

    def find_balance_operation(self, login: str, comment: str, since: dt.datetime) -> str | None:
        found = self._command("find_balance_operation", login=login, comment=comment,
                              since_ms=int(since.timestamp() * 1000))
        return None if found in (None, "") else str(found)

    def create_account(self, spec: NewAccount) -> str:
        return str(self._command("create_account", group=spec.group, leverage=spec.leverage, name=spec.name,
                                 email=spec.email, tag=spec.tag, password=spec.password,
                                 investor_password=spec.investor_password))

    def find_account(self, spec: NewAccount) -> str | None:
        found = self._command("find_account", group=spec.group, tag=spec.tag)
        return None if found in (None, "") else str(found)

    def change_group(self, login: str, group: str) -> None:
        self._command("change_group", login=login, group=group)


__all__ = ["BridgeGateway", "BridgeSettings", "event_from_wire", "event_to_wire", "sign", "verify"]
