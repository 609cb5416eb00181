"""`propcrm packs add`, `propcrm accounts create`, `propcrm users create` on both backends: what an admin
types to set a firm up, audited, with passwords never printed."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.cli import app
from propcrm.services import users


@pytest.fixture
def cli(db_url):
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None):
        return runner.invoke(app, [*args, "--database-url", db_url], input=stdin)

    engine = make_engine(db_url)
    run.sessions = sessions(engine)
    yield run
    engine.dispose()


def test_an_admin_sets_up_a_firm_from_the_command_line(cli):
    added = cli("packs", "add", "two-step-100k", "--activate", "--firm", "acme")
    assert added.exit_code == 0, added.output + added.stderr
    assert "added two-step-100k v1" in added.stdout and "active" in added.stdout
    again = cli("packs", "add", "two-step-100k")
    assert again.exit_code == 0 and "already stored" in again.stdout

    created = cli("accounts", "create", "--external-id", "MT5-1001", "--pack", "two-step-100k", "--platform", "mt5")
    assert created.exit_code == 0, created.stderr
    assert "MT5-1001 on mt5: two-step-100k v1, phase-1 (firm acme)" in created.stdout
    pinned = cli("accounts", "create", "--external-id", "MT5-1002", "--pack", "two-step-100k:1", "--phase", "phase-2")
    assert pinned.exit_code == 0 and "phase-2" in pinned.stdout

    secret = "s3cret-for-the-trading-desk"
    user = cli("users", "create", "--email", "Risk@Acme.example", "--role", "risk", "--password", secret)
    assert user.exit_code == 0, user.stderr
    assert "risk@acme.example (risk) in firm acme" in user.stdout
    assert secret not in user.stdout + user.stderr
    piped = cli("users", "create", "--email", "admin@acme.example", "--role", "admin", stdin="piped-password-1\n")
    assert piped.exit_code == 0, piped.stderr
    assert "piped-password-1" not in piped.stdout + piped.stderr

    with cli.sessions() as s:
        accounts = {a.external_id: (a.platform, a.phase) for a in s.scalars(select(m.Account))}
        assert accounts == {"MT5-1001": ("mt5", "phase-1"), "MT5-1002": ("demo", "phase-2")}
        assert users.authenticate(s, firm_id="acme", email="risk@acme.example", password=secret).role == "risk"
        assert users.authenticate(s, firm_id="acme", email="admin@acme.example", password="piped-password-1")
        actions = [e.action for e in s.scalars(select(m.AuditEntry).order_by(m.AuditEntry.seq))]
        assert actions[:6] == ["pack.add", "pack.activate", "account.create", "account.create", "user.create",
                               "user.create"]
        logged = json.dumps([[e.actor, e.before, e.after] for e in s.scalars(select(m.AuditEntry))])
        assert secret not in logged and "piped-password-1" not in logged
        assert all(e.actor.startswith("cli") for e in s.scalars(select(m.AuditEntry).where(
            m.AuditEntry.action.in_(["pack.add", "account.create", "user.create"]))))


@pytest.mark.parametrize("args,message", [
    (("users", "create", "--email", "x@acme.example", "--role", "root", "--password", "a long enough one"), "--role must be"),
    (("users", "create", "--email", "x@acme.example", "--role", "trader", "--password", "a long enough one"), "trader user must"),
    (("users", "create", "--email", "x@acme.example", "--role", "risk", "--password", "short"), "at least 12"),
    (("users", "create", "--email", "x@acme.example", "--role", "risk", "--password", "password1234"), "too easy to guess"),
    (("accounts", "create", "--external-id", "A1", "--pack", "nope"), "has no active version"),
    (("accounts", "create", "--external-id", "A1", "--pack", "two-step-100k:7"), "no rule pack two-step-100k v7"),
    (("accounts", "create", "--external-id", "A1", "--pack", "two-step-100k:x"), "PACK_ID:VERSION"),
    (("accounts", "create", "--external-id", "A1", "--pack", "two-step-100k", "--phase", "p9"), "no phase 'p9'"),
    (("packs", "add", "/no/such/pack.yaml"), "no such file"),
])
def test_refusals_exit_2_and_say_why(cli, args, message):
    assert cli("packs", "add", "two-step-100k", "--activate", "--firm", "acme").exit_code == 0
    result = cli(*args)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr


def test_accounts_need_a_firm_that_exists(cli):
    result = cli("accounts", "create", "--external-id", "A1", "--pack", "two-step-100k")
    assert result.exit_code == 2 and "no firm yet" in result.stderr


def test_users_disable_and_enable_from_the_command_line(cli):
    created = cli("users", "create", "--email", "risk@acme.example", "--role", "risk", "--password",
                  "s3cret-for-the-trading-desk", "--firm", "acme")
    assert created.exit_code == 0, created.stderr
    off = cli("users", "disable", "--email", "risk@acme.example", "--firm", "acme")
    assert off.exit_code == 0, off.stderr
    assert "disabled user" in off.stdout and "sessions have ended" in off.stdout
    with cli.sessions() as s:
        assert s.scalar(select(m.User.active).where(m.User.email == "risk@acme.example")) is False
    on = cli("users", "enable", "--email", "risk@acme.example", "--firm", "acme")
    assert on.exit_code == 0, on.stderr
    assert "enabled user" in on.stdout
    with cli.sessions() as s:
        assert s.scalar(select(m.User.active).where(m.User.email == "risk@acme.example")) is True
