"""The partition map and the worker assignment: stable, order-keeping, balanced (no NATS needed)."""

from __future__ import annotations

from collections import Counter

from propcrm.adapters.bus.partitions import (
    message_id,
    partition_of,
    partitions_in_description,
    describe_partitions,
    split_into_messages,
)
from propcrm.cluster.worker import assign


def test_a_partition_is_the_same_in_every_process_and_version():
    # blake2b, not hash(): these values are part of a deployment's layout and must never change
    assert [partition_of("acme", f"A{i}", 64) for i in range(6)] == [
        partition_of("acme", f"A{i}", 64) for i in range(6)]
    assert partition_of("acme", "A1", 64) == int.from_bytes(
        __import__("hashlib").blake2b(b"acme\x1fA1", digest_size=8).digest(), "big") % 64
    spread = Counter(partition_of("acme", f"T{i:05d}", 64) for i in range(64_000))
    assert len(spread) == 64 and max(spread.values()) < 1.1 * 1000


def test_messages_keep_request_order_and_firm_wide_events_reach_every_partition():
    lines = [("A1", b'{"n":1}'), (None, b'{"clock":1}'), ("A2", b'{"n":2}'), ("A1", b'{"n":3}')]
    messages = split_into_messages("acme", "mt5", lines, 4)
    by_partition = {}
    for m in messages:
        by_partition.setdefault(m.partition, []).extend(m.body.split(b"\n"))
    assert sorted(by_partition) == [0, 1, 2, 3]  # the clock went everywhere
    home = partition_of("acme", "A1", 4)
    mine = [line for line in by_partition[home] if line != b'{"clock":1}']
    assert mine == [x for a, x in lines if a is not None and partition_of("acme", a, 4) == home]
    assert by_partition[home].index(b'{"clock":1}') == 1  # after n=1, before n=3, as in the request


def test_a_retried_request_gets_the_same_message_ids_and_big_partitions_are_chunked():
    lines = [(f"A{i % 7}", b'{"id":"%d","pad":"%s"}' % (i, b"x" * 300)) for i in range(5000)]
    first = split_into_messages("acme", "mt5", lines, 8)
    again = split_into_messages("acme", "mt5", lines, 8)
    assert [m.msg_id for m in first] == [m.msg_id for m in again]
    assert len({m.msg_id for m in first}) == len(first)
    assert all(len(m.body) <= 512 * 1024 and m.count <= 2000 for m in first)
    assert sum(m.count for m in first) == 5000
    assert message_id("acme", "mt5", 1, b"x") != message_id("acme", "ctrader", 1, b"x")


def test_pretty_printed_array_elements_become_one_line():
    messages = split_into_messages("acme", "mt5", [("A1", b'{\n "id": "1"\n}')], 2)
    assert messages[0].body == b'{  "id": "1" }'


def test_the_partition_count_is_recorded_in_the_stream():
    assert partitions_in_description(describe_partitions(64)) == 64
    assert partitions_in_description("something else") is None


def test_assignment_is_balanced_deterministic_and_moves_little_when_a_worker_joins():
    two = assign(["w-b", "w-a"], 64)
    assert two == assign(["w-a", "w-b"], 64)
    assert sorted(len(v) for v in two.values()) == [32, 32]
    assert set().union(*two.values()) == set(range(64))
    three = assign(["w-a", "w-b", "w-c"], 64)
    assert max(len(v) for v in three.values()) <= 22
    assert set().union(*three.values()) == set(range(64))
    moved = sum(1 for p in range(64) if not any(p in two[w] and p in three[w] for w in ("w-a", "w-b")))
    assert moved <= 32  # the newcomer takes its share; most partitions stay where they were
