"""The firm the platform end-to-end tests connect to the simulator: one rule pack, one trader and an
``mt5-web`` connection named ``sim`` (the embedded and the scale-out tests seed the same firm)."""

from __future__ import annotations

from propcrm.adapters.db import models as m
from propcrm.domain.rulepack import load_pack
from propcrm.features.platforms.connections import add_connection
from propcrm.services.catalog import add_pack, ensure_firm

FIRM = "acme"
MANAGER, PASSWORD = "1000", "Manager#2026"
#: settings a test must not inherit from the machine: outbound delivery and the deployment mode
DELIVERY_ENV = ("PROPCRM_PLATFORM_BRIDGE_URL", "PROPCRM_PLATFORM_BRIDGE_SECRET", "PROPCRM_SMTP_HOST",
                "PROPCRM_FIRM_WEBHOOK_URL", "PROPCRM_NATS_URL")


def clear_delivery_env(monkeypatch) -> None:
    for name in DELIVERY_ENV:
        monkeypatch.delenv(name, raising=False)


def seed_sim_firm(db, *, sim_url: str, box) -> tuple[int, int, int]:
    """(trader id, pack version id, connection id) of a new firm connected to the simulator at ``sim_url``."""
    with db.begin() as s:
        ensure_firm(s, firm_id=FIRM, name="Acme Prop")
        version = add_pack(s, firm_id=FIRM, pack=load_pack("two-step-100k"), activate=True)
        trader = m.Trader(firm_id=FIRM, name="Alice", email="alice@traders.example")
        s.add(trader)
        s.flush()
        row = add_connection(s, firm_id=FIRM, name="sim", family_name="mt5-web",
                             settings={"url": sim_url, "manager": MANAGER, "server_timezone": "+02:00",
                                       "groups_by_phase": {"*": "demo\\challenge"}, "readings_interval_s": 0,
                                       "users_interval_s": 0.5},
                             secrets={"password": PASSWORD}, actor="test", box=box)
        return trader.id, version.id, row.id
