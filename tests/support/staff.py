"""Two firms with staff of every role, traders, accounts and decisions, behind a real API app.

Firm ``fa``: pack ``two-step-100k`` v1 (active), traders ``t1`` and ``t2``, accounts ``A1`` and ``A3``
of ``t1`` and ``A2`` of ``t2``, a decision on ``A1`` and one on ``A2``, a quarantined line, a platform
key, and users ``admin``, ``risk``, ``finance``, ``support`` and ``trader`` (of ``t1``).
Firm ``fb``: the same pack, account ``B1`` with a decision, users ``admin``, ``risk`` and ``trader``.
Tokens are issued directly (logging in is tested on its own).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import warnings
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import select

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from propcrm.adapters.db import models as m
from propcrm.api import create_app
from propcrm.domain.rulepack import canonical_json, load_pack
from propcrm.services import users
from propcrm.services.apikeys import create_key
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.ingest import ingest

ROLES = ("admin", "risk", "finance", "support", "trader")
UTC = dt.timezone.utc
PASSWORD = "correct horse battery staple"


@dataclass
class World:
    client: TestClient
    sessions: Any
    tokens: dict[str, str] = field(default_factory=dict)  # "fa:risk" -> bearer token
    user_ids: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, int] = field(default_factory=dict)  # external id -> id
    traders: dict[str, int] = field(default_factory=dict)
    version: dict[str, int] = field(default_factory=dict)  # firm -> pack version id
    quarantine: dict[str, int] = field(default_factory=dict)  # firm -> an entry id
    key: dict[str, str] = field(default_factory=dict)  # firm -> api key id
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def headers(self, who: str | None, **extra: str) -> dict[str, str]:
        """Bearer header of ``who`` ("risk" = firm fa's risk user, "fb:admin" = firm fb's admin, "operator" = the
        operator of firm ops when seeded: support/routes_firms.py), or none."""
        if who is None:
            return dict(extra)
        key = who if ":" in who else f"{'ops' if who == 'operator' else 'fa'}:{who}"
        return {"Authorization": f"Bearer {self.tokens[key]}", **extra}

    def fresh_token(self, who: str) -> str:
        key = who if ":" in who else f"{'ops' if who == 'operator' else 'fa'}:{who}"
        with self.sessions.begin() as s:
            token, _ = users.issue_token(s, user=s.get(m.User, self.user_ids[key]))
        return token

    def new_account(self, *, firm: str = "fa", status: str = "active", trader: str | None = None) -> int:
        with self.sessions.begin() as s:
            account = create_account(s, firm_id=firm, external_id=f"X{next(self.counter)}",
                                     pack_version_id=self.version[firm],
                                     trader_id=self.traders[trader] if trader else None)
            account.status = status
            return account.id

    def new_version(self, *, firm: str = "fa") -> int:
        pack = msgspec.structs.replace(load_pack("two-step-100k"), id=f"pack-{next(self.counter)}")
        with self.sessions.begin() as s:
            return add_pack(s, firm_id=firm, pack=pack).id

    def new_key(self, *, firm: str = "fa") -> str:
        with self.sessions.begin() as s:
            key_id, _ = create_key(s, firm_id=firm, platform="mt5")
        return key_id

    def pack_body(self) -> bytes:
        pack = msgspec.structs.replace(load_pack("two-step-100k"), id=f"pack-{next(self.counter)}")
        return canonical_json(pack)

    def status_of(self, account_id: int) -> str:
        with self.sessions() as s:
            return s.get(m.Account, account_id).status

    def ingest(self, *events: dict, firm: str = "fa", source: str = "mt5") -> None:
        body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        with self.sessions.begin() as s:
            report = ingest(s, firm_id=firm, source=source, body=body)
        assert report.rejected == 0, report.to_dict()

    def evaluate(self) -> None:
        from propcrm.services.evaluation import EvaluationWorker

        EvaluationWorker(self.sessions).run_until_idle()

    def audit(self, action: str) -> list[m.AuditEntry]:
        with self.sessions() as s:
            return list(s.scalars(select(m.AuditEntry).where(m.AuditEntry.action == action).order_by(m.AuditEntry.seq)))


def _decision(account: m.Account, kind: str = "warning") -> m.Decision:
    body = {"account": account.external_id, "event_id": f"ev-{account.external_id}", "ts": "2026-03-02T10:00:00Z",
            "kind": kind, "rule": "daily_loss", "phase": account.phase, "message": "test decision"}
    return m.Decision(firm_id=account.firm_id, account_id=account.id, event_seq=None, event_id=body["event_id"],
                      ts=dt.datetime(2026, 3, 2, 10, tzinfo=UTC), kind=kind, rule="daily_loss", phase=account.phase,
                      message="test decision", value=Decimal("96000"), threshold=Decimal("95000"),
                      body=json.dumps(body).encode())


def build_world(db_url: str) -> tuple[Any, World]:
    app = create_app(db_url)
    client = TestClient(app, raise_server_exceptions=False)
    world = World(client=client, sessions=app.state.sessions)
    return app, world


def seed(world: World) -> World:
    with world.sessions.begin() as s:
        for firm in ("fa", "fb"):
            ensure_firm(s, firm_id=firm)
            world.version[firm] = add_pack(s, firm_id=firm, pack=load_pack("two-step-100k"), activate=True).id
        for name, firm in (("t1", "fa"), ("t2", "fa"), ("tb", "fb")):
            trader = m.Trader(firm_id=firm, name=name, email=f"{name}@traders.example")
            s.add(trader)
            s.flush()
            world.traders[name] = trader.id
        for external, firm, trader in (("A1", "fa", "t1"), ("A2", "fa", "t2"), ("A3", "fa", "t1"), ("B1", "fb", "tb")):
            account = create_account(s, firm_id=firm, external_id=external, pack_version_id=world.version[firm],
                                     trader_id=world.traders[trader])
            world.accounts[external] = account.id
            s.add(_decision(account))
        people = [("fa", role) for role in ROLES] + [("fb", "admin"), ("fb", "risk"), ("fb", "trader")]
        for firm, role in people:
            trader_id = (world.traders["t1"] if firm == "fa" else world.traders["tb"]) if role == "trader" else None
            user = users.create_user(s, firm_id=firm, email=f"{role}@{firm}.example", password=PASSWORD, role=role,
                                     trader_id=trader_id)
            world.user_ids[f"{firm}:{role}"] = user.id
            world.tokens[f"{firm}:{role}"], _ = users.issue_token(s, user=user)
        for firm in ("fa", "fb"):
            report = ingest(s, firm_id=firm, source="mt5", body=b'{"id":"q1","type":"equity"}\n')
            world.quarantine[firm] = report.lines[0].quarantine_id
            world.key[firm], _ = create_key(s, firm_id=firm, platform="mt5")
    return world
