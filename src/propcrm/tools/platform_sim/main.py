"""Running the simulator: the MT5 Web API on a port, the price feed, and optionally simulated traders."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from .robots import Robots, ticker
from .server import SimServer
from .webapi import WebApi

log = logging.getLogger("propcrm.platform_sim")


@dataclass
class Simulator:
    """The simulator in a thread of the current process (the demo, the tests) — or the whole process
    (``propcrm platform-sim``)."""

    db: str | None
    manager: str
    password: str
    host: str = "127.0.0.1"
    port: int = 0
    zone: str = "Europe/Athens"
    tick_s: float = 0.1
    controls: bool = False
    seed: int = 7
    server: SimServer = field(init=False)
    api: WebApi = field(init=False)
    stop: threading.Event = field(default_factory=threading.Event)
    traders_stop: threading.Event = field(default_factory=threading.Event)
    """Set: the simulated traders stop; the server, its Web API and the price feed go on."""
    threads: list[threading.Thread] = field(default_factory=list)
    robots: Robots | None = None

    def __post_init__(self) -> None:
        self.server = SimServer(self.db, zone=self.zone, seed=self.seed)
        self.api = WebApi(self.server, manager=self.manager, password=self.password, controls=self.controls)
        self._uvicorn = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, feed: bool = True) -> Simulator:
        import socket

        import uvicorn

        if not self.port:
            with socket.socket() as probe:
                probe.bind((self.host, 0))
                self.port = probe.getsockname()[1]
        config = uvicorn.Config(self.api.app(), host=self.host, port=self.port, log_level="warning",
                                timeout_keep_alive=200, lifespan="off")
        self._uvicorn = uvicorn.Server(config)
        self._uvicorn.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.threads.append(threading.Thread(target=self._uvicorn.run, name="platform-sim-http", daemon=True))
        if feed:
            self.threads.append(threading.Thread(target=ticker, args=(self.server, self.stop, self.tick_s),
                                                 name="platform-sim-feed", daemon=True))
        for thread in self.threads:
            thread.start()
        import time

        for _ in range(200):
            if self._uvicorn.started:
                break
            time.sleep(0.02)
        return self

    def trade(self, logins: list[int], *, orders_per_s: float, reckless_share: float = 0.1,
              reckless_scale: float = 10.0) -> Robots:
        self.robots = Robots(self.server, logins, orders_per_s=orders_per_s, reckless_share=reckless_share,
                             reckless_scale=reckless_scale, seed=self.seed + 4)
        thread = threading.Thread(target=self.robots.run, args=(self.traders_stop,), name="platform-sim-robots",
                                  daemon=True)
        self.threads.append(thread)
        thread.start()
        return self.robots

    def close(self) -> None:
        self.stop.set()
        self.traders_stop.set()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        for thread in self.threads:
            thread.join(timeout=5)
        self.server.close()


__all__ = ["Simulator"]
