"""The rules a new password must meet (NIST SP 800-63B, 5.1.1.2), and strong generated passwords.

A password is refused, with a message that says why, when it

* has fewer than :data:`MIN_PASSWORD` (12) characters, or more than :data:`MAX_PASSWORD` (1,024: argon2
  takes any length, the bound keeps a request cheap to refuse);
* contains the user's e-mail address, the name part before the ``@`` (from 3 characters) or the firm's
  id — context-specific words an attacker tries first;
* is easy to guess: ``zxcvbn`` (Dropbox's estimator, a well-kept library) matches it against lists of
  passwords from breaches, common words and names, keyboard patterns, repeats (``aaaa``, ``abcabc``),
  sequences (``1234``), dates and l33t substitutions, and estimates the guesses an attacker needs; fewer
  than :data:`MIN_GUESSES` (10^10, zxcvbn's "very unguessable" band, score 4) is refused with zxcvbn's
  own explanation.

Nothing else: no rules about character classes, no expiry (NIST advises against both). Only the first 72
characters are estimated (zxcvbn's bound; a password that long is not guessed from its start alone).
These rules apply when a password is set (a new user, a reset, a change); a stored password that was
accepted under older rules still logs in.
"""

from __future__ import annotations

import secrets
import unicodedata

from zxcvbn import zxcvbn

MIN_PASSWORD = 12
MAX_PASSWORD = 1024
MIN_GUESSES = 10**10
"""zxcvbn's estimate below which a password is refused (its score 4 starts here)."""
_ESTIMATED = 72  # zxcvbn's own maximum length


def password_problem(password: object, *, email: str = "", firm_id: str = "") -> str | None:
    """Why ``password`` may not be set for the user ``email`` of ``firm_id``, or ``None`` when it may."""
    if not isinstance(password, str):
        return "the password must be text"
    length = len(password)
    if length < MIN_PASSWORD:
        return f"the password must have at least {MIN_PASSWORD} characters (this one has {length})"
    if length > MAX_PASSWORD:
        return f"the password must have at most {MAX_PASSWORD:,} characters"
    if not password.isprintable() and any(unicodedata.category(ch) == "Cc" for ch in password):
        return "the password must not contain control characters"
    folded = password.casefold()
    email = (email or "").strip().casefold()
    local = email.split("@", 1)[0]
    context = [word for word in (email, local, (firm_id or "").strip().casefold()) if len(word) >= 3]
    for word in context:
        if word in folded:
            what = "the e-mail address" if word == email else (
                "the name part of the e-mail address" if word == local else "the firm's id")
            return f"the password must not contain {what}"
    estimate = zxcvbn(password[:_ESTIMATED], user_inputs=[*context, "propcrm"])
    if estimate["guesses"] < MIN_GUESSES:
        feedback = estimate.get("feedback") or {}
        why = " ".join(part for part in (feedback.get("warning") or "",
                                          *(feedback.get("suggestions") or [])) if part)
        return ("the password is too easy to guess" + (f": {why}" if why else "")
                + " Use a longer passphrase of unrelated words, or a password manager's random password.")
    return None


def generate_password(*, email: str = "", firm_id: str = "") -> str:
    """A random password that meets the rules: 20 characters of ``secrets.token_urlsafe`` (120 bits)."""
    while True:
        candidate = secrets.token_urlsafe(15)
        if password_problem(candidate, email=email, firm_id=firm_id) is None:
            return candidate


__all__ = ["MAX_PASSWORD", "MIN_GUESSES", "MIN_PASSWORD", "generate_password", "password_problem"]
