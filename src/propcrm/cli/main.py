"""The ``propcrm`` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..domain.program import CompiledPack, compile_pack
from ..domain.rulepack import RulePackError, content_hash, json_schema, load_pack, preset_names
from .common import cli_actor, database, err, fail, firm_of, report_rejections

app = typer.Typer(
    name="propcrm",
    help="propcrm: real-time rule engine, abuse analytics, payouts and CRM for prop trading firms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
packs_app = typer.Typer(help="Rule packs: validate, list the presets, print the JSON Schema; move accounts between "
                                  "versions (rebind).", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print figures (events/s, bytes per account).", no_args_is_help=True)
app.add_typer(packs_app, name="packs")
app.add_typer(bench_app, name="bench")

def _load(pack: str) -> CompiledPack:
    try:
        return compile_pack(load_pack(pack))
    except RulePackError as exc:
        raise fail(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise fail(f"{pack}: {exc}") from None


def _events_path(path: str) -> str:
    if path != "-" and not Path(path).is_file():
        raise fail(f"{path}: no such events file")
    return path


def _symbols(path: str | None):
    """The symbol table in ``path`` (JSON, or CSV when it ends in .csv), or exit 2 naming the problem."""
    if path is None:
        return None
    from ..services.errors import Invalid
    from ..services.symbols import read_table

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise fail(f"{path}: {exc.strerror or exc}") from None
    try:
        return read_table(data, fmt="csv" if path.lower().endswith(".csv") else "json")
    except Invalid as exc:
        raise fail(f"{path}: {exc}") from None


@app.command()
def replay(
    events: Annotated[str, typer.Argument(help="NDJSON events file (GUIDE §2), or - for stdin")],
    pack: Annotated[str, typer.Option("--pack", "-p", help="rule pack file (YAML/JSON) or preset name")],
    phase: Annotated[Optional[str], typer.Option(help="phase the accounts are in (default: the first)")] = None,
    prices: Annotated[Optional[str], typer.Option(help="NDJSON file of price ticks, merged in by time")] = None,
    symbols: Annotated[Optional[str], typer.Option(help="symbol table (JSON, or CSV by .csv): mark positions to the tick")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="revalue every holder in Decimal at every tick (slower; the same decisions)")] = False,
) -> None:
    """Replay a history through a pack: decisions as NDJSON on stdout, a summary on stderr.

    With --prices and --symbols open positions are marked to market from every tick, and a breach
    names the tick that caused it. Exit status 0; 2 on a bad pack, a missing file, a bad symbol table
    or any malformed event line (each is named).
    """
    from ..engine.replay import replay as run_replay

    compiled = _load(pack)
    path = _events_path(events)
    price_path = _events_path(prices) if prices is not None else None
    table = _symbols(symbols)
    try:
        compiled.phase(phase)
    except KeyError as exc:
        raise fail(str(exc.args[0])) from None
    out = sys.stdout.buffer
    run = run_replay(compiled, path, phase=phase, sink=out.write, prices=price_path, symbols=table, exact=exact)
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
        report_rejections(run.rejected)
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
    prices: Annotated[Optional[str], typer.Option(help="NDJSON file of price ticks, merged in by time")] = None,
    symbols: Annotated[Optional[str], typer.Option(help="symbol table (JSON, or CSV by .csv): mark positions to the tick")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="revalue every holder in Decimal at every tick (slower; the same decisions)")] = False,
) -> None:
    """Back-test a rule change: one history under two packs, and what changes between them (to the
    tick with --prices and --symbols)."""
    from ..engine.replay import whatif as run_whatif

    if len(pack) != 2:
        raise fail("give exactly two packs: --pack CURRENT --pack CANDIDATE")
    a, b = _load(pack[0]), _load(pack[1])
    for compiled in (a, b):
        try:
            compiled.phase(phase)
        except KeyError as exc:
            raise fail(str(exc.args[0])) from None
    result = run_whatif(a, b, _events_path(events), phase=phase,
                        prices=_events_path(prices) if prices is not None else None, symbols=_symbols(symbols),
                        exact=exact)
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
        report_rejections(result.malformed)
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
    from ..tools.demo import run_demo

    run_demo(_load(pack), accounts=accounts, days=days, seed=seed)


@bench_app.command("engine")
def bench_engine(
    accounts: Annotated[int, typer.Option(help="accounts")] = 10_000,
    events: Annotated[int, typer.Option(help="events (approximately)")] = 2_000_000,
    repeat: Annotated[int, typer.Option(help="timed runs; the best is reported")] = 3,
    profile: Annotated[bool, typer.Option(help="also print a cProfile of one engine run")] = False,
    peer_python: Annotated[Optional[str], typer.Option(help="a Python with zen-engine: run the generic-engine peer on the same stream, alternating")] = None,
) -> None:
    """Events/s from NDJSON bytes to decisions on one core, decode-only rate, ratio, state bytes/account."""
    from ..tools.bench_engine import bench_engine as run_bench

    run_bench(accounts=accounts, events=events, repeat=repeat, profile=profile, peer_python=peer_python)


@bench_app.command("ticks")
def bench_ticks(
    accounts: Annotated[int, typer.Option(help="accounts")] = 100_000,
    positions: Annotated[int, typer.Option(help="open positions, spread at random over the symbols")] = 50_000,
    symbols: Annotated[int, typer.Option(help="symbols")] = 30,
    ticks: Annotated[int, typer.Option(help="ticks fed one by one")] = 5_000,
    scale: Annotated[str, typer.Option(help="comma-separated open-position counts for the growth table ('' for none)")] = "5000,20000,50000,100000",
    vector: Annotated[bool, typer.Option("--vector/--exact", help="screen ticks with numpy (default) or re-value every holder in Decimal")] = True,
    mix: Annotated[str, typer.Option(help="calm: ±30 points a tick; market: trends and news spikes that take holders out of their band; both: calm, then market")] = "calm",
    spike_every: Annotated[int, typer.Option(help="market: a news spike every this many ticks")] = 250,
    sweep: Annotated[str, typer.Option(help="comma-separated positions per symbol: CPU µs per tick and per holder, vector and exact ('' for none)")] = "",
    sweep_symbols: Annotated[int, typer.Option(help="symbols of the sweep")] = 6,
    sweep_ticks: Annotated[int, typer.Option(help="ticks per sweep point (fewer on the exact path at the top)")] = 400,
) -> None:
    """Ticks/s and tick→decision latency (p50/p99) when ticks re-value the accounts holding the symbol."""
    from ..tools.bench_ticks import bench_ticks as run_bench

    if mix not in ("calm", "market", "both"):
        raise typer.BadParameter("--mix is calm, market or both")
    run_bench(accounts=accounts, positions=positions, symbols=symbols, ticks=ticks,
              scale=[int(n) for n in scale.split(",") if n.strip()], vector=vector, mix=mix, spike_every=max(10, spike_every),
              sweep=[int(n) for n in sweep.split(",") if n.strip()], sweep_symbols=sweep_symbols,
              sweep_ticks=sweep_ticks)


@bench_app.command("partition-ticks")
def bench_partition_ticks(
    accounts: Annotated[int, typer.Option(help="traders of the synthetic firm (with prices)")] = 200,
    days: Annotated[int, typer.Option(help="days of events")] = 3,
    partitions: Annotated[int, typer.Option(help="P")] = 4,
    request: Annotated[int, typer.Option(help="lines per ingest request")] = 2_000,
    batch: Annotated[int, typer.Option(help="messages per committed batch")] = 8,
    repeat: Annotated[int, typer.Option(help="runs per path (the median CPU is shown)")] = 3,
) -> None:
    """Process CPU of a firm with prices through a partition store, vector screen on vs off."""
    from ..tools.bench_partition_ticks import bench_partition_ticks as run_bench

    run_bench(accounts=accounts, days=days, partitions=partitions, request=request, batch=batch, repeat=repeat)


audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _anchor_config(url: str, key_file: Optional[str], anchors: Optional[str]):
    from dataclasses import replace

    from ..services.audit_config import AnchorConfigError, config_for, read_key

    try:
        config = config_for(url)
        if key_file is not None:
            config = replace(config, key=read_key(Path(key_file)), key_source=key_file)
    except AnchorConfigError as exc:
        raise fail(str(exc)) from None
    if anchors is not None:
        config = replace(config, directory=Path(anchors))
    return config


@audit_app.command("verify")
def audit_verify(
    database_url: Annotated[
        Optional[str],
        typer.Option("--database-url", help="database URL (default: PROPCRM_DATABASE_URL, else PROPCRM_DATA_DIR)"),
    ] = None,
    anchors: Annotated[Optional[str], typer.Option("--anchors", help="anchor directory (default: the configured one)")] = None,
    key_file: Annotated[Optional[str], typer.Option("--key-file", help="audit key file (default: the configured key)")] = None,
) -> None:
    """Walk the audit log's hash chain and key marks, check it against the anchors kept outside the
    database, and name the first entry that was altered, removed or forged.

    Exit status 0 when intact, 1 when broken, 2 when the database cannot be read.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from ..adapters.db import session as db
    from ..services.audit import chain_name, verify
    from ..services.audit_anchors import check_anchors

    url = database_url or db.database_url()
    config = _anchor_config(url, key_file, anchors)
    try:
        db.migrate(url)
        engine = db.make_engine(url)
        try:
            with db.sessions(engine)() as session:
                result = verify(session, key=config.key)
                check = check_anchors(session, config) if result.ok and config.key is not None else None
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        raise fail(f"cannot read the audit log: {str(exc).splitlines()[0]}") from None
    if not result.ok:
        print(f"audit log broken at entry #{result.first_bad_seq}: {result.problem}")
        for problem in result.problems:  # every broken chain, by name
            print(f"  {problem}")
        raise typer.Exit(1)
    if check is not None and not check.ok:
        print("audit log broken: " + "; ".join(check.problems))
        raise typer.Exit(1)
    print(f"audit log intact: {result.entries} {'entry' if result.entries == 1 else 'entries'}")
    if result.legacy_head:
        print(f"pre-upgrade chain: head entry #{result.legacy_head[0]} hash {result.legacy_head[1]}")
    for firm_id, (chain_seq, digest) in result.heads.items():
        print(f"{chain_name(firm_id)}: {chain_seq} {'entry' if chain_seq == 1 else 'entries'}, head hash {digest}")
    if config.key is None:
        print("NOT keyed: no audit key is configured (PROPCRM_AUDIT_KEY or PROPCRM_AUDIT_KEY_FILE), so removal of "
              "the newest entries and forged appends cannot be detected")
        return
    keyed = (f"keyed from entry #{result.keyed_from}" if result.keyed_from else "no keyed entry yet")
    print(f"{keyed} (key {config.key_id} from {config.key_source})")
    if check is None or check.latest is None:
        print(f"no anchors yet in {config.directory}: the serve process and the workers write them")
    else:
        saw = (f"{len(check.latest.chains)} chain(s)" if check.latest.chains or not check.latest.seq
               else f"entry #{check.latest.seq}")
        print(f"{check.anchors} anchor(s) in {config.directory}, all authentic; the latest, written "
              f"{check.latest.anchored_at}, saw {saw}, unchanged")


