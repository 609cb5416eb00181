"""A partition's takeover, fencing and silent replay, without NATS: two workers that both believe they
own a partition (a lease ran out while one was busy) can never both commit, and whoever continues
decides exactly what one uninterrupted replay decides."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from propcrm.adapters.bus.partitions import partition_of, split_into_messages
from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_cluster import DeadLetter, PartitionCheckpoint
from propcrm.adapters.db.session import make_engine, sessions
from propcrm.tools.bench_service import seed as _seed
from propcrm.cluster.partition import PartitionStore, StreamMessage
from propcrm.domain.decisions import ENCODER
from propcrm.domain.events import DECODER
from propcrm.domain.program import compile_pack
from propcrm.domain.rulepack import load_pack
from propcrm.engine.runner import Engine
from propcrm.services import audit
from propcrm.synth.firm import FirmSpec, generate

SPEC = FirmSpec(accounts=30, days=4, seed=11, equity_every_s=900)
P = 2


def one_account_stream(db_url: str):
    """The bench firm seeded and its stream as messages, with the first account's partition and the
    stream's last time: (engine, sessions, messages by partition, account, its partition, last ts)."""
    from propcrm.adapters.bus.partitions import partition_of

    lines = [x.rstrip(b"\n") for x in generate(SPEC)]
    _seed(db_url, [SPEC])
    engine = make_engine(db_url)
    stream = _messages(lines)
    account = next(e.account for e in map(DECODER.decode, lines) if getattr(e, "account", None))
    return (engine, sessions(engine), stream, account, partition_of("bench", account, P),
            max(DECODER.decode(x).ts for x in lines))


def _messages(lines: list[bytes]) -> dict[int, list[StreamMessage]]:
    """The stream as ingestion would publish it, in requests of 300 lines; global sequence numbers."""
    out: dict[int, list[StreamMessage]] = {p: [] for p in range(P)}
    seq = 0
    for start in range(0, len(lines), 300):
        chunk = [(getattr(DECODER.decode(x), "account", None), x) for x in lines[start : start + 300]]
        for message in split_into_messages("bench", "bench", chunk, P):
            seq += 1
            out[message.partition].append(StreamMessage(message.partition, seq, {
                "Propcrm-Firm": "bench", "Propcrm-Source": "bench", "Propcrm-Count": str(message.count)},
                message.body))
    return out


def test_a_fenced_worker_commits_nothing_and_the_survivor_decides_exactly_once(db_url):
    lines = [x.rstrip(b"\n") for x in generate(SPEC)]
    _seed(db_url, [SPEC])
    engine = make_engine(db_url)
    Session = sessions(engine)
    stream = _messages(lines)
    old = PartitionStore(Session, "S", P, "old", snapshot_interval_s=0)
    new = PartitionStore(Session, "S", P, "new", snapshot_interval_s=0)
    for p in range(P):
        messages = stream[p]
        third = len(messages) // 3
        # the old owner commits the first third (with snapshots), then stalls…
        run = old.take(p)
        for i in range(0, third, 5):
            assert not old.apply([(run, messages[i : min(i + 5, third)])]).failed
        # …the new owner takes over from the checkpoint and commits the second third…
        taken = new.take(p)
        assert taken.seq == run.seq and taken.applied <= taken.seq
        replay_from = [msg for msg in messages if msg.seq > taken.applied]
        cut = 2 * third
        result = new.apply([(taken, [msg for msg in replay_from if msg.seq <= messages[cut - 1].seq])])
        assert not result.failed, result.error
        # …the old owner wakes up and tries to commit what it had: fenced, nothing written
        late = old.apply([(run, messages[third:cut])])
        assert late.failed == {p} and "another worker" in late.error
        # the new owner finishes, one message at a time, a redelivery thrown in
        for msg in messages[cut:]:
            again = new.apply([(taken, [msg, msg])])
            assert not again.failed and again.skipped == 1
    with Session() as s:
        stored = sorted(bytes(b) for b in s.scalars(select(m.Decision.body)))
        owners = set(s.scalars(select(PartitionCheckpoint.owner)))
        assert audit.verify(s).ok
    replayed = Engine(compile_pack(load_pack("two-step-100k")))
    expected = sorted(ENCODER.encode(d) for d in replayed.feed([DECODER.decode(x) for x in lines]))
    assert expected and stored == expected
    assert owners == {"new"}
    engine.dispose()


