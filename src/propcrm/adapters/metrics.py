"""What every Prometheus registry of propcrm shares: the latency buckets (seconds), so that the API's,
the cluster workers' and the platform connectors' histograms can be read side by side."""

from __future__ import annotations

from prometheus_client import disable_created_metrics

disable_created_metrics()  # the *_created series only double what a scraper already knows (for every registry)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

__all__ = ["LATENCY_BUCKETS"]
