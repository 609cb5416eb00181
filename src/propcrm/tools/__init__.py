"""Tools around the service: the platform simulator (more to move here in the restructure)."""
