"""`propcrm analyze …` and `propcrm bench analytics`: abuse detection over event files or the database.

Keep imports of heavy modules inside the commands: every `propcrm` invocation imports this module.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

analyze_app = typer.Typer(help="Abuse detection and risk scores: over event files, the database, a planted-abuse firm.",
                          no_args_is_help=True)


def fail(message: str) -> typer.Exit:
    from .common import err

    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


def _config(path: Optional[str], correlated: Optional[list] = None):
    """Thresholds from a JSON object (names of :class:`AnalysisConfig`); a bad field is named."""
    import msgspec

    from ..analytics.detect import AnalysisConfig

    data = {}
    if path:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise fail(f"{path}: {exc}") from None
        if not isinstance(data, dict):
            raise fail(f"{path}: a JSON object of thresholds is expected")
    if correlated is not None and "correlated" not in data:
        data["correlated"] = correlated
    try:
        return msgspec.convert(data, AnalysisConfig)
    except msgspec.ValidationError as exc:
        raise fail(f"{path or 'config'}: {exc}") from None


def _crm(path: Optional[str]) -> tuple[dict, dict]:
    if not path:
        return {}, {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise fail(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise fail(f"{path}: expected an object of account → {{\"trader\": …, \"payments\": […]}}")
    traders, payments = {}, {}
    for account, info in data.items():
        if not isinstance(info, dict):
            raise fail(f"{path}: `{account}`: expected an object with `trader` and/or `payments`")
        if info.get("trader") is not None:
            traders[account] = str(info["trader"])
        if info.get("payments"):
            if not isinstance(info["payments"], list):
                raise fail(f"{path}: `{account}.payments`: expected a list")
            payments[account] = [str(p) for p in info["payments"]]
    return traders, payments


def _emit(text: str, out: Optional[str]) -> None:
    if out:
        Path(out).write_text(text)
    else:
        sys.stdout.write(text)


def _frame_from_files(files: list[str], crm: Optional[str]):
    from ..analytics.frame import frame_from_events
    from .common import report_rejections, err
    from ..domain.events import decode_lines

    events = []
    for path in files:
        if path != "-" and not Path(path).is_file():
            raise fail(f"{path}: no such events file")
        buf = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        decoded, _numbers, rejected = decode_lines(buf)
        if rejected:
            err.print(f"{path}: {len(rejected)} line(s) rejected")
            report_rejections(rejected)
        events.extend(decoded)
    traders, payments = _crm(crm)
    return frame_from_events(events, traders=traders, payments=payments)


@analyze_app.command("files")
def analyze_files(
    files: Annotated[list[str], typer.Argument(help="NDJSON event files (GUIDE §2), '-' for stdin")],
    crm: Annotated[Optional[str], typer.Option(help="JSON: account → {trader, payments} (CRM data for linkage)")] = None,
    config: Annotated[Optional[str], typer.Option(help="JSON object of thresholds (see docs/analytics.md)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the full report as JSON (evidence included)")] = False,
    out: Annotated[Optional[str], typer.Option(help="write the report to this file")] = None,
    top: Annotated[int, typer.Option(help="riskiest accounts listed in the text report")] = 20,
) -> None:
    """Analyse event files: linkage, hedging, copy trading, latency, martingale, risk scores."""
    from ..analytics.run import analyze, report_text

    frame = _frame_from_files(files, crm)
    analysis = analyze(frame, _config(config))
    if as_json:
        _emit(json.dumps(analysis.to_dict(), indent=1, default=str) + "\n", out)
    else:
        _emit(report_text(analysis, top=top), out)


@analyze_app.command("db")
def analyze_db(
    database_url: Annotated[Optional[str], typer.Option(help="database URL (default: PROPCRM_DATABASE_URL, else ./data/propcrm.db)")] = None,
    firm: Annotated[Optional[str], typer.Option(help="the firm (default: the only one)")] = None,
    full: Annotated[bool, typer.Option("--full", help="re-analyse the whole history (default: since the last pass)")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="keep running incremental passes")] = False,
    interval: Annotated[float, typer.Option(help="seconds between passes with --follow")] = 30.0,
    config: Annotated[Optional[str], typer.Option(help="JSON object of thresholds")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print each pass's summary as JSON")] = False,
) -> None:
    """Analyse the stored events of a firm; findings open or update cases, scores are stored."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..adapters.db.session import sessions
    from .common import database, firm_of, err
    from ..services.analysis import run

    thresholds = _config(config)
    engine = database(database_url)
    make = sessions(engine)
    try:
        with make.begin() as s:
            firm_id = firm_of(s, firm, create=False)
        first = True
        while True:
            with make.begin() as s:
                result = run(s, firm_id=firm_id, full=full and first, config=thresholds)
            first = False
            summary = result.to_dict()
            if as_json:
                print(json.dumps(summary, default=str), flush=True)
            else:
                found = ", ".join(f"{k} {v}" for k, v in summary["findings"].items()) or "nothing new"
                cases = ", ".join(f"{k} {v}" for k, v in summary["cases"].items()) or "none"
                err.print(f"{result.mode} pass of firm {firm_id}: {result.events_read:,} events read, "
                          f"{result.accounts_analysed:,} accounts, {result.trades:,} trades; findings: {found}; "
                          f"cases: {cases}; {result.scores_written:,} scores; up to event {result.last_seq} "
                          f"in {result.seconds:.2f} s")
            if not follow:
                break
            time.sleep(interval)
    except SQLAlchemyError as exc:
        raise fail(f"database: {str(exc).splitlines()[0]}") from None
    except KeyboardInterrupt:  # pragma: no cover - interactive
        pass
    finally:
        engine.dispose()


