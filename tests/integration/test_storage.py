"""Storage on both backends: migrations, exact money, aware times, firm scoping of uniqueness."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, migrate, sessions


def test_migrations_are_idempotent_and_money_and_time_round_trip_exactly(db_url):
    migrate(db_url)  # a second run changes nothing
    engine = make_engine(db_url)
    Session = sessions(engine)
    with Session.begin() as s:
        s.add(m.Firm(id="f1", name="Firm One"))
        s.add(m.RulePackVersion(firm_id="f1", pack_id="p", version=1, content_hash="sha256:x", body="{}"))
    with Session.begin() as s:
        pack = s.scalars(select(m.RulePackVersion)).one()
        s.add(m.Product(firm_id="f1", name="100k", pack_version_id=pack.id,
                        account_size=Decimal("100000.00"), price=Decimal("0.1") + Decimal("0.2"), currency="USD"))
    with Session() as s:
        product = s.scalars(select(m.Product)).one()
        assert product.price == Decimal("0.3") and isinstance(product.price, Decimal)
        assert product.account_size == Decimal("100000")
        firm = s.get(m.Firm, "f1")
        assert firm.created_at.tzinfo is not None
    engine.dispose()


def test_money_refuses_floats_and_naive_times_are_refused(db_url):
    engine = make_engine(db_url)
    Session = sessions(engine)
    with Session.begin() as s:
        s.add(m.Firm(id="f1", name="x"))
    with pytest.raises(Exception, match="Decimal"):
        with Session.begin() as s:
            s.add(m.RulePackVersion(firm_id="f1", pack_id="p", version=1, content_hash="h", body="{}"))
            s.flush()
            pack = s.scalars(select(m.RulePackVersion)).one()
            s.add(m.Product(firm_id="f1", name="x", pack_version_id=pack.id, account_size=100000.0,
                            price=Decimal(1), currency="USD"))
    with pytest.raises(Exception, match="timezone-aware"):
        with Session.begin() as s:
            s.add(m.Firm(id="f2", name="y", created_at=dt.datetime(2026, 1, 1)))
    engine.dispose()


def test_an_event_id_is_unique_per_firm_and_source_only(db_url):
    engine = make_engine(db_url)
    Session = sessions(engine)
    ts = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)
    with Session.begin() as s:
        s.add_all([m.Firm(id="f1", name="a"), m.Firm(id="f2", name="b")])
    with Session.begin() as s:
        s.add(m.RawEvent(firm_id="f1", source="mt5", event_id="e1", type="equity", ts=ts, body=b"{}"))
        s.add(m.RawEvent(firm_id="f2", source="mt5", event_id="e1", type="equity", ts=ts, body=b"{}"))
        s.add(m.RawEvent(firm_id="f1", source="ctrader", event_id="e1", type="equity", ts=ts, body=b"{}"))
    with pytest.raises(IntegrityError):
        with Session.begin() as s:
            s.add(m.RawEvent(firm_id="f1", source="mt5", event_id="e1", type="equity", ts=ts, body=b"{}"))
    engine.dispose()
