"""`propcrm platforms add|set|list|map` on both backends: what an operator types to connect a platform.
Credentials are read from stdin or an environment variable, sealed, and never printed back."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from propcrm.adapters.db import models as m
from propcrm.adapters.db import models_platforms as mp
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.adapters.platforms.secrets import new_key
from propcrm.cli import app

PASSWORD = "Sup3r#Secret-of-the-manager"


@pytest.fixture
def cli(db_url, monkeypatch):
    monkeypatch.setenv("PROPCRM_SECRET_KEY", new_key())
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None):
        return runner.invoke(app, [*args, "--database-url", db_url], input=stdin)

    engine = make_engine(db_url)
    run.sessions = sessions(engine)
    assert run("packs", "add", "two-step-100k", "--activate", "--firm", "acme").exit_code == 0
    created = run("accounts", "create", "--external-id", "MT5-1001", "--pack", "two-step-100k", "--platform", "mt5")
    assert created.exit_code == 0, created.stderr
    yield run
    engine.dispose()


def test_an_operator_connects_mt5_and_maps_a_login(cli):
    added = cli("platforms", "add", "mt5-live", "--family", "mt5-web", "-s", "url=https://mt5.example:443",
                "-s", "manager=1000", "-s", "leverage=50", "--secret", "password", "--disabled", stdin=PASSWORD + "\n")
    assert added.exit_code == 0, added.output + added.stderr
    assert "added platform connection mt5-live (mt5-web) in firm acme" in added.stdout
    assert PASSWORD not in added.stdout + added.stderr

    listed = [json.loads(line) for line in cli("platforms", "list").stdout.splitlines()]
    assert len(listed) == 1 and listed[0]["firm"] == "acme" and listed[0]["name"] == "mt5-live"
    assert listed[0]["settings"]["leverage"] == 50 and listed[0]["enabled"] is False
    assert PASSWORD not in json.dumps(listed)
    with cli.sessions() as s:
        row = s.scalars(select(mp.PlatformConnection)).one()
        assert row.secret and PASSWORD.encode() not in row.secret  # sealed at rest, not stored as typed

    enabled = cli("platforms", "set", "mt5-live", "--enable", "-s", "leverage=100")
    assert enabled.exit_code == 0, enabled.stderr
    listed = json.loads(cli("platforms", "list").stdout.splitlines()[0])
    assert listed["enabled"] is True and listed["settings"]["leverage"] == 100

    mapped = cli("platforms", "map", "mt5-live", "--login", "51001", "--account", "MT5-1001")
    assert mapped.exit_code == 0, mapped.stderr
    assert "login 51001 on mt5-live → account MT5-1001" in mapped.stdout
    with cli.sessions() as s:
        login = s.scalars(select(mp.PlatformLogin)).one()
        account = s.scalars(select(m.Account).where(m.Account.external_id == "MT5-1001")).one()
        assert login.login == "51001" and login.account_id == account.id


WRONG = [
    (("platforms", "add", "x", "--family", "mt4"), "mt4"),
    (("platforms", "add", "x", "--family", "mt5-web", "-s", "url=https://mt5.example"), "manager"),
    (("platforms", "add", "x", "--family", "mt5-web", "-s", "novalue"), "KEY=VALUE"),
    (("platforms", "add", "x", "--family", "mt5-web", "-s", "groups_by_phase={oops"), "not valid JSON"),
    (("platforms", "set", "nowhere", "--disable"), "nowhere"),
    (("platforms", "map", "nowhere", "--login", "1", "--account", "MT5-1001"), "nowhere"),
    (("platforms", "add", "x", "--family", "mt5-web", "--firm", "ghost"), "ghost"),
]


def test_a_wrong_command_exits_2_and_says_what_is_wrong(cli):
    for args, says in WRONG:  # one database for all: each must leave it as it was
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert says in result.stderr + result.stdout, (args, result.stderr)
        assert cli("platforms", "list").stdout == "", args  # nothing half-stored


def test_mapping_an_unknown_account_is_refused(cli):
    assert cli("platforms", "add", "mt5-live", "--family", "mt5-web", "-s", "url=https://mt5.example",
               "-s", "manager=1000", "--secret", "password", stdin=PASSWORD + "\n").exit_code == 0
    result = cli("platforms", "map", "mt5-live", "--login", "51001", "--account", "MT5-9999")
    assert result.exit_code == 2 and "MT5-9999" in result.stderr
    with cli.sessions() as s:
        assert s.scalars(select(mp.PlatformLogin)).first() is None