@audit_app.command("anchor")
def audit_anchor(
    database_url: Annotated[Optional[str], typer.Option("--database-url", help="database URL (default: PROPCRM_DATABASE_URL, else PROPCRM_DATA_DIR)")] = None,
) -> None:
    """Write an anchor of the audit log now (the serve process and the workers do it on a schedule)."""
    from ..adapters.db import session as db
    from ..services.audit_anchors import write_anchor

    url = database_url or db.database_url()
    config = _anchor_config(url, None, None)
    if config.key is None or config.directory is None:
        raise fail("no audit key is configured (PROPCRM_AUDIT_KEY or PROPCRM_AUDIT_KEY_FILE): nothing to anchor with")
    engine = database(url)
    try:
        with db.sessions(engine, readonly=True)() as session:
            outcome = write_anchor(session, config)
    finally:
        engine.dispose()
    if outcome.problem:
        print(f"NOT anchored: {outcome.problem}")
        raise typer.Exit(1)
    if outcome.written is None:
        print("nothing new to anchor")
    else:
        print(f"anchored entry #{outcome.written.seq} in {config.directory / outcome.written.where}")


keys_app = typer.Typer(help="Platform API keys: the credentials that sign event batches.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

_DATABASE_URL_HELP = "database URL (default: PROPCRM_DATABASE_URL, else ./data/propcrm.db)"


@keys_app.command("create")
def keys_create(
    platform: Annotated[str, typer.Option("--platform", help="platform the key is for (the events' source), e.g. mt5")],
    firm: Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm)")] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DATABASE_URL_HELP)] = None,
) -> None:
    """Create an API key for a platform; prints the key id and the secret — the secret only this once."""
    from ..adapters.db.session import sessions
    from ..services.apikeys import KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, create_key

    engine = database(database_url)
    try:
        with sessions(engine).begin() as session:
            firm_id = firm_of(session, firm, create=True)
            try:
                key_id, secret = create_key(session, firm_id=firm_id, platform=platform)
            except ValueError as exc:
                raise fail(str(exc)) from None
    finally:
        engine.dispose()
    print(f"key id:  {key_id}")
    print(f"secret:  {secret}")
    err.print(
        f"firm {firm_id}, platform {platform}. Store the secret now: it is not shown again. Sign each request "
        f"with headers {KEY_HEADER}, {TIMESTAMP_HEADER} (unix seconds) and {SIGNATURE_HEADER} "
        '(sha256= + hex HMAC-SHA256 of timestamp + "." + body).'
    )


