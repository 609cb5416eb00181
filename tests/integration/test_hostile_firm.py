"""A hostile firm cannot stop enforcement for another firm.

One firm's platform key posts random, extreme and malformed events — values far out of bounds, NaN,
exponents, dates in 2099 and in 1970, ids repeated, accounts unknown or on another platform, deposits
that would add up past what an account can hold, junk JSON — through the real signed
``POST /api/v1/events`` while the embedded worker runs as ``propcrm serve`` runs it. After every batch
another firm's breach must still be decided within a bounded wait (a correctness bound, not a timing
benchmark: generous on a busy machine), no answer may be a 5xx, and the worker must reach a state with
nothing pending — no loop.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from propcrm.adapters.db import models as m
from propcrm.api import create_app
from propcrm.domain.rulepack import load_pack
from propcrm.cli.serve import _worker_loop
from propcrm.services.apikeys import create_key, sign
from propcrm.services.catalog import add_pack, create_account, ensure_firm

UTC = dt.timezone.utc
DECIDED_WITHIN_S = 60.0  # far above what it takes; only a stuck worker misses it
HOSTILE, GOOD = "hostile", "good"


class Firm:
    def __init__(self, client: TestClient, key_id: str, secret: str) -> None:
        self.client, self.key_id, self.secret = client, key_id, secret

    def post(self, body: bytes):
        ts = str(int(time.time()))
        return self.client.post("/api/v1/events", content=body, headers={
            "X-Propcrm-Key": self.key_id, "X-Propcrm-Timestamp": ts, "X-Propcrm-Signature": sign(self.secret, ts, body),
            "Content-Type": "application/x-ndjson"})


@pytest.fixture
def service(db_url):
    """The API and a running evaluation worker on one database; two firms with a key each."""
    app = create_app(db_url)
    with TestClient(app, raise_server_exceptions=False) as client:
        sessions = app.state.sessions
        keys = {}
        with sessions.begin() as s:
            for firm in (HOSTILE, GOOD):
                ensure_firm(s, firm_id=firm)
                version = add_pack(s, firm_id=firm, pack=load_pack("two-step-100k"), activate=True)
                if firm == HOSTILE:
                    for name in ("H1", "H2", "H3"):
                        create_account(s, firm_id=firm, external_id=name, pack_version_id=version.id, platform="mt5")
                    create_account(s, firm_id=firm, external_id="D1", pack_version_id=version.id, platform="demo")
                keys[firm] = create_key(s, firm_id=firm, platform="mt5")
            client.good_version = add_pack(s, firm_id=GOOD, pack=load_pack("two-step-100k")).id
        stop = threading.Event()
        worker = threading.Thread(target=_worker_loop, args=(sessions, stop), name="evaluation", daemon=True)
        worker.start()
        client.hostile = Firm(client, *keys[HOSTILE])
        client.good = Firm(client, *keys[GOOD])
        client.worker = worker
        try:
            yield client
        finally:
            stop.set()
            worker.join(timeout=30)


# ------------------------------------------------------------------------------------------ strategies
now = dt.datetime.now(UTC)
stamps = st.one_of(
    st.datetimes(min_value=dt.datetime(2026, 3, 2), max_value=dt.datetime(2026, 3, 6), timezones=st.just(UTC))
    .map(lambda t: t.isoformat()),
    st.sampled_from(["2099-01-01T00:00:00Z", (now + dt.timedelta(hours=1)).isoformat(), "1970-01-01T00:00:00Z",
                     "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-01:00", "2026-03-02T10:00:00", "soon"]),
)
extreme = st.sampled_from(["100000000000000000", "-1e17", "1e30", "1e999999", "9" * 200_000, "NaN", "-Infinity",
                           "1e-30", "0.000000001", "999999999999.99999999", "-999999999999.99999999", "0", "-0",
                           "0.01", "1." + "0" * 40, "1e11", "7", ""])
numbers = extreme | st.decimals(allow_nan=False, allow_infinity=False).map(str) | st.integers().map(str) | st.floats()
raw_numbers = st.sampled_from([b"1e999999", b"-1e17", b"1e30", b"9" * 5000, b"1E+11", b"true", b"[1]", b"{}"])
accounts = st.sampled_from(["H1", "H2", "H3", "D1", "NOPE", "", "G-anything"])
ids = st.sampled_from([f"h-{i}" for i in range(12)]) | st.text(min_size=1, max_size=6)


def _event(draw_type: str) -> st.SearchStrategy[dict]:
    common = {"id": ids, "type": st.just(draw_type), "ts": stamps}
    if draw_type == "equity":
        fields = {"account": accounts, "equity": numbers, "balance": numbers}
    elif draw_type == "balance":
        fields = {"account": accounts, "amount": numbers, "reason": st.sampled_from(["deposit", "payout", "fee"])}
    elif draw_type == "trade_opened":
        fields = {"account": accounts, "position": st.sampled_from(["p1", "p2"]), "symbol": st.just("EURUSD"),
                  "side": st.sampled_from(["buy", "sell"]), "lots": numbers, "price": numbers,
                  "order_ts": stamps}
    elif draw_type == "trade_closed":
        fields = {"account": accounts, "position": st.sampled_from(["p1", "p2"]), "lots": numbers, "price": numbers,
                  "profit": numbers}
    elif draw_type == "session":
        fields = {"account": accounts, "ip": st.just("10.0.0.1"), "device": st.just("pc")}
    elif draw_type == "news":
        fields = {"title": st.just("NFP"), "currency": st.just("USD"), "impact": st.just("high")}
    else:
        fields = {}
    return st.fixed_dictionaries({**common, **fields})


events = st.sampled_from(["equity", "balance", "trade_opened", "trade_closed", "session", "news", "clock"]).flatmap(_event)
lines = st.one_of(
    events.map(lambda e: json.dumps(e).encode()),
    st.tuples(events, raw_numbers).map(  # a JSON number out of bounds, not a string
        lambda pair: json.dumps({**pair[0], "equity": "§"}).encode().replace(b'"\\u00a7"', pair[1])),
    st.binary(max_size=40),
    st.just(b'{"id":"deep","type":"clock","ts":"2026-03-02T10:00:00Z","x":' + b"[" * 5000 + b"]" * 5000 + b"}"),
)
# deposits that each pass the bounds but together take an account past what it can hold
pileup = st.integers(min_value=0, max_value=1).map(lambda on: [
    json.dumps({"id": f"pile-{time.time_ns()}-{i}", "type": "balance", "account": "H1",
                "ts": "2026-03-03T10:00:00Z", "amount": "999999999999", "reason": "deposit"}).encode()
    for i in range(1100 * on)])

_good = itertools.count(1)


def _pending(client, firm: str) -> int:
    with client.app.state.sessions() as s:
        return s.scalar(select(func.count()).select_from(m.RawEvent).where(
            m.RawEvent.firm_id == firm, m.RawEvent.status == "pending")) or 0


def _decided(client, account_id: int, event_id: str) -> bool:
    with client.app.state.sessions() as s:
        return s.scalar(select(func.count()).select_from(m.Decision).where(
            m.Decision.account_id == account_id, m.Decision.event_id == event_id, m.Decision.kind == "breach")) > 0


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(lines, min_size=1, max_size=25), pile=pileup, as_array=st.booleans())
def test_a_hostile_firm_never_stops_another_firms_breach(service, batch, pile, as_array):
    if as_array:
        body = b"[" + b",".join(x for x in batch + pile if _is_json(x)) + b"]"
    else:
        body = b"\n".join(batch + pile)
    answer = service.hostile.post(body)
    assert answer.status_code < 500, answer.text

    name = f"G-{next(_good)}"
    with service.app.state.sessions.begin() as s:
        account_id = create_account(s, firm_id=GOOD, external_id=name, pack_version_id=service.good_version,
                                    platform="mt5").id
    breach = json.dumps({"id": f"{name}-breach", "type": "equity", "account": name, "ts": "2026-03-04T10:00:00Z",
                         "equity": "80000", "balance": "100000"}).encode()
    assert service.good.post(breach).json()["accepted"] == 1

    deadline = time.monotonic() + DECIDED_WITHIN_S
    while not _decided(service, account_id, f"{name}-breach"):
        assert service.worker.is_alive(), "the evaluation worker died"
        assert time.monotonic() < deadline, "another firm's breach was not decided: enforcement is stuck"
        time.sleep(0.1)
    while _pending(service, HOSTILE):  # the hostile firm's events are all applied or set aside: no loop
        assert time.monotonic() < deadline, "the hostile firm's events are evaluated again and again"
        time.sleep(0.1)


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


def test_the_lines_of_the_report_are_refused_and_the_other_firm_is_enforced(service):
    """The events the hardening report sent, one by one: each refused naming its line, field and limit."""
    base = {"type": "equity", "account": "H1", "ts": "2026-03-02T10:00:00Z", "balance": "100000"}
    lines = [json.dumps({**base, "id": f"q-{i}", "equity": value}).encode()
             for i, value in enumerate(["100000000000000000", "-1e17", "1e30", "1e999999", "9" * 200_000])]
    lines.append(b'{"id":"q-n","type":"equity","account":"H1","ts":"2026-03-02T10:00:00Z","balance":"1","equity":1e999999}')
    lines.append(json.dumps({"id": "q-p", "type": "trade_closed", "account": "H1", "ts": "2026-03-02T10:00:00Z",
                             "position": "p1", "lots": "1", "price": "1.1", "profit": "1e30"}).encode())
    lines.append(json.dumps({"id": "q-l", "type": "trade_opened", "account": "H1", "ts": "2026-03-02T10:00:00Z",
                             "position": "p1", "symbol": "EURUSD", "side": "buy", "lots": "1e1000000",
                             "price": "1.1"}).encode())
    lines.append(b'{"id":"q-c","type":"clock","ts":"2099-01-01T00:00:00Z"}')
    lines.append(b'{"id":"q-s","type":"session","account":"H1","ts":"2099-01-01T00:00:00Z","ip":"1.2.3.4","device":"x"}')
    answer = service.hostile.post(b"\n".join(lines)).json()
    assert answer["accepted"] == 0 and answer["rejected"] == len(lines)
    fields = ["equity"] * 6 + ["profit", "lots", "ts", "ts"]
    for number, (entry, field) in enumerate(zip(answer["lines"], fields), start=1):
        assert entry["line"] == number and entry["reason"].startswith(f"`{field}`:"), entry
        assert ("10^12" in entry["reason"]) or ("ahead of the server's clock" in entry["reason"])

    name = f"G-{next(_good)}"
    with service.app.state.sessions.begin() as s:
        account_id = create_account(s, firm_id=GOOD, external_id=name, pack_version_id=service.good_version,
                                    platform="mt5").id
    service.good.post(json.dumps({"id": "b", "type": "equity", "account": name, "ts": "2026-03-04T10:00:00Z",
                                  "equity": "80000", "balance": "100000"}).encode())
    deadline = time.monotonic() + DECIDED_WITHIN_S
    while not _decided(service, account_id, "b"):
        assert time.monotonic() < deadline, "another firm's breach was not decided"
        time.sleep(0.1)
