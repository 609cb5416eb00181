"""The detectors: linkage, cross-account hedging, copy trading, latency abuse, martingale sizing.

Each returns :class:`Finding` s — the accounts, a strength 0–100, a one-line title, and the evidence a
risk officer shows a trader in a dispute (the exact trades, times, prices, sizes and P/L). Thresholds
live in :class:`AnalysisConfig`; ``docs/analytics.md`` says why each has its default.

Scaling: nothing compares every pair of accounts. Trades are sorted once by a bucket key (symbol group,
side, size bin) and time, and each trade is compared only with the trades after it in the same bucket
and inside the time window (a vectorised sweep over offsets that stops when no trade has a neighbour
left). Ratios, similarity scores and gaps are floats (statistics); money in evidence is exact.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec
import numpy as np

from .frame import TradeFrame, iso, money_text, unique

DETECTORS = ("linkage", "hedging", "copy", "latency", "martingale")


class AnalysisConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds of every detector (a JSON/YAML object of these names overrides the defaults)."""

    # candidate generation for hedging and copy (see find_pairs): each trade is compared with at most this
    # many following trades of its bucket; an account pair needs this many such coincidences to be checked
    # exactly, over all of both accounts' trades
    candidate_neighbours: int = 16
    candidate_min_cooccurrence: int = 3
    candidate_min_share: float = 0.15  # of the smaller account's trades
    # a pair is flagged only when its coincidences are unlikely by chance, given how crowded the minutes of
    # its trades were: P(≥ matched | expected) × pairs of accounts in the firm ≤ chance_alpha
    chance_alpha: float = 0.01
    # linkage
    link_max_accounts_per_value: int = 12  # a value shared by more accounts is a NAT/VPN/shared office: not a link
    # hedging
    hedge_window_s: float = 30.0
    hedge_lot_tolerance: float = 0.25  # larger/smaller lots ≤ 1.25
    hedge_min_matches: int = 3
    hedge_min_share: float = 0.5  # of the smaller account's trades
    correlated: tuple[tuple[tuple[str, int], ...], ...] = ()  # groups of (symbol, +1 | -1) that move together
    # copy trading
    copy_window_s: float = 3.0
    copy_ratio_tolerance: float = 0.2  # each size ratio within ±20% of the pair's median ratio
    copy_min_matches: int = 5
    copy_min_share: float = 0.6
    copy_min_consistency: float = 0.8
    # latency / execution
    latency_min_gap_spreads: float = 1.0  # fill better than the reference by at least one spread
    latency_min_stale: int = 5
    latency_min_stale_share: float = 0.3
    latency_min_win_rate: float = 0.7
    latency_quick_min_trades: int = 20  # very short holds with a very high win rate, quotes or not
    latency_quick_min_win_rate: float = 0.9
    latency_quick_max_hold_s: float = 60.0
    latency_slippage_min_fills: int = 10  # asymmetric slippage: fills that slipped, nearly all in the trader's favour
    latency_slippage_min_share: float = 0.9  # and unlikely for fair fills: P × accounts ≤ chance_alpha
    # martingale
    martingale_min_ratio: float = 1.8  # median next/previous lots after a losing trade
    martingale_min_steps: int = 6  # losing trades followed by another trade (below the account's largest size)
    martingale_min_escalated: float = 0.8  # share of those followed by lots ≥ 1.5×
    martingale_min_consistency: float = 0.7  # share of the multipliers within ±25% of their median
    # how many matched trades the evidence lists per pair
    evidence_limit: int = 50


@dataclass
class Finding:
    detector: str
    accounts: tuple[str, ...]
    score: int
    title: str
    evidence: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        members = ",".join(self.accounts)
        text = f"{self.detector}:{members}"
        return text if len(text) <= 200 else f"{self.detector}:sha256:{hashlib.sha256(members.encode()).hexdigest()}"

    def to_dict(self) -> dict:
        return {"detector": self.detector, "accounts": list(self.accounts), "score": self.score, "title": self.title,
                "fingerprint": self.fingerprint, "evidence": self.evidence}


# --------------------------------------------------------------------------------------------------
# helpers


class _Union:
    def __init__(self) -> None:
        self.parent: dict = {}

    def find(self, x):
        parent = self.parent
        root = parent.setdefault(x, x)
        while root != parent[root]:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra > rb:
                ra, rb = rb, ra
            self.parent[rb] = ra

    def groups(self) -> list[list]:
        out = defaultdict(list)
        for x in self.parent:
            out[self.find(x)].append(x)
        return [sorted(g) for g in out.values() if len(g) > 1]


def _composite(key: np.ndarray, t: np.ndarray) -> np.ndarray | None:
    """``key`` and ``t`` packed in one int64 (key in the high bits), or None when they do not fit."""
    if not t.size:
        return np.zeros(0, np.int64)
    span = int(t.max() - t.min())
    low, high = int(key.min()), int(key.max())
    if low < 0 or span >= 1 << 38 or high >= 1 << 24:
        return None
    return key.astype(np.int64) << 38 | (t - t.min())


def _sort_by_key_and_time(key: np.ndarray, t: np.ndarray) -> np.ndarray:
    packed = _composite(key, t)
    return np.lexsort((t, key)) if packed is None else np.argsort(packed, kind="stable")