@app.command()
def ingest(
    file: Annotated[str, typer.Argument(help="NDJSON or JSON-array events file (GUIDE §2), or - for stdin")],
    firm: Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm)")] = None,
    source: Annotated[str, typer.Option("--source", help="the events' source (their ids are unique per source)")] = "file",
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DATABASE_URL_HELP)] = None,
) -> None:
    """Store the events of a file as POST /api/v1/events would: per-line outcome, rejections quarantined.

    Exit status 0; 2 when a line was rejected (each is listed with its quarantine id) or on a bad file.
    """
    from rich.markup import escape

    from ..adapters.db.session import sessions
    from ..services.apikeys import reserved_source_refusal
    from ..services.ingest import IngestError
    from ..services.ingest import ingest as run_ingest

    refusal = reserved_source_refusal(source)
    if refusal is not None:
        raise fail(f"--source: {refusal}")
    path = _events_path(file)
    body = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    engine = database(database_url)
    try:
        with sessions(engine).begin() as session:
            firm_id = firm_of(session, firm, create=False)
            try:
                report = run_ingest(session, firm_id=firm_id, source=source, body=body,
                                    content_type="application/json" if path.endswith(".json") else None)
            except IngestError as exc:
                raise fail(str(exc)) from None
    finally:
        engine.dispose()
    print(f"{report.accepted:,} accepted, {report.duplicates:,} duplicate(s), {report.rejected:,} rejected "
          f"(firm {firm_id}, source {source})")
    rejections = report.rejections()
    limit = 50
    for outcome in rejections[:limit]:
        ident = f" id={outcome.id}" if outcome.id else ""
        err.print(escape(f"  line {outcome.line}{ident}: {outcome.reason} (quarantine #{outcome.quarantine_id})"))
    if len(rejections) > limit:
        err.print(f"  … and {len(rejections) - limit:,} more")
    if rejections:
        err.print("[bold red]error:[/] rejected lines were quarantined (listed above); the rest was stored")
        raise typer.Exit(2)


