"""The simulator's MT5 Web API: the counterpart propcrm's ``mt5-web`` connector is tested against.

Written from MetaQuotes' Web API documentation, like the connector, but from the server's side:

* ``/api/auth/start`` → ``srv_rand`` (16 random bytes, hex); ``/api/auth/answer`` checks
  ``srv_rand_answer = MD5(MD5(MD5(UTF-16LE(password)) + "WebAPI") + srv_rand)`` within 10 seconds and
  answers ``cli_rand_answer`` the same way. The session belongs to the TCP connection (keep-alive);
  180 seconds without a request end it. A request on a connection without a session is answered
  HTTP 403 (what a real access server answers there is not documented; see docs/platforms.md).
* answers are ``{"retcode": "0 Done", "answer": …}`` with numbers as JSON strings; paged requests
  give at most 100 records (``total``); ``get_batch`` takes ``login`` lists, a ``group`` mask or
  ``ticket`` lists — one of them; deals need ``from``/``to`` (server seconds) with logins or groups;
* ``user/account/get_batch`` leaves out accounts without positions or activity since the server
  started, as the documentation says MT5 does;
* ``dealer/send_request`` takes ``TA_DEALER_POS_EXECUTE`` (200) only: a position opened, or closed
  when ``Position`` is given; ``dealer/get_request_result`` answers per request id.

Its own endpoints (not MT5; the simulator's "terminal" for its traders and its controls) are under
``/sim/``: ``login``, ``order``, ``close``, ``status`` and, when started with controls on, ``control``.
"""

from __future__ import annotations

import hashlib
import secrets as pyrandom
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .server import (DEFAULT_RIGHTS, DONE, INVALID, REASON_DEALER, USER_RIGHT_TRADE_DISABLED, SimServer, cents,
                     group_matches)

_ENC = msgspec.json.Encoder()
AUTH_WINDOW_S = 10.0
IDLE_S = 180.0
MAX_PAGE = 100
OK = "0 Done"


def _password_hash(password: str) -> bytes:
    return hashlib.md5(hashlib.md5(password.encode("utf-16-le")).digest() + b"WebAPI").digest()


def _answer(password: str, rand_hex: str) -> str:
    return hashlib.md5(_password_hash(password) + bytes.fromhex(rand_hex)).hexdigest()


def _json(document: Any, status: int = 200) -> Response:
    return Response(_ENC.encode(document), status_code=status, media_type="application/json")


def _deals_answer(deals: list) -> Response:
    """``{"retcode": "0 Done", "answer": [deal, …]}`` from each deal's JSON, encoded once per deal."""
    return Response(b'{"retcode":"0 Done","answer":[' + b",".join([d.web_json() for d in deals]) + b"]}",
                    media_type="application/json")


def _fail(retcode: str) -> Response:
    return _json({"retcode": retcode})


@dataclass
class _Session:
    srv_rand: str | None = None
    started: float = 0.0
    authenticated: bool = False
    last: float = 0.0


