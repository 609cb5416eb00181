"""Invariants of the analysis (hypothesis): who is flagged does not depend on names, ids or event order;
scores stay within 0–100 whatever the history."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from propcrm.analytics.run import analyze

from .helpers import closed, frame_of, opened, session

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _history(seed: int, accounts: int, planted: str) -> list[dict]:
    """Random traders, and (planted) a hedging pair, a copy pair or a shared device among them."""
    rng = random.Random(seed)
    names = [f"acc{k}" for k in range(accounts)]
    events, used = [], set()
    for name in names:
        own = rng.randint(1, 3) if planted != "none" and name in ("acc0", "acc1") else rng.randint(3, 10)
        times = rng.sample(range(0, 20_000, 7), own)
        for n, at in enumerate(times):
            lots = rng.choice(("0.5", "1", "2"))
            events.append(opened(name, f"{name}-p{n}", at, side=rng.choice(("buy", "sell")), lots=lots,
                                 symbol=rng.choice(("EURUSD", "GBPUSD"))))
            events.append(closed(name, f"{name}-p{n}", at + rng.randint(5, 3000), lots=lots,
                                 profit=f"{rng.uniform(-99, 99):.2f}"))
        events.append(session(name, rng.randint(0, 9000), f"10.0.{rng.randint(0, 3)}.{len(used)}", f"dev-{name}"))
        used.add(name)
    if planted != "none":
        a, b = "acc0", "acc1"
        for n in range(6):
            at = 30_000 + n * 997
            events.append(opened(a, f"x{n}", at, side="buy", lots="1"))
            side = "sell" if planted == "hedge" else "buy"
            events.append(opened(b, f"y{n}", at + 1 + n % 2, side=side, lots="1"))
            events.append(closed(a, f"x{n}", at + 600, profit="10.00"))
            events.append(closed(b, f"y{n}", at + 601, profit="-10.00"))
        if planted == "device":
            events.append(session(a, 50, "10.9.9.1", "dev-shared"))
            events.append(session(b, 60, "10.9.9.2", "dev-shared"))
    return events


def _relabel(events: list[dict], rng: random.Random) -> tuple[list[dict], dict[str, str]]:
    accounts = sorted({e["account"] for e in events if "account" in e})
    fresh = rng.sample(range(10_000), len(accounts))
    names = {a: f"Z{n:04d}" for a, n in zip(accounts, fresh)}
    out = []
    for e in events:
        e = dict(e)
        if "account" in e:
            e["account"] = names[e["account"]]
        if "position" in e:
            e["position"] = f"q-{e['account']}-{abs(hash(e['position'])) % 10**9}"
        e["id"] = f"r{rng.random()}"
        out.append(e)
    rng.shuffle(out)  # any order: equal timestamps included
    return out, names


def _summary(analysis, names=None):
    rename = names or {}
    return sorted((f.detector, tuple(sorted(rename.get(a, a) for a in f.accounts)), f.score)
                  for f in analysis.all_findings())


@SETTINGS
@given(seed=st.integers(0, 10**6), accounts=st.integers(2, 7), planted=st.sampled_from(["none", "hedge", "copy", "device"]),
       shuffle_seed=st.integers(0, 10**6))
def test_findings_do_not_depend_on_account_names_position_ids_or_event_order(seed, accounts, planted, shuffle_seed):
    events = _history(seed, accounts, planted)
    relabelled, names = _relabel(events, random.Random(shuffle_seed))
    before = _summary(analyze(frame_of(events)), names)
    after = _summary(analyze(frame_of(relabelled)))
    assert before == after
    if planted in ("hedge", "copy"):
        wanted = {"hedge": "hedging", "copy": "copy"}[planted]
        assert any(d == wanted and set(accs) >= {names["acc0"], names["acc1"]} for d, accs, _ in after)


@SETTINGS
@given(seed=st.integers(0, 10**6), accounts=st.integers(1, 6), planted=st.sampled_from(["none", "hedge", "copy"]))
def test_every_score_is_between_0_and_100_and_explained(seed, accounts, planted):
    analysis = analyze(frame_of(_history(seed, accounts, planted)))
    for a in range(len(analysis.frame.accounts)):
        explanation = analysis.scores.explain(a)
        assert 0 <= explanation["score"] <= 100
        assert len(explanation["top"]) <= 3
        assert all(0 <= f["percentile"] <= 100 for f in explanation["features"].values())