@bench_app.command("ingest")
def bench_ingest(
    backend: Annotated[list[str], typer.Option(help="sqlite and/or postgresql")] = ["sqlite", "postgresql"],  # noqa: B006
    events: Annotated[int, typer.Option(help="events for the throughput run")] = 100_000,
    accounts: Annotated[int, typer.Option(help="accounts in the synthetic firm")] = 1000,
    request_size: Annotated[int, typer.Option(help="events per request in the throughput run")] = 10_000,
    rate: Annotated[int, typer.Option(help="events/s for the latency run")] = 5000,
    seconds: Annotated[float, typer.Option(help="length of the latency run")] = 20.0,
    mode: Annotated[str, typer.Option(help="embedded: `serve` with its worker in one process; separate: "
                                           "`serve --no-worker` and `work`")] = "embedded",
) -> None:
    """Events/s from signed HTTP request to persisted decisions, latency at a steady rate, and the time
    until a breach reads through the API (p50/p90/p99/max)."""
    from ..tools.bench_service import bench_ingest as run_bench

    run_bench(backends=backend, events=events, accounts=accounts, request_size=request_size, rate=rate,
              seconds=seconds, mode=mode)


@bench_app.command("worker")
def bench_worker(
    accounts: Annotated[int, typer.Option(help="accounts in the synthetic firm")] = 1000,
    requests: Annotated[int, typer.Option(help="requests of 250 events, one pass after each")] = 160,
    alert_distance: Annotated[Optional[str], typer.Option(
        "--alert-distance", help="the firm's near-breach alert distance: \"5%\" of equity or an amount \"500\" "
                                 "(default: none, alerts off)")] = None,
    driver: Annotated[str, typer.Option(help="poll: the pass worker; log: the partition driver over raw_events")] = "poll",
    states: Annotated[str, typer.Option(help="the log driver's account_states: batch (with every batch) or interval")] = "batch",
) -> None:
    """CPU time of the evaluation worker per request (SQLite, in-process): holds on a shared machine."""
    from ..tools.bench_service import bench_worker as run_bench

    if driver not in ("poll", "log") or states not in ("batch", "interval"):
        raise typer.BadParameter("--driver is poll or log; --states is batch or interval")
    run_bench(accounts=accounts, requests=requests, alert_distance=alert_distance, driver=driver, states=states)


