"""Firms as tenants (issue 16), on both backends: the operator onboards firms and sets any firm's settings,
a firm admin only their own; settings fall back to the environment's; secrets are sealed and never answered
back; the dispatcher sends each firm's notifications through that firm's settings; staff TOTP secrets are
sealed (and migration 0017 seals the ones kept before)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyotp
import pytest
from sqlalchemy import create_engine, select, text

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_tenants import FirmSettings
from propcrm.adapters.notify import EmailNotifier, WebhookNotifier
from propcrm.adapters.platforms.secrets import SecretBox
from propcrm.adapters.settings import Delivery
from propcrm.services import firms, totp, users
from propcrm.services.dispatch import Dispatcher
from support.routes_firms import seed_operator
from support.staff import PASSWORD

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 10, tzinfo=UTC)


@pytest.fixture
def world(world):
    """The shared world (conftest.py), plus the installation's operator (its own firm ``ops``)."""
    return seed_operator(world)


# --------------------------------------------------------------------------------------------------
# role boundaries


def test_the_operator_onboards_a_firm_whose_admin_logs_in_with_the_password_shown_once(world):
    c, op = world.client, world.headers("operator")
    answer = c.post("/api/v1/operator/firms", headers=op, json={
        "id": "nova", "name": "Nova Funding", "admin_email": "boss@nova.example",
        "settings": {"product_name": "Nova Desk", "accent_colour": "#AA3300", "risk_email": "risk@nova.example"}})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    password = body["admin_password"]
    assert body["admin_email"] == "boss@nova.example" and len(password) >= 12
    assert body["firm"]["product_name"] == "Nova Desk" and body["firm"]["accent_colour"] == "#aa3300"
    login = c.post("/api/v1/login", json={"firm": "nova", "email": "boss@nova.example", "password": password})
    assert login.status_code == 200 and login.json()["user"]["role"] == "admin"
    # the password is in no later answer, and only its hash is kept
    listed = c.get("/api/v1/operator/firms", headers=op)
    assert password not in listed.text and "nova" in {f["id"] for f in listed.json()}
    with world.sessions() as s:
        admin = s.scalar(select(m.User).where(m.User.firm_id == "nova"))
        assert password not in admin.password_hash
        assert [e.action for e in s.scalars(select(m.AuditEntry).where(m.AuditEntry.firm_id == "nova"))][:1] == ["firm.created"]
    # the same id again is a conflict; a bad id or colour is named and nothing is half made
    again = c.post("/api/v1/operator/firms", headers=op, json={"id": "nova", "name": "X", "admin_email": "x@x.example"})
    assert again.status_code == 409
    bad = c.post("/api/v1/operator/firms", headers=op, json={"id": "Bad Id!", "name": "X", "admin_email": "x@x.example"})
    assert bad.status_code == 422 and "firm" in bad.json()["error"]
    colour = c.post("/api/v1/operator/firms", headers=op, json={
        "id": "half", "name": "Half", "admin_email": "a@half.example", "settings": {"accent_colour": "red"}})
    assert colour.status_code == 422 and "accent_colour" in colour.json()["error"]
    with world.sessions() as s:
        assert s.get(m.Firm, "half") is None and s.scalar(select(m.User).where(m.User.firm_id == "half")) is None


def test_a_firm_admin_sees_and_changes_only_their_own_firm(world):
    c = world.client
    fb = world.headers("fb:admin")
    assert c.put("/api/v1/firm/settings", headers=fb, json={"product_name": "B Desk"}).json()["product_name"] == "B Desk"
    # their own settings say firm fb; firm fa's are untouched and out of reach
    assert c.get("/api/v1/firm/settings", headers=fb).json()["id"] == "fb"
    assert c.get("/api/v1/firm/settings", headers=world.headers("admin")).json()["product_name"] is None
    for method, url in (("GET", "/api/v1/operator/firms"), ("GET", "/api/v1/operator/firms/fa/settings"),
                        ("PUT", "/api/v1/operator/firms/fa/settings")):
        answer = c.request(method, url, headers=fb, json={"product_name": "hijacked"} if method == "PUT" else None)
        assert answer.status_code == 403, (method, url)
    with world.sessions() as s:
        assert s.get(FirmSettings, "fa") is None
    # an admin cannot make an operator (nor can anyone but the command line)
    made = c.post("/api/v1/users", headers=fb, json={"email": "op@fb.example", "password": PASSWORD, "role": "operator"})
    assert made.status_code == 422
    # the operator changes any firm's settings, and an unknown firm is 404
    op = world.headers("operator")
    changed = c.put("/api/v1/operator/firms/fa/settings", headers=op, json={"name": "Firm A Ltd"})
    assert changed.status_code == 200 and changed.json()["name"] == "Firm A Ltd"
    assert c.get("/api/v1/operator/firms/nobody/settings", headers=op).status_code == 404
    # the operator sees firms, not a firm's business
    assert c.get("/api/v1/accounts", headers=op).status_code == 403
    # and an admin of the operator's own firm cannot take the operator over
    with world.sessions.begin() as s:
        ops_admin = users.create_user(s, firm_id="ops", email="admin@ops.example", password=PASSWORD, role="admin")
        ops_token, _ = users.issue_token(s, user=ops_admin)
    operator_id = world.user_ids["ops:operator"]
    for action in ("disable", "password"):
        taken = c.post(f"/api/v1/users/{operator_id}/{action}", headers={"Authorization": f"Bearer {ops_token}"}, json={})
        assert taken.status_code == 409 and "operator" in taken.json()["error"], action


