"""The event bus of the scale-out deployment (NATS JetStream): partitioned event log and worker leases.

``partitions`` is pure (no NATS import) so ingestion, workers and tests can share the partition map
without a broker; ``nats`` holds everything that talks to the server.
"""
