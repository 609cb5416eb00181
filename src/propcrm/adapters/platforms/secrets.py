"""Sealed platform credentials: what a connection needs to log in, encrypted at rest, never echoed.

Secrets (a manager password, an API key) are sealed with Fernet (AES-128-CBC + HMAC-SHA256, from the
``cryptography`` package) under the key in ``PROPCRM_SECRET_KEY`` (a urlsafe base64 32-byte key, e.g.
from ``propcrm platforms keygen``). The same key seals the firms' own secrets (webhook secret, SMTP
password: services/firms.py) and staff TOTP secrets (services/totp.py). Without it, the embedded default keeps a key file
``secret.key`` (mode 0600) in the data directory, created on first use; every process that reads the
secrets (``serve``, ``connect``, ``dispatch``) must then run on that machine — set the variable when
they do not. A sealed value is bytes in ``platform_connections.secret``; :class:`Secret` wraps an
opened one so that ``repr``/``str``/logging never show it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from ..settings import SECRET_KEY_ENV, Settings, current

ENV = SECRET_KEY_ENV


class SecretError(ValueError):
    """A secret cannot be sealed or opened (no key, wrong key, tampered value)."""


class Secret:
    """A credential in memory: ``reveal()`` gives it to the code that logs in, nothing else shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('••••')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # never pickled into a log, a queue or a crash dump by accident
        raise TypeError("a Secret is not serialisable")


def load_key(settings: Settings | None = None, *, create: bool = True) -> bytes:
    """The secret store's key: ``PROPCRM_SECRET_KEY`` of ``settings`` (default: the process's,
    ``adapters/settings.current()``), else the key file ``secret.key`` in its data directory (created with
    a new key when missing and ``create``)."""
    settings = current() if settings is None else settings
    text = (settings.secret_key or "").strip()
    if text:
        try:
            Fernet(text.encode())
        except (ValueError, TypeError):
            raise SecretError(f"{ENV} is not a valid key (32 bytes, urlsafe base64); make one with "
                              "`propcrm platforms keygen`") from None
        return text.encode()
    path = settings.data_dir / "secret.key"
    if path.is_file():
        return path.read_bytes().strip()
    if not create:
        raise SecretError(f"no secret key: set {ENV} or create {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    return key


class SecretBox:
    """Seals and opens a connection's credentials (a JSON object of strings)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._fernet = Fernet(key or load_key())

    def seal(self, values: dict[str, str]) -> bytes:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
            raise SecretError("secrets must be text")
        return self._fernet.encrypt(json.dumps(values, sort_keys=True).encode())

    def open(self, sealed: bytes | None) -> dict[str, Secret]:
        if not sealed:
            return {}
        try:
            values: Any = json.loads(self._fernet.decrypt(bytes(sealed)))
        except InvalidToken:
            raise SecretError("the connection's secret cannot be opened with this key (another "
                              f"{ENV}, or the value was altered)") from None
        return {str(k): Secret(str(v)) for k, v in values.items()}

    def seal_text(self, value: str) -> str:
        """One secret as text fit for a string column (a staff user's TOTP secret, issue 16)."""
        if not isinstance(value, str):
            raise SecretError("secrets must be text")
        return self._fernet.encrypt(value.encode()).decode("ascii")

    def open_text(self, sealed: str | None) -> Secret | None:
        if not sealed:
            return None
        try:
            return Secret(self._fernet.decrypt(sealed.encode("ascii")).decode())
        except (InvalidToken, UnicodeError):
            raise SecretError(f"a sealed secret cannot be opened with this key (another {ENV}, or the value "
                              "was altered)") from None


def new_key() -> str:
    return Fernet.generate_key().decode()


__all__ = ["ENV", "Secret", "SecretBox", "SecretError", "load_key", "new_key"]
