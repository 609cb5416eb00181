"""Once-by-id for the events of platform connectors in the partition worker, in bounded memory.

A platform connector re-reads on purpose (the MT5 Web API re-reads ``deal_overlap_s``, Match-Trader a
minute of closed positions and ledger operations at every look) and, in the scale-out deployment,
re-publishes a whole step after a crash between JetStream's acknowledgement and the stored cursor
(``features/platforms/store.BusStore``). A re-read event is not the same JetStream message, so the
stream's de-duplication does not catch it; the engine itself runs without id de-duplication. Applied
again, a deal would count twice; stamped older than the account's last event, it would be dead-lettered
as out of order. :class:`RecentIds` drops it instead.

What is kept, per account:

* the ids of its recent non-equity events (deals, balance operations, logins) with their event time,
  in milliseconds: an id is forgotten once the account has an event ``window_s`` newer, or when more
  than ``per_account`` are held (the oldest go first). Every re-read the connectors make is of the
  account's last moments (a step, a minute), far inside the window;
* for equity readings, whose ids the connector derives from the reading's time in milliseconds and
  keeps strictly increasing per account (``eq-<digest>-<ms>``, ``adapters/platforms/runner.py``),
  only the last one's number: a reading at or below it is a repeat.

So the cost follows the accounts' recent activity, never all of history. It is kept with the
partition's snapshot (``FirmContext.recent``), so a takeover's silent replay rebuilds what the live
run had.
"""

from __future__ import annotations

from ..adapters.settings import current
from ..domain.events import Equity

DEFAULT_WINDOW_S = 600.0
DEFAULT_PER_ACCOUNT = 1000
WINDOW_ENV = "PROPCRM_PLATFORM_ONCE_WINDOW_S"


def window_from_env() -> float:
    try:
        return max(1.0, float(current().env.get(WINDOW_ENV, DEFAULT_WINDOW_S)))
    except ValueError:
        return DEFAULT_WINDOW_S


def _equity_ms(event_id: str) -> int | None:
    if not event_id.startswith("eq-"):
        return None
    tail = event_id.rpartition("-")[2]
    return int(tail) if tail.isdigit() else None


class RecentIds:
    """One firm's recent platform event ids per account (see the module)."""

    __slots__ = ("ids", "equity", "newest", "window_ms", "per_account")

    def __init__(self, *, window_s: float = DEFAULT_WINDOW_S, per_account: int = DEFAULT_PER_ACCOUNT) -> None:
        self.ids: dict[str, dict[str, int]] = {}  # account -> id -> event time (ms)
        self.equity: dict[str, int] = {}  # account -> the last equity reading's number
        self.newest: dict[str, int] = {}  # account -> the newest event time among its ids (ms)
        self.window_ms = int(window_s * 1000)
        self.per_account = per_account

    def first(self, account: str, event) -> bool:
        """Whether ``event`` of ``account`` is new; a new one is remembered."""
        if type(event) is Equity:
            number = _equity_ms(event.id)
            if number is None:
                return True
            if number <= self.equity.get(account, -1):
                return False
            self.equity[account] = number
            return True
        seen = self.ids.get(account)
        if seen is None:
            seen = self.ids[account] = {}
        elif event.id in seen:
            return False
        ms = int(event.ts.timestamp() * 1000)
        seen[event.id] = ms
        if ms > self.newest.get(account, -(2**62)):
            self.newest[account] = ms
        if len(seen) > 2 * self.per_account:
            self._prune(account)
        return True

    def _prune(self, account: str) -> None:
        seen = self.ids[account]
        horizon = self.newest.get(account, 0) - self.window_ms
        kept = [(i, ms) for i, ms in seen.items() if ms >= horizon]
        if len(kept) > self.per_account:
            kept.sort(key=lambda item: item[1])  # stable: among equal times the later arrivals stay
            kept = kept[-self.per_account:]
        self.ids[account] = dict(kept)

    def prune(self) -> None:
        """Forget what lies outside the window (before the snapshot stores it)."""
        for account in list(self.ids):
            self._prune(account)
            if not self.ids[account]:
                del self.ids[account]

    def __len__(self) -> int:
        return sum(len(v) for v in self.ids.values())

    def dump(self) -> dict[str, list]:
        """For the snapshot: account → [equity number, [id, ms], …] (pruned first)."""
        self.prune()
        out: dict[str, list] = {}
        for account in sorted(set(self.ids) | set(self.equity)):
            pairs = self.ids.get(account, {}).items()  # in their order: a reload prunes as the live run would
            out[account] = [self.equity.get(account, -1), *([i, ms] for i, ms in pairs)]
        return out

    @classmethod
    def load(cls, data: dict[str, list], **settings) -> RecentIds:
        recent = cls(**settings)
        for account, (equity, *pairs) in data.items():
            if equity >= 0:
                recent.equity[account] = equity
            if pairs:
                recent.ids[account] = {i: ms for i, ms in pairs}
                recent.newest[account] = max(ms for _, ms in pairs)
        return recent


__all__ = ["DEFAULT_PER_ACCOUNT", "DEFAULT_WINDOW_S", "RecentIds", "WINDOW_ENV", "window_from_env"]
