"""The audit log's key marks and anchors, on both backends: an untouched log verifies; removing the newest
entries, or appending an entry with a valid plain hash, fails ``propcrm audit verify`` with the entries
named; anchors are checked with the key; a process without the key cannot extend a keyed log."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time

import pytest
from sqlalchemy import delete, select, text
from typer.testing import CliRunner

from propcrm.adapters.db.models import AuditEntry
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.adapters.settings import forget as forget_settings
from propcrm.cli import app
from propcrm.services import audit, audit_anchors
from support.tamper import attacker

UTC = dt.timezone.utc
KEY = "k" * 8 + "-a-test-audit-key-of-enough-length-0123456789"
LOG = AuditEntry.__table__


def reconfigure() -> None:
    """The environment changed: the process's settings are read again at their next use (a new start)."""
    forget_settings()
    audit_anchors.forget_configuration()


@pytest.fixture
def keyed(db_url, tmp_path, monkeypatch):
    """The database with an audit key and an anchor directory configured through the environment."""
    monkeypatch.setenv(audit_anchors.KEY_ENV, KEY)
    monkeypatch.setenv(audit_anchors.DIR_ENV, str(tmp_path / "anchors"))
    reconfigure()
    engine = make_engine(db_url)
    yield engine, sessions(engine), tmp_path / "anchors"
    engine.dispose()
    reconfigure()


