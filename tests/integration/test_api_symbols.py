"""The firm's symbol table over the API (issue 15): risk and admin set and import it, it is validated at
the edge naming the field, kept per firm, audited, and the evaluation driver marks positions with it."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from propcrm.engine.runner import Engine
from support.staff import PASSWORD

pytestmark = pytest.mark.usefixtures("cheap_argon2")

TABLE = {"symbols": [
    {"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "100000", "digits": 5},
    {"symbol": "ES", "profit_currency": "USD", "tick_size": "0.25", "tick_value": "12.50"},
]}


def put(world, who, body, **headers):
    return world.client.put("/api/v1/symbols", content=json.dumps(body).encode(),
                            headers=world.headers(who, **{"content-type": "application/json", **headers}))


def test_risk_sets_the_table_and_reads_it_back_and_the_change_is_audited(world):
    response = put(world, "risk", TABLE)
    assert response.status_code == 200, response.text
    symbols = response.json()["symbols"]
    assert [s["symbol"] for s in symbols] == ["ES", "EURUSD"]  # kept sorted by symbol
    assert symbols[1] == {"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "100000",
                          "tick_size": None, "tick_value": None, "digits": 5}
    again = world.client.get("/api/v1/symbols", headers=world.headers("admin"))
    assert again.json()["symbols"] == symbols and again.json()["updated_by"].startswith("user:")
    entry = world.audit("symbols.set")[-1]
    assert entry.firm_id == "fa" and entry.after["symbols"] == 2 and entry.after["changed"] == ["ES", "EURUSD"]
    assert world.client.get("/api/v1/symbols", headers=world.headers("fb:risk")).json()["symbols"] == []


def test_a_csv_import_adds_and_updates_symbols_and_keeps_the_others(world):
    assert put(world, "admin", TABLE).status_code == 200
    csv = b"symbol,profit_currency,contract_size,tick_size,tick_value,digits\nUSDJPY,JPY,100000,,,3\nEURUSD,USD,1000,,,5\n"
    response = world.client.post("/api/v1/symbols/import", content=csv,
                                 headers=world.headers("risk", **{"content-type": "text/csv"}))
    assert response.status_code == 200, response.text
    table = {s["symbol"]: s for s in response.json()["symbols"]}
    assert sorted(table) == ["ES", "EURUSD", "USDJPY"]
    assert table["EURUSD"]["contract_size"] == "1000" and table["USDJPY"]["profit_currency"] == "JPY"
    assert world.audit("symbols.import")


@pytest.mark.parametrize(("body", "field"), [
    ({"symbols": [{"symbol": "EURUSD", "profit_currency": "USD"}]}, "contract_size"),
    ({"symbols": [{"symbol": "ES", "profit_currency": "USD", "tick_size": "0.25"}]}, "tick_value"),
    ({"symbols": [{"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "1e13"}]}, "contract_size"),
    ({"symbols": [{"symbol": "EURUSD", "profit_currency": "dollars", "contract_size": "1"}]}, "profit_currency"),
    ({"symbols": [{"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "1", "spread": 2}]}, "spread"),
])
def test_a_bad_table_is_refused_whole_naming_the_field(world, body, field):
    assert put(world, "risk", TABLE).status_code == 200
    response = put(world, "risk", body)
    assert response.status_code == 422 and field in response.text, response.text
    assert len(world.client.get("/api/v1/symbols", headers=world.headers("risk")).json()["symbols"]) == 2


def test_a_bad_csv_line_is_named(world):
    csv = b"symbol,profit_currency,contract_size\nEURUSD,USD,100000\nGBPUSD,USD,-5\n"
    response = world.client.post("/api/v1/symbols/import", content=csv,
                                 headers=world.headers("risk", **{"content-type": "text/csv"}))
    assert response.status_code == 422 and "line 3" in response.text and "contract_size" in response.text


@pytest.mark.parametrize("who", ["finance", "support", "trader", None])
def test_only_risk_and_admin_may_see_or_change_the_table(world, who):
    assert world.client.get("/api/v1/symbols", headers=world.headers(who)).status_code == (401 if who is None else 403)
    assert put(world, who, TABLE).status_code == (401 if who is None else 403)


def test_a_cookie_session_may_not_change_the_table_from_another_site(world):
    login = world.client.post("/api/v1/login", json={"firm": "fa", "email": "risk@fa.example", "password": PASSWORD})
    assert login.status_code == 200
    evil = world.client.put("/api/v1/symbols", content=json.dumps(TABLE).encode(),
                            headers={"content-type": "application/json", "origin": "https://evil.example",
                                     "sec-fetch-site": "cross-site"})
    assert evil.status_code == 403


def test_the_evaluation_driver_gives_the_engine_the_firm_s_table(world, monkeypatch):
    assert put(world, "risk", TABLE).status_code == 200
    seen = []
    original = Engine.set_symbols

    def spy(self, table):
        seen.append(table)
        return original(self, table)

    monkeypatch.setattr(Engine, "set_symbols", spy)
    world.ingest({"id": "o1", "type": "trade_opened", "account": "A1", "ts": "2026-03-02T10:00:00Z", "position": "p1",
                  "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"})
    world.evaluate()
    assert seen and seen[-1].by_symbol()["EURUSD"].contract_size == Decimal("100000")


def test_a_table_larger_than_2_mib_is_refused_before_it_is_read(world):
    big = b"[" + b" " * (2 * 1024 * 1024) + b"]"
    response = world.client.put("/api/v1/symbols", content=big,
                                headers=world.headers("risk", **{"content-type": "application/json"}))
    assert response.status_code == 413 and "a symbol table is at most 2,097,152 bytes" in response.text
