"""Abusers who read the rules (issue 18): legs opened minutes apart and split, copies tens of seconds late
and scaled, rings larger than any office — found; honest offices and the London/New York crowds — not."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from propcrm.analytics.detect import AnalysisConfig, find_copy, find_hedging
from propcrm.analytics.evaluate import evaluate, risk_auc
from propcrm.analytics.frame import frame_from_events
from propcrm.analytics.run import analyze, report_text
from propcrm.domain.events import DECODER
from propcrm.synth.abuse import AbuseSpec, generate

from .helpers import closed, frame_of, opened

SPEC = AbuseSpec(seed=11, honest=400, days=5, adaptive=True, hedge_pairs=5, copy_groups=3, latency=3, martingale=3,
                 linked_groups=3, cgnat_accounts=20, same_person_pairs=4, offices=3, device_ring=20, ipv6_ring=14)
CORRELATED = AnalysisConfig(correlated=((("EURUSD", 1), ("GBPUSD", 1)),))


@pytest.fixture(scope="module")
def firm():
    events, crm, truth = generate(SPEC)
    frame = frame_from_events([DECODER.decode(json.dumps(e)) for e in events],
                              traders={a: c["trader"] for a, c in crm.items()},
                              payments={a: c["payments"] for a, c in crm.items()})
    return analyze(frame, CORRELATED), truth


def test_adaptive_abusers_are_found_and_offices_and_crowds_are_not(firm):
    analysis, truth = firm
    result = evaluate(analysis, truth)
    for detector, r in result.items():
        assert r["precision"] >= 0.95 and r["recall"] >= 0.95, (detector, r["false_positives"], r["missed"])
        assert not any(r["honest_overlap_false_positives"].values()), (detector, r["honest_overlap_false_positives"])
    overlap = truth["honest_overlap"]
    assert len(overlap["offices"]) >= 24 and overlap["new_york_crowd"]
    assert risk_auc(analysis, truth)["auc"] >= 0.95


def test_a_ring_on_one_device_is_linked_however_many_share_it_and_an_ipv6_ring_needs_its_trading(firm):
    analysis, truth = firm
    device_ring = next(g for g in truth["linkage"] if g[0].startswith("RNG1"))
    ipv6_ring = next(g for g in truth["linkage"] if g[0].startswith("RNG2"))
    by_members = {f.accounts: f for f in analysis.findings["linkage"]}
    assert tuple(device_ring) in by_members and len(device_ring) == 20
    assert by_members[tuple(device_ring)].chance < 1e-12  # twenty "people" on one device is no accident
    ring = next(f for f in analysis.findings["linkage"] if set(f.accounts) & set(ipv6_ring))
    assert set(ring.accounts) == set(ipv6_ring)
    assert all(link["via"] == "ip" and link["crowded"] for link in ring.evidence["links"])
    assert "trading coincides" in ring.evidence["links"][0]["corroboration"]


def test_crowded_values_are_reported_with_their_size(firm):
    analysis, truth = firm
    crowded = {c["value"]: c for c in analysis.to_dict()["crowded_values"]}
    offices = {f"198.51.250.{o + 1}" for o in range(SPEC.offices)}
    assert offices <= set(crowded) and "100.64.7.9" in crowded and "2001:db8:beef:1::/64" in crowded
    for office in offices:
        assert 8 <= crowded[office]["accounts"] <= 11 and crowded[office]["corroborated"] == []
    assert crowded["2001:db8:beef:1::/64"]["corroborated"]
    assert "crowded values (weak evidence" in report_text(analysis)


def test_a_hedge_whose_legs_open_minutes_apart_in_parts_of_another_size_is_found():
    events = []
    for k in range(6):
        at, side = 3600 * k, ("buy", "sell")[k % 2]
        other = ("sell", "buy")[k % 2]
        events.append(opened("HA", f"a{k}", at, side=side, lots="2", price="1.08500"))
        events.append(closed("HA", f"a{k}", at + 3000, lots="2", profit="-50.00"))
        for part, (delay, lots) in enumerate(((240, "1.2"), (420, "1.1"))):  # 4 and 7 minutes later, 2.3 lots
            events.append(opened("HB", f"b{k}.{part}", at + delay, side=other, lots=lots, price="1.08498"))
            events.append(closed("HB", f"b{k}.{part}", at + 3000 + delay // 10, lots=lots, profit="25.00"))
    [finding] = find_hedging(frame_of(events), AnalysisConfig())
    assert finding.accounts == ("HA", "HB")
    assert finding.evidence["pairs"][0]["hedged_positions"] == {"HA": 6, "HB": 12}


def test_copies_half_a_minute_late_at_their_own_scale_skipping_signals_are_found():
    rng = random.Random(4)
    events = []
    for k in range(16):
        day, at = k % 5, rng.uniform(3600, 30000)
        side, lots = rng.choice(("buy", "sell")), Decimal(rng.choice(("0.5", "1", "2")))
        symbol = rng.choice(("EURUSD", "XAUUSD", "GBPUSD"))
        events.append(opened("LEAD", f"p{k}", at, side=side, lots=str(lots), symbol=symbol, day=day))
        events.append(closed("LEAD", f"p{k}", at + 900, lots=str(lots), day=day))
        if k % 4 != 3:  # the follower skips a quarter of the signals
            size = str((lots * Decimal("1.5")).quantize(Decimal("0.01")))
            late = at + rng.uniform(15, 45)
            events.append(opened("FOLLOW", f"p{k}", late, side=side, lots=size, symbol=symbol, day=day))
            events.append(closed("FOLLOW", f"p{k}", late + 900, lots=size, day=day))
    [finding] = find_copy(frame_of(events), AnalysisConfig())
    assert finding.accounts == ("FOLLOW", "LEAD")
    assert finding.evidence["pairs"][0]["size_ratio_median"] == pytest.approx(1 / 1.5, rel=0.01)


def test_a_hedge_hidden_in_the_london_open_crowd_is_found_and_the_crowd_is_not():
    """Hundreds of EURUSD opens in the first minutes after the London open put a leg opened two minutes
    later far beyond any neighbour limit among the opens; the legs still come off together."""
    rng = random.Random(18)
    london = 7 * 3600
    events = []
    for day in range(16):
        for n in range(200):  # the crowd: 200 traders a day, each in and out on its own
            at = london + rng.uniform(0, 300)
            lots = rng.choice(("0.5", "1", "2"))
            events.append(opened(f"H{n:03d}", f"h{day}.{n}", at, side=rng.choice(("buy", "sell")), lots=lots, day=day))
            events.append(closed(f"H{n:03d}", f"h{day}.{n}", at + rng.uniform(300, 4 * 3600), lots=lots, day=day))
        at, side, other = london + rng.uniform(0, 60), ("buy", "sell")[day % 2], ("sell", "buy")[day % 2]
        delay = rng.uniform(90, 180)
        events.append(opened("HA", f"a{day}", at, side=side, lots="2", day=day))
        events.append(closed("HA", f"a{day}", at + 3600, lots="2", profit="-80.00", day=day))
        events.append(opened("HB", f"b{day}", at + delay, side=other, lots="2.2", day=day))
        events.append(closed("HB", f"b{day}", at + 3600 + rng.uniform(-120, 120), lots="2.2", profit="85.00", day=day))
    findings = find_hedging(frame_of(events), AnalysisConfig())
    assert [f.accounts for f in findings] == [("HA", "HB")]
