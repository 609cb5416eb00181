"""The audit key and the anchor directory, read from the configuration (see :mod:`propcrm.services.audit_anchors`).

Its own module so that :mod:`propcrm.services.audit` (which marks entries with the key) and
:mod:`propcrm.services.audit_anchors` (which writes and checks anchors) both read it without importing
each other.

The values come from the process's settings (``adapters/settings.py``: ``PROPCRM_AUDIT_KEY``,
``PROPCRM_AUDIT_KEY_FILE``, ``PROPCRM_AUDIT_ANCHOR_DIR``, ``PROPCRM_AUDIT_ANCHOR_INTERVAL``, read once at the
start); only the default key file beside an SQLite database is looked at again (``propcrm serve`` creates it).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from ..adapters.settings import (
    AUDIT_ANCHOR_DIR_ENV, AUDIT_ANCHOR_INTERVAL_ENV, AUDIT_KEY_ENV, AUDIT_KEY_FILE_ENV, Settings, current,
)

KEY_ENV = AUDIT_KEY_ENV
KEY_FILE_ENV = AUDIT_KEY_FILE_ENV
DIR_ENV = AUDIT_ANCHOR_DIR_ENV
INTERVAL_ENV = AUDIT_ANCHOR_INTERVAL_ENV
MIN_KEY = 32
KEY_FILE = "audit.key"
ANCHOR_DIR = "audit-anchors"
log = logging.getLogger("propcrm.audit")


class AnchorConfigError(ValueError):
    """The audit key or anchor configuration cannot be used (the message never contains the key)."""


@dataclass(frozen=True)
class AnchorConfig:
    key: bytes | None
    key_source: str | None
    """Where the key came from (an environment variable's name or a file's path), never the key."""
    directory: Path | None
    interval: float = 60.0
    default_key_file: Path | None = None
    """Where the embedded default looks for its key file (None: a key is configured, or not SQLite)."""

    @property
    def key_id(self) -> str | None:
        """A short public name of the key (anchors carry it, so another key is told from a forgery)."""
        if self.key is None:
            return None
        return hashlib.sha256(b"propcrm-audit-key-id\x00" + self.key).hexdigest()[:16]

    def __repr__(self) -> str:  # the key never reaches a log through a repr
        return (f"AnchorConfig(key={'set' if self.key else None}, key_source={self.key_source!r}, "
                f"directory={str(self.directory) if self.directory else None!r}, interval={self.interval})")


def _beside_database(database_url: str) -> Path | None:
    """The directory of an SQLite database file (None for PostgreSQL and in-memory SQLite)."""
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite") or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve().parent


def read_key(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="utf-8").splitlines()[0].strip() if path.stat().st_size else ""
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise AnchorConfigError(f"cannot read the audit key file {path}: {type(exc).__name__}") from None
    if len(text) < MIN_KEY:
        raise AnchorConfigError(f"the audit key in {path} is shorter than {MIN_KEY} characters")
    return text.encode("utf-8")


def config_for(database_url: str, settings: Settings | None = None) -> AnchorConfig:
    """The audit key and anchor directory for ``database_url`` under ``settings`` (default: the process's,
    ``adapters/settings.current()``). Read once and kept; a default key file that appears later
    (``propcrm serve`` creates it) is noticed."""
    settings = current() if settings is None else settings
    config = _config_for(database_url, settings)
    if config.key is None and config.default_key_file is not None and config.default_key_file.exists():
        _config_for.cache_clear()
        config = _config_for(database_url, settings)
    return config


@functools.lru_cache(maxsize=64)
def _config_for(database_url: str, settings: Settings) -> AnchorConfig:
    beside = _beside_database(database_url)
    key = source = None
    if settings.audit_key:
        if len(settings.audit_key) < MIN_KEY:
            raise AnchorConfigError(f"{KEY_ENV} is shorter than {MIN_KEY} characters")
        key, source = settings.audit_key.encode("utf-8"), KEY_ENV
    elif settings.audit_key_file is not None:
        key, source = read_key(settings.audit_key_file), str(settings.audit_key_file)
    elif beside is not None and (beside / KEY_FILE).exists():
        key, source = read_key(beside / KEY_FILE), str(beside / KEY_FILE)
    directory = settings.audit_anchor_dir if settings.audit_anchor_dir is not None else (
        beside / ANCHOR_DIR if beside is not None else None)
    default_key_file = beside / KEY_FILE if beside is not None and not _key_configured(settings) else None
    return AnchorConfig(key=key, key_source=source, directory=directory, interval=settings.audit_anchor_interval,
                        default_key_file=default_key_file)


def _key_configured(settings: Settings) -> bool:
    return bool(settings.audit_key) or settings.audit_key_file is not None


def forget_configuration() -> None:
    """Read the configuration again at the next use (after a key file changed; other settings are another
    cache entry: ``adapters/settings.install``)."""
    _config_for.cache_clear()


def ensure_embedded_key(database_url: str, settings: Settings | None = None) -> AnchorConfig:
    """For ``propcrm serve`` on SQLite: when no key is configured, create ``audit.key`` beside the database
    (random, 256 bits, mode 0600) so the embedded default is keyed and anchored from its first entry."""
    settings = current() if settings is None else settings
    config = config_for(database_url, settings)
    beside = _beside_database(database_url)
    if config.key is not None or beside is None or _key_configured(settings):
        return config
    path = beside / KEY_FILE
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(secrets.token_hex(32) + "\n")
        log.info("created the audit key file %s (keep a copy apart from the database)", path)
    forget_configuration()
    return config_for(database_url, settings)
