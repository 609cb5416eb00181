"""`propcrm` commands of the platforms feature (issue 20): `platforms …`, `connect`, `import mt5-report`,
`calendar …`, `platform-sim`, `bench platforms`.

Keep imports of heavy modules inside the commands: every `propcrm` invocation imports this module.
Secrets are read from a hidden prompt, stdin or an environment variable — never from the command line,
where they would stay in the shell's history — and are never printed.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any, Optional

import typer

_DB_HELP = "database URL (default: PROPCRM_DATABASE_URL, else ./data/propcrm.db)"


def _value(text: str) -> Any:
    """A setting as typed: JSON for an object, a list, a quoted string or ``null``; otherwise the text itself,
    which the family's settings type converts (``leverage=50`` is a number, ``manager=1000`` stays the login
    it names — parsing every value as JSON made it a number and the connection was refused)."""
    stripped = text.strip()
    if stripped[:1] in ("{", "[", '"') or stripped == "null":
        try:
            return json.loads(stripped)
        except ValueError:
            raise typer.BadParameter(f"--setting value is not valid JSON: {text!r}") from None
    return text


def _settings(pairs: list[str] | None) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--setting takes KEY=VALUE, got {pair!r}")
        settings[key.strip()] = _value(value)
    return settings


def _secrets(names: list[str] | None, from_env: list[str] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in from_env or []:
        key, sep, variable = pair.partition("=")
        if not sep or variable not in os.environ:
            raise typer.BadParameter(f"--secret-env takes NAME=ENVIRONMENT_VARIABLE (set), got {pair!r}")
        found[key] = os.environ[variable]
    for name in names or []:
        if sys.stdin.isatty():
            found[name] = typer.prompt(f"{name}", hide_input=True, err=True)
        else:
            found[name] = sys.stdin.readline().rstrip("\r\n")
    return found


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    from .common import cli_actor, database, fail, firm_of, in_firm_transaction

    platforms_app = typer.Typer(help="Connections to trading platforms (docs/platforms.md).", no_args_is_help=True)
    app.add_typer(platforms_app, name="platforms")

    @platforms_app.command("families")
    def families() -> None:
        """The platform families propcrm connects, their settings and secrets."""
        import msgspec

        from ..features.platforms.families import FamilyError, family, names

        for name in names():
            try:
                kind = family(name)
            except FamilyError as exc:
                print(f"{name}: {exc}")
                continue
            fields = msgspec.structs.fields(kind.settings_type)
            print(f"{name} — {kind.title}")
            print(f"  secrets: {', '.join(kind.secrets)}")
            for f in fields:
                default = "" if f.required else f" = {f.default if f.default is not msgspec.NODEFAULT else '…'}"
                print(f"  {f.name}{' (required)' if f.required else default}")

    @platforms_app.command("keygen")
    def keygen() -> None:
        """Print a new key for PROPCRM_SECRET_KEY (the key that seals platform credentials)."""
        from ..adapters.platforms.secrets import new_key

        print(new_key())

    @platforms_app.command("add")
    def add(
        name: Annotated[str, typer.Argument(help="the connection's name: what accounts call their platform")],
        family_name: Annotated[str, typer.Option("--family", help="mt5-web | mt5-manager | matchtrader")],
        setting: Annotated[Optional[list[str]], typer.Option("--setting", "-s", help="KEY=VALUE, repeatable (objects and lists as JSON)")] = None,
        secret: Annotated[Optional[list[str]], typer.Option("--secret", help="NAME of a secret to read (hidden prompt, or a line of stdin)")] = None,
        secret_env: Annotated[Optional[list[str]], typer.Option("--secret-env", help="NAME=ENVIRONMENT_VARIABLE holding a secret")] = None,
        disabled: Annotated[bool, typer.Option("--disabled", help="store it without connecting yet")] = False,
        firm: Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm)")] = None,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
    ) -> None:
        """Store a platform connection: its settings, and its credentials sealed (never printed)."""
        from ..adapters.platforms.secrets import SecretError
        from ..features.platforms.connections import add_connection

        secrets = _secrets(secret, secret_env)

        def store(session, firm_id: str) -> str:
            try:
                row = add_connection(session, firm_id=firm_id, name=name, family_name=family_name,
                                     settings=_settings(setting), secrets=secrets, actor=cli_actor(),
                                     enabled=not disabled)
            except SecretError as exc:
                raise fail(str(exc)) from None
            return f"added platform connection {row.name} ({row.family}) in firm {firm_id}"

        print(in_firm_transaction(database_url, firm, store))

    @platforms_app.command("set")
    def set_(
        name: Annotated[str, typer.Argument(help="the connection's name")],
        setting: Annotated[Optional[list[str]], typer.Option("--setting", "-s", help="KEY=VALUE, repeatable")] = None,
        secret: Annotated[Optional[list[str]], typer.Option("--secret", help="NAME of a secret to replace (hidden prompt)")] = None,
        secret_env: Annotated[Optional[list[str]], typer.Option("--secret-env", help="NAME=ENVIRONMENT_VARIABLE")] = None,
        enable: Annotated[Optional[bool], typer.Option("--enable/--disable", help="connect it, or stop connecting")] = None,
        firm: Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm)")] = None,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
    ) -> None:
        """Change a connection's settings, credentials or state (audited)."""
        from ..features.platforms.connections import update_connection

        secrets = _secrets(secret, secret_env)
        in_firm_transaction(database_url, firm, lambda session, firm_id: update_connection(
            session, firm_id=firm_id, name=name, actor=cli_actor(), settings=_settings(setting) if setting else None,
            secrets=secrets or None, enabled=enable))
        print(f"updated platform connection {name}")

    @platforms_app.command("list")
    def list_(
        firm: Annotated[Optional[str], typer.Option("--firm", help="only this firm")] = None,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
    ) -> None:
        """The connections, their settings (no secrets: only which are set) and how many logins each maps."""
        from ..adapters.db.session import sessions
        from ..features.platforms.connections import list_connections

        engine = database(database_url)
        try:
            with sessions(engine)() as session:
                rows = list_connections(session, firm_id=firm)
        finally:
            engine.dispose()
        for row in rows:
            print(json.dumps({"firm": row.firm_id, **row.to_dict()}, default=str))

    @platforms_app.command("map")
    def map_(
        name: Annotated[str, typer.Argument(help="the connection's name")],
        login: Annotated[str, typer.Option("--login", help="the account's login on the platform")],
        account: Annotated[str, typer.Option("--account", help="the propcrm account (external id)")],
        firm: Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm)")] = None,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
    ) -> None:
        """Map a platform login to a propcrm account (the account's platform becomes this connection)."""
        from ..features.platforms.connections import map_login

        in_firm_transaction(database_url, firm, lambda session, firm_id: map_login(
            session, firm_id=firm_id, connection=name, login=login, account=account, actor=cli_actor()))
        print(f"login {login} on {name} → account {account}")

    @platforms_app.command("test")
    def test(
        name: Annotated[str, typer.Argument(help="the connection's name")],
        firm: Annotated[Optional[str], typer.Option("--firm", help="firm id (default: the only firm)")] = None,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
    ) -> None:
        """Open a session with the platform and read the mapped accounts once (nothing is ingested)."""
        from ..adapters.db.session import sessions
        from ..adapters.platforms.port import PlatformError
        from ..features.platforms.connections import gateway_for, get_connection, mapped_logins
        from ..services.errors import NotFound

        engine = database(database_url)
        try:
            with sessions(engine)() as session:
                firm_id = firm_of(session, firm, create=False)
                try:
                    row = get_connection(session, firm_id=firm_id, name=name)
                except NotFound as exc:
                    raise fail(str(exc)) from None
                logins = sorted(mapped_logins(session, connection_id=row.id))
                gateway = gateway_for(row)
        finally:
            engine.dispose()
        try:
            gateway.open()
            readings = gateway.readings(logins[:100]) if logins else []
            positions = gateway.positions(logins[:100]) if logins else []
        except (PlatformError, ValueError) as exc:
            raise fail(f"{name}: {exc}") from None
        finally:
            try:
                gateway.close()
            except Exception:  # noqa: BLE001
                pass
        print(f"{name}: connected; {len(logins)} mapped login(s); read {len(readings)} account(s), "
              f"{len(positions)} open position(s)")

    @app.command("connect")
    def connect(
        connection: Annotated[Optional[list[str]], typer.Option("--connection", "-c", help="only these connections (repeatable)")] = None,
        firm: Annotated[Optional[str], typer.Option("--firm", help="only this firm's connections")] = None,
        metrics_port: Annotated[Optional[int], typer.Option("--metrics-port", help="serve /metrics and /healthz on this port (internal)")] = None,
        metrics_host: Annotated[str, typer.Option("--metrics-host", help="address of the metrics port")] = "127.0.0.1",
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
    ) -> None:
        """Run the platform connectors as their own role: snapshot and reconciliation on connect, then the
        live stream into ingestion, reconnecting with backoff (one or more processes; give each its own
        --connection set)."""
        import logging
        import threading

        from ..adapters.db.session import database_url as default_url
        from ..adapters.db.session import make_engine, migrate, sessions
        from ..features.platforms.service import ConnectorSupervisor

        from ..adapters.logs import configure_logging
        configure_logging()
        url = database_url or default_url()
        migrate(url)
        engine = make_engine(url)
        supervisor = ConnectorSupervisor(sessions(engine), firm_id=firm, names=tuple(connection or ()))
        server = None
        if metrics_port is not None:
            from ..cluster.metrics import serve_http

            server = serve_http(metrics_host, metrics_port, supervisor.metrics.registry, supervisor.health)
        stop = threading.Event()
        from ..features.calendar.service import CalendarScheduler

        threading.Thread(target=CalendarScheduler(sessions(engine)).run, args=(stop,), name="calendar",
                         daemon=True).start()
        try:
            supervisor.run(stop)
        except KeyboardInterrupt:
            stop.set()
        finally:
            supervisor.close()
            if server is not None:
                server.shutdown()
            engine.dispose()

    @app.command("mt5-bridge")
    def mt5_bridge(
        server: Annotated[str, typer.Option("--server", help="the MT5 server's address (host:port)")],
        manager: Annotated[int, typer.Option("--manager", help="the manager account's login")],
        groups: Annotated[str, typer.Option("--groups", help="group mask of the accounts to watch (demo\\*,real\\prop*)")] = "*",
        server_timezone: Annotated[str, typer.Option("--server-timezone", help="the MT5 server's time zone")] = "UTC",
        listen: Annotated[str, typer.Option("--listen", help="host:port propcrm connects to")] = "127.0.0.1:8765",
        journal: Annotated[str, typer.Option("--journal", help="the bridge's journal (SQLite file)")] = "mt5-bridge.db",
        cert: Annotated[Optional[str], typer.Option("--cert", help="TLS certificate (PEM) for the listener")] = None,
        key: Annotated[Optional[str], typer.Option("--key", help="TLS private key (PEM)")] = None,
    ) -> None:
        """Run the MT5 Manager API bridge on the Windows host next to the MT5 server (needs MetaQuotes'
        MT5Manager package). The manager password is read from PROPCRM_MT5_MANAGER_PASSWORD and the
        secret shared with propcrm from PROPCRM_MT5_BRIDGE_SECRET (docs/platforms.md)."""
        import logging
        import threading

        from ..adapters.platforms.mt5.manager_bridge import BridgeConfig, ManagerBridge

        from ..adapters.logs import configure_logging
        configure_logging()
        password = os.environ.get("PROPCRM_MT5_MANAGER_PASSWORD", "")
        secret = os.environ.get("PROPCRM_MT5_BRIDGE_SECRET", "")
        if not password or not secret:
            raise fail("set PROPCRM_MT5_MANAGER_PASSWORD and PROPCRM_MT5_BRIDGE_SECRET")
        host, _, port = listen.rpartition(":")
        try:
            config = BridgeConfig(server=server, manager=manager, password=password, secret=secret, groups=groups,
                                  server_timezone=server_timezone, journal=journal, listen_host=host or "127.0.0.1",
                                  listen_port=int(port))
            bridge = ManagerBridge(config)
        except ImportError:
            raise fail("the MT5Manager package is not installed (MetaQuotes ships it for Windows: "
                        "pip install MT5Manager on the bridge host)") from None
        except ValueError as exc:
            raise fail(str(exc)) from None
        http = bridge.serve(certfile=cert, keyfile=key)
        print(f"MT5 bridge for {server} listening on {listen}{' (TLS)' if cert else ''}; journal {journal}", flush=True)
        stop = threading.Event()
        try:
            bridge.keep_connected(stop)
        except KeyboardInterrupt:
            stop.set()
        finally:
            http.shutdown()
            bridge.disconnect()

    _register_more(app, bench_app)


def _register_more(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Commands of the later steps (simulator, report and calendar import, benchmark)."""
    from . import imports as cli_imports, sim as cli_sim

    cli_sim.register(app, bench_app)
    cli_imports.register(app, bench_app)