@bench_app.command("web")
def bench_web(
    accounts: Annotated[int, typer.Option(help="accounts in the firm")] = 100_000,
    events: Annotated[int, typer.Option(help="stored raw events")] = 10_000_000,
    db: Annotated[Optional[str], typer.Option("--db", help="SQLite file to build, or to reuse when it exists")] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help="time PostgreSQL instead (built when empty)")] = None,
    requests: Annotated[int, typer.Option(help="timed requests per page")] = 200,
    url: Annotated[Optional[list[str]], typer.Option("--url", help="a page to time (repeatable; {id} = a random account id); default: the accounts pages")] = None,
    roles: Annotated[bool, typer.Option("--roles", help="also every role's daily pages (risk, support, finance, admin, the portal)")] = False,
    role: Annotated[Optional[str], typer.Option("--role", help="only this login's pages (e.g. support@bench.example), or the --url pages as it")] = None,
) -> None:
    """Response times of the back office's pages over a big firm (p50/p95/p99/max per page)."""
    from ..tools.bench_web import bench_web as run_bench

    run_bench(accounts=accounts, events=events, db=db, database_url=database_url, requests=requests, urls=url,
              roles=roles, role=role)


@bench_app.command("rollup")
def bench_rollup(
    accounts: Annotated[int, typer.Option(help="accounts")] = 20,
    days: Annotated[int, typer.Option(help="trading days of points")] = 10,
    every: Annotated[int, typer.Option(help="seconds between two equity reports, 08:00-16:00 UTC")] = 10,
    db: Annotated[Optional[str], typer.Option("--db", help="SQLite file to build, or to reuse when it exists")] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help="PostgreSQL instead (an empty database)")] = None,
) -> None:
    """The equity-points roll-up on a dense series: rows and bytes as written and after each tier, CPU per
    million points read (the sparse end: `propcrm points rollup --measure` on a `bench web` firm)."""
    import tempfile

    from ..tools.bench_rollup import run

    url = database_url or f"sqlite:///{db or tempfile.mkdtemp(prefix='propcrm-rollup-') + '/rollup.db'}"
    run(url, accounts=accounts, days=days, every=every)


@bench_app.command("portal")
def bench_portal(
    trades: Annotated[int, typer.Option(help="closed trades of the trader's account")] = 10_000,
    db: Annotated[Optional[str], typer.Option("--db", help="SQLite file to build, or to reuse when it exists")] = None,
    requests: Annotated[int, typer.Option(help="timed requests per page")] = 100,
    leaderboard_traders: Annotated[int, typer.Option(help="other traders on the leaderboard (when building)")] = 2_000,
) -> None:
    """Response times of the trader portal (accounts, journal, statistics, P/L calendar, profile, leaderboard)
    for a trader with many trades (p50/p95/p99/max per page)."""
    from ..tools.bench_portal import bench_portal as run_bench

    run_bench(trades=trades, db=db, requests=requests, leaderboard_traders=leaderboard_traders)


@bench_app.command("pseudonym")
def bench_pseudonym(
    accounts: Annotated[int, typer.Option(help="accounts of the firm (when building)")] = 100_000,
    runs: Annotated[int, typer.Option(help="timed checks per way")] = 21,
    db: Annotated[Optional[str], typer.Option("--db", help="SQLite file to build, or to reuse when it exists")] = None,
) -> None:
    """CPU time of the leaderboard's check of a pseudonym against the firm's account ids and logins:
    the walk of the accounts it was, the index probes it is (issue 17)."""
    from ..tools.bench_pseudonym import bench_pseudonym as run_bench

    run_bench(accounts=accounts, runs=runs, db=db)


