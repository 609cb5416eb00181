"""SIGKILL the API and the worker mid-ingestion, restart them, re-send: every event once, every decision once.

The whole service runs as separate processes (``propcrm serve --no-worker`` and ``propcrm work``) on
each backend. The test posts a synthetic firm's events in signed requests of ~500 lines and, at
points drawn from a seeded ``random.Random``, SIGKILLs the API (between requests and while a request is
in flight) and the worker (while it evaluates), restarts them and re-sends every request whose answer
it did not receive (and, once, one it did: the answer is all duplicates). Afterwards the stored
events, quarantine, decisions and audit chain must be exactly what one uninterrupted single-process
replay of the same lines gives.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.tools.bench_service import free_port as _free_port, seed as _seed, signed as _signed, start_cli as _start
from propcrm.domain.decisions import ENCODER
from propcrm.domain.events import DECODER
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import load_pack
from propcrm.engine.runner import Engine
from propcrm.services import audit
from propcrm.synth.firm import FirmSpec, generate

SPEC = FirmSpec(accounts=40, days=3, seed=21, equity_every_s=600)
REQUEST_LINES = 500


def _replay(lines: list[bytes]) -> list[bytes]:
    engine = Engine(compile_pack(load_pack("two-step-100k")))
    return sorted(ENCODER.encode(d) for d in engine.feed([DECODER.decode(x) for x in lines]))


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""


class Service:
    """The API and the worker as subprocesses, killed with SIGKILL and restarted on demand."""

    def __init__(self, url: str, logs: Path) -> None:
        self.url, self.logs = url, logs
        self.api: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.port = 0
        self.api_kills = self.worker_kills = 0

    def start_api(self) -> None:
        self.port = _free_port()
        self.api = _start(["serve", "--no-worker", "--port", str(self.port)], self.url, self.logs / "api.log")
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=self.base, timeout=5) as client:
            while True:
                assert self.api.poll() is None, f"the API exited:\n{_tail(self.logs / 'api.log')}"
                try:  # /healthz: the app answers and reaches the database (/openapi.json would build the
                    # whole API document first, ~1 s of CPU a start, and the API is started 5+ times a backend)
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"the API did not come up:\n{_tail(self.logs / 'api.log')}"
                time.sleep(0.05)

    def start_worker(self) -> None:
        self.worker = _start(["work"], self.url, self.logs / "worker.log")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill_api(self) -> None:
        _sigkill(self.api)
        self.api_kills += 1

    def kill_worker(self) -> None:
        _sigkill(self.worker)
        self.worker_kills += 1

    def stop(self) -> None:
        for proc in (self.api, self.worker):
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _sigkill(proc: subprocess.Popen | None) -> None:
    assert proc is not None
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


@pytest.mark.parametrize("driver", ["poll", "log"])
def test_sigkilled_service_ingests_and_decides_exactly_once(db_url, tmp_path, driver, monkeypatch):
    """``driver``: the worker's (``PROPCRM_EMBEDDED_DRIVER``): the pass worker, or the partition driver
    over ``raw_events`` (a killed one is taken over from its checkpoint and snapshot by the next)."""
    monkeypatch.setenv("PROPCRM_EMBEDDED_DRIVER", driver)  # (the processes started below inherit it)
    lines = list(generate(SPEC))
    requests = [b"".join(lines[i : i + REQUEST_LINES]) for i in range(0, len(lines), REQUEST_LINES)]
    n = len(requests)
    assert n >= 8
    rng = random.Random(21)
    # Where to kill: the API twice between requests and once while a request is in flight (again on
    # the following requests until a kill really lands before the answer); the worker from a timer
    # thread while requests are arriving and once more while it drains the backlog.
    points = rng.sample(range(1, n - 1), 3)
    api_between, inflight_from = set(points[:2]), points[2]
    worker_during = set(rng.sample(range(1, n), 2))

    key_id, secret = _seed(db_url, [SPEC])
    logs = tmp_path / "logs"
    logs.mkdir()
    service = Service(db_url, logs)
    db = make_engine(db_url)
    answers: dict[int, dict] = {}  # request index -> the answer finally received
    resent: set[int] = set()
    inflight_lost = busy = 0
    started = time.monotonic()
    try:
        service.start_api()
        service.start_worker()
        queue = list(range(n))
        while queue:
            index = queue.pop(0)
            if index in api_between:
                api_between.discard(index)
                service.kill_api()
                service.start_api()
                # a platform that lost track re-sends what was already answered: all duplicates
                previous = requests[index - 1]
                with httpx.Client(base_url=service.base, timeout=60) as client:
                    again = client.post("/api/v1/events", content=previous, headers=_signed(key_id, secret, previous))
                assert again.status_code == 200, again.text[:500]
                assert again.json()["duplicates"] == len(previous.splitlines()), again.text[:500]
            timers = []
            if index >= inflight_from and not inflight_lost:
                timers.append(threading.Timer(rng.uniform(0.0, 0.03), service.kill_api))
            if index in worker_during:
                worker_during.discard(index)
                timers.append(threading.Timer(rng.uniform(0.0, 0.2), service.kill_worker))
            body = requests[index]
            answer, lost = None, False
            with httpx.Client(base_url=service.base, timeout=60) as client:
                for timer in timers:
                    timer.start()
                try:
                    response = client.post("/api/v1/events", content=body, headers=_signed(key_id, secret, body))
                    if response.status_code == 200:
                        answer = response.json()
                    elif response.status_code == 503:  # storage busy: the API asks for a retry as is
                        busy += 1
                        assert busy < 20, f"request {index}: 503 again and again: {response.text[:500]}"
                        time.sleep(0.2)
                    else:
                        raise AssertionError(f"request {index}: {response.status_code} {response.text[:500]}")
                except httpx.TransportError:  # the API died under the request: no answer
                    lost = True
                finally:
                    for timer in timers:
                        timer.join()
            if answer is None:
                queue.insert(0, index)  # no answer: send it again
                resent.add(index)
                inflight_lost += lost
            else:
                answers[index] = answer
            if service.api.poll() is not None:
                service.start_api()
            if service.worker.poll() is not None:
                service.start_worker()
        sent_at = time.monotonic()

        # the worker once more, mid-backlog if there is one left
        time.sleep(rng.uniform(0.1, 0.6))
        service.kill_worker()
        service.start_worker()

        deadline = time.monotonic() + 60
        while True:
            with db.connect() as conn:
                pending = conn.scalar(
                    select(func.count()).select_from(m.RawEvent).where(m.RawEvent.status == "pending"))
            if not pending:
                break
            assert service.worker.poll() is None, f"the worker exited:\n{_tail(logs / 'worker.log')}"
            assert time.monotonic() < deadline, f"{pending} events still pending:\n{_tail(logs / 'worker.log')}"
            time.sleep(0.1)
        drained_at = time.monotonic()
    finally:
        service.stop()

    assert service.api_kills >= 3 and service.worker_kills >= 3, (service.api_kills, service.worker_kills)
    assert inflight_lost >= 1, "no kill landed while a request was in flight"
    assert sorted(answers) == list(range(n))
    for index, answer in answers.items():
        statuses = {line["status"] for line in answer["lines"]}
        assert answer["rejected"] == 0 and statuses <= {"accepted", "duplicate"}, (index, answer)
        assert len(answer["lines"]) == len(requests[index].splitlines())
        if index not in resent:
            assert statuses == {"accepted"}, (index, answer)  # sent once: nothing there before

    Session = sessions(db)
    with Session() as s:
        stored = s.scalar(select(func.count()).select_from(m.RawEvent))
        distinct = s.scalar(select(func.count(func.distinct(m.RawEvent.event_id))))
        assert stored == distinct == len(lines)
        assert s.scalar(select(func.count()).select_from(m.Quarantine)) == 0
        decisions = sorted(bytes(b) for b in s.scalars(select(m.Decision.body)))
        result = audit.verify(s)
        assert result.ok, result
    expected = _replay(lines)
    assert expected, "the synthetic firm should produce decisions"
    assert len(decisions) == len(expected), (len(decisions), len(expected))
    assert decisions == expected
    if driver == "log":  # its states are written with every batch: they are replay's, byte for byte
        from propcrm.services.outcomes import STATE_DECODER, STATE_ENCODER

        engine = Engine(compile_pack(load_pack("two-step-100k")))
        engine.feed([DECODER.decode(x) for x in lines])
        with Session() as s:
            stored_states = {external: STATE_ENCODER.encode(STATE_DECODER.decode(bytes(blob))) for external, blob in
                             s.execute(select(m.Account.external_id, m.AccountState.state)
                                       .join(m.Account, m.Account.id == m.AccountState.account_id))}
        assert stored_states == {a: STATE_ENCODER.encode(engine.state(a)) for a in engine.states}
    db.dispose()
    print(f"\n{len(lines)} events in {n} requests; API killed {service.api_kills}x ({inflight_lost} answer(s) lost), "
          f"worker killed {service.worker_kills}x; sent in {sent_at - started:.1f}s, drained in "
          f"{drained_at - sent_at:.1f}s")
