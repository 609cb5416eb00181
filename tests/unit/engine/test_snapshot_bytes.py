"""A snapshot is the same bytes in every process: the news calendar's de-duplication keys are a set, whose
iteration order follows the string hash seed of the process (PYTHONHASHSEED), so it is encoded sorted.
Two processes with different seeds build the same engine and must write the same snapshot."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import datetime as dt, hashlib
from propcrm.domain.market import Market, NewsEntry
from propcrm.engine.runner import Engine
engine = Engine(lambda name: None)
engine.market = Market()
base = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.timezone.utc)
for i, (title, currency) in enumerate([("CPI", "USD"), ("NFP", "USD"), ("ECB rate", "EUR"), ("BoE rate", "GBP"),
                                       ("GDP", "JPY"), ("Retail sales", "AUD"), ("PMI", "CHF"), ("FOMC", "USD")]):
    engine.market.add_news(NewsEntry(base, title, "high", currency, None, f"n{i}"))
blob = engine.snapshot()
again = Engine(lambda name: None)
again.restore(blob)
assert again.market.news_keys == engine.market.news_keys and again.snapshot() == blob  # decodes back to the set
print(hashlib.sha256(blob).hexdigest())
"""


def _digest(seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("seeds", [("1", "2", "3")])
def test_the_same_engine_snapshots_to_the_same_bytes_under_any_hash_seed(seeds):
    digests = {_digest(seed) for seed in seeds}
    assert len(digests) == 1, digests
    assert len(next(iter(digests))) == len(hashlib.sha256().hexdigest())
