"""Reads for the abuse-case pages of the back office: the filtered case list, and one case laid out for a
person — the linked-account graph (positions computed here, drawn as SVG by the template), the matched
trades of hedging and copy groups on one time axis, latency fills against the stored reference prices,
and each account's risk-score explanation.

Nothing here decides anything: the case, its evidence and timeline come from
:mod:`propcrm.services.cases`, the risk explanation from :func:`propcrm.services.analysis.account_risk`,
the links from ``account_links`` (what :func:`propcrm.services.cases.linked_accounts` walks). Money and
prices stay the text the platform (or the detector's exact arithmetic) produced; times become epoch
milliseconds only for the charts.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from ..adapters.db import models as m
from ..adapters.db.models_analytics import CASE_OPEN_STATUSES, CASE_STATUSES, AccountLink, Case, CaseAccount
from ..services import analysis as analysis_service
from ..services import cases as case_service

UTC = dt.timezone.utc
PAGE_SIZE = 25
MAX_GRAPH_NODES = 30
MAX_RISK_ACCOUNTS = 30
MAX_LATENCY_FILLS = 20  # fills shown against the reference stream (the evidence lists up to 50)
QUOTES_BEFORE = dt.timedelta(seconds=30)
QUOTES_AFTER = dt.timedelta(seconds=15)
MAX_QUOTE_ROWS = 2000  # price events read per fill window (all symbols), a bound for a very busy feed

STATUS_FILTERS: tuple[tuple[str, str], ...] = (
    ("active", "Open or under review"),
    ("open", "Open"),
    ("under_review", "Under review"),
    ("confirmed", "Confirmed"),
    ("dismissed", "Dismissed"),
    ("all", "All"),
)
STATUS_LABELS = {"open": "open", "under_review": "under review", "confirmed": "confirmed", "dismissed": "dismissed"}
KIND_LABELS = {
    "linkage": "Linked accounts",
    "hedging": "Cross-account hedging",
    "copy": "Copy trading",
    "latency": "Latency / execution abuse",
    "martingale": "Martingale",
    "risk_score": "Risk score",
    "manual": "Manual",
}
TRANSITION_LABELS = {"under_review": "Start review (under review)", "confirmed": "Confirm abuse",
                     "dismissed": "Dismiss", "open": "Reopen"}


# --------------------------------------------------------------------------------------------------
# the list


@dataclass
class CaseList:
    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    status: str
    kind: str
    mine: bool
    counts: dict[str, int]
    kinds: list[str]


def _assigned_emails(session: Session, firm_id: str, user_ids) -> dict[int, str]:
    wanted = {u for u in user_ids if u is not None}
    if not wanted:
        return {}
    return dict(session.execute(select(m.User.id, m.User.email).where(m.User.firm_id == firm_id,
                                                                        m.User.id.in_(wanted))).all())


def case_list(session: Session, *, firm_id: str, status: str = "active", kind: str = "", mine_user_id: int | None = None,
              page: int = 1) -> CaseList:
    """Cases of the firm, strongest evidence first (as the API's list), with the filters of the page."""
    if status not in dict(STATUS_FILTERS):
        status = "active"
    statuses = (tuple(CASE_OPEN_STATUSES) if status == "active" else None if status == "all" else (status,))
    filters = {"firm_id": firm_id, "detector": kind or None, "assigned_user_id": mine_user_id}
    counted = case_service.cases_where(**filters)  # the status counts follow the other filters
    base = case_service.cases_where(**filters, statuses=statuses)
    counts = {s: 0 for s in CASE_STATUSES}
    sub = counted.subquery()
    for name, n in session.execute(select(sub.c.status, func.count()).group_by(sub.c.status)).all():
        counts[name] = int(n)
    counts["active"] = sum(counts[s] for s in CASE_OPEN_STATUSES)
    counts["all"] = sum(counts[s] for s in CASE_STATUSES)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(max(page, 1), pages)
    cases = list(session.scalars(base.order_by(*case_service.STRONGEST_FIRST)
                                 .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)))
    accounts: dict[int, list[tuple[int, str]]] = {c.id: [] for c in cases}
    if cases:
        for case_id, account_id, external in session.execute(
                select(CaseAccount.case_id, m.Account.id, m.Account.external_id)
                .join(m.Account, m.Account.id == CaseAccount.account_id)
                .where(CaseAccount.case_id.in_(list(accounts)), CaseAccount.firm_id == firm_id)
                .order_by(m.Account.external_id)):
            accounts[case_id].append((account_id, external))
    emails = _assigned_emails(session, firm_id, [c.assigned_user_id for c in cases])
    rows = [{"id": c.id, "detector": c.detector, "kind": KIND_LABELS.get(c.detector, c.detector), "status": c.status,
             "title": c.title, "score": c.score, "accounts": accounts[c.id],
             "assignee": emails.get(c.assigned_user_id) if c.assigned_user_id else None,
             "opened_at": c.opened_at, "updated_at": c.updated_at} for c in cases]
    kinds = sorted(session.scalars(select(Case.detector).where(Case.firm_id == firm_id).distinct()))
    return CaseList(rows=rows, total=total, page=page, pages=pages, status=status, kind=kind,
                    mine=mine_user_id is not None, counts=counts, kinds=kinds)


