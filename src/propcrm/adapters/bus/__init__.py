"""The event bus of the scale-out deployment (NATS JetStream): partitioned event log and worker leases.

``partitions`` is pure (no NATS import) so ingestion, workers and tests can share the partition map
without a broker; ``nats`` holds everything that talks to the server.
"""

from __future__ import annotations

from collections.abc import Mapping

NATS_URL_ENV = "PROPCRM_NATS_URL"


def nats_url(env: Mapping[str, str] | None = None) -> str | None:
    """The configured NATS server (``PROPCRM_NATS_URL`` of ``env``, default: the process's settings,
    ``adapters/settings.current()``), or ``None``. Setting it makes the deployment the scale-out one, whose
    event log is the JetStream stream (docs/cluster.md)."""
    if env is None:
        from ..settings import current

        return current().nats_url
    return env.get(NATS_URL_ENV) or None


def bus_mode(env: Mapping[str, str] | None = None) -> bool:
    """The event log is the NATS stream, not the embedded ``raw_events`` table: decided once per process
    (the settings its entry point installed), not at each call from the environment."""
    return nats_url(env) is not None
