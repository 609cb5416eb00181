"""Refusals a use case raises and an entry point turns into an answer (HTTP 404 / 409 / 422, CLI exit 2).

Their messages are written for the person who asked and are safe to show them: they never carry a
secret, a password or another firm's data.
"""

from __future__ import annotations


class NotFound(LookupError):
    """No such thing in the caller's firm (or not visible to the caller): the same answer either way."""


class Conflict(Exception):
    """The request is valid but the thing is not in a state that allows it (e.g. clearing an active account)."""


class Invalid(ValueError):
    """The request itself is wrong: a bad value, a missing reason, an unknown role."""


__all__ = ["Conflict", "Invalid", "NotFound"]