def test_a_takeover_replays_silently_from_the_last_snapshot(db_url):
    lines = [x.rstrip(b"\n") for x in generate(SPEC)]
    _seed(db_url, [SPEC])
    engine = make_engine(db_url)
    Session = sessions(engine)
    stream = _messages(lines)
    first = PartitionStore(Session, "S", P, "first", snapshot_interval_s=3600)  # no snapshot by time
    for p in range(P):
        run = first.take(p)
        half = len(stream[p]) // 2
        for i in range(0, half, 7):
            assert not first.apply([(run, stream[p][i : min(i + 7, half)])]).failed
        # effects are committed up to here, but the states only as of the first snapshot (none yet)
        second = PartitionStore(Session, "S", P, "second", snapshot_interval_s=3600)
        taken = second.take(p)
        assert taken.applied == 0 and taken.seq == run.seq
        result = second.apply([(taken, stream[p])])  # replays the first half silently, then decides
        assert not result.failed, result.error
        assert result.messages == len(stream[p]) - half
    with Session() as s:
        stored = sorted(bytes(b) for b in s.scalars(select(m.Decision.body)))
    replayed = Engine(compile_pack(load_pack("two-step-100k")))
    assert stored == sorted(ENCODER.encode(d) for d in replayed.feed([DECODER.decode(x) for x in lines]))
    engine.dispose()


def test_a_run_whose_batch_rolled_back_is_never_snapshotted(db_url, monkeypatch):
    """A batch that fails after its events went through the engines (a storage error, not a fence)
    leaves the run ahead of the database. Giving the partition up then must not write that run's
    states as a snapshot at the old position: the next owner would apply those events a second time."""
    import propcrm.cluster.partition as partition_module

    lines = [x.rstrip(b"\n") for x in generate(SPEC)]
    _seed(db_url, [SPEC])
    engine = make_engine(db_url)
    Session = sessions(engine)
    stream = _messages(lines)
    real_write = partition_module.write_outcomes
    for p in range(P):
        messages = stream[p]
        third = len(messages) // 3
        store = PartitionStore(Session, "S", P, "first", snapshot_interval_s=3600)
        run = store.take(p)
        assert not store.apply([(run, messages[:third])]).failed

        def broken(*args, **kwargs):  # the database fails (any other error would set one account aside)
            raise OperationalError("connection lost", None, Exception("connection lost"))

        monkeypatch.setattr(partition_module, "write_outcomes", broken)
        failed = store.apply([(run, messages[third : 2 * third])])
        assert failed.failed == {p} and "connection lost" in failed.error
        monkeypatch.setattr(partition_module, "write_outcomes", real_write)
        # the worker gives the partition up (rebalance) before reloading it: the final snapshot is refused
        final = store.apply([(run, [])], snapshot=True)
        assert final.failed == {p}
        # and so is any further batch on that run
        assert store.apply([(run, messages[2 * third :])]).failed == {p}
        # the next owner continues from what was committed
        second = PartitionStore(Session, "S", P, "second", snapshot_interval_s=3600)
        taken = second.take(p)
        assert taken.seq == messages[third - 1].seq
        result = second.apply([(taken, messages)])
        assert not result.failed, result.error
    with Session() as s:
        stored = sorted(bytes(b) for b in s.scalars(select(m.Decision.body)))
        assert audit.verify(s).ok
    replayed = Engine(compile_pack(load_pack("two-step-100k")))
    assert stored == sorted(ENCODER.encode(d) for d in replayed.feed([DECODER.decode(x) for x in lines]))
    engine.dispose()


