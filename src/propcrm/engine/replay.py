"""``propcrm replay`` and ``propcrm whatif``: one history, one or two rule packs, exact decisions."""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from ..domain.decisions import ENCODER, Decision
from ..domain.events import Rejected
from ..domain.market import SymbolTable
from ..domain.program import CompiledPack
from .ndjson import iter_file
from .runner import Engine, batch_gc

A = TypeVar("A")
B = TypeVar("B")


@dataclass
class ReplayRun:
    engine: Engine
    malformed: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0
    decisions: int = 0

    @property
    def rejected(self) -> list[Rejected]:
        return sorted(self.malformed + self.engine.rejected, key=lambda r: (r.line or 0, r.id or ""))


def with_prices(events: str | Path, prices: str | Path | None) -> Iterator[tuple[list[Any], list, list[Rejected]]]:
    """The events file's batches, with the ticks of a price file merged in by time.

    Both files are read in order; a tick goes before the first event that is later than it, and before
    an event of the same time (the market is known at that instant before the account acts on it). A
    price file's rejected lines are reported with their own line number, the reason saying which file.
    """
    if prices is None:
        yield from iter_file(events)
        return

    def stream(path: str | Path, rank: int, label: str | None) -> Iterator[tuple[Any, int, int, int | None]]:
        for batch, lines, malformed in iter_file(path):
            for bad in malformed:
                pending.append(msgspec.structs.replace(bad, reason=f"{label}: {bad.reason}") if label else bad)
            for ev, line in zip(batch, lines):
                yield ev.ts, rank, line, ev

    pending: list[Rejected] = []
    merged = heapq.merge(stream(prices, 0, "prices file"), stream(events, 1, None), key=lambda item: (item[0], item[1]))
    batch: list[Any] = []
    lines: list[int | None] = []
    for _ts, rank, line, ev in merged:
        batch.append(ev)
        lines.append(line if rank == 1 else None)
        if len(batch) >= 50_000:
            yield batch, lines, pending
            batch, lines, pending = [], [], []
    yield batch, lines, pending


def replay(
    pack: CompiledPack,
    events: str | Path,
    *,
    phase: str | None = None,
    sink: Callable[[bytes], object] | None = None,
    prices: str | Path | None = None,
    symbols: SymbolTable | None = None,
    exact: bool = False,
) -> ReplayRun:
    """Replay an NDJSON file through one pack; every decision goes to ``sink`` as an NDJSON line.

    ``prices`` (an NDJSON file of ``price`` events) is merged in by time; with ``symbols`` open
    positions are marked to market from every tick (a dispute replays to the tick). Ticks are screened
    in integers (:mod:`.marking`) unless ``exact``: the same decisions and states, held equal by
    tests/unit/engine/test_vector_marking.py; ``exact`` revalues every holder in Decimal at every tick."""
    engine = Engine(pack, phase=phase, vector=symbols is not None and not exact)
    engine.set_symbols(symbols)
    run = ReplayRun(engine)
    started = time.perf_counter()
    encode = ENCODER.encode
    with batch_gc():
        for batch, lines, malformed in with_prices(events, prices):
            run.malformed.extend(malformed)
            decisions = engine.feed(batch, lines)
            run.decisions += len(decisions)
            if sink is not None and decisions:
                sink(b"".join(encode(d) + b"\n" for d in decisions))
    engine.settle()  # every state at its last tick, as the exact path leaves it
    run.seconds = time.perf_counter() - started
    return run


class Outcome(msgspec.Struct, frozen=True):
    status: str  # breached | passed | paused | active
    rule: str | None = None
    at: str | None = None

    def label(self) -> str:
        if self.status == "breached":
            return f"breached ({self.rule})"
        return self.status


def outcomes(engine: Engine, decisions: list[Decision]) -> dict[str, Outcome]:
    ends: dict[str, Decision] = {}
    for d in decisions:
        if d.kind in ("breach", "phase_passed") and d.account not in ends:
            ends[d.account] = d
    result = {}
    for account, st in engine.states.items():
        end = ends.get(account)
        if end is not None:
            result[account] = Outcome(st.status, end.rule, end.ts.isoformat())
        else:
            result[account] = Outcome(st.status)
    return result


