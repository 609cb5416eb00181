"""The outbox dispatcher delivers decisions' effects: at least once, in order per account, retried with
backoff, audited — against a real HTTP server (signed webhooks) and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.adapters.delivery import DeliveryError
from propcrm.adapters.notify import EmailNotifier, WebhookNotifier
from propcrm.adapters.platforms import LoggingConnector, PlatformConnector, SignedWebhookConnector
from propcrm.domain.rulepack import load_pack
from propcrm.services import audit
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.dispatch import (
    DispatchConfigError,
    Dispatcher,
    build_dispatcher,
    connectors_from_env,
    describe_setup,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
FIRM = "acme"


# --------------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
def db(db_url):
    engine = make_engine(db_url)
    Session = sessions(engine)
    yield Session
    engine.dispose()


def _firm(Session, *, accounts=("A1",), trader_email="alice@traders.example") -> dict:
    """A firm with a pack, a trader, accounts and users of several roles. Returns ids."""
    with Session.begin() as s:
        ensure_firm(s, firm_id=FIRM, name="Acme Prop")
        ensure_firm(s, firm_id="other", name="Other Firm")
        version = add_pack(s, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True)
        trader = m.Trader(firm_id=FIRM, name="Alice", email=trader_email)
        someone_else = m.Trader(firm_id=FIRM, name="Bob", email="bob@traders.example")
        s.add_all([trader, someone_else])
        s.flush()
        for external_id in accounts:
            create_account(s, firm_id=FIRM, external_id=external_id, pack_version_id=version.id, platform="mt5",
                           trader_id=trader.id)
        users = {}
        for name, role, trader_id, active, firm in [
            ("admin", "admin", None, True, FIRM),
            ("risk", "risk", None, True, FIRM),
            ("risk-gone", "risk", None, False, FIRM),
            ("finance", "finance", None, True, FIRM),
            ("support", "support", None, True, FIRM),
            ("alice", "trader", trader.id, True, FIRM),
            ("bob", "trader", someone_else.id, True, FIRM),
            ("other-admin", "admin", None, True, "other"),
        ]:
            user = m.User(firm_id=firm, email=f"{name}@example.com", password_hash="x", role=role,
                          trader_id=trader_id, active=active)
            s.add(user)
            s.flush()
            users[name] = user.id
        return {"trader": trader.id, "users": users}


def _command(Session, command: str, *, account="A1", key=None, at=T0, platform="mt5", **extra) -> int:
    with Session.begin() as s:
        row = m.OutboxMessage(
            firm_id=FIRM,
            kind="platform_command",
            payload={"command": command, "account": account, "platform": platform, "login": account,
                     "kind": "breach", "rule": "daily_loss", "message": "equity fell below the floor", **extra},
            dedupe_key=key or f"test:{account}:{command}:{at.isoformat()}",
            next_attempt_at=at,
            created_at=at,
        )
        s.add(row)
        s.flush()
        return row.id


def _notify(Session, *, trader_id, kind="breach", account="A1", key="decision:7:notify", at=T0) -> int:
    with Session.begin() as s:
        row = m.OutboxMessage(
            firm_id=FIRM,
            kind="notify",
            payload={"account": account, "platform": "mt5", "login": account, "decision": 7, "kind": kind,
                     "rule": "daily_loss",
                     "message": "equity 94,165.00 fell below the daily floor 95,000.00 = balance at day start "
                                "100,000.00 − 5% of initial 100,000.00",
                     "trader_id": trader_id},
            dedupe_key=key,
            next_attempt_at=at,
            created_at=at,
        )
        s.add(row)
        s.flush()
        return row.id


def _row(Session, row_id: int) -> m.OutboxMessage:
    with Session() as s:
        return s.get(m.OutboxMessage, row_id)


def _audit(Session, action: str | None = None) -> list[m.AuditEntry]:
    with Session() as s:
        query = select(m.AuditEntry).order_by(m.AuditEntry.seq)
        if action:
            query = query.where(m.AuditEntry.action == action)
        return list(s.scalars(query))


class FlakyConnector:
    """Fails the first ``failures`` sends (with a message full of things that must not be recorded)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[dict] = []
        self.calls = 0

    def send(self, command: dict) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("bridge https://ops:hunter2@bridge.example/cmd?token=s3cr3t refused the connection")
        self.sent.append(command)


