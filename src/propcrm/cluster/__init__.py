"""The scale-out deployment: partition workers on NATS JetStream, checkpoints in the database,
metrics and health per role, and a local multi-process launcher (``propcrm cluster up``).

See ``docs/cluster.md``.
"""
