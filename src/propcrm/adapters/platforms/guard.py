"""The glitch guard: platform readings that must not become breaches by themselves.

Platforms report nonsense for a moment more often than they should: an equity of 0.00 while a
manager connection is still synchronising or a server restarts, no trading state at all for an
account without positions (MT5 keeps none until it trades), a balance of zero for an account not yet
loaded. Sent on as an ``equity`` event, such a reading fails the account — "broker is truth". So a
reading goes through :meth:`EquityGuard.judge`:

* **No trading state** (``equity`` None): equity is the balance when nothing is open (no position
  known on either side); otherwise the reading is held — a real figure comes with the next one.
* **Implausible** — equity ≤ 0 while the balance is positive; balance and equity both zero for an
  account that had a balance; equity falling by more than ``jump_fraction`` of the last balance in one
  reading — is held during ``settle_s`` after (re)connecting, and afterwards passed on only when
  ``confirm_reads`` consecutive readings over at least ``confirm_s`` seconds say the same. A blown
  account is then failed a couple of seconds late; a glitch never fails one.
* **Unchanged** readings are not repeated (the engine already has them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from .port import AccountReading

ZERO = Decimal(0)


@dataclass(frozen=True)
class GuardSettings:
    settle_s: float = 5.0
    confirm_reads: int = 3
    confirm_s: float = 2.0
    jump_fraction: Decimal = Decimal("0.5")


@dataclass
class _Suspect:
    first_at: dt.datetime
    reads: int
    equity: Decimal
    balance: Decimal


@dataclass
class _Seen:
    equity: Decimal | None = None
    balance: Decimal | None = None
    suspect: _Suspect | None = None


@dataclass
class Verdict:
    equity: Decimal | None  # None: nothing to send
    why: str | None = None  # why it was held (for the metric), None when passed or unchanged


@dataclass
class EquityGuard:
    settings: GuardSettings = field(default_factory=GuardSettings)
    connected_at: dt.datetime | None = None
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def reconnected(self, at: dt.datetime) -> None:
        self.connected_at = at
        for seen in self._seen.values():
            seen.suspect = None

    def remember(self, login: str, equity: Decimal, balance: Decimal) -> None:
        """What the engine already holds (so the first reading after a restart is judged against it)."""
        self._seen.setdefault(login, _Seen(equity, balance))

    def judge(self, reading: AccountReading, *, positions_open: bool) -> Verdict:
        seen = self._seen.setdefault(reading.login, _Seen())
        equity = reading.equity
        if equity is None:
            if positions_open:
                return Verdict(None, "no_trading_state")
            equity = reading.balance
        problem = self._implausible(seen, equity, reading.balance)
        if problem is not None:
            if not self._confirmed(seen, reading, equity, problem):
                return Verdict(None, problem)
        else:
            seen.suspect = None
        if seen.equity == equity and seen.balance == reading.balance:
            return Verdict(None)
        seen.equity, seen.balance = equity, reading.balance
        seen.suspect = None
        return Verdict(equity)

    def _implausible(self, seen: _Seen, equity: Decimal, balance: Decimal) -> str | None:
        if equity <= ZERO < balance:
            return "zero_equity"
        if equity == ZERO and balance == ZERO and seen.balance is not None and seen.balance > ZERO:
            return "zero_balance"
        if seen.equity is not None and seen.balance is not None and seen.balance > ZERO:
            if seen.equity - equity > seen.balance * self.settings.jump_fraction:
                return "jump"
        return None

    def _confirmed(self, seen: _Seen, reading: AccountReading, equity: Decimal, problem: str) -> bool:
        now = reading.observed_at
        settling = (self.settings.settle_s > 0 and self.connected_at is not None
                    and (now - self.connected_at).total_seconds() < self.settings.settle_s)
        if settling:
            seen.suspect = None
            return False
        suspect = seen.suspect
        if suspect is None or abs(suspect.equity - equity) > max(abs(equity), Decimal(1)) * Decimal("0.05"):
            seen.suspect = _Suspect(now, 1, equity, reading.balance)
            return self.settings.confirm_reads <= 1 and self.settings.confirm_s <= 0
        suspect.reads += 1
        return (suspect.reads >= self.settings.confirm_reads
                and (now - suspect.first_at).total_seconds() >= self.settings.confirm_s)


__all__ = ["EquityGuard", "GuardSettings", "Verdict"]
