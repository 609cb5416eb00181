"""What the ``propcrm`` commands share: the error console, failing with a message, the CLI's database
and firm, who the CLI acts as."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


def report_rejections(rejected: list, limit: int = 20) -> None:
    for item in rejected[:limit]:
        where = f"line {item.line}" if item.line is not None else "event"
        ident = f" id={item.id}" if item.id else ""
        err.print(f"  {item.kind}: {where}{ident}: {item.reason}")
    if len(rejected) > limit:
        err.print(f"  … and {len(rejected) - limit} more")


def process_settings():
    """The process's configuration, read from the environment once and installed (``adapters/settings``); a
    malformed value fails the command with the variable's name."""
    from ..adapters.settings import Settings, SettingsError, install

    try:
        return install(Settings.from_env())
    except SettingsError as exc:
        raise fail(str(exc)) from None


def database(database_url: Optional[str]):
    """A migrated engine for the CLI's database (the caller disposes it)."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..adapters.db import session as db

    url = database_url or db.database_url()
    try:
        db.migrate(url)
    except SQLAlchemyError as exc:
        raise fail(f"cannot open the database: {str(exc).splitlines()[0]}") from None
    return db.make_engine(url)


def firm_of(session, firm: Optional[str], *, create: bool) -> str:
    """The firm named, or the only firm in the database (with ``create``: a new firm ``default``)."""
    from sqlalchemy import select

    from ..adapters.db import models as m
    from ..services.catalog import ensure_firm

    if firm is not None:
        if session.get(m.Firm, firm) is None:
            if not create:
                raise fail(f"no firm {firm!r} in the database")
            ensure_firm(session, firm_id=firm)
            err.print(f"created firm {firm}")
        return firm
    firms = list(session.scalars(select(m.Firm.id).order_by(m.Firm.id).limit(11)))
    if len(firms) == 1:
        return firms[0]
    if not firms:
        if not create:
            raise fail("the database has no firm yet; name one with --firm")
        ensure_firm(session, firm_id="default")
        err.print("created firm default")
        return "default"
    raise fail(f"the database has several firms ({', '.join(firms[:10])}{', …' if len(firms) > 10 else ''}); "
                "pick one with --firm")


def cli_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "cli"


def in_firm_transaction(database_url: Optional[str], firm: Optional[str], action):
    """``action(session, firm_id)`` in one transaction; a refusal of the service exits 2 with its words."""
    from ..adapters.db.session import sessions
    from ..services.errors import Conflict, Invalid, NotFound

    engine = database(database_url)
    try:
        with sessions(engine).begin() as session:
            firm_id = firm_of(session, firm, create=False)
            try:
                return action(session, firm_id)
            except (Invalid, Conflict, NotFound) as exc:
                raise fail(str(exc)) from None
    finally:
        engine.dispose()
