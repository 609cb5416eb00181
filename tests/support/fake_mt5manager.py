"""A fake of MetaQuotes' ``MT5Manager`` package (the Manager API for Python), limited to the documented
surface the bridge uses, backed by the platform simulator's trading core.

Documented names only: ``ManagerAPI`` with ``EnPumpModes``, ``Connect(server, login, password, mode,
timeout)``, ``Disconnect``, ``Subscribe`` (manager sink: ``OnConnect``/``OnDisconnect``),
``DealSubscribe`` (``OnDealAdd``), ``UserSubscribe`` (``OnUserLogin(ip, user, type)``),
``DailySubscribe`` (``OnDailyAdd``), ``UserGet``, ``UserUpdate``, ``UserAdd(user, master, investor)``,
``UserGetByGroup``, ``UserAccountGet``, ``PositionGet``, ``DealRequest(login, from, to)``,
``DealerBalance(login, value, type, comment)``, ``DealerSend(request, sink)`` (the result reaches
``sink.OnDealerResult`` later, on another thread); ``MTUser(manager)``, ``MTRequest(manager)``,
``LastError()``. Values are Python numbers (doubles), as the real package gives them.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from propcrm.tools.platform_sim.server import SimServer, group_matches

SERVERS: dict[str, tuple[SimServer, int, str]] = {}  # address -> (server, manager login, password)
_LAST = [(0, 0, "ok")]


def LastError() -> tuple:  # noqa: N802 - the package's name
    return _LAST[-1]


def _fail(code: int, text: str) -> bool:
    _LAST.append((code, code, text))
    return False


class _PumpModes:
    PUMP_MODE_USERS = 1
    PUMP_MODE_POSITIONS = 2
    PUMP_MODE_FULL = 0xFFFFFFFF


class MTUser:
    def __init__(self, manager: Any = None) -> None:
        self.Login = 0
        self.Group = ""
        self.Name = ""
        self.EMail = ""
        self.Comment = ""
        self.Leverage = 100
        self.Rights = 0
        self.Balance = 0.0
        self.LastAccess = 0
        self.LastIP = ""


class MTRequest:
    def __init__(self, manager: Any = None) -> None:
        self.Action = 0
        self.Login = 0
        self.Symbol = ""
        self.Type = 0
        self.Volume = 0
        self.Position = 0
        self.PriceOrder = 0.0


class MTDeal:
    class EnDealAction:
        DEAL_BALANCE = 2
        DEAL_CREDIT = 3


class ManagerAPI:
    EnPumpModes = _PumpModes

    def __init__(self) -> None:
        self.server: SimServer | None = None
        self.connected = False
        self.deal_sinks: list[Any] = []
        self.user_sinks: list[Any] = []
        self.daily_sinks: list[Any] = []
        self.manager_sinks: list[Any] = []

    # -- session
    def Connect(self, server: str, login: int, password: str, mode: int, timeout: int) -> bool:  # noqa: N802
        found = SERVERS.get(server)
        if found is None:
            return _fail(10, "MT_RET_ERR_CONNECTION")
        sim, manager, secret = found
        if int(login) != manager or password != secret:
            return _fail(1001, "MT_RET_AUTH_ACCOUNT_INVALID")
        if getattr(sim, "refuse_managers", False):
            return _fail(10, "MT_RET_ERR_CONNECTION")
        self.server = sim
        self.connected = True
        sim.listeners.append(self)
        for sink in self.manager_sinks:
            sink.OnConnect()
        return True

    def Disconnect(self) -> None:  # noqa: N802
        if self.server is not None and self in self.server.listeners:
            self.server.listeners.remove(self)
        self.connected = False

    def drop(self) -> None:
        """The network fails (tests): no more sink calls, and the manager sink hears of it."""
        self.Disconnect()
        for sink in self.manager_sinks:
            sink.OnDisconnect()

    def Subscribe(self, sink: Any) -> int:  # noqa: N802
        self.manager_sinks.append(sink)
        return 0

    def DealSubscribe(self, sink: Any) -> int:  # noqa: N802
        self.deal_sinks.append(sink)
        return 0

    def UserSubscribe(self, sink: Any) -> int:  # noqa: N802
        self.user_sinks.append(sink)
        return 0

    def DailySubscribe(self, sink: Any) -> int:  # noqa: N802
        self.daily_sinks.append(sink)
        return 0

    # -- the simulator's events → sinks
    def on_deal(self, deal: Any) -> None:
        view = _deal(deal)
        for sink in self.deal_sinks:
            sink.OnDealAdd(view)

    def on_login(self, account: Any, ip: str) -> None:
        for sink in self.user_sinks:
            sink.OnUserLogin(ip, _user(account), 0)

    def daily(self, login: int, server_seconds: int) -> None:
        state = self.server.trade_state(login)
        record = SimpleNamespace(Login=login, Datetime=server_seconds, Balance=state["balance"],
                                 ProfitEquity=state["equity"])
        for sink in self.daily_sinks:
            sink.OnDailyAdd(record)

    # -- users
    def _ok(self) -> SimServer | None:
        if not self.connected or self.server is None:
            _fail(10, "MT_RET_ERR_CONNECTION")
            return None
        return self.server

    def UserGet(self, login: int) -> MTUser | None:  # noqa: N802
        sim = self._ok()
        if sim is None or int(login) not in sim.accounts:
            return None if sim is None else _fail(13, "MT_RET_ERR_NOTFOUND") or None
        return _user(sim.accounts[int(login)])

    UserRequest = UserGet

    def UserUpdate(self, user: MTUser) -> bool:  # noqa: N802
        sim = self._ok()
        if sim is None:
            return False
        sim.update_user(int(user.Login), rights=int(user.Rights), group=str(user.Group), leverage=int(user.Leverage))
        return True

    def UserAdd(self, user: MTUser, master: str, investor: str) -> bool:  # noqa: N802
        sim = self._ok()
        if sim is None:
            return False
        if len(master) < 8:
            return _fail(3006, "MT_RET_USR_INVALID_PASSWORD")
        account = sim.add_user(group=user.Group, name=user.Name, leverage=int(user.Leverage), rights=int(user.Rights),
                               email=user.EMail, comment=user.Comment, pass_main=master, pass_investor=investor)
        user.Login = account.login
        return True

    def UserGetByGroup(self, mask: str) -> list[MTUser]:  # noqa: N802
        sim = self._ok()
        if sim is None:
            return []
        return [_user(a) for a in sim.accounts.values() if group_matches(a.group, mask)]

    def UserAccountGet(self, login: int) -> Any:  # noqa: N802
        sim = self._ok()
        if sim is None or int(login) not in sim.accounts:
            return None
        s = sim.trade_state(int(login))
        return SimpleNamespace(Login=int(login), Balance=s["balance"], Credit=s["credit"], Equity=s["equity"],
                               Margin=s["margin"], Floating=s["floating"], Profit=s["profit"])

    # -- trading
    def PositionGet(self, login: int) -> list[Any]:  # noqa: N802
        sim = self._ok()
        if sim is None:
            return []
        return [SimpleNamespace(Login=p.login, Position=p.ticket, Symbol=p.symbol, Action=p.action,
                                Volume=p.volume_ext // 10_000, VolumeExt=p.volume_ext, PriceOpen=p.price_open,
                                PriceCurrent=p.price_current, PriceSL=p.sl, PriceTP=p.tp, TimeCreateMsc=p.time_ms,
                                TimeCreate=p.time_ms // 1000)
                for p in sim.positions_of([int(login)])]

    def DealRequest(self, login: int, start: int, end: int) -> list[Any]:  # noqa: N802
        sim = self._ok()
        if sim is None:
            return []
        return [_deal(d) for d in sim.deals_between([int(login)], int(start), int(end))]

    def DealerBalance(self, login: int, value: float, kind: int, comment: str) -> int:  # noqa: N802
        sim = self._ok()
        if sim is None:
            return 0
        return sim.balance_operation(int(login), round(value * 100), comment, action=kind).Deal

    def DealerSend(self, request: MTRequest, sink: Any) -> int:  # noqa: N802
        sim = self._ok()
        if sim is None:
            return 0
        if request.Position:
            result = sim.close_position(int(request.Position), login=int(request.Login), dealer=True)
        else:
            result = sim.execute(int(request.Login), request.Symbol, int(request.Type), int(request.Volume) * 10_000,
                                 dealer=True)
        code = int(result.retcode.split(" ")[0])
        confirm = SimpleNamespace(Retcode=code, DealID=result.deal, OrderID=result.order)
        threading.Timer(0.01, sink.OnDealerResult, args=(confirm,)).start()
        return 1


def _user(account: Any) -> MTUser:
    user = MTUser()
    user.Login, user.Group, user.Name, user.EMail = account.login, account.group, account.name, account.email
    user.Comment, user.Leverage, user.Rights = account.comment, account.leverage, account.rights
    user.Balance, user.LastAccess, user.LastIP = account.balance_c / 100, account.last_access, account.last_ip
    return user


def _deal(d: Any) -> Any:
    return SimpleNamespace(Deal=d.Deal, Login=d.Login, Order=d.Order, Action=d.Action, Entry=d.Entry, Time=d.Time,
                           TimeMsc=d.TimeMsc, Symbol=d.Symbol, Price=d.Price, Volume=d.Volume, VolumeExt=d.VolumeExt,
                           Profit=d.Profit_c / 100, Storage=d.Storage_c / 100, Commission=d.Commission_c / 100,
                           PositionID=d.PositionID, Reason=d.Reason, Comment=d.Comment, PriceSL=d.PriceSL,
                           PriceTP=d.PriceTP, VolumeClosed=d.VolumeClosed)
