"""`propcrm users list | disable | enable | reset-password | set-role | end-sessions`: the operator's hand on
the firm's users (``users create`` is in cli.py).

The operator — whoever runs these commands on the installation — is trusted like the installation
itself: a user the operator creates, resets or sets the role of has no sponsor (a root of the
maker-checker rule, docs/lifecycle.md). Every change is audited with the operating-system user as the
actor (``cli:<name>``); passwords are never printed unless generated here.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

FIRM_HELP = "firm id (default: the only firm)"
DB_HELP = "database URL (default: PROPCRM_DATABASE_URL, else ./data/propcrm.db)"


def _run(database_url: str | None, firm: str | None, action):
    from .common import in_firm_transaction

    return in_firm_transaction(database_url, firm, action)


def _user(session, firm_id: str, email: str):
    from ..services.users import user_by_email

    return user_by_email(session, firm_id=firm_id, email=email)


def users_list(
    firm: Annotated[Optional[str], typer.Option("--firm", help=FIRM_HELP)] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=DB_HELP)] = None,
) -> None:
    """The firm's users: role, enabled or not, live sessions, and who sponsored them."""
    from rich.console import Console
    from rich.table import Table

    from ..services.users import list_users, live_sessions, sponsor_chain

    def action(session, firm_id):
        table = Table(title=f"users of firm {firm_id}")
        for column in ("id", "e-mail", "role", "enabled", "live sessions", "created by", "sponsors"):
            table.add_column(column)
        for row in list_users(session, firm_id=firm_id):
            chain = sponsor_chain(session, row.id)
            table.add_row(str(row.id), row.email, row.role, "yes" if row.active else "no",
                          str(live_sessions(session, user_id=row.id)),
                          f"#{row.created_by_user_id}" if row.created_by_user_id else "operator",
                          ", ".join(f"#{uid} {chain[uid].email}" for uid in sorted(chain)) or "none (root)")
        return table

    Console(highlight=False).print(_run(database_url, firm, action))


def users_disable(
    email: Annotated[str, typer.Option("--email", help="the user's e-mail")],
    firm: Annotated[Optional[str], typer.Option("--firm", help=FIRM_HELP)] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=DB_HELP)] = None,
) -> None:
    """Disable a user: their sessions end now and they cannot log in."""
    _set_active(email, firm, database_url, active=False)


def users_enable(
    email: Annotated[str, typer.Option("--email", help="the user's e-mail")],
    firm: Annotated[Optional[str], typer.Option("--firm", help=FIRM_HELP)] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=DB_HELP)] = None,
) -> None:
    """Enable a disabled user (they log in again; old sessions stay ended)."""
    _set_active(email, firm, database_url, active=True)


def _set_active(email: str, firm: str | None, database_url: str | None, *, active: bool) -> None:
    from .common import cli_actor
    from ..services.users import set_active

    def action(session, firm_id):
        user = set_active(session, firm_id=firm_id, user_id=_user(session, firm_id, email).id, active=active,
                          actor=cli_actor())
        if active:
            return f"enabled user #{user.id} {user.email}"
        return f"disabled user #{user.id} {user.email}; their sessions have ended"

    print(_run(database_url, firm, action))


def users_reset_password(
    email: Annotated[str, typer.Option("--email", help="the user's e-mail")],
    password: Annotated[Optional[str], typer.Option(
        "--password", help="the new password (default: asked for, hidden); --generate makes one")] = None,
    generate: Annotated[bool, typer.Option("--generate", help="generate a strong password and print it once")] = False,
    firm: Annotated[Optional[str], typer.Option("--firm", help=FIRM_HELP)] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=DB_HELP)] = None,
) -> None:
    """Set a user's password (their sessions end). Done by the operator, it also makes the user a root of
    the maker-checker rule again (no sponsor through their password)."""
    from .common import cli_actor
    from ..services.users import reset_password

    if password is None and not generate:
        if sys.stdin.isatty():
            password = typer.prompt("new password", hide_input=True, confirmation_prompt=True, err=True)
        else:
            password = sys.stdin.readline().rstrip("\r\n")

    def action(session, firm_id):
        user, generated = reset_password(session, firm_id=firm_id, user_id=_user(session, firm_id, email).id,
                                         password=None if generate else password, actor=cli_actor())
        done = f"reset the password of user #{user.id} {user.email}; their sessions have ended"
        return done + (f"\nnew password: {generated}" if generated else "")

    print(_run(database_url, firm, action))


def users_set_role(
    email: Annotated[str, typer.Option("--email", help="the user's e-mail")],
    role: Annotated[str, typer.Option("--role", help="admin | risk | finance | support")],
    firm: Annotated[Optional[str], typer.Option("--firm", help=FIRM_HELP)] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=DB_HELP)] = None,
) -> None:
    """Change a staff user's role."""
    from .common import cli_actor
    from ..services.users import set_role

    def action(session, firm_id):
        user = set_role(session, firm_id=firm_id, user_id=_user(session, firm_id, email).id, role=role,
                        actor=cli_actor())
        return f"user #{user.id} {user.email} is now {user.role}"

    print(_run(database_url, firm, action))


def users_end_sessions(
    email: Annotated[str, typer.Option("--email", help="the user's e-mail")],
    firm: Annotated[Optional[str], typer.Option("--firm", help=FIRM_HELP)] = None,
    database_url: Annotated[Optional[str], typer.Option("--database-url", help=DB_HELP)] = None,
) -> None:
    """End every session of a user: they must log in again."""
    from .common import cli_actor
    from ..services.users import end_sessions

    def action(session, firm_id):
        user = _user(session, firm_id, email)
        ended = end_sessions(session, firm_id=firm_id, user_id=user.id, actor=cli_actor())
        return f"ended {ended} session(s) of user #{user.id} {user.email}"

    print(_run(database_url, firm, action))


def register(users_app: typer.Typer) -> None:
    """Add these commands to the `propcrm users` group."""
    users_app.command("list")(users_list)
    users_app.command("disable")(users_disable)
    users_app.command("enable")(users_enable)
    users_app.command("reset-password")(users_reset_password)
    users_app.command("set-role")(users_set_role)
    users_app.command("end-sessions")(users_end_sessions)
