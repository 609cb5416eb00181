"""``propcrm serve``: the API, the evaluation worker and the outbox dispatcher in one process.

This is the embedded default (SQLite in ``./data``); the same roles run as separate processes at
scale. With ``--demo`` and an empty database it seeds a demo firm — rule packs, traders, accounts,
staff users of every role, a platform API key — and starts a demo platform feed that streams a
synthetic firm's trading events into the server over the real, signed HTTP API, so a newcomer sees
accounts breach and pass live.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
from sqlalchemy import func, select

from ..adapters.db import models as m
from ..adapters.db.session import make_engine, migrate, sessions
from ..adapters.settings import Settings, SettingsError, install
from ..domain.rulepack import load_pack
from ..services.catalog import add_pack, create_account, ensure_firm

log = logging.getLogger("propcrm.serve")


def _configure_logging() -> None:
    from ..adapters.logs import configure_logging
    configure_logging()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the demo feed's every request is not news

DEMO_FIRM = "demo"
DEMO_ROLES = ("admin", "risk", "finance", "support", "trader", "operator")  # operator: /operator/firms (issue 16)


@dataclass
class DemoFirm:
    key_id: str
    secret: str
    accounts: list[str]
    logins: dict[str, str] = field(default_factory=dict)  # email -> password (demo only)


def seed_demo_firm(session_factory, *, accounts: int, seed: int = 7) -> DemoFirm:
    """A firm with presets, traders, accounts (named as the synthetic feed names them) and users."""
    from ..services.apikeys import create_key
    from ..services.passwords import generate_password
    from ..services.users import create_user
    from ..synth.firm import FirmSpec

    spec = FirmSpec(accounts=accounts, seed=seed)
    with session_factory.begin() as session:
        ensure_firm(session, firm_id=DEMO_FIRM, name="Demo Prop Firm")
        versions = {}
        for name in ("two-step-100k", "one-step-100k", "futures-eod-50k", "intraday-trailing-50k",
                     "two-step-scaling-100k"):
            versions[name] = add_pack(session, firm_id=DEMO_FIRM, pack=load_pack(name), activate=True)
        product = m.Product(
            firm_id=DEMO_FIRM,
            name="2-Step Challenge 100k",
            pack_version_id=versions["two-step-100k"].id,
            account_size=load_pack("two-step-100k").initial_balance,
            price=Decimal("540.00"),
            currency="USD",
        )
        session.add(product)
        session.flush()
        names, first_trader_id = open_cohort(session, spec)
        logins = {}
        for role in DEMO_ROLES:
            email = f"{role}@demo.propcrm"
            password = generate_password(email=email, firm_id=DEMO_FIRM)  # 120 random bits, printed at start
            create_user(
                session,
                firm_id=DEMO_FIRM,
                email=email,
                password=password,
                role=role,
                trader_id=first_trader_id if role == "trader" else None,
            )
            logins[email] = password
        key_id, secret = create_key(session, firm_id=DEMO_FIRM, platform="demo")
        _seed_funded_story(session, version_id=versions["two-step-scaling-100k"].id, trader_id=first_trader_id)
    return DemoFirm(key_id=key_id, secret=secret, accounts=names, logins=logins)


def open_cohort(session, spec) -> tuple[list[str], int | None]:
    """Traders and challenge accounts (2-Step 100k) for the synthetic firm ``spec``, named as its feed
    names them; those that exist already are kept. Returns the names and the first trader's id."""
    from ..synth.firm import traders

    product = session.scalar(select(m.Product).where(m.Product.firm_id == DEMO_FIRM).order_by(m.Product.id))
    existing = set(session.scalars(select(m.Account.external_id).where(m.Account.firm_id == DEMO_FIRM)))
    names, first_trader_id = [], None
    for trader in traders(spec):
        names.append(trader.account)
        if trader.account in existing:
            continue
        row = m.Trader(firm_id=DEMO_FIRM, name=f"Trader {trader.account}", email=f"{trader.account.lower()}@traders.example")
        session.add(row)
        session.flush()
        first_trader_id = first_trader_id or row.id
        create_account(session, firm_id=DEMO_FIRM, external_id=trader.account, pack_version_id=product.pack_version_id,
                       platform="demo", trader_id=row.id, product_id=product.id)
    return names, first_trader_id


