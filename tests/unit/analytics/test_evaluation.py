"""The planted-abuse firm: deterministic, and every detector finds what was planted (and only that)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from propcrm.analytics.detect import AnalysisConfig
from propcrm.analytics.evaluate import evaluate
from propcrm.analytics.frame import frame_from_events
from propcrm.analytics.incremental import HistoryIndex, analyze_batch, take
from propcrm.analytics.run import analyze
from propcrm.domain.events import DECODER
from propcrm.synth.abuse import AbuseSpec, generate, write_firm

SPEC = AbuseSpec(seed=3, honest=150, days=4, hedge_pairs=4, copy_groups=2, latency=3, martingale=3, linked_groups=3,
                 cgnat_accounts=20, same_person_pairs=4)
CORRELATED = AnalysisConfig(correlated=((("EURUSD", 1), ("GBPUSD", 1)),))


def _frame(events, crm):
    return frame_from_events([DECODER.decode(json.dumps(e)) for e in events],
                             traders={a: c["trader"] for a, c in crm.items()},
                             payments={a: c["payments"] for a, c in crm.items()})


def test_the_generator_is_deterministic_and_writes_its_files(tmp_path):
    paths = write_firm(AbuseSpec(seed=1, honest=10, days=2), tmp_path / "a")
    again = write_firm(AbuseSpec(seed=1, honest=10, days=2), tmp_path / "b")
    for name in ("events", "crm", "truth"):
        assert paths[name].read_bytes() == again[name].read_bytes()
    lines = paths["events"].read_text().splitlines()
    types = {json.loads(line)["type"] for line in lines}
    assert types == {"price", "news", "session", "trade_opened", "trade_closed"}
    opens = [json.loads(line) for line in lines if '"trade_opened"' in line]
    assert all("order_ts" in e and "ip" in e and "device" in e for e in opens)


@pytest.fixture(scope="module")
def firm():
    """The planted-abuse firm, its frame and the full analysis: built once, read by both tests below (the
    analysis only memoises what it derives from the frame on it)."""
    events, crm, truth = generate(SPEC)
    frame = _frame(events, crm)
    return frame, analyze(frame, CORRELATED), truth


def test_precision_and_recall_are_at_least_95_percent_and_the_honest_overlap_is_not_flagged(firm):
    _, analysis, truth = firm
    result = evaluate(analysis, truth)
    for detector, r in result.items():
        assert r["precision"] >= 0.95 and r["recall"] >= 0.95, (detector, r)
        assert not any(r["honest_overlap_false_positives"].values()), (detector, r)
    assert truth["honest_overlap"]["london_crowd"] and truth["honest_overlap"]["cgnat"]


def test_an_incremental_batch_finds_what_a_full_analysis_finds_for_its_accounts(firm):
    frame, full, _ = firm
    newest = np.argsort(frame.open_ms, kind="stable")
    cut = int(frame.n * 0.8)
    history, batch_rows = take(frame, np.sort(newest[:cut])), np.sort(newest[cut:])
    batch = take(frame, batch_rows)
    increment, touched = analyze_batch(HistoryIndex.build(history), batch, CORRELATED,
                                       population=full.scores.population)
    for detector in ("hedging", "copy", "martingale"):
        expected = {f.accounts for f in full.findings[detector] if set(f.accounts) & touched}
        got = {f.accounts for f in increment.findings[detector] if set(f.accounts) & touched}
        assert got == expected, detector
    assert len(increment.frame.accounts) < len(frame.accounts)
