"""The demo firm's time line (``propcrm serve --demo``, ``make run``): a history that ends now, then trading
that goes on in real time for as long as the service runs.

* **Generation 0** is the synthetic firm (:mod:`propcrm.synth.firm`) dated so that its last trading day
  is the day the demo firm was created (:func:`history_start`): the past is sent at the feed's rate,
  what lies ahead of the clock is held back and sent when its time comes (:class:`Pacer`).
* **Generation k ≥ 1** starts ``k`` weeks later with a new cohort of accounts (``D{k}-1``, … — traders
  who bought a challenge that week, :func:`generation_spec`), its event ids prefixed ``g{k}-`` so they
  are new to ingestion. Every generation ends flat (the generator closes every position), so each
  week's trading stands alone. After a restart the feed resumes with the current generation: what was
  sent already is dropped by ingestion's idempotency on event id.
* The status line (:class:`StatusLine`) is printed only when its text changes.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

from ..synth.firm import FirmSpec

UTC = dt.timezone.utc
WEEK = dt.timedelta(days=7)
_TS = b'"ts":"'


def history_start(last_day: dt.date, days: int) -> dt.date:
    """The first of ``days`` trading days (Mon–Fri) whose last is ``last_day`` (or the Friday before it,
    on a weekend)."""
    day = last_day
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    counted = 1
    while counted < days:
        day -= dt.timedelta(days=1)
        if day.weekday() < 5:
            counted += 1
    return day


def generation_spec(base: FirmSpec, created: dt.date, generation: int) -> FirmSpec:
    """The synthetic firm of one generation: 0 = the history ending on ``created``; k = a cohort of a fifth
    of the accounts (at least 10) trading the k-th week after it."""
    start = history_start(created, base.days)
    if generation == 0:
        return replace(base, start=start)
    return replace(base, start=start + WEEK * generation, seed=base.seed + generation,
                   accounts=max(base.accounts // 5, 10), account_prefix=f"D{generation}-")


def current_generation(created: dt.date, days: int, today: dt.date) -> int:
    """The generation whose week holds ``today`` (0 until the first week after the history is over)."""
    return max((today - history_start(created, days)).days // 7, 0)


def retag(line: bytes, generation: int) -> bytes:
    """A line with its event id made unique to its generation (``g{k}-``); generation 0 is unchanged."""
    if generation == 0:
        return line
    return line.replace(b'{"id":"', b'{"id":"g%d-' % generation, 1)


def line_time(line: bytes) -> dt.datetime:
    """The ``ts`` of a synthetic line (written by the generator as ``YYYY-MM-DDTHH:MM:SS…Z``)."""
    at = line.index(_TS) + len(_TS)
    text = line[at:line.index(b'"', at)].decode()
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class Pacer:
    """Hands out lines in batches, never one dated ahead of the clock: past lines at once (up to
    ``batch``), future ones when their time comes. ``wait(seconds)`` returns True to stop."""

    def __init__(self, lines: Iterator[bytes], *, batch: int, now: Callable[[], dt.datetime],
                 wait: Callable[[float], bool], slack: dt.timedelta = dt.timedelta(seconds=1)) -> None:
        self.lines, self.batch, self.now, self.wait, self.slack = lines, batch, now, wait, slack
        self.held: bytes | None = None

    def __iter__(self) -> Iterator[list[bytes]]:
        while True:
            chunk: list[bytes] = []
            while len(chunk) < self.batch:
                line = self.held if self.held is not None else next(self.lines, None)
                self.held = None
                if line is None:
                    if chunk:
                        yield chunk
                    return
                due = line_time(line)
                if due <= self.now() + self.slack:
                    chunk.append(line)
                    continue
                self.held = line
                if chunk:
                    break  # send what is due before waiting for the next
                if self.wait(min(max((due - self.now()).total_seconds(), 0.05), 5.0)):
                    return
            if chunk:
                yield chunk


class StatusLine:
    """Prints a status text only when it differs from the last one printed."""

    def __init__(self, print_: Callable[..., None]) -> None:
        self.print_ = print_
        self.last: str | None = None

    def show(self, text: str) -> bool:
        if text == self.last:
            return False
        self.last = text
        self.print_(text, flush=True)
        return True


def clock() -> dt.datetime:
    return dt.datetime.now(UTC)


def sleep_or_stop(stop) -> Callable[[float], bool]:
    return lambda seconds: stop.wait(seconds) if stop is not None else (time.sleep(seconds) or False)


__all__ = ["Pacer", "StatusLine", "current_generation", "generation_spec", "history_start", "line_time", "retag"]
