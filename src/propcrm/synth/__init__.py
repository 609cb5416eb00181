"""Synthetic data: deterministic event streams of a made-up prop firm, for tests, demos and benchmarks."""
