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

RESTART_AFTER_S = 5.0


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
            self.proc = subprocess.Popen([sys.executable, "-m", "propcrm.cli", *self.args], env=self.env,
                                         stdout=out, stderr=out, start_new_session=True)
        self.died_at = None


def cluster_up(*, bus: BusConfig, database_url: str, workers: int, dispatchers: int, port: int,
               metrics_base_port: int, print_=print) -> None:
    migrate(database_url)

    async def prepare() -> None:
        nc, _ = await connect(bus, name="propcrm-cluster-up")  # creates the stream (and checks P)
        await nc.close()

    asyncio.run(prepare())
    logs = Path(os.environ.get("PROPCRM_DATA_DIR", "data")) / "cluster-logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **bus.as_env(), "PROPCRM_DATABASE_URL": database_url}
    children = [Child("api", ["serve", "--no-worker", "--port", str(port)], logs / "api.log", env)]
    for i in range(workers):
        children.append(Child(f"worker-{i}", ["worker", "--metrics-port", str(metrics_base_port + i),
                                              "--worker-id", f"local-{i}"], logs / f"worker-{i}.log", env,
                              extra={"metrics": metrics_base_port + i}))
    for j in range(dispatchers):
        metrics = metrics_base_port + workers + j
        children.append(Child(f"dispatcher-{j}", ["cluster", "dispatch", "--metrics-port", str(metrics)],
                              logs / f"dispatcher-{j}.log", env, extra={"metrics": metrics}))
    for child in children:
        child.start()
    print_(f"propcrm cluster: stream {bus.stream} ({bus.partitions} partitions) at {safe_url(bus.url)}; "
           f"database {_without_password(database_url)}")
    print_(f"  ingest API     http://127.0.0.1:{port}/api/v1/events   health /healthz   metrics /metrics (loopback)")
    for child in children[1:]:
        print_(f"  {child.name:<14} pid {child.proc.pid:<7} http://127.0.0.1:{child.extra['metrics']}/metrics  /healthz")
    print_(f"  logs in {logs}. Kill a worker (kill -9 PID) and watch the others take its partitions; it is "
           f"restarted after {RESTART_AFTER_S:.0f} s. Ctrl-C stops everything.", flush=True)
    stopping = False

    def stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping:
            time.sleep(0.5)
            for child in children:
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
        for child in children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.terminate()
        for child in children:
            if child.proc is not None:
                try:
                    child.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
        print_("propcrm cluster: stopped", flush=True)


__all__ = ["cluster_up"]
