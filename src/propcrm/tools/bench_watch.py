"""The engine's fast path with and without a near-breach watch (engine/lows.py): process CPU per in-band
equity update, 1,000 accounts of ``two-step-100k``, 200,000 updates on a random walk between 96,100 and
104,000 (inside every band: the 80 % warning sits at 96,000), five timed feeds per run.

    python -m propcrm.tools.bench_watch off|pct5|amt500

``off``: no zone (what every firm without an alert distance gets); ``pct5``: within 5 % of equity (the daily
floor's zone reaches 100,000, so about half the updates are inside it); ``amt500``: within 500 (none is).
Run it alternately against another checkout for a before/after: the figures of one run on a shared machine
are noise."""

from __future__ import annotations

import datetime as dt
import random
import sys
import time
from decimal import Decimal

from ..domain.events import Equity
from ..domain.program import compile_pack
from ..domain.rulepack import load_pack
from ..engine.runner import Engine

UTC = dt.timezone.utc


def main(mode: str) -> list[float]:
    t0 = dt.datetime(2026, 3, 2, 9, tzinfo=UTC)
    rnd = random.Random(1)
    updates, accounts = 200_000, 1000
    events = [Equity(id=f"s{a}", ts=t0, account=f"A{a}", equity=Decimal("100000"), balance=Decimal("100000"))
              for a in range(accounts)]
    for i in range(updates):
        events.append(Equity(id=f"e{i}", ts=t0 + dt.timedelta(seconds=1 + i // 50), account=f"A{i % accounts}",
                             equity=Decimal(rnd.randrange(9_610_000, 10_400_000)).scaleb(-2), balance=Decimal("100000")))
    out = []
    for _ in range(5):
        engine = Engine(compile_pack(load_pack("two-step-100k")), dedupe=False)
        if mode != "off":
            from ..engine.lows import Zone

            engine.watch_lows(Zone(Decimal("5"), None) if mode == "pct5" else Zone(None, Decimal("500")))
        engine.feed(events[:accounts])
        start = time.process_time()
        engine.feed(events[accounts:])
        out.append((time.process_time() - start) / updates * 1e6)
    print(f"{mode}: fast path {engine.stats.fast_path:,} of {engine.stats.events:,}; µs per update: "
          + " ".join(f"{x:.2f}" for x in out))
    return out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "off")
