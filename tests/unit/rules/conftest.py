"""Fixtures for the rule tests.

The helpers live in ``rulekit.py`` beside this file; the test modules import it by name, which needs
this folder on ``sys.path`` whatever pytest's import mode (the project runs ``--import-mode=importlib``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from rulekit import Trader, make_pack  # noqa: E402


@pytest.fixture
def trader_for():
    """``trader_for(*rules, **pack_kw)`` → a :class:`Trader` on a fresh one-phase pack."""

    def build(*rules: str, account: str = "A1", **kw) -> Trader:
        return Trader(make_pack(*rules, **kw), account)

    return build
