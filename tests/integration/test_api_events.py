"""POST /api/v1/events on both backends: signatures, limits, and no input ever producing a 500."""

from __future__ import annotations

import datetime as dt
import json
import time
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx vs httpx2
    from fastapi.testclient import TestClient

from propcrm.adapters.db import models as m
from propcrm.api import create_app
from propcrm.api.routers.events import MAX_BODY_BYTES
from propcrm.domain.events import DECODER
from propcrm.domain.rulepack import load_pack
from propcrm.services.apikeys import AuthError, create_key, sign, verify_signature
from propcrm.services.catalog import add_pack, create_account, ensure_firm

FIRM = "f1"
URL = "/api/v1/events"
UTC = dt.timezone.utc


class Platform:
    """A platform holding a key: signs what it sends, like a real bridge."""

    def __init__(self, client: TestClient, key_id: str, secret: str) -> None:
        self.client, self.key_id, self.secret = client, key_id, secret

    def headers(self, body: bytes, *, timestamp: str | None = None, secret: str | None = None) -> dict:
        ts = timestamp if timestamp is not None else str(int(time.time()))
        return {"X-Propcrm-Key": self.key_id, "X-Propcrm-Timestamp": ts,
                "X-Propcrm-Signature": sign(secret or self.secret, ts, body)}

    def post(self, body: bytes, **kwargs):
        extra = kwargs.pop("headers", {})
        return self.client.post(URL, content=body, headers={**self.headers(body, **kwargs), **extra})


@pytest.fixture
def platform(db_url):
    app = create_app(db_url)
    with TestClient(app, raise_server_exceptions=False) as client:
        with app.state.sessions.begin() as s:
            ensure_firm(s, firm_id=FIRM)
            version = add_pack(s, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True)
            for name in ("A1", "A2"):
                create_account(s, firm_id=FIRM, external_id=name, pack_version_id=version.id, platform="mt5")
            create_account(s, firm_id=FIRM, external_id="D1", pack_version_id=version.id, platform="demo")
            key_id, secret = create_key(s, firm_id=FIRM, platform="mt5")
        yield Platform(client, key_id, secret)


def event(event_id: str, account: str = "A1") -> bytes:
    return json.dumps({"id": event_id, "type": "equity", "account": account, "ts": "2026-03-02T14:05:00Z",
                       "equity": "99000", "balance": "100000"}).encode()


def test_a_signed_batch_is_ingested_and_the_key_use_recorded(platform):
    body = b"\n".join([event("e-1"), event("e-2", account="NOPE"), event("e-1"), b"oops"])
    response = platform.post(body, headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (1, 1, 2)
    assert answer["lines"][0] == {"line": 1, "status": "accepted", "id": "e-1"}
    assert answer["lines"][1]["reason"] == f"no account 'NOPE' in firm {FIRM}"
    assert answer["lines"][2] == {"line": 3, "status": "duplicate", "id": "e-1"}
    assert answer["lines"][3]["status"] == "rejected" and answer["lines"][3]["quarantine_id"] > 0
    with platform.client.app.state.sessions() as s:
        key = s.get(m.ApiKey, platform.key_id)
        assert key.last_used_at is not None
        row = s.scalars(select(m.RawEvent)).one()
        assert (row.firm_id, row.source, row.event_id, row.body) == (FIRM, "mt5", "e-1", event("e-1"))
    array = json.dumps([{"id": "c-1", "type": "clock", "ts": "2026-03-02T23:00:00Z"}]).encode()
    response = platform.post(array, headers={"Content-Type": "application/json"})
    assert response.json()["lines"] == [{"line": 1, "status": "accepted", "id": "c-1"}]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"secret": "not-the-secret"}, "bad signature"),
        ({"timestamp": -301}, "stale X-Propcrm-Timestamp"),  # seconds from now, taken when the test runs
        ({"timestamp": +400}, "stale X-Propcrm-Timestamp"),
        ({"timestamp": "1.7e9"}, "malformed X-Propcrm-Timestamp"),
        ({"timestamp": "-5"}, "malformed X-Propcrm-Timestamp"),
    ],
)
def test_bad_signatures_and_timestamps_are_refused_with_401(platform, change, problem):
    if isinstance(change.get("timestamp"), int):  # relative to now, not to when the tests were collected
        change = {"timestamp": str(int(time.time()) + change["timestamp"])}
    response = platform.post(event("e-1"), **change)
    assert response.status_code == 401
    assert problem in response.json()["error"]
    with platform.client.app.state.sessions() as s:
        assert s.scalars(select(m.RawEvent)).all() == []
        assert s.get(m.ApiKey, platform.key_id).last_used_at is None