def window_pairs(key: np.ndarray, t: np.ndarray, window: int, *, max_offset: int = 100_000,
                 columns: dict[str, np.ndarray] | None = None, accept=None) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i, j) with equal ``key`` and ``0 <= t[j] - t[i] <= window`` (each unordered pair once).

    Sorts once by (key, t); then for offset 1, 2, … compares each row with the row that far ahead as two
    contiguous slices of the sorted columns (no gathers). Sorted by (key, t), a row whose neighbour at
    offset o is in the same bucket and window has all nearer neighbours there too, so the sweep stops at
    the first offset where no row qualifies. ``accept(lo, hi)`` may refine each offset's matches from
    ``columns`` (dicts of the sorted slices of the earlier and the later row).
    """
    n = key.size
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = _sort_by_key_and_time(key, t)
    k, tt = key[order], t[order]
    sorted_columns = {name: array[order] for name, array in (columns or {}).items()}
    out_i, out_j = [], []
    for offset in range(1, min(max_offset, n - 1) + 1):
        ok = (k[offset:] == k[:-offset]) & (tt[offset:] - tt[:-offset] <= window)
        if not ok.any():
            break
        if accept is not None:
            lo = {name: col[:-offset] for name, col in sorted_columns.items()}
            hi = {name: col[offset:] for name, col in sorted_columns.items()}
            ok &= accept(lo, hi)
        idx = np.flatnonzero(ok)
        out_i.append(order[idx])
        out_j.append(order[idx + offset])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)


def _canonical(frame: TradeFrame, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each pair so that the first row is the lower account *by name* (relabelling-invariant)."""
    rank = _name_rank(frame)
    swap = rank[frame.acc[i]] > rank[frame.acc[j]]
    return np.where(swap, j, i), np.where(swap, i, j)


def _name_rank(frame: TradeFrame) -> np.ndarray:
    names = np.asarray(frame.accounts, dtype=object)
    rank = np.empty(len(names), np.int64)
    rank[np.argsort(names, kind="stable")] = np.arange(len(names))
    return rank


def _candidate_pairs(frame: TradeFrame, i: np.ndarray, j: np.ndarray, min_matches: int):
    """Keep pairs of accounts with at least ``min_matches`` distinct matched trades on both sides.

    Returns the kept (i, j) rows, their pair key, and per pair key the distinct counts.
    """
    n_acc = len(frame.accounts)
    a, b = frame.acc[i].astype(np.int64), frame.acc[j].astype(np.int64)
    pk = a * n_acc + b
    keys, counts = unique(pk, counts=True)
    busy = keys[counts >= min_matches]
    keep = np.isin(pk, busy)
    i, j, pk = i[keep], j[keep], pk[keep]
    if not pk.size:
        return i, j, pk, {}
    distinct = {}
    for rows in (i, j):
        order = np.lexsort((rows, pk))
        ps, rs = pk[order], rows[order]
        new = np.r_[True, (ps[1:] != ps[:-1]) | (rs[1:] != rs[:-1])]
        u, c = unique(ps[new], counts=True)
        for key, count in zip(u.tolist(), c.tolist()):
            distinct.setdefault(key, []).append(count)
    return i, j, pk, {k: min(v) if len(v) == 2 else 0 for k, v in distinct.items()}


def _greedy_one_to_one(frame: TradeFrame, i: np.ndarray, j: np.ndarray) -> list[tuple[int, int]]:
    """Match trades one to one, closest in time first (ties by time and position id: order-free)."""
    gap = np.abs(frame.open_ms[j] - frame.open_ms[i])
    first = np.minimum(frame.open_ms[i], frame.open_ms[j])
    order = sorted(range(i.size), key=lambda k: (int(gap[k]), int(first[k]), float(frame.lots[i[k]] + frame.lots[j[k]])))
    used_i, used_j, out = set(), set(), []
    for k in order:
        x, y = int(i[k]), int(j[k])
        if x in used_i or y in used_j:
            continue
        used_i.add(x)
        used_j.add(y)
        out.append((x, y))
    out.sort(key=lambda p: (int(frame.open_ms[p[0]]), frame.position_of(p[0])))
    return out


def _pair_groups(pairs: list[tuple[str, str]]) -> list[list[str]]:
    union = _Union()
    for a, b in pairs:
        union.union(a, b)
    return sorted(union.groups())


def background(key: np.ndarray, query: np.ndarray, t: np.ndarray, window: int) -> np.ndarray:
    """For each trade: how many trades with bucket ``key == query[i]`` opened within ±window of it."""
    if not t.size:
        return np.zeros(0, np.int64)
    both = np.concatenate([key, query])
    if int(both.min()) < 0 or int(both.max()) >= 1 << 24 or int(t.max() - t.min()) >= 1 << 38:
        _values, inverse = np.unique(both, return_inverse=True)  # ranks: small enough to pack
        key, query = inverse[: key.size].astype(np.int64), inverse[key.size:].astype(np.int64)
    base = t - t.min()
    comp = np.sort(key.astype(np.int64) << 38 | base)
    probe = query.astype(np.int64) << 38 | base
    order = np.argsort(probe, kind="stable")  # sorted probes: searchsorted walks the array once
    sorted_probe = probe[order]
    out = np.empty(t.size, np.int64)
    out[order] = (np.searchsorted(comp, sorted_probe + window, side="right")
                  - np.searchsorted(comp, sorted_probe - window, side="left"))
    return out


