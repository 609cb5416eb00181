"""Issue 15's engine-speed work changes no result: over generated NDJSON streams the engine's loop gives the
same decisions, the same states (their msgpack bytes), the same applied ids, rejections and counters as the
loop it replaced (frozen in tests/support/reference_engine.py).

The streams aim at the edges the fast equity path must get right: equity at, a cent either side of and a
fraction of a cent around every floor, warning level and target of the pack (relative to the balance, so
they follow trades), new intraday peaks, trading-day changes in the pack's timezone (around its midnight
and the EU and US DST changes), duplicate ids, events older than the account's last one, figures with more
decimal places than the account's currency (and trailing zeros past the 8th place, which are accepted),
JSON numbers instead of strings, the optional margin and floating fields, unknown fields, malformed lines,
and accounts that ended (breached or passed) and keep reporting.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from propcrm.domain.decisions import to_ndjson
from propcrm.domain.events import DECODER, Rejected, _explain, decode_lines
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import parse_pack
from propcrm.engine.runner import Engine
from propcrm.tools.bench_engine import BENCH_PACK

from support.packs import parsed
from support.reference_engine import ReferenceEngine

UTC = dt.timezone.utc
# Europe/Prague's midnight is 23:00 UTC in winter; the EU DST change is on 2026-03-29, the US one on 03-08.
STARTS = [dt.datetime(2026, 3, 27, 22, 58, tzinfo=UTC), dt.datetime(2026, 3, 7, 22, 59, tzinfo=UTC)]
CHICAGO = """
id: chicago
version: 1
currency: USD
initial_balance: "100000"
timezone: America/Chicago
day_start: "17:00"
phases:
  - name: eval
    rules:
      - {kind: daily_loss, amount: {pct_initial: 4}, base: max_balance_equity, on_breach: pause, comparator: at_or_below}
      - {kind: max_loss, amount: {absolute: "6000"}, trailing: equity_intraday, lock: {initial_plus: 100}, comparator: at_or_below}
      - {kind: max_loss, id: eod_trail, amount: {pct_initial: 9}, trailing: balance_eod, lock: target}
      - {kind: profit_target, amount: {pct_initial: 8}}
      - {kind: min_trading_days, days: 2}
      - {kind: max_lots, per_position: 20, total: 30}
      - {kind: inactivity, days: 2}
      - {kind: early_warning, at_pct: [50, 80]}
