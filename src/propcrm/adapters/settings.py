"""The deployment's configuration, read from the environment once, by the entry points.

``Settings.from_env()`` is called where a process starts — ``create_app`` (the HTTP service), the
``propcrm serve``/``work``/``worker`` processes, the CLI commands — and the parts are handed to the
services and adapters as arguments. Nothing below the entry points reads a ``PROPCRM_*`` variable
for these settings any more; a process that wants other settings builds another ``Settings`` (tests:
``Settings.from_env({...})`` or ``dataclasses.replace``).

Each bad value stops the start with an error that names the variable (``SettingsError``).

The process's settings: each entry point ``install``s the ``Settings`` it read; what is decided once per
process and used deep inside the services — the deployment mode (``bus_mode``: embedded log or the NATS
stream), the default event-ahead limit, the audit key and anchors, the secret store's key — is read
from ``current()``, never from the environment at call time. ``current()`` before any ``install`` reads
the environment once (a library use, a test) and keeps it; ``forget()`` drops it (tests).

The deployment's delivery defaults — SMTP server, firm webhook, platform bridge (``Delivery``, the field
``settings.delivery``) — are typed here too: the dispatcher builds its notifiers and connectors from them and
the firms pages, API and CLI show them as the defaults a firm's own settings override. Their contradictions
(a URL without its secret, STARTTLS and SSL both) are the dispatcher's to refuse (``DispatchConfigError``),
since only a process that delivers needs them whole.

Not here (yet): the bus's stream details (``BusConfig.from_env(settings.env, url=settings.nats_url)``).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

DATABASE_URL_ENV = "PROPCRM_DATABASE_URL"
DATA_DIR_ENV = "PROPCRM_DATA_DIR"
NATS_URL_ENV = "PROPCRM_NATS_URL"
SECURE_COOKIES_ENV = "PROPCRM_SECURE_COOKIES"  # "1": mark the cookie Secure even when TLS ends at a proxy
METRICS_TOKEN_ENV = "PROPCRM_METRICS_TOKEN"
DOCUMENTS_DIR_ENV = "PROPCRM_DOCUMENTS_DIR"
MAX_AHEAD_ENV = "PROPCRM_MAX_EVENT_AHEAD_MINUTES"
ANALYSIS_INTERVAL_ENV = "PROPCRM_ANALYSIS_INTERVAL"  # seconds between the service's incremental passes; 0: off
SNAPSHOT_INTERVAL_ENV = "PROPCRM_SNAPSHOT_INTERVAL"
CONSUMER_ENV = "PROPCRM_CONSUMER"
SECRET_KEY_ENV = "PROPCRM_SECRET_KEY"  # the secret store's key (else ``data_dir``/secret.key)
AUDIT_KEY_ENV = "PROPCRM_AUDIT_KEY"
AUDIT_KEY_FILE_ENV = "PROPCRM_AUDIT_KEY_FILE"
AUDIT_ANCHOR_DIR_ENV = "PROPCRM_AUDIT_ANCHOR_DIR"
AUDIT_ANCHOR_INTERVAL_ENV = "PROPCRM_AUDIT_ANCHOR_INTERVAL"
VECTOR_TICKS_ENV = "PROPCRM_VECTOR_TICKS"  # "0": the partition workers value every tick in Decimal
EMBEDDED_DRIVER_ENV = "PROPCRM_EMBEDDED_DRIVER"  # "log": the partition driver over raw_events; "poll": the pass worker
EMBEDDED_PARTITIONS_ENV = "PROPCRM_EMBEDDED_PARTITIONS"  # the log driver's partitions (default 1)
EMBEDDED_STATES_ENV = "PROPCRM_EMBEDDED_STATES"  # "batch": states written with every batch; "interval": snapshots
EMBEDDED_DRIVERS = ("poll", "log")
CONNECTOR_COMMIT_LINES_ENV = "PROPCRM_CONNECTOR_COMMIT_LINES"  # a platform connector's lines per transaction
DEFAULT_CONNECTOR_COMMIT_LINES = 2000

DEFAULT_MAX_AHEAD = dt.timedelta(minutes=5)
MAX_AHEAD_LIMIT = 24 * 60  # minutes: a day; more is no longer "a clock a little fast"


class SettingsError(ValueError):
    """A configuration value is malformed; the message names the variable."""


def parse_max_ahead(text: str) -> dt.timedelta:
    """``PROPCRM_MAX_EVENT_AHEAD_MINUTES``: minutes from 0 to 1440, fractions allowed; empty: 5 minutes."""
    text = text.strip()
    if not text:
        return DEFAULT_MAX_AHEAD
    try:
        minutes = float(text)
    except ValueError:
        minutes = float("nan")
    if not 0 <= minutes <= MAX_AHEAD_LIMIT:
        raise SettingsError(f"{MAX_AHEAD_ENV} must be a number of minutes from 0 to {MAX_AHEAD_LIMIT}, "
                            f"got {text[:40]!r}")
    return dt.timedelta(minutes=minutes)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {text[:40]!r}") from None
    if value != value:
        raise SettingsError(f"{name} must be a number of seconds, got {text[:40]!r}")
    return value


def _anchor_interval(env: Mapping[str, str]) -> float:
    value = _seconds(env, AUDIT_ANCHOR_INTERVAL_ENV, 60.0)
    if not 1 <= value <= 86_400:
        raise SettingsError(f"{AUDIT_ANCHOR_INTERVAL_ENV} must be between 1 and 86400 seconds")
    return value


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {text[:40]!r}")


def _path(env: Mapping[str, str], name: str) -> Path | None:
    text = env.get(name, "").strip()
    return Path(text) if text else None


def _text(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _seconds(env, name, default)
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {env.get(name, '').strip()[:40]!r}")
    return value


def _lines_per_commit(env: Mapping[str, str]) -> int:
    text = env.get(CONNECTOR_COMMIT_LINES_ENV, "").strip()
    if not text:
        return DEFAULT_CONNECTOR_COMMIT_LINES
    if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise SettingsError(f"{CONNECTOR_COMMIT_LINES_ENV} must be a whole number of lines from 1 to 1000000, "
                            f"got {text[:40]!r}")
    return int(text)


def _port(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SettingsError(f"{name} must be a port number, got {text[:40]!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The deployment's delivery defaults (a firm's own settings take precedence: services/firms.py)."""

    #: ``PROPCRM_SMTP_HOST``: set, e-mail is sent; ``…_PORT`` (``None``: 25, 587 with STARTTLS, 465 with SSL)
    smtp_host: str | None = None
    smtp_port: int | None = None
    #: ``PROPCRM_SMTP_FROM``
    smtp_sender: str | None = None
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_timeout: float = 10.0
    #: ``PROPCRM_RISK_EMAIL``: the risk desk's address
    risk_email: str | None = None
    #: ``PROPCRM_FIRM_WEBHOOK_URL`` / ``…_SECRET`` / ``…_TIMEOUT``
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_timeout: float = 10.0
    #: ``PROPCRM_PLATFORM_BRIDGE_URL`` / ``…_SECRET`` / ``…_TIMEOUT``: one signed-webhook bridge for every platform
    bridge_url: str | None = None
    bridge_secret: str | None = field(default=None, repr=False)
    bridge_timeout: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Delivery:
        """The delivery defaults of ``env``; a malformed value raises ``SettingsError`` naming its variable."""
        return cls(
            smtp_host=_text(env, "PROPCRM_SMTP_HOST"),
            smtp_port=_port(env, "PROPCRM_SMTP_PORT"),
            smtp_sender=_text(env, "PROPCRM_SMTP_FROM"),
            smtp_starttls=_switch(env, "PROPCRM_SMTP_STARTTLS", False),
            smtp_ssl=_switch(env, "PROPCRM_SMTP_SSL", False),
            smtp_user=env.get("PROPCRM_SMTP_USER") or None,
            smtp_password=env.get("PROPCRM_SMTP_PASSWORD") or None,
            smtp_timeout=_positive(env, "PROPCRM_SMTP_TIMEOUT", 10.0),
            risk_email=_text(env, "PROPCRM_RISK_EMAIL"),
            webhook_url=_text(env, "PROPCRM_FIRM_WEBHOOK_URL"),
            webhook_secret=env.get("PROPCRM_FIRM_WEBHOOK_SECRET") or None,
            webhook_timeout=_positive(env, "PROPCRM_FIRM_WEBHOOK_TIMEOUT", 10.0),
            bridge_url=_text(env, "PROPCRM_PLATFORM_BRIDGE_URL"),
            bridge_secret=env.get("PROPCRM_PLATFORM_BRIDGE_SECRET") or None,
            bridge_timeout=_positive(env, "PROPCRM_PLATFORM_BRIDGE_TIMEOUT", 10.0),
        )