class Receiver:
    """A real HTTP server on 127.0.0.1 (port 0) that records requests and answers with queued statuses."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self) -> None:
            self.envelopes: list = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
            self.envelopes.append(envelope)
            return "250 Message accepted for delivery"

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    inbox.port = controller.port
    yield inbox
    controller.stop()


def _verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    ts = headers["x-propcrm-timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-propcrm-signature"])


# --------------------------------------------------------------------------------------------------
# platform commands


def test_a_due_command_is_delivered_with_its_idempotency_key_marked_sent_and_audited(db):
    _firm(db)
    row_id = _command(db, "disable", key="decision:1:platform_command")
    bridge = LoggingConnector()
    assert isinstance(bridge, PlatformConnector)
    report = Dispatcher(db, connectors={"mt5": bridge}).run_once(T0)
    assert (report.delivered, report.failed, report.dead) == (1, 0, 0)
    assert len(bridge.sent) == 1
    command = bridge.sent[0]
    assert command["command"] == "disable" and command["account"] == "A1"
    assert command["idempotency_key"] == "decision:1:platform_command" and command["firm"] == FIRM
    row = _row(db, row_id)
    assert row.status == "sent" and row.sent_at == T0 and row.attempts == 1
    entries = _audit(db, "platform.disable")
    assert len(entries) == 1
    assert entries[0].entity_id == "A1" and entries[0].actor == "dispatcher" and entries[0].ts == T0
    assert entries[0].after["idempotency_key"] == "decision:1:platform_command"
    # nothing is delivered twice: a second pass has nothing to do
    assert Dispatcher(db, connectors={"mt5": bridge}).run_once(T0 + dt.timedelta(hours=1)).claimed == 0
    assert len(bridge.sent) == 1
    with db() as s:
        assert audit.verify(s).ok


def test_a_row_not_yet_due_waits_and_a_platform_without_connector_is_retried(db):
    _firm(db)
    later = _command(db, "disable", at=T0 + dt.timedelta(minutes=5))
    nowhere = _command(db, "disable", account="B1", platform="ctrader")
    bridge = LoggingConnector()
    report = Dispatcher(db, connectors={"mt5": bridge}).run_once(T0)
    assert report.claimed == 1 and report.failed == 1 and bridge.sent == []
    assert _row(db, later).status == "pending" and _row(db, later).attempts == 0
    assert "no connector for platform 'ctrader'" in _row(db, nowhere).last_error
    # a catch-all connector serves every platform
    Dispatcher(db, connectors={"*": bridge}).run_once(T0 + dt.timedelta(minutes=10))
    assert {c["account"] for c in bridge.sent} == {"A1", "B1"}


def test_a_failing_connector_retries_with_growing_delays_then_the_row_is_dead(db):
    _firm(db)
    row_id = _command(db, "disable")
    bridge = FlakyConnector(failures=100)
    dispatcher = Dispatcher(db, connectors={"mt5": bridge}, max_attempts=5, base_delay_s=2)
    now = T0
    delays = []
    for attempt in range(1, 5):
        report = dispatcher.run_once(now)
        assert report.failed == 1 and report.dead == 0
        row = _row(db, row_id)
        assert row.status == "pending" and row.attempts == attempt
        assert "hunter2" not in row.last_error and "s3cr3t" not in row.last_error
        assert "ConnectionError" in row.last_error and "bridge.example/cmd" in row.last_error
        delay = row.next_attempt_at - now
        assert delay == dispatcher.retry_delay(attempt, row_id)  # deterministic jitter
        base = dt.timedelta(seconds=2 * 2 ** (attempt - 1))
        assert base <= delay <= base * 1.25
        delays.append(delay)
        # not retried before its time
        assert dispatcher.run_once(row.next_attempt_at - dt.timedelta(microseconds=1)).claimed == 0
        now = row.next_attempt_at
    assert delays == sorted(delays) and len(set(delays)) == len(delays)
    report = dispatcher.run_once(now)
    assert report.dead == 1
    row = _row(db, row_id)
    assert row.status == "dead" and row.attempts == 5 and row.sent_at is None
    assert dispatcher.run_once(now + dt.timedelta(days=1)).claimed == 0
    assert bridge.calls == 5 and bridge.sent == []
    dead = _audit(db, "outbox.dead")
    assert len(dead) == 1 and dead[0].entity_id == str(row_id) and dead[0].after["attempts"] == 5
    assert "hunter2" not in json.dumps(dead[0].after) and "s3cr3t" not in json.dumps(dead[0].after)
    with db() as s:
        assert audit.verify(s).ok


def test_a_command_that_recovers_is_delivered_once(db):
    _firm(db)
    row_id = _command(db, "disable")
    bridge = FlakyConnector(failures=2)
    dispatcher = Dispatcher(db, connectors={"mt5": bridge}, base_delay_s=1)
    now = T0
    for _ in range(3):
        dispatcher.run_once(now)
        now = _row(db, row_id).next_attempt_at
    row = _row(db, row_id)
    assert row.status == "sent" and row.attempts == 3 and len(bridge.sent) == 1
    assert row.last_error  # the history of the failures stays visible


def test_a_resume_is_not_delivered_before_the_pause_ends(db):
    _firm(db)
    until = T0 + dt.timedelta(hours=10)
    pause = _command(db, "pause", until=until.isoformat(), key="decision:3:platform_command")
    resume = _command(db, "resume", at=until, key="decision:3:platform_command:resume")
    bridge = LoggingConnector()
    dispatcher = Dispatcher(db, connectors={"mt5": bridge})
    dispatcher.run_once(T0)
    assert [c["command"] for c in bridge.sent] == ["pause"]
    assert bridge.sent[0]["until"] == until.isoformat()
    dispatcher.run_once(until - dt.timedelta(seconds=1))
    assert _row(db, resume).status == "pending" and _row(db, resume).attempts == 0
    dispatcher.run_once(until)
    assert [c["command"] for c in bridge.sent] == ["pause", "resume"]
    assert _row(db, pause).status == _row(db, resume).status == "sent"


def test_a_resume_waits_for_an_undelivered_pause_and_commands_keep_their_order(db):
    _firm(db, accounts=("A1", "A2"))
    until = T0 + dt.timedelta(minutes=1)
    pause = _command(db, "pause", until=until.isoformat())
    resume = _command(db, "resume", at=until)
    other = _command(db, "disable", account="A2")

    class DownForA1:
        def __init__(self):
            self.up = False
            self.sent = []

        def send(self, command):
            if command["account"] == "A1" and not self.up:
                raise DeliveryError("platform bridge http://bridge/ answered HTTP 503")
            self.sent.append(command["command"] + ":" + command["account"])

    bridge = DownForA1()
    dispatcher = Dispatcher(db, connectors={"mt5": bridge}, base_delay_s=60)
    dispatcher.run_once(T0)
    dispatcher.run_once(until)  # the resume is due, but its pause has not been delivered
    assert bridge.sent == ["disable:A2"]  # another account is not held back
    assert _row(db, resume).status == "pending" and _row(db, resume).attempts == 0
    assert _row(db, pause).last_error == "platform bridge http://bridge/ answered HTTP 503"
    bridge.up = True
    dispatcher.run_once(_row(db, pause).next_attempt_at)
    assert bridge.sent == ["disable:A2", "pause:A1", "resume:A1"]
    assert _row(db, other).status == "sent"


@pytest.mark.parametrize("stopped", ["suspended", "halted"])  # halted: the firm's kill switch (issue 19)
def test_a_resume_for_an_account_breached_meanwhile_is_cancelled_not_sent(db, stopped):
    _firm(db)
    until = T0 + dt.timedelta(hours=10)
    _command(db, "pause", until=until.isoformat())
    resume = _command(db, "resume", at=until)
    bridge = LoggingConnector()
    dispatcher = Dispatcher(db, connectors={"mt5": bridge})
    dispatcher.run_once(T0)
    with db.begin() as s:
        s.scalars(select(m.Account).where(m.Account.external_id == "A1")).one().status = stopped
    report = dispatcher.run_once(until)
    assert report.cancelled == 1 and [c["command"] for c in bridge.sent] == ["pause"]
    row = _row(db, resume)
    assert row.status == "cancelled" and stopped in row.last_error
    assert len(_audit(db, "platform.cancelled")) == 1


def test_the_signed_webhook_connector_posts_verifiable_json_to_a_real_server(db, receiver):
    _firm(db)
    secret = "bridge-secret-0123456789"
    connector = SignedWebhookConnector(receiver.url, secret, timeout=5)
    assert secret not in repr(connector)
    row_id = _command(db, "disable", key="decision:9:platform_command")
    receiver.statuses = [503]  # the bridge is briefly unhealthy
    dispatcher = Dispatcher(db, connectors={"mt5": connector}, base_delay_s=1)
    report = dispatcher.run_once(T0)
    assert report.failed == 1
    row = _row(db, row_id)
    assert "HTTP 503" in row.last_error and secret not in row.last_error
    dispatcher.run_once(row.next_attempt_at)
    assert _row(db, row_id).status == "sent"
    assert len(receiver.requests) == 2
    for headers, body in receiver.requests:
        assert headers["content-type"] == "application/json"
        assert _verify(secret, headers, body)
        assert abs(int(headers["x-propcrm-timestamp"]) - time.time()) < 60
        assert headers["idempotency-key"] == "decision:9:platform_command"
        command = json.loads(body)
        assert command["command"] == "disable" and command["account"] == "A1" and command["firm"] == FIRM
        assert command["idempotency_key"] == "decision:9:platform_command"
    assert receiver.requests[0][1] == receiver.requests[1][1]  # a retry is the same command
    assert not _verify("another-secret", *receiver.requests[0])
    connector.close()


def test_the_signed_webhook_connector_raises_on_refusals_and_unreachable_bridges(receiver):
    connector = SignedWebhookConnector(receiver.url, "s", timeout=2)
    receiver.statuses = [401]
    with pytest.raises(DeliveryError, match="HTTP 401"):
        connector.send({"command": "disable"})
    port = _free_port()
    unreachable = SignedWebhookConnector(f"http://user:pw@127.0.0.1:{port}/x?token=abc", "s", timeout=2)
    with pytest.raises(DeliveryError) as caught:
        unreachable.send({"command": "disable"})
    assert "pw" not in str(caught.value) and "token" not in str(caught.value)
    assert f"127.0.0.1:{port}/x" in str(caught.value)
    connector.close()
    unreachable.close()
    with pytest.raises(ValueError):
        SignedWebhookConnector("ftp://bridge", "s")


# --------------------------------------------------------------------------------------------------
# notifications


def test_a_notification_reaches_risk_and_admin_users_and_the_traders_own_user_in_app(db):
    ids = _firm(db)
    row_id = _notify(db, trader_id=ids["trader"])
    report = Dispatcher(db, connectors={}).run_once(T0)
    assert report.delivered == 1 and report.notifications == 3
    users = ids["users"]
    with db() as s:
        rows = list(s.scalars(select(m.Notification).order_by(m.Notification.user_id)))
    assert {n.user_id for n in rows} == {users["admin"], users["risk"], users["alice"]}
    assert all(n.firm_id == FIRM and n.created_at == T0 and n.read_at is None for n in rows)
    assert rows[0].title == "Account A1 breached: daily loss"
    assert "fell below the daily floor 95,000.00" in rows[0].body and "Decision: #7" in rows[0].body
    assert _row(db, row_id).status == "sent"
    assert len(_audit(db, "notification.sent")) == 1
    # no e-mail or webhook configured: nothing else was queued
    with db() as s:
        assert s.scalar(select(func.count()).select_from(m.OutboxMessage)) == 1


def test_a_notification_without_a_trader_goes_to_staff_only(db):
    ids = _firm(db)
    _notify(db, trader_id=None, kind="warning")
    Dispatcher(db, connectors={}).run_once(T0)
    with db() as s:
        assert set(s.scalars(select(m.Notification.user_id))) == {ids["users"]["admin"], ids["users"]["risk"]}
        assert s.scalars(select(m.Notification.title)).first() == "Warning on account A1: daily loss"


def test_e_mail_reaches_the_trader_and_the_risk_desk_over_a_real_smtp_server(db, smtp_server):
    ids = _firm(db)
    _notify(db, trader_id=ids["trader"], key="decision:7:notify")
    notifier = EmailNotifier("127.0.0.1", smtp_server.port, "risk-bot@acme.example",
                             risk_address="risk@acme.example", password="smtp-password")
    assert "smtp-password" not in repr(notifier)
    report = Dispatcher(db, connectors={}, email=notifier).run_once(T0)
    assert report.delivered == 3  # the notify row, then one e-mail per recipient
    received = {tuple(env.rcpt_tos): env for env in smtp_server.envelopes}
    assert set(received) == {("alice@traders.example",), ("risk@acme.example",)}
    for (to,), envelope in received.items():
        assert envelope.mail_from == "risk-bot@acme.example"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert message["To"] == to and message["From"] == "risk-bot@acme.example"
        assert message["Subject"] == "[Acme Prop] Account A1 breached: daily loss"
        body = message.get_content()
        assert "equity 94,165.00 fell below the daily floor 95,000.00" in body
        assert "trading on it is disabled" in body
    with db() as s:
        emails = list(s.scalars(select(m.OutboxMessage).where(m.OutboxMessage.kind == "notify_email")))
        assert {e.dedupe_key for e in emails} == {"decision:7:notify:email:trader", "decision:7:notify:email:risk"}
        assert all(e.status == "sent" and e.sent_at == T0 for e in emails)
        assert audit.verify(s).ok
    assert len(_audit(db, "notification.email")) == 2
    # the risk desk hears about breaches, not warnings; the trader hears about both
    _notify(db, trader_id=ids["trader"], kind="warning", key="decision:8:notify")
    Dispatcher(db, connectors={}, email=notifier).run_once(T0)
    assert [tuple(e.rcpt_tos) for e in smtp_server.envelopes[2:]] == [("alice@traders.example",)]


def test_an_e_mail_that_fails_is_retried_without_repeating_the_in_app_notifications(db):
    ids = _firm(db)
    _notify(db, trader_id=ids["trader"])
    port = _free_port()  # nobody listens here
    down = EmailNotifier("127.0.0.1", port, "bot@acme.example", timeout=2)
    dispatcher = Dispatcher(db, connectors={}, email=down, base_delay_s=1)
    report = dispatcher.run_once(T0)
    assert report.delivered == 1 and report.failed == 1 and report.notifications == 3
    with db() as s:
        mail = s.scalars(select(m.OutboxMessage).where(m.OutboxMessage.kind == "notify_email")).one()
        assert mail.status == "pending" and f"SMTP server 127.0.0.1:{port}" in mail.last_error
        retry_at = mail.next_attempt_at
    dispatcher.run_once(retry_at)
    with db() as s:
        assert s.scalar(select(func.count()).select_from(m.Notification)) == 3


def test_the_firm_webhook_receives_a_signed_notification(db, receiver):
    ids = _firm(db)
    _notify(db, trader_id=ids["trader"], key="decision:7:notify")
    secret = "firm-hook-secret"
    webhook = WebhookNotifier(receiver.url, secret)
    Dispatcher(db, connectors={}, webhook=webhook).run_once(T0)
    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    assert _verify(secret, headers, body)
    document = json.loads(body)
    assert document["type"] == "notification" and document["kind"] == "breach" and document["account"] == "A1"
    assert document["firm"] == FIRM and document["idempotency_key"] == "decision:7:notify:webhook"
    assert document["title"] == "Account A1 breached: daily loss" and document["decision"] == 7
    assert len(_audit(db, "notification.webhook")) == 1
    webhook.close()


# --------------------------------------------------------------------------------------------------
# the evaluation worker's rows, concurrency, configuration


def test_everything_the_evaluation_worker_writes_is_delivered(db):
    from integration.test_evaluation_worker import _load
    from propcrm.services.evaluation import EvaluationWorker
    from propcrm.synth.firm import FirmSpec, generate

    _load(db, list(generate(FirmSpec(accounts=20, days=5, seed=3, equity_every_s=1800))))
    with db.begin() as s:
        s.add(m.User(firm_id="demo", email="risk@demo.example", password_hash="x", role="risk"))
    EvaluationWorker(db).run_until_idle()
    bridge = LoggingConnector()
    far = dt.datetime.now(UTC) + dt.timedelta(days=3650)
    report = Dispatcher(db, connectors={"*": bridge}).run_once(far)
    with db() as s:
        assert s.scalar(select(func.count()).select_from(m.OutboxMessage).where(m.OutboxMessage.status != "sent")) == 0
        breached = set(s.scalars(select(m.Account.external_id).where(m.Account.status == "breached")))
        notes = s.scalar(select(func.count()).select_from(m.Notification))
        decisions = s.scalar(select(func.count()).select_from(m.Decision))
        assert audit.verify(s).ok
    assert breached and {c["account"] for c in bridge.sent if c["command"] == "disable"} == breached
    assert any(c["command"] == "create_account" for c in bridge.sent)
    assert notes == decisions == report.notifications  # one risk user: one in-app note per decision
    assert len({c["idempotency_key"] for c in bridge.sent}) == len(bridge.sent)


def test_two_dispatchers_running_at_once_never_deliver_a_row_twice(db):
    _firm(db, accounts=tuple(f"A{i}" for i in range(30)))
    for i in range(240):
        _command(db, "disable" if i % 2 else "enable", account=f"A{i % 30}", key=f"k{i}")

    class Recording:
        def __init__(self):
            self.lock = threading.Lock()
            self.keys: list[str] = []
            self.order: dict[str, list[str]] = {}

        def send(self, command):
            time.sleep(0.001)  # let the dispatchers overlap
            with self.lock:
                self.keys.append(command["idempotency_key"])
                self.order.setdefault(command["account"], []).append(command["idempotency_key"])

    bridge = Recording()
    errors: list[BaseException] = []
    delivered = [0, 0]
    start = threading.Barrier(2)

    def run(me: int):
        dispatcher = Dispatcher(db, connectors={"mt5": bridge}, batch=7)
        try:
            start.wait()
            for _ in range(200):
                report = dispatcher.run_once(T0)
                delivered[me] += report.delivered
                if report.claimed == 0:
                    break
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert all(delivered) and sum(delivered) == 240  # both worked, side by side
    assert sorted(bridge.keys) == sorted(f"k{i}" for i in range(240))  # each exactly once
    for i in range(30):  # and in the order they were written, per account
        assert bridge.order[f"A{i}"] == [f"k{j}" for j in range(i, 240, 30)]
    with db() as s:
        assert set(s.scalars(select(m.OutboxMessage.status))) == {"sent"}
        assert set(s.scalars(select(m.OutboxMessage.attempts))) == {1}
        assert audit.verify(s).ok


def test_a_claim_taken_over_after_its_lease_ran_out_is_not_recorded_twice(db):
    _firm(db)
    row_id = _command(db, "disable")
    slow = Dispatcher(db, connectors={"mt5": LoggingConnector()}, lease_s=30)
    claims = slow._claim(T0, 10)  # the slow dispatcher claims, then stalls past its lease
    fast_bridge = LoggingConnector()
    Dispatcher(db, connectors={"mt5": fast_bridge}).run_once(T0 + dt.timedelta(seconds=31))
    assert len(fast_bridge.sent) == 1 and _row(db, row_id).attempts == 2
    from propcrm.services.dispatch import DispatchReport

    report = DispatchReport()
    slow._deliver(claims[0], T0 + dt.timedelta(seconds=40), report)
    assert report.lost == 1 and report.delivered == 0
    assert len(_audit(db, "platform.disable")) == 1


def test_configuration_from_the_environment(db):
    assert isinstance(connectors_from_env({})["*"], LoggingConnector)
    with pytest.raises(DispatchConfigError, match="SECRET"):
        connectors_from_env({"PROPCRM_PLATFORM_BRIDGE_URL": "https://bridge.example/commands"})
    with pytest.raises(DispatchConfigError, match="FIRM_WEBHOOK_SECRET"):
        build_dispatcher(db, {"PROPCRM_FIRM_WEBHOOK_URL": "https://firm.example/hook"})
    env = {
        "PROPCRM_PLATFORM_BRIDGE_URL": "https://bridge.example/commands",
        "PROPCRM_PLATFORM_BRIDGE_SECRET": "bridge-secret",
        "PROPCRM_SMTP_HOST": "smtp.example", "PROPCRM_SMTP_STARTTLS": "true",
        "PROPCRM_SMTP_FROM": "risk@firm.example", "PROPCRM_SMTP_PASSWORD": "mail-secret",
        "PROPCRM_RISK_EMAIL": "desk@firm.example",
        "PROPCRM_FIRM_WEBHOOK_URL": "https://firm.example/hook?key=qs-secret",
        "PROPCRM_FIRM_WEBHOOK_SECRET": "hook-secret",
    }
    dispatcher = build_dispatcher(db, env)
    assert isinstance(dispatcher.connectors["*"], SignedWebhookConnector)
    assert dispatcher.email.port == 587 and dispatcher.email.starttls and dispatcher.email.sender == "risk@firm.example"
    assert dispatcher.email.risk_address == "desk@firm.example"
    setup = describe_setup(dispatcher)
    assert "bridge.example/commands" in setup and "smtp.example:587" in setup
    for secret in ("bridge-secret", "mail-secret", "hook-secret", "qs-secret"):
        assert secret not in setup and secret not in repr(dispatcher.connectors) + repr(dispatcher.email)
    dispatcher.close()


def test_propcrm_dispatch_once_delivers_what_is_due(db_url, db, monkeypatch):
    from propcrm.cli import app

    _firm(db)
    _command(db, "disable", at=dt.datetime.now(UTC) - dt.timedelta(seconds=5))
    for name in ("PROPCRM_PLATFORM_BRIDGE_URL", "PROPCRM_PLATFORM_BRIDGE_SECRET", "PROPCRM_SMTP_HOST",
                 "PROPCRM_FIRM_WEBHOOK_URL", "PROPCRM_FIRM_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["dispatch", "--once", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert "1 delivered" in result.output
    with db() as s:
        assert s.scalars(select(m.OutboxMessage.status)).one() == "sent"
    monkeypatch.setenv("PROPCRM_PLATFORM_BRIDGE_URL", "https://bridge.example/x")
    result = CliRunner().invoke(app, ["dispatch", "--once", "--database-url", db_url])
    assert result.exit_code == 2 and "PROPCRM_PLATFORM_BRIDGE_SECRET" in result.output


# --------------------------------------------------------------------------------------------------
# issue 20: breach → platform refusing orders without waits


class RecordingBridge(LoggingConnector):
    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.order = order

    def send(self, command) -> None:
        super().send(command)
        self.order.append(f"command:{command['command']}")


def test_a_platform_command_is_claimed_before_older_notifications(db):
    """A breach's disable must not wait behind a batch of e-mails: a pass claims due commands first."""
    ids = _firm(db)
    for n in range(3):
        _notify(db, trader_id=ids["trader"], key=f"decision:{n}:notify")
    _command(db, "disable", key="decision:9:platform_command")
    order: list[str] = []
    dispatcher = Dispatcher(db, connectors={"mt5": RecordingBridge(order)}, batch=1, max_rows=1)
    report = dispatcher.run_once(T0)
    assert report.claimed == 1 and order == ["command:disable"]
    dispatcher = Dispatcher(db, connectors={"mt5": RecordingBridge(order)})
    dispatcher.run_once(T0)
    assert order == ["command:disable"]  # the notifications were fanned out after it, in-app
    with db() as s:
        pending = s.scalar(select(func.count()).select_from(m.OutboxMessage).where(m.OutboxMessage.status == "pending"))
    assert pending == 0


