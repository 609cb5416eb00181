"""Reads behind the rule pack pages: the firm's packs with their use, a settings diff of two versions,
the editor's starting text, and the bounded what-if back-test of a version against stored events.

Nothing here writes: saving, activating and retiring go through :mod:`propcrm.services.rulepacks`
exactly as the JSON API does.
"""

from __future__ import annotations

import datetime as dt
import difflib
import heapq
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..domain.decisions import Decision
from ..domain.events import DECODER
from ..domain.program import CompiledPack, compile_pack
from ..domain.rulepack import RulePack
from ..engine.replay import Outcome, WhatIf, outcomes
from ..engine.runner import Engine
from ..services.catalog import pack_of
from ..services.errors import Invalid, NotFound
from ..services.evaluation import firm_wide
from ..services.symbols import table_for

# what-if bounds: a click never replays more than this (the page says so)
MAX_ACCOUNTS = 1000
DEFAULT_ACCOUNTS = 200
MAX_EVENTS = 300_000
MAX_LISTED = 200


# --------------------------------------------------------------------------------------------------
# the firm's packs


@dataclass
class VersionUse:
    row: m.RulePackVersion
    accounts: int = 0
    products: list[str] = field(default_factory=list)


@dataclass
class PackSummary:
    pack_id: str
    name: str | None
    versions: list[VersionUse]

    @property
    def active(self) -> VersionUse | None:
        return next((v for v in self.versions if v.row.status == "active"), None)

    @property
    def drafts(self) -> list[VersionUse]:
        return [v for v in self.versions if v.row.status == "draft"]

    @property
    def accounts(self) -> int:
        return sum(v.accounts for v in self.versions)


def pack_summaries(session: Session, *, firm_id: str, pack_id: str | None = None) -> list[PackSummary]:
    """Every pack of the firm (or one), versions oldest first, with accounts bound and products sold per version."""
    query = select(m.RulePackVersion).where(m.RulePackVersion.firm_id == firm_id)
    if pack_id is not None:
        query = query.where(m.RulePackVersion.pack_id == pack_id)
    rows = list(session.scalars(query.order_by(m.RulePackVersion.pack_id, m.RulePackVersion.version)))
    if not rows:
        return []
    ids = [r.id for r in rows]
    counts = dict(session.execute(
        select(m.Account.pack_version_id, func.count())
        .where(m.Account.firm_id == firm_id, m.Account.pack_version_id.in_(ids))
        .group_by(m.Account.pack_version_id)
    ).all())
    products: dict[int, list[str]] = {}
    retired = {r.id for r in rows if r.status == "retired"}
    for version_id, name, active in session.execute(
        select(m.Product.pack_version_id, m.Product.name, m.Product.active)
        .where(m.Product.firm_id == firm_id, m.Product.pack_version_id.in_(ids)).order_by(m.Product.name)
    ):
        label = f"{name} (inactive)" if not active else f"{name} (not on sale: version retired)" if version_id in retired else name
        products.setdefault(version_id, []).append(label)
    packs: dict[str, PackSummary] = {}
    for row in rows:
        summary = packs.get(row.pack_id)
        if summary is None:
            summary = packs[row.pack_id] = PackSummary(row.pack_id, None, [])
        summary.versions.append(VersionUse(row, counts.get(row.id, 0), products.get(row.id, [])))
        name = json.loads(row.body).get("name")
        if name:
            summary.name = name  # the newest version's name wins
    return list(packs.values())


def pack_or_404(session: Session, *, firm_id: str, pack_id: str) -> PackSummary:
    found = pack_summaries(session, firm_id=firm_id, pack_id=pack_id)
    if not found:
        raise NotFound(f"no rule pack {pack_id}")
    return found[0]


def version_in(summary: PackSummary, version_id: int | None) -> VersionUse | None:
    if version_id is None:
        return None
    for use in summary.versions:
        if use.row.id == version_id:
            return use
    raise NotFound(f"rule pack {summary.pack_id} has no version with id {version_id}")


