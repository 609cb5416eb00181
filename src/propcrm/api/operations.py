"""Operations endpoints of the API process: ``/healthz`` and ``/metrics`` (outside ``/api/v1``).

``/healthz`` is open (load balancers probe it) and says only whether the database answers and, for an
ingest node of the scale-out deployment, whether NATS is connected.

``/metrics`` (Prometheus) is served on the same port as the public API, so it is guarded: with
``PROPCRM_METRICS_TOKEN`` set it needs ``Authorization: Bearer <token>`` (compared in constant time);
without it, only clients on the loopback interface are answered (a local scraper or sidecar). Volumes
per status are business information a platform or a stranger has no need to see.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from ..adapters.metrics import LATENCY_BUCKETS


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.lines = Counter("propcrm_ingest_lines", "ingested lines by outcome", ["status"], registry=r)
        self.requests = Counter("propcrm_ingest_requests", "ingestion requests by HTTP status", ["code"], registry=r)
        self.seconds = Histogram("propcrm_ingest_request_seconds", "time to answer an ingestion request",
                                 buckets=LATENCY_BUCKETS, registry=r)

    def render(self) -> bytes:
        from ..adapters.platforms import metrics as platform_metrics  # issue 20: connectors run inside `serve`

        extra = platform_metrics.current_metrics()
        return generate_latest(self.registry) + (generate_latest(extra.registry) if extra is not None else b"")