# --------------------------------------------------------------------------------------------------
# helpers


def to_ms(value: Any) -> int | None:
    """RFC 3339 text (or a datetime) → epoch milliseconds, for drawing only."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def ms_text(ms: int | None) -> str:
    """Epoch milliseconds as UTC text with the milliseconds (a latency gap is often under a second)."""
    if ms is None:
        return "—"
    return dt.datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _dec(text: Any) -> Decimal | None:
    try:
        number = Decimal(str(text))
    except (InvalidOperation, ValueError, TypeError):
        return None
    return number if number.is_finite() else None


def _short(text: str, n: int = 14) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# --------------------------------------------------------------------------------------------------
# the linked-account graph


@dataclass
class Graph:
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    links: list[dict[str, Any]]  # every link as text (the graph's accessible twin)
    hidden: int = 0  # linked accounts beyond MAX_GRAPH_NODES, not drawn
    width: int = 640
    height: int = 460


EDGE_STYLE = {  # kind -> (colour, width, dash)
    "hedging": ("#b3261e", 3, ""),
    "copy": ("#a15c00", 3, ""),
    "ip": ("#2b5a8a", 2, ""),
    "device": ("#6b3fa0", 2, ""),
    "payment": ("#137a3a", 2, ""),
    "trader": ("#5b6573", 1.5, "6 4"),
}
KIND_WORDS = {"ip": "shared IP", "device": "shared device", "payment": "shared payment method",
              "trader": "same trader", "hedging": "hedging pair", "copy": "copy pair"}


def linked_graph(session: Session, *, firm_id: str, case: Case, members: list[m.Account]) -> Graph:
    """The case's accounts and every account linked to them, with each link (identity links from
    ``account_links`` and the case's evidence, same trader, hedging/copy pairs) as a labelled edge."""
    evidence = case.evidence if isinstance(case.evidence, dict) else {}
    ids_in_case = [a.id for a in members]
    linked: set[int] = set()
    for account_id in ids_in_case:
        linked |= case_service.linked_accounts(session, firm_id=firm_id, account_id=account_id)
    extra = sorted(linked - set(ids_in_case))
    drawn = ids_in_case + extra[: max(0, MAX_GRAPH_NODES - len(ids_in_case))]
    hidden = len(linked - set(ids_in_case)) - (len(drawn) - len(ids_in_case))
    accounts = {a.id: a for a in session.scalars(select(m.Account).where(m.Account.firm_id == firm_id,
                                                                        m.Account.id.in_(drawn)))}
    drawn = [a for a in drawn if a in accounts]
    by_external = {accounts[a].external_id: a for a in drawn}
    # evidence may name accounts by external id only (the detectors work on platform names)
    edges: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}

    def add(a: int | None, b: int | None, kind: str, value: str, detail: str, first=None, last=None) -> None:
        if a is None or b is None or a == b or a not in accounts or b not in accounts:
            return
        key = (min(a, b), max(a, b))
        per = edges.setdefault(key, {})
        label_key = f"{kind}:{value}"
        if label_key not in per:
            per[label_key] = {"kind": kind, "value": value, "detail": detail, "first_seen": first, "last_seen": last}

    if drawn:
        for link in session.scalars(select(AccountLink).where(
                AccountLink.firm_id == firm_id, AccountLink.account_a.in_(drawn), AccountLink.account_b.in_(drawn))
                .order_by(AccountLink.id)):
            add(link.account_a, link.account_b, link.via, link.value, f"{KIND_WORDS.get(link.via, link.via)} {link.value}",
                link.first_seen, link.last_seen)
    for link in evidence.get("links", []) if isinstance(evidence.get("links"), list) else []:
        if isinstance(link, dict):
            via, value = str(link.get("via", "")), str(link.get("value", ""))
            add(by_external.get(link.get("account_a")), by_external.get(link.get("account_b")), via, value,
                f"{KIND_WORDS.get(via, via)} {value}", link.get("first_seen"), link.get("last_seen"))
    by_trader: dict[int, list[int]] = {}
    for a in drawn:
        if accounts[a].trader_id is not None:
            by_trader.setdefault(accounts[a].trader_id, []).append(a)
    for trader_id, group in by_trader.items():
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                key = (min(a, b), max(a, b))
                if not any(v["kind"] == "trader" for v in edges.get(key, {}).values()):
                    add(a, b, "trader", str(trader_id), f"same trader (CRM trader {trader_id})")
    if case.detector in ("hedging", "copy"):
        for pair in evidence.get("pairs", []) if isinstance(evidence.get("pairs"), list) else []:
            if not isinstance(pair, dict) or len(pair.get("accounts") or []) != 2:
                continue
            a, b = (by_external.get(x) for x in pair["accounts"])
            matched = pair.get("matched", 0)
            if case.detector == "hedging":
                detail = f"hedging pair: {matched} matched opposite trades, combined P/L {pair.get('combined_profit', '—')}"
            else:
                detail = (f"copy pair: {matched} matched trades, size ratio {pair.get('size_ratio_median', '—')}"
                          + (f", {pair['usually_first']} usually first" if pair.get("usually_first") else ""))
            add(a, b, case.detector, f"×{matched}", detail)

    # layout: a circle (the case's accounts first, so they sit together), computed here
    graph = Graph(nodes=[], edges=[], links=[], hidden=max(0, hidden))
    n = len(drawn)
    pos: dict[int, tuple[float, float]] = {}
    labels_at: dict[int, tuple[float, float, str]] = {}
    if n <= 2:  # one or two accounts: side by side on a short strip
        graph.height = 170
        for i, a in enumerate(drawn):
            x = graph.width / 2 if n == 1 else (150 if i == 0 else graph.width - 150)
            pos[a], labels_at[a] = (x, 70.0), (x, 125.0, "middle")
    else:  # a circle, the case's accounts first (they sit together), each label outside it
        graph.width, graph.height = 760, 460 if n <= 12 else 560
        cx, cy = graph.width / 2, graph.height / 2
        radius = min(cx, cy) - 70
        for i, a in enumerate(drawn):
            angle = -math.pi / 2 + 2 * math.pi * i / n
            c, s = math.cos(angle), math.sin(angle)
            x, y = round(cx + radius * c, 1), round(cy + radius * s, 1)
            pos[a] = (x, y)
            if abs(c) < 0.35:  # top or bottom: above or below the node
                labels_at[a] = (x, round(y - 32 if s < 0 else y + 44, 1), "middle")
            else:  # left or right: beside it, away from the centre
                labels_at[a] = (round(x + 28 if c > 0 else x - 28, 1), round(y + 6 + 10 * s, 1),
                                "start" if c > 0 else "end")
    for a in drawn:
        account = accounts[a]
        (x, y), (lx, ly, anchor) = pos[a], labels_at[a]
        graph.nodes.append({"id": a, "external_id": account.external_id, "label": _short(account.external_id),
                            "status": account.status, "in_case": a in ids_in_case, "x": x, "y": y, "lx": lx, "ly": ly,
                            "anchor": anchor})
    for (a, b), labels in sorted(edges.items()):
        items = list(labels.values())
        kinds = sorted({i["kind"] for i in items}, key=lambda k: list(EDGE_STYLE).index(k) if k in EDGE_STYLE else 99)
        colour, width, dash = EDGE_STYLE.get(kinds[0], ("#5b6573", 1.5, ""))
        (x1, y1), (x2, y2) = pos[a], pos[b]

        def word(kind: str) -> str:  # "device", "IP", "same trader", "hedging ×4"
            text = KIND_WORDS.get(kind, kind).replace("shared ", "").replace(" pair", "")
            if kind in ("hedging", "copy"):
                text += " " + next(i["value"] for i in items if i["kind"] == kind)
            return text

        short = ", ".join(word(k) for k in kinds)
        graph.edges.append({"a": accounts[a].external_id, "b": accounts[b].external_id, "x1": x1, "y1": y1,
                            "x2": x2, "y2": y2, "mx": round((x1 + x2) / 2, 1), "my": round((y1 + y2) / 2 - 4, 1),
                            "colour": colour, "width": width, "dash": dash, "short": short,
                            "title": f"{accounts[a].external_id} — {accounts[b].external_id}: "
                                     + "; ".join(i["detail"] for i in items)})
        for item in items:
            graph.links.append({"a": accounts[a].external_id, "a_id": a, "b": accounts[b].external_id, "b_id": b,
                                "kind": item["kind"], "words": KIND_WORDS.get(item["kind"], item["kind"]),
                                "detail": item["detail"], "first_seen": item["first_seen"],
                                "last_seen": item["last_seen"]})
    return graph