def renew_demo_logins(session_factory) -> dict[str, str]:
    """A restart of the demo: new passwords for the demo firm's users (they are printed, never stored in
    clear), so every start says how to log in. Only the users the demo made (``role@demo.propcrm``)."""
    from ..services.users import reset_password

    logins = {}
    with session_factory.begin() as session:
        for role in DEMO_ROLES:
            user = session.scalar(select(m.User).where(m.User.firm_id == DEMO_FIRM,
                                                       m.User.email == f"{role}@demo.propcrm"))
            if user is not None and user.active:
                _, password = reset_password(session, firm_id=DEMO_FIRM, user_id=user.id, password=None,
                                             actor="demo: restart")
                logins[user.email] = password
    return logins


def _seed_funded_story(session, *, version_id: int, trader_id: int) -> None:
    """The demo trader (the ``trader`` login) also holds a funded account with three profitable days
    behind it and approved KYC, so a payout can be requested in the portal and prepared and approved
    in the back office. Its events go through the same ingestion as a platform's; the worker
    evaluates them when the service starts."""
    import datetime as dt
    import json

    from ..services.ingest import ingest

    trader = session.get(m.Trader, trader_id)
    trader.kyc_status = "approved"
    account = create_account(session, firm_id=DEMO_FIRM, external_id="DEMO-FUNDED-1", pack_version_id=version_id,
                             platform="demo", trader_id=trader_id, phase="funded")
    account.status = "funded"
    today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    events = []
    for day, (symbol, profit) in enumerate((("EURUSD", "1240.50"), ("XAUUSD", "-310.25"), ("GBPUSD", "2315.00"))):
        opened = today - dt.timedelta(days=4 - day, hours=-9)
        closed = opened + dt.timedelta(hours=3, minutes=17)
        position = f"f{day + 1}"
        events.append({"id": f"demo-f-{day}-o", "type": "trade_opened", "account": "DEMO-FUNDED-1",
                       "ts": opened.isoformat().replace("+00:00", "Z"), "position": position, "symbol": symbol,
                       "side": "buy", "lots": "2", "price": "1"})
        events.append({"id": f"demo-f-{day}-c", "type": "trade_closed", "account": "DEMO-FUNDED-1",
                       "ts": closed.isoformat().replace("+00:00", "Z"), "position": position, "lots": "2",
                       "price": "1", "profit": profit, "commission": "-14.00"})
    body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    ingest(session, firm_id=DEMO_FIRM, source="demo", body=body)


def demo_feed(base_url: str, key_id: str, secret: str, *, accounts: int, rate: float, stop: threading.Event,
              seed: int = 7, batch: int = 500, created: dt.date | None = None, open_accounts=None) -> None:
    """Stream the demo firm into the server over the signed API: its history (ending on ``created``, the
    day the firm was made) at ``rate`` events per second, then trading in real time, one generation
    a week, for as long as the service runs (:mod:`propcrm.tools.demo_firm`). ``open_accounts(spec)``
    opens the accounts of a new generation's cohort before its events are sent."""
    from ..synth.firm import FirmSpec, generate
    from ..tools.demo_firm import Pacer, clock, current_generation, generation_spec, retag

    base = FirmSpec(accounts=accounts, seed=seed)
    created = created or clock().date()
    pause = batch / rate if rate > 0 else 0.0
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for _ in range(150):  # the server starts listening a moment after this thread starts
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if stop.wait(0.2):
                return
        generation = current_generation(created, base.days, clock().date())
        while not stop.is_set():
            spec = generation_spec(base, created, generation)
            if generation and open_accounts is not None:
                open_accounts(spec)
            log.info("demo feed: generation %d (%s accounts from %s)", generation, f"{spec.accounts:,}", spec.start)
            lines = (retag(line, generation) for line in generate(spec))
            for chunk in Pacer(lines, batch=batch, now=clock, wait=stop.wait):
                _post(client, key_id, secret, b"".join(chunk), stop)
                if stop.wait(pause if len(chunk) == batch else 0):
                    return
            generation += 1


