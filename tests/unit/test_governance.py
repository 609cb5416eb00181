"""The pure parts of the re-bind and the kill switch (issue 19, items 6 and 7)."""

from __future__ import annotations

import datetime as dt

import pytest

from propcrm.domain.decisions import Decision
from propcrm.engine.replay import compare_decisions
from propcrm.services.errors import Invalid
from propcrm.services.halts import HaltScope, reason_text
from propcrm.services.rebind import Selection

TS = dt.datetime(2026, 3, 2, 10, tzinfo=dt.timezone.utc)


def decision(event: str, kind: str, message: str, rule: str = "daily_loss") -> Decision:
    return Decision(account="A", event_id=event, ts=TS, kind=kind, rule=rule, phase="phase-1", message=message)


def test_compare_decisions_pairs_equal_decisions_and_keeps_each_side_in_its_order():
    breach_v1 = decision("e1", "breach", "equity 95,500.00 fell below the daily floor 96,000.00")
    warning_v2 = decision("e1", "warning", "daily loss at 90% of the limit")
    same = decision("e0", "warning", "max loss at 80% of the limit", rule="max_loss")
    lost, gained = compare_decisions([same, breach_v1], [same, warning_v2])
    assert lost == [breach_v1] and gained == [warning_v2]


def test_compare_decisions_counts_repeats_and_sees_changed_numbers():
    a = decision("e1", "blocked", "target met; 2 of 4 trading days")
    assert compare_decisions([a, a], [a]) == ([a], [])
    other_numbers = decision("e1", "blocked", "target met; 2 of 5 trading days")
    assert compare_decisions([a], [other_numbers]) == ([a], [other_numbers])
    assert compare_decisions([], []) == ([], [])


def test_a_halt_scope_must_name_its_accounts_or_say_all():
    with pytest.raises(Invalid, match="scope"):
        HaltScope()
    with pytest.raises(Invalid, match="not both"):
        HaltScope(everything=True, phase="funded")
    assert HaltScope(everything=True).to_dict() == {"all": True}
    scope = HaltScope(pack_id="two-step-100k", phase="funded", accounts=("A1", "A2"))
    assert scope.to_dict() == {"pack_id": "two-step-100k", "phase": "funded", "accounts": ["A1", "A2"]}
    assert scope.describe() == "pack id two-step-100k, phase funded, 2 listed account(s)"


def test_a_reason_is_required_and_trimmed():
    assert reason_text("  feed fault ") == "feed fault"
    for bad in ("", "  ", "ab", None, "x" * 2001):
        with pytest.raises(Invalid, match="reason"):
            reason_text(bad)


def test_a_re_bind_selection_lists_or_filters():
    with pytest.raises(Invalid, match="accounts"):
        Selection().check()
    Selection(phase="funded").check()
    Selection(external_ids=("A1",)).check()
    with pytest.raises(Invalid, match="at most"):
        Selection(account_ids=tuple(range(1, 502))).check()
