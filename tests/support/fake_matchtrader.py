"""A Match-Trader Broker API counterpart for contract tests, written from Match-Trade's Broker API
documentation (REST, v1 paths) from the server's side: the token in ``Authorization``, ``systemUuid``
and ``login`` in the query, RFC 3339 UTC times, problem bodies ``{"status", "title", "detail"}``, a
limit of requests per minute (HTTP 429 past it). It keeps accounts, open and closed positions and
ledger operations in memory, and refuses what a real server refuses: a request without the token, an
account of another system, a manual payment without a payment gateway, a withdrawal above the
balance, trading on an account whose access is not ``FULL``.

It is served through :class:`httpx.MockTransport` (no socket), so a test can also make the network
fail (``down``) and count requests.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

UTC = dt.timezone.utc
ACCESS = ("FULL", "CLOSE_ONLY", "TRADING_DISABLED", "TRADING_AND_LOGIN_DISABLED")


def _ts(value: dt.datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Account:
    login: str
    user_uuid: str
    offer_uuid: str
    balance: Decimal = Decimal(0)
    credit: Decimal = Decimal(0)
    access: str = "FULL"
    positions: dict[str, dict[str, Any]] = field(default_factory=dict)
    closed: list[dict[str, Any]] = field(default_factory=list)
    ledgers: list[dict[str, Any]] = field(default_factory=list)


class FakeBrokerApi:
    def __init__(self, *, token: str = "broker-token", system_uuid: str = "sys-1", gateway_uuid: str = "pg-manual",
                 per_minute: int = 500) -> None:
        self.token, self.system_uuid, self.gateway_uuid = token, system_uuid, gateway_uuid
        self.per_minute = per_minute
        self.offers = {"offer-challenge": "challenge", "offer-funded": "funded"}  # offer uuid -> group
        self.users: dict[str, str] = {}  # e-mail -> user uuid
        self.accounts: dict[str, Account] = {}
        self.prices: dict[str, Decimal] = {"EURUSD": Decimal("1.10000")}
        self.requests: list[tuple[str, str]] = []
        self.down = False
        self.now = dt.datetime.now(UTC).replace(microsecond=0)
        self._ids = itertools.count(5001)
        self._logins = itertools.count(700001)

    # ------------------------------------------------------------------ test-side helpers
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def user(self, email: str) -> str:
        return self.users.setdefault(email, str(uuid.uuid4()))

    def account(self, email: str = "t@example.com", *, offer: str = "offer-challenge", balance: str = "0") -> str:
        login = str(next(self._logins))
        self.accounts[login] = Account(login, self.user(email), offer)
        if Decimal(balance):
            self._ledger(self.accounts[login], "DEPOSIT", Decimal(balance), "initial")
        return login

    def tick(self, seconds: float = 1.0) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now

    def trade(self, login: str, symbol: str = "EURUSD", side: str = "BUY", volume: str = "1") -> str:
        """What the trader's platform does: open a position (refused unless access is FULL)."""
        account = self.accounts[login]
        if account.access != "FULL":
            raise PermissionError(f"trading is {account.access} for {login}")
        pid = str(next(self._ids))
        account.positions[pid] = {"id": pid, "symbol": symbol, "side": side, "volume": Decimal(volume),
                                  "openPrice": self.prices[symbol], "openTime": _ts(self.tick()),
                                  "commission": Decimal("-3.50"), "swap": Decimal(0)}
        return pid

    def close(self, login: str, pid: str) -> dict[str, Any]:
        account = self.accounts[login]
        p = account.positions.pop(pid)
        price = self.prices[p["symbol"]]
        sign = 1 if p["side"] == "BUY" else -1
        profit = (price - p["openPrice"]) * sign * p["volume"] * 100000
        record = {**p, "closePrice": price, "time": _ts(self.tick()), "profit": profit.quantize(Decimal("0.01")),
                  "closingOrderID": str(next(self._ids))}
        account.closed.append(record)
        account.balance += record["profit"] + p["commission"] + p["swap"]
        return record

    def _floating(self, account: Account) -> Decimal:
        total = Decimal(0)
        for p in account.positions.values():
            sign = 1 if p["side"] == "BUY" else -1
            total += (self.prices[p["symbol"]] - p["openPrice"]) * sign * p["volume"] * 100000
        return total.quantize(Decimal("0.01"))

    def _ledger(self, account: Account, kind: str, amount: Decimal, comment: str) -> dict[str, Any]:
        op = {"id": str(next(self._ids)), "uuid": str(uuid.uuid4()), "type": kind, "time": _ts(self.tick()),
              "profit": amount, "comment": comment}
        account.ledgers.append(op)
        account.balance += amount
        return op

    # ------------------------------------------------------------------ the HTTP side
    @staticmethod
    def _problem(status: int, title: str, detail: str = "") -> httpx.Response:
        return httpx.Response(status, json={"status": status, "title": title, "detail": detail})

    @staticmethod
    def _json(body: Any, status: int = 200) -> httpx.Response:
        return httpx.Response(status, content=json.dumps(body, default=str), headers={"Content-Type": "application/json"})

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.headers.get("Authorization") != self.token:
            return self._problem(401, "Unauthorized", "invalid or missing token")
        self.requests.append((request.method, request.url.path))
        if len(self.requests) > self.per_minute:
            return self._problem(429, "Too Many Requests", f"limit of {self.per_minute} requests per minute")
        q = request.url.params
        body = json.loads(request.content) if request.content else {}
        path, method = request.url.path, request.method
        if path == "/v1/offers" and method == "GET":
            return self._json({"offers": [{"uuid": u, "groupName": g} for u, g in self.offers.items()]})
        if path.startswith("/v1/accounts/by-email/") and method == "GET":
            email = path.rsplit("/", 1)[1]
            if email not in self.users:
                return self._problem(404, "Not Found", "no account with this e-mail")
            return self._json({"uuid": self.users[email], "email": email})
        if path.startswith("/v1/accounts/") and path.endswith("/trading-accounts") and method == "POST":
            user = path.split("/")[3]
            if user not in self.users.values():
                return self._problem(404, "Not Found", "no such account")
            if body.get("offerUuid") not in self.offers:
                return self._problem(400, "Bad Request", "unknown offer")
            login = str(next(self._logins))
            self.accounts[login] = Account(login, user, body["offerUuid"])
            return self._json({"uuid": str(uuid.uuid4()), "login": login, "offerUuid": body["offerUuid"]}, 201)
        if path in ("/v1/deposits/manual", "/v1/withdrawals/manual") and method == "POST":
            account = self._of(body.get("systemUuid"), body.get("login"))
            if isinstance(account, httpx.Response):
                return account
            if body.get("paymentGatewayUuid") != self.gateway_uuid:
                return self._problem(400, "Bad Request", "unknown payment gateway")
            amount = Decimal(str(body["amount"]))
            if amount <= 0:
                return self._problem(400, "Bad Request", "amount must be positive")
            if path.startswith("/v1/withdrawals"):
                if amount > account.balance:
                    return self._problem(400, "Bad Request", "not enough funds")
                amount = -amount
            op = self._ledger(account, "DEPOSIT" if amount > 0 else "WITHDRAWAL", amount, str(body.get("comment") or ""))
            return self._json({"uuid": op["uuid"], "status": "DONE"})
        if path == "/v1/trading-accounts/positions/close" and method == "POST":
            account = self._of(body.get("systemUuid"), body.get("login"))
            if isinstance(account, httpx.Response):
                return account
            for item in body.get("closePositions") or []:
                if item["positionId"] in account.positions:
                    self.close(account.login, item["positionId"])
            return self._json({"status": "OK"})
        account = self._of(q.get("systemUuid"), q.get("login"))
        if isinstance(account, httpx.Response):
            return account
        since = _parse(q["from"]) if q.get("from") else None
        if path == "/v1/trading-account" and method == "GET":
            floating = self._floating(account)
            return self._json({"login": account.login, "offerUuid": account.offer_uuid,
                               "access": account.access, "financeInfo": {
                                   "balance": account.balance, "credit": account.credit,
                                   "equity": account.balance + account.credit + floating, "profit": floating,
                                   "margin": Decimal(0)}})
        if path == "/v1/trading-account" and method == "PATCH":
            if "access" in body:
                if body["access"] not in ACCESS:
                    return self._problem(400, "Bad Request", "unknown access")
                account.access = body["access"]
            if "offerUuid" in body:
                if body["offerUuid"] not in self.offers:
                    return self._problem(400, "Bad Request", "unknown offer")
                account.offer_uuid = body["offerUuid"]
            return httpx.Response(204)
        if path == "/v1/trading-accounts/trading-data/open-positions":
            return self._json({"positions": list(account.positions.values())})
        if path == "/v1/trading-accounts/trading-data/closed-positions":
            return self._json({"closedPositions": [c for c in account.closed
                                                   if since is None or _parse(c["time"]) >= since]})
        if path == "/v1/trading-accounts/trading-data/ledgers":
            types = q.get_list("types")
            return self._json({"operations": [op for op in account.ledgers
                                              if (not types or op["type"] in types)
                                              and (since is None or _parse(op["time"]) >= since)]})
        return self._problem(404, "Not Found", path)

    def _of(self, system: Any, login: Any) -> Account | httpx.Response:
        if system != self.system_uuid:
            return self._problem(400, "Bad Request", "unknown systemUuid")
        account = self.accounts.get(str(login))
        if account is None:
            return self._problem(404, "Not Found", "no trading account with this login")
        return account
