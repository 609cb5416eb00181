"""Match-Trader Broker API (REST): the ``matchtrader`` gateway.

Written from Match-Trade's "Broker API" documentation (the REST part; base URL per broker, e.g. the
sandbox ``https://broker-api-demo.match-trader.com``): a token in the ``Authorization`` header; times
RFC 3339 in UTC ("server time is GMT"); a limit of 500 requests a minute; errors as HTTP statuses
with ``{"status", "title", "detail"}``. Endpoints used:

* ``GET /v1/trading-account?systemUuid=&login=`` — the account and its ``financeInfo`` (balance,
  equity, margin, credit, …);
* ``GET /v1/trading-accounts/trading-data/open-positions?systemUuid=&login=``,
  ``…/closed-positions?systemUuid=&login=&from=&to=`` and ``…/ledgers?systemUuid=&login=&types=``;
* ``POST /v1/trading-accounts/positions/close`` (``closePositions``: ``positionId`` + ``instrument``);
* ``POST /v1/deposits/manual`` and ``POST /v1/withdrawals/manual`` (``paymentGatewayUuid``,
  ``amount``, ``comment``);
* ``PATCH /v1/trading-account?systemUuid=&login=`` with ``access`` (``FULL``, ``CLOSE_ONLY``,
  ``TRADING_DISABLED``, ``TRADING_AND_LOGIN_DISABLED``) or ``offerUuid`` (an offer carries a group:
  changing the offer moves the account to its group);
* ``POST /v1/accounts/{accountUuid}/trading-accounts`` (``offerUuid``) and ``GET
  /v1/accounts/by-email/{email}`` — see :meth:`MatchTraderGateway.create_account`.

Events: a position's opening ``mt-open-<position id>``, each close ``mt-close-<closing order id>``
(profit, commission, swap of the closed position record), ledger operations ``mt-ledger-<id>``
(``DEPOSIT`` → deposit, ``WITHDRAWAL`` → withdrawal, ``COMMISSIONS`` → fee; credit, agent commission
and swaps are left out — swaps reach propcrm with the close). The live stream is a poll within the
rate limit: logins are visited in turn, so the more accounts, the longer between two looks at one
(``requests_per_minute``); Match-Trade's gRPC streams (``PositionsServiceExternal``,
``LedgerServiceExternal``) are the way to real time and are not used yet (docs/platforms.md).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import httpx
import msgspec

from ..port import AccountReading, NewAccount, NotConnected, PlatformError, PlatformEvent, PlatformPosition, Poll
from ..secrets import Secret

UTC = dt.timezone.utc
LEDGER_TYPES = ("DEPOSIT", "WITHDRAWAL", "COMMISSIONS")
ACCESS_DISABLED, ACCESS_FULL = "TRADING_DISABLED", "FULL"


class MatchTraderSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Settings of a ``matchtrader`` connection (the broker's API token is the secret ``api_key``)."""

    url: str
    system_uuid: str
    payment_gateway_uuid: str = ""
    groups_by_phase: dict[str, str] = {}  # phase (or "*") -> the *offer* UUID (on Match-Trader an offer carries the group)
    leverage: int = 100
    requests_per_minute: int = 450
    timeout_s: float = 15.0
    poll_interval_s: float = 1.0
    flatten_on_disable: bool = True
    deposit_on_create: bool = True
    verify_tls: bool = True


def _time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _rfc3339(ts: dt.datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _dec(value: Any) -> Decimal:
    if value is None or value == "":
        return Decimal(0)
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))


_DECODER = msgspec.json.Decoder(float_hook=Decimal)