def seed(Session, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        with Session.begin() as s:
            audit.append(s, actor="user:1:admin@fa.example", action="account.status", entity="account",
                         entity_id=str(i), after={"status": "breached", "n": i}, firm_id="fa")


def anchor(engine, db_url) -> audit_anchors.AnchorOutcome:
    with sessions(engine, readonly=True)() as s:
        return audit_anchors.write_anchor(s, audit_anchors.config_for(db_url))


def verify_cli(db_url, *extra: str):
    return CliRunner().invoke(app, ["audit", "verify", "--database-url", db_url, *extra])



def forge_append(engine, *, mac: str | None = None, firm_id: str = "fa") -> int:
    """An entry appended to ``firm_id``'s chain with a correct place, link and SHA-256 — all anyone can
    compute without the key."""
    with engine.connect() as conn:
        top = conn.execute(select(LOG.c.seq).order_by(LOG.c.seq.desc()).limit(1)).scalar()
        tail = conn.execute(select(LOG.c.chain_seq, LOG.c.hash).where(LOG.c.firm_id == firm_id)
                            .order_by(LOG.c.chain_seq.desc()).limit(1)).first()
    fields = dict(seq=tail.chain_seq + 1, firm_id=firm_id, ts=dt.datetime.now(UTC), actor="user:1:admin@fa.example",
                  action="payout.approved", entity="payout", entity_id="7", before=None,
                  after={"status": "approved"}, prev_hash=tail.hash)
    digest = audit.entry_hash(**fields, v=2)
    with attacker(engine) as conn:
        conn.execute(LOG.insert().values(**fields | {"seq": top + 1}, chain_seq=fields["seq"], hash=digest, mac=mac))
    return top + 1


def test_an_untouched_keyed_and_anchored_log_verifies(keyed, db_url):
    engine, Session, directory = keyed
    seed(Session, 5)
    with Session() as s:
        assert all(r.mac == audit.entry_mac(KEY.encode(), r.hash) for r in s.scalars(select(AuditEntry)))
    written = anchor(engine, db_url).written
    assert written is not None and written.chains == {"fa": (5, written.chains["fa"][1])}
    assert anchor(engine, db_url).written is None  # nothing new: no second line
    seed(Session, 2, start=5)
    assert anchor(engine, db_url).written.chains["fa"][0] == 7
    [path] = list(directory.glob("anchors-*.ndjson"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["chains"][0][:2] for line in lines] == [["fa", 5], ["fa", 7]] and KEY not in path.read_text()
    assert [line["v"] for line in lines] == [2, 2]
    result = verify_cli(db_url)
    assert result.exit_code == 0, result.output
    assert "audit log intact: 7 entries" in result.output and "keyed from entry #1" in result.output
    assert "2 anchor(s)" in result.output and "saw 1 chain(s), unchanged" in result.output


@pytest.mark.parametrize("removed,named", [((7,), "firm fa's chain: #7 in the chain is missing"),
                                            ((5, 6, 7), "firm fa's chain: #5–#7 in the chain are missing")])
def test_removing_the_newest_entries_fails_verify_and_names_the_gap(keyed, db_url, removed, named):
    engine, Session, _ = keyed
    seed(Session, 7)
    assert anchor(engine, db_url).written.chains["fa"][0] == 7
    with attacker(engine) as conn:
        conn.execute(delete(LOG).where(LOG.c.seq.in_(removed)))
    with Session() as s:
        assert audit.verify(s, key=KEY.encode()).ok  # the chain alone cannot tell
    result = verify_cli(db_url)
    assert result.exit_code == 1, result.output
    assert named in result.output and "the newest entries were removed" in result.output


def test_an_appended_entry_with_a_valid_plain_hash_fails_verify(keyed, db_url):
    engine, Session, _ = keyed
    seed(Session, 4)
    anchor(engine, db_url)
    seq = forge_append(engine)
    with Session() as s:
        assert audit.verify(s).ok  # its SHA-256 and link are right: without the key nothing shows
    result = verify_cli(db_url)
    assert result.exit_code == 1
    assert f"entry #{seq} was not written by propcrm: its key mark is missing" in result.output
    # a made-up mark is no better
    with attacker(engine) as conn:
        conn.execute(delete(LOG).where(LOG.c.seq == seq))
    forge_append(engine, mac="0" * 64)
    assert "key mark is wrong" in verify_cli(db_url).output
    # and the anchor writer does not vouch for it
    outcome = anchor(engine, db_url)
    assert outcome.written is None and f"entry #{seq}" in outcome.problem


def test_anchors_are_verified_with_the_key(keyed, db_url, tmp_path):
    engine, Session, directory = keyed
    seed(Session, 6)
    anchor(engine, db_url)
    [path] = list(directory.glob("anchors-*.ndjson"))
    original = path.read_text()
    # an anchor altered to hide a removal (it now claims the log ended at #4) is not authentic
    record = json.loads(original)
    path.write_text(json.dumps({**record, "chains": [["fa", 4, record["chains"][0][2]]]}) + "\n")
    result = verify_cli(db_url)
    assert result.exit_code == 1 and "is not authentic" in result.output
    # an anchor made with another key is named as such
    other = tmp_path / "other.key"
    other.write_text("another-key-of-enough-length-0123456789abcdef\n")
    path.write_text(original)
    wrong = verify_cli(db_url, "--key-file", str(other))
    assert wrong.exit_code == 1 and "key mark is wrong" in wrong.output  # the entries too were keyed otherwise
    foreign = audit_anchors.AnchorConfig(key=other.read_text().strip().encode(), key_source="test",
                                         directory=directory)
    with Session() as s:
        found = audit_anchors.check_anchors(s, foreign)
    assert not found.ok and "made with another audit key" in found.problems[0]
    assert verify_cli(db_url).exit_code == 0  # put back: intact


def test_a_process_without_the_key_cannot_extend_a_keyed_log(keyed, db_url, monkeypatch):
    engine, Session, _ = keyed
    seed(Session, 2)
    monkeypatch.delenv(audit_anchors.KEY_ENV)
    reconfigure()
    with pytest.raises(audit.AuditKeyError, match="no audit key"):
        seed(Session, 1, start=2)
    monkeypatch.setenv(audit_anchors.KEY_ENV, "x" * 40)
    reconfigure()
    with pytest.raises(audit.AuditKeyError, match="not the one entry #2 was written with"):
        seed(Session, 1, start=2)
    with Session() as s:
        assert s.scalar(select(LOG.c.seq).order_by(LOG.c.seq.desc()).limit(1)) == 2  # nothing appended


def test_an_unkeyed_log_says_it_cannot_detect_truncation(db_url):
    engine = make_engine(db_url)
    try:
        seed(sessions(engine), 2)
    finally:
        engine.dispose()
    result = verify_cli(db_url)
    assert result.exit_code == 0 and "NOT keyed" in result.output


def test_serve_keys_the_embedded_database_and_anchors_on_its_schedule(tmp_path, monkeypatch, caplog):
    from propcrm.adapters.db.session import migrate

    for name in (audit_anchors.KEY_ENV, audit_anchors.KEY_FILE_ENV, audit_anchors.DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    reconfigure()
    url = f"sqlite:///{tmp_path / 'propcrm.db'}"
    migrate(url)
    config = audit_anchors.ensure_embedded_key(url)
    key_file = tmp_path / "audit.key"
    assert config.key is not None and config.key_source == str(key_file)
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert config.directory == tmp_path / "audit-anchors"
    assert audit_anchors.ensure_embedded_key(url).key == config.key  # kept, not replaced
    engine = make_engine(url)
    stop = threading.Event()
    try:
        seed(sessions(engine), 3)
        caplog.set_level(logging.DEBUG, logger="propcrm.audit")
        loop = threading.Thread(target=audit_anchors.anchor_loop, args=(sessions(engine, readonly=True), url, stop))
        loop.start()
        deadline = time.monotonic() + 20
        while not list((tmp_path / "audit-anchors").glob("anchors-*.ndjson")) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        loop.join(timeout=10)
    finally:
        stop.set()
        engine.dispose()
        reconfigure()
    [path] = list((tmp_path / "audit-anchors").glob("anchors-*.ndjson"))
    assert json.loads(path.read_text().splitlines()[0])["chains"][0][:2] == ["fa", 3]
    secret = key_file.read_text().strip()
    assert secret not in caplog.text and secret not in repr(config) and "audit anchors every" in caplog.text
    assert verify_cli(url).exit_code == 0


def test_the_web_verification_checks_key_marks_and_anchors_too(keyed, db_url):
    from support.staff import build_world, seed as seed_world
    from support.web import browse

    engine, Session, _ = keyed
    app, world = build_world(db_url)
    with world.client:
        seed_world(world)
        anchor(engine, db_url)
        page = browse(world, "risk")
        intact = page.get("/office/audit/verify")
        assert intact.status_code == 200 and "key mark checks with the audit key" in intact.text
        assert "anchor(s) kept outside the database are authentic" in intact.text
        seq = forge_append(engine)
        broken = page.get("/office/audit/verify")
        assert broken.status_code == 409 or "Broken" in broken.text
        assert f"entry #{seq} was not written by propcrm" in broken.text
        with attacker(engine) as conn:
            conn.execute(delete(LOG).where(LOG.c.seq >= seq - 1))
        truncated = page.get("/office/audit/verify")
        assert "in the chain is missing" in truncated.text and "Broken" in truncated.text
