"""`propcrm import mt5-report` and `propcrm calendar …`: histories and economic calendars into ingestion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

_DB_HELP = "database URL (default: PROPCRM_DATABASE_URL, else ./data/propcrm.db)"


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    from .common import cli_actor, database, fail, firm_of

    import_app = typer.Typer(help="Import histories kept outside propcrm.", no_args_is_help=True)
    app.add_typer(import_app, name="import")

    @import_app.command("mt5-report")
    def mt5_report(
        file: Annotated[Path, typer.Argument(help="the terminal's trade history report (.html or .xlsx)")],
        account: Annotated[str, typer.Option("--account", help="the propcrm account (external id) it belongs to")],
        server_timezone: Annotated[Optional[str], typer.Option("--server-timezone", help="the trade server's time zone (+02:00, Europe/Athens); default: the account's connection's")] = None,
        source: Annotated[Optional[str], typer.Option("--source", help="events' source (default: the account's connection, else mt5-report)")] = None,
        keep_initial_deposit: Annotated[bool, typer.Option("--keep-initial-deposit", help="ingest a starting deposit equal to the pack's initial balance too")] = False,
        firm: Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm)")] = None,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
    ) -> None:
        """Import an MT5 trade history report's deals as the account's events (validated, idempotent)."""
        from ..adapters.db.session import sessions
        from ..features.platforms.reports import import_mt5_report
        from ..services.errors import Invalid, NotFound

        if not file.is_file():
            raise fail(f"{file}: no such file")
        engine = database(database_url)
        try:
            with sessions(engine).begin() as session:
                firm_id = firm_of(session, firm, create=False)
                try:
                    report = import_mt5_report(session, firm_id=firm_id, account=account, data=file.read_bytes(),
                                               filename=file.name, server_timezone=server_timezone, source=source,
                                               actor=cli_actor(), keep_initial_deposit=keep_initial_deposit)
                except (Invalid, NotFound) as exc:
                    raise fail(str(exc)) from None
        finally:
            engine.dispose()
        print(f"{file.name}: login {report.login or '?'}, {report.deals} deals → {report.events} events for "
              f"{account} (source {report.source}, server time {report.server_timezone}): {report.accepted} accepted, "
              f"{report.duplicates} duplicates, {report.rejected} rejected")
        if report.skipped_initial is not None:
            print(f"the starting deposit {report.skipped_initial} is the pack's initial balance: not ingested")
        for warning in report.warnings:
            print(f"warning: {warning}")
        for rejection in report.rejections:
            print(f"rejected: {rejection}")
        if report.rejected:
            raise typer.Exit(2)

    calendar_app = typer.Typer(help="Economic calendars → news events for the news rules.", no_args_is_help=True)
    app.add_typer(calendar_app, name="calendar")

    @calendar_app.command("import")
    def calendar_import(
        location: Annotated[str, typer.Argument(help="a file, or an http(s) URL")],
        fmt: Annotated[str, typer.Option("--format", help="auto | json | xml | csv | ics")] = "auto",
        timezone: Annotated[str, typer.Option("--timezone", help="zone of times given without an offset (UTC, +02:00, America/New_York)")] = "UTC",
        firm: Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm)")] = None,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
    ) -> None:
        """Import a calendar once (ForexFactory-style JSON/XML/CSV, or ICS): its entries become news events."""
        from ..adapters.db.session import sessions
        from ..features.calendar.service import fetch_location, import_calendar
        from ..services.errors import Invalid

        try:
            data = fetch_location(location)
        except ValueError as exc:
            raise fail(str(exc)) from None
        engine = database(database_url)
        try:
            with sessions(engine).begin() as session:
                firm_id = firm_of(session, firm, create=False)
                try:
                    report = import_calendar(session, firm_id=firm_id, data=data, fmt=fmt, timezone=timezone,
                                             origin=location if "://" not in location else location.split("?")[0],
                                             actor=cli_actor())
                except Invalid as exc:
                    raise fail(str(exc)) from None
        finally:
            engine.dispose()
        print(f"{report.entries} calendar entries: {report.accepted} new, {report.duplicates} already there, "
              f"{report.skipped} left out, {report.rejected} rejected")
        for warning in report.warnings:
            print(f"left out: {warning}")

    @calendar_app.command("add")
    def calendar_add(
        name: Annotated[str, typer.Argument(help="the source's name")],
        location: Annotated[str, typer.Argument(help="an http(s) URL or a file, fetched on a schedule")],
        fmt: Annotated[str, typer.Option("--format", help="auto | json | xml | csv | ics")] = "auto",
        timezone: Annotated[str, typer.Option("--timezone", help="zone of times given without an offset")] = "UTC",
        interval: Annotated[int, typer.Option("--interval", help="seconds between fetches (≥ 60)")] = 3600,
        firm: Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm)")] = None,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
    ) -> None:
        """Add a calendar source: `serve` (and `connect`) fetch it every --interval seconds."""
        from ..adapters.db.session import sessions
        from ..features.calendar.service import add_source
        from ..services.errors import Conflict, Invalid

        engine = database(database_url)
        try:
            with sessions(engine).begin() as session:
                firm_id = firm_of(session, firm, create=False)
                try:
                    add_source(session, firm_id=firm_id, name=name, location=location, fmt=fmt, timezone=timezone,
                               interval_s=interval, actor=cli_actor())
                except (Invalid, Conflict) as exc:
                    raise fail(str(exc)) from None
        finally:
            engine.dispose()
        print(f"added calendar source {name} (every {interval} s)")

    @calendar_app.command("list")
    def calendar_list(
        firm: Annotated[Optional[str], typer.Option("--firm", help="only this firm")] = None,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
    ) -> None:
        """The calendar sources and how their last fetch went."""
        from ..adapters.db.session import sessions
        from ..features.calendar.service import list_sources

        engine = database(database_url)
        try:
            with sessions(engine)() as session:
                for row in list_sources(session, firm_id=firm):
                    print(json.dumps(row, default=str))
        finally:
            engine.dispose()

    @calendar_app.command("fetch")
    def calendar_fetch(
        name: Annotated[Optional[str], typer.Argument(help="only this source (default: every source that is due)")] = None,
        force: Annotated[bool, typer.Option("--force", help="fetch even if not due yet")] = False,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
    ) -> None:
        """Fetch calendar sources now (what `serve` does on their schedule)."""
        from ..adapters.db.session import sessions
        from ..features.calendar.service import run_due
        from ..services.errors import NotFound

        engine = database(database_url)
        try:
            try:
                outcomes = run_due(sessions(engine), name=name, force=force or name is not None)
            except NotFound as exc:
                raise fail(str(exc)) from None
        finally:
            engine.dispose()
        for source, outcome in outcomes:
            print(f"{source}: {outcome}")
        if any(outcome.startswith("failed") for _, outcome in outcomes):
            raise typer.Exit(2)

    @calendar_app.command("upcoming")
    def calendar_upcoming(
        impact: Annotated[str, typer.Option("--impact", help="high | medium | all")] = "high",
        firm: Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm)")] = None,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
    ) -> None:
        """The upcoming calendar entries (UTC)."""
        import datetime as dt

        from ..adapters.db.session import sessions
        from ..features.calendar.service import upcoming

        impacts = {"high": ("high",), "medium": ("high", "medium"), "all": None}.get(impact, ("high",))
        engine = database(database_url)
        try:
            with sessions(engine)() as session:
                firm_id = firm_of(session, firm, create=False)
                for entry in upcoming(session, firm_id=firm_id, since=dt.datetime.now(dt.timezone.utc),
                                      impacts=impacts):
                    print(f"{entry['ts']:%Y-%m-%d %H:%M} UTC  {entry['currency']:4} {entry['impact']:6}  {entry['title']}")
        finally:
            engine.dispose()
