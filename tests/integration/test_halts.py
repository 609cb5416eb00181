"""The firm-wide kill switch (issue 19, item 7), through the API on both backends.

Worked example. A feed fault on the firm's MT5 server: risk halts every account sold on pack ``two-step-100k``.
Of the firm's accounts A1, A2, A3 (trading) and a breached one, the preview counts 3; the halt disables
those 3 through the outbox and marks them ``halted``. During the halt events are still evaluated: A2
falls below its daily floor and is breached (its own ``disable`` goes out, its status stays ``halted``).
A person emergency-stops A3 meanwhile. The resume then lets exactly A1 trade again (``enable``): A2 is
``breached``, A3 stays ``suspended``, and the breached account that was never halted is untouched.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m

pytestmark = pytest.mark.usefixtures("cheap_argon2")


def commands(world, external: str) -> list[str]:
    with world.sessions() as s:
        rows = s.scalars(select(m.OutboxMessage).where(m.OutboxMessage.kind == "platform_command")
                         .order_by(m.OutboxMessage.id))
        return [r.payload["command"] for r in rows if r.payload.get("account") == external]


def test_halt_then_resume_restores_exactly_the_accounts_the_halt_stopped(world):
    breached = world.new_account(status="breached")
    scope = {"pack_id": "two-step-100k"}
    preview = world.client.post("/api/v1/halts/preview", json=scope, headers=world.headers("risk"))
    assert preview.status_code == 200, preview.text
    assert preview.json()["count"] == 3 and sorted(preview.json()["shown"]) == ["A1", "A2", "A3"]
    assert preview.json()["not_trading"] == 1
    assert world.status_of(world.accounts["A1"]) == "active"  # a preview changes nothing

    assert world.client.post("/api/v1/halts", json={"scope": scope, "reason": "feed fault"},
                             headers=world.headers("support")).status_code == 403
    moved = world.client.post("/api/v1/halts", json={"scope": scope, "reason": "feed fault", "expected_count": 2},
                              headers=world.headers("risk"))
    assert moved.status_code == 409 and "3" in moved.json()["error"]
    bare = world.client.post("/api/v1/halts", json={"scope": {}, "reason": "feed fault"}, headers=world.headers("risk"))
    assert bare.status_code == 422 and "scope" in bare.json()["error"]

    answer = world.client.post("/api/v1/halts", json={"scope": scope, "reason": "MT5 feed fault", "expected_count": 3},
                               headers=world.headers("risk"))
    assert answer.status_code == 201, answer.text
    halt = answer.json()
    assert halt["accounts"] == 3 and halt["scope"] == scope and halt["reason"] == "MT5 feed fault"
    for name in ("A1", "A2", "A3"):
        assert world.status_of(world.accounts[name]) == "halted"
        assert commands(world, name) == ["disable"]
    assert world.status_of(breached) == "breached"
    entry = world.audit("trading.halt")[-1]
    assert entry.actor.endswith("risk@fa.example")
    assert entry.after == {"scope": scope, "accounts": 3, "reason": "MT5 feed fault"}

    # events keep being evaluated: A2 breaches during the halt; a person stops A3
    world.ingest({"id": "h1", "type": "equity", "account": "A2", "ts": "2026-03-02T10:00:00Z",
                  "equity": "94000", "balance": "100000"})
    world.evaluate()
    assert world.status_of(world.accounts["A2"]) == "halted"
    with world.sessions() as s:
        kinds = list(s.scalars(select(m.Decision.kind).where(m.Decision.account_id == world.accounts["A2"])))
    assert "breach" in kinds
    assert commands(world, "A2") == ["disable", "disable"]  # the halt's, then the breach's
    stop = world.client.post(f"/api/v1/accounts/{world.accounts['A3']}/emergency-stop",
                             json={"reason": "copy trading ring"}, headers=world.headers("risk"))
    assert stop.status_code == 201, stop.text

    listed = world.client.get("/api/v1/halts", headers=world.headers("risk")).json()
    assert listed[0]["id"] == halt["id"] and listed[0]["still_halted"] == 2

    resumed = world.client.post(f"/api/v1/halts/{halt['id']}/resume", json={"reason": "feed back"},
                                headers=world.headers("admin"))
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["resumed"] == 1 and resumed.json()["resume_reason"] == "feed back"
    assert world.status_of(world.accounts["A1"]) == "active" and commands(world, "A1") == ["disable", "enable"]
    assert world.status_of(world.accounts["A2"]) == "breached" and commands(world, "A2")[-1] == "disable"
    assert world.status_of(world.accounts["A3"]) == "suspended"
    assert world.status_of(breached) == "breached"
    entry = world.audit("trading.resume")[-1]
    assert entry.after["resumed"] == 1 and entry.after["statuses"] == {"active": 1, "breached": 1}

    again = world.client.post(f"/api/v1/halts/{halt['id']}/resume", json={"reason": "again"},
                              headers=world.headers("risk"))
    assert again.status_code == 409


def test_a_halt_by_list_and_the_whole_firm(world):
    listed = world.client.post("/api/v1/halts", json={"scope": {"accounts": ["A1", "NOPE"]}, "reason": "spike"},
                               headers=world.headers("risk"))
    assert listed.status_code == 201 and listed.json()["accounts"] == 1
    # the whole firm: A1 is already halted (by the first halt) and is not counted again; firm fb untouched
    preview = world.client.post("/api/v1/halts/preview", json={"all": True}, headers=world.headers("risk")).json()
    assert preview["count"] == 2
    everything = world.client.post("/api/v1/halts", json={"scope": {"all": True}, "reason": "news spike",
                                                          "expected_count": 2}, headers=world.headers("risk"))
    assert everything.status_code == 201
    assert world.status_of(world.accounts["B1"]) == "active"
    both = world.client.post("/api/v1/halts", json={"scope": {"all": True, "phase": "phase-1"}, "reason": "x" * 5},
                             headers=world.headers("risk"))
    assert both.status_code == 422
    other_firm = world.client.post(f"/api/v1/halts/{everything.json()['id']}/resume", json={"reason": "nope"},
                                   headers=world.headers("fb:risk"))
    assert other_firm.status_code == 404
