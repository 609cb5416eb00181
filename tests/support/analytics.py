"""Helpers for the analytics tests: a small planted-abuse firm, stored in a database, and cases to act on."""

from __future__ import annotations

import json
from bisect import bisect_right

from propcrm.adapters.db import models as m
from propcrm.domain.rulepack import load_pack
from propcrm.services.cases import record_finding
from propcrm.services.catalog import add_pack, create_account, ensure_firm
from propcrm.services.ingest import ingest
from propcrm.synth.abuse import AbuseSpec, generate

SMALL = AbuseSpec(seed=11, honest=60, days=3, hedge_pairs=2, copy_groups=1, latency=2, martingale=1, linked_groups=2,
                  cgnat_accounts=14, same_person_pairs=3)


def thin_prices(events: list[dict], keep_s: int = 25) -> list[dict]:
    """Only the quotes a trade can be compared with (its symbol's last ones before each open): a small database."""
    import datetime as dt

    def secs(ts: str) -> float:
        return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()

    opens: dict[str, list[float]] = {}
    for e in events:
        if e["type"] == "trade_opened":
            opens.setdefault(e["symbol"], []).append(secs(e["ts"]))
    for times in opens.values():
        times.sort()
    out = []
    for e in events:
        if e["type"] != "price":
            out.append(e)
            continue
        t, times = secs(e["ts"]), opens.get(e["symbol"], [])
        k = bisect_right(times, t + keep_s)
        if k and 0 <= times[k - 1] - t < keep_s:
            out.append(e)
    return out


def store_firm(sessions, *, firm: str = "fa", spec: AbuseSpec = SMALL, split: float | None = None):
    """Create the firm's traders and accounts, ingest its events; with ``split`` only that share (by time).

    Returns (events not yet ingested, crm, truth, account ids by external id).
    """
    events, crm, truth = generate(spec)
    events = thin_prices(events)
    with sessions.begin() as s:
        ensure_firm(s, firm_id=firm)
        version = s.query(m.RulePackVersion).filter_by(firm_id=firm, pack_id="two-step-100k").first()
        if version is None:
            version = add_pack(s, firm_id=firm, pack=load_pack("two-step-100k"), activate=True)
        traders, ids = {}, {}
        for account, info in sorted(crm.items()):
            trader_name = info["trader"]
            if trader_name not in traders:
                trader = m.Trader(firm_id=firm, name=trader_name, email=f"{trader_name.lower()}@{firm}.example")
                s.add(trader)
                s.flush()
                traders[trader_name] = trader.id
            ids[account] = create_account(s, firm_id=firm, external_id=account, pack_version_id=version.id,
                                          trader_id=traders[trader_name]).id
    cut = len(events) if split is None else int(len(events) * split)
    ingest_events(sessions, events[:cut], firm=firm)
    return events[cut:], crm, truth, ids


def ingest_events(sessions, events: list[dict], *, firm: str = "fa", chunk: int = 5000) -> None:
    """Ingest and evaluate (the analysis reads what the evaluation projected: trades, closes, logins)."""
    from propcrm.services.evaluation import EvaluationWorker

    for start in range(0, len(events), chunk):
        body = b"".join(json.dumps(e).encode() + b"\n" for e in events[start:start + chunk])
        with sessions.begin() as s:
            report = ingest(s, firm_id=firm, source="mt5", body=body)
        assert report.rejected == 0, report.to_dict()["lines"][:3]
    EvaluationWorker(sessions).run_until_idle()


def new_case(world, *, firm: str = "fa", account: str | None = None, status: str = "open") -> int:
    """A case opened as the analysis would, on a fresh account (or ``account``) of ``firm``."""
    account_id = world.accounts[account] if account else world.new_account(firm=firm)
    with world.sessions.begin() as s:
        case, _ = record_finding(s, firm_id=firm, detector="hedging", fingerprint=f"hedging:test-{next(world.counter)}",
                                 account_ids=[account_id], title="opposite positions", score=80,
                                 evidence={"pairs": []})
        case.status = status
        return case.id