def test_the_web_pages_follow_the_same_boundaries(world):
    c = world.client
    for who, path, status in (("operator", "/operator/firms", 200), ("operator", "/operator/firms/fb", 200),
                              ("admin", "/office/firm", 200), ("admin", "/operator/firms", 403),
                              ("admin", "/operator/firms/fb", 403), ("risk", "/office/firm", 403),
                              ("operator", "/office/firm", 403), ("operator", "/office/accounts", 403)):
        c.cookies.clear()
        c.cookies.set("propcrm_session", world.tokens["ops:operator" if who == "operator" else f"fa:{who}"])
        assert c.get(path, follow_redirects=False).status_code == status, (who, path)
    # a firm's pages carry its branding: product name in the header and titles, its colour in /brand.css
    with world.sessions.begin() as s:
        firms.update_settings(s, firm_id="fa", changes={"product_name": "Alpha <Desk>", "accent_colour": "#123456"},
                              actor="test")
    c.cookies.set("propcrm_session", world.tokens["fa:risk"])
    world.client.app.state.brands = {}
    page = c.get("/office/accounts")
    assert "<title>Accounts · Alpha &lt;Desk&gt;</title>" in page.text and "Alpha <Desk>" not in page.text
    assert "--accent: #123456" in c.get("/brand.css").text and c.get("/brand/logo").status_code == 404
    c.cookies.set("propcrm_session", world.tokens["fb:admin"])
    assert "· propcrm</title>" in c.get("/office/accounts").text and "#1f5eff" in c.get("/brand.css").text
    c.cookies.clear()


# --------------------------------------------------------------------------------------------------
# settings: precedence and secrets


ENV = {"PROPCRM_SMTP_HOST": "smtp.default.example", "PROPCRM_SMTP_FROM": "bot@default.example",
       "PROPCRM_RISK_EMAIL": "risk@default.example", "PROPCRM_FIRM_WEBHOOK_URL": "https://hooks.default.example/x"}


def test_settings_a_firm_leaves_empty_come_from_the_environment(world):
    with world.sessions.begin() as s:
        firms.update_settings(s, firm_id="fa", changes={"risk_email": "Desk@FA.example", "smtp_port": "587"},
                              actor="test")
        described = firms.describe(s, firm_id="fa", defaults=Delivery.from_env(ENV))
        effective = described["effective"]
        assert effective["risk_email"] == {"value": "desk@fa.example", "source": "firm"}
        assert effective["smtp_port"] == {"value": 587, "source": "firm"}
        assert effective["smtp_host"] == {"value": "smtp.default.example", "source": "default"}
        assert effective["smtp_sender"] == {"value": "bot@default.example", "source": "default"}
        assert effective["product_name"] == {"value": "propcrm", "source": "default"}
        # clearing a field gives the default back
        firms.update_settings(s, firm_id="fa", changes={"risk_email": ""}, actor="test")
        assert firms.describe(s, firm_id="fa", defaults=Delivery.from_env(ENV))["effective"]["risk_email"] == {
            "value": "risk@default.example", "source": "default"}
        # a firm without any row: every value is the default
        assert {v["source"] for v in firms.describe(s, firm_id="fb", defaults=Delivery.from_env(ENV))["effective"].values()} == {"default"}


