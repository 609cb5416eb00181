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
    ("PROPCRM_SNAPSHOT_INTERVAL", "nan"),
])
def test_a_bad_value_is_refused_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


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