# --------------------------------------------------------------------------------------------------
# matched trades (hedging, copy)


def _segment(trade: dict) -> dict[str, Any]:
    return {"account": str(trade.get("account", "")), "position": str(trade.get("position", "")),
            "symbol": str(trade.get("symbol", "")), "side": str(trade.get("side", "")),
            "lots": str(trade.get("lots", "")), "open_price": str(trade.get("open_price", "")),
            "close_price": str(trade.get("close_price", "")) if trade.get("close_price") is not None else "",
            "net_profit": str(trade.get("net_profit", "")) if trade.get("net_profit") is not None else "",
            "opened_at": trade.get("opened_at"), "closed_at": trade.get("closed_at"),
            "start": to_ms(trade.get("opened_at")), "end": to_ms(trade.get("closed_at"))}


def matched_trades(case: Case) -> dict[str, Any] | None:
    """Every matched trade of a hedging or copy group: the table rows (exact text) and the chart data."""
    evidence = case.evidence if isinstance(case.evidence, dict) else {}
    pairs = evidence.get("pairs") if case.detector in ("hedging", "copy") else None
    if not isinstance(pairs, list):
        return None
    out_pairs, segments, matches, accounts = [], {}, [], []
    for number, pair in enumerate(pairs, 1):
        if not isinstance(pair, dict):
            continue
        rows = []
        for k, match in enumerate(pair.get("trades") or [], 1):
            if not isinstance(match, dict) or not isinstance(match.get("a"), dict) or not isinstance(match.get("b"), dict):
                continue
            a, b = _segment(match["a"]), _segment(match["b"])
            rows.append({"n": k, "a": a, "b": b, "gap_s": match.get("gap_s")})
            for seg in (a, b):
                if seg["account"] not in accounts:
                    accounts.append(seg["account"])
                key = f"{seg['account']}|{seg['position']}|{seg['start']}"
                segments.setdefault(key, seg)
            if a["start"] is not None and b["start"] is not None:
                matches.append({"pair": number, "n": k, "a": a["account"], "b": b["account"],
                                "a_ms": a["start"], "b_ms": b["start"]})
        out_pairs.append({"n": number, "accounts": [str(x) for x in pair.get("accounts") or []],
                          "matched": pair.get("matched"), "listed": len(rows),
                          "share": pair.get("share_of_smaller_account"),
                          "expected_by_chance": pair.get("expected_by_chance"), "chance_p": pair.get("chance_p"),
                          "combined_profit": pair.get("combined_profit"), "net_exposure": pair.get("net_exposure"),
                          "size_ratio_median": pair.get("size_ratio_median"),
                          "size_ratio_consistency": pair.get("size_ratio_consistency"),
                          "usually_first": pair.get("usually_first"), "similarity": pair.get("similarity"),
                          "rows": rows})
    accounts.sort()
    chart = {"kind": case.detector, "accounts": accounts,
             "segments": sorted(segments.values(), key=lambda s: (s["account"], s["start"] or 0)),
             "matches": matches}
    return {"pairs": out_pairs, "chart": chart, "combined_profit": evidence.get("combined_profit"),
            "net_exposure": evidence.get("net_exposure"), "similarity": evidence.get("similarity")}


