"""A pass held back by too few trading days reaches the trader as a notification, like consistency does."""

from __future__ import annotations

from propcrm.adapters.notify.notices import notice_of
from propcrm.services.outcomes import AccountRef, decision_effects

from rulekit import Trader, make_pack, only, utc


def test_a_days_blocker_becomes_a_notification_that_says_to_keep_trading():
    t = Trader(make_pack("{kind: profit_target, amount: {pct_initial: 10}}", "{kind: min_trading_days, days: 4}"))
    t.open(utc("2026-03-02 09:00"), "p1")
    decision = only(t.close(utc("2026-03-02 10:00"), "p1", "10000.00"))
    account = AccountRef(id=1, firm_id="fa", external_id="A1", platform="mt5", login="1001", trader_id=7,
                         pack_version_id=1, phase="phase-1", status="active")
    effects = decision_effects(account, decision, 42)
    assert [kind for kind, _, _ in effects] == ["notify"]
    notice = notice_of(effects[0][1])
    assert notice.title == "Account A1: target reached, but min trading days holds"
    assert notice.body.startswith("target met but minimum trading days: 1 of 4 trading days — keep trading\n")
    assert "cannot pass" in notice.body
