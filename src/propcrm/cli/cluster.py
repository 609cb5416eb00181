"""`propcrm` commands of the cluster feature: `worker`, `cluster up|dispatch|status`, `bench pipeline`.

Keep imports of heavy modules inside the commands: every `propcrm` invocation imports this module.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

_DB_HELP = "database URL (default: PROPCRM_DATABASE_URL, else ./data/propcrm.db)"
_NATS_HELP = "NATS server URL (default: PROPCRM_NATS_URL, else nats://127.0.0.1:4222)"


def _settings():
    from ..adapters.settings import Settings, SettingsError, install

    try:
        return install(Settings.from_env())  # the process's configuration, read once here
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _bus(nats_url: Optional[str], partitions: Optional[int], settings=None):
    from ..adapters.bus.jetstream import BusConfig, BusConfigError

    settings = settings or _settings()
    env = dict(settings.env)
    if partitions is not None:
        env["PROPCRM_PARTITIONS"] = str(partitions)
    try:
        return BusConfig.from_env(env, url=nats_url or settings.nats_url or "nats://127.0.0.1:4222")
    except BusConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add this feature's commands to the `propcrm` app (and its `bench` group)."""
    cluster_app = typer.Typer(help="The scale-out deployment on NATS JetStream (docs/cluster.md).",
                              no_args_is_help=True)
    app.add_typer(cluster_app, name="cluster")

    @app.command("worker")
    def worker(
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
        nats_url: Annotated[Optional[str], typer.Option("--nats-url", help=_NATS_HELP)] = None,
        partitions: Annotated[Optional[int], typer.Option("--partitions", help="P (default: PROPCRM_PARTITIONS, else 64); fixed per deployment")] = None,
        metrics_port: Annotated[Optional[int], typer.Option("--metrics-port", help="serve /metrics and /healthz on this port (internal)")] = None,
        metrics_host: Annotated[str, typer.Option("--metrics-host", help="address of the metrics port")] = "127.0.0.1",
        worker_id: Annotated[Optional[str], typer.Option("--worker-id", help="name in the lease bucket (default: host-pid-random)")] = None,
        max_batch_events: Annotated[int, typer.Option("--max-batch-events", help="events per transaction, at most")] = 20_000,
    ) -> None:
        """Run an engine worker: own partitions of the event stream (leases in NATS KV), evaluate, commit.

        Any number run side by side; they share the partitions and take over those of a worker that
        stops or dies within the lease TTL (PROPCRM_LEASE_TTL, default 3 s).
        """
        from ..cluster.worker import run_worker

        settings = _settings()
        run_worker(bus=_bus(nats_url, partitions, settings), database_url=database_url or settings.database_url(),
                   worker_id=worker_id, metrics_port=metrics_port, metrics_host=metrics_host,
                   max_batch_events=max_batch_events, snapshot_interval_s=settings.snapshot_interval,
                   push=settings.push_consumer)

    @cluster_app.command("dispatch")
    def cluster_dispatch(
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
        metrics_port: Annotated[Optional[int], typer.Option("--metrics-port", help="serve /metrics and /healthz on this port (internal)")] = None,
        metrics_host: Annotated[str, typer.Option("--metrics-host", help="address of the metrics port")] = "127.0.0.1",
        interval: Annotated[float, typer.Option("--interval", min=0.05, help="seconds to wait when nothing is due")] = 0.5,
        wake: Annotated[bool, typer.Option("--wake/--no-wake", help="on PostgreSQL, start a pass as soon as another process commits outbox rows (LISTEN/NOTIFY); --no-wake: poll only")] = True,
    ) -> None:
        """The outbox dispatcher as a cluster role: `propcrm dispatch` plus /metrics (outbox backlog) and /healthz."""
        from ..adapters.db.session import database_url as default_database_url
        from ..cluster.dispatcher import run_dispatcher_role

        settings = _settings()
        run_dispatcher_role(database_url=database_url or default_database_url(), metrics_port=metrics_port,
                            metrics_host=metrics_host, interval=interval, settings=settings, wake=wake)

    @cluster_app.command("up")
    def cluster_up(
        workers: Annotated[int, typer.Option("--workers", min=1, help="engine workers to start")] = 2,
        dispatchers: Annotated[int, typer.Option("--dispatchers", min=0, help="outbox dispatchers to start")] = 1,
        port: Annotated[int, typer.Option("--port", help="port of the ingest API")] = 8000,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
        nats_url: Annotated[Optional[str], typer.Option("--nats-url", help=_NATS_HELP)] = None,
        partitions: Annotated[Optional[int], typer.Option("--partitions", help="P (default: PROPCRM_PARTITIONS, else 64)")] = None,
        metrics_base_port: Annotated[int, typer.Option("--metrics-base-port", help="workers' and dispatchers' metrics ports start here")] = 9100,
    ) -> None:
        """Start a local multi-process deployment: an ingest API publishing to JetStream, N workers,
        dispatchers; print where everything is; Ctrl-C stops them all."""
        from ..cluster.local import cluster_up as run_cluster_up

        settings = _settings()
        run_cluster_up(bus=_bus(nats_url, partitions, settings), database_url=database_url or settings.database_url(),
                       workers=workers, dispatchers=dispatchers, port=port, metrics_base_port=metrics_base_port,
                       settings=settings)

    @cluster_app.command("status")
    def cluster_status(
        database_url: Annotated[Optional[str], typer.Option("--database-url", help=_DB_HELP)] = None,
        nats_url: Annotated[Optional[str], typer.Option("--nats-url", help=_NATS_HELP)] = None,
        partitions: Annotated[Optional[int], typer.Option("--partitions", help="P (default: PROPCRM_PARTITIONS, else 64)")] = None,
    ) -> None:
        """Partitions: lease owner, committed and snapshot positions, last published message. Exit 1 when a
        partition has no owner."""
        from ..adapters.db.session import database_url as default_database_url
        from ..cluster.status import cluster_status as show

        raise typer.Exit(show(bus=_bus(nats_url, partitions), database_url=database_url or default_database_url()))

    @bench_app.command("pipeline")
    def bench_pipeline(
        events: Annotated[int, typer.Option(help="events for the throughput runs")] = 300_000,
        accounts: Annotated[int, typer.Option(help="accounts of the synthetic firm")] = 2000,
        workers: Annotated[str, typer.Option(help="worker counts to measure, comma-separated")] = "1,2",
        rate: Annotated[int, typer.Option(help="steady load for the latency run, events/s")] = 20_000,
        seconds: Annotated[float, typer.Option(help="length of the latency run")] = 15.0,
        partitions: Annotated[int, typer.Option(help="P for the benchmark's stream (see docs/cluster.md: P vs message size)")] = 16,
        request_size: Annotated[int, typer.Option(help="events per ingest request")] = 10_000,
        nats_url: Annotated[Optional[str], typer.Option("--nats-url", help=_NATS_HELP)] = None,
        database_url: Annotated[Optional[str], typer.Option("--database-url", help="PostgreSQL URL (default: PROPCRM_TEST_PG_URL or postgres@127.0.0.1/test); a fresh schema is made and dropped")] = None,
        tick_ms: Annotated[float, typer.Option("--tick-ms", help="latency run: one request every this many ms")] = 10.0,
        skip_throughput: Annotated[bool, typer.Option("--skip-throughput", help="only the raw bus, latency and recovery runs")] = False,
    ) -> None:
        """End-to-end events/s (ingest → JetStream → workers → committed decisions) with 1 and 2 workers, the raw
        JetStream rate of the same batches, p99 event-to-decision latency at a steady rate, and failover time."""
        from ..tools.bench_cluster import bench_pipeline as run_bench

        run_bench(events=events, accounts=accounts, workers=[int(w) for w in workers.split(",") if w.strip()],
                  rate=rate, seconds=seconds, partitions=partitions, request_size=request_size,
                  nats_url=nats_url or "nats://127.0.0.1:4222", database_url=database_url, tick_ms=tick_ms,
                  skip_throughput=skip_throughput)