def _post(client, key_id: str, secret: str, body: bytes, stop: threading.Event) -> None:
    ts = str(int(time.time()))
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    try:
        response = client.post(
            "/api/v1/events",
            content=body,
            headers={"X-Propcrm-Key": key_id, "X-Propcrm-Timestamp": ts, "X-Propcrm-Signature": f"sha256={mac}",
                     "Content-Type": "application/x-ndjson"},
        )
        if response.status_code != 200:
            log.warning("demo feed: %s %s", response.status_code, response.text[:200])
    except httpx.HTTPError as exc:
        log.warning("demo feed: %s", exc)
        stop.wait(1.0)


def _demo_created(session_factory) -> dt.date:
    """The day the demo firm was made: its history ends then (:func:`propcrm.tools.demo_firm.history_start`)."""
    with session_factory() as session:
        created = session.scalar(select(m.Firm.created_at).where(m.Firm.id == DEMO_FIRM))
    return (created or dt.datetime.now(dt.timezone.utc)).date()


def _open_cohort_now(session_factory, spec) -> None:
    with session_factory.begin() as session:
        open_cohort(session, spec)


#: Seconds between two looks for events when nothing wakes the worker: in ``propcrm serve`` ingestion
#: wakes it in-process (services/wakeup.py) and this only finds events another process stored (a CLI
#: import); ``propcrm work`` runs beside an API in another process and keeps the short poll.
FALLBACK_POLL_EMBEDDED = 1.0
FALLBACK_POLL_SEPARATE = 0.2


def _worker_loop(session_factory, stop: threading.Event, *, fallback: float = FALLBACK_POLL_EMBEDDED,
                 driver: str = "poll") -> None:
    """Passes while there is work; when idle, wait until ingestion commits events in this process
    (no poll interval between a commit and its pass) or ``fallback`` seconds pass. ``driver``
    (``PROPCRM_EMBEDDED_DRIVER``): ``poll``, the pass worker; ``log``, the partition driver over the
    ``raw_events`` table (cluster/embedded.py), woken the same way."""
    from ..services.evaluation import EvaluationWorker
    from ..services.wakeup import EVENTS

    if driver == "log":
        from ..cluster.embedded import driver_loop

        driver_loop(session_factory, stop, fallback=fallback)
        return
    worker = EvaluationWorker(session_factory)
    while not stop.is_set():
        seen = EVENTS.generation  # read before the pass: a commit during the pass wakes the next wait
        try:
            report = worker.run_pass()
        except Exception:  # noqa: BLE001 - a failed pass is retried; its transaction rolled back
            log.exception("evaluation pass failed; retrying")
            stop.wait(1.0)
            continue
        if report.accounts == 0 and report.set_aside == 0 and report.stale == 0:
            EVENTS.wait(seen, fallback)


def _dispatch_loop(dispatcher, stop: threading.Event) -> None:
    """Woken by the outbox rows this process commits (the worker's decisions); 0.5 s poll otherwise."""
    from ..services.dispatch import dispatch_loop

    dispatch_loop(dispatcher, stop, fallback=0.5)


def _status_loop(session_factory, stop: threading.Event, print_, every: float = 5.0) -> None:
    """For the demo: what the firm looks like now, looked at every few seconds and printed when it changed."""
    from ..tools.demo_firm import StatusLine

    line = StatusLine(print_)
    while not stop.wait(every):
        try:
            with session_factory() as session:
                events = dict(session.execute(select(m.RawEvent.status, func.count()).group_by(m.RawEvent.status)).all())
                decisions = dict(session.execute(select(m.Decision.kind, func.count()).group_by(m.Decision.kind)).all())
                statuses = dict(session.execute(select(m.Account.status, func.count()).group_by(m.Account.status)).all())
        except Exception:  # noqa: BLE001 - a status line is never worth stopping for
            continue
        line.show(
            f"events evaluated {events.get('applied', 0):,} (pending {events.get('pending', 0):,}) · "
            f"accounts {', '.join(f'{k} {v:,}' for k, v in sorted(statuses.items()))} · "
            f"decisions {', '.join(f'{k} {v:,}' for k, v in sorted(decisions.items())) or 'none yet'}")