# --------------------------------------------------------------------------------------------------
# latency: stale fills against the stored reference prices


def _quotes(session: Session, firm_id: str, symbol: str, lo: dt.datetime, hi: dt.datetime) -> list[dict[str, Any]]:
    rows = session.execute(
        select(m.RawEvent.ts, m.RawEvent.body).where(m.RawEvent.firm_id == firm_id, m.RawEvent.type == "price",
                                                     m.RawEvent.ts >= lo, m.RawEvent.ts <= hi)
        .order_by(m.RawEvent.ts, m.RawEvent.seq).limit(MAX_QUOTE_ROWS)).all()
    out = []
    for ts, body in rows:
        try:
            event = json.loads(body)
        except (ValueError, TypeError):
            continue
        if not isinstance(event, dict) or str(event.get("symbol")) != symbol:
            continue
        stamp = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        # the platform's own text of the prices (a number sent as JSON number keeps its digits too)
        ms = to_ms(stamp)
        out.append({"at": stamp, "ms": ms, "at_text": ms_text(ms), "bid": str(event.get("bid")),
                    "ask": str(event.get("ask"))})
    return out


def _gap(side: str, fill: str, bid: str, ask: str) -> str | None:
    """The fill's gap in the trader's favour against a quote, exactly, in the prices' own digits."""
    price, b, a = _dec(fill), _dec(bid), _dec(ask)
    if price is None or b is None or a is None:
        return None
    return str(a - price) if side == "buy" else str(price - b)