def test_the_pages_api_and_cli_show_the_defaults_of_the_installed_settings_not_the_environment_now(
        world, db_url, monkeypatch):
    """The defaults are read once, where the process starts (adapters/settings.py): an environment changed
    later (or a library caller's) does not leak into what the pages and the API show."""
    import dataclasses

    from typer.testing import CliRunner

    from propcrm.cli import app as cli

    app = world.client.app
    app.state.settings = dataclasses.replace(app.state.settings, delivery=Delivery.from_env(ENV))
    monkeypatch.setenv("PROPCRM_SMTP_HOST", "smtp.later.example")
    c = world.client
    effective = c.get("/api/v1/firm/settings", headers=world.headers("admin")).json()["effective"]
    assert effective["smtp_host"] == {"value": "smtp.default.example", "source": "default"}
    assert effective["risk_email"] == {"value": "risk@default.example", "source": "default"}
    c.cookies.set("propcrm_session", world.tokens["fa:admin"])
    page = c.get("/office/firm").text
    assert "default: smtp.default.example" in page and "smtp.later.example" not in page
    # the command line is an entry point: it reads the environment once, at its start
    shown = CliRunner().invoke(cli, ["firms", "settings", "--firm", "fa", "--database-url", db_url])
    assert shown.exit_code == 0, shown.output
    assert "smtp.later.example" in shown.output
    monkeypatch.setenv("PROPCRM_SMTP_PORT", "smtp")
    refused = CliRunner().invoke(cli, ["firms", "settings", "--firm", "fa", "--database-url", db_url])
    assert refused.exit_code == 2 and "PROPCRM_SMTP_PORT" in refused.output


def test_channels_take_the_firms_own_settings_over_the_process_defaults(world):
    default_email = EmailNotifier("smtp.default.example", 25, "bot@default.example", risk_address="risk@default.example",
                                  password="default-smtp-pass")
    default_hook = WebhookNotifier("https://hooks.default.example/x", "default-secret")
    with world.sessions.begin() as s:
        assert firms.channels_for(None, email=default_email, webhook=default_hook) == (default_email, default_hook)
        firms.update_settings(s, firm_id="fa", changes={"smtp_sender": "desk@fa.example", "risk_email": "r@fa.example"},
                              actor="test")
        email, hook = firms.channels_for(s.get(FirmSettings, "fa"), email=default_email, webhook=default_hook)
        assert (email.host, email.sender, email.risk_address) == ("smtp.default.example", "desk@fa.example", "r@fa.example")
        assert hook is default_hook and default_email.sender == "bot@default.example"  # the default is not changed
        firms.update_settings(s, firm_id="fb", changes={"smtp_host": "mail.fb.example", "smtp_port": "465",
                                                        "smtp_user": "fb", "smtp_password": "fb-smtp-pass",
                                                        "webhook_url": "https://fb.example/hook",
                                                        "webhook_secret": "fb-secret"}, actor="test")
        email, hook = firms.channels_for(s.get(FirmSettings, "fb"), email=default_email, webhook=default_hook)
        assert (email.host, email.port, email.use_ssl, email.username) == ("mail.fb.example", 465, True, "fb")
        assert email.risk_address == "risk@default.example" and hook.url == "https://fb.example/hook"
        assert "fb-smtp-pass" not in repr(email) and "fb-secret" not in repr(hook)
    # the dispatcher reads a firm's settings per message: a change applies without a restart
    dispatcher = Dispatcher(world.sessions, connectors={}, email=default_email, webhook=default_hook)
    with world.sessions() as s:
        assert dispatcher.channels(s, "fa")[0].risk_address == "r@fa.example"
    with world.sessions.begin() as s:
        firms.update_settings(s, firm_id="fa", changes={"risk_email": ""}, actor="test")
    with world.sessions() as s:
        assert dispatcher.channels(s, "fa")[0].risk_address == "risk@default.example"
        assert dispatcher.channels(s, "fb")[1].url == "https://fb.example/hook"
    dispatcher.close()
    for bad in ("http://[", "ftp://fb.example/x", "https://", "not a url"):
        with world.sessions.begin() as s, pytest.raises(firms.Invalid, match="webhook_url"):
            firms.update_settings(s, firm_id="fa", changes={"webhook_url": bad}, actor="test")


