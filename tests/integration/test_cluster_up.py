"""``propcrm cluster up`` as an operator runs it: a real launcher process and its children.

One test, on the real NATS JetStream and PostgreSQL (skipped without them, failed under ``CI=true``,
like ``test_cluster.py``): ``propcrm cluster up --workers 2 --dispatchers 1`` runs as a subprocess
with its own stream and lease bucket (``PROPCRM_NATS_STREAM``), its own PostgreSQL schema (the
``--database-url`` carries the ``search_path``) and its own ports and log directory
(``PROPCRM_DATA_DIR``). Signed requests are posted to the API it started; the committed decisions
must equal ``propcrm replay`` of the same events; a worker is SIGKILLed while more events arrive
and they must still be decided (taken over, then the worker is restarted by the launcher); Ctrl-C
(SIGINT) on the launcher must stop every process it printed within a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from integration.test_cluster import _last_seq_per_partition, _replay, _tail, nats_url, pg_url  # noqa: F401 - fixtures
from propcrm.adapters.bus.jetstream import BusConfig, connect, delete_stream
from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_cluster import DeadLetter, PartitionCheckpoint
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.tools.bench_service import seed as _seed, signed as _signed
from propcrm.synth.firm import FirmSpec, generate

SPEC = FirmSpec(accounts=40, days=3, seed=11, equity_every_s=900)
PID_LINE = re.compile(r"^\s+(api|worker-\d+|dispatcher-\d+)\s+pid (\d+)\s")
RESTART_LINE = re.compile(r"^\s+(\S+) restarted as pid (\d+)")


def _free_ports(n: int) -> int:
    """A base port such that base .. base+n-1 are all free on 127.0.0.1 (the API and the metrics ports)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 60_000)
        sockets = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port range")


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != b"Z"