def default_pair(summary: PackSummary) -> tuple[VersionUse, VersionUse]:
    """Active vs newest draft; else the two newest versions (or one version against itself)."""
    drafts = summary.drafts
    active = summary.active
    if active is not None and drafts:
        return active, drafts[-1]
    newest = summary.versions[-1]
    base = active if active is not None and active is not newest else (
        summary.versions[-2] if len(summary.versions) > 1 else newest)
    return base, newest


def label(row: m.RulePackVersion) -> str:
    return f"{row.pack_id} v{row.version} ({row.status})"


# --------------------------------------------------------------------------------------------------
# settings, field by field


def _plain(value: Any) -> Any:
    """Every field of a pack struct (defaults included), decimals as text."""
    if isinstance(value, msgspec.Struct):
        out: dict[str, Any] = {}
        tag = value.__struct_config__.tag
        if tag is not None and value.__struct_config__.tag_field:
            out[value.__struct_config__.tag_field] = tag
        for f in msgspec.structs.fields(value):
            out[f.name] = _plain(getattr(value, f.name))
        return out
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            return ", ".join(_show(v) for v in value) if value else "(none)"
        return json.dumps(value, sort_keys=True)
    return str(value)


def _flatten(node: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict):
                out.update(_flatten(value, path))
            else:
                out[path] = _show(value)
    else:
        out[prefix] = _show(node)
    return out


@dataclass
class FieldRow:
    field: str
    a: str | None  # None: absent on that side (rule or phase missing)
    b: str | None

    @property
    def change(self) -> str:
        if self.a is None:
            return "added"
        if self.b is None:
            return "removed"
        return "same" if self.a == self.b else "changed"


@dataclass
class Section:
    """A group of settings: the pack's own, a phase's own, or one rule of a phase."""

    phase: str | None
    title: str
    kind: str | None
    rows: list[FieldRow]

    @property
    def change(self) -> str:
        changes = {r.change for r in self.rows}
        if changes == {"added"}:
            return "added"
        if changes == {"removed"}:
            return "removed"
        return "same" if changes <= {"same"} else "changed"


def _pair_rows(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[FieldRow]:
    fa = _flatten(a) if a is not None else {}
    fb = _flatten(b) if b is not None else {}
    keys = list(fa) + [k for k in fb if k not in fa]
    return [FieldRow(k, fa.get(k) if a is not None else None, fb.get(k) if b is not None else None) for k in keys]


def diff_versions(a: RulePack, b: RulePack) -> list[Section]:
    """The two packs' settings side by side: pack fields, then per phase its own fields and each rule."""
    pa, pb = _plain(a), _plain(b)
    sections: list[Section] = []
    top_a = {k: v for k, v in pa.items() if k not in ("phases", "version")}  # the version is in the headings
    top_b = {k: v for k, v in pb.items() if k not in ("phases", "version")}
    sections.append(Section(None, "Pack settings", None, _pair_rows(top_a, top_b)))
    phases_a = {p["name"]: p for p in pa["phases"]}
    phases_b = {p["name"]: p for p in pb["phases"]}
    for name in list(phases_a) + [n for n in phases_b if n not in phases_a]:
        ph_a, ph_b = phases_a.get(name), phases_b.get(name)
        own_a = {k: v for k, v in ph_a.items() if k not in ("rules", "name")} if ph_a else None
        own_b = {k: v for k, v in ph_b.items() if k not in ("rules", "name")} if ph_b else None
        sections.append(Section(name, "phase settings", None, _pair_rows(own_a, own_b)))
        rules_a = {r.get("id") or r["kind"]: r for r in (ph_a or {}).get("rules", [])}
        rules_b = {r.get("id") or r["kind"]: r for r in (ph_b or {}).get("rules", [])}
        for rid in list(rules_a) + [r for r in rules_b if r not in rules_a]:
            ra, rb = rules_a.get(rid), rules_b.get(rid)
            strip = ("id",)
            sections.append(Section(
                name, rid, (ra or rb)["kind"],
                _pair_rows({k: v for k, v in ra.items() if k not in strip} if ra else None,
                           {k: v for k, v in rb.items() if k not in strip} if rb else None),
            ))
    return sections


def canonical_text(row: m.RulePackVersion) -> str:
    """The stored canonical JSON as sorted, indented JSON: one setting a line, for a text diff."""
    return json.dumps(json.loads(row.body), indent=2, sort_keys=True, ensure_ascii=False)


def unified_diff(a: m.RulePackVersion, b: m.RulePackVersion, context: int = 3) -> list[tuple[str, str]]:
    """``(css class, line)`` of a unified diff of the two canonical texts."""
    lines = difflib.unified_diff(canonical_text(a).splitlines(), canonical_text(b).splitlines(),
                                 fromfile=f"{a.pack_id} v{a.version}", tofile=f"{b.pack_id} v{b.version}",
                                 lineterm="", n=context)
    out = []
    for line in lines:
        if line.startswith(("+++", "---")):
            cls = "file"
        elif line.startswith("@@"):
            cls = "hunk"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        else:
            cls = "ctx"
        out.append((cls, line))
    return out


# --------------------------------------------------------------------------------------------------
# the editor's text


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    Decimal, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:float" if "." in str(value) else
                                                          "tag:yaml.org,2002:int", format(value, "f")))