def poisson_tail(matched: int, mean: float) -> float:
    """P(X ≥ matched) for X ~ Poisson(mean): how likely that many coincidences are by chance."""
    if matched <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    if mean >= matched:
        head, term = 0.0, math.exp(-mean)
        for k in range(matched):
            head += term
            term *= mean / (k + 1)
        return max(0.0, 1.0 - head)
    log_term = -mean + matched * math.log(mean) - math.lgamma(matched + 1)
    total, k = 0.0, matched
    while True:
        total += math.exp(log_term)
        k += 1
        log_term += math.log(mean) - math.log(k)
        if log_term < math.log(total) - 40 or k > matched + 1000:
            return min(1.0, total)


def binomial_tail(k: int, n: int, p: float = 0.5) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
            for i in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs))


class _Chance:
    """Expected coincidences of a pair of accounts if they traded independently in the same crowd."""

    def __init__(self, frame: TradeFrame, crowd: np.ndarray) -> None:
        n_acc = len(frame.accounts)
        self.trades = np.bincount(frame.acc, minlength=n_acc).astype(np.float64)
        self.crowd = np.bincount(frame.acc, weights=crowd, minlength=n_acc)
        self.total = max(float(frame.n), 1.0)
        active = int(np.count_nonzero(self.trades))
        self.pairs = max(active * (active - 1) // 2, 1)

    def judge(self, a: int, b: int, matched: int, alpha: float) -> tuple[bool, dict]:
        # the crowd around a's trades, less the matched trades of b themselves (they are what is judged)
        crowd_a, crowd_b = max(self.crowd[a] - matched, 0.0), max(self.crowd[b] - matched, 0.0)
        expected = max(self.trades[b] * crowd_a, self.trades[a] * crowd_b) / self.total
        p = poisson_tail(matched, expected)
        return p * self.pairs <= alpha, {"expected_by_chance": round(expected, 4), "chance_p": float(f"{p:.3g}"),
                                         "account_pairs_in_firm": self.pairs}


# --------------------------------------------------------------------------------------------------
# linkage


def find_linkage(frame: TradeFrame, config: AnalysisConfig) -> tuple[list[dict], list[Finding]]:
    """Links (pairs of accounts sharing a value) and the clusters of more than one person's accounts."""
    seen: dict[tuple[str, str], dict[int, list[int]]] = defaultdict(dict)  # (via, value) -> account -> [first, last, n]
    acc = frame.session_acc.tolist()
    ms = frame.session_ms.tolist()
    for via, values in (("ip", frame.session_ip), ("device", frame.session_device)):
        for a, t, value in zip(acc, ms, values):
            if not value:
                continue
            slot = seen[(via, value)].get(a)
            if slot is None:
                seen[(via, value)][a] = [t, t, 1]
            else:
                slot[0] = min(slot[0], t)
                slot[1] = max(slot[1], t)
                slot[2] += 1
    for a, trader in frame.trader_of.items():
        seen[("trader", trader)][a] = [-1, -1, 0]
    for a, payments in frame.payments_of.items():
        for payment in payments:
            seen[("payment", payment)][a] = [-1, -1, 0]
    links, crowded = [], []
    union = _Union()
    names = frame.accounts
    for (via, value), members in sorted(seen.items()):
        if len(members) < 2:
            continue
        if len(members) > config.link_max_accounts_per_value and via in ("ip", "device"):
            crowded.append({"via": via, "value": value, "accounts": len(members)})
            continue
        ordered = sorted(members, key=lambda a: names[a])
        for x in range(len(ordered)):
            for y in range(x + 1, len(ordered)):
                a, b = ordered[x], ordered[y]
                sa, sb = members[a], members[b]
                link = {"account_a": names[a], "account_b": names[b], "via": via, "value": value,
                        "first_seen": iso(max(sa[0], sb[0])) if sa[0] >= 0 else None,
                        "last_seen": iso(max(sa[1], sb[1])) if sa[1] >= 0 else None,
                        "seen": {names[a]: sa[2], names[b]: sb[2]}}
                links.append(link)
                union.union(names[a], names[b])
    identity = {names[a]: f"trader:{t}" for a, t in frame.trader_of.items()}
    findings = []
    for group in union.groups():
        people = {identity.get(name, f"account:{name}") for name in group}
        if len(people) < 2:
            continue  # one person's own accounts, linked only by what they share with themselves
        members = set(group)
        evidence_links = [link for link in links if link["account_a"] in members]
        vias = sorted({link["via"] for link in evidence_links})
        strength = min(100, 40 + 15 * len(vias) + 5 * (len(group) - 2))
        findings.append(Finding(
            "linkage", tuple(group), strength,
            f"{len(group)} accounts of {len(people)} apparently different traders share {', '.join(vias)}",
            {"links": evidence_links[: config.evidence_limit * 4], "people": sorted(people)},
        ))
    findings.sort(key=lambda f: f.accounts)
    return links, findings


# --------------------------------------------------------------------------------------------------
# hedging


def _symbol_groups(frame: TradeFrame, config: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    group = np.arange(len(frame.symbols), dtype=np.int64)
    sign = np.ones(len(frame.symbols), dtype=np.int8)
    index = {s: i for i, s in enumerate(frame.symbols)}
    for g, members in enumerate(config.correlated):
        present = [(index[s], sg) for s, sg in members if s in index]
        for s, sg in present:
            group[s] = len(frame.symbols) + g
            sign[s] = 1 if sg >= 0 else -1
    return group, sign


def _account_rows(frame: TradeFrame) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(frame.acc, kind="stable")
    start = np.r_[0, np.cumsum(np.bincount(frame.acc, minlength=len(frame.accounts)))]
    return order, start


@dataclass
class Buckets:
    """How a detector compares trades: bucket keys (one per grid), the window, and the test on sorted slices."""

    keys: list[np.ndarray]
    window: int
    columns: dict[str, np.ndarray]
    accept_sorted: object
    accept: object  # the same test on row indices


def hedging_buckets(frame: TradeFrame, config: AnalysisConfig) -> Buckets:
    group, sign = _symbol_groups(frame, config)
    g = group[frame.sym]
    direction = frame.side * sign[frame.sym]
    level = np.log(frame.lots) / (2 * math.log1p(config.hedge_lot_tolerance))
    limit = 1 + config.hedge_lot_tolerance + 1e-9

    def accept(i, j):
        ratio = np.maximum(frame.lots[i], frame.lots[j]) / np.minimum(frame.lots[i], frame.lots[j])
        return (frame.acc[i] != frame.acc[j]) & (g[i] == g[j]) & (direction[i] != direction[j]) & (ratio <= limit)

    def accept_sorted(lo, hi):  # the same test on sorted slices (same bucket, so the same symbol group)
        ratio = np.maximum(lo["lots"], hi["lots"]) / np.minimum(lo["lots"], hi["lots"])
        return (lo["acc"] != hi["acc"]) & (lo["direction"] != hi["direction"]) & (ratio <= limit)

    # two size grids: any two sizes within the tolerance share a bin in one of them
    keys = [g * 100_000 + np.floor(level + shift).astype(np.int64) + 10_000 for shift in (0.0, 0.5)]
    return Buckets(keys, int(config.hedge_window_s * 1000), {"acc": frame.acc, "direction": direction, "lots": frame.lots},
                   accept_sorted, accept)


def copy_buckets(frame: TradeFrame, config: AnalysisConfig) -> Buckets:
    def accept(i, j):
        return (frame.acc[i] != frame.acc[j]) & (frame.sym[i] == frame.sym[j]) & (frame.side[i] == frame.side[j])

    return Buckets([frame.sym.astype(np.int64) * 2 + (frame.side > 0)], int(config.copy_window_s * 1000),
                   {"acc": frame.acc}, lambda lo, hi: lo["acc"] != hi["acc"], accept)


def stage1_rows(frame: TradeFrame, buckets: Buckets, config: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    """Trade pairs among each trade's ``candidate_neighbours`` following trades of its bucket (each pair once)."""
    found = []
    for key in buckets.keys:
        i, j = window_pairs(key, frame.open_ms, buckets.window, max_offset=config.candidate_neighbours,
                            columns=buckets.columns, accept=buckets.accept_sorted)
        found.append(np.minimum(i, j) * frame.n + np.maximum(i, j))
    rows = unique(np.concatenate(found)) if found else np.zeros(0, np.int64)  # a trade pair once, in any grid
    return rows // max(frame.n, 1), rows % max(frame.n, 1)


def stage1_counts(frame: TradeFrame, buckets: Buckets, config: AnalysisConfig, label: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Coincidences per pair of accounts (key a·n + b, a < b) in stage 1."""
    n_acc = len(frame.accounts)
    i, j = stage1_rows(frame, buckets, config)
    a, b = frame.acc[i].astype(np.int64), frame.acc[j].astype(np.int64)
    pk, counts = unique(np.minimum(a, b) * n_acc + np.maximum(a, b), counts=True)
    if label:  # kept for incremental analysis: pairs already coinciding twice need one more to be candidates
        frame.__dict__.setdefault("_stage1", {})[label] = (pk[counts >= 2], counts[counts >= 2])
    return pk, counts


def find_pairs(frame: TradeFrame, buckets: Buckets, config: AnalysisConfig, *, label: str = "",
               chunk: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Every trade pair the buckets accept, between accounts that coincide repeatedly — without comparing all pairs.

    Stage 1 (candidates): trades sorted by a bucket key and time; each is compared with at most
    ``candidate_neighbours`` following trades of its bucket inside the window. Account pairs with
    ``candidate_min_cooccurrence`` accepted coincidences, and at least ``candidate_min_share`` of the
    smaller account's trades, are candidates. In a crowd (everyone on EURUSD
    at the London open) a trade's partner may be further away than that, but a pair that trades
    together repeatedly coincides outside the crowd as well.
    Stage 2 (exact): all trades of each candidate pair of accounts are compared (no neighbour limit),
    so the matched trades and shares are exact.
    """
    n_acc = len(frame.accounts)
    window, accept = buckets.window, buckets.accept
    pk, counts = stage1_counts(frame, buckets, config, label)
    trades = np.bincount(frame.acc, minlength=n_acc)
    smaller = np.minimum(trades[pk // n_acc], trades[pk % n_acc])
    pk = pk[(counts >= config.candidate_min_cooccurrence) & (counts >= config.candidate_min_share * smaller)]
    if not pk.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order, start = _account_rows(frame)
    a, b = pk // n_acc, pk % n_acc
    la, lb = start[a + 1] - start[a], start[b + 1] - start[b]
    combos = la * lb
    out_i, out_j = [], []
    first = 0
    while first < pk.size:
        last = first + max(1, int(np.searchsorted(np.cumsum(combos[first:]), chunk, side="right")))
        sel = slice(first, last)
        total = int(combos[sel].sum())
        pair = np.repeat(np.arange(last - first), combos[sel])
        local = np.arange(total) - np.repeat(np.r_[0, np.cumsum(combos[sel])[:-1]], combos[sel])
        width = lb[sel][pair]
        i = order[start[a[sel][pair]] + local // width]
        j = order[start[b[sel][pair]] + local % width]
        ok = (np.abs(frame.open_ms[i] - frame.open_ms[j]) <= window) & accept(i, j)
        out_i.append(i[ok])
        out_j.append(j[ok])
        first = last
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)


def find_hedging(frame: TradeFrame, config: AnalysisConfig) -> list[Finding]:
    """Accounts that repeatedly open opposite positions of similar size on one (or a correlated) symbol."""
    if frame.n < 2:
        return []
    group, sign = _symbol_groups(frame, config)
    g = group[frame.sym]
    direction = frame.side * sign[frame.sym]
    level = np.log(frame.lots) / (2 * math.log1p(config.hedge_lot_tolerance))
    window = int(config.hedge_window_s * 1000)
    i, j = find_pairs(frame, hedging_buckets(frame, config), config, label="hedging")
    if not i.size:
        return []
    i, j = _canonical(frame, i, j)
    i, j, pk, matched = _candidate_pairs(frame, i, j, config.hedge_min_matches)
    counts = np.bincount(frame.acc, minlength=len(frame.accounts))
    bucket = g * 100_000 + (np.floor(level).astype(np.int64) + 10_000) * 2
    chance = _Chance(frame, background(bucket + (direction > 0), bucket + (direction < 0), frame.open_ms, window))
    flagged: list[tuple[str, str]] = []
    details = {}
    for key, m in matched.items():
        a, b = divmod(key, len(frame.accounts))
        smaller = min(counts[a], counts[b])
        if m < config.hedge_min_matches or m / smaller < config.hedge_min_share:
            continue
        rows = pk == key
        pairs = _greedy_one_to_one(frame, i[rows], j[rows])
        if len(pairs) < config.hedge_min_matches or len(pairs) / smaller < config.hedge_min_share:
            continue
        unlikely, odds = chance.judge(a, b, len(pairs), config.chance_alpha)
        if not unlikely:
            continue
        names = (frame.accounts[a], frame.accounts[b])
        flagged.append(names)
        details[names] = (pairs, len(pairs) / smaller, odds)
    frame.prefetch(r for pairs, _share, _odds in details.values() for p in pairs[: config.evidence_limit] for r in p)
    findings = []
    for members in _pair_groups(flagged):
        member_set = set(members)
        pair_evidence, all_rows, shares = [], [], []
        for names, (pairs, share, odds) in sorted(details.items()):
            if names[0] not in member_set:
                continue
            shares.append(share)
            rows = [r for p in pairs for r in p]
            all_rows.extend(rows)
            pair_evidence.append({
                "accounts": list(names), "matched": len(pairs), "share_of_smaller_account": round(share, 3), **odds,
                "combined_profit": money_text(sum(int(frame.profit_e8[r]) for r in rows)),
                "net_exposure": _net_exposure(frame, rows),
                "trades": [{"a": frame.trade_evidence(x), "b": frame.trade_evidence(y),
                            "gap_s": round(abs(int(frame.open_ms[y]) - int(frame.open_ms[x])) / 1000, 3)}
                           for x, y in pairs[: config.evidence_limit]],
            })
        strength = int(min(100, 50 + 50 * float(np.mean(shares))))
        combined = money_text(sum(int(frame.profit_e8[r]) for r in set(all_rows)))
        findings.append(Finding(
            "hedging", tuple(members), strength,
            f"{len(members)} accounts hold opposite positions of similar size: "
            f"{sum(p['matched'] for p in pair_evidence)} matched trades, combined P/L {combined}",
            {"pairs": pair_evidence, "combined_profit": combined, "net_exposure": _net_exposure(frame, sorted(set(all_rows)))},
        ))
    findings.sort(key=lambda f: f.accounts)
    return findings


def _net_exposure(frame: TradeFrame, rows: list[int]) -> dict[str, str]:
    """Signed lots per symbol over the matched trades (near zero: the accounts cancel each other)."""
    out: dict[str, Decimal] = defaultdict(Decimal)
    for r in rows:
        out[frame.symbols[frame.sym[r]]] += int(frame.side[r]) * Decimal(frame.lots_of(r))
    return {s: _lots_text(v) for s, v in sorted(out.items())}


def _lots_text(value: Decimal) -> str:
    return "0" if value == 0 else format(value.normalize(), "f")


# --------------------------------------------------------------------------------------------------
# copy trading


def find_copy(frame: TradeFrame, config: AnalysisConfig) -> list[Finding]:
    """Groups of accounts that open the same symbol and side within seconds, at consistent size ratios."""
    if frame.n < 2:
        return []
    key = frame.sym.astype(np.int64) * 2 + (frame.side > 0)
    window = int(config.copy_window_s * 1000)
    i, j = find_pairs(frame, copy_buckets(frame, config), config, label="copy")
    i, j = _canonical(frame, i, j)
    i, j, pk, matched = _candidate_pairs(frame, i, j, config.copy_min_matches)
    counts = np.bincount(frame.acc, minlength=len(frame.accounts))
    chance = _Chance(frame, background(key, key, frame.open_ms, window) - 1) if matched else None
    flagged, details = [], {}
    for key_value, m in matched.items():
        a, b = divmod(key_value, len(frame.accounts))
        smaller = min(counts[a], counts[b])
        if m < config.copy_min_matches or m / smaller < config.copy_min_share:
            continue
        rows = pk == key_value
        pairs = _greedy_one_to_one(frame, i[rows], j[rows])
        share = len(pairs) / smaller
        if len(pairs) < config.copy_min_matches or share < config.copy_min_share:
            continue
        ratio = np.array([frame.lots[y] / frame.lots[x] for x, y in pairs])
        median = float(np.median(ratio))
        # symmetric in the two accounts: |log(ratio / median)| within log(1 + tolerance)
        consistent = float(np.mean(np.abs(np.log(ratio / median)) <= math.log1p(config.copy_ratio_tolerance) + 1e-9))
        if consistent < config.copy_min_consistency:
            continue
        unlikely, odds = chance.judge(a, b, len(pairs), config.chance_alpha)
        if not unlikely:
            continue
        names = (frame.accounts[a], frame.accounts[b])
        lead = sum(1 if frame.open_ms[x] < frame.open_ms[y] else -1 if frame.open_ms[y] < frame.open_ms[x] else 0
                   for x, y in pairs)
        flagged.append(names)
        details[names] = {"pairs": pairs, "share": share, "consistency": consistent, "ratio": median, "lead": lead,
                          "similarity": share * consistent, "odds": odds}
    frame.prefetch(r for d in details.values() for p in d["pairs"][: config.evidence_limit] for r in p)
    findings = []
    for members in _pair_groups(flagged):
        member_set = set(members)
        evidence, sims = [], []
        for names, d in sorted(details.items()):
            if names[0] not in member_set:
                continue
            sims.append(d["similarity"])
            evidence.append({
                "accounts": list(names), "matched": len(d["pairs"]), "similarity": round(d["similarity"], 3),
                "share_of_smaller_account": round(d["share"], 3), "size_ratio_median": round(d["ratio"], 4),
                "size_ratio_consistency": round(d["consistency"], 3), **d["odds"],
                "usually_first": names[0] if d["lead"] > 0 else names[1] if d["lead"] < 0 else None,
                "trades": [{"a": frame.trade_evidence(x), "b": frame.trade_evidence(y),
                            "gap_s": round((int(frame.open_ms[y]) - int(frame.open_ms[x])) / 1000, 3)}
                           for x, y in d["pairs"][: config.evidence_limit]],
            })
        similarity = float(np.mean(sims))
        findings.append(Finding(
            "copy", tuple(members), int(round(100 * similarity)),
            f"{len(members)} accounts trade the same signals (similarity {similarity:.2f}, "
            f"{sum(e['matched'] for e in evidence)} matched trades)",
            {"similarity": round(similarity, 3), "pairs": evidence},
        ))
    findings.sort(key=lambda f: f.accounts)
    return findings


# --------------------------------------------------------------------------------------------------
# latency and execution


def quote_at(frame: TradeFrame, sym: np.ndarray, ms: np.ndarray) -> np.ndarray:
    """Index of the last reference quote of ``sym`` at or before ``ms`` (-1: none)."""
    if not frame.quote_ms.size:
        return np.full(sym.size, -1, np.int64)
    qkey = frame.quote_sym.astype(np.int64) << 42 | frame.quote_ms
    probe = sym.astype(np.int64) << 42 | ms
    order = np.argsort(probe, kind="stable")
    idx = np.empty(sym.size, np.int64)
    idx[order] = np.searchsorted(qkey, probe[order], side="right") - 1
    ok = idx >= 0
    ok[ok] = frame.quote_sym[idx[ok]] == sym[ok]
    return np.where(ok, idx, -1)


def execution_columns(frame: TradeFrame) -> dict[str, np.ndarray]:
    """Per trade: the favourable gap to the reference at the fill, in spreads, and the slippage from the order time."""
    q_fill = quote_at(frame, frame.sym, frame.open_ms)
    q_order = quote_at(frame, frame.sym, frame.order_ms)
    has = (q_fill >= 0) & (q_order >= 0)
    qf, qo = np.where(has, q_fill, 0), np.where(has, q_order, 0)
    buy = frame.side > 0
    ref_fill = np.where(buy, frame.quote_ask[qf] if qf.size else 0, frame.quote_bid[qf] if qf.size else 0)
    ref_order = np.where(buy, frame.quote_ask[qo] if qo.size else 0, frame.quote_bid[qo] if qo.size else 0)
    spread = np.maximum((frame.quote_ask[qf] - frame.quote_bid[qf]) if qf.size else 0, 1e-12)
    favour = np.where(buy, ref_fill - frame.open_price, frame.open_price - ref_fill)  # > 0: better than the market
    slip = np.where(buy, ref_order - frame.open_price, frame.open_price - ref_order)
    return {"has": has, "gap_spreads": np.where(has, favour / spread, 0.0), "gap": np.where(has, favour, 0.0),
            "slip": np.where(has, slip, 0.0), "ref_fill": ref_fill, "q_fill": q_fill}


def find_latency(frame: TradeFrame, config: AnalysisConfig, columns: dict | None = None) -> list[Finding]:
    """Accounts filled at stale prices in their favour, winning nearly every very short trade, or slipping
    only ever in their favour — each with the trades and the price gaps."""
    if not frame.n:
        return []
    n_acc = len(frame.accounts)
    closed = frame.close_ms >= 0
    n_closed = np.bincount(frame.acc, weights=closed, minlength=n_acc)
    wins = np.bincount(frame.acc, weights=closed & (frame.profit_e8 > 0), minlength=n_acc)
    win_all = wins / np.maximum(n_closed, 1)
    if frame.quote_ms.size:
        cols = columns if columns is not None else execution_columns(frame)
    else:
        zeros = np.zeros(frame.n)
        cols = {"has": np.zeros(frame.n, bool), "gap_spreads": zeros, "gap": zeros, "slip": zeros,
                "q_fill": np.full(frame.n, -1)}
    stale = cols["has"] & (cols["gap_spreads"] >= config.latency_min_gap_spreads)
    n_ref = np.bincount(frame.acc, weights=cols["has"], minlength=n_acc)
    n_stale = np.bincount(frame.acc, weights=stale, minlength=n_acc)
    stale_wins = np.bincount(frame.acc, weights=stale & closed & (frame.profit_e8 > 0), minlength=n_acc)
    stale_closed = np.bincount(frame.acc, weights=stale & closed, minlength=n_acc)
    moved = cols["has"] & (np.abs(cols["slip"]) > 0)
    slip_good = np.bincount(frame.acc, weights=moved & (cols["slip"] > 0), minlength=n_acc)
    slip_any = np.bincount(frame.acc, weights=moved, minlength=n_acc)
    share = n_stale / np.maximum(n_ref, 1)
    win = stale_wins / np.maximum(stale_closed, 1)
    by_stale = (n_stale >= config.latency_min_stale) & (share >= config.latency_min_stale_share) & (
        win >= config.latency_min_win_rate)
    by_slippage = (slip_any >= config.latency_slippage_min_fills) & (
        slip_good >= config.latency_slippage_min_share * slip_any)
    active = max(int(np.count_nonzero(n_ref)), 1)
    for a in np.flatnonzero(by_slippage).tolist():  # as unlikely for fair fills (either way, even odds)
        by_slippage[a] = binomial_tail(int(slip_good[a]), int(slip_any[a])) * active <= config.chance_alpha
    quick = (n_closed >= config.latency_quick_min_trades) & (win_all >= config.latency_quick_min_win_rate)
    suspects = np.flatnonzero(by_stale | by_slippage | quick)
    rows_all = np.flatnonzero(np.isin(frame.acc, suspects))
    rows_all = rows_all[np.lexsort((frame.open_ms[rows_all], frame.acc[rows_all]))]
    bounds = np.searchsorted(frame.acc[rows_all], np.r_[suspects, n_acc]) if suspects.size else np.zeros(1, np.int64)
    findings = []
    for k, a in enumerate(suspects.tolist()):
        own = rows_all[bounds[k]:bounds[k + 1]]
        holds = (frame.close_ms[own] - frame.open_ms[own])[closed[own]] / 1000
        median_hold = float(np.median(holds)) if holds.size else None
        reasons = []
        if by_stale[a]:
            reasons.append(f"{int(n_stale[a])} of {int(n_ref[a])} fills at stale prices in the trader's favour "
                           f"(won {win[a]:.0%} of them)")
        if by_slippage[a]:
            reasons.append(f"slippage in the trader's favour on {int(slip_good[a])} of {int(slip_any[a])} fills "
                           "that slipped")
        if quick[a] and median_hold is not None and median_hold <= config.latency_quick_max_hold_s:
            reasons.append(f"won {win_all[a]:.0%} of {int(n_closed[a])} trades held {median_hold:.0f} s (median)")
        if not reasons:
            continue
        shown = own[stale[own]] if by_stale[a] else own[moved[own]] if by_slippage[a] else own
        shown = shown[: config.evidence_limit]
        frame.prefetch(shown.tolist())
        trades = []
        for r in shown.tolist():
            item = frame.trade_evidence(r)
            q = int(cols["q_fill"][r])
            if cols["has"][r] and q >= 0:
                item.update({"reference_at_fill": {"at": iso(frame.quote_ms[q]), "bid": _price(frame.quote_bid[q]),
                                                   "ask": _price(frame.quote_ask[q])},
                             "gap_in_traders_favour": _price(cols["gap"][r]),
                             "gap_spreads": round(float(cols["gap_spreads"][r]), 2),
                             "slippage_from_order_time": _price(cols["slip"][r])})
            trades.append(item)
        asym = float(slip_good[a] / slip_any[a]) if slip_any[a] else None
        strength = 40 + 60 * float(share[a]) if by_stale[a] else 60
        findings.append(Finding(
            "latency", (frame.accounts[a],), int(min(100, strength + 10 * (len(reasons) - 1))),
            "; ".join(reasons),
            {"reasons": reasons, "stale_fills": int(n_stale[a]), "fills_with_reference": int(n_ref[a]),
             "stale_share": round(float(share[a]), 3), "win_rate_on_stale": round(float(win[a]), 3),
             "win_rate": round(float(win_all[a]), 3), "closed_trades": int(n_closed[a]),
             "median_hold_s": round(median_hold, 1) if median_hold is not None else None,
             "favourable_slippage_share": round(asym, 3) if asym is not None else None, "trades": trades},
        ))
    findings.sort(key=lambda f: f.accounts)
    return findings


def _price(value: float) -> str:
    return f"{float(value):.10f}".rstrip("0").rstrip(".") or "0"


# --------------------------------------------------------------------------------------------------
# martingale (lot escalation after losses)


def escalation_columns(frame: TradeFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cached = frame.__dict__.get("_escalation")
    if cached is None or cached[0] is not frame.acc:
        cached = (frame.acc, _escalation_columns(frame))
        frame.__dict__["_escalation"] = cached
    return cached[1]


def _escalation_columns(frame: TradeFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each trade opened after the account's previous trade closed: (row, lots ÷ previous lots, previous lost).

    Only a trade opened once the previous one was closed can be a reaction to its result. A step from
    the account's largest size is left out: a martingale stops doubling at its cap (or the firm's limit).
    """
    order = frame.account_time_order()
    acc, lots, profit = frame.acc[order], frame.lots[order], frame.profit_e8[order]
    closed, opened = frame.close_ms[order], frame.open_ms[order]
    largest = np.zeros(len(frame.accounts))
    np.maximum.at(largest, frame.acc, frame.lots)
    after = (acc[1:] == acc[:-1]) & (closed[:-1] >= 0) & (closed[:-1] <= opened[1:]) & (lots[:-1] < largest[acc[:-1]])
    rows = order[1:][after]
    ratio = (lots[1:] / lots[:-1])[after]
    lost = (profit[:-1] < 0)[after]
    frame.__dict__["_escalation_previous"] = order[:-1][after]
    return rows, ratio, lost


def find_martingale(frame: TradeFrame, config: AnalysisConfig, columns=None) -> list[Finding]:
    """Accounts that multiply their size after losses (and fall back after wins): the martingale."""
    rows, ratio, lost = columns if columns is not None else escalation_columns(frame)
    if not rows.size:
        return []
    acc = frame.acc[rows]
    n_acc = len(frame.accounts)
    steps = np.bincount(acc[lost], minlength=n_acc)
    escalated = np.bincount(acc[lost & (ratio >= 1.5)], minlength=n_acc)
    suspects = np.flatnonzero((steps >= config.martingale_min_steps)
                              & (escalated >= config.martingale_min_escalated * steps))
    findings = []
    by_account = np.argsort(acc, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(acc, minlength=n_acc))]
    for a in suspects.tolist():
        own = by_account[bounds[a]:bounds[a + 1]]
        mine = own[lost[own]]
        median = float(np.median(ratio[mine]))
        after_win = ratio[own[~lost[own]]]
        consistency = float(np.mean(np.abs(ratio[mine] / median - 1) <= 0.25))
        if median < config.martingale_min_ratio or consistency < config.martingale_min_consistency:
            continue
        previous = frame.__dict__["_escalation_previous"]
        mine = mine[np.argsort(frame.open_ms[rows[mine]], kind="stable")][: config.evidence_limit]
        findings.append(Finding(
            "martingale", (frame.accounts[a],), int(min(100, 40 + 30 * (median - 1))),
            f"lots multiplied by {median:.2f} (median) after {int(steps[a])} losing trades",
            {"steps_after_loss": int(steps[a]), "escalated_after_loss": int(escalated[a]),
             "median_lot_multiplier_after_loss": round(median, 3), "multiplier_consistency": round(consistency, 3),
             "median_lot_multiplier_after_win": round(float(np.median(after_win)), 3) if after_win.size else None,
             "steps": [{"after_loss": frame.trade_evidence(previous[k]), "next": frame.trade_evidence(rows[k]),
                        "lot_multiplier": round(float(ratio[k]), 4)} for k in mine.tolist()]},
        ))
    findings.sort(key=lambda f: f.accounts)
    return findings


__all__ = ["DETECTORS", "AnalysisConfig", "Finding", "escalation_columns", "execution_columns", "find_copy",
           "find_hedging", "find_latency", "find_pairs", "copy_buckets", "hedging_buckets", "stage1_counts", "stage1_rows", "find_linkage", "find_martingale", "quote_at", "window_pairs"]