@bench_app.command("login")
def bench_login(
    threads: Annotated[int, typer.Option(help="anonymous clients posting wrong passwords")] = 8,
    seconds: Annotated[float, typer.Option(help="length of each phase")] = 20.0,
    rate: Annotated[float, typer.Option(help="ingestion requests per second")] = 10.0,
    events_per_request: Annotated[int, typer.Option(help="events per ingestion request")] = 20,
) -> None:
    """Ingestion latency and login audit entries, quiet and while anonymous clients guess passwords."""
    from ..tools.bench_login import bench_login as run_bench

    run_bench(threads=threads, seconds=seconds, rate=rate, events_per_request=events_per_request)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    demo: Annotated[bool, typer.Option("--demo/--no-demo", help="seed a demo firm if the database is empty and stream a demo platform feed into it")] = False,
    demo_accounts: Annotated[int, typer.Option(help="accounts in the demo firm")] = 500,
    demo_rate: Annotated[float, typer.Option(help="demo feed: events per second")] = 2000.0,
    worker: Annotated[bool, typer.Option("--worker/--no-worker", help="run the evaluation worker and the outbox dispatcher in this process")] = True,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help="database URL (default: PROPCRM_DATABASE_URL, else ./data/propcrm.db)")] = None,
) -> None:
    """Run the service: signed ingestion API, evaluation worker, outbox dispatcher."""
    from .serve import serve as run_serve

    run_serve(host=host, port=port, database_url=database_url, demo=demo, demo_accounts=demo_accounts,
              demo_rate=demo_rate, with_worker=worker)


@app.command()
def work(
    database_url: Annotated[Optional[str], typer.Option("--database-url", help="database URL (default: PROPCRM_DATABASE_URL, else ./data/propcrm.db)")] = None,
    once: Annotated[bool, typer.Option(help="evaluate everything pending, then exit")] = False,
) -> None:
    """Run an evaluation worker on its own (any number can run side by side on PostgreSQL)."""
    from .serve import run_worker

    run_worker(database_url=database_url, once=once)


# -------------------------------------------------------------------------------------------------
# people, accounts and rule pack versions in the service's database (`users create`, `accounts create`,
# `packs add`); every change is audited with the operating-system user as the actor


users_app = typer.Typer(help="Users who log in to the API: staff roles and traders.", no_args_is_help=True)
accounts_app = typer.Typer(help="Trading accounts the engine evaluates.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(accounts_app, name="accounts")


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option("--email", help="the user's e-mail: their login")],
    role: Annotated[str, typer.Option("--role", help="admin | risk | finance | support | trader | operator "
                                                       "(the installation's: onboards and configures firms)")],
    password: Annotated[
        Optional[str],
        typer.Option("--password", help="the password (default: asked for, hidden; a password given here stays in "
                                        "the shell's history)"),
    ] = None,
    firm: Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm; a new one is created)")] = None,
    trader_id: Annotated[Optional[int], typer.Option("--trader-id", help="the trader a trader user sees (trader role only)")] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DATABASE_URL_HELP)] = None,
) -> None:
    """Create a user who logs in with a password (POST /api/v1/login). The password is never printed."""
    from ..adapters.db.session import sessions
    from ..services.errors import Conflict, Invalid, NotFound
    from ..services.users import ROLES, create_user

    if role not in ROLES:
        raise fail(f"--role must be one of {', '.join(ROLES)}")
    if password is None:
        if sys.stdin.isatty():
            password = typer.prompt("password", hide_input=True, confirmation_prompt=True, err=True)
        else:  # piped in (scripts, secrets managers): the first line, unconfirmed
            password = sys.stdin.readline().rstrip("\r\n")
    engine = database(database_url)
    try:
        with sessions(engine).begin() as session:
            firm_id = firm_of(session, firm, create=True)
            try:
                user = create_user(session, firm_id=firm_id, email=email, password=password, role=role,
                                   trader_id=trader_id, actor=cli_actor())
            except (Invalid, Conflict, NotFound) as exc:
                raise fail(str(exc)) from None
            user_id, user_email = user.id, user.email
    finally:
        engine.dispose()
    print(f"created user #{user_id} {user_email} ({role}) in firm {firm_id}")


