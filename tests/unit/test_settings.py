"""The configuration is read once (adapters/settings.py) and handed to the parts that need it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from propcrm.adapters.settings import Settings, SettingsError


def test_the_defaults_of_an_empty_environment():
    settings = Settings.from_env({})
    assert settings.database_url_setting is None and settings.data_dir == Path("data")
    assert settings.nats_url is None and not settings.bus_mode
    assert not settings.secure_cookies and settings.metrics_token is None and settings.documents_dir is None
    assert settings.max_event_ahead == dt.timedelta(minutes=5)
    assert settings.analysis_interval == 60.0 and settings.snapshot_interval == 2.0 and settings.push_consumer


def test_every_variable_is_read_into_its_typed_field(tmp_path):
    settings = Settings.from_env({
        "PROPCRM_DATABASE_URL": "postgresql+psycopg://db/x", "PROPCRM_DATA_DIR": str(tmp_path),
        "PROPCRM_NATS_URL": "nats://bus:4222", "PROPCRM_SECURE_COOKIES": "yes", "PROPCRM_METRICS_TOKEN": "t0k",
        "PROPCRM_DOCUMENTS_DIR": f" {tmp_path / 'docs'} ", "PROPCRM_MAX_EVENT_AHEAD_MINUTES": "0.5",
        "PROPCRM_ANALYSIS_INTERVAL": "0", "PROPCRM_SNAPSHOT_INTERVAL": "7.5", "PROPCRM_CONSUMER": "pull",
    })
    assert settings.database_url() == "postgresql+psycopg://db/x" and settings.bus_mode
    assert settings.secure_cookies and settings.metrics_token == "t0k"
    assert settings.documents_dir == tmp_path / "docs"
    assert settings.max_event_ahead == dt.timedelta(seconds=30)
    assert settings.analysis_interval == 0.0 and settings.snapshot_interval == 7.5 and not settings.push_consumer


def test_the_embedded_database_lives_in_the_data_directory(tmp_path):
    settings = Settings.from_env({"PROPCRM_DATA_DIR": str(tmp_path / "d")})
    assert settings.database_url() == f"sqlite:///{(tmp_path / 'd').resolve() / 'propcrm.db'}"
    assert (tmp_path / "d").is_dir()


@pytest.mark.parametrize(("name", "value"), [
    ("PROPCRM_MAX_EVENT_AHEAD_MINUTES", "lots"), ("PROPCRM_MAX_EVENT_AHEAD_MINUTES", "1441"),
    ("PROPCRM_MAX_EVENT_AHEAD_MINUTES", "-1"), ("PROPCRM_ANALYSIS_INTERVAL", "soon"),
    ("PROPCRM_SNAPSHOT_INTERVAL", "nan"), ("PROPCRM_VECTOR_TICKS", "maybe"),
])
def test_a_bad_value_is_refused_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_the_partition_workers_screen_ticks_unless_switched_off():
    assert Settings.from_env({}).vector_ticks is True
    assert Settings.from_env({"PROPCRM_VECTOR_TICKS": "0"}).vector_ticks is False
    assert Settings.from_env({"PROPCRM_VECTOR_TICKS": "on"}).vector_ticks is True


def test_the_environment_is_read_when_the_settings_are_made_not_later(monkeypatch):
    monkeypatch.setenv("PROPCRM_METRICS_TOKEN", "first")
    settings = Settings.from_env()
    monkeypatch.setenv("PROPCRM_METRICS_TOKEN", "second")
    assert settings.metrics_token == "first" and settings.env["PROPCRM_METRICS_TOKEN"] == "first"


def test_the_app_takes_its_settings_and_reads_no_variable_itself(tmp_path, monkeypatch):
    from propcrm.api import create_app

    monkeypatch.setenv("PROPCRM_MAX_EVENT_AHEAD_MINUTES", "not a number")  # would stop a start from the environment
    monkeypatch.setenv("PROPCRM_DOCUMENTS_DIR", str(tmp_path / "ignored"))
    settings = Settings.from_env({"PROPCRM_MAX_EVENT_AHEAD_MINUTES": "2", "PROPCRM_DOCUMENTS_DIR": str(tmp_path / "docs")})
    app = create_app(f"sqlite:///{tmp_path / 'x.db'}", settings=settings)
    try:
        assert app.state.settings is settings and app.state.max_ahead == dt.timedelta(minutes=2)
        assert app.state.documents.root == tmp_path / "docs"
    finally:
        app.state.engine.dispose()


def test_the_secret_and_audit_keys_are_read_and_never_shown(tmp_path):
    from propcrm.adapters.platforms.secrets import new_key

    key, audit_key = new_key(), "a" * 40
    settings = Settings.from_env({
        "PROPCRM_SECRET_KEY": f" {key} ", "PROPCRM_AUDIT_KEY": audit_key, "PROPCRM_AUDIT_KEY_FILE": str(tmp_path / "k"),
        "PROPCRM_AUDIT_ANCHOR_DIR": str(tmp_path / "anchors"), "PROPCRM_AUDIT_ANCHOR_INTERVAL": "5",
    })
    assert settings.secret_key == key and settings.audit_key == audit_key
    assert settings.audit_key_file == tmp_path / "k" and settings.audit_anchor_dir == tmp_path / "anchors"
    assert settings.audit_anchor_interval == 5.0
    assert key not in repr(settings) and audit_key not in repr(settings)
    empty = Settings.from_env({})
    assert empty.secret_key is None and empty.audit_key is None and empty.audit_key_file is None
    assert empty.audit_anchor_dir is None and empty.audit_anchor_interval == 60.0


@pytest.mark.parametrize("value", ["0", "86401", "often"])
def test_a_bad_anchor_interval_stops_the_start(value):
    with pytest.raises(SettingsError, match="PROPCRM_AUDIT_ANCHOR_INTERVAL"):
        Settings.from_env({"PROPCRM_AUDIT_ANCHOR_INTERVAL": value})


def test_the_process_settings_are_read_once_and_an_installed_set_wins(monkeypatch):
    from propcrm.adapters import settings as process

    monkeypatch.setenv("PROPCRM_METRICS_TOKEN", "first")
    first = process.current()
    monkeypatch.setenv("PROPCRM_METRICS_TOKEN", "second")
    assert process.current() is first and first.metrics_token == "first"  # not read again at each use
    mine = Settings.from_env({"PROPCRM_METRICS_TOKEN": "mine"})
    assert process.install(mine) is mine and process.current() is mine
    process.forget()
    assert process.current().metrics_token == "second"


def test_the_deployment_mode_is_the_installed_settings_not_the_environment_at_call_time(monkeypatch):
    from propcrm.adapters import settings as process
    from propcrm.adapters.bus import bus_mode, nats_url

    monkeypatch.delenv("PROPCRM_NATS_URL", raising=False)
    process.install(Settings.from_env({"PROPCRM_NATS_URL": "nats://bus:4222"}))
    assert bus_mode() and nats_url() == "nats://bus:4222"
    process.install(Settings.from_env({}))
    monkeypatch.setenv("PROPCRM_NATS_URL", "nats://late:4222")  # set after the start: not the process's mode
    assert not bus_mode() and nats_url() is None
    assert bus_mode({"PROPCRM_NATS_URL": "nats://x"})  # an explicit mapping is still read as given


def test_the_default_event_ahead_limit_is_the_installed_one(monkeypatch):
    from propcrm.adapters import settings as process
    from propcrm.services.ingest import Checks, IngestError, max_ahead_from_env

    monkeypatch.setenv("PROPCRM_MAX_EVENT_AHEAD_MINUTES", "lots")
    process.install(Settings.from_env({"PROPCRM_MAX_EVENT_AHEAD_MINUTES": "60"}))
    assert max_ahead_from_env() == dt.timedelta(minutes=60) and Checks.now().max_ahead == dt.timedelta(minutes=60)
    assert max_ahead_from_env({"PROPCRM_MAX_EVENT_AHEAD_MINUTES": "0.5"}) == dt.timedelta(seconds=30)
    process.forget()  # read from the environment at first use: the bad value is refused naming it
    with pytest.raises(IngestError, match="PROPCRM_MAX_EVENT_AHEAD_MINUTES must be a number of minutes"):
        max_ahead_from_env()


def test_the_secret_store_key_comes_from_the_settings_else_the_data_directory_file(tmp_path, monkeypatch):
    from propcrm.adapters import settings as process
    from propcrm.adapters.platforms.secrets import SecretBox, SecretError, load_key, new_key

    key = new_key()
    monkeypatch.setenv("PROPCRM_SECRET_KEY", new_key())  # not the installed settings' key: not used
    process.install(Settings.from_env({"PROPCRM_SECRET_KEY": key}))
    assert load_key() == key.encode()
    sealed = SecretBox().seal_text("hunter2")
    assert SecretBox(key.encode()).open_text(sealed).reveal() == "hunter2"
    in_dir = Settings.from_env({"PROPCRM_DATA_DIR": str(tmp_path / "d")})
    with pytest.raises(SecretError, match="no secret key"):
        load_key(in_dir, create=False)
    made = load_key(in_dir)
    assert (tmp_path / "d" / "secret.key").read_bytes().strip() == made and load_key(in_dir, create=False) == made
    with pytest.raises(SecretError, match="PROPCRM_SECRET_KEY is not a valid key"):
        load_key(Settings.from_env({"PROPCRM_SECRET_KEY": "short"}))


def test_the_audit_configuration_comes_from_the_settings(tmp_path, monkeypatch):
    from propcrm.adapters import settings as process
    from propcrm.services.audit_config import AnchorConfigError, config_for, ensure_embedded_key

    url = f"sqlite:///{tmp_path / 'propcrm.db'}"
    monkeypatch.setenv("PROPCRM_AUDIT_KEY", "e" * 40)  # the environment after the start is not looked at
    process.install(Settings.from_env({"PROPCRM_AUDIT_KEY": "k" * 40, "PROPCRM_AUDIT_ANCHOR_INTERVAL": "9"}))
    config = config_for(url)
    assert config.key == b"k" * 40 and config.key_source == "PROPCRM_AUDIT_KEY" and config.interval == 9.0
    assert config.directory == tmp_path / "audit-anchors" and config.default_key_file is None
    other = Settings.from_env({"PROPCRM_AUDIT_ANCHOR_DIR": str(tmp_path / "elsewhere")})
    unkeyed = config_for(url, other)
    assert unkeyed.key is None and unkeyed.directory == tmp_path / "elsewhere"
    assert unkeyed.default_key_file == tmp_path / "audit.key"
    keyed = ensure_embedded_key(url, other)  # creates the key file beside the database
    assert keyed.key is not None and keyed.key_source == str(tmp_path / "audit.key")
    with pytest.raises(AnchorConfigError, match="shorter than 32"):
        config_for(url, Settings.from_env({"PROPCRM_AUDIT_KEY": "short"}))


def test_the_delivery_defaults_are_typed_fields_and_the_dispatcher_builds_from_them():
    from propcrm.adapters.settings import Delivery
    from propcrm.services.dispatch import DispatchConfigError, connectors_from, email_from, webhook_from

    empty = Settings.from_env({}).delivery
    assert empty == Delivery() and email_from(empty) is None and webhook_from(empty) is None
    delivery = Settings.from_env({
        "PROPCRM_SMTP_HOST": " smtp.example ", "PROPCRM_SMTP_SSL": "yes", "PROPCRM_SMTP_PASSWORD": "mail-secret",
        "PROPCRM_SMTP_TIMEOUT": "2.5", "PROPCRM_RISK_EMAIL": "desk@firm.example",
        "PROPCRM_FIRM_WEBHOOK_URL": "https://firm.example/hook", "PROPCRM_FIRM_WEBHOOK_SECRET": "hook-secret",
        "PROPCRM_PLATFORM_BRIDGE_URL": "https://bridge.example/c", "PROPCRM_PLATFORM_BRIDGE_SECRET": "bridge-secret",
    }).delivery
    assert delivery.smtp_host == "smtp.example" and delivery.smtp_ssl and delivery.smtp_port is None
    assert delivery.smtp_timeout == 2.5 and delivery.risk_email == "desk@firm.example"
    for secret in ("mail-secret", "hook-secret", "bridge-secret"):
        assert secret not in repr(delivery)
    email = email_from(delivery)
    assert email.port == 465 and email.use_ssl and email.timeout == 2.5 and email.risk_address == "desk@firm.example"
    assert webhook_from(delivery).url == "https://firm.example/hook"
    assert connectors_from(delivery)["*"].url == "https://bridge.example/c"
    with pytest.raises(DispatchConfigError, match="not both"):
        email_from(Delivery(smtp_host="smtp.example", smtp_starttls=True, smtp_ssl=True))


@pytest.mark.parametrize(("name", "value"), [
    ("PROPCRM_SMTP_PORT", "smtp"), ("PROPCRM_SMTP_PORT", "70000"), ("PROPCRM_SMTP_STARTTLS", "perhaps"),
    ("PROPCRM_SMTP_TIMEOUT", "0"), ("PROPCRM_FIRM_WEBHOOK_TIMEOUT", "soon"), ("PROPCRM_PLATFORM_BRIDGE_TIMEOUT", "-1"),
])
def test_a_bad_delivery_value_is_refused_naming_the_variable(name, value):
    from propcrm.services.dispatch import DispatchConfigError, email_from_env

    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
    if name.startswith("PROPCRM_SMTP"):  # the mapping form of the dispatcher's configuration says the same
        with pytest.raises(DispatchConfigError, match=name):
            email_from_env({"PROPCRM_SMTP_HOST": "smtp.example", name: value})


def test_the_embedded_driver_settings_default_to_the_pass_worker_and_name_a_bad_value():
    from propcrm.adapters.settings import Settings, SettingsError

    settings = Settings.from_env({})
    assert (settings.embedded_driver, settings.embedded_states, settings.embedded_partitions) == ("poll", "batch", 1)
    chosen = Settings.from_env({"PROPCRM_EMBEDDED_DRIVER": "LOG", "PROPCRM_EMBEDDED_STATES": "interval",
                                "PROPCRM_EMBEDDED_PARTITIONS": "8"})
    assert (chosen.embedded_driver, chosen.embedded_states, chosen.embedded_partitions) == ("log", "interval", 8)
    for name, value in (("PROPCRM_EMBEDDED_DRIVER", "push"), ("PROPCRM_EMBEDDED_STATES", "never"),
                        ("PROPCRM_EMBEDDED_PARTITIONS", "0"), ("PROPCRM_EMBEDDED_PARTITIONS", "x")):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: value})


def test_a_connector_s_lines_per_transaction_default_and_bounds():
    assert Settings.from_env({}).connector_commit_lines == 2000
    assert Settings.from_env({"PROPCRM_CONNECTOR_COMMIT_LINES": " 500 "}).connector_commit_lines == 500
    for bad in ("0", "-5", "2.5", "many", "1000001"):
        with pytest.raises(SettingsError, match="PROPCRM_CONNECTOR_COMMIT_LINES"):
            Settings.from_env({"PROPCRM_CONNECTOR_COMMIT_LINES": bad})
