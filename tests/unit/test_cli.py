"""The commands as a firm uses them: replay, whatif, packs — real files; the commands run in this process
(typer's runner: the same exit status, stdout and stderr, without ~0.7 s of interpreter start and import per
command), and two of them as real ``python -m propcrm.cli`` processes, so the entry point, a real exit status
and the split of decisions (stdout) from the summary (stderr) are held in a process of its own too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli import run_cli as run

EVENTS = [
    {"id": "o1", "type": "trade_opened", "account": "A1", "ts": "2026-03-02T09:00:00Z", "position": "p1",
     "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"},
    {"id": "e1", "type": "equity", "account": "A1", "ts": "2026-03-02T10:00:00Z", "equity": "95500.00",
     "balance": "100000.00"},
    {"id": "e2", "type": "equity", "account": "A1", "ts": "2026-03-02T11:00:00Z", "equity": "95800.00",
     "balance": "100000.00"},
    {"id": "o2", "type": "trade_opened", "account": "A2", "ts": "2026-03-02T09:00:00Z", "position": "q1",
     "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"},
    {"id": "e3", "type": "equity", "account": "A2", "ts": "2026-03-02T10:00:00Z", "equity": "94000.00",
     "balance": "100000.00"},
]


def process(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """The command as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "propcrm.cli", *args], capture_output=True, input=stdin, timeout=120
    )


@pytest.fixture
def history(tmp_path: Path) -> Path:
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    return path


def test_replay_prints_decisions_as_ndjson_and_a_summary(history):
    result = process("replay", "--pack", "two-step-100k", str(history))
    assert result.returncode == 0, result.stderr.decode()
    decisions = [json.loads(line) for line in result.stdout.decode().splitlines()]
    breach = [d for d in decisions if d["kind"] == "breach"]
    assert [(d["account"], d["rule"], d["event_id"]) for d in breach] == [("A2", "daily_loss", "e3")]
    assert breach[0]["threshold"] == "95000" and breach[0]["value"] == "94000.00"
    assert "fell below the daily floor 95,000.00 = balance at day start 100,000.00" in breach[0]["message"]
    assert any(d["kind"] == "warning" and d["account"] == "A1" for d in decisions)
    summary = result.stderr.decode()
    assert "replayed 5 events for 2 accounts" in summary and "breach 1" in summary


def test_replay_is_byte_for_byte_repeatable(history):
    first = run("replay", "--pack", "two-step-100k", str(history)).stdout
    assert first and first == run("replay", "--pack", "two-step-100k", str(history)).stdout


def test_replay_reads_stdin_and_can_start_in_another_phase(history):
    result = run("replay", "--pack", "two-step-100k", "--phase", "funded", "-", stdin=history.read_bytes())
    assert result.returncode == 0
    assert all(json.loads(line)["phase"] == "funded" for line in result.stdout.decode().splitlines())


def test_a_malformed_line_is_named_and_the_rest_still_applies(history, tmp_path):
    bad = tmp_path / "bad.ndjson"
    bad.write_text(history.read_text() + '{"id":"x","type":"equity","account":"A1","ts":"2026-03-02T12:00:00Z",'
                   '"equity":"lots","balance":"1"}\n{"id": "y", "type": "nope"}\n')
    result = process("replay", "--pack", "two-step-100k", str(bad))
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "line 6" in err and "`equity`" in err and "Invalid decimal" in err
    assert "line 7" in err and "nope" in err
    assert b'"kind":"breach"' in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["replay", "--pack", "no-such-pack", "EVENTS"], "no such file, and no preset"),
        (["replay", "--pack", "two-step-100k", "/nonexistent.ndjson"], "no such events file"),
        (["replay", "--pack", "two-step-100k", "--phase", "phase-9", "EVENTS"], "has no phase 'phase-9'"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(history, args, message):
    result = run(*[str(history) if a == "EVENTS" else a for a in args])
    assert result.returncode == 2
    assert message in result.stderr.decode()


def test_a_bad_pack_names_the_path_and_the_problem(tmp_path, history):
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        "id: p\nversion: 1\ncurrency: USD\ninitial_balance: '100000'\ntimezone: UTC\nday_start: '00:00'\n"
        "phases: [{name: a, rules: [{kind: daily_loss, amount: {pct_initial: 500}}]}]\n"
    )
    result = run("replay", "--pack", str(pack), str(history))
    assert result.returncode == 2
    assert "$.phases[0].rules[0].amount" in result.stderr.decode()
    assert "percentage" in result.stderr.decode()