class MatchTraderGateway:
    family = "matchtrader"

    def __init__(self, settings: MatchTraderSettings, secrets: dict[str, Secret], *,
                 transport: httpx.BaseTransport | None = None, sleep: Any = time.sleep) -> None:
        token = secrets.get("api_key")
        if not token:
            raise ValueError("a matchtrader connection needs the broker's API token (secret `api_key`)")
        self.settings = settings
        self._token = token
        self._options = dict(timeout=settings.timeout_s, transport=transport, verify=settings.verify_tls)
        self._client: httpx.Client | None = None
        self._sleep = sleep
        self._budget: list[float] = []
        self._turn = 0

    def __repr__(self) -> str:
        return f"MatchTraderGateway({self.settings.url!r})"

    # -- HTTP within the rate limit
    def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        if self._client is None or self._client.is_closed:
            self._client = httpx.Client(base_url=self.settings.url.rstrip("/"), **self._options)
        now = time.monotonic()
        self._budget = [t for t in self._budget if now - t < 60]
        if len(self._budget) >= self.settings.requests_per_minute:
            self._sleep(60 - (now - self._budget[0]))
        self._budget.append(time.monotonic())
        try:
            response = self._client.request(method, path, params=params,
                                            content=None if body is None else msgspec.json.encode(body),
                                            headers={"Authorization": self._token.reveal(),
                                                     "Content-Type": "application/json"})
        except httpx.TransportError as exc:
            raise NotConnected(f"{path}: {type(exc).__name__}") from None
        if response.status_code in (200, 201):
            return _DECODER.decode(response.content) if response.content else None
        if response.status_code == 204:
            return None
        try:
            detail = response.json().get("detail") or response.json().get("title") or ""
        except ValueError:
            detail = ""
        if response.status_code == 401:
            raise NotConnected(f"{path}: HTTP 401 (the API token is not accepted)")
        raise PlatformError(f"{path}: HTTP {response.status_code} {detail}".strip(),
                            retryable=response.status_code in (429,) or response.status_code >= 500,
                            code=str(response.status_code))

    def _account(self, login: str) -> dict[str, Any]:
        return self._call("GET", "/v1/trading-account", params={"systemUuid": self.settings.system_uuid,
                                                                 "login": login}) or {}

    # -- session
    def open(self) -> None:
        self._call("GET", "/v1/offers")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- reading
    def readings(self, logins: Sequence[str]) -> list[AccountReading]:
        found = []
        for login in logins:
            account = self._account(login)
            info = account.get("financeInfo") or {}
            if not account:
                continue
            equity = info.get("equity")
            found.append(AccountReading(
                login=login, observed_at=dt.datetime.now(UTC), balance=_dec(info.get("balance")),
                equity=None if equity is None else _dec(equity) - _dec(info.get("credit")),
                margin=None if info.get("margin") is None else _dec(info.get("margin")),
                floating=None if info.get("profit") is None else _dec(info.get("profit")),
                trade_enabled=str(account.get("access", ACCESS_FULL)) in (ACCESS_FULL, "CLOSE_ONLY")))
        return found

    def _open_positions(self, login: str) -> list[dict[str, Any]]:
        answer = self._call("GET", "/v1/trading-accounts/trading-data/open-positions",
                            params={"systemUuid": self.settings.system_uuid, "login": login}) or {}
        return list(answer.get("positions") or [])

    def positions(self, logins: Sequence[str]) -> list[PlatformPosition]:
        found = []
        for login in logins:
            for p in self._open_positions(login):
                found.append(PlatformPosition(login=login, position=str(p["id"]), symbol=str(p.get("symbol")),
                                              side=str(p.get("side", "BUY")).lower(), lots=_dec(p.get("volume")),
                                              price=_dec(p.get("openPrice")), opened_at=_time(p.get("openTime")),
                                              sl=_dec(p["stopLoss"]) if p.get("stopLoss") else None,
                                              tp=_dec(p["takeProfit"]) if p.get("takeProfit") else None))
        return found

    def _opening(self, login: str, p: dict[str, Any]) -> PlatformEvent:
        body = {"id": f"mt-open-{p['id']}", "type": "trade_opened", "position": str(p["id"]),
                "symbol": str(p.get("symbol")), "side": str(p.get("side", "BUY")).lower(),
                "lots": _dec(p.get("volume")), "price": _dec(p.get("openPrice"))}
        if p.get("stopLoss"):
            body["sl"] = _dec(p["stopLoss"])
        if p.get("takeProfit"):
            body["tp"] = _dec(p["takeProfit"])
        return PlatformEvent(login, _time(p.get("openTime")), body)

    def _closes(self, login: str, since: dt.datetime) -> list[PlatformEvent]:
        answer = self._call("GET", "/v1/trading-accounts/trading-data/closed-positions",
                            params={"systemUuid": self.settings.system_uuid, "login": login,
                                    "from": _rfc3339(since), "to": _rfc3339(dt.datetime.now(UTC) + dt.timedelta(days=1))})
        events = []
        for c in (answer or {}).get("closedPositions") or []:
            events.append(self._opening(login, c))
            closing = c.get("closingOrderID") or f"{c['id']}-{c.get('time')}"
            events.append(PlatformEvent(login, _time(c.get("time")), {
                "id": f"mt-close-{closing}", "type": "trade_closed", "position": str(c["id"]),
                "lots": _dec(c.get("volume")), "price": _dec(c.get("closePrice")), "profit": _dec(c.get("profit")),
                "commission": _dec(c.get("commission")), "swap": _dec(c.get("swap")), "reason": "manual"}))
        return events

    def _ledgers(self, login: str, since: dt.datetime) -> list[PlatformEvent]:
        answer = self._call("GET", "/v1/trading-accounts/trading-data/ledgers",
                            params={"systemUuid": self.settings.system_uuid, "login": login,
                                    "types": list(LEDGER_TYPES), "from": _rfc3339(since)})
        events = []
        for op in (answer or {}).get("operations") or []:
            kind, amount, comment = op.get("type"), _dec(op.get("profit")), str(op.get("comment") or "")
            if amount == 0 or comment.startswith(("pc init", "pc payout")):
                continue
            reason = {"DEPOSIT": "deposit", "WITHDRAWAL": "withdrawal", "COMMISSIONS": "fee"}.get(kind)
            if reason is None:
                continue
            events.append(PlatformEvent(login, _time(op.get("time")), {"id": f"mt-ledger-{op['id']}", "type": "balance",
                                                                      "amount": amount, "reason": reason}, "balance"))
        return events

    def poll(self, cursor: str | None, logins: Sequence[str], *, start: dt.datetime) -> Poll:
        """Visit the next logins in turn (as many as the rate limit allows; every login never looked at
        first): readings, then the closes, openings and ledger operations since the login's last look
        (minus a minute — ids make the overlap harmless)."""
        marks: dict[str, str] = msgspec.json.decode(cursor) if cursor else {}
        poll = Poll()
        if not logins:
            poll.cursor = cursor
            return poll
        per_cycle = max(1, int(self.settings.requests_per_minute * self.settings.poll_interval_s / 60 / 5))
        unseen = [login for login in logins if login not in marks]  # a first look at each login comes first
        chosen = unseen or [logins[(self._turn + i) % len(logins)] for i in range(min(per_cycle, len(logins)))]
        if not unseen:
            self._turn = (self._turn + len(chosen)) % len(logins)
        poll.readings = self.readings(chosen)
        now = dt.datetime.now(UTC)
        for login in chosen:
            since = _time(marks.get(login)) or start
            since = since - dt.timedelta(minutes=1)
            poll.events += [self._opening(login, p) for p in self._open_positions(login)
                            if _time(p.get("openTime")) and _time(p.get("openTime")) >= since]
            poll.events += self._closes(login, since)
            poll.events += self._ledgers(login, since)
            marks[login] = _rfc3339(now)
        poll.cursor = msgspec.json.encode(marks).decode()
        times = [e.ts for e in poll.events if e.ts]
        poll.platform_time = max(times) if times else None
        return poll

    def opening_events(self, position: PlatformPosition) -> list[PlatformEvent]:
        body = {"id": f"mt-open-{position.position}", "type": "trade_opened", "position": position.position,
                "symbol": position.symbol, "side": position.side, "lots": position.lots, "price": position.price}
        return [PlatformEvent(position.login, position.opened_at, body, "position")]

    def closing_events(self, login: str, position: str, since: dt.datetime) -> list[PlatformEvent]:
        return [e for e in self._closes(login, since) if e.body["type"] == "trade_closed"
                and e.body["position"] == position]

    # -- commands
    def _patch(self, login: str, body: dict[str, Any]) -> None:
        self._call("PATCH", "/v1/trading-account", params={"systemUuid": self.settings.system_uuid, "login": login},
                   body=body)

    def set_trading(self, login: str, enabled: bool) -> None:
        self._patch(login, {"access": ACCESS_FULL if enabled else ACCESS_DISABLED})

    def close_positions(self, login: str) -> int:
        positions = self._open_positions(login)
        if positions:
            answer = self._call("POST", "/v1/trading-accounts/positions/close", body={
                "systemUuid": self.settings.system_uuid, "login": login,
                "closePositions": [{"positionId": str(p["id"]), "instrument": str(p.get("symbol"))} for p in positions]})
            if (answer or {}).get("status") not in ("OK", None):
                raise PlatformError(f"closing the positions of {login}: {answer.get('status')}")
        return len(positions)

    def balance_operation(self, login: str, amount: Decimal, comment: str) -> str:
        if not self.settings.payment_gateway_uuid:
            raise PlatformError("settings.payment_gateway_uuid names no payment gateway for manual operations",
                                retryable=False)
        path = "/v1/deposits/manual" if amount > 0 else "/v1/withdrawals/manual"
        answer = self._call("POST", path, body={"systemUuid": self.settings.system_uuid, "login": login,
                                                "paymentGatewayUuid": self.settings.payment_gateway_uuid,
                                                "amount": abs(amount), "comment": comment})
        return str((answer or {}).get("uuid", ""))

    def find_balance_operation(self, login: str, comment: str, since: dt.datetime) -> str | None:
        answer = self._call("GET", "/v1/trading-accounts/trading-data/ledgers",
                            params={"systemUuid": self.settings.system_uuid, "login": login,
                                    "types": ["DEPOSIT", "WITHDRAWAL"], "from": _rfc3339(since)})
        for op in (answer or {}).get("operations") or []:
            if str(op.get("comment") or "") == comment:
                return str(op["id"])
        return None

    def create_account(self, spec: NewAccount) -> str:
        """A trading account for the trader's Match-Trader user (found by e-mail), under the offer
        ``spec.group`` (the connection's ``groups_by_phase`` names offers on Match-Trader)."""
        if not spec.email:
            raise PlatformError("Match-Trader accounts belong to a user found by e-mail; the trader has none",
                                retryable=False)
        try:
            user = self._call("GET", f"/v1/accounts/by-email/{spec.email}") or {}
        except PlatformError as exc:
            if exc.code != "404":
                raise
            user = {}
        if not user.get("uuid"):
            raise PlatformError("no Match-Trader user with the e-mail of this trader", retryable=False)
        created = self._call("POST", f"/v1/accounts/{user['uuid']}/trading-accounts", body={"offerUuid": spec.group})
        login = str((created or {}).get("login") or "")
        if not login:
            raise PlatformError("the trading account was created without a login")
        return login

    def find_account(self, spec: NewAccount) -> str | None:
        return None  # Match-Trader keeps no free-text tag on a trading account; the mapping makes it idempotent

    def change_group(self, login: str, group: str) -> None:
        self._patch(login, {"offerUuid": group})


__all__ = ["MatchTraderGateway", "MatchTraderSettings"]
