"""Firms, rule pack versions and accounts: what the engine needs to know before events arrive."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..domain.program import CompiledPack, compile_pack
from ..domain.rulepack import RulePack, canonical_json, content_hash, parse_pack


class CatalogError(ValueError):
    """A refused catalogue change; the message says why."""


def ensure_firm(session: Session, *, firm_id: str, name: str | None = None) -> m.Firm:
    firm = session.get(m.Firm, firm_id)
    if firm is None:
        firm = m.Firm(id=firm_id, name=name or firm_id)
        session.add(firm)
        session.flush()
    return firm


def add_pack(session: Session, *, firm_id: str, pack: RulePack, activate: bool = False) -> m.RulePackVersion:
    """Store a pack version (draft, or active: the previous active version of the pack is retired).

    The same id and version with the same content is a no-op; with different content it is refused:
    a changed pack needs a new version.
    """
    digest = content_hash(pack)
    existing = session.scalars(
        select(m.RulePackVersion).where(
            m.RulePackVersion.firm_id == firm_id,
            m.RulePackVersion.pack_id == pack.id,
            m.RulePackVersion.version == pack.version,
        )
    ).one_or_none()
    if existing is not None:
        if existing.content_hash != digest:
            raise CatalogError(
                f"pack {pack.id} v{pack.version} already exists with different content "
                f"({existing.content_hash[:19]}…); give the changed pack a new version"
            )
        row = existing
    else:
        row = m.RulePackVersion(
            firm_id=firm_id,
            pack_id=pack.id,
            version=pack.version,
            status="draft",
            content_hash=digest,
            body=canonical_json(pack).decode(),
        )
        session.add(row)
        session.flush()
    if activate and row.status != "active":
        session.execute(
            update(m.RulePackVersion)
            .where(
                m.RulePackVersion.firm_id == firm_id,
                m.RulePackVersion.pack_id == pack.id,
                m.RulePackVersion.status == "active",
                m.RulePackVersion.id != row.id,
            )
            .values(status="retired")
        )
        row.status = "active"
    return row


def pack_of(row: m.RulePackVersion) -> RulePack:
    return parse_pack(row.body, source=f"{row.pack_id} v{row.version}")


class PackCache:
    """Compiled rule packs by stored version — the one cache of them (a version's content never changes:
    it is hashed). The reads share one, bounded (:func:`compiled_pack`); each evaluation worker keeps its
    own, unbounded, over the one database it works on (:meth:`by_id`, no row read once compiled)."""

    def __init__(self, size: int | None = 256) -> None:
        self._packs: OrderedDict[object, CompiledPack] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def compiled(self, row: m.RulePackVersion) -> CompiledPack:
        """``row``'s pack, compiled (keyed by id and content hash: safe across databases)."""
        return self._get((row.id, row.content_hash), lambda: row)

    def by_id(self, version_id: int, load: Callable[[int], m.RulePackVersion | None]) -> CompiledPack:
        """Version ``version_id`` of this cache's database, compiled; ``load`` reads its row on a miss."""
        def row() -> m.RulePackVersion:
            found = load(version_id)
            if found is None:
                raise LookupError(f"no rule pack version {version_id}")
            return found

        return self._get(version_id, row)

    def _get(self, key: object, row: Callable[[], m.RulePackVersion]) -> CompiledPack:
        with self._lock:
            found = self._packs.get(key)
            if found is not None:
                self._packs.move_to_end(key)
                return found
        compiled = compile_pack(pack_of(row()))
        with self._lock:
            self._packs[key] = compiled
            while self._size is not None and len(self._packs) > self._size:
                self._packs.popitem(last=False)
        return compiled


_SHARED_PACKS = PackCache()


def compiled_pack(row: m.RulePackVersion) -> CompiledPack:
    """``row``'s rule pack compiled, from the process's shared cache."""
    return _SHARED_PACKS.compiled(row)


def create_account(
    session: Session,
    *,
    firm_id: str,
    external_id: str,
    pack_version_id: int,
    platform: str = "demo",
    login: str | None = None,
    phase: str | None = None,
    trader_id: int | None = None,
    product_id: int | None = None,
) -> m.Account:
    version = session.get(m.RulePackVersion, pack_version_id)
    if version is None or version.firm_id != firm_id:
        raise CatalogError(f"no rule pack version {pack_version_id} in firm {firm_id}")
    pack = pack_of(version)
    names = [p.name for p in pack.phases]
    phase = phase or names[0]
    if phase not in names:
        raise CatalogError(f"pack {pack.id} v{pack.version} has no phase {phase!r} (phases: {', '.join(names)})")
    clash = session.scalars(
        select(m.Account).where(m.Account.firm_id == firm_id, m.Account.external_id == external_id)
    ).one_or_none()
    if clash is not None:
        raise CatalogError(f"account {external_id!r} already exists in firm {firm_id}")
    account = m.Account(
        firm_id=firm_id,
        external_id=external_id,
        platform=platform,
        login=login or external_id,
        pack_version_id=pack_version_id,
        phase=phase,
        trader_id=trader_id,
        product_id=product_id,
    )
    session.add(account)
    session.flush()
    return account
