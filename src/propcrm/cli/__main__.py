"""``python -m propcrm.cli``: the ``propcrm`` command."""

from . import app

app()