@accounts_app.command("create")
def accounts_create(
    external_id: Annotated[str, typer.Option("--external-id", help="what the platform's events call the account")],
    pack: Annotated[str, typer.Option("--pack", help="PACK_ID (its active version) or PACK_ID:VERSION")],
    phase: Annotated[Optional[str], typer.Option("--phase", help="phase (default: the pack's first)")] = None,
    platform: Annotated[str, typer.Option("--platform", help="platform the account lives on (the events' source)")] = "demo",
    login: Annotated[Optional[str], typer.Option("--login", help="login on the platform (default: the external id)")] = None,
    trader_id: Annotated[Optional[int], typer.Option("--trader-id", help="the trader who owns the account")] = None,
    firm: Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm)")] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DATABASE_URL_HELP)] = None,
) -> None:
    """Create an account bound to a rule pack version (it keeps that version until an audited re-bind)."""
    from ..adapters.db.session import sessions
    from ..services.accounts import create_account, resolve_pack_version
    from ..services.errors import Conflict, Invalid, NotFound

    pack_id, sep, version_text = pack.partition(":")
    if not pack_id or (sep and not version_text.isdigit()):
        raise fail("--pack must be PACK_ID or PACK_ID:VERSION")
    engine = database(database_url)
    try:
        with sessions(engine).begin() as session:
            firm_id = firm_of(session, firm, create=False)
            try:
                version = resolve_pack_version(session, firm_id=firm_id, pack_id=pack_id,
                                               version=int(version_text) if sep else None)
                account = create_account(session, firm_id=firm_id, external_id=external_id,
                                         pack_version_id=version.id, phase=phase, platform=platform, login=login,
                                         trader_id=trader_id, actor=cli_actor())
            except (Invalid, Conflict, NotFound) as exc:
                raise fail(str(exc)) from None
            summary = (f"created account #{account.id} {account.external_id} on {account.platform}: "
                       f"{version.pack_id} v{version.version}, {account.phase} (firm {firm_id})")
    finally:
        engine.dispose()
    print(summary)


@accounts_app.command("refresh-figures")
def accounts_refresh_figures(
    all_rows: Annotated[bool, typer.Option("--all", help="recompute every row, not only those without figures")] = False,
    firm: Annotated[Optional[str], typer.Option("--firm", help="only this firm (default: every firm)")] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DATABASE_URL_HELP)] = None,
) -> None:
    """Fill the accounts list's figures (distances, target progress, trading days) from the stored states:
    rows written before migration 0007 have none until their account's next event."""
    from ..adapters.db.session import sessions
    from ..services.accounts import refresh_figures

    engine = database(database_url)
    try:
        with sessions(engine).begin() as session:
            done = refresh_figures(session, firm_id=firm, only_missing=not all_rows)
    finally:
        engine.dispose()
    print(f"refreshed the figures of {done:,} account {'state' if done == 1 else 'states'}")


trades_app = typer.Typer(help="The trade-history projection (positions opened and closed).", no_args_is_help=True)
app.add_typer(trades_app, name="trades")


@trades_app.command("backfill")
def trades_backfill(
    firm: Annotated[Optional[str], typer.Option("--firm", help="only this firm (default: every firm)")] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DATABASE_URL_HELP)] = None,
) -> None:
    """Rebuild the trade history and the chart's equity points of every account (of a firm) from the
    embedded event log: for accounts evaluated before the projections existed (migrations 0015, 0023).
    Running it again gives the same rows."""
    from sqlalchemy import select

    from ..adapters.db import models as m
    from ..adapters.db.session import sessions
    from ..services.trades import backfill
    from ..services.equity_replay import backfill_points

    engine = database(database_url)
    try:
        with sessions(engine).begin() as session:
            firms = [firm] if firm else list(session.scalars(select(m.Firm.id).order_by(m.Firm.id)))
            accounts = events = points = 0
            for firm_id in firms:
                report = backfill(session, firm_id=firm_id)
                accounts, events = accounts + report.accounts, events + report.events
                points += backfill_points(session, firm_id=firm_id)[1]
    finally:
        engine.dispose()
    print(f"rebuilt the trade history of {accounts:,} accounts from {events:,} trade events "
          f"and {points:,} chart points")


points_app = typer.Typer(help="The account chart's equity points (their roll-up).", no_args_is_help=True)
app.add_typer(points_app, name="points")


