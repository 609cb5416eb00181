"""Applying events to account states in order: the pure step, the multi-account engine, replay and what-if."""
