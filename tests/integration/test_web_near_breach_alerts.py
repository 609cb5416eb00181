"""Near-breach alerts (issue 16) on both backends: the firm sets a distance (percent of equity and/or an amount),
the evaluation path raises one alert per account, limit and trading day for an account within it (not one per
event, none once the limit is crossed), each through the notification outbox to risk staff's in-app list; risk
reads them on /office/alerts (and as CSV), marks them seen; other roles and firms see none."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import pytest
from sqlalchemy import select

from propcrm.adapters.db import models as m
from propcrm.adapters.db.models_lifecycle import NearBreachAlert
from propcrm.services.dispatch import build_dispatcher
from support.staff import build_world, seed
from support.web import browse

pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
def world(db_url):
    app, world = build_world(db_url)
    with world.client:
        seed(world)
        yield world


def equity(eid, account, ts, value, balance="100000"):
    return {"id": eid, "type": "equity", "account": account, "ts": ts, "equity": value, "balance": balance}


def opened(eid, account, ts):
    return {"id": eid, "type": "trade_opened", "account": account, "ts": ts, "position": f"p-{eid}",
            "symbol": "EURUSD", "side": "buy", "lots": "1", "price": "1.08512"}


def flash_of(response) -> str:
    found = re.search(r'<p class="flash" role="status">(.*?)</p>', response.text, re.S)
    return found.group(1) if found else ""


def alerts(world) -> list[tuple[str, str, str, str]]:
    with world.sessions() as s:
        rows = s.execute(select(m.Account.external_id, NearBreachAlert.limit_rule, NearBreachAlert.trading_day,
                                NearBreachAlert.distance)
                         .join(m.Account, m.Account.id == NearBreachAlert.account_id).order_by(NearBreachAlert.id))
        return [(a, rule, day.isoformat(), format(distance.normalize(), "f")) for a, rule, day, distance in rows]


def near_outbox(world) -> list[dict]:
    with world.sessions() as s:
        return [row.payload for row in s.scalars(select(m.OutboxMessage).where(m.OutboxMessage.kind == "notify")
                                                 .order_by(m.OutboxMessage.id))
                if row.payload.get("kind") == "near_breach"]


def test_alerts_once_per_account_limit_and_trading_day(world):
    risk = browse(world, "risk")
    # off until a distance is set: nothing is raised
    world.ingest(opened("o1", "A1", "2026-03-02T09:00:00Z"), equity("e1", "A1", "2026-03-02T10:00:00Z", "96200"))
    world.evaluate()
    assert alerts(world) == []
    assert "Not saved: within_pct" in flash_of(browse(world, "risk").post_form(
        "/office/alerts/settings", {"within_pct": "abc"}, follow_redirects=True))
    assert "Not saved: within_amount" in flash_of(browse(world, "risk").post_form(
        "/office/alerts/settings", {"within_amount": "-5"}, follow_redirects=True))
    risk = browse(world, "risk")
    saved = risk.post_form("/office/alerts/settings", {"within_amount": "1,500", "within_pct": ""},
                           follow_redirects=True)
    assert "Alert distance saved." in flash_of(saved) and "1,500.00 in the account" in saved.text
    assert len(world.audit("near_breach.settings")) == 1
    # A1 dips to 1,100 above its daily floor (95,000) and ends the batch 1,300 above it: within 1,500 — one
    # alert, naming the batch's worst point (e2); more events and batches that day add none
    world.ingest(equity("e2", "A1", "2026-03-02T11:00:00Z", "96100"), equity("e3", "A1", "2026-03-02T12:00:00Z", "96300"),
                 opened("o2", "A2", "2026-03-02T09:00:00Z"), equity("e4", "A2", "2026-03-02T10:00:00Z", "99000"))
    world.evaluate()
    world.ingest(equity("e5", "A1", "2026-03-02T13:00:00Z", "96000"))
    world.evaluate()
    assert alerts(world) == [("A1", "daily_loss", "2026-03-02", "1100")]
    [payload] = near_outbox(world)
    assert payload["account"] == "A1" and payload["rule"] == "daily_loss" and payload["trader_id"] is None
    assert "1100 above the daily loss level 95000 at 2026-03-02 11:00:00 UTC" in payload["message"]
    assert payload["reached_at"] == "2026-03-02T11:00:00+00:00" and payload["equity"] == "96100"
    # the next trading day is a new day: it alerts again; a crossed floor is a breach, not an alert
    world.ingest(equity("e6", "A1", "2026-03-03T10:00:00Z", "96050"),
                 opened("o3", "A3", "2026-03-02T09:00:00Z"), equity("e7", "A3", "2026-03-02T10:00:00Z", "94000"))
    world.evaluate()
    assert alerts(world) == [("A1", "daily_loss", "2026-03-02", "1100"), ("A1", "daily_loss", "2026-03-03", "1050")]
    assert world.status_of(world.accounts["A3"]) == "breached"
    # a percentage of equity: A2 is 4,000 above its floor at 99,000 = 4.04 %
    browse(world, "admin").post_form("/office/alerts/settings", {"within_pct": "4.5", "within_amount": ""})
    world.ingest(equity("e8", "A2", "2026-03-02T11:00:00Z", "99010"))
    world.evaluate()
    assert alerts(world)[-1] == ("A2", "daily_loss", "2026-03-02", "4010")
    assert len(near_outbox(world)) == 3
    # the existing notification path: risk and admin get it in-app, the trader does not
    build_dispatcher(world.sessions, env={}).run_once()
    with world.sessions() as s:
        titles = {(u.role, n.title) for n, u in s.execute(select(m.Notification, m.User).join(
            m.User, m.User.id == m.Notification.user_id)) if "near" in n.title}
    assert titles == {("admin", "Account A1 is near its daily loss limit"), ("risk", "Account A1 is near its daily loss limit"),
                      ("admin", "Account A2 is near its daily loss limit"), ("risk", "Account A2 is near its daily loss limit")}


def test_the_alerts_page(world):
    browse(world, "risk").post_form("/office/alerts/settings", {"within_amount": "1500"})
    world.ingest(opened("o1", "A1", "2026-03-02T09:00:00Z"), equity("e1", "A1", "2026-03-02T10:00:00Z", "96200"))
    world.evaluate()
    for role, status in (("admin", 200), ("risk", 200), ("finance", 403), ("support", 403), ("trader", 403)):
        assert browse(world, role).get("/office/alerts").status_code == status, role
        assert browse(world, role).get("/office/alerts.csv").status_code == status, role
    risk = browse(world, "risk")
    page = risk.get("/office/alerts")
    assert "Alerts" in page.text and 'href="/office/alerts"' in page.text
    row = re.search(r'<tr data-alert="(\d+)">(.*?)</tr>', page.text, re.S)
    assert "A1" in row.group(2) and "1,200.00" in row.group(2) and "daily loss" in row.group(2)
    alert_id = row.group(1)
    other = browse(world, "fb:admin")
    assert 'data-alert=' not in other.get("/office/alerts").text
    assert other.post_form(f"/office/alerts/{alert_id}/seen").status_code == 404
    risk = browse(world, "risk")
    assert "marked seen" in flash_of(risk.post_form(f"/office/alerts/{alert_id}/seen", follow_redirects=True))
    assert "already seen" in flash_of(risk.post_form(f"/office/alerts/{alert_id}/seen", follow_redirects=True))
    assert 'data-alert=' not in risk.get("/office/alerts?view=unseen").text
    exported = list(csv.DictReader(io.StringIO(risk.get("/office/alerts.csv").text)))
    assert [(r["account"], r["limit"], r["trading_day"], r["distance"], r["seen_by"][:5]) for r in exported] == [
        ("A1", "daily_loss", "2026-03-02", "1200", "user:")]
    assert list(csv.DictReader(io.StringIO(risk.get("/office/alerts.csv?view=unseen").text))) == []
    # switching alerts off
    off = risk.post_form("/office/alerts/settings", {"within_amount": "", "within_pct": ""}, follow_redirects=True)
    assert "alerts are off" in flash_of(off).lower()


def test_a_batchs_alerts_are_written_set_wise_with_the_same_rows_audit_and_outbox(world):
    """One batch puts three accounts within the distance of both limits: one insert statement writes its
    alerts (one that another process wrote already is skipped by the unique key), the audit entries follow
    the alerts in id order with the same content as one per alert, and each alert has its outbox row."""
    import datetime as dt

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from propcrm.services import audit as audit_service

    browse(world, "risk").post_form("/office/alerts/settings", {"within_amount": "7000", "within_pct": ""})
    with world.sessions.begin() as s:  # another process alerted A2's max loss for the day already
        s.add(NearBreachAlert(firm_id="fa", account_id=world.accounts["A2"], limit_rule="max_loss",
                              trading_day=dt.date(2026, 3, 2), equity=Decimal("96500"), level=Decimal("90000"),
                              distance=Decimal("6500"),
                              reached_at=dt.datetime(2026, 3, 2, 10, tzinfo=dt.timezone.utc),
                              created_at=dt.datetime.now(dt.timezone.utc)))
    world.ingest(opened("o1", "A1", "2026-03-02T09:00:00Z"), equity("e1", "A1", "2026-03-02T10:00:00Z", "96000"),
                 opened("o2", "A2", "2026-03-02T09:00:00Z"), equity("e2", "A2", "2026-03-02T10:00:00Z", "96500"),
                 opened("o3", "A3", "2026-03-02T09:00:00Z"), equity("e3", "A3", "2026-03-02T10:00:00Z", "95500"))
    inserts: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO NEAR_BREACH_ALERTS"):
            inserts.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        world.evaluate()
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert len(inserts) == 1  # the batch's alerts in one statement (one per alert before)
    expected = [("A1", "daily_loss", "2026-03-02", "1000"), ("A1", "max_loss", "2026-03-02", "6000"),
                ("A2", "max_loss", "2026-03-02", "6500"), ("A2", "daily_loss", "2026-03-02", "1500"),
                ("A3", "daily_loss", "2026-03-02", "500"), ("A3", "max_loss", "2026-03-02", "5500")]
    assert sorted(alerts(world)) == sorted(expected)
    with world.sessions() as s:
        rows = s.execute(select(NearBreachAlert, m.Account.external_id)
                         .join(m.Account, m.Account.id == NearBreachAlert.account_id)
                         .where(NearBreachAlert.created_at > dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
                         .order_by(NearBreachAlert.id)).all()
        new = [(a, ext) for a, ext in rows if not (ext == "A2" and a.limit_rule == "max_loss")]
        entries = s.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "near_breach.alert")
                            .order_by(m.AuditEntry.seq)).all()
        assert audit_service.verify(s).ok
    assert len(new) == 5
    assert [(e.actor, e.entity, e.entity_id, e.firm_id) for e in entries] == [
        ("system:near_breach", "account", str(a.account_id), "fa") for a, _ in new]
    assert [e.after for e in entries] == [
        {"alert": a.id, "account": ext, "rule": a.limit_rule, "trading_day": a.trading_day.isoformat(),
         "equity": format(a.equity.normalize(), "f"), "level": format(a.level.normalize(), "f"),
         "distance": format(a.distance.normalize(), "f"), "reached_at": a.reached_at.isoformat(timespec="seconds")}
        for a, ext in new]
    payloads = near_outbox(world)
    assert [p["alert"] for p in payloads] == [a.id for a, _ in new]
    assert [(p["account"], p["rule"], p["distance"]) for p in payloads] == [
        (e.after["account"], e.after["rule"], e.after["distance"]) for e in entries]
