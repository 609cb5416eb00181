"""The set-based write path: a batch of audit entries chains exactly as one-by-one appends would."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.services import audit

UTC = dt.timezone.utc


def _entries(n: int) -> list[dict]:
    ts = dt.datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    return [dict(actor="engine", action="decision.breach", entity="account", entity_id=f"A{i}", firm_id="f1",
                 ts=ts + dt.timedelta(seconds=i), after={"decision": i, "value": Decimal("94999.50")})
            for i in range(n)]


def test_append_many_chains_like_append_and_verifies(db_url):
    engine = make_engine(db_url)
    Session = sessions(engine)
    with Session.begin() as s:
        audit.append(s, actor="cli", action="firm.create", entity="firm", entity_id="f1")
        entries = audit.append_many(s, _entries(5))
        audit.append(s, actor="cli", action="key.create", entity="api_key", entity_id="k1")
    assert [entry.seq for entry in entries] == [2, 3, 4, 5, 6]  # numbered by the commit
    with Session() as s:
        assert audit.verify(s).ok
        rows = s.execute(select(m.AuditEntry.seq, m.AuditEntry.hash, m.AuditEntry.after)).all()
    assert [r.seq for r in rows] == list(range(1, 8))
    assert rows[1].after == {"decision": 0, "value": "94999.50"}  # exact decimal text, as append stores it

    # the same entries appended one by one chain to the same hashes: firm f1's chain, from its start
    # (the operators' entries before and after them are a chain of their own)
    with Session() as s:
        assert [s.get(m.AuditEntry, seq).chain_seq for seq in (1, 7)] == [1, 2]
        prev = audit.GENESIS
        for seq, place, entry in zip(range(2, 7), range(1, 6), _entries(5)):
            expected = audit.entry_hash(seq=place, firm_id="f1", ts=entry["ts"], actor="engine",
                                        action="decision.breach", entity="account", entity_id=entry["entity_id"],
                                        before=None, after=audit.plain(entry["after"]), prev_hash=prev, v=2)
            assert s.get(m.AuditEntry, seq).hash == expected
            prev = expected
    engine.dispose()
