"""A ``balance`` event with ``"at": "position"`` (a payout's withdrawal on the scale-out log) takes effect at
its place in the log: at the time of the account's last applied event, whatever its own ``ts``."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from propcrm.domain.events import DECODER
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import load_pack
from propcrm.engine.runner import Engine

UTC = dt.timezone.utc


def _line(**fields) -> bytes:
    return msgspec.json.encode(fields)


def _run(withdrawal: dict) -> Engine:
    engine = Engine(compile_pack(load_pack("two-step-100k")))
    lines = [
        _line(id="e1", type="equity", account="A1", ts="2026-03-02T10:00:00Z", equity="101000", balance="101000"),
        _line(**withdrawal),  # approved "now", long after the account's last event
        _line(id="e2", type="equity", account="A1", ts="2026-03-02T11:00:00Z", equity="100500", balance="100500"),
    ]
    engine.feed([DECODER.decode(x) for x in lines])
    return engine


WITHDRAWAL = dict(id="payout-1", type="balance", account="A1", ts="2026-12-07T23:00:00Z", amount="-500",
                  reason="payout")


def test_at_position_applies_at_the_accounts_last_event_and_keeps_later_arriving_older_events_in_order():
    engine = _run({**WITHDRAWAL, "at": "position"})
    assert engine.rejected == []
    st = engine.states["A1"]
    assert st.balance == 100500 and st.last_ts == dt.datetime(2026, 3, 2, 11, tzinfo=UTC)


def test_without_it_the_stamp_counts_and_the_older_event_after_it_is_out_of_order():
    engine = _run(WITHDRAWAL)
    assert [(r.id, r.kind) for r in engine.rejected] == [("e2", "out_of_order")]


def test_at_names_its_field_when_wrong():
    with pytest.raises(msgspec.ValidationError, match="at"):
        DECODER.decode(_line(**{**WITHDRAWAL, "at": "now"}))
