"""A platform connector's events in the partition worker are applied once by id (cluster/once.py): a
deal re-read by the connector, or a step re-published after a crash between JetStream's acknowledgement
and the cursor, is dropped — not applied twice, not dead-lettered — live, across a takeover's silent
replay and from a snapshot. Without the connector's header the same repeat is the engine's duplicate."""

from __future__ import annotations

import json

from sqlalchemy import select

from propcrm.adapters.bus.partitions import HEADER_ONCE
from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_cluster import DeadLetter
from propcrm.cluster.partition import PartitionStore, StreamMessage
from integration.test_partition_store import P, one_account_stream


def _line(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_a_re_read_platform_deal_is_dropped_live_after_a_takeover_and_from_a_snapshot(db_url):
    engine, Session, stream, account, p, last = one_account_stream(db_url)
    stamp = last.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    later = last.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S.5Z")  # the runner re-stamps a re-read
    deposit = _line(id="deal-501", type="balance", account=account, ts=stamp, amount="7", reason="deposit")
    re_read = _line(id="deal-501", type="balance", account=account, ts=later, amount="7", reason="deposit",
                    platform_ts=stamp)
    headers = {"Propcrm-Firm": "bench", "Propcrm-Source": "sim", "Propcrm-Count": "1", HEADER_ONCE: "platform"}
    seq = max(msg.seq for msgs in stream.values() for msg in msgs)
    first = StreamMessage(p, seq + 1, dict(headers), deposit)
    repeat = StreamMessage(p, seq + 2, dict(headers), b"\n".join([re_read, deposit]))

    def balance(run):
        return run.engines["bench"].states[account].balance

    live = PartitionStore(Session, "S", P, "live", snapshot_interval_s=3600)
    run = live.take(p)
    assert not live.apply([(run, stream[p])]).failed
    before = balance(run)
    assert not live.apply([(run, [first])]).failed and balance(run) == before + 7
    result = live.apply([(run, [repeat])])
    assert not result.failed and result.dead_letters == 0 and balance(run) == before + 7
    # a takeover without a snapshot since: replayed silently, the repeat is still a repeat
    replaying = PartitionStore(Session, "S", P, "replaying", snapshot_interval_s=3600)
    taken = replaying.take(p)
    assert not replaying.apply([(taken, stream[p] + [first, repeat])]).failed
    assert balance(taken) == before + 7
    assert not replaying.apply([(taken, [])], snapshot=True).failed
    # from the snapshot: the recent ids come back with the partition's context
    fresh = PartitionStore(Session, "S", P, "fresh", snapshot_interval_s=3600)
    resumed = fresh.take(p)
    assert resumed.applied == taken.seq
    again = fresh.apply([(resumed, [StreamMessage(p, seq + 3, dict(headers), re_read)])])
    assert not again.failed and again.dead_letters == 0 and balance(resumed) == before + 7
    with Session() as s:
        assert s.scalars(select(DeadLetter.event_id)).all() == []
        account_id = s.scalar(select(m.Account.id).where(m.Account.external_id == account))
        assert s.get(m.AccountState, account_id).balance == before + 7
    engine.dispose()