_TOP = ("id", "version", "name", "description", "sources", "currency", "initial_balance", "timezone", "day_start",
        "phases", "scaling")


def dump_doc(data: dict[str, Any]) -> str:
    """A pack document as the editor shows it: top-level keys in the reference's order, numbers unquoted."""
    ordered = {k: data[k] for k in _TOP if k in data}
    ordered.update({k: v for k, v in data.items() if k not in ordered})
    return yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, default_flow_style=None, allow_unicode=True, width=110)


def editor_text(row: m.RulePackVersion, *, version: int) -> str:
    """The version as YAML (numbers unquoted, defaults left out), renumbered ``version`` for the new draft."""
    pack = pack_of(row)
    data = msgspec.to_builtins(pack, builtin_types=(Decimal,))
    data["version"] = version
    ordered = {k: data[k] for k in _TOP if k in data}
    ordered.update({k: v for k, v in data.items() if k not in ordered})
    return yaml.dump(ordered, Dumper=_Dumper, sort_keys=False, default_flow_style=None, allow_unicode=True, width=110)


# --------------------------------------------------------------------------------------------------
# what-if


@dataclass
class DecisionDiff:
    index: int
    a: Decision | None
    b: Decision | None


@dataclass
class AccountDiff:
    account_id: int
    external_id: str
    phase: str
    a: Outcome
    b: Outcome
    first: DecisionDiff | None

    @property
    def outcome_changed(self) -> bool:
        return self.a.label() != self.b.label()


@dataclass
class WhatIfRun:
    result: WhatIf
    accounts: int  # accounts selected
    replayed: int  # accounts with stored events
    events: int
    truncated: bool
    capped_accounts: bool
    last_ts: dt.datetime | None
    skipped: list[tuple[str, str]]  # (external id, why)
    diffs: list[AccountDiff]
    decision_only: int  # accounts whose decisions differ but whose outcome does not
    seconds: float
    totals: list[tuple[str, str, str]] = field(default_factory=list)


def _key(d: Decision) -> tuple:
    return (d.event_id, d.kind, d.rule, d.value, d.threshold)


def _first_difference(a: list[Decision], b: list[Decision]) -> DecisionDiff | None:
    for index in range(max(len(a), len(b))):
        da = a[index] if index < len(a) else None
        db = b[index] if index < len(b) else None
        if da is None or db is None or _key(da) != _key(db):
            return DecisionDiff(index, da, db)
    return None