def test_secrets_are_sealed_write_only_and_never_audited(world):
    c, fb = world.client, world.headers("fb:admin")
    answer = c.put("/api/v1/firm/settings", headers=fb, json={
        "webhook_url": "https://fb.example/hook", "webhook_secret": "whsec-very-secret-1", "smtp_password": "smtp-pw-2"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["webhook_secret_set"] and body["smtp_password_set"]
    for text_ in (answer.text, c.get("/api/v1/firm/settings", headers=fb).text,
                  c.get("/api/v1/operator/firms/fb/settings", headers=world.headers("operator")).text):
        assert "whsec-very-secret-1" not in text_ and "smtp-pw-2" not in text_
    with world.sessions() as s:
        row = s.get(FirmSettings, "fb")
        assert b"whsec-very-secret-1" not in row.sealed and b"smtp-pw-2" not in row.sealed
        assert SecretBox().open(row.sealed)["webhook_secret"].reveal() == "whsec-very-secret-1"
        entries = list(s.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "firm.settings_changed")))
        logged = json.dumps([[e.before, e.after] for e in entries])
        assert "whsec" not in logged and "smtp-pw" not in logged and '"webhook_secret": "set"' in logged
    # the settings page shows that one is set, never what it is; a URL with a password in it is refused
    c.cookies.set("propcrm_session", world.tokens["fb:admin"])
    page = c.get("/office/firm")
    c.cookies.clear()
    assert page.status_code == 200 and "whsec-very-secret-1" not in page.text and "a secret is set" in page.text
    refused = c.put("/api/v1/firm/settings", headers=fb, json={"webhook_url": "https://u:p@fb.example/hook"})
    assert refused.status_code == 422 and "webhook_url" in refused.json()["error"]
    # an empty secret clears it (with the URL: a firm webhook URL without its secret is refused)
    cleared = c.put("/api/v1/firm/settings", headers=fb, json={"webhook_url": "", "webhook_secret": ""}).json()
    assert not cleared["webhook_secret_set"] and cleared["smtp_password_set"]


# --------------------------------------------------------------------------------------------------
# the dispatcher, per firm


class _Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _signed_by(secret: str, headers: dict[str, str], body: bytes) -> bool:
    ts = headers["x-propcrm-timestamp"]
    expected = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-propcrm-signature"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_each_firms_notifications_go_through_its_own_settings(world):
    from aiosmtpd.controller import Controller

    class Inbox:
        envelopes: list = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
            self.envelopes.append(envelope)
            return "250 accepted"

    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    default_hook, own_hook = _Receiver(), _Receiver()
    try:
        with world.sessions.begin() as s:
            firms.update_settings(s, firm_id="fb", changes={
                "name": "Bee Funding", "smtp_sender": "desk@bee.example", "risk_email": "risk@bee.example",
                "webhook_url": own_hook.url, "webhook_secret": "bee-secret"}, actor="test")
            for firm, trader in (("fa", "t1"), ("fb", "tb")):
                s.add(m.OutboxMessage(firm_id=firm, kind="notify", dedupe_key=f"decision:{firm}:notify",
                                      payload={"account": "A1" if firm == "fa" else "B1", "kind": "breach",
                                               "rule": "daily_loss", "message": "equity fell below the floor",
                                               "decision": 1, "trader_id": world.traders[trader]},
                                      status="pending", attempts=0, next_attempt_at=T0, created_at=T0))
        dispatcher = Dispatcher(world.sessions, connectors={},
                                email=EmailNotifier("127.0.0.1", smtp.port, "bot@default.example",
                                                    risk_address="risk@default.example"),
                                webhook=WebhookNotifier(default_hook.url, "default-secret"))
        report = dispatcher.run_once(T0)
        dispatcher.close()
        assert report.dead == 0 and report.failed == 0, report
        sent = {(e.mail_from, tuple(e.rcpt_tos)) for e in inbox.envelopes}
        assert sent == {("bot@default.example", ("t1@traders.example",)), ("bot@default.example", ("risk@default.example",)),
                        ("desk@bee.example", ("tb@traders.example",)), ("desk@bee.example", ("risk@bee.example",))}
        bee_subjects = {e.content.decode().split("Subject: ", 1)[1].split("\r\n", 1)[0]
                        for e in inbox.envelopes if e.mail_from == "desk@bee.example"}
        assert all(subject.startswith("[Bee Funding]") for subject in bee_subjects)
        assert [json.loads(b)["firm"] for _, b in default_hook.requests] == ["fa"]
        assert [json.loads(b)["firm"] for _, b in own_hook.requests] == ["fb"]
        assert _signed_by("default-secret", *default_hook.requests[0]) and _signed_by("bee-secret", *own_hook.requests[0])
    finally:
        smtp.stop()
        default_hook.close()
        own_hook.close()


# --------------------------------------------------------------------------------------------------
# staff TOTP secrets at rest


