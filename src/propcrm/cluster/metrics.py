"""Prometheus metrics and health endpoints of the cluster's roles.

Every role exposes ``/metrics`` (Prometheus text format) and ``/healthz`` (JSON; 200 when the role can
do its work, 503 when it cannot). The API serves both from its own app; the worker and the dispatcher
start a small HTTP server on ``--metrics-port``. These ports are *internal*: they carry no secrets and
no trading data, only counts and positions, and are meant to be reachable from the monitoring network
only (bind them to a private interface; see docs/cluster.md).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..adapters.metrics import LATENCY_BUCKETS  # (importing it also turns off the *_created series)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("propcrm_worker_events", "events applied (rate() gives events/s)", registry=r)
        self.messages = Counter("propcrm_worker_messages", "stream messages applied", registry=r)
        self.redeliveries = Counter("propcrm_worker_redelivered_messages",
                                    "messages at or below the checkpoint, skipped", registry=r)
        self.decisions = Counter("propcrm_worker_decisions", "decisions committed", ["kind"], registry=r)
        self.dead_letters = Counter("propcrm_worker_dead_letters", "events or messages dead-lettered", registry=r)
        self.failed_batches = Counter("propcrm_worker_failed_batches",
                                      "batches rolled back (fenced or storage error); retried from the checkpoint",
                                      registry=r)
        self.latency = Histogram("propcrm_event_to_decision_seconds",
                                 "from the ingest node's publish to the committed batch, per event",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.commit = Histogram("propcrm_worker_commit_seconds", "time of a batch's transaction",
                                buckets=LATENCY_BUCKETS, registry=r)
        self.owned = Gauge("propcrm_worker_partitions_owned", "partitions this worker holds a lease on", registry=r)
        self.lag = Gauge("propcrm_partition_lag_messages", "stream messages not yet committed, per partition",
                         ["partition"], registry=r)
        self.position = Gauge("propcrm_partition_committed_seq", "committed stream sequence, per partition",
                              ["partition"], registry=r)
        self.takeovers = Counter("propcrm_worker_takeovers", "partitions taken over (start, rebalance, failover)",
                                 registry=r)
        self.takeover_seconds = Histogram("propcrm_worker_takeover_seconds",
                                          "loading a partition's checkpoint and states", buckets=LATENCY_BUCKETS,
                                          registry=r)


class DispatcherMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.backlog = Gauge("propcrm_outbox_backlog", "outbox rows pending delivery", registry=r)
        self.due = Gauge("propcrm_outbox_due", "outbox rows pending and due now", registry=r)
        self.dead = Gauge("propcrm_outbox_dead", "outbox rows that went to the dead letter", registry=r)
        self.delivered = Counter("propcrm_outbox_delivered", "rows delivered by this dispatcher", ["kind"], registry=r)
        self.failed = Counter("propcrm_outbox_failed_attempts", "failed delivery attempts", registry=r)


def serve_http(host: str, port: int, registry: CollectorRegistry,
               health: Callable[[], tuple[bool, dict]]) -> ThreadingHTTPServer:
    """``/metrics`` and ``/healthz`` on a daemon thread; returns the server (``shutdown()`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, status, kind = generate_latest(registry), 200, CONTENT_TYPE_LATEST
            elif path == "/healthz":
                try:
                    ok, details = health()
                except Exception as exc:  # noqa: BLE001 - a failing check is "unhealthy", not a crash
                    ok, details = False, {"error": type(exc).__name__}
                body, status, kind = json.dumps({"ok": ok, **details}).encode(), 200 if ok else 503, "application/json"
            else:
                body, status, kind = b'{"error": "not found"}', 404, "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes are not worth a log line each
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


__all__ = ["DispatcherMetrics", "LATENCY_BUCKETS", "WorkerMetrics", "serve_http"]
