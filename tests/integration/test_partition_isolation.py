"""One account's bad events never stop a partition's batch (the scale-out workers), without NATS.

The partition store gets messages as a worker would fetch them. An account whose events cannot be
decoded, evaluated or stored, or would take it beyond what it can hold, goes back to its state before
the batch and its events become dead letters and quarantine entries with the reason; everyone else's
batch commits, the checkpoint moves past it, and a takeover replays to exactly the same states.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

import propcrm.cluster.partition as partition_module
from propcrm.adapters.bus.partitions import split_into_messages
from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_cluster import DeadLetter, PartitionCheckpoint
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.cluster.partition import PartitionStore, StreamMessage
from propcrm.domain.rulepack import load_pack
from propcrm.services import audit
from propcrm.services.catalog import add_pack, create_account, ensure_firm

P = 1  # every account in one partition: a batch mixes the firms, as a busy worker's would
BREACH = {"equity": "80000", "balance": "100000"}


def event(event_id: str, account: str, ts: str, **fields) -> bytes:
    kind = fields.pop("type", "equity")
    if kind == "equity":
        fields = {"equity": "99000", "balance": "100000", **fields}
    return json.dumps({"id": event_id, "type": kind, "account": account, "ts": ts, **fields}).encode()


class Stream:
    """Messages as ingest nodes publish them: one request of one firm at a time, growing seq."""

    def __init__(self) -> None:
        self.seq = 0

    def request(self, firm: str, *lines: bytes) -> list[StreamMessage]:
        out = []
        pairs = [(json.loads(x).get("account"), x) for x in lines]
        for message in split_into_messages(firm, "mt5", pairs, P):
            self.seq += 1
            out.append(StreamMessage(message.partition, self.seq, {
                "Propcrm-Firm": firm, "Propcrm-Source": "mt5", "Propcrm-Count": str(message.count)}, message.body))
        return out


@pytest.fixture
def db(db_url):
    engine = make_engine(db_url)
    factory = sessions(engine)
    with factory.begin() as s:
        for firm, names in (("f1", ("A1", "A2")), ("f2", ("B1",))):
            ensure_firm(s, firm_id=firm)
            version = add_pack(s, firm_id=firm, pack=load_pack("two-step-100k"), activate=True)
            for name in names:
                create_account(s, firm_id=firm, external_id=name, pack_version_id=version.id)
    yield factory
    engine.dispose()


def decisions(db) -> list[tuple[str, str, str]]:
    with db() as s:
        rows = s.execute(select(m.Account.external_id, m.Decision.kind, m.Decision.event_id)
                         .join(m.Account, m.Account.id == m.Decision.account_id).order_by(m.Decision.id)).all()
    return [tuple(r) for r in rows]


def letters(db) -> list[DeadLetter]:
    with db() as s:
        return list(s.scalars(select(DeadLetter).order_by(DeadLetter.id)))


def quarantine(db, firm: str) -> list[m.Quarantine]:
    with db() as s:
        return list(s.scalars(select(m.Quarantine).where(m.Quarantine.firm_id == firm).order_by(m.Quarantine.id)))


def state_of(store: PartitionStore, run, firm: str, account: str):
    return run.engines[firm].states.get(account)


def test_an_event_out_of_bounds_on_the_bus_is_a_dead_letter_and_a_quarantine_entry(db):
    stream = Stream()
    store = PartitionStore(db, "S", P, "w1", snapshot_interval_s=0)
    run = store.take(0)
    huge = event("huge", "A1", "2026-03-02T10:00:00Z", equity="100000000000000000")
    batch = (stream.request("f1", huge, event("a2-breach", "A2", "2026-03-02T10:00:00Z", **BREACH))
             + stream.request("f2", event("b1-breach", "B1", "2026-03-02T10:00:00Z", **BREACH)))
    result = store.apply([(run, batch)])
    assert not result.failed, result.error
    assert set(decisions(db)) == {("A2", "breach", "a2-breach"), ("B1", "breach", "b1-breach")}
    [letter] = letters(db)
    assert letter.event_id == "huge" and "`equity`: must be less than 10^12" in letter.reason
    [entry] = quarantine(db, "f1")
    assert entry.body == huge and entry.reason == letter.reason and entry.line == 1
    with db() as s:
        assert s.get(PartitionCheckpoint, ("S", 0)).seq == stream.seq


def test_an_account_whose_effects_cannot_be_stored_is_put_back_and_the_batch_commits(db, monkeypatch):
    stream = Stream()
    store = PartitionStore(db, "S", P, "w1", snapshot_interval_s=3600)
    run = store.take(0)
    assert not store.apply([(run, stream.request("f1", event("a1-0", "A1", "2026-03-02T09:00:00Z")))]).failed
    before = state_of(store, run, "f1", "A1")
    real = partition_module.write_outcomes

    def refuses_a1(session, outcomes, **kwargs):
        if any(o.account.external_id == "A1" for o in outcomes):
            raise ValueError("this account's figures cannot be stored")
        return real(session, outcomes, **kwargs)

    monkeypatch.setattr(partition_module, "write_outcomes", refuses_a1)
    bad = [event("a1-1", "A1", "2026-03-02T10:00:00Z", **BREACH)]
    batch = (stream.request("f1", *bad, event("a2-breach", "A2", "2026-03-02T10:00:00Z", **BREACH))
             + stream.request("f2", event("b1-breach", "B1", "2026-03-02T10:00:00Z", **BREACH)))
    result = store.apply([(run, batch)])
    assert not result.failed, result.error
    assert list(result.set_aside) == [("f1", "A1")]
    assert set(decisions(db)) == {("A2", "breach", "a2-breach"), ("B1", "breach", "b1-breach")}
    assert state_of(store, run, "f1", "A1").equity == before.equity == 99000, "A1 is as it was before the batch"
    assert state_of(store, run, "f1", "A1").status == "active"
    [letter] = letters(db)
    assert letter.event_id == "a1-1" and letter.reason.startswith("not applied: the events of A1 in this batch "
                                                                  "could not be stored (ValueError")
    assert [q.body for q in quarantine(db, "f1")] == bad
    with db() as s:
        assert s.get(m.Account, store.directory.get("f1", "A1").id).status == "active", "its breach was put back"

    monkeypatch.setattr(partition_module, "write_outcomes", real)  # fixed: the corrected event is applied
    again = store.apply([(run, stream.request("f1", event("a1-1", "A1", "2026-03-02T10:00:00Z", **BREACH)))])
    assert not again.failed and ("A1", "breach", "a1-1") in decisions(db)
    with db() as s:
        assert audit.verify(s).ok


def test_events_that_would_take_an_account_beyond_what_it_can_hold_are_put_back(db):
    stream = Stream()
    store = PartitionStore(db, "S", P, "w1", snapshot_interval_s=0)
    run = store.take(0)
    deposits = [event(f"d-{i}", "A1", "2026-03-02T10:00:00Z", type="balance", amount="999999999999",
                      reason="deposit") for i in range(1100)]
    result = store.apply([(run, stream.request("f1", *deposits)
                           + stream.request("f2", event("b1-breach", "B1", "2026-03-02T10:00:00Z", **BREACH)))])
    assert not result.failed, result.error
    assert ("B1", "breach", "b1-breach") in decisions(db)
    assert state_of(store, run, "f1", "A1") is None, "A1 had no state before the batch: it has none after"
    assert len(letters(db)) == 1100 and "balance would reach" in letters(db)[0].reason
    with db() as s:  # the snapshot went through for everyone else
        assert s.get(m.AccountState, store.directory.get("f2", "B1").id) is not None


def test_a_rule_pack_that_cannot_be_used_refuses_only_its_accounts_events(db):
    with db.begin() as s:
        account = s.scalars(select(m.Account).where(m.Account.external_id == "A1")).one()
        broken = add_pack(s, firm_id="f1", pack=load_pack("one-step-100k"))
        account.pack_version_id = broken.id
        s.flush()
        s.get(m.RulePackVersion, broken.id).body = '{"id": "broken"}'
    stream = Stream()
    store = PartitionStore(db, "S", P, "w1", snapshot_interval_s=0)
    run = store.take(0)
    result = store.apply([(run, stream.request("f1", event("a1-1", "A1", "2026-03-02T10:00:00Z"),
                                               event("a2-breach", "A2", "2026-03-02T10:00:00Z", **BREACH)))])
    assert not result.failed, result.error
    assert decisions(db) == [("A2", "breach", "a2-breach")]
    [letter] = letters(db)
    assert letter.event_id == "a1-1" and letter.reason.startswith("not applied: rule pack version")
    assert len(quarantine(db, "f1")) == 1


def test_a_future_event_on_the_bus_is_set_aside(db):
    stream = Stream()
    store = PartitionStore(db, "S", P, "w1", snapshot_interval_s=0)
    run = store.take(0)
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    session_2099 = event("s-2099", "A1", "2099-01-01T00:00:00Z", type="session", ip="10.0.0.1", device="pc")
    clock = json.dumps({"id": "k-later", "type": "clock", "ts": later}).encode()
    assert not store.apply([(run, stream.request("f1", session_2099, clock))]).failed
    assert {x.event_id for x in letters(db)} == {"s-2099", "k-later"}
    assert [json.loads(q.body)["id"] for q in quarantine(db, "f1")] == ["s-2099"]  # the firm-wide clock has no account
    assert not store.apply([(run, stream.request("f1", event("a1-breach", "A1", "2026-03-02T10:00:00Z",
                                                             **BREACH)))]).failed
    assert decisions(db) == [("A1", "breach", "a1-breach")], "the account is not frozen"


def test_a_takeover_replays_past_what_was_set_aside_to_the_same_states(db, monkeypatch):
    stream = Stream()
    first = PartitionStore(db, "S", P, "w1", snapshot_interval_s=3600)  # no snapshot: the takeover replays all
    run = first.take(0)
    messages = stream.request("f1", event("a1-0", "A1", "2026-03-02T09:00:00Z"),
                              event("a2-0", "A2", "2026-03-02T09:00:00Z"))
    assert not first.apply([(run, messages)]).failed
    real = partition_module.write_outcomes

    def refuses_a1(session, outcomes, **kwargs):
        if any(o.account.external_id == "A1" for o in outcomes):
            raise ValueError("cannot store")
        return real(session, outcomes, **kwargs)

    monkeypatch.setattr(partition_module, "write_outcomes", refuses_a1)
    bad = stream.request("f1", event("a1-1", "A1", "2026-03-02T10:00:00Z", **BREACH),
                         event("a2-1", "A2", "2026-03-02T10:00:00Z", equity="98000"))
    assert first.apply([(run, bad)]).set_aside
    monkeypatch.setattr(partition_module, "write_outcomes", real)
    messages += bad
    expected = {a: state_of(first, run, "f1", a) for a in ("A1", "A2")}

    second = PartitionStore(db, "S", P, "w2", snapshot_interval_s=3600)
    taken = second.take(0)
    assert taken.seq == stream.seq and taken.applied == 0
    assert not second.apply([(taken, messages)]).failed  # all silent: the effects are committed already
    for account, state in expected.items():
        assert state_of(second, taken, "f1", account) == state, account
    assert decisions(db) == []
    assert len(letters(db)) == 1
