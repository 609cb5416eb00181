"""An account state written by an older version, before the bounds of money, prices and lots were
checked, still shows: its API and its page answer (numbers too large to write out are shown in
scientific notation) instead of a 500. New states cannot get there: ingestion refuses such events."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from propcrm.adapters.db import models as m
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import load_pack
from propcrm.domain.state import Position
from propcrm.services.evaluation import STATE_ENCODER
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")


def test_a_position_of_1e1000000_lots_stored_by_an_older_version_does_not_break_the_account(world):
    account_id = world.accounts["A1"]
    program = compile_pack(load_pack("two-step-100k")).phase("phase-1")
    st = program.new_state("A1")
    huge = Decimal("1e1000000")
    st.positions = {"p1": Position(symbol="EURUSD", side="buy", lots=huge, opened_lots=huge, price=Decimal("1.1"),
                                   opened_at=dt.datetime(2026, 3, 2, 10, tzinfo=dt.timezone.utc))}
    with world.sessions.begin() as s:
        row = s.get(m.AccountState, account_id)
        values = dict(state=STATE_ENCODER.encode(st), last_seq=0, balance=st.balance, equity=st.equity)
        if row is None:
            s.add(m.AccountState(account_id=account_id, firm_id="fa", **values))
        else:
            for name, value in values.items():
                setattr(row, name, value)
    api = world.client.get(f"/api/v1/accounts/{account_id}", headers=world.headers("risk"))
    assert api.status_code == 200, api.text
    page = browse(world, "risk").get(f"/office/accounts/{account_id}")
    assert page.status_code == 200, page.text[:500]