@analyze_app.command("generate")
def analyze_generate(
    directory: Annotated[str, typer.Argument(help="where to write events.ndjson, crm.json and truth.json")],
    seed: int = 7,
    honest: int = 600,
    days: int = 10,
    adaptive: Annotated[bool, typer.Option(help="abusers who adapt (see synth/abuse.py)")] = False,
) -> None:
    """Write a synthetic firm with planted abuse (and its ground truth)."""
    from ..synth.abuse import AbuseSpec, write_firm

    if honest < 0 or not 1 <= days <= 250:
        raise fail("--honest must be ≥ 0 and --days between 1 and 250")
    paths = write_firm(AbuseSpec(seed=seed, honest=honest, days=days, adaptive=adaptive), directory)
    for name, path in paths.items():
        print(f"{name}: {path}")


@analyze_app.command("evaluate")
def analyze_evaluate(
    directory: Annotated[Optional[str], typer.Option(help="a firm written by `analyze generate` (default: generate the default firm in memory)")] = None,
    seed: int = 7,
    honest: int = 600,
    days: int = 10,
    adaptive: Annotated[bool, typer.Option(help="abusers who adapt: delayed/split hedges, jittered copies, large rings, offices")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Precision and recall of every detector, and the risk score's ROC AUC, against what the synthetic firm planted."""
    from ..analytics.evaluate import evaluate, evaluation_text, risk_auc
    from ..analytics.frame import frame_from_events
    from ..analytics.run import analyze
    from ..domain.events import decode_lines

    started = time.perf_counter()
    if directory:
        base = Path(directory)
        try:
            truth = json.loads((base / "truth.json").read_text())
        except (OSError, ValueError) as exc:
            raise fail(f"{base / 'truth.json'}: {exc}") from None
        frame = _frame_from_files([str(base / "events.ndjson")], str(base / "crm.json"))
    else:
        from ..synth.abuse import AbuseSpec, generate

        events, crm, truth = generate(AbuseSpec(seed=seed, honest=honest, days=days, adaptive=adaptive))
        buf = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)
        decoded, _numbers, _rejected = decode_lines(buf)
        frame = frame_from_events(decoded, traders={a: c["trader"] for a, c in crm.items()},
                                  payments={a: c["payments"] for a, c in crm.items()})
    config = _config(None, correlated=truth.get("config", {}).get("correlated"))
    analysis = analyze(frame, config)
    result = evaluate(analysis, truth)
    auc = risk_auc(analysis, truth)
    if as_json:
        print(json.dumps({"accounts": len(frame.accounts), "trades": frame.n, "detectors": result, "risk_score": auc},
                         indent=1))
        return
    print(f"firm: {len(frame.accounts):,} accounts, {frame.n:,} trades; analysed in "
          f"{sum(analysis.timings.values()):.2f} s ({time.perf_counter() - started:.1f} s with generation)")
    sys.stdout.write(evaluation_text(result))
    print(f"risk score ROC AUC, abusers vs honest: {auc['auc']} ({auc['abusers']} abusers, {auc['honest']} honest; "
          f"lowest abuser {auc.get('abusers_min_score')}, highest honest {auc.get('honest_max_score')})")


def bench_analytics(
    accounts: Annotated[list[int], typer.Option("--accounts", help="firm sizes to run (repeatable)")] = [10_000, 100_000],  # noqa: B006
    trades_per_account: int = 50,
    batch: Annotated[int, typer.Option(help="trades in the incremental batch")] = 1_000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Full analysis of generated firms (columns, no JSON) and an incremental batch against the largest."""
    import numpy as np

    from ..analytics.benchfirm import bench_frame
    from ..analytics.evaluate import evaluate, risk_auc
    from ..analytics.incremental import HistoryIndex, analyze_batch, take
    from ..analytics.run import analyze

    rows = []
    for n in accounts:
        started = time.perf_counter()
        frame = bench_frame(n, trades_per_account)
        made = time.perf_counter() - started
        # the newest `batch` trades are the incremental batch; the rest is the history
        newest = np.argsort(frame.open_ms, kind="stable")
        history_rows, batch_rows = np.sort(newest[:-batch]), np.sort(newest[-batch:])
        started = time.perf_counter()
        analysis = analyze(frame)
        full = time.perf_counter() - started
        truth = frame.__dict__.get("truth", {})
        judged = evaluate(analysis, truth)
        auc = risk_auc(analysis, truth)
        history = take(frame, history_rows)
        new = take(frame, batch_rows, quote_from=int(frame.order_ms[batch_rows].min()) - 60_000,
                   quote_to=int(frame.open_ms[batch_rows].max()))
        started = time.perf_counter()
        index = HistoryIndex.build(history)
        indexed = time.perf_counter() - started
        started = time.perf_counter()
        increment, touched = analyze_batch(index, new, population=analysis.scores.population)
        incremental = time.perf_counter() - started
        # a batch in the busiest minutes: the last London open, where everyone trades EURUSD
        last_day = int(frame.open_ms.max()) // 86_400_000 * 86_400_000
        busy = np.flatnonzero((frame.open_ms >= last_day + 7 * 3_600_000) & (frame.open_ms < last_day + 7.5 * 3_600_000))
        busy = np.sort(np.random.default_rng(0).choice(busy, size=min(batch, busy.size), replace=False))
        rest = np.setdiff1d(np.arange(frame.n), busy)
        busy_index = HistoryIndex.build(take(frame, rest))
        busy_batch = take(frame, busy, quote_from=int(frame.order_ms[busy].min()) - 60_000,
                          quote_to=int(frame.open_ms[busy].max()))
        started = time.perf_counter()
        crowded, _ = analyze_batch(busy_index, busy_batch, population=analysis.scores.population)
        busy_s = time.perf_counter() - started
        row = {"accounts": n, "trades": frame.n, "generate_s": round(made, 2), "full_s": round(full, 2),
               "per_detector_s": {k: round(v, 2) for k, v in analysis.timings.items()},
               "findings": {d: len(v) for d, v in analysis.findings.items()},
               "index_build_s": round(indexed, 2), "incremental_batch": batch, "incremental_s": round(incremental, 3),
               "incremental_scope_accounts": len(increment.frame.accounts), "incremental_scope_trades": increment.frame.n,
               "london_open_batch_s": round(busy_s, 3), "london_open_scope_accounts": len(crowded.frame.accounts),
               "london_open_scope_trades": crowded.frame.n,
               "precision_recall": {d: {"planted": r["planted"], "flagged": r["flagged"], "precision": r["precision"],
                                        "recall": r["recall"]} for d, r in judged.items()},
               "risk_score_auc": auc}
        rows.append(row)
        if not as_json:
            print(f"{n:>8,} accounts {frame.n:>10,} trades: full analysis {full:6.2f} s "
                  f"({', '.join(f'{k} {v:.2f}' for k, v in analysis.timings.items())}); "
                  f"findings {row['findings']}", flush=True)
            print(f"{'':>8} precision / recall per category: "
                  + ", ".join(f"{d} {r['precision']:.3f} / {r['recall']:.3f} ({r['planted']} planted)"
                              for d, r in judged.items())
                  + f"; risk score ROC AUC {auc['auc']}", flush=True)
            print(f"{'':>8} incremental batch of {batch:,} trades: {incremental:.3f} s "
                  f"(scope {row['incremental_scope_accounts']:,} accounts, {row['incremental_scope_trades']:,} trades; "
                  f"history index built once in {indexed:.2f} s)", flush=True)
            print(f"{'':>8} incremental batch of {busy.size:,} trades at the London open: {busy_s:.3f} s "
                  f"(scope {row['london_open_scope_accounts']:,} accounts, {row['london_open_scope_trades']:,} trades)",
                  flush=True)
        del frame, analysis, history, index, busy_index
    if as_json:
        print(json.dumps(rows, indent=1))
    elif len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"growth {a['accounts']:,} → {b['accounts']:,} accounts: ×{b['trades'] / a['trades']:.0f} trades, "
              f"×{b['full_s'] / max(a['full_s'], 1e-9):.1f} full-analysis time")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this feature's commands to the `propcrm` app (and its `bench` group)."""
    app.add_typer(analyze_app, name="analyze")
    bench_app.command("analytics")(bench_analytics)
