"""A small MetaTrader 5-like trading server for demos, end-to-end tests and benchmarks.

``server.py`` holds the trading core (accounts, a price feed, market orders with SL/TP, positions
marked to market, commissions, swaps, stop out, balance operations, dealer requests) and persists
every deal before it can be seen; ``webapi.py`` speaks a faithful subset of the MT5 Web API over HTTP
(the same protocol propcrm's ``mt5-web`` connector speaks to a real server) plus a few endpoints of
its own for its traders; ``robots.py`` are simulated traders. See docs/platforms.md.
"""
