"""`propcrm replay --prices --symbols` and `propcrm whatif` to the tick (issue 15): a dispute replays
to the tick that caused it. Real files; the commands run in this process (support/cli.py; tests/unit/test_cli.py
starts real ones)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.cli import run_cli as run

EVENTS = [
    {"id": "o1", "type": "trade_opened", "account": "A1", "ts": "2026-03-02T14:01:00Z", "position": "p1",
     "symbol": "EURUSD", "side": "buy", "lots": "10", "price": "1.08510"},
    {"id": "e1", "type": "equity", "account": "A1", "ts": "2026-03-02T14:02:00Z", "equity": "99900.00",
     "balance": "100000.00"},
    {"id": "e2", "type": "equity", "account": "A1", "ts": "2026-03-02T14:10:00Z", "equity": "94950.00",
     "balance": "100000.00"},
]
PRICES = [
    {"id": "t0", "type": "price", "ts": "2026-03-02T14:00:00Z", "symbol": "EURUSD", "bid": "1.08500", "ask": "1.08510"},
    {"id": "t1", "type": "price", "ts": "2026-03-02T14:03:00Z", "symbol": "EURUSD", "bid": "1.08100", "ask": "1.08110"},
    {"id": "t2", "type": "price", "ts": "2026-03-02T14:04:00Z", "symbol": "EURUSD", "bid": "1.08005", "ask": "1.08015"},
]
SYMBOLS = [{"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "100000", "digits": 5}]


def ndjson(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    symbols = tmp_path / "symbols.json"
    symbols.write_text(json.dumps(SYMBOLS))
    return {
        "events": ndjson(tmp_path / "events.ndjson", EVENTS),
        "prices": ndjson(tmp_path / "prices.ndjson", PRICES),
        "symbols": str(symbols),
    }


def test_replay_with_prices_finds_the_breach_at_the_tick_not_at_the_next_report(files):
    plain = run("replay", "--pack", "two-step-100k", files["events"])
    assert [json.loads(l)["event_id"] for l in plain.stdout.decode().splitlines()] == ["e2"]
    result = run("replay", "--pack", "two-step-100k", files["events"], "--prices", files["prices"],
                 "--symbols", files["symbols"])
    assert result.returncode == 0, result.stderr.decode()
    decisions = [json.loads(l) for l in result.stdout.decode().splitlines()]
    breach = [d for d in decisions if d["kind"] == "breach"]
    assert [(d["event_id"], d["ts"], d["value"]) for d in breach] == [("t2", "2026-03-02T14:04:00Z", "94950.00")]
    assert "at the tick EURUSD bid 1.08005 / ask 1.08015 at 2026-03-02 14:04:00 UTC" in breach[0]["message"]
    assert breach[0]["details"]["tick"] == {"symbol": "EURUSD", "bid": "1.08005", "ask": "1.08015",
                                            "ts": "2026-03-02T14:04:00Z"}
    assert "replayed 6 events" in result.stderr.decode()
    again = run("replay", "--pack", "two-step-100k", files["events"], "--prices", files["prices"],
                "--symbols", files["symbols"])
    assert again.stdout == result.stdout  # byte for byte


def test_whatif_compares_two_packs_to_the_tick(files, tmp_path):
    looser = tmp_path / "looser.yaml"
    looser.write_text("""
id: looser
version: 1
currency: USD
initial_balance: "100000"
timezone: Europe/Prague
day_start: "00:00"
phases:
  - name: phase-1
    rules:
      - {kind: daily_loss, amount: {pct_initial: 6}, base: balance}
""")
    result = run("whatif", files["events"], "-p", "two-step-100k", "-p", str(looser), "--json",
                 "--prices", files["prices"], "--symbols", files["symbols"])
    assert result.returncode == 0, result.stderr.decode()
    answer = json.loads(result.stdout)
    assert answer["differences"] == [{"account": "A1", "a": "breached (daily_loss)", "b": "active",
                                      "a_at": "2026-03-02T14:04:00+00:00", "b_at": None}]


def test_a_bad_symbol_table_or_price_line_is_named(files, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"symbol": "EURUSD", "profit_currency": "USD"}]))
    result = run("replay", "--pack", "two-step-100k", files["events"], "--symbols", str(bad))
    assert result.returncode == 2 and "contract_size" in result.stderr.decode()
    prices = tmp_path / "bad-prices.ndjson"
    prices.write_text(Path(files["prices"]).read_text() + '{"id":"t9","type":"price","ts":"2026-03-02T14:05:00Z","symbol":"EURUSD","bid":"-1","ask":"1"}\n')
    result = run("replay", "--pack", "two-step-100k", files["events"], "--prices", str(prices),
                 "--symbols", files["symbols"])
    err = result.stderr.decode()
    assert result.returncode == 2 and "prices file" in err and "bid" in err


def test_bench_ticks_prints_the_figures_it_promises():
    from typer.testing import CliRunner

    from propcrm.cli import app

    result = CliRunner().invoke(app, ["bench", "ticks", "--accounts", "300", "--positions", "200", "--symbols", "6",
                                      "--ticks", "50", "--scale", "60,200"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "ticks/s on one core" in out and "p99" in out and "accounts re-valued per tick" in out
    assert "cost by open positions per symbol" in out


def test_bench_ticks_market_mix_takes_holders_out_of_their_band_and_counts_their_decisions():
    """The market stream's trends and news spikes push some holders through the exact path (calm ticks
    never do), each of them gets its decisions, and the sweep prints both paths' cost per holder."""
    from typer.testing import CliRunner

    from propcrm.cli import app
    from propcrm.tools.bench_ticks import build, run_ticks

    engine, table = build(2000, 1500, 12)
    calm = run_ticks(engine, table, 300, mix="calm")
    market = run_ticks(engine, table, 600, mix="market", first=300, spike_every=50)
    assert calm["exact"] == 0 and calm["decisions"] == 0
    assert market["spikes"] > 0 and market["exact"] > 0 and market["spike_exact_max"] > 0
    assert market["kinds"].get("breach", 0) > 0 and market["kinds"].get("warning", 0) > 0
    assert market["holders_after"] < market["holders_before"]  # a breached account's positions leave the screen
    result = CliRunner().invoke(app, ["bench", "ticks", "--accounts", "300", "--positions", "200", "--symbols", "6",
                                      "--ticks", "40", "--scale", "", "--mix", "both", "--sweep", "5,20",
                                      "--sweep-ticks", "30"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "stream: calm" in out and "stream: market" in out and "band leavers" in out
    assert "cost by holders per symbol" in out and "vector" in out and "exact" in out