def test_a_signature_over_another_body_or_a_malformed_one_is_refused(platform):
    body = event("e-1")
    headers = platform.headers(body)
    assert platform.client.post(URL, content=body + b" ", headers=headers).status_code == 401
    for bad in ("md5=abc", "sha256=" + "g" * 64, "", "sha256=" + "é" * 64):
        response = platform.client.post(URL, content=body, headers={**headers, "X-Propcrm-Signature": bad.encode("latin-1")})
        assert response.status_code == 401, bad
        assert "X-Propcrm-Signature" in response.json()["error"]


def test_missing_headers_and_unknown_or_inactive_keys_are_refused(platform):
    body = event("e-1")
    response = platform.client.post(URL, content=body)
    assert response.status_code == 401
    assert "X-Propcrm-Key, X-Propcrm-Timestamp, X-Propcrm-Signature" in response.json()["error"]
    only_key = platform.client.post(URL, content=body, headers={"X-Propcrm-Key": platform.key_id})
    assert only_key.status_code == 401 and "X-Propcrm-Key" not in only_key.json()["error"].split(".")[0]
    for key in ("pk_" + "0" * 24, "'; DELETE FROM api_keys; --", "x" * 10_000, "pk_\u00e9"):
        headers = {**platform.headers(body), "X-Propcrm-Key": key.encode("utf-8")}
        response = platform.client.post(URL, content=body, headers=headers)
        assert response.status_code == 401 and "unknown API key" in response.json()["error"]
    with platform.client.app.state.sessions.begin() as s:
        s.get(m.ApiKey, platform.key_id).active = False
    response = platform.post(body)
    assert response.status_code == 401 and "inactive" in response.json()["error"]


def test_a_body_over_32_mib_is_refused_with_413(platform):
    body = b" " * (MAX_BODY_BYTES + 1)
    response = platform.post(body)
    assert response.status_code == 413 and "limit" in response.json()["error"]

    def chunks():  # no Content-Length: the limit holds while streaming
        for _ in range(33):
            yield b" " * (1024 * 1024)

    response = platform.client.post(URL, content=chunks(), headers=platform.headers(b""))
    assert response.status_code == 413 and "limit" in response.json()["error"]
    exactly = platform.post(b" " * MAX_BODY_BYTES)
    assert exactly.status_code == 200 and exactly.json()["lines"] == []


def test_verify_signature_names_each_problem(platform):
    now = dt.datetime.now(UTC)
    ts = str(int(now.timestamp()))
    with platform.client.app.state.sessions() as s:
        key = verify_signature(s, key_id=platform.key_id, timestamp=ts, body=b"x",
                               signature=sign(platform.secret, ts, b"x"), now=now)
        assert key.firm_id == FIRM and key.platform == "mt5"
        edge = str(int(now.timestamp()) - 300)
        verify_signature(s, key_id=platform.key_id, timestamp=edge, body=b"", signature=sign(platform.secret, edge, b""),
                         now=now.replace(microsecond=0))
        with pytest.raises(AuthError, match="stale"):
            verify_signature(s, key_id=platform.key_id, timestamp=ts, body=b"x",
                             signature=sign(platform.secret, ts, b"x"), now=now + dt.timedelta(minutes=6))
        with pytest.raises(AuthError, match="unknown"):
            verify_signature(s, key_id="", timestamp=ts, body=b"x", signature="", now=now)


