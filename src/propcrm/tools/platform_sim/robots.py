"""Simulated traders: they log in, open and close market orders on the simulator's accounts, with stop
losses and take profits, some carefully and some recklessly (so that accounts breach), at a steady
rate. An order refused because trading is disabled (10017) is counted — that is the demo's proof that a
breach reached the platform."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

from .server import TRADE_DISABLED, SimServer

log = logging.getLogger("propcrm.platform_sim.robots")
SYMBOL_LOTS = {"EURUSD": 1.0, "GBPUSD": 1.0, "USDJPY": 1.0, "XAUUSD": 0.5}


@dataclass
class Robot:
    login: int
    style: str  # careful | reckless
    ip: str
    refused: int = 0
    orders: int = 0


@dataclass
class Robots:
    server: SimServer
    logins: list[int]
    orders_per_s: float = 5.0
    reckless_share: float = 0.1
    seed: int = 11
    max_positions: int = 3
    reckless_scale: float = 10.0  # a reckless trader's lots, as a multiple of a careful one's
    robots: list[Robot] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self._rng = rng
        for login in self.logins:
            style = "reckless" if rng.random() < self.reckless_share else "careful"
            self.robots.append(Robot(login, style, f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"))

    def act(self, robot: Robot) -> str | None:
        rng = self._rng
        server = self.server
        with server.lock:
            open_positions = list(server.open_by_login.get(robot.login, {}).values())
            if robot.orders == 0 or rng.random() < 0.01:
                server.login_seen(robot.login, robot.ip)
            if open_positions and (len(open_positions) >= self.max_positions or rng.random() < 0.5):
                result = server.close_position(rng.choice(open_positions).ticket, login=robot.login)
            else:
                symbol = rng.choice(list(SYMBOL_LOTS))
                scale = self.reckless_scale if robot.style == "reckless" else 1.0
                lots = max(0.01, round(SYMBOL_LOTS[symbol] * scale * rng.choice((0.1, 0.2, 0.5, 1.0)), 2))
                side = rng.randrange(2)
                bid, ask = server.prices[symbol]
                spec = server.symbols[symbol]
                distance = (bid + ask) / 2 * rng.choice((0.002, 0.004, 0.008))
                sl = round(bid - distance, spec.digits) if side == 0 else round(ask + distance, spec.digits)
                tp = round(ask + distance, spec.digits) if side == 0 else round(bid - distance, spec.digits)
                if robot.style == "reckless" or rng.random() < 0.3:
                    sl = 0.0
                result = server.execute(robot.login, symbol, side, int(round(lots * 100)) * 1_000_000, sl=sl, tp=tp)
        robot.orders += 1
        if result.retcode == TRADE_DISABLED:
            robot.refused += 1
            if robot.refused == 1:
                log.info("simulated trader %s: order refused — %s", robot.login, result.retcode)
        return result.retcode

    def run(self, stop: threading.Event, *, batch_s: float = 0.005) -> None:
        """Orders at ``orders_per_s``: the orders due in each ``batch_s`` are placed together, in one of
        the server's write transactions (:meth:`SimServer.batch`) — at thousands of orders a second a
        commit per order was most of the simulator's time. Each order is still its own deal, executed at
        its own price and time."""
        if not self.robots or self.orders_per_s <= 0:
            return
        pause = 1.0 / self.orders_per_s
        next_at = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            due = 1 if next_at >= now else min(int((now - next_at) / pause) + 1, max(1, int(self.orders_per_s)))
            with self.server.batch():
                for _ in range(due):
                    self.act(self._rng.choice(self.robots))
            next_at += due * pause
            delay = next_at - time.monotonic()
            if delay > 0:
                if stop.wait(max(delay, batch_s)):
                    return
            elif delay < -1.0:
                next_at = time.monotonic()


def ticker(server: SimServer, stop: threading.Event, tick_s: float = 0.1) -> None:
    """The price feed: a tick every ``tick_s`` (marking positions, SL/TP, stop out, rollovers)."""
    last = time.monotonic()
    while not stop.wait(tick_s):
        now = time.monotonic()
        try:
            server.tick(now - last)
        except Exception:  # noqa: BLE001 - a tick must never stop the feed
            log.exception("simulator tick failed")
        last = now


__all__ = ["Robot", "Robots", "ticker"]
