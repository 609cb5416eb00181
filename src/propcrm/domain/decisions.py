"""Decisions: what the engine concluded from one event, with the numbers and the derivation (GUIDE §4)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Literal

import msgspec

DecisionKind = Literal["breach", "pause", "violation", "warning", "blocked", "phase_passed"]

# Deterministic order of decisions from one event: a breach beats everything, a pass comes last.
KIND_ORDER: dict[str, int] = {
    "breach": 0,
    "pause": 1,
    "violation": 2,
    "warning": 3,
    "blocked": 4,
    "phase_passed": 5,
}


class Decision(msgspec.Struct, frozen=True, omit_defaults=True):
    account: str
    event_id: str
    ts: dt.datetime
    kind: DecisionKind
    rule: str
    phase: str
    message: str
    value: Decimal | None = None
    threshold: Decimal | None = None
    comparator: str | None = None
    details: dict[str, Any] = {}

    def sort_key(self) -> tuple[int, str, str]:
        return (KIND_ORDER[self.kind], self.rule, self.message)


ENCODER = msgspec.json.Encoder(decimal_format="string")


def to_ndjson(decisions: list[Decision]) -> bytes:
    return b"".join(ENCODER.encode(d) + b"\n" for d in decisions)
