"""Use cases: ingest, evaluate, enforce, audit — units of work over the adapters."""