@dataclass(frozen=True, slots=True)
class Settings:
    #: ``PROPCRM_DATABASE_URL``; ``None``: the embedded SQLite database in ``data_dir``
    database_url_setting: str | None = None
    data_dir: Path = Path("data")
    #: ``PROPCRM_NATS_URL``: set, the deployment is the scale-out one (docs/cluster.md)
    nats_url: str | None = None
    secure_cookies: bool = False
    metrics_token: str | None = None
    #: ``PROPCRM_DOCUMENTS_DIR``; ``None``: beside the SQLite database, else ``./propcrm-documents``
    documents_dir: Path | None = None
    max_event_ahead: dt.timedelta = DEFAULT_MAX_AHEAD
    analysis_interval: float = 60.0
    snapshot_interval: float = 2.0
    push_consumer: bool = True
    #: ``PROPCRM_SECRET_KEY`` (never in a repr); ``None``: the key file ``data_dir``/secret.key
    secret_key: str | None = field(default=None, repr=False)
    #: ``PROPCRM_AUDIT_KEY`` (never in a repr), else ``PROPCRM_AUDIT_KEY_FILE``, else audit.key beside SQLite
    audit_key: str | None = field(default=None, repr=False)
    audit_key_file: Path | None = None
    #: ``PROPCRM_AUDIT_ANCHOR_DIR``; ``None``: audit-anchors beside the SQLite database
    audit_anchor_dir: Path | None = None
    audit_anchor_interval: float = 60.0
    #: ``PROPCRM_VECTOR_TICKS``: the partition workers screen ticks in integers (engine/marking.py); "0": off
    vector_ticks: bool = True
    #: ``PROPCRM_EMBEDDED_DRIVER``: how the embedded service evaluates (no NATS): ``poll`` — the pass
    #: worker (services/evaluation.py); ``log`` — the partition driver over the ``raw_events`` table
    #: (cluster/embedded.py, the scale-out workers' driver)
    embedded_driver: str = "poll"
    #: ``PROPCRM_EMBEDDED_PARTITIONS``: the log driver's partitions (1: one engine per firm)
    embedded_partitions: int = 1
    #: ``PROPCRM_EMBEDDED_STATES``: ``batch`` — the log driver writes the states of the accounts a batch
    #: changed with the batch (``account_states`` as fresh as the decisions); ``interval`` — every
    #: ``PROPCRM_SNAPSHOT_INTERVAL`` seconds, as the scale-out workers do
    embedded_states: str = "batch"
    #: ``PROPCRM_CONNECTOR_COMMIT_LINES``: at most this many of a connector step's lines per transaction
    #: (embedded deployment; a short commit lets the evaluation worker have SQLite's write lock between)
    connector_commit_lines: int = DEFAULT_CONNECTOR_COMMIT_LINES
    #: SMTP, firm webhook and platform bridge defaults (the dispatcher; the firms pages show them)
    delivery: Delivery = field(default_factory=Delivery)
    #: the environment as it was read (for the adapter that still takes a mapping: the bus's stream details)
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings of ``env`` (default: this process's environment, copied now)."""
        env = MappingProxyType(dict(os.environ if env is None else env))
        return cls(
            database_url_setting=env.get(DATABASE_URL_ENV) or None,
            data_dir=Path(env.get(DATA_DIR_ENV) or "data"),
            nats_url=env.get(NATS_URL_ENV) or None,
            secure_cookies=env.get(SECURE_COOKIES_ENV, "").lower() in ("1", "true", "yes"),
            metrics_token=env.get(METRICS_TOKEN_ENV) or None,
            documents_dir=Path(env[DOCUMENTS_DIR_ENV].strip()) if env.get(DOCUMENTS_DIR_ENV, "").strip() else None,
            max_event_ahead=parse_max_ahead(env.get(MAX_AHEAD_ENV, "")),
            analysis_interval=_seconds(env, ANALYSIS_INTERVAL_ENV, 60.0),
            snapshot_interval=_seconds(env, SNAPSHOT_INTERVAL_ENV, 2.0),
            push_consumer=env.get(CONSUMER_ENV, "push") != "pull",
            secret_key=env.get(SECRET_KEY_ENV, "").strip() or None,
            audit_key=env.get(AUDIT_KEY_ENV, "").strip() or None,
            audit_key_file=_path(env, AUDIT_KEY_FILE_ENV),
            audit_anchor_dir=_path(env, AUDIT_ANCHOR_DIR_ENV),
            audit_anchor_interval=_anchor_interval(env),
            vector_ticks=_switch(env, VECTOR_TICKS_ENV, True),
            embedded_driver=_choice(env, EMBEDDED_DRIVER_ENV, EMBEDDED_DRIVERS, "poll"),
            embedded_partitions=_partitions(env),
            embedded_states=_choice(env, EMBEDDED_STATES_ENV, ("batch", "interval"), "batch"),
            connector_commit_lines=_lines_per_commit(env),
            delivery=Delivery.from_env(env),
            env=env,
        )

    def database_url(self) -> str:
        """The database to use: ``PROPCRM_DATABASE_URL``, or SQLite in WAL mode in ``data_dir`` (created)."""
        if self.database_url_setting:
            return self.database_url_setting
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.data_dir.resolve() / 'propcrm.db'}"

    @property
    def bus_mode(self) -> bool:
        """The event log is the NATS stream, not the embedded ``raw_events`` table."""
        return self.nats_url is not None


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in allowed:
        raise SettingsError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _partitions(env: Mapping[str, str]) -> int:
    raw = env.get(EMBEDDED_PARTITIONS_ENV, "").strip() or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= 1024:
        raise SettingsError(f"{EMBEDDED_PARTITIONS_ENV}: {raw!r} is not a whole number from 1 to 1024")
    return int(raw)


_current: Settings | None = None


def install(settings: Settings) -> Settings:
    """Make ``settings`` this process's (an entry point, once at its start; a test that wants others)."""
    global _current
    _current = settings
    return settings


def current() -> Settings:
    """This process's settings: those installed, else the environment's, read now once and kept."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def forget() -> None:
    """Drop the process's settings; the next ``current()`` reads the environment again (tests)."""
    global _current
    _current = None


__all__ = ["DEFAULT_MAX_AHEAD", "Delivery", "Settings", "SettingsError", "current", "forget", "install", "parse_max_ahead"]