class Launcher:
    """``propcrm cluster up`` in a subprocess; its output is read by a thread, line by line."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.lines: list[str] = []
        self.news: queue.Queue[str] = queue.Queue()
        self.stderr = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "propcrm.cli", "cluster", "up", *args], env=env,
                                         stdout=subprocess.PIPE, stderr=err, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self.news.put(line.rstrip("\n"))

    def wait_for(self, pattern: re.Pattern, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert (remaining > 0 and self.proc.poll() is None) or not self.news.empty(), (
                f"no line matching {pattern.pattern!r} within {timeout}s (exit {self.proc.poll()}):\n"
                + "\n".join(self.lines) + "\n" + _tail(self.stderr))
            try:
                line = self.news.get(timeout=max(0.05, min(remaining, 0.5)))
            except queue.Empty:
                continue
            match = pattern.search(line)
            if match:
                return match

    def pids(self) -> dict[str, list[int]]:
        """Every PID the launcher printed, by process name (a restarted process has several)."""
        out: dict[str, list[int]] = {}
        for line in self.lines:
            match = PID_LINE.search(line) or RESTART_LINE.search(line)
            if match:
                out.setdefault(match.group(1), []).append(int(match.group(2)))
        return out


def test_cluster_up_decides_like_replay_survives_a_killed_worker_and_stops_every_child(pg_url, nats_url, tmp_path):
    stream = f"T_UP_{uuid.uuid4().hex[:10].upper()}"
    bus = BusConfig(url=nats_url, stream=stream, partitions=8, lease_ttl_s=2.0)
    key_id, secret = _seed(pg_url, [SPEC])  # firm "bench", its pack, accounts and a platform key
    lines = [x.rstrip(b"\n") for x in generate(SPEC)]
    split = len(lines) * 2 // 3
    before, after = lines[:split], lines[split:]
    base = _free_ports(4)
    api = f"http://127.0.0.1:{base}"
    env = {**os.environ, **bus.as_env(), "PROPCRM_DATABASE_URL": pg_url, "PROPCRM_DATA_DIR": str(tmp_path),
           "PYTHONUNBUFFERED": "1"}
    logs = tmp_path / "cluster-logs"
    db = make_engine(pg_url)
    session = sessions(db)
    launcher = Launcher(["--workers", "2", "--dispatchers", "1", "--port", str(base), "--metrics-base-port",
                         str(base + 1), "--database-url", pg_url], env, tmp_path / "cluster-up.stderr")

    def diagnostics() -> str:
        return ("\n".join(launcher.lines) + "\n" + _tail(launcher.stderr)
                + "".join(f"\n--- {p.name}\n{_tail(p)}" for p in sorted(logs.glob("*.log"))))

    def post(client: httpx.Client, batch: list[bytes]) -> None:
        for i in range(0, len(batch), 1000):
            body = b"\n".join(batch[i : i + 1000]) + b"\n"
            answer = client.post("/api/v1/events", content=body, headers=_signed(key_id, secret, body))
            assert answer.status_code == 200, answer.text
            result = answer.json()
            assert result["accepted"] == len(batch[i : i + 1000]) and result["rejected"] == 0, result

    def wait_drained(timeout: float) -> None:
        targets = asyncio.run(_last_seq_per_partition(bus))
        assert targets, "nothing was published"
        deadline = time.monotonic() + timeout
        while True:
            with session() as s:
                done = dict(s.execute(select(PartitionCheckpoint.partition, PartitionCheckpoint.seq)
                                      .where(PartitionCheckpoint.stream == stream)).all())
            behind = [(p, done.get(p, 0), seq) for p, seq in targets.items() if done.get(p, 0) < seq]
            if not behind:
                return
            assert time.monotonic() < deadline, f"not committed within {timeout}s: {behind}\n{diagnostics()}"
            time.sleep(0.1)

    def stored() -> list[bytes]:
        with session() as s:
            return sorted(bytes(b) for b in s.scalars(select(m.Decision.body)))

    try:
        launcher.wait_for(re.compile(r"Ctrl-C stops everything"), timeout=20)
        printed = launcher.pids()
        assert set(printed) == {"api", "worker-0", "worker-1", "dispatcher-0"}, launcher.lines
        with httpx.Client(base_url=api, timeout=30) as client:
            deadline = time.monotonic() + 20
            while True:  # the API is up and connected to NATS and PostgreSQL
                try:
                    health = client.get("/healthz")
                    if health.status_code == 200 and health.json().get("mode") == "bus":
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"the API did not come up\n{diagnostics()}"
                time.sleep(0.2)

            post(client, before)
            wait_drained(timeout=30)
            expected_before = _replay(before)
            assert expected_before, "the first part should produce decisions"
            assert stored() == expected_before

            # SIGKILL a worker, then more events: the other one takes its partitions (lease TTL 2 s)
            victim = printed["worker-0"][0]
            os.kill(victim, signal.SIGKILL)
            post(client, after)
            wait_drained(timeout=30)
        expected = _replay(lines)
        assert len(expected) > len(expected_before), "the later events should produce decisions too"
        assert stored() == expected  # nothing lost, nothing twice across the takeover
        with session() as s:
            assert not s.scalars(select(DeadLetter.reason).limit(5)).all()
        # ... and the launcher restarts the killed worker (after RESTART_AFTER_S = 5 s)
        restarted = launcher.wait_for(re.compile(r"worker-0 restarted as pid (\d+)"), timeout=15)
        assert int(restarted.group(1)) != victim and _alive(int(restarted.group(1)))
        assert not _alive(victim)
        for name, pids in launcher.pids().items():
            assert _alive(pids[-1]), f"{name} (pid {pids[-1]}) is not running\n{diagnostics()}"

        # Ctrl-C: the launcher stops every process it printed, quickly, and exits
        launcher.proc.send_signal(signal.SIGINT)
        began = time.monotonic()
        assert launcher.proc.wait(timeout=12) == 0, diagnostics()
        every = [pid for pids in launcher.pids().values() for pid in pids]
        while any(_alive(pid) for pid in every) and time.monotonic() - began < 5:
            time.sleep(0.1)
        left = [pid for pid in every if _alive(pid)]
        assert not left, f"left running after Ctrl-C: {left}\n{diagnostics()}"
        assert time.monotonic() - began < 8, f"stopping took {time.monotonic() - began:.1f}s\n{diagnostics()}"
        launcher.reader.join(timeout=5)
        assert launcher.lines[-1] == "propcrm cluster: stopped", launcher.lines
    finally:
        if launcher.proc.poll() is None:
            launcher.proc.terminate()
            try:
                launcher.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                launcher.proc.kill()
                launcher.proc.wait(timeout=10)
        for pids in launcher.pids().values():  # only the processes this test's launcher started
            for pid in pids:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
        db.dispose()

        async def clean() -> None:
            nc, js = await connect(bus)
            await delete_stream(js, bus)
            await nc.close()

        asyncio.run(clean())