@dataclass
class WhatIf:
    labels: tuple[str, str]
    outcomes: tuple[dict[str, Outcome], dict[str, Outcome]]
    decisions: tuple[Counter, Counter]
    malformed: list[Rejected]
    seconds: float

    def rates(self, side: int) -> dict[str, float]:
        outs = self.outcomes[side]
        total = len(outs) or 1
        return {
            "accounts": len(outs),
            "pass_rate": sum(o.status == "passed" for o in outs.values()) / total,
            "breach_rate": sum(o.status == "breached" for o in outs.values()) / total,
        }

    def breaches_by_rule(self, side: int) -> Counter:
        return Counter(o.rule for o in self.outcomes[side].values() if o.status == "breached")

    def differences(self) -> list[tuple[str, Outcome, Outcome]]:
        a, b = self.outcomes
        return [(acc, a[acc], b[acc]) for acc in sorted(a) if acc in b and a[acc].label() != b[acc].label()]

    def changes(self) -> Counter:
        """How outcomes moved from A to B, e.g. ``('passed', 'breached (daily_loss)'): 3``."""
        return Counter((oa.label(), ob.label()) for _, oa, ob in self.differences())

    def to_dict(self) -> dict:
        return {
            "packs": list(self.labels),
            "a": {**self.rates(0), "breaches_by_rule": dict(self.breaches_by_rule(0))},
            "b": {**self.rates(1), "breaches_by_rule": dict(self.breaches_by_rule(1))},
            "changes": [{"from": k[0], "to": k[1], "accounts": v} for k, v in sorted(self.changes().items())],
            "differences": [
                {"account": acc, "a": oa.label(), "b": ob.label(), "a_at": oa.at, "b_at": ob.at}
                for acc, oa, ob in self.differences()
            ],
            "rejected_lines": len(self.malformed),
        }


def whatif(a: CompiledPack, b: CompiledPack, events: str | Path, *, phase: str | None = None,
           prices: str | Path | None = None, symbols: SymbolTable | None = None, exact: bool = False) -> WhatIf:
    """Replay one history under two packs (decoding it once) and compare the outcomes; with ``prices``
    and ``symbols`` both are marked to the tick, as :func:`replay` does."""
    vector = symbols is not None and not exact
    engines = (Engine(a, phase=phase, vector=vector), Engine(b, phase=phase, vector=vector))
    for engine in engines:
        engine.set_symbols(symbols)
    collected: tuple[list[Decision], list[Decision]] = ([], [])
    malformed: list[Rejected] = []
    started = time.perf_counter()
    for batch, lines, bad in with_prices(events, prices):
        malformed.extend(bad)
        for engine, sink in zip(engines, collected):
            sink.extend(engine.feed(batch, lines))
    for engine in engines:
        engine.settle()
    seconds = time.perf_counter() - started
    return WhatIf(
        labels=(a.describe(), b.describe()),
        outcomes=(outcomes(engines[0], collected[0]), outcomes(engines[1], collected[1])),
        decisions=(engines[0].stats.decisions, engines[1].stats.decisions),
        malformed=malformed,
        seconds=seconds,
    )


def decision_key(decision: Any) -> tuple[str, str, str, str]:
    """What makes two decisions of one account the same decision: the event, the kind, the rule and the
    words (which carry the numbers). Works on the engine's :class:`Decision` and on stored rows alike."""
    return (decision.event_id, decision.kind, decision.rule, decision.message)


def compare_decisions(a: Sequence[A], b: Sequence[B]) -> tuple[list[A], list[B]]:
    """The decisions only in ``a`` and only in ``b`` (each in its own order): one account's history as it
    was decided and as another rule pack decides it. Equal decisions are paired one to one, so a decision
    made twice under ``a`` and once under ``b`` leaves one in ``a``'s list."""
    return _unmatched(a, b), _unmatched(b, a)


def _unmatched(mine: Sequence[A], theirs: Sequence[Any]) -> list[A]:
    """The decisions of ``mine`` left over when each is paired with an equal one of ``theirs`` at most once."""
    left = Counter(decision_key(d) for d in theirs)
    out: list[A] = []
    for d in mine:
        key = decision_key(d)
        if left[key] > 0:
            left[key] -= 1
        else:
            out.append(d)
    return out
