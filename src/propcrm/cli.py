"""The ``propcrm`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .domain.program import CompiledPack, compile_pack
from .domain.rulepack import RulePackError, content_hash, json_schema, load_pack, preset_names

app = typer.Typer(
    name="propcrm",
    help="propcrm: real-time rule engine, abuse analytics, payouts and CRM for prop trading firms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
packs_app = typer.Typer(help="Rule packs: validate, list the presets, print the JSON Schema.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print figures (events/s, bytes per account).", no_args_is_help=True)
app.add_typer(packs_app, name="packs")
app.add_typer(bench_app, name="bench")

err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


def _load(pack: str) -> CompiledPack:
    try:
        return compile_pack(load_pack(pack))
    except RulePackError as exc:
        raise _fail(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise _fail(f"{pack}: {exc}") from None


def _events_path(path: str) -> str:
    if path != "-" and not Path(path).is_file():
        raise _fail(f"{path}: no such events file")
    return path


def _report_rejections(rejected: list, limit: int = 20) -> None:
    for item in rejected[:limit]:
        where = f"line {item.line}" if item.line is not None else "event"
        ident = f" id={item.id}" if item.id else ""
        err.print(f"  {item.kind}: {where}{ident}: {item.reason}")
    if len(rejected) > limit:
        err.print(f"  … and {len(rejected) - limit} more")


@app.command()
def replay(
    events: Annotated[str, typer.Argument(help="NDJSON events file (GUIDE §2), or - for stdin")],
    pack: Annotated[str, typer.Option("--pack", "-p", help="rule pack file (YAML/JSON) or preset name")],
    phase: Annotated[Optional[str], typer.Option(help="phase the accounts are in (default: the first)")] = None,
) -> None:
    """Replay a history through a pack: decisions as NDJSON on stdout, a summary on stderr.

    Exit status 0; 2 on a bad pack, a missing file or any malformed event line (each is named).
    """
    from .engine.replay import replay as run_replay

    compiled = _load(pack)
    path = _events_path(events)
    try:
        compiled.phase(phase)
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from None
    out = sys.stdout.buffer
    run = run_replay(compiled, path, phase=phase, sink=out.write)
    out.flush()
    stats = run.engine.stats
    rate = stats.events / run.seconds if run.seconds else 0.0
    err.print(
        f"replayed {stats.events:,} events for {len(run.engine.states):,} accounts under {compiled.describe()} "
        f"in {run.seconds:.2f} s ({rate:,.0f} events/s)"
    )
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.decisions.items())) or "none"
    err.print(f"decisions: {kinds}")
    engine_rejected = run.engine.rejected
    if run.malformed or engine_rejected:
        err.print(
            f"not applied: {len(run.malformed)} malformed line(s), {stats.duplicates} duplicate(s), "
            f"{stats.out_of_order} out of order, {stats.failed} failed"
        )
        _report_rejections(run.rejected)
    if run.malformed:
        err.print("[bold red]error:[/] malformed lines were rejected (listed above); the rest was applied")
        raise typer.Exit(2)


@app.command()
def whatif(
    events: Annotated[str, typer.Argument(help="NDJSON events file")],
    pack: Annotated[list[str], typer.Option("--pack", "-p", help="two packs: the current one, then the candidate")],
    phase: Annotated[Optional[str], typer.Option(help="phase the accounts are in (default: the first)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the comparison as JSON")] = False,
    show: Annotated[int, typer.Option(help="how many differing accounts to list")] = 20,
) -> None:
    """Back-test a rule change: one history under two packs, and what changes between them."""
    from .engine.replay import whatif as run_whatif

    if len(pack) != 2:
        raise _fail("give exactly two packs: --pack CURRENT --pack CANDIDATE")
    a, b = _load(pack[0]), _load(pack[1])
    for compiled in (a, b):
        try:
            compiled.phase(phase)
        except KeyError as exc:
            raise _fail(str(exc.args[0])) from None
    result = run_whatif(a, b, _events_path(events), phase=phase)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    else:
        console = Console(highlight=False)
        table = Table(title="what-if: the same history under two packs")
        table.add_column("")
        table.add_column(f"A: {result.labels[0]}")
        table.add_column(f"B: {result.labels[1]}")
        ra, rb = result.rates(0), result.rates(1)
        table.add_row("accounts", f"{ra['accounts']:,}", f"{rb['accounts']:,}")
        table.add_row("pass rate", f"{ra['pass_rate']:.1%}", f"{rb['pass_rate']:.1%}")
        table.add_row("breach rate", f"{ra['breach_rate']:.1%}", f"{rb['breach_rate']:.1%}")
        ba, bb = result.breaches_by_rule(0), result.breaches_by_rule(1)
        for rule in sorted(set(ba) | set(bb)):
            table.add_row(f"  breached by {rule}", f"{ba.get(rule, 0):,}", f"{bb.get(rule, 0):,}")
        console.print(table)
        changes = result.changes()
        if not changes:
            console.print("No account's outcome changes.")
        else:
            moved = Table(title="accounts whose outcome changes (A → B)")
            moved.add_column("under A")
            moved.add_column("under B")
            moved.add_column("accounts", justify="right")
            for (fa, fb), n in sorted(changes.items(), key=lambda kv: -kv[1]):
                moved.add_row(fa, fb, f"{n:,}")
            console.print(moved)
            for acc, oa, ob in result.differences()[:show]:
                console.print(f"  {acc}: {oa.label()} → {ob.label()}")
    if result.malformed:
        err.print(f"[bold red]error:[/] {len(result.malformed)} malformed line(s) were rejected")
        _report_rejections(result.malformed)
        raise typer.Exit(2)


@packs_app.command("validate")
def packs_validate(files: Annotated[list[str], typer.Argument(help="pack files or preset names")]) -> None:
    """Validate packs against the schema; print id, version and content hash of each."""
    failed = False
    for name in files:
        try:
            pack = load_pack(name)
            compile_pack(pack)
        except (RulePackError, ValueError, OSError) as exc:
            err.print(f"[red]✗[/] {exc}")
            failed = True
            continue
        print(f"ok {name}: {pack.id} v{pack.version} {content_hash(pack)}")
    if failed:
        raise typer.Exit(2)


@packs_app.command("presets")
def packs_presets() -> None:
    """List the shipped presets."""
    for name in preset_names():
        pack = load_pack(name)
        print(f"{name:32} v{pack.version}  {pack.name or ''}")


@packs_app.command("schema")
def packs_schema() -> None:
    """Print the JSON Schema every rule pack is validated against."""
    sys.stdout.write(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")


@app.command()
def demo(
    accounts: Annotated[int, typer.Option(help="accounts in the synthetic firm")] = 3000,
    days: Annotated[int, typer.Option(help="calendar days of trading")] = 5,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same firm)")] = 7,
    pack: Annotated[str, typer.Option(help="rule pack file or preset")] = "two-step-100k",
) -> None:
    """Generate a realistic synthetic firm and stream it through the engine, live."""
    from .demo import run_demo

    run_demo(_load(pack), accounts=accounts, days=days, seed=seed)


@bench_app.command("engine")
def bench_engine(
    accounts: Annotated[int, typer.Option(help="accounts")] = 10_000,
    events: Annotated[int, typer.Option(help="events (approximately)")] = 2_000_000,
    repeat: Annotated[int, typer.Option(help="timed runs; the best is reported")] = 3,
    profile: Annotated[bool, typer.Option(help="also print a cProfile of one engine run")] = False,
) -> None:
    """Events/s from NDJSON bytes to decisions on one core, decode-only rate, ratio, state bytes/account."""
    from .bench import bench_engine as run_bench

    run_bench(accounts=accounts, events=events, repeat=repeat, profile=profile)


audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    database_url: Annotated[
        Optional[str],
        typer.Option("--database-url", help="database URL (default: PROPCRM_DATABASE_URL, else PROPCRM_DATA_DIR)"),
    ] = None,
) -> None:
    """Walk the audit log's hash chain and name the first entry that was altered or removed.

    Exit status 0 when intact, 1 when broken, 2 when the database cannot be read.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from .adapters.db import session as db
    from .services.audit import verify

    url = database_url or db.database_url()
    try:
        db.migrate(url)
        engine = db.make_engine(url)
        try:
            with db.sessions(engine)() as session:
                result = verify(session)
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        raise _fail(f"cannot read the audit log: {str(exc).splitlines()[0]}") from None
    if not result.ok:
        print(f"audit log broken at entry #{result.first_bad_seq}: {result.problem}")
        raise typer.Exit(1)
    print(f"audit log intact: {result.entries} {'entry' if result.entries == 1 else 'entries'}")
    if result.head_hash:
        print(f"head: entry #{result.entries} hash {result.head_hash}")


if __name__ == "__main__":  # pragma: no cover
    app()