"""
PACKS = {name: compile_pack(parse_pack(text)) for name, text in (("bench", BENCH_PACK), ("chicago", CHICAGO))}
PACKS["two-step-100k"] = compile_pack(parsed("two-step-100k"))

# Offsets from the balance where something happens in one of the packs (floors, warnings, targets, locks).
EDGES = [0, -2400, -3000, -3200, -4000, -4800, -5000, -6000, -7200, -8000, -9000, -10000, 100, 5000, 8000, 10000, 12000]
NUDGES = ["0"] * 6 + ["0.01", "-0.01", "0.001", "-0.005", "0.00000001", "0.000000001", "0.10000000000", "-0.5", "250"]
GAPS = [0, 0, 1, 30, 60, 300, 900, 3600, 4 * 3600, 11 * 3600, 26 * 3600, -1, -120, "day", "day"]
# The packs' trading days start at midnight in Prague and at 17:00 in Chicago: a "day" gap lands on the next
# start exactly, or a second either side.
DAY_STARTS = [(ZoneInfo("Europe/Prague"), dt.time(0)), (ZoneInfo("America/Chicago"), dt.time(17))]


def _next_day_start(t: dt.datetime, zone: ZoneInfo, at: dt.time) -> dt.datetime:
    day = t.astimezone(zone).date()
    for ahead in range(3):
        start = dt.datetime.combine(day + dt.timedelta(days=ahead), at, tzinfo=zone).astimezone(UTC)
        if start > t:
            return start
    raise AssertionError("a day start within three days")
KINDS = ["equity"] * 10 + ["open", "close", "balance", "session", "clock", "news", "dup", "junk"]


def _text(value: Decimal, how: str) -> str:
    if how == "number":
        return str(value)
    if how == "exp":
        return f'"{value:E}"'
    return f'"{value}"'


@st.composite
def streams(draw, max_events: int = 90) -> bytes:
    accounts = [f"A{i}" for i in range(draw(st.integers(1, 3)))]
    balance = {a: Decimal("100000.00") for a in accounts}
    top = dict(balance)  # the highest equity reported: intraday trailing levels follow it
    held: dict[str, list[str]] = {a: [] for a in accounts}
    t = draw(st.sampled_from(STARTS))
    ids: list[str] = []
    lines: list[str] = []
    for serial in range(draw(st.integers(1, max_events))):
        gap = draw(st.sampled_from(GAPS))
        if gap == "day":
            t = _next_day_start(t, *draw(st.sampled_from(DAY_STARTS))) + dt.timedelta(seconds=draw(st.sampled_from([-1, 0, 0, 1])))
        else:
            t += dt.timedelta(seconds=gap)
        ts = t.strftime("%Y-%m-%dT%H:%M:%SZ")
        account = draw(st.sampled_from(accounts))
        kind = draw(st.sampled_from(KINDS))
        eid = f"e{serial}"
        if kind == "dup" and ids:
            eid, kind = draw(st.sampled_from(ids)), "equity"
        ids.append(eid)
        head = f'{{"id":"{eid}","type":"%s","account":"{account}","ts":"{ts}"'
        if kind == "equity":
            if draw(st.integers(0, 3)):  # mostly inside the band (the fast path), now and then at an edge
                edge = draw(st.integers(-1500, 1500))
            else:
                edge = draw(st.sampled_from(EDGES)) + draw(st.integers(-50, 50)) * draw(st.sampled_from([0, 0, 1, 37]))
            base = balance[account] if draw(st.booleans()) else top[account]
            equity = base + edge + Decimal(draw(st.sampled_from(NUDGES)))
            top[account] = max(top[account], equity)
            shown = draw(st.sampled_from(["string"] * 8 + ["number", "exp"]))
            bal = balance[account] if draw(st.integers(0, 9)) else balance[account] + Decimal("-12.50")
            extra = draw(st.sampled_from(["", "", "", ',"margin":"120.5","floating":"-3.25"', ',"note":"x"', ',"margin":null']))
            lines.append(head % "equity" + f',"equity":{_text(equity, shown)},"balance":"{bal}"{extra}}}')
        elif kind == "open":
            pid = f"p{serial}"
            held[account].append(pid)
            lots = draw(st.sampled_from(["0.1", "1", "5", "25"]))
            lines.append(head % "trade_opened" + f',"position":"{pid}","symbol":"EURUSD","side":"buy","lots":"{lots}","price":"1.08512"}}')
        elif kind == "close" and held[account]:
            pid = held[account].pop(0)
            profit = Decimal(draw(st.integers(-900_000, 600_000))).scaleb(-2)
            balance[account] += profit
            lines.append(head % "trade_closed" + f',"position":"{pid}","lots":"25","price":"1.08","profit":"{profit}"}}')
        elif kind == "balance":
            amount = Decimal(draw(st.integers(-300_000, 300_000))).scaleb(-2)
            balance[account] += amount
            lines.append(head % "balance" + f',"amount":"{amount}","reason":"adjustment"}}')
        elif kind == "session":
            lines.append(head % "session" + ',"ip":"10.0.0.1","device":"d1"}')
        elif kind == "clock":
            lines.append(f'{{"id":"{eid}","type":"clock","ts":"{ts}"}}')
        elif kind == "news":
            lines.append(f'{{"id":"{eid}","type":"news","ts":"{ts}","title":"CPI","impact":"high","currency":"USD"}}')
        elif kind == "junk":
            lines.append(draw(st.sampled_from([
                head % "equity" + ',"equity":"abc","balance":"1"}',
                head % "equity" + ',"equity":"1e400","balance":"1"}',
                head % "equity" + ',"balance":"1"}',
                '{"id":"x"',
            ])))
    return ("\n".join(lines) + "\n").encode()


def _reference_decode(buf: bytes, first_line: int) -> tuple[list, list[int], list[Rejected]]:
    """Line by line with the full decoder: what every decoding path must agree with."""
    events, numbers, rejected = [], [], []
    for offset, line in enumerate(buf.split(b"\n")):
        if not line.strip():
            continue
        try:
            events.append(DECODER.decode(line))
            numbers.append(first_line + offset)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            rejected.append(Rejected(line=first_line + offset, reason=_explain(exc, line)))
    return events, numbers, rejected


def _pieces(buf: bytes, cuts: list[int]) -> list[tuple[bytes, int]]:
    """``buf`` cut into whole-line pieces at the given line indices, each with its first line number."""
    lines = buf.splitlines(keepends=True)
    out, start = [], 0
    for cut in sorted(set(cuts)) + [len(lines)]:
        if cut > start:
            out.append((b"".join(lines[start:cut]), start + 1))
            start = cut
    return out


def _run(engine: Engine, pieces: list[tuple[bytes, int]], decode) -> tuple[bytes, list[Rejected]]:
    decisions, malformed = [], []
    for piece, first in pieces:
        events, numbers, bad = decode(piece, first)
        malformed.extend(bad)
        decisions.extend(engine.feed(events, numbers))
    return to_ndjson(decisions), malformed


def _states(engine: Engine) -> list[bytes]:
    return [msgspec.msgpack.encode(engine.state(a)) for a in sorted(engine.states)]


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(streams(), st.sampled_from(sorted(PACKS)), st.lists(st.integers(0, 90), max_size=3))
def test_the_engine_loop_gives_what_the_reference_loop_gives(buf, pack, cuts):
    pieces = _pieces(buf, cuts)
    new, ref = Engine(PACKS[pack]), ReferenceEngine(PACKS[pack])
    new_out, new_bad = _run(new, pieces, decode_lines)
    ref_out, ref_bad = _run(ref, pieces, _reference_decode)
    assert new_out == ref_out
    assert _states(new) == _states(ref)
    assert new.seen == ref.seen
    assert msgspec.structs.asdict(new.stats) == msgspec.structs.asdict(ref.stats)
    assert new.rejected == ref.rejected
    assert new_bad == ref_bad
    assert new.snapshot() == ref.snapshot() or new.market.news_keys  # (news keys are a set: hash order)


def test_the_instruction_count_run_applies_the_first_chunks_of_the_bench_file(tmp_path, monkeypatch):
    """``python -m propcrm.tools.bench_engine_count N`` (run under cachegrind) applies exactly the events of
    the file's first N chunks, as the bench's engine run does; 0 chunks is start-up alone."""
    from rich.console import Console

    from propcrm.tools.bench_engine import firm_file, line_chunks
    from propcrm.tools.bench_engine_count import count_run

    monkeypatch.setenv("PROPCRM_CACHE", str(tmp_path))
    assert count_run(0, accounts=20, events=3000) == (0, 0)
    data = firm_file(20, 3000, Console(quiet=True)).read_bytes()
    events, _ = count_run(1, accounts=20, events=3000)
    assert events == line_chunks(data)[0].count(b"\n") > 0