def latency_fills(session: Session, *, firm_id: str, case: Case) -> dict[str, Any] | None:
    """The latency case's fills (the stale ones first, as the evidence lists them), each with the stored
    ``price`` events of its symbol from 30 s before to 15 s after the fill."""
    evidence = case.evidence if isinstance(case.evidence, dict) else {}
    if case.detector != "latency" or not isinstance(evidence.get("trades"), list):
        return None
    fills = []
    for k, trade in enumerate(evidence["trades"], 1):
        if not isinstance(trade, dict):
            continue
        seg = _segment(trade)
        ref = trade.get("reference_at_fill") if isinstance(trade.get("reference_at_fill"), dict) else None
        fill = {"n": k, **seg, "order_at": trade.get("order_at"), "order_ms": to_ms(trade.get("order_at")),
                "filled_text": ms_text(seg["start"]), "order_text": ms_text(to_ms(trade.get("order_at"))),
                "reference": ref, "gap_evidence": trade.get("gap_in_traders_favour"),
                "gap_spreads": trade.get("gap_spreads"), "slippage": trade.get("slippage_from_order_time"),
                "quotes": [], "gap_exact": None, "charted": False}
        if seg["start"] is not None and k <= MAX_LATENCY_FILLS:
            at = dt.datetime.fromtimestamp(seg["start"] / 1000, UTC)
            lo = at - QUOTES_BEFORE
            if fill["order_ms"] is not None:
                lo = min(lo, dt.datetime.fromtimestamp(fill["order_ms"] / 1000, UTC) - dt.timedelta(seconds=5))
            quotes = _quotes(session, firm_id, seg["symbol"], lo, at + QUOTES_AFTER)
            ref_ms = to_ms(ref.get("at")) if ref else None
            last_before_order = None
            for q in quotes:
                q["at_fill"] = ref_ms is not None and q["ms"] == ref_ms
                q["after_fill"] = q["ms"] > seg["start"]
                if fill["order_ms"] is not None and q["ms"] <= fill["order_ms"]:
                    last_before_order = q
                q["at_order"] = False
            if last_before_order is not None:
                last_before_order["at_order"] = True
            at_fill = next((q for q in quotes if q["at_fill"]), None)
            if at_fill is not None:
                fill["gap_exact"] = _gap(seg["side"], seg["open_price"], at_fill["bid"], at_fill["ask"])
                fill["ref_bid"], fill["ref_ask"] = at_fill["bid"], at_fill["ask"]
            fill["quotes"], fill["charted"] = quotes, True
        fills.append(fill)
    chart = [{"n": f["n"], "symbol": f["symbol"], "side": f["side"], "fill_ms": f["start"], "fill": f["open_price"],
              "order_ms": f["order_ms"], "quotes": [{"ms": q["ms"], "bid": q["bid"], "ask": q["ask"]} for q in f["quotes"]]}
             for f in fills if f["charted"]]
    keys = ("reasons", "stale_fills", "fills_with_reference", "stale_share", "win_rate_on_stale", "win_rate",
            "closed_trades", "median_hold_s", "favourable_slippage_share")
    return {"fills": fills, "chart": chart, **{k: evidence.get(k) for k in keys}}


