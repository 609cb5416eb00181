"""One router per feature, mounted under ``/api/v1``."""
