"""`propcrm packs rebind` and `propcrm halts …` on both backends: the preview is printed first, nothing
changes without --yes, and the change is audited with the operating-system user as the actor."""

from __future__ import annotations

import json

import msgspec
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.cli import app
from propcrm.domain.rulepack import load_pack
from propcrm.services.evaluation import EvaluationWorker
from propcrm.services.ingest import ingest


@pytest.fixture
def cli(db_url):
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [*args, "--database-url", db_url])

    engine = make_engine(db_url)
    run.sessions = sessions(engine)
    yield run
    engine.dispose()


def test_rebind_and_halt_from_the_command_line(cli, tmp_path):
    assert cli("packs", "add", "two-step-100k", "--activate", "--firm", "acme").exit_code == 0
    data = msgspec.to_builtins(load_pack("two-step-100k"))
    data["version"] = 2
    data["phases"][0]["rules"][0]["amount"] = {"pct_initial": 4}  # daily loss 4% instead of 5%
    (tmp_path / "v2.json").write_text(json.dumps(data))
    assert cli("packs", "add", str(tmp_path / "v2.json")).exit_code == 0
    for name in ("MT5-1", "MT5-2"):
        assert cli("accounts", "create", "--external-id", name, "--pack", "two-step-100k:1").exit_code == 0
    with cli.sessions.begin() as s:
        ingest(s, firm_id="acme", source="demo", body=b"".join(json.dumps(
            {"id": f"e-{n}", "type": "equity", "account": n, "ts": "2026-03-02T10:00:00Z", "equity": "95500",
             "balance": "100000"}).encode() + b"\n" for n in ("MT5-1", "MT5-2")))
    EvaluationWorker(cli.sessions).run_until_idle()

    look = cli("packs", "rebind", "--to", "two-step-100k:2", "--account", "MT5-1")
    assert look.exit_code == 0, look.output
    assert "MT5-1 (phase-1, v1): active -> breached" in look.stdout
    assert "+ breach daily_loss" in look.stdout and "nothing changed" in look.stderr
    no_reason = cli("packs", "rebind", "--to", "two-step-100k:2", "--account", "MT5-1", "--yes")
    assert no_reason.exit_code == 2 and "--reason" in no_reason.stderr
    moved = cli("packs", "rebind", "--to", "two-step-100k:2", "--account", "MT5-1", "--yes",
                "--reason", "daily loss is 4% for this group")
    assert moved.exit_code == 0, moved.output
    with cli.sessions() as s:
        account = s.scalars(select(m.Account).where(m.Account.external_id == "MT5-1")).one()
        assert account.status == "breached"
        entry = s.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "account.rebind")).one()
        assert entry.actor.startswith("cli") and entry.after["version"] == "two-step-100k v2"

    preview = cli("halts", "halt", "--all")
    assert preview.exit_code == 0 and "1 trading account(s) would be halted" in preview.stdout
    halted = cli("halts", "halt", "--all", "--yes", "--reason", "feed fault")
    assert halted.exit_code == 0 and "1 account(s) halted" in halted.stdout, halted.output
    listing = cli("halts", "list")
    assert "feed fault" in listing.stdout and "1 still halted" in listing.stdout
    resumed = cli("halts", "resume", "1", "--reason", "feed back")
    assert resumed.exit_code == 0 and "1 of 1 account(s) trade again" in resumed.stdout, resumed.output
