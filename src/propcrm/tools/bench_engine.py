"""``propcrm bench engine``: how fast the rule engine turns NDJSON bytes into decisions on one core.

It generates (once, then caches) a synthetic firm with the requested accounts and events — about 90%
equity updates, the rest trades, balance, news and clock events — and times, on the same bytes:

* decode only: msgspec decoding the NDJSON into typed events;
* engine: decoding *and* applying every event to its account through the full rule pack;

then reports both rates, their ratio, the engine's rate per CPU-second of the process, and the memory
an account's state takes. Each figure is the best of ``repeat`` runs (the least disturbed by the rest
of the machine). With ``peer_python`` (an interpreter that has ``zen-engine``) the generic-engine peer
(:mod:`.bench_peer_zen`) runs over the same file after each engine run, and the table compares them.
"""

from __future__ import annotations

import cProfile
import gc
import io
import os
import pstats
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from ..domain.events import DECODER
from ..domain.program import compile_pack
from ..domain.rulepack import parse_pack
from ..engine.runner import Engine, batch_gc

BENCH_PACK = """
id: bench-two-step
version: 1
name: Benchmark 2-step pack
currency: USD
initial_balance: "100000"
timezone: Europe/Prague
day_start: "00:00"
phases:
  - name: phase-1
    rules:
      - {kind: daily_loss, amount: {pct_initial: 5}, base: balance, comparator: below}
      - {kind: max_loss, amount: {pct_initial: 10}, trailing: equity_intraday, lock: initial, comparator: below}
      - {kind: profit_target, amount: {pct_initial: 10}}
      - {kind: min_trading_days, days: 4}
      - {kind: max_lots, per_position: 20, total: 50}
      - {kind: news, before_s: 120, after_s: 120, impact: [high], action: violation}
      - {kind: weekend_holding, weekend_start: {weekday: friday, time: "17:00", timezone: America/New_York}}
      - {kind: early_warning, at_pct: [80]}
"""

CHUNK = 4 << 20


def cache_dir() -> Path:
    base = os.environ.get("PROPCRM_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "propcrm" / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def firm_file(accounts: int, events: int, console: Console) -> Path:
    """The benchmark's event file, generated once per (accounts, events) and cached."""
    from ..synth.firm import FirmSpec, estimate_events, write_ndjson

    spec = _spec_for(accounts, events, FirmSpec, estimate_events)
    path = cache_dir() / f"firm-{accounts}-{events}-{spec.days}d-{spec.equity_every_s}s-seed{spec.seed}.ndjson"
    if not path.exists():
        console.print(f"generating {path.name} (once; cached under {path.parent}) …")
        started = time.perf_counter()
        tmp = path.with_suffix(".tmp")
        count = write_ndjson(spec, tmp)
        tmp.rename(path)
        console.print(f"  {count:,} events in {time.perf_counter() - started:.1f} s")
    return path


def _spec_for(accounts: int, events: int, FirmSpec, estimate_events):  # noqa: N803 - classes passed in
    """Pick the equity cadence so the firm has about ``events`` events."""
    best = None
    for every in (30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1200, 1800, 3600):
        spec = FirmSpec(accounts=accounts, days=3, equity_every_s=every, news=True, prices=False)
        estimate = estimate_events(spec)
        if best is None or abs(estimate - events) < abs(best[0] - events):
            best = (estimate, spec)
    assert best is not None
    return best[1]


def line_chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    out, start = [], 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + size)
        end = len(data) if end < start else end + 1
        out.append(data[start:end])
        start = end
    return out


def decode_only(chunks: list[bytes]) -> int:
    n = 0
    decode = DECODER.decode_lines
    for chunk in chunks:
        n += len(decode(chunk))
    return n


def run_engine(chunks: list[bytes], pack) -> Engine:
    """As ``propcrm replay`` runs it (the collector tuned for a batch process)."""
    engine = Engine(pack)
    decode = DECODER.decode_lines
    feed = engine.feed
    with batch_gc():
        for chunk in chunks:
            feed(decode(chunk))
    return engine


def state_bytes(engine: Engine) -> tuple[float, float]:
    """(in-memory bytes per account, snapshot bytes per account).

    In memory: every object reachable from the states that is not shared with another account
    (interned names, shared constants) counted once, divided by the accounts.
    """
    seen: set[int] = set()
    total = 0
    stack: list[object] = list(engine.states.values())
    atomic = (str, bytes, int, float, bool, Decimal, type(None))
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, atomic):
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif isinstance(obj, msgspec.Struct):
            stack.extend(getattr(obj, f) for f in obj.__struct_fields__)
    accounts = max(len(engine.states), 1)
    snapshot = sum(len(msgspec.msgpack.encode(st)) for st in engine.states.values())
    return total / accounts, snapshot / accounts


