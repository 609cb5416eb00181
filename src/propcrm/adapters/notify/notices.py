"""The words of a notification: a title and a body a trader understands, from a ``notify`` payload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TITLE_LIMIT = 200  # notifications.title is VARCHAR(200)

_TITLES = {
    "breach": "Account {account} breached: {rule}",
    "pause": "Account {account} paused: {rule}",
    "warning": "Warning on account {account}: {rule}",
    "violation": "Rule violation on account {account}: {rule}",
    "blocked": "Account {account}: target reached, but {rule} holds",
    "phase_passed": "Account {account} passed its phase",
    "near_breach": "Account {account} is near its {rule} limit",
}

_WHAT_IT_MEANS = {
    "breach": "The account has failed its evaluation and trading on it is disabled.",
    "pause": "Trading on the account is paused until the next trading day; the account has not failed.",
    "warning": "No action has been taken; this is an early warning.",
    "violation": "The account stays active; the violation is recorded and may affect profit or a payout.",
    "blocked": "The account cannot pass (or be paid out) until this rule is satisfied.",
    "phase_passed": "The next phase's account is being created for you.",
    "near_breach": "No action has been taken: the account is within the firm's alert distance of a loss limit.",
}


@dataclass(frozen=True)
class Notice:
    title: str
    body: str


def _rule(name: Any) -> str:
    return str(name or "rule").replace("_", " ")


def notice_of(payload: dict[str, Any]) -> Notice:
    """Title and body of the notification a ``notify`` payload describes (any unknown kind still reads)."""
    kind = str(payload.get("kind") or "notice")
    account = str(payload.get("account") or "?")
    template = _TITLES.get(kind, "Account {account}: " + kind.replace("_", " ") + " ({rule})")
    title = template.format(account=account, rule=_rule(payload.get("rule")))
    if isinstance(payload.get("title"), str) and payload["title"].strip():  # lifecycle messages name their own
        title = payload["title"].strip()
    if len(title) > TITLE_LIMIT:
        title = title[: TITLE_LIMIT - 1] + "…"
    lines = [str(payload.get("message") or title), ""]
    meaning = _WHAT_IT_MEANS.get(kind)
    if meaning:
        lines += [meaning, ""]
    lines.append(f"Account: {account}")
    if payload.get("platform"):
        lines.append(f"Platform: {payload['platform']}" + (f", login {payload['login']}" if payload.get("login") else ""))
    lines.append(f"Rule: {_rule(payload.get('rule'))}")
    if payload.get("decision") is not None:
        lines.append(f"Decision: #{payload['decision']}")
    return Notice(title=title, body="\n".join(lines) + "\n")


__all__ = ["Notice", "TITLE_LIMIT", "notice_of"]