def run_worker(*, database_url: str | None, once: bool = False) -> None:
    """An evaluation worker process: passes until stopped (or, with ``once``, until nothing is pending).
    It also anchors the audit log on its schedule (``services/audit_anchors.py``) and rolls up the chart's
    older points every 10 minutes (``services/equity_rollup.py``)."""
    from ..services.audit_anchors import anchor_loop
    from ..services.evaluation import EvaluationWorker

    _configure_logging()
    settings = _settings()
    url = database_url or settings.database_url()
    migrate(url)
    engine = make_engine(url)
    try:
        if once:
            if settings.embedded_driver == "log":
                from ..cluster.embedded import LogDriver

                report = LogDriver(sessions(engine)).run_until_idle()
            else:
                report = EvaluationWorker(sessions(engine)).run_until_idle()
            print(f"evaluated {report.events:,} events of {report.accounts:,} account passes: "
                  f"{report.decisions:,} decisions, {report.rejected:,} rejected")
            return
        stop = threading.Event()
        anchors = threading.Thread(target=anchor_loop, args=(sessions(engine, readonly=True), url, stop),
                                   name="audit-anchors", daemon=True)
        anchors.start()
        from ..services.equity_rollup import rollup_loop  # issue 14: the chart's older points rolled up

        rollups = threading.Thread(target=rollup_loop, args=(sessions(engine), stop), name="equity-rollup", daemon=True)
        rollups.start()
        try:
            _worker_loop(sessions(engine), stop, fallback=FALLBACK_POLL_SEPARATE, driver=settings.embedded_driver)
        except KeyboardInterrupt:
            stop.set()
        finally:
            stop.set()
            anchors.join(timeout=5)
            rollups.join(timeout=5)
    finally:
        engine.dispose()


def _settings() -> Settings:
    """The process's configuration, read once, here at its start; a bad value stops the start."""
    try:
        return install(Settings.from_env())
    except SettingsError as exc:
        raise SystemExit(f"error: {exc}") from None


