"""Hand-written trade histories for the detector tests: events in the wire contract, built tersely."""

from __future__ import annotations

import datetime as dt
import itertools
import json

from propcrm.analytics.frame import frame_from_events
from propcrm.domain.events import DECODER

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 7, 0, tzinfo=UTC)  # Monday, London open
_ids = itertools.count(1)


def ts(seconds: float, day: int = 0) -> str:
    stamp = T0 + dt.timedelta(days=day, seconds=seconds)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def opened(account, position, at, *, symbol="EURUSD", side="buy", lots="1", price="1.08500", day=0, order_at=None,
           ip=None, device=None):
    event = {"id": f"o{next(_ids)}", "type": "trade_opened", "account": account, "ts": ts(at, day),
             "position": position, "symbol": symbol, "side": side, "lots": lots, "price": price}
    if order_at is not None:
        event["order_ts"] = ts(order_at, day)
    if ip:
        event["ip"] = ip
    if device:
        event["device"] = device
    return event


def closed(account, position, at, *, lots="1", price="1.08600", profit="100.00", commission="-7.00", day=0):
    return {"id": f"c{next(_ids)}", "type": "trade_closed", "account": account, "ts": ts(at, day),
            "position": position, "lots": lots, "price": price, "profit": profit, "commission": commission, "swap": "0"}


def session(account, at, ip, device, day=0):
    return {"id": f"s{next(_ids)}", "type": "session", "account": account, "ts": ts(at, day), "ip": ip,
            "device": device}


def price(at, bid, ask, symbol="EURUSD", day=0):
    return {"id": f"q{next(_ids)}", "type": "price", "ts": ts(at, day), "symbol": symbol, "bid": bid, "ask": ask}


def frame_of(events, **crm):
    return frame_from_events([DECODER.decode(json.dumps(e)) for e in events], **crm)