def test_the_openapi_schema_describes_the_endpoint(platform):
    schema = platform.client.get("/openapi.json").json()
    operation = schema["paths"][URL]["post"]
    content = operation["requestBody"]["content"]
    assert content["application/x-ndjson"]["schema"] == {"type": "string", "format": "binary"}
    assert "application/json" in content
    assert {"200", "401", "413"} <= set(operation["responses"])
    assert {p["name"] for p in operation["parameters"] if p["in"] == "header"} == {
        "X-Propcrm-Key", "X-Propcrm-Timestamp", "X-Propcrm-Signature"}
    assert schema["components"]["schemas"]["IngestResult"]["required"] == ["accepted", "duplicates", "rejected",
                                                                           "lines"]


# ----------------------------------------------------------------------------- fuzzing the endpoint
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
stamps = st.sampled_from(["2026-03-02T14:05:00Z", "2026-03-02T14:05:00+02:00", "2026-03-02T14:05:00",
                          "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "yesterday"]) | st.text()
decimals = st.sampled_from(["1", "-1", "0", "1e999", "NaN", "Infinity", "1.08512", ""]) | st.integers() | st.floats()
event_like = st.fixed_dictionaries(
    {
        "id": st.text(max_size=12) | st.integers(),
        "type": st.sampled_from(["trade_opened", "trade_closed", "equity", "balance", "price", "session", "news",
                                 "clock", "TRADE", ""]),
        "ts": stamps,
    },
    optional={
        "account": st.sampled_from(["A1", "A2", "NOPE", "'; DROP TABLE accounts; --", ""]) | st.text(max_size=6),
        "position": st.text(max_size=4), "symbol": st.sampled_from(["EURUSD", ""]),
        "side": st.sampled_from(["buy", "sell", "hold"]), "lots": decimals, "price": decimals, "profit": decimals,
        "equity": decimals, "balance": decimals, "amount": decimals,
        "reason": st.sampled_from(["deposit", "manual", "x"]), "bid": decimals, "ask": decimals,
        "ip": st.text(max_size=6), "device": st.text(max_size=6), "title": st.text(max_size=6),
        "impact": st.sampled_from(["high", "low", "huge"]), "currency": st.sampled_from(["USD", "EURO"]),
        "extra": json_values,
    },
)

good_ts = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1),
                       timezones=st.just(UTC)).map(lambda t: t.isoformat())
good_money = st.decimals(min_value=1, max_value=10**9, places=2).map(str)
valid_events = st.one_of(
    st.fixed_dictionaries({"id": st.text(min_size=1, max_size=12), "type": st.just("clock"), "ts": good_ts},
                          optional={"extra": json_values}),
    st.fixed_dictionaries({"id": st.text(min_size=1, max_size=12), "type": st.just("equity"), "ts": good_ts,
                           "account": st.sampled_from(["A1", "A2"]), "equity": good_money, "balance": good_money},
                          optional={"margin": good_money, "unknown_field": json_values}),
    st.fixed_dictionaries({"id": st.text(min_size=1, max_size=12), "type": st.just("trade_opened"), "ts": good_ts,
                           "account": st.sampled_from(["A1", "A2", "NOPE"]), "position": st.just("p1"),
                           "symbol": st.just("EURUSD"), "side": st.sampled_from(["buy", "sell"]), "lots": good_money,
                           "price": good_money}),
)