# --------------------------------------------------------------------------------------------------
# one case


@dataclass
class CaseDetail:
    case: Case
    view: dict[str, Any]
    kind: str
    members: list[m.Account]
    assignee: dict[str, Any] | None
    assignable: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    graph: Graph
    matched: dict[str, Any] | None
    latency: dict[str, Any] | None
    risks: list[dict[str, Any]]
    transitions: list[tuple[str, str]]
    extra: dict[str, Any] = field(default_factory=dict)


_ASSIGNED = re.compile(r"^assigned to user (\d+)$")


def case_detail(session: Session, *, firm_id: str, case_id: int) -> CaseDetail:
    case = case_service.get_case(session, firm_id=firm_id, case_id=case_id)  # NotFound for another firm's case
    view = case_service.case_view(session, case)
    members = case_service.case_accounts(session, case)
    staff = list(session.scalars(select(m.User).where(m.User.firm_id == firm_id, or_(
        m.User.role.in_(("admin", "risk")), m.User.id.in_({n["author_user_id"] for n in view["notes"]
                                                           if n["author_user_id"]} | {case.assigned_user_id or 0})))
        .order_by(m.User.email)))
    emails = {u.id: u.email for u in staff}
    assignable = [{"id": u.id, "email": u.email, "role": u.role} for u in staff
                  if u.active and u.role in ("admin", "risk")]
    timeline = []
    for note in view["notes"]:
        text = note["text"]
        found = _ASSIGNED.match(text) if note["kind"] == "assign" else None
        if found and int(found.group(1)) in emails:
            text = f"assigned to {emails[int(found.group(1))]}"
        timeline.append({**note, "text": text,
                         "author": emails.get(note["author_user_id"], f"user {note['author_user_id']}")
                         if note["author_user_id"] else "the analysis"})
    risks = []
    for account in members[:MAX_RISK_ACCOUNTS]:
        risk = analysis_service.account_risk(session, firm_id=firm_id, account_id=account.id)
        explanation = risk["explanation"] if isinstance(risk["explanation"], dict) else {}
        risks.append({"account_id": account.id, "external_id": account.external_id, "score": risk["score"],
                      "computed_at": risk["computed_at"], "top": explanation.get("top") or [],
                      "detectors": explanation.get("detectors") or [],
                      "features": [{"name": name, **f} for name, f in (explanation.get("features") or {}).items()
                                   if isinstance(f, dict)],
                      "other_cases": [c for c in risk["open_cases"] if c["id"] != case.id]})
    extra: dict[str, Any] = {}
    evidence = case.evidence if isinstance(case.evidence, dict) else {}
    if case.detector == "martingale" and isinstance(evidence.get("steps"), list):
        extra["steps"] = [s for s in evidence["steps"] if isinstance(s, dict)]
    if case.detector == "linkage":
        extra["people"] = evidence.get("people") or []
    return CaseDetail(
        case=case, view=view, kind=KIND_LABELS.get(case.detector, case.detector), members=members,
        assignee={"id": case.assigned_user_id, "email": emails.get(case.assigned_user_id, f"user {case.assigned_user_id}")}
        if case.assigned_user_id else None,
        assignable=assignable, timeline=timeline,
        graph=linked_graph(session, firm_id=firm_id, case=case, members=members),
        matched=matched_trades(case), latency=latency_fills(session, firm_id=firm_id, case=case), risks=risks,
        transitions=[(s, TRANSITION_LABELS.get(s, s)) for s in view["allowed_transitions"]], extra=extra)


__all__ = ["KIND_LABELS", "STATUS_FILTERS", "STATUS_LABELS", "CaseDetail", "CaseList", "Graph", "case_detail",
           "case_list", "latency_fills", "linked_graph", "matched_trades", "to_ms"]