def test_every_decision_links_to_the_stream_message_that_carried_its_event(db_url):
    """As in the embedded mode, a decision names where its event is: here the stream sequence of the
    message that carried it (with the event's id)."""
    lines = [x.rstrip(b"\n") for x in generate(SPEC)]
    _seed(db_url, [SPEC])
    engine = make_engine(db_url)
    Session = sessions(engine)
    stream = _messages(lines)
    store = PartitionStore(Session, "S", P, "w", snapshot_interval_s=0)
    ids_in: dict[int, set[str]] = {}
    for p in range(P):
        run = store.take(p)
        for i in range(0, len(stream[p]), 7):
            assert not store.apply([(run, stream[p][i : i + 7])]).failed
        for message in stream[p]:
            ids_in[message.seq] = {DECODER.decode(x).id for x in message.body.split(b"\n") if x.strip()}
    with Session() as s:
        decisions = s.execute(select(m.Decision.event_seq, m.Decision.event_id)).all()
    assert decisions
    assert all(seq is not None and event_id in ids_in[seq] for seq, event_id in decisions)
    engine.dispose()


def test_a_withdrawal_is_applied_once_by_its_id_across_a_takeover_and_a_snapshot(db_url):
    """A payout's withdrawal (source ``propcrm-payouts``) published twice under different message ids — as
    after JetStream's de-duplication window — is applied once: by the live run, by a takeover that
    replays it silently, and by a takeover from a snapshot taken after it (the ids travel in the context)."""
    import json

    from propcrm.services.payouts import SOURCE, WITHDRAWAL_APPLIED

    engine, Session, stream, account, p, last = one_account_stream(db_url)
    withdrawal = json.dumps({"id": "payout-7", "type": "balance", "account": account, "reason": "payout",
                             "ts": last.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "amount": "-1"}).encode()
    headers = {"Propcrm-Firm": "bench", "Propcrm-Source": SOURCE, "Propcrm-Count": "1"}
    seq = max(msg.seq for msgs in stream.values() for msg in msgs)
    first, repeat, later = (StreamMessage(p, seq + i, dict(headers), withdrawal) for i in (1, 2, 3))

    def balance(run) -> object:
        return run.engines["bench"].states[account].balance

    live = PartitionStore(Session, "S", P, "live", snapshot_interval_s=3600)
    run = live.take(p)
    assert not live.apply([(run, stream[p])]).failed
    before = balance(run)
    assert not live.apply([(run, [first])]).failed
    assert balance(run) == before - 1
    result = live.apply([(run, [repeat])])
    assert not result.failed and result.dead_letters == 0 and balance(run) == before - 1  # dropped, not dead-lettered
    # a takeover with no snapshot since: the withdrawal is replayed silently, the repeat is still a repeat
    replaying = PartitionStore(Session, "S", P, "replaying", snapshot_interval_s=3600)
    taken = replaying.take(p)
    assert taken.applied == 0
    assert not replaying.apply([(taken, stream[p] + [first, repeat, later])]).failed
    assert balance(taken) == before - 1
    # a snapshot, then a takeover from it: the applied ids come back with the engine context
    assert not replaying.apply([(taken, [])], snapshot=True).failed
    fresh = PartitionStore(Session, "S", P, "fresh", snapshot_interval_s=3600)
    resumed = fresh.take(p)
    assert resumed.applied == taken.seq
    again = StreamMessage(p, seq + 4, dict(headers), withdrawal)
    assert not fresh.apply([(resumed, [again])]).failed
    assert balance(resumed) == before - 1
    with Session() as s:
        applied = s.scalars(select(m.AuditEntry).where(m.AuditEntry.action == WITHDRAWAL_APPLIED)).all()
        assert [(a.entity_id, a.after["stream_seq"]) for a in applied] == [("7", seq + 1)]
        account_id = s.scalar(select(m.Account.id).where(m.Account.external_id == account))
        assert s.get(m.AccountState, account_id).balance == before - 1  # the snapshot holds it once
        assert audit.verify(s).ok
    engine.dispose()


