"""``propcrm demo``: a synthetic firm streamed through the engine, with a live view and a summary.

Until the service exists this is what ``make run`` shows a newcomer: thousands of accounts of
different trading styles, a few trading days, some breaching, some passing, every decision explained.
"""

from __future__ import annotations

import time
from collections import Counter

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..domain.decisions import Decision
from ..domain.events import decode_lines
from ..domain.program import CompiledPack
from ..engine.runner import Engine

BATCH = 4000
SHOW = {"breach", "pause", "phase_passed"}


def run_demo(pack: CompiledPack, *, accounts: int, days: int, seed: int) -> None:
    from ..synth.firm import FirmSpec, generate, traders

    console = Console(highlight=False)
    spec = FirmSpec(accounts=accounts, days=days, seed=seed)
    with console.status(f"generating a firm of {accounts:,} traders over {days} trading days (seed {seed}) …"):
        started = time.perf_counter()
        lines = list(generate(spec))
        styles = {t.account: t.style for t in traders(spec)}
    console.print(
        f"[bold]propcrm demo[/] — {len(lines):,} events for {accounts:,} accounts generated in "
        f"{time.perf_counter() - started:.1f} s; rule pack {pack.describe()}"
    )

    engine = Engine(pack)
    recent: list[Decision] = []
    kinds: Counter = Counter()
    progress = Progress(
        TextColumn("[bold]streaming events"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    task = progress.add_task("events", total=len(lines), rate="")

    def view() -> Group:
        counts = Table.grid(padding=(0, 3))
        for kind in ("breach", "pause", "violation", "warning", "blocked", "phase_passed"):
            counts.add_column()
        counts.add_row(*(f"{k}: [bold]{kinds.get(k, 0):,}[/]" for k in (
            "breach", "pause", "violation", "warning", "blocked", "phase_passed")))
        feed = "\n".join(_line(d, styles) for d in recent[-8:]) or "…"
        return Group(progress, counts, Panel(feed, title="latest decisions", border_style="dim"))

    started = time.perf_counter()
    with Live(view(), console=console, refresh_per_second=8) as live:
        for start in range(0, len(lines), BATCH):
            chunk = lines[start : start + BATCH]
            events, numbers, _ = decode_lines(b"".join(chunk), start + 1)
            for decision in engine.feed(events, numbers):
                kinds[decision.kind] += 1
                if decision.kind in SHOW:
                    recent.append(decision)
            elapsed = time.perf_counter() - started
            progress.update(task, advance=len(chunk), rate=f"{(start + len(chunk)) / elapsed:,.0f} events/s")
            live.update(view())
    elapsed = time.perf_counter() - started
    _summary(console, engine, styles, elapsed)


def _line(d: Decision, styles: dict[str, str]) -> str:
    colour = {"breach": "red", "pause": "yellow", "phase_passed": "green"}.get(d.kind, "white")
    return (
        f"[{colour}]{d.kind:<12}[/] {d.account} ({styles.get(d.account, '?')}) "
        f"{d.ts:%a %H:%M} — {d.message}"
    )


def _summary(console: Console, engine: Engine, styles: dict[str, str], elapsed: float) -> None:
    stats = engine.stats
    status = Counter(st.status for st in engine.states.values())
    table = Table(title="summary")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("events", f"{stats.events:,}")
    table.add_row("throughput", f"{stats.events / elapsed:,.0f} events/s (with the live view)")
    table.add_row("accounts", f"{len(engine.states):,}")
    for name in ("active", "paused", "breached", "passed"):
        table.add_row(f"  {name}", f"{status.get(name, 0):,}")
    for (kind, rule), n in sorted(stats.by_rule.items(), key=lambda kv: (kv[0][0], -kv[1])):
        table.add_row(f"{kind} · {rule}", f"{n:,}")
    console.print(table)

    by_style = Table(title="outcome by trading style")
    for col in ("style", "accounts", "breached", "passed"):
        by_style.add_column(col, justify="right" if col != "style" else "left")
    per: dict[str, Counter] = {}
    for account, st in engine.states.items():
        per.setdefault(styles.get(account, "?"), Counter())[st.status] += 1
    for style, counts in sorted(per.items()):
        total = sum(counts.values())
        by_style.add_row(
            style, f"{total:,}", f"{counts['breached'] / total:.0%}", f"{counts['passed'] / total:.0%}"
        )
    console.print(by_style)
    console.print(
        "Replay any history with [bold]propcrm replay --pack two-step-100k EVENTS.ndjson[/]; "
        "compare two packs with [bold]propcrm whatif[/]."
    )