class WebApi:
    def __init__(self, server: SimServer, *, manager: str, password: str, controls: bool = False,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.manager = str(manager)
        self._password = password
        self.controls = controls
        self.now = now
        self.sessions: dict[tuple[str, int], _Session] = {}
        self.started_wall = server.wall()
        self.active: set[int] = set()  # accounts with activity since the start (they have a trading state)
        self.requests_served = 0
        self._states: dict[int, tuple[tuple, bytes]] = {}  # login → (what it depends on, its trading state)

    # ------------------------------------------------------------------ plumbing
    def _key(self, request: Request) -> tuple[str, int]:
        client = request.client
        return (client.host, client.port) if client else ("?", 0)

    async def _params(self, request: Request) -> tuple[dict[str, str], Any]:
        params = dict(request.query_params)
        body = None
        if request.method == "POST":
            raw = await request.body()
            if raw.strip():
                try:
                    body = msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    body = None
        return params, body

    def app(self) -> Starlette:
        routes = [Route(path, self._guarded(handler), methods=["GET", "POST"]) for path, handler in self._routes().items()]
        routes += [Route("/api/auth/start", self.auth_start, methods=["GET", "POST"]),
                   Route("/api/auth/answer", self.auth_answer, methods=["GET", "POST"]),
                   Route("/sim/login", self.sim_login, methods=["POST"]),
                   Route("/sim/order", self.sim_order, methods=["POST"]),
                   Route("/sim/close", self.sim_close, methods=["POST"]),
                   Route("/sim/status", self.sim_status, methods=["GET"]),
                   Route("/sim/control", self.sim_control, methods=["POST"])]
        return Starlette(routes=routes)

    def _routes(self) -> dict[str, Callable]:
        return {"/api/test/access": self.test_access, "/api/quit": self.quit, "/api/user/add": self.user_add,
                "/api/user/update": self.user_update, "/api/user/get": self.user_get,
                "/api/user/get_batch": self.user_get_batch, "/api/user/logins": self.user_logins,
                "/api/user/account/get": self.account_get, "/api/user/account/get_batch": self.account_get_batch,
                "/api/position/get_batch": self.position_get_batch, "/api/position/get_page": self.position_get_page,
                "/api/position/get_total": self.position_get_total, "/api/deal/get_batch": self.deal_get_batch,
                "/api/deal/get_page": self.deal_get_page, "/api/deal/get_total": self.deal_get_total,
                "/api/trade/balance": self.trade_balance, "/api/dealer/send_request": self.dealer_send,
                "/api/dealer/get_request_result": self.dealer_result}

    def _guarded(self, handler: Callable) -> Callable:
        async def endpoint(request: Request) -> Response:
            session = self.sessions.get(self._key(request))
            now = self.now()
            if session is not None and session.authenticated and now - session.last > IDLE_S:
                session.authenticated = False
            if session is None or not session.authenticated:
                return _json({"retcode": "8 Not enough permissions"}, status=403)
            session.last = now
            self.requests_served += 1
            params, body = await self._params(request)
            try:
                return handler(params, body, request)
            except (KeyError, ValueError) as exc:
                text = str(exc.args[0]) if exc.args else ""
                return _fail(text if text[:1].isdigit() else "3 Invalid parameters")
        return endpoint

    # ------------------------------------------------------------------ authentication
    async def auth_start(self, request: Request) -> Response:
        params, _ = await self._params(request)
        agent = params.get("agent", "")
        try:
            version = int(params.get("version", "0"))
        except ValueError:
            version = 0
        if params.get("type") != "manager" or not agent or " " in agent or version < 484:
            return _fail("3 Invalid parameters")
        if params.get("login") != self.manager:
            return _fail("1001 Invalid account")
        session = self.sessions.setdefault(self._key(request), _Session())
        session.srv_rand, session.started, session.authenticated = pyrandom.token_hex(16), self.now(), False
        return _json({"retcode": OK, "version_access": "4150", "srv_rand": session.srv_rand})

    async def auth_answer(self, request: Request) -> Response:
        params, _ = await self._params(request)
        session = self.sessions.get(self._key(request))
        if session is None or session.srv_rand is None or self.now() - session.started > AUTH_WINDOW_S:
            return _fail("3 Invalid parameters")
        expected = _answer(self._password, session.srv_rand)
        session.srv_rand = None
        cli_rand = params.get("cli_rand", "")
        if params.get("srv_rand_answer", "").lower() != expected or len(cli_rand) != 32:
            return _fail("1001 Invalid account")
        try:
            cli_answer = _answer(self._password, cli_rand)
        except ValueError:
            return _fail("3 Invalid parameters")
        session.authenticated, session.last = True, self.now()
        return _json({"retcode": OK, "version_access": "4150", "version_trade": "4150", "cli_rand_answer": cli_answer})

    def test_access(self, params, body, request) -> Response:
        return _fail(OK)

    def quit(self, params, body, request) -> Response:
        self.sessions.pop(self._key(request), None)
        return _fail(OK)

    # ------------------------------------------------------------------ users
    def _user(self, login: int) -> dict[str, Any]:
        a = self.server.accounts[login]
        return {"Login": str(a.login), "Group": a.group, "CertSerialNumber": "0", "Rights": str(a.rights),
                "Registration": str(a.registration), "LastAccess": str(a.last_access), "LastIP": a.last_ip,
                "Name": a.name, "Email": a.email, "Comment": a.comment, "Leverage": str(a.leverage),
                "Balance": cents(a.balance_c), "Credit": cents(a.credit_c), "Agent": "0", "Status": ""}

    @staticmethod
    def _merged(params: dict[str, str], body: Any) -> dict[str, Any]:
        merged: dict[str, Any] = {k.lower(): v for k, v in params.items()}
        if isinstance(body, dict):  # the JSON description overwrites the parameters
            merged.update({k.lower(): v for k, v in body.items()})
        return merged

    def user_add(self, params, body, request) -> Response:
        fields = self._merged(params, body)
        group, name = fields.get("group"), fields.get("name")
        try:
            leverage = int(fields.get("leverage", 0))
        except (TypeError, ValueError):
            leverage = 0
        password = str(fields.get("passmain") or fields.get("pass_main") or "")
        if not group or not name or not 1 <= leverage <= 500 or not password:
            return _fail("3 Invalid parameters")
        if not (8 <= len(password) <= 16 and any(c.islower() for c in password) and any(c.isupper() for c in password)
                and any(c.isdigit() for c in password) and any(not c.isalnum() for c in password)):
            return _fail("3006 Invalid account password")
        try:
            account = self.server.add_user(group=str(group), name=str(name)[:127], leverage=leverage,
                                           rights=int(fields.get("rights", DEFAULT_RIGHTS)),
                                           email=str(fields.get("email", "")), comment=str(fields.get("comment", ""))[:63],
                                           pass_main=password,
                                           pass_investor=str(fields.get("passinvestor") or fields.get("pass_investor") or ""),
                                           login=int(fields.get("login", 0) or 0))
        except ValueError as exc:
            return _fail(str(exc))
        return _json({"retcode": OK, "answer": self._user(account.login)})

    def user_update(self, params, body, request) -> Response:
        fields = self._merged(params, body)
        login = int(fields["login"])
        if login not in self.server.accounts:
            return _fail("13 Not found")
        changes: dict[str, Any] = {}
        for key, attribute, kind in (("rights", "rights", int), ("group", "group", str), ("name", "name", str),
                                     ("leverage", "leverage", int), ("email", "email", str),
                                     ("comment", "comment", str)):
            if key in fields and fields[key] not in (None, ""):
                try:
                    changes[attribute] = kind(fields[key])
                except (TypeError, ValueError):
                    continue  # "If a parameter value is incorrect, the parameter does not change."
        self.server.update_user(login, **changes)
        return _json({"retcode": OK, "answer": self._user(login)})

    def user_get(self, params, body, request) -> Response:
        login = int(params["login"])
        if login not in self.server.accounts:
            return _fail("13 Not found")
        return _json({"retcode": OK, "answer": self._user(login)})

    def _logins(self, params: dict[str, str], body: Any) -> list[int]:
        if params.get("group"):
            return self.server.logins_of(group=params["group"])
        raw = params.get("login", "")
        logins = [int(x) for x in raw.split(",") if x.strip()]
        if isinstance(body, dict) and isinstance(body.get("login"), list):
            logins += [int(x) for x in body["login"]]
        return self.server.logins_of(logins=logins)

    def user_get_batch(self, params, body, request) -> Response:
        with self.server.lock:
            return _json({"retcode": OK, "answer": [self._user(l) for l in self._logins(params, body)]})

    def user_logins(self, params, body, request) -> Response:
        return _json({"retcode": OK, "answer": [str(l) for l in self.server.logins_of(group=params.get("group", "*"))]})

    def _state_json(self, login: int) -> bytes:
        """:meth:`_state` encoded, made again only when something it shows may have changed: the account's
        deals and settings, or — with positions open — a new marking of prices."""
        server = self.server
        account = server.accounts[login]
        positions = server.open_by_login.get(login)
        key = (server.touched.get(login, 0), server.price_generation if positions else -1, len(positions or ()),
               account.balance_c, account.credit_c, account.leverage)
        cached = self._states.get(login)
        if cached is not None and cached[0] == key:
            return cached[1]
        encoded = _ENC.encode(self._state(login))
        self._states[login] = (key, encoded)
        return encoded

    def _state(self, login: int) -> dict[str, Any]:
        s = self.server.trade_state(login)

        def money(value: float) -> str:
            return cents(round(value * 100))

        level = s["equity"] / s["margin"] * 100 if s["margin"] else 0.0
        return {"Login": str(login), "CurrencyDigits": "2", "Balance": money(s["balance"]), "Credit": money(s["credit"]),
                "Margin": money(s["margin"]), "MarginFree": money(s["free"]), "MarginLevel": f"{level:.2f}",
                "MarginLeverage": str(self.server.accounts[login].leverage), "Profit": money(s["profit"]),
                "Storage": money(s["storage"]), "Floating": money(s["floating"]), "Equity": money(s["equity"]),
                "SOActivation": "0", "SOTime": "0", "SOLevel": "0.00", "SOEquity": "0.00", "SOMargin": "0.00"}

    def _has_state(self, login: int) -> bool:
        return bool(self.server.open_by_login.get(login)) or login in self.active or any(
            d.wall_ms >= self.started_wall * 1000 for d in self.server.deals_by_login.get(login, [])[-1:])

    def account_get(self, params, body, request) -> Response:
        login = int(params["login"])
        if login not in self.server.accounts or not self._has_state(login):
            return _fail("13 Not found")
        return _json({"retcode": OK, "answer": self._state(login)})

    def account_get_batch(self, params, body, request) -> Response:
        with self.server.lock:
            answer = [self._state_json(l) for l in self._logins(params, body) if self._has_state(l)]
        return Response(b'{"retcode":"0 Done","answer":[' + b",".join(answer) + b"]}", media_type="application/json")

    # ------------------------------------------------------------------ positions
    def _position(self, p) -> dict[str, Any]:
        spec = self.server.symbols[p.symbol]
        d = spec.digits
        created = p.time_ms // 1000
        return {"Login": str(p.login), "Symbol": p.symbol, "Action": str(p.action), "Digits": str(d),
                "DigitsCurrency": "2", "ContractSize": f"{spec.contract_size:.2f}", "Position": str(p.ticket),
                "ExternalID": "", "TimeCreate": str(created), "TimeUpdate": str(created),
                "TimeCreateMsc": str(p.time_ms), "TimeUpdateMsc": str(p.time_ms), "PriceOpen": f"{p.price_open:.{d}f}",
                "PriceCurrent": f"{p.price_current:.{d}f}", "PriceSL": f"{p.sl:.{d}f}", "PriceTP": f"{p.tp:.{d}f}",
                "Volume": str(p.volume_ext // 10_000), "VolumeExt": str(p.volume_ext),
                "Profit": cents(round(p.profit * 100)), "Storage": cents(p.storage_c), "RateProfit": "1.00000000",
                "RateMargin": "1.00000000", "ExpertID": "0", "ExpertPositionID": "0", "Comment": p.comment,
                "Dealer": "0", "Reason": "0"}

    def position_get_batch(self, params, body, request) -> Response:
        with self.server.lock:
            if params.get("ticket"):
                tickets = [int(t) for t in params["ticket"].split(",") if t.strip()]
                found = [self.server.positions[t] for t in tickets if t in self.server.positions]
            else:
                found = self.server.positions_of(self._logins(params, body))
            return _json({"retcode": OK, "answer": [self._position(p) for p in found]})

    def _page(self, params: dict[str, str]) -> tuple[int, int]:
        offset = int(params.get("offset", 0))
        total = min(int(params.get("total", MAX_PAGE)), MAX_PAGE)
        return offset, total

    def position_get_page(self, params, body, request) -> Response:
        offset, total = self._page(params)
        with self.server.lock:
            found = sorted(self.server.positions_of([int(params["login"])]), key=lambda p: p.ticket)
            return _json({"retcode": OK, "answer": [self._position(p) for p in found[offset:offset + total]]})

    def position_get_total(self, params, body, request) -> Response:
        return _json({"retcode": OK, "answer": {"total": str(len(self.server.positions_of([int(params["login"])])))}})

    # ------------------------------------------------------------------ deals
    def deal_get_batch(self, params, body, request) -> Response:
        with self.server.lock:
            if params.get("ticket"):
                tickets = {int(t) for t in params["ticket"].split(",") if t.strip()}
                found = [d for d in self.server.deals if d.Deal in tickets]
            else:
                if "from" not in params or "to" not in params:
                    return _fail("3 Invalid parameters")
                found = self.server.deals_between(self._logins(params, body), int(params["from"]), int(params["to"]))
            if params.get("symbol"):
                symbols = set(params["symbol"].split(","))
                found = [d for d in found if d.Symbol in symbols]
            return _deals_answer(found)

    def deal_get_page(self, params, body, request) -> Response:
        offset, total = self._page(params)
        with self.server.lock:
            found = self.server.deals_between([int(params["login"])], int(params["from"]), int(params["to"]))
            return _deals_answer(found[offset:offset + total])

    def deal_get_total(self, params, body, request) -> Response:
        found = self.server.deals_between([int(params["login"])], int(params["from"]), int(params["to"]))
        return _json({"retcode": OK, "answer": {"total": str(len(found))}})

    # ------------------------------------------------------------------ trading
    def trade_balance(self, params, body, request) -> Response:
        login = int(params["login"])
        kind = int(params.get("type", 0))
        if kind not in (2, 3, 4, 5, 6):
            return _fail("3 Invalid parameters")
        amount = round(float(params["balance"]) * 100)
        if abs(amount) > 1_000_000_000 * 100:
            return _fail("4005 Money limit reached")
        if login not in self.server.accounts:
            return _fail("13 Not found")
        with self.server.lock:
            account = self.server.accounts[login]
            if amount < 0 and account.balance_c + amount < 0:
                return _fail("10019 Not enough money")
            if amount < 0 and params.get("check_margin", "1") != "0":
                if self.server.trade_state(login)["free"] * 100 < -amount:
                    return _fail("10019 Not enough money")
            deal = self.server.balance_operation(login, amount, params.get("comment", ""),
                                                 action=3 if kind == 3 else 2)
        self.active.add(login)
        return _json({"retcode": OK, "answer": {"Ticket": str(deal.Deal)}})

    def dealer_send(self, params, body, request) -> Response:
        if not isinstance(body, dict):
            return _fail("3 Invalid parameters")
        try:
            action = int(body.get("Action", 0))
            login = int(body["Login"])
        except (KeyError, TypeError, ValueError):
            return _fail("3 Invalid parameters")
        if not 200 <= action <= 255:
            return _fail("3 Invalid parameters")
        request_id = self.server.next_request
        self.server.next_request += 1
        if action != 200:
            result = {"retcode": INVALID, "deal": 0, "order": 0, "price": 0.0}
        elif body.get("Position") not in (None, "", 0, "0"):
            outcome = self.server.close_position(int(body["Position"]), reason=REASON_DEALER, login=login, dealer=True)
            result = {"retcode": outcome.retcode, "deal": outcome.deal, "order": outcome.order, "price": outcome.price}
        else:
            volume_ext = int(body.get("VolumeExt") or int(body.get("Volume", 0)) * 10_000)
            outcome = self.server.execute(login, str(body.get("Symbol", "")), int(body.get("Type", 0)), volume_ext,
                                          sl=float(body.get("PriceSL", 0) or 0), tp=float(body.get("PriceTP", 0) or 0),
                                          comment=str(body.get("Comment", "")), dealer=True)
            result = {"retcode": outcome.retcode, "deal": outcome.deal, "order": outcome.order, "price": outcome.price}
        self.active.add(login)
        self.server.requests[request_id] = {**result, "login": login, "at": self.now()}
        return _json({"retcode": OK, "answer": {"ID": str(request_id)}})

    def dealer_result(self, params, body, request) -> Response:
        document: dict[str, Any] = {"retcode": OK}
        for text in params.get("id", "").split(","):
            if not text.strip():
                continue
            found = self.server.requests.get(int(text))
            if found is None:
                continue
            code = found["retcode"].split(" ", 1)[0]
            document[text] = [
                {"result": {"ID": text, "Retcode": code, "DealID": str(found["deal"]), "OrderID": str(found["order"]),
                            "Price": f"{found['price']}"}},
                {"answer": {"ID": text, "Login": str(found["login"]), "ResultRetcode": found["retcode"],
                            "ResultDeal": str(found["deal"]), "ResultOrder": str(found["order"]),
                            "ResultPrice": f"{found['price']}"}}]
        return _json(document)

    # ------------------------------------------------------------------ the simulator's own terminal
    async def _trader(self, request: Request) -> tuple[dict[str, Any], int] | Response:
        try:
            body = msgspec.json.decode(await request.body())
            login = int(body["login"])
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            return _fail("3 Invalid parameters")
        account = self.server.accounts.get(login)
        if account is None or account.pass_main != str(body.get("password", "")):
            return _fail("1001 Invalid account")
        return body, login

    async def sim_login(self, request: Request) -> Response:
        found = await self._trader(request)
        if isinstance(found, Response):
            return found
        body, login = found
        self.server.login_seen(login, str(body.get("ip") or (request.client.host if request.client else "")))
        return _fail(OK)

    async def sim_order(self, request: Request) -> Response:
        found = await self._trader(request)
        if isinstance(found, Response):
            return found
        body, login = found
        try:
            volume_ext = round(float(body["lots"]) * 100_000_000)
            side = {"buy": 0, "sell": 1}[str(body["side"])]
        except (KeyError, ValueError):
            return _fail("3 Invalid parameters")
        result = self.server.execute(login, str(body.get("symbol", "")), side, volume_ext,
                                     sl=float(body.get("sl") or 0), tp=float(body.get("tp") or 0))
        self.active.add(login)
        return _json({"retcode": result.retcode, "order": result.order, "deal": result.deal, "price": result.price})

    async def sim_close(self, request: Request) -> Response:
        found = await self._trader(request)
        if isinstance(found, Response):
            return found
        body, login = found
        result = self.server.close_position(int(body.get("position", 0)), login=login)
        return _json({"retcode": result.retcode, "deal": result.deal, "price": result.price})

    async def sim_status(self, request: Request) -> Response:
        with self.server.lock:
            accounts = self.server.accounts.values()
            return _json({"accounts": len(self.server.accounts), "positions": len(self.server.positions),
                          "deals": len(self.server.deals),
                          "last_deal": self.server.deals[-1].Deal if self.server.deals else None,
                          "orders_refused": self.server.orders_refused,
                          "trade_disabled": sorted(a.login for a in accounts if a.rights & USER_RIGHT_TRADE_DISABLED),
                          "refused": {str(a.login): a.refused for a in accounts if a.refused},
                          "prices": {n: [b, a] for n, (b, a) in self.server.prices.items()}})

    async def sim_control(self, request: Request) -> Response:
        if not self.controls:
            return _json({"error": "controls are off (start the simulator with --controls)"}, status=404)
        try:
            body = msgspec.json.decode(await request.body())
        except msgspec.DecodeError:
            return _fail("3 Invalid parameters")
        action = body.get("action")
        if action == "set_price":
            self.server.set_price(str(body["symbol"]), float(body["bid"]))
        elif action == "tick":
            self.server.tick(float(body.get("seconds", 0.1)))
        elif action == "rollover":
            self.server.rollover(triple=bool(body.get("triple")))
        else:
            return _fail("3 Invalid parameters")
        return _fail(OK)


__all__ = ["WebApi"]