def test_a_partition_worker_marks_positions_to_market_with_the_firm_s_symbol_table_across_a_takeover(db_url):
    """The scale-out worker reads the firm's symbol table as the embedded one does: a floating loss
    crossing the daily floor between equity reports is caught at the tick, also by a worker that took
    the partition over from a snapshot (its engine must index the positions it restored)."""
    from propcrm.domain.market import parse_symbol_table
    from propcrm.services.symbols import set_table
    from propcrm.synth.firm import traders

    _seed(db_url, [SPEC])
    engine = make_engine(db_url)
    Session = sessions(engine)
    table = parse_symbol_table([{"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "100000"}])
    with Session.begin() as s:
        set_table(s, firm_id="bench", table=table, actor="test")
    account = traders(SPEC)[0].account
    lines = [
        b'{"id":"p1","type":"price","ts":"2026-03-03T09:00:00Z","symbol":"EURUSD","bid":"1.10000","ask":"1.10010"}',
        b'{"id":"o1","type":"trade_opened","account":"%s","ts":"2026-03-03T09:00:01Z","position":"q1",'
        b'"symbol":"EURUSD","side":"buy","lots":"10","price":"1.10010"}' % account.encode(),
        b'{"id":"p2","type":"price","ts":"2026-03-03T09:00:02Z","symbol":"EURUSD","bid":"1.09800","ask":"1.09810"}',
        b'{"id":"p3","type":"price","ts":"2026-03-03T09:00:03Z","symbol":"EURUSD","bid":"1.09400","ask":"1.09410"}',
    ]
    stream = _messages(lines)
    p = next(q for q, messages in stream.items() if any(b'"o1"' in msg.body for msg in messages))
    first = PartitionStore(Session, "S", P, "first", snapshot_interval_s=0)  # a snapshot after every batch
    run = first.take(p)
    before_crash = [msg for msg in stream[p] if b'"p3"' not in msg.body]
    assert not first.apply([(run, before_crash)]).failed
    second = PartitionStore(Session, "S", P, "second", snapshot_interval_s=0)
    taken = second.take(p)
    result = second.apply([(taken, [msg for msg in stream[p] if msg.seq > taken.seq])])
    assert not result.failed, result.error
    with Session() as s:
        stored = [bytes(b) for b in s.scalars(select(m.Decision.body).order_by(m.Decision.id))]
    replayed = Engine(compile_pack(load_pack("two-step-100k")))
    replayed.set_symbols(table)
    expected = [ENCODER.encode(d) for d in replayed.feed([DECODER.decode(x) for x in lines])]
    assert any(b"breach" in d and b"EURUSD bid 1.09400" in d for d in expected)
    assert stored == expected
    engine.dispose()


def test_ticks_through_the_partition_workers_decide_and_store_the_same_with_the_vector_screen_on_and_off(db_url, monkeypatch):
    """Partition workers screen ticks in integers (issue 15). Two firms with the same accounts, symbol
    table and stream of prices, trades, equity reports, clocks and news — one worker set exact, one
    screened — through snapshots, a takeover that replays silently, and an account put back mid-batch
    (its effects cannot be stored: its state goes back to before the batch, ticks included) must
    store the same decisions, dead letters and states byte for byte; every other account's decisions
    and states are those of one uninterrupted in-memory replay."""
    import datetime as dt

    import msgspec

    from propcrm.adapters.db.session import migrate
    from propcrm.domain.market import parse_symbol_table
    from propcrm.domain.state import AccountState
    from propcrm.services.catalog import add_pack, create_account, ensure_firm
    from propcrm.services.symbols import set_table
    from propcrm.synth.firm import traders

    spec = FirmSpec(accounts=24, days=3, start=dt.date(2026, 3, 4), seed=5, prices=True)
    table = parse_symbol_table([
        {"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "100000"},
        {"symbol": "GBPUSD", "profit_currency": "USD", "contract_size": "100000"},
        {"symbol": "USDJPY", "profit_currency": "JPY", "contract_size": "100000"},
        {"symbol": "XAUUSD", "profit_currency": "USD", "contract_size": "100"},
        {"symbol": "US30", "profit_currency": "USD", "contract_size": "1"},
    ])
    migrate(db_url)
    engine = make_engine(db_url)
    Session = sessions(engine)
    firms = {"exact": False, "vector": True}
    with Session.begin() as s:
        for firm in firms:
            ensure_firm(s, firm_id=firm)
            version = add_pack(s, firm_id=firm, pack=load_pack("two-step-100k"), activate=True)
            for trader in traders(spec):
                create_account(s, firm_id=firm, external_id=trader.account, pack_version_id=version.id,
                               platform="bench")
            set_table(s, firm_id=firm, table=table, actor="test")
    lines = [x.rstrip(b"\n") for x in generate(spec)]
    events = [DECODER.decode(x) for x in lines]
    assert sum(type(e).__name__ == "Price" for e in events) > 1000
    # the batch carrying a position opened at 60% of the stream cannot store that account's effects
    opened = next(e for e in events[len(events) * 3 // 5 :] if type(e).__name__ == "TradeOpened")
    bad = opened.account
    import propcrm.cluster.partition as partition_module

    real_write = partition_module.write_outcomes

    def refuses(session, outcomes, **kwargs):
        if any(o.account.external_id == bad and any(ev.id == opened.id for ev, _ in o.trades) for o in outcomes):
            raise ValueError("cannot store")
        return real_write(session, outcomes, **kwargs)

    monkeypatch.setattr(partition_module, "write_outcomes", refuses)

    screened = 0
    for firm, vector in firms.items():
        seq = 0
        stream: dict[int, list[StreamMessage]] = {p: [] for p in range(P)}
        for start in range(0, len(lines), 300):
            chunk = [(getattr(DECODER.decode(x), "account", None), x) for x in lines[start : start + 300]]
            for message in split_into_messages(firm, "bench", chunk, P):
                seq += 1
                stream[message.partition].append(StreamMessage(message.partition, seq, {
                    "Propcrm-Firm": firm, "Propcrm-Source": "bench", "Propcrm-Count": str(message.count)},
                    message.body))
        first = PartitionStore(Session, f"S-{firm}", P, "first", snapshot_interval_s=3600, vector=vector)
        second = PartitionStore(Session, f"S-{firm}", P, "second", snapshot_interval_s=3600, vector=vector)
        set_aside = set()
        for p in range(P):
            messages = stream[p]
            half, late = len(messages) // 2, len(messages) * 7 // 8
            run = first.take(p)
            for i in range(0, late, 4):
                result = first.apply([(run, messages[i : min(i + 4, late)])], snapshot=i + 4 == half)
                assert not result.failed, result.error
                set_aside.update(result.set_aside)
            taken = second.take(p)  # from the snapshot at half, replaying up to 7/8 silently
            assert 0 < taken.applied < taken.seq == messages[late - 1].seq
            for i in range(0, len(messages), 5):
                result = second.apply([(taken, messages[i : i + 5])])
                assert not result.failed, result.error
                set_aside.update(result.set_aside)
            assert not second.apply([(taken, [])], snapshot=True).failed
            if vector:
                stats = taken.engines[firm].stats
                screened += stats.marked - stats.exact_marked
        assert set_aside == {(firm, bad)}
    assert screened > 0, "the vector screen spared exact re-valuations"

    def stored(firm: str):
        with Session() as s:
            decisions = sorted(bytes(b) for b in s.scalars(select(m.Decision.body).where(m.Decision.firm_id == firm)))
            states = dict(s.execute(select(m.Account.external_id, m.AccountState.state)
                                    .join(m.AccountState, m.AccountState.account_id == m.Account.id)
                                    .where(m.Account.firm_id == firm)).all())
            letters = sorted(tuple(row) for row in s.execute(
                select(DeadLetter.event_id, DeadLetter.reason).where(DeadLetter.firm_id == firm)))
        return decisions, {k: bytes(v) for k, v in states.items()}, letters

    exact, vector = stored("exact"), stored("vector")
    assert exact[0] and exact == vector
    assert any(event_id == opened.id for event_id, _ in exact[2])
    reference = Engine(compile_pack(load_pack("two-step-100k")))
    reference.set_symbols(table)
    decided = reference.feed(events)
    expected = sorted(ENCODER.encode(d) for d in decided if d.account != bad)
    assert [d for d in exact[0] if msgspec.json.decode(d)["account"] != bad] == expected
    for account, blob in exact[1].items():
        if account != bad:
            assert msgspec.msgpack.decode(blob, type=AccountState) == reference.states[account], account
    engine.dispose()



@pytest.mark.parametrize("vector", [False, True], ids=["exact", "vector"])
def test_a_symbol_table_changed_while_a_partition_runs_reaches_its_engines_at_the_next_batch(db_url, vector):
    """A firm's table changed through the API or an import (``services.symbols.set_table``) reaches
    the partitions already running, not only at their next takeover: a position opened on a symbol
    the table did not know is marked from the first tick after the change, and its breach is caught at
    that tick — as an in-memory engine given the new table at the same place in the stream decides."""
    from propcrm.domain.market import parse_symbol_table
    from propcrm.services.symbols import set_table
    from propcrm.synth.firm import traders

    _seed(db_url, [SPEC])
    engine = make_engine(db_url)
    Session = sessions(engine)
    before = parse_symbol_table([{"symbol": "GBPUSD", "profit_currency": "USD", "contract_size": "100000"}])
    after = parse_symbol_table([{"symbol": "GBPUSD", "profit_currency": "USD", "contract_size": "100000"},
                                {"symbol": "EURUSD", "profit_currency": "USD", "contract_size": "100000"}])
    with Session.begin() as s:
        set_table(s, firm_id="bench", table=before, actor="test")
    account = traders(SPEC)[0].account
    lines = [
        b'{"id":"p1","type":"price","ts":"2026-03-03T09:00:00Z","symbol":"EURUSD","bid":"1.10000","ask":"1.10010"}',
        b'{"id":"o1","type":"trade_opened","account":"%s","ts":"2026-03-03T09:00:01Z","position":"q1",'
        b'"symbol":"EURUSD","side":"buy","lots":"10","price":"1.10010"}' % account.encode(),
        b'{"id":"p2","type":"price","ts":"2026-03-03T09:00:02Z","symbol":"EURUSD","bid":"1.09800","ask":"1.09810"}',
        b'{"id":"p3","type":"price","ts":"2026-03-03T09:00:03Z","symbol":"EURUSD","bid":"1.09400","ask":"1.09410"}',
        b'{"id":"p4","type":"price","ts":"2026-03-03T09:00:04Z","symbol":"EURUSD","bid":"1.09300","ask":"1.09310"}',
    ]
    p = partition_of("bench", account, P)
    headers = {"Propcrm-Firm": "bench", "Propcrm-Source": "bench", "Propcrm-Count": "1"}
    messages = [StreamMessage(p, seq, headers, line) for seq, line in enumerate(lines, start=1)]
    store = PartitionStore(Session, "S", P, "w", snapshot_interval_s=3600, vector=vector, symbols_check_s=0)
    run = store.take(p)
    assert not store.apply([(run, messages[:3])]).failed  # opened and ticked under a table without EURUSD
    with Session.begin() as s:
        set_table(s, firm_id="bench", table=after, actor="test")
    for message in messages[3:]:
        result = store.apply([(run, [message])])
        assert not result.failed, result.error
    with Session() as s:
        stored = [bytes(b) for b in s.scalars(select(m.Decision.body).order_by(m.Decision.id))]
    replayed = Engine(compile_pack(load_pack("two-step-100k")))
    replayed.set_symbols(before)
    events = [DECODER.decode(x) for x in lines]
    expected = [ENCODER.encode(d) for d in replayed.feed(events[:3])]
    replayed.set_symbols(after)
    expected += [ENCODER.encode(d) for d in replayed.feed(events[3:])]
    assert any(b"breach" in d and b"EURUSD bid 1.09400" in d for d in expected)
    assert stored == expected
    engine.dispose()
