"""``propcrm firms``: onboard, list and configure firms (tenants) from the command line — the operator's
pages (``/operator/firms``) over the same service (services/firms.py)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

DB_HELP = "database URL (default: PROPCRM_DATABASE_URL, else ./data/propcrm.db)"


def _transaction(database_url: Optional[str], action):
    from ..adapters.db.session import sessions
    from ..services.errors import Conflict, Invalid, NotFound
    from .common import database, fail

    engine = database(database_url)
    try:
        with sessions(engine).begin() as session:
            try:
                return action(session)
            except (Invalid, Conflict, NotFound) as exc:
                raise fail(str(exc)) from None
    finally:
        engine.dispose()


def _pairs(values: list[str]) -> dict[str, str]:
    from .common import fail

    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise fail(f"--set wants NAME=VALUE, got {item!r}")
        out[name.strip()] = value
    return out


SET_HELP = ("a setting NAME=VALUE (repeatable; an empty VALUE clears it): name, product_name, accent_colour, smtp_host, "
            "smtp_port, smtp_sender, smtp_user, smtp_password, risk_email, webhook_url, webhook_secret")


def firms_create(
    firm: Annotated[str, typer.Option("--firm", help="the new firm's id (typed at every login)")],
    name: Annotated[str, typer.Option("--name", help="its display name")],
    admin_email: Annotated[str, typer.Option("--admin-email", help="its first admin's e-mail")],
    setting: Annotated[list[str], typer.Option("--set", help=SET_HELP)] = [],  # noqa: B006 - typer's list option
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=DB_HELP)] = None,
) -> None:
    """Onboard a firm with its first admin; the admin's password is printed this once."""
    from ..services.firms import create_firm
    from .common import cli_actor

    settings = _pairs(setting)

    def action(session):
        made = create_firm(session, firm_id=firm, name=name, admin_email=admin_email, actor=cli_actor(),
                           settings=settings or None)
        return made.firm.id, made.admin.email, made.password

    firm_id, email, password = _transaction(database_url, action)
    print(f"created firm {firm_id} with its admin {email}")
    print(f"the admin's password, shown this once: {password}")


def firms_list(
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=DB_HELP)] = None,
) -> None:
    """Every firm: id, name, product name, users, accounts, and whether it is suspended."""
    from rich.console import Console
    from rich.table import Table

    from ..services.firms import list_firms

    def action(session):
        table = Table(title="firms")
        for column in ("id", "name", "product", "users", "accounts", "since", "suspended"):
            table.add_column(column)
        for row in list_firms(session):
            table.add_row(row.id, row.name, row.product_name, str(row.users), str(row.accounts),
                          f"{row.created_at:%Y-%m-%d}",
                          f"{row.suspended_at:%Y-%m-%d}: {row.suspended_reason}" if row.suspended_at else "—")
        return table

    Console(highlight=False).print(_transaction(database_url, action))


def firms_settings(
    firm: Annotated[str, typer.Option("--firm", help="the firm's id")],
    setting: Annotated[list[str], typer.Option("--set", help=SET_HELP)] = [],  # noqa: B006 - typer's list option
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=DB_HELP)] = None,
) -> None:
    """Show a firm's settings (each with where it comes from; secrets only as set or not), after applying
    any ``--set``."""
    from ..services.firms import describe, update_settings
    from .common import cli_actor, process_settings

    changes = _pairs(setting)
    defaults = process_settings().delivery

    def action(session):
        if changes:
            update_settings(session, firm_id=firm, changes=changes, actor=cli_actor())
        return describe(session, firm_id=firm, defaults=defaults)

    described = _transaction(database_url, action)
    print(f"firm {described['id']}: {described['name']}")
    for field, value in described["effective"].items():
        print(f"  {field:<14} {value['value'] if value['value'] is not None else '—'}  ({value['source']})")
    print(f"  {'webhook_secret':<14} {'set' if described['webhook_secret_set'] else 'not set'}")
    print(f"  {'smtp_password':<14} {'set' if described['smtp_password_set'] else 'not set'}")
    print(f"  {'logo':<14} {'set' if described['has_logo'] else 'not set'}")


def _suspension(firm: str, reason: str, database_url: Optional[str], *, suspend: bool) -> None:
    from ..services.firms import resume_firm, suspend_firm
    from .common import cli_actor

    change = suspend_firm if suspend else resume_firm
    _transaction(database_url, lambda session: change(session, firm_id=firm, reason=reason, actor=cli_actor()))
    print(f"firm {firm} {'suspended' if suspend else 'resumed'}: {reason}")


def firms_suspend(
    firm: Annotated[str, typer.Option("--firm", help="the firm's id")],
    reason: Annotated[str, typer.Option("--reason", help="why (audited; the firm's users are told)")],
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=DB_HELP)] = None,
) -> None:
    """Suspend a firm: logins, tokens, API keys, ingestion and platform connections refused (docs/tenants.md)."""
    _suspension(firm, reason, database_url, suspend=True)


def firms_resume(
    firm: Annotated[str, typer.Option("--firm", help="the firm's id")],
    reason: Annotated[str, typer.Option("--reason", help="why (audited)")],
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=DB_HELP)] = None,
) -> None:
    """Lift a firm's suspension."""
    _suspension(firm, reason, database_url, suspend=False)


def register(app: typer.Typer) -> None:
    firms_app = typer.Typer(help="Firms (tenants): onboard one with its first admin, list them, set their settings.",
                            no_args_is_help=True)
    firms_app.command("create")(firms_create)
    firms_app.command("list")(firms_list)
    firms_app.command("settings")(firms_settings)
    firms_app.command("suspend")(firms_suspend)
    firms_app.command("resume")(firms_resume)
    app.add_typer(firms_app, name="firms")
