"""The event bus of the scale-out deployment (NATS JetStream): partitioned event log and worker leases.

``partitions`` is pure (no NATS import) so ingestion, workers and tests can share the partition map
without a broker; ``nats`` holds everything that talks to the server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

NATS_URL_ENV = "PROPCRM_NATS_URL"


def nats_url(env: Mapping[str, str] | None = None) -> str | None:
    """The configured NATS server (``PROPCRM_NATS_URL``), or ``None``: the one place it is read. Setting it
    makes the deployment the scale-out one, whose event log is the JetStream stream (docs/cluster.md)."""
    return (os.environ if env is None else env).get(NATS_URL_ENV) or None


def bus_mode(env: Mapping[str, str] | None = None) -> bool:
    """The event log is the NATS stream, not the embedded ``raw_events`` table."""
    return nats_url(env) is not None
