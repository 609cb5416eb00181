"""Match-Trader (Match-Trade Technologies): the Broker API connector (``brokerapi.py``)."""
