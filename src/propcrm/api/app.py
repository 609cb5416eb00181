"""The composition root of the HTTP service: database engine, sessions, routers.

``create_app()`` takes the process's ``Settings`` (``adapters/settings.py``; read from the environment
here when the caller has none) and keeps them in ``app.state.settings``: routes and dependencies read
configuration from there, never from the environment. The database is ``database_url``, else
``PROPCRM_DATABASE_URL``, else the embedded SQLite default; the schema is migrated
to the latest revision when the app starts (FastAPI lifespan), and the engine is disposed when it stops.
With ``PROPCRM_NATS_URL`` set the app is an ingest node of the scale-out deployment: it connects to
NATS when it starts (and refuses to start without it) and ``POST /api/v1/events`` publishes to the
partitioned JetStream stream instead of writing ``raw_events`` (docs/cluster.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from .. import __version__, web
from ..http import errors
from ..adapters.db.session import make_engine, migrate, sessions
from ..adapters.settings import Settings, install
from ..adapters.documents import store_for
from ..adapters.bus.jetstream import BusConfig
from ..services.logins import LoginThrottle
from .operations import IngestMetrics
from . import reference
from .routers import events, operations


def create_app(database_url: str | None = None, *, settings: Settings | None = None) -> FastAPI:
    settings = Settings.from_env() if settings is None else settings  # a bad value stops the start
    install(settings)  # the process's mode, ahead limit, audit and secret keys (adapters/settings.current)
    url = database_url or settings.database_url()

    bus_config = BusConfig.from_env(settings.env, url=settings.nats_url) if settings.nats_url else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(migrate, url)
        if bus_config is not None:  # scale-out: ingestion publishes to JetStream (docs/cluster.md)
            from ..adapters.bus.jetstream import EventPublisher, connect

            nc, js = await connect(bus_config, name="propcrm-api")
            app.state.nats = nc
            app.state.bus = EventPublisher(js, bus_config)
        try:
            yield
        finally:
            if app.state.nats is not None:
                await app.state.nats.close()
            app.state.engine.dispose()

    app = FastAPI(
        title="propcrm",
        version=__version__,
        summary="Real-time rule engine, abuse analytics, payouts and CRM for prop trading firms.",
        lifespan=lifespan,
        # /docs is ours (reference.py: Swagger UI served from /static, no inline script, as the CSP demands);
        # no ReDoc (CDN assets) and no OAuth2 redirect page (inline script; the API has no OAuth2)
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.settings = settings
    app.state.database_url = url
    app.state.engine = make_engine(url)
    app.state.sessions = sessions(app.state.engine)
    app.state.read_sessions = sessions(app.state.engine, readonly=True)  # GET/HEAD: never wait for a writer
    app.state.documents = store_for(url, settings.documents_dir)  # KYC documents, outside the web root (adapters/documents.py)
    app.state.bus = None  # an EventPublisher when PROPCRM_NATS_URL is set (scale-out ingest node)
    app.state.nats = None
    app.state.metrics = IngestMetrics()
    app.state.login_throttle = LoginThrottle()  # per process: docs/api.md "Logging in"
    # how far ahead of the clock an event may be (PROPCRM_MAX_EVENT_AHEAD_MINUTES)
    app.state.max_ahead = settings.max_event_ahead
    app.include_router(events.router, prefix="/api/v1")
    app.include_router(operations.router)  # /healthz, /metrics (outside /api/v1)
    app.include_router(reference.router)  # /docs: the API reference (Swagger UI)
    from .staff import mount as mount_staff_api  # login, roles, accounts, decisions, overrides, packs, users, keys

    mount_staff_api(app)
    web.mount(app)  # the pages, /static and the live stream
    errors.install(app)  # JSON errors for the API, error pages for the pages
    return app


__all__ = ["create_app"]
