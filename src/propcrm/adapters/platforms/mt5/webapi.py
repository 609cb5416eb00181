"""MetaTrader 5 Web API (REST over HTTPS): the client and the ``mt5-web`` gateway.

Written from MetaQuotes' "MetaTrader 5 Web API" documentation (support.metaquotes.net, section API →
Web API; the pages followed are listed in docs/platforms.md):

* **Authentication** (``/api/auth/start`` then ``/api/auth/answer`` within 10 seconds):
  ``password_hash = MD5(MD5(UTF-16LE(password)) + "WebAPI")`` (binary digests),
  ``srv_rand_answer = MD5(password_hash + bytes(srv_rand))``; the client sends 16 random bytes as
  ``cli_rand`` and checks the server's ``cli_rand_answer = MD5(password_hash + cli_rand)`` — the
  server proves it knows the password too. :func:`password_hash` reproduces the documentation's
  worked example (``Password1`` → ``904ba8ec…``), and the unit tests hold it to that.
* **A stateful keep-alive connection**: the session belongs to the connection (180 s without a
  packet ends it; ``/api/test/access`` is the ping). The client keeps exactly one connection and
  re-authenticates once when the server no longer knows it.
* **Answers**: ``{"retcode": "0 Done", "answer": …}``; numbers arrive as JSON strings and are read
  as exact decimals. A retcode other than 0 raises :class:`PlatformError` naming it.
* Requests used: ``/api/user/get``, ``/api/user/get_batch``, ``/api/user/account/get_batch``,
  ``/api/user/add``, ``/api/user/update``, ``/api/position/get_batch``, ``/api/deal/get_batch``,
  ``/api/trade/balance``, ``/api/dealer/send_request``, ``/api/dealer/get_request_result``,
  ``/api/test/access``, ``/api/quit``.

The live stream is a poll (the Web API has no push): each step reads the accounts' trading states
first, then ``/api/deal/get_batch`` from the cursor's second on. The cursor is the server second to
read from and the tickets already seen at and after it (runs of tickets): deals of the same second
arriving across two polls are neither lost nor repeated; ``deal_overlap_s`` re-reads a little more
for deals that become visible late.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets as pyrandom
import string
import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import httpx
import msgspec

from ..port import (AccountReading, NewAccount, NotConnected, PlatformError, PlatformEvent, PlatformPosition, Poll)
from ..secrets import Secret
from ..servertime import ServerClock
from .mapping import Mt5Deal, deal_events, opening_from_position, position_from_record

log = logging.getLogger("propcrm.platforms.mt5.webapi")
UTC = dt.timezone.utc
ZERO = Decimal(0)

# IMTUser::EnUsersRights
USER_RIGHT_ENABLED = 0x1
USER_RIGHT_PASSWORD = 0x2
USER_RIGHT_TRADE_DISABLED = 0x4
USER_RIGHT_TRAILING = 0x20
USER_RIGHT_EXPERT = 0x40
USER_RIGHT_REPORTS = 0x100
NEW_ACCOUNT_RIGHTS = USER_RIGHT_ENABLED | USER_RIGHT_PASSWORD | USER_RIGHT_TRAILING | USER_RIGHT_EXPERT | USER_RIGHT_REPORTS
# IMTRequest::EnTradeActions / EnTradeActionFlags; IMTOrder::EnOrderType
TA_DEALER_POS_EXECUTE = 200
TA_FLAG_CLOSE, TA_FLAG_MARKET = 0x1, 0x2
OP_BUY, OP_SELL = 0, 1
# EnDealAction for /api/trade/balance
DEAL_BALANCE = 2
# return codes
MT_RET_OK = 0
MT_RET_ERR_NOTFOUND = 13
MT_RET_REQUEST_PLACED, MT_RET_REQUEST_DONE = 10008, 10009
DONE_CODES = {MT_RET_REQUEST_PLACED, MT_RET_REQUEST_DONE, 10010}
NOT_RETRYABLE = {3, 8, 13, 3002, 3003, 3004, 3006, 10013, 10014, 10015, 10016, 10017, 10019}


# ---------------------------------------------------------------------------------------------- auth
def password_hash(password: str) -> bytes:
    """``MD5(MD5(UTF-16LE(password)) + "WebAPI")`` as bytes (MetaQuotes: Authentication → Password Hash)."""
    return hashlib.md5(hashlib.md5(password.encode("utf-16-le")).digest() + b"WebAPI").digest()


def rand_answer(password: str, rand_hex: str) -> str:
    """The answer to a random sequence: ``MD5(password_hash + bytes(rand))`` in lowercase hex (both the
    client's ``srv_rand_answer`` and the server's ``cli_rand_answer``)."""
    return hashlib.md5(password_hash(password) + bytes.fromhex(rand_hex)).hexdigest()


# ---------------------------------------------------------------------------------------------- answers
class WebDeal(msgspec.Struct):
    Deal: int = 0
    Login: int = 0
    Order: int = 0
    Action: int = 0
    Entry: int = 0
    Time: int = 0
    TimeMsc: int = 0
    Symbol: str = ""
    Price: Decimal = ZERO
    PriceSL: Decimal = ZERO
    PriceTP: Decimal = ZERO
    Volume: int = 0
    VolumeExt: int = 0
    VolumeClosed: int = 0
    VolumeClosedExt: int = 0
    Profit: Decimal = ZERO
    Storage: Decimal = ZERO
    Commission: Decimal = ZERO
    PositionID: int = 0
    Reason: int = 0
    Comment: str = ""


class DealHead(msgspec.Struct):
    """What a poll needs of every deal it reads (most of them re-read, already seen): the rest of a
    deal is decoded only for the new ones."""

    Deal: int = 0
    Login: int = 0
    Time: int = 0
    TimeMsc: int = 0


class WebPosition(msgspec.Struct):
    Login: int = 0
    Position: int = 0
    Symbol: str = ""
    Action: int = 0
    Digits: int = 5
    Volume: int = 0
    VolumeExt: int = 0
    PriceOpen: Decimal = ZERO
    PriceCurrent: Decimal = ZERO
    PriceSL: Decimal = ZERO
    PriceTP: Decimal = ZERO
    Profit: Decimal = ZERO
    Storage: Decimal = ZERO
    TimeCreate: int = 0
    TimeCreateMsc: int = 0


class WebAccount(msgspec.Struct):
    Login: int = 0
    Balance: Decimal = ZERO
    Credit: Decimal = ZERO
    Margin: Decimal = ZERO
    MarginFree: Decimal = ZERO
    Profit: Decimal = ZERO
    Storage: Decimal = ZERO
    Floating: Decimal = ZERO
    Equity: Decimal = ZERO


class WebUser(msgspec.Struct):
    Login: int = 0
    Group: str = ""
    Rights: int = 0
    Name: str = ""
    Email: str = ""
    Comment: str = ""
    Leverage: int = 0
    Balance: Decimal = ZERO
    Credit: Decimal = ZERO
    LastAccess: int = 0
    LastIP: str = ""


def _answer_type(kind: Any) -> Any:
    return msgspec.defstruct("Answer", [("retcode", str), ("answer", kind, msgspec.UNSET)])


_DECODERS: dict[Any, msgspec.json.Decoder] = {}


def _decoder(kind: Any) -> msgspec.json.Decoder:
    found = _DECODERS.get(kind)
    if found is None:
        found = _DECODERS[kind] = msgspec.json.Decoder(_answer_type(kind), strict=False)
    return found


_ANY = msgspec.json.Decoder(strict=False, float_hook=Decimal)
_DEAL = msgspec.json.Decoder(WebDeal, strict=False)
_HEAD = msgspec.json.Decoder(DealHead, strict=False)
_RAW_DEALS = list[msgspec.Raw]


def retcode_number(retcode: str) -> int:
    head = (retcode or "").strip().split(" ", 1)[0]
    try:
        return int(head)
    except ValueError:
        return -1


# ---------------------------------------------------------------------------------------------- client
class Mt5WebApi:
    """One authenticated keep-alive session with an MT5 access server's Web API."""

    def __init__(self, url: str, manager: str, password: Secret, *, agent: str = "propcrm", version: int = 484,
                 timeout: float = 10.0, verify: bool | str = True, transport: httpx.BaseTransport | None = None) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError("the Web API URL must start with https:// (or http:// for a local test server)")
        if not agent or " " in agent:
            raise ValueError("agent must be a name without spaces (Web API: auth/start)")
        self.url = url.rstrip("/")
        self.manager = str(manager)
        self._password = password
        self.agent = agent
        self.version = max(int(version), 484)
        self._options = dict(timeout=timeout, verify=verify, transport=transport)
        self._client = self._new_client()
        self.authenticated = False
        self.version_access: str | None = None

    def __repr__(self) -> str:
        return f"Mt5WebApi({self.url!r}, manager={self.manager!r})"

    def _new_client(self) -> httpx.Client:
        # one keep-alive connection: the Web API's session belongs to the connection
        return httpx.Client(
            base_url=self.url, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers={"Connection": "keep-alive", "User-Agent": f"propcrm/{self.agent} (MetaTrader 5 Web API client)"},
            **self._options)

    # -- session
    def connect(self) -> None:
        self.authenticated = False
        if self._client.is_closed:
            self._client = self._new_client()
        start = self._raw("GET", "/api/auth/start",
                          {"version": self.version, "agent": self.agent, "login": self.manager, "type": "manager"})
        srv_rand = str(start.get("srv_rand") or "")
        if len(srv_rand) != 32:
            raise PlatformError("auth/start: the server sent no 16-byte srv_rand", retryable=False)
        password = self._password.reveal()
        cli_rand = pyrandom.token_hex(16)
        answer = self._raw("GET", "/api/auth/answer",
                           {"srv_rand_answer": rand_answer(password, srv_rand), "cli_rand": cli_rand})
        if str(answer.get("cli_rand_answer") or "").lower() != rand_answer(password, cli_rand):
            raise PlatformError("auth/answer: the server's cli_rand_answer is wrong — it does not know the password "
                                "(an impostor, or another server)", retryable=False)
        self.version_access = start.get("version_access")
        self.authenticated = True

    def ping(self) -> None:
        self.get("/api/test/access")

    def close(self) -> None:
        try:
            if self.authenticated:
                self._raw("GET", "/api/quit", {})
        except Exception:  # noqa: BLE001 - quitting a dead session
            pass
        self.authenticated = False
        self._client.close()

    # -- requests
    def _send(self, method: str, path: str, params: dict[str, Any], body: bytes | None) -> httpx.Response:
        try:
            return self._client.request(method, path, params=params, content=body,
                                        headers={"Content-Type": "application/x-www-form-urlencoded"} if body else None)
        except httpx.TransportError as exc:
            self.authenticated = False
            raise NotConnected(f"{path}: {type(exc).__name__}: {exc}") from None

    def _raw(self, method: str, path: str, params: dict[str, Any], body: bytes | None = None) -> dict[str, Any]:
        response = self._send(method, path, params, body)
        if response.status_code in (401, 403):
            self.authenticated = False
            raise NotConnected(f"{path}: HTTP {response.status_code} (the session is not authenticated)")
        if response.status_code != 200:
            raise PlatformError(f"{path}: HTTP {response.status_code}", retryable=response.status_code >= 500)
        try:
            document = _ANY.decode(response.content)
        except msgspec.DecodeError:
            raise PlatformError(f"{path}: the answer is not JSON") from None
        if not isinstance(document, dict):
            raise PlatformError(f"{path}: the answer is not a JSON object")
        code = retcode_number(str(document.get("retcode", "")))
        if code != MT_RET_OK:
            raise PlatformError(f"{path}: retcode {document.get('retcode')}", retryable=code not in NOT_RETRYABLE,
                                code=str(code))
        return document

    def request(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
                kind: Any = None, whole: bool = False) -> Any:
        """One request; re-authenticates once if the server lost the session. Returns ``answer`` (with
        ``whole``, the whole document: ``dealer/get_request_result`` answers per request id)."""
        data = None if body is None else json.dumps(body, default=str).encode()
        for attempt in (1, 2):
            if not self.authenticated:
                self.connect()
            try:
                if kind is None:
                    document = self._raw(method, path, params or {}, data)
                    return document if whole else document.get("answer")
                response = self._send(method, path, params or {}, data)
                if response.status_code in (401, 403):
                    self.authenticated = False
                    raise NotConnected(f"{path}: HTTP {response.status_code}")
                if response.status_code != 200:
                    raise PlatformError(f"{path}: HTTP {response.status_code}", retryable=response.status_code >= 500)
                try:
                    document = _decoder(kind).decode(response.content)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise PlatformError(f"{path}: unexpected answer ({exc})") from None
                code = retcode_number(document.retcode)
                if code == MT_RET_ERR_NOTFOUND:
                    return None
                if code != MT_RET_OK:
                    raise PlatformError(f"{path}: retcode {document.retcode}", retryable=code not in NOT_RETRYABLE,
                                        code=str(code))
                return None if document.answer is msgspec.UNSET else document.answer
            except NotConnected:
                if attempt == 2:
                    raise
                self.authenticated = False
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str, kind: Any = None, **params: Any) -> Any:
        return self.request("GET", path, params, None, kind)

    def post(self, path: str, body: Any, kind: Any = None, **params: Any) -> Any:
        return self.request("POST", path, params, body, kind)


