"""``propcrm cluster up``: a local multi-process deployment, for trying the scale-out mode on one machine.

Processes (each a plain ``propcrm`` command, exactly what a real deployment runs on its machines):

* one ingest API — ``propcrm serve --no-worker`` with ``PROPCRM_NATS_URL`` set, so ``POST
  /api/v1/events`` publishes to the partitioned stream;
* N engine workers — ``propcrm worker --metrics-port …``;
* M dispatchers — ``propcrm cluster dispatch --metrics-port …``.

The launcher migrates the database and creates the stream first, prints every endpoint, restarts a
process that exits (after a pause, so a killed worker's partitions are visibly taken over by the
others first) and stops them all on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..adapters.bus.jetstream import BusConfig, connect
from ..adapters.bus.jetstream import safe_url
from ..adapters.db.session import migrate
from ..adapters.settings import Settings

RESTART_AFTER_S = 5.0
STOP_TIMEOUT_S = 10.0  # after SIGTERM, a child gets this long before SIGKILL


def _without_password(url: str) -> str:
    """A database URL fit for the terminal: no password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy can read: say nothing of it
        return "(database URL)"


@dataclass
class Child:
    name: str
    args: list[str]
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    died_at: float | None = None
    restarts: int = 0
    extra: dict = field(default_factory=dict)

    def start(self) -> None:
        with open(self.log, "ab") as out:
            # its own session: Ctrl-C in the terminal reaches only the launcher, which then stops the
            # children itself (so a killed or restarting child never takes the others down with it)
            self.proc = subprocess.Popen([sys.executable, "-m", "propcrm.cli", *self.args], env=self.env,
                                         stdout=out, stderr=out, start_new_session=True)
        self.died_at = None

    def send(self, sig: int) -> None:
        """Signal the child's whole process group (it leads one), so nothing it started is left behind."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


def _stop_all(children: list[Child], timeout: float = STOP_TIMEOUT_S, print_=print) -> None:
    """SIGTERM every child, wait for them together (one deadline, not one per child), SIGKILL the rest."""
    for child in children:
        child.send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        if child.proc is None:
            continue
        try:
            child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for child in children:
        if child.proc is not None and child.proc.poll() is None:
            print_(f"  {child.name} (pid {child.proc.pid}) did not stop within {timeout:.0f} s; killing it",
                   flush=True)
            child.send(signal.SIGKILL)
            child.proc.wait()


def cluster_up(*, bus: BusConfig, database_url: str, workers: int, dispatchers: int, port: int,
               metrics_base_port: int, settings: Settings, print_=print) -> None:
    """The children get the environment the settings were read from (``settings.env``), the bus's and the
    database; their logs go to ``settings.data_dir``/cluster-logs."""
    migrate(database_url)

    async def prepare() -> None:
        nc, _ = await connect(bus, name="propcrm-cluster-up")  # creates the stream (and checks P)
        await nc.close()

    asyncio.run(prepare())
    logs = settings.data_dir / "cluster-logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**settings.env, **bus.as_env(), "PROPCRM_DATABASE_URL": database_url}
    children = [Child("api", ["serve", "--no-worker", "--port", str(port)], logs / "api.log", env)]
    for i in range(workers):
        children.append(Child(f"worker-{i}", ["worker", "--metrics-port", str(metrics_base_port + i),
                                              "--worker-id", f"local-{i}"], logs / f"worker-{i}.log", env,
                              extra={"metrics": metrics_base_port + i}))
    for j in range(dispatchers):
        metrics = metrics_base_port + workers + j
        children.append(Child(f"dispatcher-{j}", ["cluster", "dispatch", "--metrics-port", str(metrics)],
                              logs / f"dispatcher-{j}.log", env, extra={"metrics": metrics}))
    stopping = False

    def stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    # the handlers come first: a SIGTERM or Ctrl-C while the children start must still stop them all
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for child in children:
            child.start()
        print_(f"propcrm cluster: stream {bus.stream} ({bus.partitions} partitions) at {safe_url(bus.url)}; "
               f"database {_without_password(database_url)}")
        print_(f"  {'api':<14} pid {children[0].proc.pid:<7} http://127.0.0.1:{port}/api/v1/events   "
               f"health /healthz   metrics /metrics (loopback)")
        for child in children[1:]:
            print_(f"  {child.name:<14} pid {child.proc.pid:<7} "
                   f"http://127.0.0.1:{child.extra['metrics']}/metrics  /healthz")
        print_(f"  logs in {logs}. Kill a worker (kill -9 PID) and watch the others take its partitions; it is "
               f"restarted after {RESTART_AFTER_S:.0f} s. Ctrl-C stops everything.", flush=True)
        while not stopping:
            time.sleep(0.5)
            for child in children:
                if stopping:  # never start a process once asked to stop
                    break
                code = child.proc.poll()
                if code is None:
                    continue
                if child.died_at is None:
                    child.died_at = time.monotonic()
                    print_(f"  {child.name} (pid {child.proc.pid}) exited with {code}; restarting in "
                           f"{RESTART_AFTER_S:.0f} s", flush=True)
                elif time.monotonic() - child.died_at >= RESTART_AFTER_S:
                    child.restarts += 1
                    child.start()
                    print_(f"  {child.name} restarted as pid {child.proc.pid}", flush=True)
    finally:
        # a second Ctrl-C while stopping must not interrupt the clean-up and orphan the children
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_all(children, print_=print_)
        print_("propcrm cluster: stopped", flush=True)


__all__ = ["cluster_up"]
