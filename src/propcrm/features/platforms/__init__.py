"""Connections to trading platforms (issue 20): stored settings and sealed credentials per firm, the
login ↔ account mapping, the connector runners that feed ingestion, and the platform commands the
outbox dispatcher carries out. The platform protocols themselves are adapters
(:mod:`propcrm.adapters.platforms`)."""