@points_app.command("rollup")
def points_rollup(
    firm: Annotated[Optional[str], typer.Option("--firm", help="only this firm (default: every firm)")] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DATABASE_URL_HELP)] = None,
    measure: Annotated[bool, typer.Option("--measure", help="also print the table's rows and bytes before and after (a scan)")] = False,
) -> None:
    """Roll up the chart's older equity points (per hour of a trading day before the previous trading day,
    per trading day after 30 days; exact first, last, extremes and decision points kept). Incremental and
    idempotent: the scale-out deployment schedules it (e.g. hourly); ``propcrm serve`` runs it itself."""
    from ..adapters.db.session import sessions
    from ..services.equity_rollup import rollup

    from ..services.equity_rollup import footprint

    engine = database(database_url)
    try:
        before = footprint(engine) if measure else None
        report = rollup(sessions(engine), firm_id=firm)
        after = footprint(engine) if measure else None
    finally:
        engine.dispose()
    if before is not None and after is not None:
        for label, (rows, data, stored) in (("before", before), ("after", after)):
            print(f"equity_points {label}: {rows:,} rows, {data / 1e6:,.1f} MB of rows and index entries"
                  + (f" ({stored / 1e6:,.1f} MB of pages; freed pages are reused, VACUUM returns them)" if stored else ""))
    per_million = report.cpu_s / report.read * 1e6 if report.read else 0.0
    print(f"rolled up the equity points of {report.accounts:,} accounts: {report.read:,} points read, "
          f"{report.deleted:,} deleted, {report.cpu_s:.2f} s CPU ({per_million:.1f} s per million points read)")


@packs_app.command("add")
def packs_add(
    file: Annotated[str, typer.Argument(help="rule pack file (YAML/JSON) or preset name")],
    activate: Annotated[bool, typer.Option("--activate", help="make it the pack's active version (the previous one retires)")] = False,
    firm: Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm; a new one is created)")] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DATABASE_URL_HELP)] = None,
) -> None:
    """Store a rule pack version in the database (a draft unless --activate). The same version with other
    content is refused: give a changed pack a new version."""
    from ..adapters.db.session import sessions
    from ..services.errors import Conflict, Invalid, NotFound
    from ..services.rulepacks import add_version

    try:
        pack = load_pack(file)
        compile_pack(pack)  # refuse what the engine could not run, as the API does
    except RulePackError as exc:
        raise fail(str(exc)) from None
    except (OSError, ValueError, KeyError) as exc:
        raise fail(f"{file}: {exc}") from None
    engine = database(database_url)
    try:
        with sessions(engine).begin() as session:
            firm_id = firm_of(session, firm, create=True)
            try:
                row, created = add_version(session, firm_id=firm_id, pack=pack, activate=activate, actor=cli_actor())
            except (Invalid, Conflict, NotFound) as exc:
                raise fail(str(exc)) from None
            summary = (f"{'added' if created else 'already stored:'} {row.pack_id} v{row.version} "
                       f"(version id {row.id}, {row.status}, {row.content_hash}) in firm {firm_id}")
    finally:
        engine.dispose()
    print(summary)


# -------------------------------------------------------------------------------------------------
# `propcrm dispatch`: the outbox dispatcher on its own


@app.command()
def dispatch(
    once: Annotated[bool, typer.Option("--once", help="deliver what is due now, then exit")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.05, help="seconds to wait when nothing is due")] = 1.0,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DATABASE_URL_HELP)] = None,
) -> None:
    """Deliver the outbox: platform commands, e-mail, firm webhooks, in-app notifications (retried, audited).

    Platforms: PROPCRM_PLATFORM_BRIDGE_URL + PROPCRM_PLATFORM_BRIDGE_SECRET (signed webhook), else logging.

    E-mail: PROPCRM_SMTP_HOST, _PORT, _FROM (_STARTTLS, _SSL, _USER, _PASSWORD); PROPCRM_RISK_EMAIL.

    Firm webhook: PROPCRM_FIRM_WEBHOOK_URL + PROPCRM_FIRM_WEBHOOK_SECRET.

    Any number of dispatchers can run side by side on PostgreSQL.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from ..adapters.settings import Settings, SettingsError, install
    from ..services.dispatch import DispatchConfigError, run_dispatcher

    try:
        settings = install(Settings.from_env())  # the process's configuration, read once, at its start
        run_dispatcher(database_url=database_url, once=once, interval=interval, env=settings)
    except (DispatchConfigError, SettingsError) as exc:
        raise fail(str(exc)) from None
    except SQLAlchemyError as exc:
        raise fail(f"cannot open the database: {str(exc).splitlines()[0]}") from None

