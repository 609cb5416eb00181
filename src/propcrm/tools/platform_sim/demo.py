"""The demo's trading platform: the simulator in the service's process, connected through the real MT5
Web API connector, with simulated traders on challenge accounts bought the ordinary way.

``propcrm serve --demo`` (``make run``) calls :func:`start_demo_platform`. It

1. starts the simulator (its accounts, positions and deals kept in ``<data dir>/demo-platform-sim.db``)
   on a free local port, with a manager password made up for this run;
2. stores (or updates) the demo firm's platform connection ``sim`` (family ``mt5-web``) pointing at it;
3. opens challenge accounts ``SIM-1`` … ``SIM-n`` for demo traders and queues the ``create_account``
   command a purchase queues — the dispatcher creates each account on the simulator, maps the login,
   deposits the starting balance;
4. once the logins are mapped, lets simulated traders trade them (a share of them recklessly, so that
   accounts breach: the engine decides, the dispatcher disables the account on the simulator, and the
   simulator refuses that trader's next order — the log says so).

Set ``PROPCRM_DEMO_PLATFORM=0`` to run the demo without it.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ...adapters.db import models as m
from ...adapters.db.models_platforms import PlatformConnection, PlatformLogin
from .main import Simulator

log = logging.getLogger("propcrm.platform_sim.demo")
FIRM, CONNECTION, MANAGER, GROUP = "demo", "sim", "1000", "demo\\challenge"


def _ensure_connection(session: Session, url: str, password: str) -> None:
    from ...features.platforms.connections import add_connection, update_connection

    settings = {"url": url, "manager": MANAGER, "server_timezone": "Europe/Athens",
                "groups_by_phase": {"*": GROUP}, "readings_interval_s": 0.5, "users_interval_s": 2.0}
    exists = session.scalar(select(PlatformConnection.id).where(PlatformConnection.firm_id == FIRM,
                                                                PlatformConnection.name == CONNECTION))
    if exists is None:
        add_connection(session, firm_id=FIRM, name=CONNECTION, family_name="mt5-web", settings=settings,
                       secrets={"password": password}, actor="demo")
    else:
        update_connection(session, firm_id=FIRM, name=CONNECTION, settings=settings, secrets={"password": password},
                          enabled=True, actor="demo")


def _ensure_accounts(session: Session, count: int) -> list[str]:
    from ...services.catalog import create_account

    product = session.scalar(select(m.Product).where(m.Product.firm_id == FIRM).order_by(m.Product.id))
    traders = list(session.scalars(select(m.Trader.id).where(m.Trader.firm_id == FIRM).order_by(m.Trader.id)
                                   .limit(count)))
    if product is None or not traders:
        return []
    names = []
    for i in range(count):
        name = f"SIM-{i + 1}"
        names.append(name)
        if session.scalar(select(m.Account.id).where(m.Account.firm_id == FIRM, m.Account.external_id == name)):
            continue
        create_account(session, firm_id=FIRM, external_id=name, pack_version_id=product.pack_version_id,
                       platform=CONNECTION, trader_id=traders[i % len(traders)], product_id=product.id)
        session.add(m.OutboxMessage(firm_id=FIRM, kind="platform_command", dedupe_key=f"demo:{CONNECTION}:create:{name}",
                                    payload={"command": "create_account", "account": name, "platform": CONNECTION,
                                             "account_size": str(product.account_size or Decimal(0))}))
    return names


def _trade_when_mapped(sim: Simulator, session_factory: sessionmaker[Session], names: list[str], *,
                       orders_per_s: float, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        with session_factory() as session:
            logins = list(session.scalars(
                select(PlatformLogin.login).join(PlatformConnection, PlatformConnection.id == PlatformLogin.connection_id)
                .join(m.Account, m.Account.id == PlatformLogin.account_id)
                .where(PlatformConnection.firm_id == FIRM, PlatformConnection.name == CONNECTION,
                       m.Account.external_id.in_(names))))
        if len(logins) == len(names):
            sim.trade([int(login) for login in logins], orders_per_s=orders_per_s, reckless_share=0.35,
                      reckless_scale=40.0)
            log.info("demo platform: %d simulated traders trading on %s", len(logins), sim.url)
            return


def start_demo_platform(session_factory: sessionmaker[Session], *, stop: threading.Event, accounts: int = 12,
                        orders_per_s: float = 4.0, print_=print) -> Simulator | None:
    if os.environ.get("PROPCRM_DEMO_PLATFORM", "1") == "0":
        return None
    data = os.environ.get("PROPCRM_DATA_DIR") or "data"
    os.makedirs(data, exist_ok=True)
    password = secrets.token_urlsafe(12)
    sim = Simulator(os.path.join(data, "demo-platform-sim.db"), MANAGER, password).start(feed=True)
    with session_factory.begin() as session:
        if session.get(m.Firm, FIRM) is None:
            sim.close()
            return None
        _ensure_connection(session, sim.url, password)
        names = _ensure_accounts(session, accounts)
    threading.Thread(target=_trade_when_mapped, args=(sim, session_factory, names),
                     kwargs=dict(orders_per_s=orders_per_s, stop=stop), name="demo-platform", daemon=True).start()
    print_(f"demo trading platform: the MT5 Web API simulator at {sim.url} (connection '{CONNECTION}'); "
           f"{len(names)} challenge accounts SIM-1…SIM-{len(names)} are opened on it and traded by simulated "
           "traders — a breach disables the account there and its next order is refused.", flush=True)
    return sim


__all__ = ["start_demo_platform"]