def test_a_command_committed_during_a_batch_of_notifications_goes_before_the_rest_of_the_batch(db):
    """A breach decided while a pass fans out a batch of notifications (under load each is a transaction
    of its own that waits for a core): its disable must not wait for the batch's end."""
    ids = _firm(db)
    for n in range(5):
        _notify(db, trader_id=ids["trader"], key=f"decision:{n}:notify")
    order: list[str] = []
    dispatcher = Dispatcher(db, connectors={"mt5": RecordingBridge(order)})
    fan_out = dispatcher._fan_out

    def recorded(claim, now, report):
        order.append(f"notify:{claim.dedupe_key}")
        fan_out(claim, now, report)
        if len(order) == 2:  # a worker commits a breach meanwhile
            _command(db, "disable", key="decision:9:platform_command")

    dispatcher._fan_out = recorded
    report = dispatcher.run_once(T0)
    assert order[:3] == ["notify:decision:0:notify", "notify:decision:1:notify", "command:disable"], order
    assert len(order) == 6 and report.claimed == 6


def test_committed_outbox_rows_wake_the_dispatcher_and_a_rollback_does_not(db):
    from sqlalchemy import insert

    from propcrm.services.wakeup import OUTBOX

    _firm(db)
    before = OUTBOX.generation
    with db() as s:
        with s.begin():
            s.add(m.OutboxMessage(firm_id=FIRM, kind="notify", payload={}, dedupe_key="x:1", next_attempt_at=T0,
                                  created_at=T0))
            s.flush()
            s.rollback()
    assert OUTBOX.generation == before
    _command(db, "disable", key="x:2")  # session.add
    assert OUTBOX.generation == before + 1
    with db.begin() as s:  # an insert statement, as the evaluation worker's group commit writes them
        s.execute(insert(m.OutboxMessage.__table__), [{"firm_id": FIRM, "kind": "notify", "payload": {},
                                                        "dedupe_key": "x:3", "status": "pending", "attempts": 0,
                                                        "next_attempt_at": T0, "created_at": T0}])
    assert OUTBOX.generation == before + 2
    with db.begin() as s:  # a commit without outbox rows wakes nobody
        s.add(m.Trader(firm_id=FIRM, name="Carol", email="carol@traders.example"))
    assert OUTBOX.generation == before + 2


def test_the_service_dispatcher_sends_a_committed_command_without_waiting_for_its_fallback_poll(db):
    from propcrm.services.dispatch import dispatch_loop
    from propcrm.services.wakeup import OUTBOX

    _firm(db)
    bridge = LoggingConnector()
    stop = threading.Event()
    loop = threading.Thread(target=dispatch_loop, args=(Dispatcher(db, connectors={"mt5": bridge}), stop),
                            kwargs={"fallback": 3600.0}, daemon=True)
    loop.start()
    try:
        time.sleep(0.3)  # the loop has found nothing and waits (for an hour, unless woken)
        _command(db, "disable", key="decision:5:platform_command", at=dt.datetime.now(UTC) - dt.timedelta(seconds=1))
        for _ in range(200):
            if bridge.sent:
                break
            time.sleep(0.05)
        assert [c["command"] for c in bridge.sent] == ["disable"], "the dispatcher was not woken by the commit"
    finally:
        stop.set()
        OUTBOX.notify()
        loop.join(timeout=30)
    assert not loop.is_alive()