def _check_answer(platform: Platform, response) -> None:
    assert response.status_code == 200, response.text
    answer = response.json()
    lines = answer["lines"]
    assert answer["accepted"] + answer["duplicates"] + answer["rejected"] == len(lines)
    accepted = [entry["id"] for entry in lines if entry["status"] == "accepted"]
    if accepted:
        with platform.client.app.state.sessions() as s:
            rows = s.scalars(select(m.RawEvent).where(m.RawEvent.event_id.in_(accepted))).all()
        assert len(rows) == len(accepted)
        for row in rows:  # nothing accepted is malformed
            decoded = DECODER.decode(row.body)
            assert decoded.id == row.event_id
            assert row.status == ("pending" if getattr(decoded, "account", None) else "stored")
    for entry in lines:
        if entry["status"] == "rejected":
            assert entry["reason"] and entry["quarantine_id"] > 0


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=st.binary(max_size=400) | st.lists(st.binary(max_size=60), max_size=6).map(b"\n".join))
def test_arbitrary_bytes_with_a_valid_signature_never_make_a_500(platform, body):
    _check_answer(platform, platform.post(body))


@FUZZ
@given(
    items=st.lists(valid_events | event_like | json_values, max_size=6),
    as_array=st.booleans(),
    content_type=st.sampled_from([None, "application/json", "application/x-ndjson", "text/plain"]),
)
def test_arbitrary_json_with_a_valid_signature_never_makes_a_500(platform, items, as_array, content_type):
    if as_array:
        body = json.dumps(items).encode()
    else:
        body = b"\n".join(json.dumps(item).encode() for item in items)
    headers = {"Content-Type": content_type} if content_type else {}
    _check_answer(platform, platform.post(body, headers=headers))


