"""`propcrm platform-sim` (the trading-platform simulator) and `propcrm bench platforms`."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    @app.command("platform-sim")
    def platform_sim(
        port: Annotated[int, typer.Option(help="port of its MT5 Web API")] = 8443,
        host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
        db: Annotated[str, typer.Option("--db", help="its SQLite file (accounts, positions, deals survive restarts)")] = "data/platform-sim.db",
        manager: Annotated[str, typer.Option(help="the manager login of its Web API")] = "1000",
        zone: Annotated[str, typer.Option(help="server time zone (offset or IANA name)")] = "Europe/Athens",
        tick: Annotated[float, typer.Option(help="seconds between price ticks")] = 0.1,
        group: Annotated[str, typer.Option(help="group mask of the accounts its traders trade")] = "*",
        orders_per_s: Annotated[float, typer.Option("--orders-per-s", help="simulated traders' orders per second (0: none)")] = 0.0,
        controls: Annotated[bool, typer.Option("--controls", help="accept /sim/control (set prices, rollover): tests and demos only")] = False,
        reckless_share: Annotated[float, typer.Option("--reckless-share", help="share of simulated traders who trade recklessly")] = 0.1,
        reckless_scale: Annotated[float, typer.Option("--reckless-scale", help="their lots, as a multiple of a careful trader's")] = 10.0,
    ) -> None:
        """Run the trading-platform simulator: an MT5 Web API subset, a price feed, simulated traders.

        The manager password is read from PROPCRM_SIM_MANAGER_PASSWORD (or a line of stdin). SIGUSR1 stops the
        simulated traders and leaves the platform running.
        """
        import logging
        import signal
        import threading

        from ..tools.platform_sim.main import Simulator

        from ..adapters.logs import configure_logging
        configure_logging()
        password = os.environ.get("PROPCRM_SIM_MANAGER_PASSWORD") or sys.stdin.readline().rstrip("\r\n")
        if not password:
            typer.echo("error: set PROPCRM_SIM_MANAGER_PASSWORD (the Web API's manager password)", err=True)
            raise typer.Exit(2)
        os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
        sim = Simulator(db, manager, password, host=host, port=port, zone=zone, tick_s=tick, controls=controls).start()
        if orders_per_s > 0:
            sim.trade(sim.server.logins_of(group=group), orders_per_s=orders_per_s, reckless_share=reckless_share,
                      reckless_scale=reckless_scale)
        print(f"platform simulator: MT5 Web API at {sim.url} (manager {manager}); {len(sim.server.accounts)} accounts, "
              f"{len(sim.server.deals)} deals so far. Stop with Ctrl-C.", flush=True)
        stop = threading.Event()
        if hasattr(signal, "SIGUSR1"):  # the traders stop, the platform goes on (bench platforms drains with it)
            signal.signal(signal.SIGUSR1, lambda *_: sim.traders_stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            sim.close()

    @bench_app.command("breach")
    def bench_breach(
        breaches: Annotated[int, typer.Option(help="accounts breached one after another")] = 20,
        gap_s: Annotated[float, typer.Option("--gap-s", help="seconds between two breaches")] = 0.3,
        workdir: Annotated[Optional[str], typer.Option(help="directory for the two databases (default: a new temporary one)")] = None,
    ) -> None:
        """From a breach to the platform simulator refusing the account's orders, as `serve` runs it
        (no trading load): p50/p99/max from the breach decision and from the event's commit."""
        import logging

        from ..adapters.logs import configure_logging
        from ..tools.platform_sim.bench_breach import bench_breach as run

        configure_logging(logging.WARNING)
        run(breaches=breaches, gap_s=gap_s, workdir=workdir)

    @bench_app.command("connector")
    def bench_connector(
        accounts: Annotated[int, typer.Option(help="accounts on the simulator, all mapped")] = 400,
        deals_per_s: Annotated[float, typer.Option("--deals-per-s", help="orders (deals) per second the simulated traders place")] = 2000,
        equity_per_s: Annotated[float, typer.Option("--equity-per-s", help="equity updates per second (sets how often the connector reads the accounts)")] = 10_000,
        seconds: Annotated[float, typer.Option(help="measured seconds (after the warm-up)")] = 20,
        warmup: Annotated[float, typer.Option(help="seconds before measuring")] = 3,
        store: Annotated[str, typer.Option(help="db: ingest into SQLite as `serve` does; none: make the lines and drop them")] = "db",
        in_process: Annotated[bool, typer.Option("--in-process", help="instead: the connector's CPU per line alone, the simulator driven step by step in this process")] = False,
        workdir: Annotated[Optional[str], typer.Option(help="directory for the two databases (default: a new temporary one)")] = None,
    ) -> None:
        """The simulator's deals per second and CPU, and the MT5 Web API connector's CPU per stored event
        (poll, lines, commit), at the issue's load — without the worker and the dispatcher."""
        import logging

        from ..tools.platform_sim.bench_connector import bench_connector as run

        from ..adapters.logs import configure_logging
        configure_logging(logging.WARNING)
        if in_process:
            from ..tools.platform_sim.bench_connector import connector_cpu

            connector_cpu(accounts=accounts)
            return
        if store not in ("db", "none"):
            raise typer.BadParameter("--store is db or none")
        run(accounts=accounts, deals_per_s=deals_per_s, equity_per_s=equity_per_s, seconds=seconds, warmup=warmup,
            store=store, workdir=workdir)

    @bench_app.command("platforms")
    def bench_platforms(
        accounts: Annotated[int, typer.Option(help="accounts on the simulator, all mapped")] = 400,
        deals_per_s: Annotated[float, typer.Option("--deals-per-s", help="orders (deals) per second the simulated traders place")] = 2000,
        equity_per_s: Annotated[float, typer.Option("--equity-per-s", help="equity updates per second (sets how often the connector reads the accounts)")] = 10_000,
        seconds: Annotated[float, typer.Option(help="measured seconds (after the warm-up)")] = 30,
        warmup: Annotated[float, typer.Option(help="seconds before measuring")] = 5,
        reckless_share: Annotated[float, typer.Option("--reckless-share", help="share of traders who breach sooner or later")] = 0.05,
        wake: Annotated[bool, typer.Option("--wake/--poll", hidden=True, help="ignored: the worker and the dispatcher are woken by commits, as in serve")] = True,
        workdir: Annotated[Optional[str], typer.Option(help="directory for the two databases (default: a new temporary one)")] = None,
        nats_url: Annotated[Optional[str], typer.Option("--nats-url", help="bus mode: the scale-out deployment on this NATS JetStream (worker and dispatcher processes, PostgreSQL)")] = None,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help="bus mode: PostgreSQL URL (default: PROPCRM_TEST_PG_URL or postgres@127.0.0.1/test); a fresh schema is made and dropped")] = None,
        workers: Annotated[int, typer.Option(help="bus mode: worker processes")] = 2,
        partitions: Annotated[int, typer.Option(help="bus mode: partitions of the stream")] = 16,
    ) -> None:
        """Deals and equity updates from the platform simulator through the MT5 Web API connector into
        decisions: rates, p50/p99 from the simulator's event to propcrm's decision, and from a breach to
        the simulator refusing the account's orders. With --nats-url: the same through the bus, partition
        worker processes and a dispatcher process (tools/bench_platforms_bus.py), p50/p90/p99."""
        import logging

        if nats_url:
            from ..adapters.logs import configure_logging
            from ..tools.bench_platforms_bus import bench_platforms_bus

            configure_logging(logging.WARNING)
            bench_platforms_bus(nats_url=nats_url, database_url=database_url, accounts=accounts,
                                deals_per_s=deals_per_s, equity_per_s=equity_per_s, seconds=seconds, warmup=warmup,
                                reckless_share=reckless_share, workers=workers, partitions=partitions,
                                workdir=workdir)
            return

        from ..tools.platform_sim.bench import bench_platforms as run

        from ..adapters.logs import configure_logging
        configure_logging(logging.WARNING)
        run(accounts=accounts, deals_per_s=deals_per_s, equity_per_s=equity_per_s, seconds=seconds, warmup=warmup,
            reckless_share=reckless_share, wake=wake, workdir=workdir)
