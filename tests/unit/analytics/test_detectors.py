"""What each detector flags — and, as importantly, what it leaves alone — with the evidence it shows."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from propcrm.analytics.detect import (AnalysisConfig, find_copy, find_hedging, find_latency, find_linkage,
                                      find_martingale)
from propcrm.analytics.frame import network_of
from propcrm.analytics.run import analyze, report_text

from .helpers import closed, frame_of, opened, price, session

CONFIG = AnalysisConfig()


# --------------------------------------------------------------------------------------------------
# linkage


def test_ipv6_addresses_link_by_their_64_network_and_ipv4_exactly():
    assert network_of("2001:db8:aa:1:1111:2222:3333:4444") == network_of("2001:db8:aa:1::9") == "2001:db8:aa:1::/64"
    assert network_of("2001:db8:aa:2::9") != network_of("2001:db8:aa:1::9")
    assert network_of("::ffff:198.51.100.7") == "198.51.100.7"
    assert network_of(" 198.51.100.7 ") == "198.51.100.7" != network_of("198.51.100.8")
    events = [
        session("A", 0, "2001:db8:aa:1:1111:2222:3333:4444", "dev-a"),
        session("B", 60, "2001:db8:aa:1:9999:8888:7777:6666", "dev-b"),  # same /64, another privacy address
        session("C", 120, "2001:db8:aa:2:1111:2222:3333:4444", "dev-c"),  # next /64: another household
        session("D", 180, "198.51.100.7", "dev-d"),
        session("E", 240, "198.51.100.8", "dev-e"),
    ]
    links, findings = find_linkage(frame_of(events), CONFIG)
    assert [(f.accounts, f.evidence["links"][0]["via"], f.evidence["links"][0]["value"]) for f in findings] == [
        (("A", "B"), "ip", "2001:db8:aa:1::/64")]
    assert findings[0].evidence["links"][0]["last_seen"] == "2026-03-02T07:01:00Z"


def test_one_persons_own_accounts_are_linked_but_not_a_finding_and_a_crowded_address_links_nobody():
    events = [session("A1", 0, "10.0.0.1", "dev-same"), session("A2", 10, "10.0.0.2", "dev-same")]
    events += [session(f"M{k}", k, "100.64.0.1", f"dev-m{k}") for k in range(CONFIG.link_household_max + 1)]
    frame = frame_of(events, traders={"A1": "t1", "A2": "t1"})
    links, findings = find_linkage(frame, CONFIG)
    assert findings == []
    assert {(l["account_a"], l["account_b"], l["via"]) for l in links} == {("A1", "A2", "device"), ("A1", "A2", "trader")}
    # the same device under two *different* declared traders is a finding, and a shared card too
    frame = frame_of(events + [session("P1", 0, "10.1.0.1", "p1"), session("P2", 0, "10.1.0.2", "p2")],
                     traders={"A1": "t1", "A2": "t2"}, payments={"P1": ["card-9"], "P2": ["card-9"]})
    _, findings = find_linkage(frame, CONFIG)
    assert [(f.accounts, sorted({l["via"] for l in f.evidence["links"]})) for f in findings] == [
        (("A1", "A2"), ["device"]), (("P1", "P2"), ["payment"])]


# --------------------------------------------------------------------------------------------------
# hedging


def _hedge_history(pairs=4, *, partial=True, gap=5):
    events = []
    for k in range(pairs):
        at = 3600 * k
        side_a, side_b = ("buy", "sell") if k % 2 == 0 else ("sell", "buy")
        events.append(opened("HA", f"a{k}", at, side=side_a, lots="2", price="1.08500"))
        events.append(opened("HB", f"b{k}", at + gap, side=side_b, lots="2.2", price="1.08498"))
        events.append(closed("HA", f"a{k}", at + 1800, lots="2", profit="-120.50", commission="-14.00"))
        if partial:  # one side closes in two parts
            events.append(closed("HB", f"b{k}", at + 1700, lots="1.1", profit="60.10", commission="-7.70"))
            events.append(closed("HB", f"b{k}", at + 1900, lots="1.1", profit="58.15", commission="-7.70"))
        else:
            events.append(closed("HB", f"b{k}", at + 1800, lots="2.2", profit="118.25", commission="-15.40"))
    return events


def test_a_hedge_split_across_partial_closes_is_found_with_exact_combined_pl_and_net_exposure():
    frame = frame_of(_hedge_history())
    [finding] = find_hedging(frame, CONFIG)
    assert finding.accounts == ("HA", "HB")
    [pair] = finding.evidence["pairs"]
    assert pair["hedged_positions"] == {"HA": 4, "HB": 4} and pair["matched"] == 4  # pairs of positions
    # per pair of trades: -120.50 - 14.00 + 60.10 - 7.70 + 58.15 - 7.70 = -31.65; four of them
    assert Decimal(pair["combined_profit"]) == Decimal("-126.60") == Decimal(finding.evidence["combined_profit"])
    # each pair leaves 0.2 lots open one way; the sides alternate, so the four cancel out
    assert pair["net_exposure"] == {"EURUSD": "0"}
    one = frame_of(_hedge_history()[:5] + _hedge_history()[10:20])
    assert find_hedging(one, CONFIG)[0].evidence["net_exposure"] == {"EURUSD": "-0.2"}
    first = pair["trades"][0]
    assert first["a"]["position"] == "a0" and first["b"]["position"] == "b0" and first["gap_s"] == 5.0
    assert first["b"]["closes"][0] == {"at": "2026-03-02T07:28:20Z", "lots": "1.1", "price": "1.08600",
                                       "profit": "60.10", "commission": "-7.70", "swap": "0"}
    assert first["a"]["opened_at"] == "2026-03-02T07:00:00Z" and first["a"]["open_price"] == "1.08500"
    text = report_text(analyze(frame))
    assert "HA a0 buy 2 EURUSD @ 1.08500 2026-03-02T07:00:00Z" in text and "combined P/L -126.60" in text


def test_hedging_needs_repetition_and_held_together_exposure_but_no_window_or_equal_size():
    assert find_hedging(frame_of(_hedge_history(pairs=2)), CONFIG) == []  # twice is not a pattern
    # the second leg a minute later, or five minutes later, is still a hedge: exposure is held together
    for gap in (61, 300):
        assert [f.accounts for f in find_hedging(frame_of(_hedge_history(gap=gap)), CONFIG)] == [("HA", "HB")]
    # 3 lots against 2 still cancels 2 lots of exposure
    events = [dict(e, lots="3") if e["type"] == "trade_opened" and e["account"] == "HB" else e for e in _hedge_history()]
    assert len(find_hedging(frame_of(events), CONFIG)) == 1
    # the second leg opened after the first was closed holds no exposure together with it
    late = _hedge_history(gap=1900, partial=False)
    assert find_hedging(frame_of(late), CONFIG) == []


def test_opposite_trades_on_correlated_symbols_are_a_hedge_only_when_configured():
    events = [dict(e, symbol="GBPUSD") if e["type"] == "trade_opened" and e["account"] == "HB" else e
              for e in _hedge_history()]
    assert find_hedging(frame_of(events), CONFIG) == []
    correlated = AnalysisConfig(correlated=((("EURUSD", 1), ("GBPUSD", 1)),))
    assert find_hedging(frame_of(events), correlated)[0].accounts == ("HA", "HB")
    # a negatively correlated pair hedges with the *same* side
    same_side = [dict(e, symbol="USDCHF", side="buy" if e["side"] == "sell" else "sell")
                 if e["type"] == "trade_opened" and e["account"] == "HB" else e for e in _hedge_history()]
    inverse = AnalysisConfig(correlated=((("EURUSD", 1), ("USDCHF", -1)),))
    assert find_hedging(frame_of(same_side), inverse)[0].accounts == ("HA", "HB")


# --------------------------------------------------------------------------------------------------
# copy trading and the London open crowd


def _london_open_crowd(rng, accounts=120, days=8):
    """Everyone trades EURUSD in the first five minutes, both sides, the same round sizes."""
    events = []
    for a in range(accounts):
        for day in range(days):
            if rng.random() < 0.8:
                at = rng.uniform(0, 300)
                side = rng.choice(("buy", "sell"))
                lots = rng.choice(("0.5", "1", "1", "2"))
                events.append(opened(f"H{a:03d}", f"p{day}", at, side=side, lots=lots, day=day))
                events.append(closed(f"H{a:03d}", f"p{day}", at + rng.uniform(600, 7200), lots=lots,
                                     profit=f"{rng.uniform(-200, 200):.2f}", day=day))
    return events


def _copy_group(rng, members=("C1", "C2", "C3"), trades=12, factors=("1", "2", "0.5")):
    events = []
    for k in range(trades):
        day, at = k % 8, rng.uniform(3600, 30000)
        side, lots = rng.choice(("buy", "sell")), Decimal(rng.choice(("0.5", "1", "2")))
        symbol = rng.choice(("EURUSD", "XAUUSD"))
        for m, (name, factor) in enumerate(zip(members, factors)):
            size = str(lots * Decimal(factor))
            events.append(opened(name, f"p{k}", at + m * 0.9, side=side, lots=size, symbol=symbol, day=day))
            events.append(closed(name, f"p{k}", at + 900 + m, lots=size, day=day))
    return events


def test_the_london_open_crowd_is_not_flagged_but_a_copy_group_inside_it_is():
    rng = random.Random(5)
    crowd = _london_open_crowd(rng)
    frame = frame_of(crowd)
    assert find_copy(frame, CONFIG) == [] and find_hedging(frame, CONFIG) == []
    group = _copy_group(rng)
    # the group also trades in the crowd: its own London-open trades are copied too
    for day in range(8):
        at, side = rng.uniform(0, 300), rng.choice(("buy", "sell"))
        for m, (name, size) in enumerate((("C1", "1"), ("C2", "2"), ("C3", "0.5"))):
            group.append(opened(name, f"lo{day}", at + m * 0.7, side=side, lots=size, day=day))
    [finding] = find_copy(frame_of(crowd + group), CONFIG)
    assert finding.accounts == ("C1", "C2", "C3")
    assert finding.chance <= 1e-3 and finding.score >= 50
    by_pair = {tuple(p["accounts"]): p for p in finding.evidence["pairs"]}
    assert by_pair[("C1", "C2")]["size_ratio_median"] == 2.0 and by_pair[("C1", "C2")]["usually_first"] == "C1"
    assert by_pair[("C1", "C3")]["matched"] == 20


def test_copy_needs_a_consistent_size_ratio():
    rng = random.Random(3)
    events = _copy_group(rng, members=("C1", "C2"), factors=("1", "1"))
    wild = [dict(e, lots=str(rng.choice((1, 5, 0.1)))) if e["type"] == "trade_opened" and e["account"] == "C2" else e
            for e in events]
    assert len(find_copy(frame_of(events), CONFIG)) == 1
    assert find_copy(frame_of(wild), CONFIG) == []


# --------------------------------------------------------------------------------------------------
# latency, martingale


def _quotes():
    out = []
    for k in range(0, 200):  # a quote every 10 s; every 20th a jump of 5 pips up
        bid = Decimal("1.08500") + Decimal("0.00050") * (k // 20)
        out.append(price(k * 10, str(bid), str(bid + Decimal("0.00008"))))
    return out


def test_fills_at_stale_prices_in_the_traders_favour_are_reported_with_the_price_gap():
    events = _quotes()
    for n in range(8):  # just after each jump, filled at the ask from before it
        at = (n + 1) * 200 + 0.4
        stale_ask = Decimal("1.08508") + Decimal("0.00050") * n
        events.append(opened("LAT", f"p{n}", at, lots="1", price=str(stale_ask), order_at=at - 1.2))
        events.append(closed("LAT", f"p{n}", at + 6, lots="1", price="1.09", profit="42.00"))
        # an honest scalper filled at the market (a point of slippage either way)
        honest_ask = stale_ask + Decimal("0.00050") + Decimal("0.00001") * (1 if n % 2 else -1)
        events.append(opened("SCALP", f"p{n}", at + 0.2, lots="1", price=str(honest_ask), order_at=at))
        events.append(closed("SCALP", f"p{n}", at + 20, lots="1", price="1.09", profit="5.00" if n % 2 else "-5.00"))
    [finding] = find_latency(frame_of(events), CONFIG)
    assert finding.accounts == ("LAT",)
    trade = finding.evidence["trades"][0]
    assert trade["open_price"] == "1.08508" and trade["reference_at_fill"] == {
        "at": "2026-03-02T07:03:20Z", "bid": "1.0855", "ask": "1.08558"}
    assert trade["gap_in_traders_favour"] == "0.0005" and trade["gap_spreads"] == 6.25
    assert finding.evidence["stale_share"] == 1.0 and finding.evidence["win_rate_on_stale"] == 1.0


def test_a_martingale_doubles_after_losses_and_a_trader_who_varies_size_does_not():
    events, lots, at = [], Decimal("0.1"), 0
    outcomes = [-1, -1, -1, 1, -1, -1, 1, -1, -1, -1, 1, -1, 1]
    for k, result in enumerate(outcomes):
        events.append(opened("MRT", f"p{k}", at, lots=str(lots)))
        events.append(closed("MRT", f"p{k}", at + 300, lots=str(lots), profit="50.00" if result > 0 else "-50.00"))
        lots = lots * 2 if result < 0 else Decimal("0.1")
        at += 900
    rng = random.Random(1)
    for k in range(len(outcomes)):
        size = rng.choice(("0.5", "1", "2"))
        events.append(opened("VAR", f"p{k}", k * 900, lots=size))
        events.append(closed("VAR", f"p{k}", k * 900 + 300, lots=size, profit="-10.00" if k % 2 else "10.00"))
    [finding] = find_martingale(frame_of(events), CONFIG)
    assert finding.accounts == ("MRT",) and finding.evidence["median_lot_multiplier_after_loss"] == 2.0


# --------------------------------------------------------------------------------------------------
# the risk score


def test_scores_are_0_to_100_with_the_top_features_explained():
    rng = random.Random(9)
    events = _london_open_crowd(rng, accounts=30, days=4) + _hedge_history(pairs=8)
    analysis = analyze(frame_of(events))
    scores = analysis.scores.score
    assert scores.min() >= 0 and scores.max() <= 100
    ha = analysis.frame.accounts.index("HA")
    explanation = analysis.scores.explain(ha)
    assert explanation["detectors"] == ["hedging"]
    assert explanation["top"][0]["feature"] == "detector:hedging"
    # a calibrated finding puts the account above anything behaviour alone reaches
    assert explanation["score"] >= 99 > 80 >= max(analysis.scores.behaviour)
    for name, feature in explanation["features"].items():
        assert 0 <= feature["percentile"] <= 100 and feature["points"] >= 0, name


def test_an_empty_history_analyses_to_nothing():
    analysis = analyze(frame_of([]))
    assert analysis.all_findings() == [] and analysis.to_dict()["accounts"] == 0


@pytest.mark.parametrize("field", ["hedge_max_delay_s", "copy_min_matches"])
def test_a_bad_threshold_is_refused_naming_the_field(field, tmp_path):
    from typer.testing import CliRunner

    from propcrm.cli import app

    (tmp_path / "cfg.json").write_text(f'{{"{field}": "soon"}}')
    (tmp_path / "e.ndjson").write_text("")
    result = CliRunner().invoke(app, ["analyze", "files", str(tmp_path / "e.ndjson"), "--config", str(tmp_path / "cfg.json")])
    assert result.exit_code == 2 and field in result.output


def test_winning_nearly_every_very_short_trade_or_slipping_only_one_way_is_latency_abuse_too():
    events = []
    for n in range(25):
        at = n * 600
        events.append(opened("QUICK", f"p{n}", at, lots="1"))
        events.append(closed("QUICK", f"p{n}", at + 20, profit="-5.00" if n == 3 else "12.00"))
        events.append(opened("SCALP", f"p{n}", at + 1, lots="1"))
        events.append(closed("SCALP", f"p{n}", at + 21, profit="12.00" if n % 2 else "-12.00"))
    [finding] = find_latency(frame_of(events), CONFIG)  # no reference prices needed for this one
    assert finding.accounts == ("QUICK",) and finding.evidence["reasons"] == ["won 96% of 25 trades held 20 s (median)"]
    # slippage measured against the quote at the order's time: always for the trader, or either way
    quotes = [price(k * 10, "1.08500", "1.08508") for k in range(400)]
    slips = []
    for n in range(30):
        at = n * 120 + 5
        slips.append(opened("SLIP", f"p{n}", at, lots="1", price="1.08506", order_at=at - 0.5))  # 2 points better
        slips.append(closed("SLIP", f"p{n}", at + 600, profit="-1.00" if n % 2 else "1.00"))
        fair = "1.08510" if n % 2 else "1.08506"
        slips.append(opened("FAIR", f"p{n}", at + 1, lots="1", price=fair, order_at=at + 0.5))
        slips.append(closed("FAIR", f"p{n}", at + 601, profit="-1.00" if n % 2 else "1.00"))
    [finding] = find_latency(frame_of(quotes + slips), CONFIG)
    assert finding.accounts == ("SLIP",)
    assert finding.evidence["reasons"] == ["slippage in the trader's favour on 30 of 30 fills that slipped"]
    assert finding.evidence["trades"][0]["slippage_from_order_time"] == "0.00002"


def test_evidence_of_a_position_closed_in_parts_shows_exact_lots_and_a_decimal_close_price():
    events = [opened("PX", "p0", 0, symbol="BTCUSD", lots="0.3", price="65432.10"),
              closed("PX", "p0", 60, lots="0.1", price="65432.17", profit="0.01", commission="0"),
              closed("PX", "p0", 120, lots="0.1", price="65432.20", profit="0.01", commission="0"),
              closed("PX", "p0", 180, lots="0.1", price="65432.20", profit="0.01", commission="0")]
    evidence = frame_of(events).trade_evidence(0)
    assert evidence["closed_lots"] == "0.3"  # not 0.1 + 0.1 + 0.1 in floats
    assert evidence["close_price"] == "65432.19 (lots-weighted)"  # not 6 significant digits
    assert evidence["net_profit"] == "0.03"