def run_peer(python: str, path: Path) -> dict | None:
    """The zen-engine peer (:mod:`.bench_peer_zen`) over the same file, in a child process of ``python``
    (an interpreter with ``zen-engine``); None when that interpreter cannot run it."""
    import json
    import subprocess

    src = str(Path(__file__).resolve().parents[2])  # the tree propcrm is imported from
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [python, "-m", "propcrm.tools.bench_peer_zen", str(path)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        Console(stderr=True).print(f"peer not run: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_engine(*, accounts: int, events: int, repeat: int, profile: bool, peer_python: str | None = None) -> dict:
    console = Console(highlight=False)
    pack = compile_pack(parse_pack(BENCH_PACK))
    path = firm_file(accounts, events, console)
    data = path.read_bytes()
    chunks = line_chunks(data)
    lines = data.count(b"\n")
    mix = Counter()
    for chunk in chunks[:3]:
        for ev in DECODER.decode_lines(chunk):
            mix[type(ev).__struct_config__.tag] += 1
    sample = sum(mix.values()) or 1

    gc.collect()
    decode_times, engine_times, engine_cpu, peers = [], [], [], []
    engine = None
    for _ in range(repeat):
        started = time.perf_counter()
        n = decode_only(chunks)
        decode_times.append(time.perf_counter() - started)
        gc.collect()
        started, cpu = time.perf_counter(), time.process_time()
        engine = run_engine(chunks, pack)
        engine_times.append(time.perf_counter() - started)
        engine_cpu.append(time.process_time() - cpu)
        gc.collect()
        if peer_python:  # alternating with the engine's runs, so both see the same machine
            peer = run_peer(peer_python, path)
            if peer is not None:
                peers.append(peer)
    assert engine is not None
    decode_rate = n / min(decode_times)
    engine_rate = engine.stats.events / min(engine_times)
    engine_cpu_rate = engine.stats.events / min(engine_cpu)
    peer_cpu_rate = max((p["events"] / p["cpu_s"] for p in peers), default=None)
    peer_rate = max((p["events"] / p["wall_s"] for p in peers), default=None)
    in_memory, snapshot = state_bytes(engine)
    stats = engine.stats

    table = Table(title=f"propcrm bench engine — {pack.describe()}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("events", f"{lines:,} ({len(data) / 1e6:,.0f} MB NDJSON)")
    table.add_row("accounts", f"{len(engine.states):,}")
    table.add_row(
        "mix (first chunks)", ", ".join(f"{k} {v / sample:.1%}" for k, v in mix.most_common())
    )
    table.add_row("decode only", f"{decode_rate:,.0f} events/s")
    table.add_row("engine (decode + rules)", f"{engine_rate:,.0f} events/s")
    table.add_row("engine, per CPU-second of the process", f"{engine_cpu_rate:,.0f} events/s")
    if peer_cpu_rate is not None and peer_rate is not None:
        last = peers[-1]["counts"]
        table.add_row(
            "peer: zen-engine, 4 rules (per CPU-second)",
            f"{peer_rate:,.0f} events/s ({peer_cpu_rate:,.0f}); engine is {engine_cpu_rate / peer_cpu_rate:.2f}× "
            "on CPU time",
        )
        table.add_row("peer's findings", ", ".join(f"{k} {v:,}" for k, v in last.items()))
    elif peer_python:
        table.add_row("peer: zen-engine", "not run (see the message above)")
    table.add_row("engine / decode", f"{engine_rate / decode_rate:.2f}")
    table.add_row("equity updates on the fast path", f"{stats.fast_path / max(stats.events, 1):.1%} of all events")
    table.add_row("decisions", ", ".join(f"{k} {v:,}" for k, v in sorted(stats.decisions.items())))
    table.add_row("state, in memory", f"{in_memory:,.0f} bytes/account")
    table.add_row("state, msgpack snapshot", f"{snapshot:,.0f} bytes/account")
    table.add_row(
        "runs",
        f"best of {repeat}: decode {min(decode_times):.2f} s, engine {min(engine_times):.2f} s "
        f"({min(engine_cpu):.2f} CPU-s)",
    )
    console.print(table)

    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run_engine(chunks, pack)
        profiler.disable()
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(18)
        console.print(buf.getvalue())
    return {
        "events": lines,
        "decode_rate": decode_rate,
        "engine_rate": engine_rate,
        "ratio": engine_rate / decode_rate,
        "engine_cpu_rate": engine_cpu_rate,
        "peer_cpu_rate": peer_cpu_rate,
        "state_bytes": in_memory,
        "snapshot_bytes": snapshot,
    }
