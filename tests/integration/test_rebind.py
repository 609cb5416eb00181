"""The audited re-bind (issue 19, item 6), through the API on both backends: a firm fixes a wrong rule.

Worked example. Pack ``fix-100k`` v1 was entered with a daily loss of 4% of the initial 100,000 where the
firm's published rule says 5%. Account FX-A fell to equity 95,500 (−4.5%) and was breached under v1 (floor
96,000); FX-B fell to 96,500 and got the 80% warning (v1's warning level is 96,800). The firm stores v2 with
5% and moves both accounts to it: the preview shows FX-A breached → active (the breach would not have
happened; under v2 it crossed the 80% warning level, 96,000, instead) and FX-B losing its warning. On
confirm FX-A trades again (an ``enable`` to the platform), both moves are audited with v1 → v2, the actor
and the reason, and FX-A's later loss is judged by v2's floor 95,000. Moving FX-B on to a v3 with 3% breaches
it at once (floor 97,000) and disables it.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.services.catalog import add_pack, create_account
from support.governance import equity, fix_pack
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
def fixed(world):
    with world.sessions.begin() as s:
        v1 = add_pack(s, firm_id="fa", pack=fix_pack(1, 4), activate=True)
        a = create_account(s, firm_id="fa", external_id="FX-A", pack_version_id=v1.id, platform="mt5")
        b = create_account(s, firm_id="fa", external_id="FX-B", pack_version_id=v1.id, platform="mt5")
        world.accounts.update({"FX-A": a.id, "FX-B": b.id})
        world.version["fix1"] = v1.id
        world.version["fix2"] = add_pack(s, firm_id="fa", pack=fix_pack(2, 5)).id  # a draft: not sold yet
    world.ingest(equity("a1", "FX-A", "2026-03-02T10:00:00Z", "95500"),
                 equity("b1", "FX-B", "2026-03-02T10:00:00Z", "96500"))
    world.evaluate()
    assert world.status_of(world.accounts["FX-A"]) == "breached"
    return world


def decisions(world, external: str, *, current: bool = True) -> list[m.Decision]:
    with world.sessions() as s:
        query = select(m.Decision).where(m.Decision.account_id == world.accounts[external]).order_by(m.Decision.id)
        rows = list(s.scalars(query))
    return [d for d in rows if (d.superseded_at is None) == current]


def commands(world, external: str) -> list[dict]:
    with world.sessions() as s:
        rows = s.scalars(select(m.OutboxMessage).where(m.OutboxMessage.kind == "platform_command")
                         .order_by(m.OutboxMessage.id))
        return [r.payload for r in rows if r.payload.get("account") == external]


def test_a_fixed_rule_preview_then_confirm_re_enables_the_wrongly_breached_account(fixed):
    world = fixed
    v2 = world.version["fix2"]
    selection = {"external_ids": ["FX-A", "FX-B"]}
    preview = world.client.post(f"/api/v1/packs/{v2}/rebind/preview", json=selection, headers=world.headers("risk"))
    assert preview.status_code == 200, preview.text
    plan = preview.json()
    assert plan["target"] == {"id": v2, "pack_id": "fix-100k", "version": 2, "status": "draft"}
    by = {a["external_id"]: a for a in plan["accounts"]}
    a, b = by["FX-A"], by["FX-B"]
    assert (a["status_now"], a["status_after"]) == ("breached", "active")
    assert [(d["kind"], d["rule"]) for d in a["decisions_lost"]] == [("breach", "daily_loss")]
    assert "96,000" in a["decisions_lost"][0]["message"]
    assert [d["kind"] for d in a["decisions_gained"]] == ["warning"]
    assert (b["status_now"], b["status_after"]) == ("active", "active")
    assert [d["kind"] for d in b["decisions_lost"]] == ["warning"] and b["decisions_gained"] == []
    assert plan["changed"] == 2 and plan["problems"] == 0
    # the preview changed nothing
    assert world.status_of(world.accounts["FX-A"]) == "breached"
    assert commands(world, "FX-A") == [c for c in commands(world, "FX-A") if c["command"] == "disable"]

    # a reason is required; support may not; a stale digest is refused
    no_reason = world.client.post(f"/api/v1/packs/{v2}/rebind", json={**selection, "reason": " "},
                                  headers=world.headers("risk"))
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["error"]
    assert world.client.post(f"/api/v1/packs/{v2}/rebind", json={**selection, "reason": "fix"},
                             headers=world.headers("support")).status_code == 403
    stale = world.client.post(f"/api/v1/packs/{v2}/rebind",
                              json={**selection, "reason": "daily loss is 5%", "expect": "0" * 16},
                              headers=world.headers("risk"))
    assert stale.status_code == 409 and "preview it again" in stale.json()["error"]

    done = world.client.post(f"/api/v1/packs/{v2}/rebind",
                             json={**selection, "reason": "daily loss is 5% as published", "expect": plan["digest"]},
                             headers=world.headers("risk"))
    assert done.status_code == 200, done.text
    assert world.status_of(world.accounts["FX-A"]) == "active"
    assert commands(world, "FX-A")[-1]["command"] == "enable"
    assert [d.kind for d in decisions(world, "FX-A", current=False)] == ["breach"]  # kept, marked superseded
    assert [d.kind for d in decisions(world, "FX-A")] == ["warning"]
    assert decisions(world, "FX-B") == []
    listed = world.client.get(f"/api/v1/accounts/{world.accounts['FX-A']}/decisions?order=asc",
                              headers=world.headers("risk")).json()["items"]
    assert [(d["kind"], d["superseded_at"] is not None) for d in listed] == [("breach", True), ("warning", False)]
    with world.sessions() as s:
        assert s.get(m.Account, world.accounts["FX-A"]).pack_version_id == v2
        assert s.get(m.AccountState, world.accounts["FX-A"]).generation == 1  # the caches' invalidation point
    entries = world.audit("account.rebind")
    assert {e.entity_id for e in entries} == {"FX-A", "FX-B"}
    entry = next(e for e in entries if e.entity_id == "FX-A")
    assert entry.actor.endswith("risk@fa.example")
    assert entry.before["version"] == "fix-100k v1" and entry.after["version"] == "fix-100k v2"
    assert (entry.before["status"], entry.after["status"]) == ("breached", "active")
    assert entry.after["reason"] == "daily loss is 5% as published"

    # the chart follows: FX-A's point is redrawn under v2 (floor 95,000, the warning instead of the breach)
    [point] = browse(world, "fa:risk").get(f"/office/accounts/{world.accounts['FX-A']}/series.json").json()["points"]
    assert (point["daily_floor"], point["decisions"]) == ("95000", ["warning: daily_loss"])

    # later events are evaluated under v2: the floor is now 95,000
    world.ingest(equity("a2", "FX-A", "2026-03-02T11:00:00Z", "94900"))
    world.evaluate()
    assert world.status_of(world.accounts["FX-A"]) == "breached"
    assert "95,000" in decisions(world, "FX-A")[-1].message


def test_a_stricter_version_breaches_and_disables_at_once(fixed):
    world = fixed
    with world.sessions.begin() as s:
        v3 = add_pack(s, firm_id="fa", pack=fix_pack(3, 3)).id
    answer = world.client.post(f"/api/v1/packs/{v3}/rebind",
                               json={"external_ids": ["FX-B"], "reason": "3% for this group"},
                               headers=world.headers("admin"))
    assert answer.status_code == 200, answer.text
    assert world.status_of(world.accounts["FX-B"]) == "breached"
    assert [c["command"] for c in commands(world, "FX-B")] == ["disable"]
    assert "97,000" in [d for d in decisions(world, "FX-B") if d.kind == "breach"][0].message


def test_a_retired_version_another_pack_and_a_missing_phase_are_refused(fixed):
    world = fixed
    v1, v2 = world.version["fix1"], world.version["fix2"]
    with world.sessions.begin() as s:
        s.get(m.RulePackVersion, v1).status = "retired"
    retired = world.client.post(f"/api/v1/packs/{v1}/rebind/preview", json={"external_ids": ["FX-A"]},
                                headers=world.headers("risk"))
    assert retired.status_code == 409 and "retired" in retired.json()["error"]
    other = world.client.post(f"/api/v1/packs/{world.version['fa']}/rebind/preview",
                              json={"external_ids": ["FX-A"]}, headers=world.headers("risk"))
    assert other.status_code == 409 and "own pack" in other.json()["error"]
    empty = world.client.post(f"/api/v1/packs/{v2}/rebind/preview", json={}, headers=world.headers("risk"))
    assert empty.status_code == 422 and "accounts" in empty.json()["error"]
    # by filter: every account of the pack bound to v1, in phase-1
    by_filter = world.client.post(f"/api/v1/packs/{v2}/rebind/preview",
                                  json={"from_version_id": v1, "phase": "phase-1"}, headers=world.headers("risk"))
    assert sorted(a["external_id"] for a in by_filter.json()["accounts"]) == ["FX-A", "FX-B"]
    assert world.status_of(world.accounts["FX-A"]) == "breached"


def test_the_scaled_out_deployment_refuses_a_rebind_it_could_not_replay(fixed):
    from propcrm.adapters.db.models_cluster import PartitionCheckpoint

    world = fixed
    with world.sessions.begin() as s:
        s.add(PartitionCheckpoint(stream="events", partition=0, seq=0, state_seq=0))
    answer = world.client.post(f"/api/v1/packs/{world.version['fix2']}/rebind/preview",
                               json={"external_ids": ["FX-A"]}, headers=world.headers("risk"))
    assert answer.status_code == 409 and "embedded deployment" in answer.json()["error"]