def serve(*, host: str, port: int, database_url: str | None, demo: bool, demo_accounts: int, demo_rate: float,
          with_worker: bool = True, print_=print, settings: Settings | None = None) -> None:
    """The embedded service: the HTTP app and, with ``with_worker``, the evaluation, dispatch, analysis,
    platform and calendar threads in one process. This is where its parts are wired: the configuration
    (``settings``, default: read from the environment now) goes to each part as arguments."""
    import uvicorn

    from ..api.app import create_app

    _configure_logging()
    settings = _settings() if settings is None else install(settings)
    url = database_url or settings.database_url()
    migrate(url)
    from ..services.audit_anchors import AnchorConfigError, anchor_loop, ensure_embedded_key

    try:
        anchoring = ensure_embedded_key(url, settings)  # the embedded default is keyed from its first start
    except AnchorConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    engine = make_engine(url)
    session_factory = sessions(engine)
    seeded: DemoFirm | None = None
    if demo:
        with session_factory() as session:
            empty = session.scalar(select(func.count()).select_from(m.Firm)) == 0
        if empty:
            seeded = seed_demo_firm(session_factory, accounts=demo_accounts)
        else:
            from ..services.apikeys import create_key

            with session_factory.begin() as session:
                if session.get(m.Firm, DEMO_FIRM) is not None:
                    key_id, secret = create_key(session, firm_id=DEMO_FIRM, platform="demo")
                    names = list(session.scalars(select(m.Account.external_id).where(m.Account.firm_id == DEMO_FIRM)))
                    seeded = DemoFirm(key_id=key_id, secret=secret, accounts=names)
            if seeded is not None:
                seeded.logins = renew_demo_logins(session_factory)
    stop = threading.Event()
    threads = [threading.Thread(target=anchor_loop, args=(sessions(engine, readonly=True), url, stop),
                                name="audit-anchors", daemon=True)]
    if with_worker:
        from ..services.dispatch import build_dispatcher

        dispatcher = build_dispatcher(session_factory, settings)  # a bad configuration stops the start, loudly
        threads += [
            threading.Thread(target=_worker_loop, args=(sessions(engine), stop), name="evaluation",
                             kwargs={"driver": settings.embedded_driver}, daemon=True),
            threading.Thread(target=_dispatch_loop, args=(dispatcher, stop), name="dispatch", daemon=True),
        ]
        from ..services.analysis import analysis_loop  # abuse analysis: incremental passes (PROPCRM_ANALYSIS_INTERVAL)

        threads.append(threading.Thread(target=analysis_loop, args=(sessions(engine), stop),
                                        kwargs={"interval": settings.analysis_interval}, name="analysis", daemon=True))
        from ..services.equity_rollup import rollup_loop  # issue 14: the chart's older points rolled up

        threads.append(threading.Thread(target=rollup_loop, args=(sessions(engine), stop), name="equity-rollup",
                                        daemon=True))
        # issue 20: the platform connectors (`propcrm platforms add`) run inside the embedded service
        from ..features.platforms.service import ConnectorSupervisor

        from ..features.calendar.service import CalendarScheduler

        threads.append(threading.Thread(target=ConnectorSupervisor(sessions(engine)).run, args=(stop,),
                                        name="platforms", daemon=True))
        threads.append(threading.Thread(target=CalendarScheduler(sessions(engine)).run, args=(stop,),
                                        name="calendar", daemon=True))
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if seeded is not None:
        threads.append(
            threading.Thread(
                target=demo_feed,
                args=(base, seeded.key_id, seeded.secret),
                kwargs=dict(accounts=demo_accounts, rate=demo_rate, stop=stop, created=_demo_created(session_factory),
                            open_accounts=lambda spec: _open_cohort_now(session_factory, spec)),
                name="demo-feed",
                daemon=True,
            )
        )
        threads.append(threading.Thread(target=_status_loop, args=(sessions(engine, readonly=True), stop, print_), name="status",
                                        daemon=True))
    demo_platform = None
    if seeded is not None and with_worker:  # issue 20: the demo's trading platform (tools/platform_sim/demo.py)
        from ..tools.platform_sim.demo import start_demo_platform

        demo_platform = start_demo_platform(session_factory, stop=stop, print_=print_)
    for thread in threads:
        thread.start()
    print_(f"propcrm is running at {base}  (back office and trader portal: {base}/ ; API reference: {base}/docs)",
           flush=True)
    print_(f"database: {url}")
    if anchoring.key is not None and anchoring.directory is not None:
        print_(f"audit log: keyed (key {anchoring.key_id} from {anchoring.key_source}), anchored every "
               f"{anchoring.interval:.0f} s to {anchoring.directory}")
    else:
        print_("audit log: NOT keyed or anchored — set PROPCRM_AUDIT_KEY (or _KEY_FILE) and PROPCRM_AUDIT_ANCHOR_DIR")
    if seeded is not None and seeded.logins:
        print_(f"demo firm 'demo' ready; log in at {base}/login (or POST /api/v1/login) as:")
        for email, password in seeded.logins.items():
            print_(f"  firm demo  {email:24}  password {password}")
        print_("(the demo users get new passwords on every start, printed here; create your own with "
               "`propcrm users create`)")
    if seeded is not None:
        print_(f"demo platform feed: {len(seeded.accounts):,} accounts; their history up to now streams at "
               f"~{demo_rate:,.0f} events/s, then trading goes on in real time (a new cohort each week). "
               "A status line follows whenever the figures change. Stop with Ctrl-C.", flush=True)
    try:
        uvicorn.run(create_app(url, settings=settings), host=host, port=port, log_level="warning",
                    timeout_graceful_shutdown=5)  # open live streams must not hold the exit
    finally:
        stop.set()
        from ..services.wakeup import EVENTS, OUTBOX

        EVENTS.notify()  # the worker waits on it: let it see `stop` now
        OUTBOX.notify()  # and the dispatcher on this one
        for thread in threads:
            thread.join(timeout=5)
        if demo_platform is not None:  # issue 20
            demo_platform.close()
        engine.dispose()
