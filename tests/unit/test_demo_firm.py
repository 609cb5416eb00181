"""The demo firm's time line: a history that ends today, real-time pacing after it, a new cohort each
week with ids of its own, and a status line printed only when it changes."""

from __future__ import annotations

import datetime as dt
import itertools

from propcrm.synth.firm import FirmSpec, generate
from propcrm.tools.demo_firm import (
    Pacer, StatusLine, current_generation, generation_spec, history_start, line_time, retag,
)

UTC = dt.timezone.utc


def test_the_history_ends_on_the_day_the_firm_was_made_and_weekends_fall_back_to_friday():
    monday = dt.date(2026, 12, 7)
    assert history_start(monday, 5) == dt.date(2026, 12, 1)  # Tue, Wed, Thu, Fri, Mon
    assert history_start(monday, 1) == monday
    assert history_start(dt.date(2026, 12, 6), 5) == dt.date(2026, 11, 30)  # Sunday: Mon–Fri before it
    spec = generation_spec(FirmSpec(accounts=20), monday, 0)
    last = max(line_time(line) for line in generate(spec))
    assert last.date() in (monday, monday + dt.timedelta(days=1))  # (the final clock just after midnight)


def test_later_generations_are_new_cohorts_a_week_apart_with_ids_of_their_own():
    created = dt.date(2026, 12, 7)
    base = FirmSpec(accounts=100, seed=7)
    first, second = generation_spec(base, created, 1), generation_spec(base, created, 2)
    assert (first.start, second.start) == (dt.date(2026, 12, 8), dt.date(2026, 12, 15))
    assert first.accounts == 20 and first.account_prefix == "D1-" and second.account_prefix == "D2-"
    assert current_generation(created, 5, created) == 0
    assert current_generation(created, 5, dt.date(2026, 12, 8)) == 1
    assert current_generation(created, 5, dt.date(2026, 12, 21)) == 2
    line = b'{"id":"clock-1","type":"clock","ts":"2026-12-08T00:00:05Z"}\n'
    assert retag(line, 0) == line
    assert retag(line, 3) == b'{"id":"g3-clock-1","type":"clock","ts":"2026-12-08T00:00:05Z"}\n'


def _line(i: int, at: dt.datetime) -> bytes:
    return b'{"id":"e%d","type":"clock","ts":"%s"}\n' % (i, at.strftime("%Y-%m-%dT%H:%M:%SZ").encode())


def test_the_past_streams_at_once_and_the_future_waits_for_its_time():
    now = [dt.datetime(2026, 12, 7, 12, 0, tzinfo=UTC)]
    lines = [_line(i, now[0] + dt.timedelta(minutes=i - 5)) for i in range(10)]  # 5 past, 1 now, 4 ahead
    waited: list[float] = []

    def wait(seconds: float) -> bool:
        waited.append(seconds)
        now[0] += dt.timedelta(seconds=seconds)
        return False

    sent = []
    for chunk in Pacer(iter(lines), batch=3, now=lambda: now[0], wait=wait):
        for line in chunk:
            assert line_time(line) <= now[0] + dt.timedelta(seconds=1), "never ahead of the clock"
        sent.append(len(chunk))
    assert sum(sent) == 10 and sent[:2] == [3, 3]
    assert waited and max(waited) <= 5.0 and now[0] >= line_time(lines[-1]) - dt.timedelta(seconds=1)


def test_a_stop_while_waiting_ends_the_stream():
    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    lines = [_line(0, now), _line(1, now + dt.timedelta(hours=1))]
    chunks = list(Pacer(iter(lines), batch=10, now=lambda: now, wait=lambda s: True))
    assert chunks == [[lines[0]]]


def test_the_status_line_is_printed_only_when_it_changes():
    printed = []
    line = StatusLine(lambda text, **_: printed.append(text))
    for text in ("a", "a", "a", "b", "b", "a"):
        line.show(text)
    assert printed == ["a", "b", "a"]


def test_the_generator_dates_every_line_so_the_pacer_can_read_it():
    for line in itertools.islice(generate(FirmSpec(accounts=3, days=1)), 200):
        assert line_time(line).tzinfo is not None
