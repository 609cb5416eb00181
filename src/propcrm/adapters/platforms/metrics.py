"""Prometheus metrics of the platform connectors (``propcrm connect``, and ``serve`` in the embedded
default). Labels carry the connection's name, never a login or a credential."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..metrics import LATENCY_BUCKETS


class ConnectorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connected = Gauge("propcrm_platform_connected", "1 while the connection's session is up",
                               ["connection"], registry=r)
        self.reconnects = Counter("propcrm_platform_reconnects", "sessions (re)opened", ["connection"], registry=r)
        self.errors = Counter("propcrm_platform_errors", "failed polls, syncs or commits (retried with backoff)",
                              ["connection", "stage"], registry=r)
        self.events = Counter("propcrm_platform_events", "events handed to ingestion", ["connection", "kind"],
                              registry=r)
        self.outcomes = Counter("propcrm_platform_ingested", "ingestion's answer per event",
                                ["connection", "status"], registry=r)
        self.unmapped = Counter("propcrm_platform_unmapped_events", "events of logins mapped to no account (skipped)",
                                ["connection"], registry=r)
        self.held = Counter("propcrm_platform_glitches_held", "readings held back by the glitch guard",
                            ["connection", "why"], registry=r)
        self.clamped = Counter("propcrm_platform_clamped_events",
                               "events stamped later than their platform time to keep an account's order",
                               ["connection"], registry=r)
        self.polls = Counter("propcrm_platform_polls", "stream steps", ["connection"], registry=r)
        self.poll_seconds = Histogram("propcrm_platform_poll_seconds", "one stream step: platform requests",
                                      ["connection"], buckets=LATENCY_BUCKETS, registry=r)
        self.commit_seconds = Histogram("propcrm_platform_commit_seconds", "ingesting a step's events",
                                        ["connection"], buckets=LATENCY_BUCKETS, registry=r)
        self.lag = Gauge("propcrm_platform_lag_seconds",
                         "now minus the platform time of the newest event ingested", ["connection"], registry=r)
        self.last_ok = Gauge("propcrm_platform_last_ok_timestamp", "unix time of the last committed step",
                             ["connection"], registry=r)
        self.commands = Counter("propcrm_platform_commands", "commands executed on the platform",
                                ["connection", "command", "outcome"], registry=r)
        self.command_seconds = Histogram("propcrm_platform_command_seconds", "one command on the platform",
                                         ["connection", "command"], buckets=LATENCY_BUCKETS, registry=r)
        self.reconciled = Counter("propcrm_platform_reconciled", "reconciliation findings on (re)connect",
                                  ["connection", "finding"], registry=r)


_DEFAULT: ConnectorMetrics | None = None


def default_metrics() -> ConnectorMetrics:
    """One set per process, on its own registry (``propcrm connect --metrics-port`` serves it)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ConnectorMetrics()
    return _DEFAULT


def current_metrics() -> ConnectorMetrics | None:
    """The process's set if a connector created it, else ``None`` (``/metrics`` adds it when present)."""
    return _DEFAULT


__all__ = ["ConnectorMetrics", "current_metrics", "default_metrics"]
