"""Everything that touches the world: database, bus, platforms, notifications."""