def test_whatif_reports_who_fails_under_the_stricter_pack(history, tmp_path):
    strict = tmp_path / "strict.yaml"
    text = (Path(__file__).resolve().parents[2] / "src/propcrm/presets/two-step-100k.yaml").read_text()
    strict.write_text(text.replace("id: two-step-100k", "id: two-step-strict").replace(
        "{kind: daily_loss, amount: {pct_initial: 5}", "{kind: daily_loss, amount: {pct_initial: 4}"))
    result = run("whatif", "--pack", "two-step-100k", "--pack", str(strict), str(history), "--json")
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["a"]["breach_rate"] == 0.5 and report["b"]["breach_rate"] == 1.0
    assert report["differences"] == [
        {"account": "A1", "a": "active", "b": "breached (daily_loss)", "a_at": None, "b_at": "2026-03-02T10:00:00+00:00"}
    ]
    table = run("whatif", "--pack", "two-step-100k", "--pack", str(strict), str(history))
    assert "A1: active → breached (daily_loss)" in table.stdout.decode()


def test_packs_commands(tmp_path):
    listing = run("packs", "presets").stdout.decode()
    assert "two-step-100k" in listing and "futures-eod-50k" in listing
    ok = run("packs", "validate", "one-step-100k")
    assert ok.returncode == 0 and b"sha256:" in ok.stdout
    schema = json.loads(run("packs", "schema").stdout)
    assert schema["title"] == "propcrm rule pack"


def test_demo_streams_a_synthetic_firm_and_summarises_it():
    result = run("demo", "--accounts", "60", "--days", "2")
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "summary" in out and "outcome by trading style" in out and "gambler" in out


def _table_rows(out: str) -> dict[str, str]:
    """The rows of a rich table as {figure: value}."""
    rows = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if line.startswith("│") and len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def _number(text: str) -> float:
    return float(text.split()[0].replace(",", ""))


def test_bench_engine_measures_the_whole_firm_through_the_full_pack_and_prints_consistent_figures(tmp_path, monkeypatch):
    """The figures are of the real work: every event of the generated firm, through the benchmark's pack.

    A tiny firm in-process (the figures' size does not matter here; docs/benchmarks.md has real ones).
    """
    from typer.testing import CliRunner

    from propcrm.tools import bench_engine as bench
    from propcrm.cli import app
    from propcrm.domain.events import DECODER
    from propcrm.domain.program import compile_pack
    from propcrm.domain.rulepack import parse_pack
    from propcrm.engine.runner import Engine

    monkeypatch.setenv("PROPCRM_CACHE", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "250")
    result = CliRunner().invoke(app, ["bench", "engine", "--accounts", "12", "--events", "1500", "--repeat", "2"])
    assert result.exit_code == 0, result.output
    rows = _table_rows(result.output)

    [firm] = list((tmp_path / "propcrm" / "bench").glob("firm-12-1500-*.ndjson"))
    data = firm.read_bytes()
    replay = Engine(compile_pack(parse_pack(bench.BENCH_PACK)))
    replay.feed(DECODER.decode_lines(data))
    assert 1000 <= replay.stats.events == data.count(b"\n") <= 2000  # about the events asked for

    assert _number(rows["events"]) == replay.stats.events
    assert _number(rows["accounts"]) == len(replay.states) == 12
    assert rows["decisions"] == ", ".join(f"{k} {v:,}" for k, v in sorted(replay.stats.decisions.items()))
    assert rows["equity updates on the fast path"] == f"{replay.stats.fast_path / replay.stats.events:.1%} of all events"
    decode, engine = _number(rows["decode only"]), _number(rows["engine (decode + rules)"])
    assert rows["decode only"].endswith(" events/s") and rows["engine (decode + rules)"].endswith(" events/s")
    assert 0 < engine and 0 < decode
    assert abs(_number(rows["engine / decode"]) - engine / decode) <= 0.006  # the ratio of the two printed rates
    assert 0 < _number(rows["state, msgpack snapshot"]) < _number(rows["state, in memory"])
    assert rows["runs"].startswith("best of 2: ")


def test_whatif_with_an_unknown_phase_exits_2(history):
    result = run("whatif", "--pack", "two-step-100k", "--pack", "one-step-100k", "--phase", "nope", str(history))
    assert result.returncode == 2 and "has no phase 'nope'" in result.stderr.decode()