def test_metrics_without_a_token_answer_loopback_peers_only(tmp_path, monkeypatch):
    """Without PROPCRM_METRICS_TOKEN only a peer on the loopback interface is answered: a client that
    merely calls itself "testclient" or "localhost" (a host name, never a peer address) is not."""
    from propcrm.adapters.db.session import migrate

    monkeypatch.delenv("PROPCRM_METRICS_TOKEN", raising=False)
    monkeypatch.delenv("PROPCRM_NATS_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    migrate(url)
    app = create_app(url)
    for host, expected in (("127.0.0.1", 200), ("::1", 200), ("testclient", 403), ("localhost", 403),
                           ("203.0.113.5", 403)):
        with TestClient(app, client=(host, 50000)) as client:
            assert client.get("/metrics").status_code == expected, host


# ------------------------------------------------------------- the key before the body; what a key may write
def _key(platform: Platform, name: str) -> Platform:
    with platform.client.app.state.sessions.begin() as s:
        key_id, secret = create_key(s, firm_id=FIRM, platform=name)
    return Platform(platform.client, key_id, secret)


@pytest.mark.parametrize("problem", ["unknown key", "inactive key", "stale timestamp", "malformed signature"])
def test_the_key_is_checked_before_a_byte_of_the_body_is_read(platform, problem):
    """An unknown caller must not be able to make the server take in 32 MiB before it is refused."""
    import asyncio

    import httpx

    headers = platform.headers(b"")
    if problem == "unknown key":
        headers["X-Propcrm-Key"] = "pk_" + "0" * 24
    elif problem == "inactive key":
        with platform.client.app.state.sessions.begin() as s:
            s.get(m.ApiKey, platform.key_id).active = False
    elif problem == "stale timestamp":
        headers = platform.headers(b"", timestamp=str(int(time.time()) - 3600))
    else:
        headers["X-Propcrm-Signature"] = "sha256=nothex"
    pulled = 0

    async def body():
        nonlocal pulled
        for _ in range(32):
            pulled += 1
            yield b" " * (1 << 20)

    async def call():
        transport = httpx.ASGITransport(app=platform.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post(URL, content=body(), headers=headers)

    response = asyncio.run(call())
    assert response.status_code == 401, response.text
    assert pulled == 0, f"{pulled} MiB of the body were read before the key was refused"


def test_a_key_revoked_while_its_request_was_read_is_refused(platform, monkeypatch):
    from propcrm.api.routers import events as events_router

    real = events_router.check_body

    def revoke_meanwhile(*args, **kwargs):
        with platform.client.app.state.sessions.begin() as s:
            s.get(m.ApiKey, platform.key_id).active = False
        return real(*args, **kwargs)

    monkeypatch.setattr(events_router, "check_body", revoke_meanwhile)
    response = platform.post(event("e-1"))
    assert response.status_code == 401 and "inactive" in response.json()["error"]
    with platform.client.app.state.sessions() as s:
        assert s.scalars(select(m.RawEvent)).all() == []


def test_a_platform_key_writes_only_to_the_accounts_on_its_platform(platform):
    body = b"\n".join([event("e-1", "A1"), event("e-2", "D1"),
                       json.dumps({"id": "k-1", "type": "clock", "ts": "2026-03-02T14:06:00Z"}).encode()])
    answer = platform.post(body).json()
    assert [(x["status"], x.get("reason")) for x in answer["lines"]] == [
        ("accepted", None),
        ("rejected", "account 'D1' is on platform 'demo': this key writes only to accounts on 'mt5'"),
        ("accepted", None)]
    demo = _key(platform, "demo")
    assert [x["status"] for x in demo.post(event("e-1", "D1")).json()["lines"]] == ["accepted"]
    assert demo.post(event("e-3", "A1")).json()["lines"][0]["status"] == "rejected"


@pytest.mark.parametrize("provider", ["kyc", "kyc-sumsub", "payments-stripe"])
def test_a_providers_key_is_for_its_webhook_only(platform, provider):
    key = _key(platform, provider)
    response = key.post(event("e-1"))
    assert response.status_code == 403
    expected = "kyc" if provider.startswith("kyc") else "payments"
    assert response.json()["error"].endswith(f"it may only call POST /api/v1/webhooks/{expected}, not post events")
    with platform.client.app.state.sessions() as s:
        assert s.scalars(select(m.RawEvent)).all() == [] and s.scalars(select(m.Quarantine)).all() == []


@pytest.mark.parametrize("name", ["propcrm-payouts", "propcrm-anything", "PropCRM-Payouts", "propcrm"])
def test_propcrms_own_sources_are_reserved(platform, name):
    with platform.client.app.state.sessions.begin() as s, pytest.raises(ValueError, match="reserved"):
        create_key(s, firm_id=FIRM, platform=name)
    with platform.client.app.state.sessions.begin() as s:  # a key an older version let through
        s.add(m.ApiKey(id="pk_" + "1" * 24, firm_id=FIRM, platform=name, secret="s3cret", active=True))
    legacy = Platform(platform.client, "pk_" + "1" * 24, "s3cret")
    response = legacy.post(event("payout-7"))
    assert response.status_code == 403 and "reserved for propcrm's own events" in response.json()["error"]
    with platform.client.app.state.sessions() as s:
        assert s.scalars(select(m.RawEvent)).all() == []


def test_reserved_sources_through_the_cli(db_url, tmp_path):
    from typer.testing import CliRunner

    from propcrm.cli import app

    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "--platform", "propcrm-payouts", "--firm", "f9",
                               "--database-url", db_url])
    assert made.exit_code == 2 and "reserved" in made.output
    events = tmp_path / "events.ndjson"
    events.write_bytes(event("payout-7") + b"\n")
    fed = runner.invoke(app, ["ingest", str(events), "--source", "propcrm-payouts", "--firm", "f9",
                              "--database-url", db_url])
    assert fed.exit_code == 2 and "--source" in fed.output and "reserved" in fed.output


def test_the_admin_api_refuses_a_key_with_a_reserved_name(cheap_argon2, world):
    response = world.client.post("/api/v1/api-keys", json={"platform": "propcrm-payouts"},
                                 headers=world.headers("admin"))
    assert response.status_code == 422 and "reserved" in response.json()["error"]