def test_a_staff_totp_secret_is_kept_sealed(world):
    with world.sessions.begin() as s:
        secret, uri = totp.start_enrolment(s, user_id=world.user_ids["fa:risk"], firm_id="fa")
    with world.sessions() as s:
        stored = s.get(m.User, world.user_ids["fa:risk"]).totp_secret
        assert secret not in stored and secret in uri
        assert totp.secret_of(s.get(m.User, world.user_ids["fa:risk"])) == secret
    with world.sessions.begin() as s:
        codes = totp.confirm_enrolment(s, user_id=world.user_ids["fa:risk"], firm_id="fa",
                                       code=pyotp.TOTP(secret).now(), actor="test")
    assert len(codes) == 10


def test_migration_0017_seals_the_totp_secrets_kept_before(db_url, tmp_path, request):
    from alembic import command

    from propcrm.adapters.db.session import alembic_config, migrate

    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        base = db_url.split("?")[0]
        admin = create_engine(base)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))

        def drop() -> None:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

        request.addfinalizer(drop)
        url = f"{base}?options=-csearch_path%3D{schema}"
    command.upgrade(alembic_config(url), "0016")
    plain = pyotp.random_base32()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO firms (id, name, created_at) VALUES ('f', 'F', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO users (id, firm_id, email, password_hash, role, active, created_at, totp_secret) "
                          "VALUES (1, 'f', 'risk@f.example', 'x', 'risk', true, CURRENT_TIMESTAMP, :secret)"),
                     {"secret": plain})
        conn.execute(text("INSERT INTO users (id, firm_id, email, password_hash, role, active, created_at) "
                          "VALUES (2, 'f', 'none@f.example', 'x', 'risk', true, CURRENT_TIMESTAMP)"))
    migrate(url)
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT id, totp_secret FROM users ORDER BY id")).all())
    assert rows[2] is None and rows[1] != plain and plain not in rows[1]
    assert SecretBox().open_text(rows[1]).reveal() == plain
    command.downgrade(alembic_config(url), "0016")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT totp_secret FROM users WHERE id = 1")).scalar() == plain
    engine.dispose()


# --------------------------------------------------------------------------------------------------
# the command line


def test_firms_create_list_and_settings_from_the_command_line(db_url):
    from typer.testing import CliRunner

    from propcrm.cli import app

    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [*args, "--database-url", db_url])

    made = run("firms", "create", "--firm", "orbit", "--name", "Orbit Capital", "--admin-email", "boss@orbit.example",
               "--set", "product_name=Orbit Desk", "--set", "webhook_secret=orbit-hook-secret")
    assert made.exit_code == 0, made.output
    password = made.stdout.split("shown this once: ", 1)[1].strip()
    assert len(password) >= 12
    listed = run("firms", "list")
    assert listed.exit_code == 0 and "orbit" in listed.stdout and "Orbit Desk" in listed.stdout
    shown = run("firms", "settings", "--firm", "orbit", "--set", "risk_email=risk@orbit.example")
    assert shown.exit_code == 0, shown.output
    assert "risk@orbit.example  (firm)" in shown.stdout and "webhook_secret" in shown.stdout
    assert "orbit-hook-secret" not in shown.stdout and "set" in shown.stdout
    refused = run("firms", "settings", "--firm", "orbit", "--set", "accent_colour=blue")
    assert refused.exit_code == 2 and "accent_colour" in refused.output
    assert run("firms", "create", "--firm", "orbit", "--name", "Again", "--admin-email", "x@orbit.example").exit_code == 2
    suspended = run("firms", "suspend", "--firm", "orbit", "--reason", "unpaid invoice")
    assert suspended.exit_code == 0 and "firm orbit suspended: unpaid invoice" in suspended.stdout, suspended.output
    assert "unpaid" in run("firms", "list").stdout  # the table wraps at 80 columns
    twice = run("firms", "suspend", "--firm", "orbit", "--reason", "again")
    assert twice.exit_code == 2 and "suspended already" in twice.output
    assert run("firms", "resume", "--firm", "orbit", "--reason", "").exit_code == 2  # a reason is required
    assert run("firms", "resume", "--firm", "orbit", "--reason", "paid").exit_code == 0
    assert "unpaid" not in run("firms", "list").stdout
    engine = create_engine(db_url)
    from sqlalchemy.orm import Session

    with Session(engine) as s:
        admin = s.scalar(select(m.User).where(m.User.firm_id == "orbit"))
        assert admin.role == "admin" and users.verify_password(admin.password_hash, password)
    engine.dispose()
