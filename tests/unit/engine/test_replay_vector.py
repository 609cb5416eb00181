"""`replay` and `whatif` screen ticks in integers by default when a symbol table is given (issue 15); a
synthetic firm trading five instruments (a JPY pair converted at its own price, gold, an index) with a
price every minute must replay to the same decisions, byte for byte, and the same final states as the
exact Decimal path (`--exact`)."""

from __future__ import annotations

import datetime as dt

import msgspec

from propcrm.domain.market import parse_symbol_table
from propcrm.engine.replay import replay, whatif
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import load_pack
from propcrm.synth.firm import FirmSpec, write_ndjson

SYMBOLS = parse_symbol_table([
    {"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "100000"},
    {"symbol": "GBPUSD", "profit_currency": "USD", "contract_size": "100000"},
    {"symbol": "USDJPY", "profit_currency": "JPY", "contract_size": "100000"},
    {"symbol": "XAUUSD", "profit_currency": "USD", "contract_size": "100"},
    {"symbol": "US30", "profit_currency": "USD", "contract_size": "1"},
])


def load_preset(name: str):
    return compile_pack(load_pack(name))


def _states(engine) -> bytes:
    return msgspec.msgpack.encode(sorted(engine.states.items()))


def test_vector_and_exact_replays_of_a_firm_with_prices_agree(tmp_path):
    events = tmp_path / "firm.ndjson"
    write_ndjson(FirmSpec(accounts=60, days=3, start=dt.date(2026, 3, 4), seed=5, prices=True), events)
    pack = load_preset("two-step-100k")
    outputs, states = [], []
    for exact in (True, False):
        chunks: list[bytes] = []
        run = replay(pack, events, sink=chunks.append, symbols=SYMBOLS, exact=exact)
        outputs.append(b"".join(chunks))
        states.append(_states(run.engine))
        if not exact:
            assert run.engine.stats.exact_marked < run.engine.stats.marked  # the screen did spare work
    assert outputs[0] and outputs[0] == outputs[1]
    assert states[0] == states[1]
    exact_whatif = whatif(pack, load_preset("one-step-100k"), events, symbols=SYMBOLS, exact=True).to_dict()
    vector_whatif = whatif(pack, load_preset("one-step-100k"), events, symbols=SYMBOLS).to_dict()
    assert exact_whatif == vector_whatif
