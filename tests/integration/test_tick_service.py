"""Ticks in the running service (issue 15): stored ``price`` events reach, promptly, exactly the accounts
whose open positions they move — by the firm's symbol table, conversion pairs included — and a floating
loss that crosses a floor at a tick is a breach that names the tick; a restarted worker still sees them."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.services.apikeys import create_key, sign
from propcrm.services.evaluation import EvaluationWorker
from propcrm.services.rebind import replay_history
from propcrm.services.accounts import compiled_pack

pytestmark = pytest.mark.usefixtures("cheap_argon2")

TABLE = {"symbols": [
    {"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "100000"},
    {"symbol": "USDJPY", "profit_currency": "JPY", "contract_size": "100000"},
    {"symbol": "GBPUSD", "profit_currency": "USD", "contract_size": "100000"},
    {"symbol": "EURJPY", "profit_currency": "JPY", "contract_size": "100000"},
]}
START = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=30)
counter = iter(range(1, 10_000))


def at(minutes: float) -> str:
    return (START + dt.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def tick(symbol: str, bid: str, ask: str, minutes: float) -> dict:
    return {"id": f"t{next(counter)}", "type": "price", "symbol": symbol, "bid": bid, "ask": ask, "ts": at(minutes)}


def opened(account: str, symbol: str, price: str, minutes: float, side: str = "buy") -> dict:
    return {"id": f"o{next(counter)}", "type": "trade_opened", "account": account, "ts": at(minutes),
            "position": f"p{next(counter)}", "symbol": symbol, "side": side, "lots": "1", "price": price}


def equity(account: str, minutes: float) -> dict:
    return {"id": f"e{next(counter)}", "type": "equity", "account": account, "ts": at(minutes),
            "equity": "100000", "balance": "100000"}


@pytest.fixture
def firm(world):
    response = world.client.put("/api/v1/symbols", content=json.dumps(TABLE).encode(),
                                headers=world.headers("risk", **{"content-type": "application/json"}))
    assert response.status_code == 200, response.text
    with world.sessions.begin() as s:
        key_id, secret = create_key(s, firm_id="fa", platform="demo")

    def send(*events: dict) -> None:
        body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        ts = str(int(time.time()))
        response = world.client.post("/api/v1/events", content=body, headers={
            "X-Propcrm-Key": key_id, "X-Propcrm-Timestamp": ts, "X-Propcrm-Signature": sign(secret, ts, body),
            "Content-Type": "application/x-ndjson"})
        assert response.status_code == 200, response.text
        assert response.json()["rejected"] == 0, response.text

    world.send = send
    return world


def ids(world) -> dict[str, int]:
    with world.sessions() as s:
        return {a.external_id: a.id for a in s.scalars(select(m.Account).where(m.Account.firm_id == "fa"))}


def last_seq(world, account_id: int) -> int:
    with world.sessions() as s:
        return s.get(m.AccountState, account_id).last_seq


def breaches(world, account_id: int) -> list[m.Decision]:
    with world.sessions() as s:
        return list(s.scalars(select(m.Decision).where(m.Decision.account_id == account_id,
                                                       m.Decision.kind == "breach").order_by(m.Decision.id)))


def evaluated(worker: EvaluationWorker) -> list[str]:
    """The accounts each pass of ``worker`` evaluates, until it is idle."""
    seen: list[str] = []
    run = worker._run_account

    def spy(session, account, *args, **kwargs):
        seen.append(account.external_id)
        return run(session, account, *args, **kwargs)

    worker._run_account = spy
    worker.run_until_idle()
    return seen


def test_a_tick_breaches_only_the_account_it_moves_and_names_the_tick(firm):
    account = ids(firm)
    firm.send(opened("A1", "EURUSD", "1.10000", 1), equity("A2", 1), opened("A3", "GBPUSD", "1.30000", 1))
    worker = EvaluationWorker(firm.sessions)
    worker.run_until_idle()
    assert firm.status_of(account["A1"]) == "active"

    firm.send(tick("EURUSD", "1.09000", "1.09010", 2))  # −1,000: inside the floors
    assert evaluated(worker) == ["A1"]  # neither A2 (no position) nor A3 (another symbol) is woken
    assert firm.status_of(account["A1"]) == "active"

    firm.send(tick("EURUSD", "1.04990", "1.05000", 3))  # −5,010: below the daily floor (95,000)
    assert evaluated(worker) == ["A1"]
    assert firm.status_of(account["A1"]) == "breached"
    [breach] = breaches(firm, account["A1"])
    assert breach.rule == "daily_loss"
    body = json.loads(breach.body)
    assert "EURUSD bid 1.04990 / ask 1.05000" in body["message"], body["message"]
    assert body["details"]["tick"]["symbol"] == "EURUSD"
    with firm.sessions() as s:
        tick_seq = s.scalar(select(func_max()).where(m.RawEvent.type == "price"))
    assert breach.event_seq == tick_seq  # the decision links to the tick that caused it
    assert last_seq(firm, account["A2"]) < tick_seq and last_seq(firm, account["A3"]) < tick_seq  # skipped lazily
    assert firm.status_of(account["A3"]) == "active" and not breaches(firm, account["A3"])

    # a replay of A1's history (re-bind, what-if) meets the same tick and decides the same
    with firm.sessions() as s:
        acc = s.get(m.Account, account["A1"])
        program = compiled_pack(s.get(m.RulePackVersion, acc.pack_version_id)).phase(acc.phase)
        _, decisions, _ = replay_history(s, acc, program, tick_seq)
    assert [(d.kind, d.rule, seq) for d, seq in decisions if d.kind == "breach"] == [("breach", "daily_loss", tick_seq)]


def func_max():
    from sqlalchemy import func

    return func.max(m.RawEvent.seq)


def test_a_conversion_pair_s_tick_moves_the_position_it_converts(firm):
    account = ids(firm)
    # a USD account short USDJPY: its P/L is in JPY, converted at USDJPY itself
    firm.send(tick("USDJPY", "150.000", "150.010", 0), opened("A1", "USDJPY", "150.000", 1, side="sell"),
              equity("A2", 1))
    worker = EvaluationWorker(firm.sessions)
    worker.run_until_idle()
    firm.send(tick("GBPUSD", "1.3", "1.3001", 2))  # moves nobody
    assert evaluated(worker) == []
    firm.send(tick("USDJPY", "158.000", "158.010", 3))  # −8.01 × 100,000 JPY ≈ −5,069 USD: below the floor
    assert evaluated(worker) == ["A1"]
    assert firm.status_of(account["A1"]) == "breached"
    assert "USDJPY bid 158.000" in json.loads(breaches(firm, account["A1"])[0].body)["message"]


def test_a_restarted_worker_still_sends_later_ticks_to_the_accounts_holding_the_symbol(firm):
    account = ids(firm)
    firm.send(opened("A1", "EURUSD", "1.10000", 1), equity("A2", 1))
    EvaluationWorker(firm.sessions).run_until_idle()
    firm.send(tick("EURUSD", "1.09000", "1.09010", 2))
    EvaluationWorker(firm.sessions).run_until_idle()  # a worker that met this tick, then stopped

    firm.send(tick("EURUSD", "1.04990", "1.05000", 3))
    restarted = EvaluationWorker(firm.sessions)  # cold: no state, no index in memory
    assert evaluated(restarted) == ["A1"]
    assert firm.status_of(account["A1"]) == "breached"
    assert "EURUSD bid 1.04990" in json.loads(breaches(firm, account["A1"])[0].body)["message"]


def test_a_position_opened_after_a_tick_is_marked_from_that_tick_s_price(firm):
    """An account that held nothing when a tick came skipped it; once it opens a position in the symbol,
    it meets the following ticks."""
    account = ids(firm)
    firm.send(tick("EURUSD", "1.10000", "1.10010", 0))
    worker = EvaluationWorker(firm.sessions)
    worker.run_until_idle()
    firm.send(opened("A1", "EURUSD", "1.15000", 1))  # bought far above the market: −5,000 at the last bid
    worker.run_until_idle()
    assert firm.status_of(account["A1"]) == "active"
    firm.send(tick("EURUSD", "1.09990", "1.10000", 2))  # −5,010
    assert evaluated(worker) == ["A1"]
    assert firm.status_of(account["A1"]) == "breached"


def test_a_cross_is_converted_at_the_pair_s_price_stored_before_the_position_opened(firm):
    """A USD account long EURJPY: its JPY P/L is converted at USDJPY's last price, which arrived in an
    earlier pass, before the account held anything — the worker gives the account the prices as of its
    position in the stream, as a replay would; and a USDJPY tick moves the position too."""
    account = ids(firm)
    firm.send(tick("USDJPY", "149.995", "150.005", 0))
    worker = EvaluationWorker(firm.sessions)
    worker.run_until_idle()
    firm.send(opened("A1", "EURJPY", "160.000", 1), equity("A2", 1))
    worker.run_until_idle()
    firm.send(tick("EURJPY", "154.000", "154.010", 2))  # −600,000 JPY = −4,000 USD at 150
    assert evaluated(worker) == ["A1"]
    assert firm.status_of(account["A1"]) == "active"
    firm.send(tick("USDJPY", "119.995", "120.005", 3))  # the same loss is −5,000 USD at 120: not below
    assert evaluated(worker) == ["A1"]
    assert firm.status_of(account["A1"]) == "active"
    firm.send(tick("USDJPY", "119.985", "119.995", 4))  # −5,000.41 USD: below the daily floor
    assert evaluated(worker) == ["A1"]
    assert firm.status_of(account["A1"]) == "breached"
    assert "USDJPY bid 119.985" in json.loads(breaches(firm, account["A1"])[0].body)["message"]


def test_the_tick_history_is_pruned_to_what_an_account_can_still_need(firm, monkeypatch):
    from propcrm.services import evaluation

    monkeypatch.setattr(evaluation, "PRUNE_EVERY", 3)
    account = ids(firm)
    firm.send(opened("A1", "EURUSD", "1.10000", 1), equity("A2", 1))
    worker = EvaluationWorker(firm.sessions)
    worker.run_until_idle()
    for n in range(8):  # A1 meets each tick as it comes: nothing before its position is needed again
        firm.send(tick("EURUSD", f"1.0{9 - n // 4}{n}00", f"1.0{9 - n // 4}{n}10", 2 + n / 10),
                  tick("GBPUSD", "1.3", "1.3001", 2 + n / 10))
        worker.run_until_idle()
    assert all(len(seqs) <= 3 for seqs, _ in worker._ticks["fa"].values()), worker._ticks["fa"]
    firm.send(opened("A2", "GBPUSD", "1.40000", 3))  # −10,000 at the GBPUSD price kept from before
    firm.send(tick("EURUSD", "1.04990", "1.05000", 4))
    worker.run_until_idle()
    assert firm.status_of(account["A1"]) == "breached"
    assert firm.status_of(account["A2"]) == "breached"