# ---------------------------------------------------------------------------------------------- settings
class Mt5WebSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Settings of an ``mt5-web`` connection (the manager password is the secret ``password``)."""

    url: str
    manager: str
    groups: str = ""  # a group mask ("challenge\\*,funded\\*"); empty: request the mapped logins
    server_timezone: str = "UTC"
    agent: str = "propcrm"
    version: int = 484
    verify_tls: bool = True
    ca_file: str | None = None
    timeout_s: float = 10.0
    poll_interval_s: float = 0.25
    readings_interval_s: float = 1.0
    users_interval_s: float = 30.0
    deal_overlap_s: int = 1
    catchup_window_s: int = 3600
    ping_interval_s: float = 20.0
    groups_by_phase: dict[str, str] = {}
    leverage: int = 100
    flatten_on_disable: bool = True
    deposit_on_create: bool = True
    close_timeout_s: float = 10.0


def _runs(tickets: Iterable[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for ticket in sorted(set(tickets)):
        if runs and ticket == runs[-1][1] + 1:
            runs[-1][1] = ticket
        else:
            runs.append([ticket, ticket])
    return runs


def _in_runs(ticket: int, runs: list[list[int]]) -> bool:
    for a, b in runs:  # a loop, not any(generator): called for every deal a poll re-reads
        if a <= ticket <= b:
            return True
    return False


class DealCursor(msgspec.Struct, frozen=True):
    """``from``: server second to read from; ``seen``: tickets at and after it already ingested."""

    start: int = msgspec.field(name="from")
    seen: list[list[int]] = []

    def encode(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def parse(cls, text: str | None) -> DealCursor | None:
        if not text:
            return None
        try:
            return msgspec.json.decode(text, type=cls)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise PlatformError(f"the stored cursor {text[:60]!r} is not an MT5 deal cursor", retryable=False) from None


def new_password(length: int = 12) -> str:
    """A password MT5 accepts: lower- and upper-case letters, digits and a special character."""
    alphabet = string.ascii_letters + string.digits + "#@!$%"
    while True:
        candidate = "".join(pyrandom.choice(alphabet) for _ in range(length))
        if (any(c.islower() for c in candidate) and any(c.isupper() for c in candidate)
                and any(c.isdigit() for c in candidate) and any(c in "#@!$%" for c in candidate)):
            return candidate


# ---------------------------------------------------------------------------------------------- gateway
class Mt5WebGateway:
    family = "mt5-web"

    def __init__(self, settings: Mt5WebSettings, secrets: dict[str, Secret], *,
                 transport: httpx.BaseTransport | None = None, now: Any = None) -> None:
        password = secrets.get("password")
        if not password:
            raise ValueError("an mt5-web connection needs the manager's password (secret `password`)")
        self.settings = settings
        self.clock = ServerClock(settings.server_timezone)
        verify: bool | str = settings.ca_file or settings.verify_tls
        self.api = Mt5WebApi(settings.url, settings.manager, password, agent=settings.agent,
                             version=settings.version, timeout=settings.timeout_s, verify=verify, transport=transport)
        self._now = now or (lambda: dt.datetime.now(UTC))
        self._readings_at = 0.0
        self._users_at = 0.0
        self._pinged_at = 0.0
        self._users: dict[str, WebUser] = {}
        self._last_access: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Mt5WebGateway({self.settings.url!r})"

    # -- session
    def open(self) -> None:
        self.api.connect()
        self._pinged_at = time.monotonic()

    def close(self) -> None:
        self.api.close()

    # -- batches of logins or the group mask
    def _selectors(self, logins: Sequence[str]) -> list[dict[str, str]]:
        if self.settings.groups:
            return [{"group": self.settings.groups}]
        return [{"login": ",".join(logins[i:i + 200])} for i in range(0, len(logins), 200)]

    def _users_of(self, logins: Sequence[str]) -> dict[str, WebUser]:
        found: dict[str, WebUser] = {}
        for selector in self._selectors(logins):
            for user in self.api.get("/api/user/get_batch", list[WebUser], **selector) or []:
                found[str(user.Login)] = user
        self._users.update(found)
        return found

    def _states(self, logins: Sequence[str]) -> dict[str, WebAccount]:
        found: dict[str, WebAccount] = {}
        for selector in self._selectors(logins):
            for account in self.api.get("/api/user/account/get_batch", list[WebAccount], **selector) or []:
                found[str(account.Login)] = account
        return found

    def readings(self, logins: Sequence[str], *, with_users: bool = True) -> list[AccountReading]:
        if with_users or not self._users:
            users = self._users_of(logins)
        else:
            users = self._users
        at = self._now()
        states = self._states(logins)
        readings = []
        for login in logins:
            state = states.get(login)
            user = users.get(login)
            if state is None and user is None:
                continue
            enabled = True if user is None else not (user.Rights & USER_RIGHT_TRADE_DISABLED)
            group = None if user is None else user.Group
            if state is None:  # MT5 keeps no trading state for an account without positions or activity
                readings.append(AccountReading(login, at, user.Balance, None, trade_enabled=enabled, group=group))
            else:
                readings.append(AccountReading(login, at, state.Balance, state.Equity - state.Credit,
                                               margin=state.Margin, floating=state.Floating, trade_enabled=enabled,
                                               group=group))
        return readings

    def positions(self, logins: Sequence[str]) -> list[PlatformPosition]:
        found = []
        wanted = set(logins)
        for selector in self._selectors(logins):
            for record in self.api.get("/api/position/get_batch", list[WebPosition], **selector) or []:
                if str(record.Login) in wanted:
                    found.append(position_from_record(record, self.clock))
        return found

    # -- deals
    def _deals(self, selector: dict[str, str], start: int, end: int) -> list[WebDeal]:
        return self.api.get("/api/deal/get_batch", list[WebDeal], **selector, **{"from": start, "to": end}) or []

    def _raw_deals(self, selector: dict[str, str], start: int, end: int) -> list[tuple[DealHead, msgspec.Raw]]:
        raws = self.api.get("/api/deal/get_batch", _RAW_DEALS, **selector, **{"from": start, "to": end}) or []
        try:
            return [(_HEAD.decode(raw), raw) for raw in raws]
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PlatformError(f"/api/deal/get_batch: unexpected answer ({exc})") from None

    def _deals_since(self, start: int, logins: Sequence[str]) -> list[tuple[DealHead, msgspec.Raw]]:
        server_now = self.clock.to_server(self._now())
        horizon = server_now + 86400  # server clocks run ahead of ours, sometimes by hours
        selectors = self._selectors(logins)
        deals: list[tuple[DealHead, msgspec.Raw]] = []
        window = max(60, self.settings.catchup_window_s)
        cursor = start
        while cursor <= horizon:
            # catching up: windows of ``catchup_window_s``; the last one (now and the future) in one request
            end = horizon if cursor + window > server_now else cursor + window - 1
            for selector in selectors:
                deals.extend(self._raw_deals(selector, cursor, end))
            cursor = end + 1
        return deals

    def poll(self, cursor: str | None, logins: Sequence[str], *, start: dt.datetime) -> Poll:
        poll = Poll()
        if not logins:
            poll.cursor = cursor
            return poll
        now_mono = time.monotonic()
        users_due = now_mono - self._users_at >= self.settings.users_interval_s
        if cursor is None or now_mono - self._readings_at >= self.settings.readings_interval_s:
            poll.readings = self.readings(logins, with_users=users_due or cursor is None)
            self._readings_at = now_mono
            if users_due or cursor is None:
                self._users_at = now_mono
                poll.events.extend(self._sessions(logins, first=cursor is None))
        elif now_mono - self._pinged_at >= self.settings.ping_interval_s:
            self.api.ping()
        self._pinged_at = now_mono
        state = DealCursor.parse(cursor) or DealCursor(start=self.clock.to_server(start))
        deals = self._deals_since(state.start, logins)
        wanted = set(logins)
        newest = None
        fresh = [(head, raw) for head, raw in deals
                 if not _in_runs(head.Deal, state.seen) and str(head.Login) in wanted]
        fresh.sort(key=lambda pair: (pair[0].TimeMsc or pair[0].Time * 1000, pair[0].Deal))
        for _, raw in fresh:
            try:
                deal = _DEAL.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise PlatformError(f"/api/deal/get_batch: unexpected answer ({exc})") from None
            record = Mt5Deal.from_web(deal)
            poll.events.extend(deal_events(record, self.clock))
            newest = record.time_ms
        if deals:
            latest = max(head.Time for head, _ in deals)
            frm = max(state.start, latest - self.settings.deal_overlap_s)
            # every deal from ``state.start`` on was in this answer, so the tickets from ``frm`` on are all here
            seen = _runs(head.Deal for head, _ in deals if head.Time >= frm)
            poll.cursor = DealCursor(start=frm, seen=seen).encode()
        else:
            poll.cursor = state.encode() if cursor is None else cursor
        if newest is not None:
            poll.platform_time = self.clock.ms_to_utc(newest)
        return poll

    def _sessions(self, logins: Sequence[str], *, first: bool) -> list[PlatformEvent]:
        """Logins (``LastAccess`` + ``LastIP`` of the user record) as ``session`` events."""
        events = []
        for login in logins:
            user = self._users.get(login)
            if user is None or not user.LastAccess or not user.LastIP or user.LastIP == "0.0.0.0":
                continue
            if self._last_access.get(login) == user.LastAccess:
                continue
            self._last_access[login] = user.LastAccess
            ts = self.clock.to_utc(user.LastAccess)
            # MT5's user record names no device. The platform's name is no fingerprint: shared by every
            # account it linked them all (linkage analysis weighs a shared device as strong evidence), so
            # the device is this login's own and linkage rests on the IP.
            events.append(PlatformEvent(login, ts, {"id": f"login-{login}-{user.LastAccess}", "type": "session",
                                                    "ip": user.LastIP, "device": f"mt5:{login}"}, "session"))
        return events

    def opening_events(self, position: PlatformPosition) -> list[PlatformEvent]:
        at = self.clock.to_server(position.opened_at)
        for deal in self._deals({"login": position.login}, at - 1, at + 1):
            if str(deal.PositionID) == position.position and deal.Entry == 0:
                return deal_events(Mt5Deal.from_record(deal), self.clock)
        return [opening_from_position(position)]

    def closing_events(self, login: str, position: str, since: dt.datetime) -> list[PlatformEvent]:
        start = self.clock.to_server(since) - 1
        end = self.clock.to_server(self._now()) + 86400
        events = []
        for deal in self._deals({"login": login}, start, end):
            if str(deal.PositionID) == position and deal.Entry in (1, 2, 3):
                events.extend(e for e in deal_events(Mt5Deal.from_record(deal), self.clock)
                              if e.body["type"] == "trade_closed")
        return events

    # -- commands
    def _user(self, login: str) -> WebUser:
        user = self.api.get("/api/user/get", WebUser, login=login)
        if user is None:
            raise PlatformError(f"no MT5 account {login}", retryable=False, code="13")
        return user

    def set_trading(self, login: str, enabled: bool) -> None:
        user = self._user(login)
        rights = user.Rights & ~USER_RIGHT_TRADE_DISABLED if enabled else user.Rights | USER_RIGHT_TRADE_DISABLED
        if rights != user.Rights:
            self.api.get("/api/user/update", login=login, rights=rights)

    def close_positions(self, login: str) -> int:
        records = self.api.get("/api/position/get_batch", list[WebPosition], login=login) or []
        ids = []
        for record in records:
            request = {"Action": TA_DEALER_POS_EXECUTE, "Login": record.Login, "Symbol": record.Symbol,
                       "Type": OP_SELL if record.Action == 0 else OP_BUY, "Position": record.Position,
                       "Digits": record.Digits, "Flags": TA_FLAG_CLOSE | TA_FLAG_MARKET,
                       "PriceOrder": str(record.PriceCurrent), "Comment": "pc close"}
            if record.VolumeExt:
                request["VolumeExt"] = record.VolumeExt
            else:
                request["Volume"] = record.Volume
            answer = self.api.post("/api/dealer/send_request", request) or {}
            ids.append(str(answer.get("ID") or answer.get("Id") or ""))
        deadline = time.monotonic() + self.settings.close_timeout_s
        pending = [i for i in ids if i]
        while pending and time.monotonic() < deadline:
            result = self.api.request("GET", "/api/dealer/get_request_result", {"id": ",".join(pending)},
                                      whole=True) or {}
            still = []
            for request_id in pending:
                code = _request_code(result, request_id)
                if code is None:
                    still.append(request_id)
                elif code not in DONE_CODES:
                    raise PlatformError(f"closing a position of {login}: request {request_id} ended with {code}",
                                        retryable=True, code=str(code))
            pending = still
            if pending:
                time.sleep(0.05)
        if pending:
            raise PlatformError(f"closing the positions of {login}: no result after {self.settings.close_timeout_s} s")
        return len(records)

    def balance_operation(self, login: str, amount: Decimal, comment: str) -> str:
        answer = self.api.get("/api/trade/balance", login=login, type=DEAL_BALANCE, balance=str(amount),
                              comment=comment[:31], check_margin=0) or {}
        return str(answer.get("Ticket", ""))

    def find_balance_operation(self, login: str, comment: str, since: dt.datetime) -> str | None:
        start = self.clock.to_server(since) - 60
        end = self.clock.to_server(self._now()) + 86400
        for deal in self._deals({"login": login}, start, end):
            if deal.Action == DEAL_BALANCE and deal.Comment == comment[:31]:
                return str(deal.Deal)
        return None

    def create_account(self, spec: NewAccount) -> str:
        body = {"PassMain": spec.password or new_password(), "PassInvestor": spec.investor_password or new_password(),
                "Comment": spec.tag, "Email": spec.email or "", "Name": spec.name}
        answer = self.api.post("/api/user/add", body, group=spec.group, name=spec.name, leverage=spec.leverage,
                               rights=NEW_ACCOUNT_RIGHTS) or {}
        login = str(answer.get("Login") or "")
        if not login or login == "0":
            raise PlatformError("user/add answered without a login")
        return login

    def find_account(self, spec: NewAccount) -> str | None:
        for user in self.api.get("/api/user/get_batch", list[WebUser], group=spec.group) or []:
            if user.Comment == spec.tag:
                return str(user.Login)
        return None

    def change_group(self, login: str, group: str) -> None:
        self.api.get("/api/user/update", login=login, group=group)


def _request_code(result: dict[str, Any], request_id: str) -> int | None:
    """The final retcode of a dealer request in ``/api/dealer/get_request_result``'s answer, or None
    while it is being processed."""
    entries = result.get(request_id) if isinstance(result, dict) else None
    if not entries:
        return None
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        answer = entry.get("answer")
        if isinstance(answer, dict) and answer.get("ResultRetcode") not in (None, ""):
            code = retcode_number(str(answer["ResultRetcode"]))
            return None if code in (10001, 10002, 10003) else code
        confirm = entry.get("result")
        if isinstance(confirm, dict) and confirm.get("Retcode") not in (None, ""):
            code = retcode_number(str(confirm["Retcode"]))
            return None if code in (10001, 10002, 10003) else code
    return None


__all__ = ["DealCursor", "Mt5WebApi", "Mt5WebGateway", "Mt5WebSettings", "USER_RIGHT_TRADE_DISABLED", "new_password",
           "password_hash", "rand_answer"]