def select_accounts(session: Session, *, firm_id: str, summary: PackSummary, scope: str, base: m.RulePackVersion,
                    external_ids: list[str], limit: int) -> tuple[list[Any], bool]:
    """The accounts to replay, newest first, at most ``limit`` (and whether more would have matched).

    Chosen by scope (``bound``, ``pack``), only accounts with history (stored events) count: one without
    replays to nothing, and spent the budget for nothing (146 of a default 200 in the demo firm).
    A ``list`` is taken as given."""
    query = select(m.Account.id, m.Account.external_id, m.Account.phase).where(m.Account.firm_id == firm_id)
    with_history = select(m.RawEvent.seq).where(m.RawEvent.firm_id == firm_id,  # ix_raw_events_stream
                                                m.RawEvent.account_id == m.Account.id).exists()
    if scope == "bound":
        query = query.where(m.Account.pack_version_id == base.id, with_history)
    elif scope == "pack":
        query = query.where(m.Account.pack_version_id.in_([v.row.id for v in summary.versions]), with_history)
    elif scope == "list":
        if not external_ids:
            raise Invalid("list the accounts' external ids (one per line or separated by commas)")
        query = query.where(m.Account.external_id.in_(external_ids[:MAX_ACCOUNTS]))
    else:
        raise Invalid("choose which accounts to replay")
    rows = list(session.execute(query.order_by(m.Account.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def _own_events(session: Session, firm_id: str, ids: list[int], max_events: int, *, ordered: bool) -> list[Any]:
    """``(seq, body)`` of the accounts' events, in stored order, at most ``max_events + 1``. Unordered, the
    database skips a sort of the bodies (about twice as fast); used when everything fits, then sorted here."""
    rows: list[Any] = []
    for chunk in range(0, len(ids), 500):
        query = (select(m.RawEvent.seq, m.RawEvent.body)
                 .where(m.RawEvent.firm_id == firm_id, m.RawEvent.account_id.in_(ids[chunk:chunk + 500])))
        if ordered:
            query = query.order_by(m.RawEvent.seq)
        rows.extend(session.execute(query.limit(max_events + 1 - (0 if ordered else len(rows)))).all())
        if not ordered and len(rows) > max_events:
            break
    rows.sort(key=lambda r: r[0])
    return rows


def run_whatif(session: Session, *, firm_id: str, a: m.RulePackVersion, b: m.RulePackVersion,
               accounts: list[Any], capped_accounts: bool = False, max_events: int | None = None) -> WhatIfRun:
    """Replay the accounts' stored events (and the firm's clock and news events), in stored order, under
    pack ``a`` and pack ``b``, each account in its own phase; at most ``max_events`` events."""
    started = time.perf_counter()
    max_events = MAX_EVENTS if max_events is None else max_events
    packs: tuple[CompiledPack, CompiledPack] = (compile_pack(pack_of(a)), compile_pack(pack_of(b)))
    programs: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    skipped: list[tuple[str, str]] = []
    by_external: dict[str, Any] = {}
    for acc in accounts:
        try:
            pa, pb = packs[0].phase(acc.phase), packs[1].phase(acc.phase)
        except KeyError:
            skipped.append((acc.external_id, f"phase {acc.phase!r} is not in both versions"))
            continue
        programs[0][acc.external_id], programs[1][acc.external_id] = pa, pb
        by_external[acc.external_id] = acc
    ids = [acc.id for acc in by_external.values()]
    own_rows = _own_events(session, firm_id, ids, max_events, ordered=False)
    truncated = len(own_rows) > max_events
    if truncated:  # the bound was hit: the earliest events in stored order, so every history stops at one time
        own_rows = _own_events(session, firm_id, ids, max_events, ordered=True)[:max_events]
    shared_rows: list[Any] = []
    if own_rows:
        shared_query = (
            firm_wide(m.RawEvent.seq, m.RawEvent.body, firm_id=firm_id)
            .where(m.RawEvent.seq <= own_rows[-1][0])
            .order_by(m.RawEvent.seq).limit(max_events + 1)
        )
        shared_rows = list(session.execute(shared_query).all())
        if len(shared_rows) > max_events:
            truncated = True
            shared_rows = shared_rows[:max_events]
            own_rows = [r for r in own_rows if r[0] <= shared_rows[-1][0]]
    engines = tuple(
        Engine(lambda ext, _p=progs: _p.get(ext), dedupe=False)  # raw_events holds each (source, id) once
        for progs in programs
    )
    table = table_for(session, firm_id)
    for engine in engines:  # ticks mark the positions, as in the evaluation worker
        engine.set_symbols(table)
    collected: tuple[dict[str, list[Decision]], dict[str, list[Decision]]] = ({}, {})
    flat: tuple[list[Decision], list[Decision]] = ([], [])
    batch: list[Any] = []
    last_ts = None
    count = 0

    def flush() -> None:
        for engine, sink, everything in zip(engines, collected, flat):
            for d in engine.feed(batch):
                sink.setdefault(d.account, []).append(d)
                everything.append(d)
        batch.clear()

    for _seq, body in heapq.merge(own_rows, shared_rows, key=lambda r: r[0]):
        event = DECODER.decode(body)
        batch.append(event)
        last_ts = event.ts
        count += 1
        if len(batch) >= 5000:
            flush()
    if batch:
        flush()
    result = WhatIf(labels=(label(a), label(b)),
                    outcomes=(outcomes(engines[0], flat[0]), outcomes(engines[1], flat[1])),
                    decisions=(engines[0].stats.decisions, engines[1].stats.decisions),
                    malformed=[], seconds=time.perf_counter() - started)
    diffs: list[AccountDiff] = []
    decision_only = 0
    oa, ob = result.outcomes
    for ext in sorted(set(oa) & set(ob)):
        first = _first_difference(collected[0].get(ext, []), collected[1].get(ext, []))
        changed = oa[ext].label() != ob[ext].label()
        if first is None and not changed:
            continue
        if not changed:
            decision_only += 1
        acc = by_external[ext]
        diffs.append(AccountDiff(acc.id, ext, acc.phase, oa[ext], ob[ext], first))
    diffs.sort(key=lambda d: (not d.outcome_changed, d.external_id))
    return WhatIfRun(result=result, accounts=len(accounts), replayed=len(oa), events=count, truncated=truncated,
                     capped_accounts=capped_accounts, last_ts=last_ts, skipped=skipped, diffs=diffs,
                     decision_only=decision_only, seconds=time.perf_counter() - started)


def totals(run: WhatIfRun) -> list[tuple[str, str, str]]:
    """Rows of the totals table: what, under A, under B."""
    r = run.result
    ra, rb = r.rates(0), r.rates(1)
    rows = [("Accounts replayed", f"{ra['accounts']:,}", f"{rb['accounts']:,}"),
            ("Passed", f"{sum(o.status == 'passed' for o in r.outcomes[0].values()):,} ({ra['pass_rate']:.1%})",
             f"{sum(o.status == 'passed' for o in r.outcomes[1].values()):,} ({rb['pass_rate']:.1%})"),
            ("Breached", f"{sum(o.status == 'breached' for o in r.outcomes[0].values()):,} ({ra['breach_rate']:.1%})",
             f"{sum(o.status == 'breached' for o in r.outcomes[1].values()):,} ({rb['breach_rate']:.1%})"),
            ("Paused", f"{sum(o.status == 'paused' for o in r.outcomes[0].values()):,}",
             f"{sum(o.status == 'paused' for o in r.outcomes[1].values()):,}")]
    ba, bb = r.breaches_by_rule(0), r.breaches_by_rule(1)
    for rule in sorted(set(ba) | set(bb), key=str):
        rows.append((f"Breached by {rule}", f"{ba.get(rule, 0):,}", f"{bb.get(rule, 0):,}"))
    da: Counter = r.decisions[0]
    db: Counter = r.decisions[1]
    for kind in sorted(set(da) | set(db)):
        rows.append((f"Decisions: {kind}", f"{da.get(kind, 0):,}", f"{db.get(kind, 0):,}"))
    return rows


def parse_ids(text: str) -> list[str]:
    return [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()][:MAX_ACCOUNTS]
