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
    link_household_max: int = 4  # an IP shared by more accounts is crowded (office, VPN, carrier NAT): weak evidence
    link_crowded_check_max: int = 400  # crowded IPs with more accounts are reported only, their pairs not checked
    link_pairs_max: int = 12  # a value with more sharers is recorded as a star of links (linear), not every pair
    link_strong_chance: float = 0.01  # prior: two different people share a device or payment instrument honestly
    link_household_chance: float = 0.05  # prior: different people behind one household-sized IP honestly
    # hedging
    hedge_max_delay_s: float = 900.0  # stage 1 only: a leg opened within this of the other, while it is open
    hedge_candidate_neighbours: int = 16  # stage 1: following opposite opens of the symbol group each is compared with
    hedge_close_delay_s: float = 300.0  # stage 1's second grid: legs closed within this of each other
    hedge_close_neighbours: int = 4  # following opposite closes of the symbol group each is compared with
    hedge_quick_delay_s: float = 60.0  # a second look at legs this close (the textbook hedge), chance counted alike
    hedge_delay_share: float = 0.05  # a counterpart leg may open up to this share of the position's hold apart
    hedge_min_coverage: float = 0.5  # a position is hedged when opposite exposure covers this share of lots × time
    hedge_min_matches: int = 3  # hedged positions of each account
    hedge_min_share: float = 0.3  # of the smaller account's positions
    correlated: tuple[tuple[tuple[str, int], ...], ...] = ()  # groups of (symbol, +1 | -1) that move together
    # copy trading
    copy_candidate_neighbours: int = 10  # stage 1: following trades of the same symbol and side compared
    copy_window_s: float = 60.0  # jitter tolerated between a signal and its copy; the chance model decides
    copy_ratio_tolerance: float = 0.2  # each size ratio within ±20% of the pair's median ratio
    copy_min_matches: int = 5
    copy_min_share: float = 0.4  # of the smaller account's trades (copies skip signals, add their own trades)
    copy_min_consistency: float = 0.7
    # latency / execution
    latency_stale_prior: float = 0.05  # honest share of fills a spread better than the reference, for tiny firms
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
    martingale_escalation_prior: float = 0.2  # honest share of 1.5× steps after a loss, when the firm is too small to say
    martingale_min_ratio: float = 1.5  # median next/previous lots after a losing trade (the chance test decides)
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
    chance: float | None = None  # how likely an honest account (pair, group) looks like this, corrected for the tests

    @property
    def probability(self) -> float:
        """Calibrated probability that the finding is not honest coincidence (1 − the corrected chance)."""
        return 1.0 - (self.chance if self.chance is not None else 0.01)

    @property
    def fingerprint(self) -> str:
        members = ",".join(self.accounts)
        text = f"{self.detector}:{members}"
        return text if len(text) <= 200 else f"{self.detector}:sha256:{hashlib.sha256(members.encode()).hexdigest()}"

    def to_dict(self) -> dict:
        return {"detector": self.detector, "accounts": list(self.accounts), "score": self.score, "title": self.title,
                "fingerprint": self.fingerprint, "evidence": self.evidence,
                "chance": None if self.chance is None else float(f"{self.chance:.3g}")}


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
                 columns: dict[str, np.ndarray] | None = None, accept=None, account_pairs: int = 0):
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
        if account_pairs:  # only the pairs' account keys (min·n + max), from the sorted slices: no gathers
            a, b = sorted_columns["acc"][:-offset][ok], sorted_columns["acc"][offset:][ok]
            out_i.append(np.minimum(a, b).astype(np.int64) * account_pairs + np.maximum(a, b))
            continue
        idx = np.flatnonzero(ok)
        out_i.append(order[idx])
        out_j.append(order[idx + offset])
    if account_pairs:
        return np.concatenate(out_i) if out_i else np.zeros(0, np.int64)
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
        self.mean_crowd = max(float(self.crowd.sum()) / self.total, 1e-9)
        active = int(np.count_nonzero(self.trades))
        self.pairs = max(active * (active - 1) // 2, 1)

    def expected(self, a: int, b: int, matched: int) -> float:
        """Chance coincidences: a's crowd × b's share of trades — and when *both* trade in busy minutes more
        than the firm does, their crowds multiplied (b is then not a random draw of the firm's trades)."""
        crowd_a, crowd_b = max(self.crowd[a] - matched, 0.0), max(self.crowd[b] - matched, 0.0)
        return max(self.trades[b] * crowd_a, self.trades[a] * crowd_b,
                   crowd_a * crowd_b / self.mean_crowd) / self.total

    def judge(self, a: int, b: int, matched: int, alpha: float) -> tuple[bool, dict]:
        # the crowd around a's trades, less the matched trades of b themselves (they are what is judged)
        expected = self.expected(a, b, matched)
        p = poisson_tail(matched, expected)
        corrected = min(1.0, p * self.pairs)
        return corrected <= alpha, {"expected_by_chance": round(expected, 4), "chance_p": float(f"{p:.3g}"),
                                    "account_pairs_in_firm": self.pairs, "chance_corrected": float(f"{corrected:.3g}")}


# --------------------------------------------------------------------------------------------------
# linkage


def find_linkage(frame: TradeFrame, config: AnalysisConfig, corroborated: set[tuple[str, str]] | None = None,
                 ) -> tuple[list[dict], list[Finding]]:
    """Links (accounts sharing a value) and the clusters of more than one person's accounts.

    Identifiers are weighed by what they are. A device fingerprint or a payment instrument (card,
    wallet, bank account hash) used by several "different" people is strong evidence, the stronger
    the more of them share it. An IP (IPv4, or an IPv6 /64) is weak: shared by at most
    ``link_household_max`` accounts it links them like a household; shared by more it is *crowded* (an
    office, a VPN exit, a carrier's NAT) and links a pair only with corroboration — the pair is in a
    hedging or copy finding (``corroborated``), or its trading coincides more often than chance among
    the pairs sharing that value. Crowded values are reported in the returned links' companion
    (``frame.__dict__["_crowded"]``) and in the findings' evidence. Cost: linear in sessions, plus the
    pairs of each checked crowded value.
    """
    corroborated = corroborated or set()
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
                if t < slot[0]:
                    slot[0] = t
                if t > slot[1]:
                    slot[1] = t
                slot[2] += 1
    for a, trader in frame.trader_of.items():
        seen[("trader", trader)][a] = [-1, -1, 0]
    for a, payments in frame.payments_of.items():
        for payment in payments:
            seen[("payment", payment)][a] = [-1, -1, 0]
    names = frame.accounts
    identity = {a: f"trader:{t}" for a, t in frame.trader_of.items()}
    person = lambda a: identity.get(a, f"account:{names[a]}")  # noqa: E731
    links, crowded = [], []
    union = _Union()
    value_people: dict[tuple[str, str], int] = {}
    coincide = _TradingCoincidence(frame, config)

    def link(a: int, b: int, via: str, value: str, members: dict, **extra) -> None:
        if names[a] > names[b]:
            a, b = b, a
        sa, sb = members[a], members[b]
        links.append({"account_a": names[a], "account_b": names[b], "via": via, "value": value,
                      "first_seen": iso(max(sa[0], sb[0])) if sa[0] >= 0 else None,
                      "last_seen": iso(max(sa[1], sb[1])) if sa[1] >= 0 else None,
                      "seen": {names[a]: sa[2], names[b]: sb[2]}, **extra})
        union.union(names[a], names[b])

    for (via, value), members in sorted(seen.items()):
        if len(members) < 2:
            continue
        ordered = sorted(members, key=lambda a: names[a])
        people = len({person(a) for a in ordered})
        value_people[(via, value)] = people
        if via != "ip" or len(members) <= config.link_household_max:
            # strong (or household-sized): every pair while small, a star from the first account when large
            if len(ordered) <= config.link_pairs_max:
                for x in range(len(ordered)):
                    for y in range(x + 1, len(ordered)):
                        link(ordered[x], ordered[y], via, value, members, sharers=len(ordered))
            else:
                for other in ordered[1:]:
                    link(ordered[0], other, via, value, members, sharers=len(ordered))
            continue
        entry = {"via": via, "value": value, "accounts": len(members), "people": people, "corroborated": []}
        crowded.append(entry)
        if len(members) > config.link_crowded_check_max:
            continue  # a carrier NAT or a VPN exit of thousands: reported, never paired
        pairs_here = len(ordered) * (len(ordered) - 1) // 2
        for x in range(len(ordered)):
            for y in range(x + 1, len(ordered)):
                a, b = ordered[x], ordered[y]
                why = None
                if (names[a], names[b]) in corroborated:
                    why = "hedging or copy finding"
                else:
                    p = coincide.chance(a, b)
                    if p is not None and p * pairs_here <= config.chance_alpha:
                        why = f"trading coincides (chance {p * pairs_here:.2g} among the {pairs_here} pairs here)"
                if why:
                    link(a, b, via, value, members, sharers=len(ordered), crowded=True, corroboration=why)
                    entry["corroborated"].append([names[a], names[b]])
    by_group: dict[str, list[dict]] = defaultdict(list)
    for item in links:
        by_group[union.find(item["account_a"])].append(item)
    crowded.sort(key=lambda c: (-c["accounts"], c["via"], c["value"]))
    frame.__dict__["_crowded"] = crowded
    index = {name: a for a, name in enumerate(names)}
    findings = []
    for group in union.groups():
        people = {person(index[name]) for name in group}
        if len(people) < 2:
            continue  # one person's own accounts, linked only by what they share with themselves
        evidence_links = by_group[union.find(group[0])]
        vias = sorted({item["via"] for item in evidence_links})
        chance = _linkage_chance(evidence_links, value_people, config)
        members = set(group)
        crowded_here = [c for c in crowded if any(a in members for pair in c["corroborated"] for a in pair)]
        findings.append(Finding(
            "linkage", tuple(group), strength_of(chance),
            f"{len(group)} accounts of {len(people)} apparently different traders share {', '.join(vias)}",
            {"links": evidence_links[: config.evidence_limit * 4], "link_count": len(evidence_links),
             "people": sorted(people), "crowded_values": crowded_here[: config.evidence_limit]}, chance=chance,
        ))
    findings.sort(key=lambda f: f.accounts)
    return links, findings


def _linkage_chance(links: list[dict], value_people: dict, config: AnalysisConfig) -> float:
    """A prior, not a fitted rate: how likely honest different people produce this cluster's strongest link.

    A device or payment instrument shared by k different people: ``link_strong_chance`` ** (k − 1) (two
    people sharing one card is rare, ten is not an accident); a household-sized IP: ``link_household_chance``;
    a crowded IP with corroboration: the corroboration's chance is what was tested (at most alpha).
    """
    best = 1.0
    for item in links:
        via = item["via"]
        if via in ("device", "payment"):
            k = max(value_people.get((via, item["value"]), 2), 2)
            best = min(best, config.link_strong_chance ** (k - 1))
        elif via == "ip" and item.get("crowded"):
            best = min(best, config.chance_alpha)
        elif via == "ip":
            best = min(best, config.link_household_chance)
        else:
            best = min(best, config.chance_alpha)
    return best


def _copy_chance(frame: TradeFrame, config: AnalysisConfig) -> _Chance:
    """The copy detector's crowd model (each trade's same-symbol, same-side crowd within the window), once per frame."""
    cached = frame.__dict__.get("_copy_chance")
    if cached is None or cached[0] is not frame.open_ms or cached[1] != config.copy_window_s:
        key = frame.sym.astype(np.int64) * 2 + (frame.side > 0)
        model = _Chance(frame, background(key, key, frame.open_ms, int(config.copy_window_s * 1000)) - 1)
        cached = (frame.open_ms, config.copy_window_s, model)
        frame.__dict__["_copy_chance"] = cached
    return cached[2]


class _TradingCoincidence:
    """Whether two accounts' opens coincide (same symbol and side within the copy window) beyond chance.

    Uses the copy detector's stage-1 coincidences when it ran (pairs that coincided at least twice) and
    the same crowd model as :class:`_Chance`; without them there is no evidence (None)."""

    def __init__(self, frame: TradeFrame, config: AnalysisConfig) -> None:
        self.frame, self.config = frame, config
        stage1 = frame.__dict__.get("_stage1", {}).get("copy")
        self.pk, self.counts = stage1 if stage1 is not None else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        self.model = None

    def chance(self, a: int, b: int) -> float | None:
        if not self.pk.size:
            return None
        n_acc = len(self.frame.accounts)
        key = min(a, b) * n_acc + max(a, b)
        at = int(np.searchsorted(self.pk, key))
        if at >= self.pk.size or self.pk[at] != key:
            return None
        if self.model is None:
            self.model = _copy_chance(self.frame, self.config)
        matched = int(self.counts[at])
        return poisson_tail(matched, self.model.expected(a, b, matched))


# --------------------------------------------------------------------------------------------------
# hedging


def symbol_groups(frame: TradeFrame, config: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per symbol of ``frame``: its hedging group (its own index, or one past the symbols per correlated set of
    ``config``) and its sign in that group. Shared with incremental analysis, which buckets history the same way."""
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
    exact_window: int | None = -1  # stage 2's window (-1: the same as stage 1's; None: no window, the test decides)
    neighbours: int | None = None  # stage 1's neighbour limit (None: candidate_neighbours)
    opposite: np.ndarray | None = None  # hedging: each row's direction; stage 1 searches the opposite side only
    accept_stage1: object = None  # stage 1's test on the columns of two rows (either may have opened first)
    closes: np.ndarray | None = None  # hedging: a second stage-1 grid on these times (closes), for closed rows
    close_window: int = 0  # its window
    close_neighbours: int = 0  # and neighbour limit


def _end_ms(frame: TradeFrame) -> np.ndarray:
    """When each position stopped carrying exposure: its last close, or the frame's last time while open."""
    cached = frame.__dict__.get("_end_ms")
    if cached is None or cached[0] is not frame.close_ms:
        last = int(max(frame.open_ms.max(initial=0), frame.close_ms.max(initial=0)))
        cached = (frame.close_ms, np.where(frame.close_ms >= 0, np.maximum(frame.close_ms, frame.open_ms), last))
        frame.__dict__["_end_ms"] = cached
    return cached[1]


def hedging_buckets(frame: TradeFrame, config: AnalysisConfig) -> Buckets:
    """Hedging compares positions of one symbol group held at the same time in opposite directions.

    Candidates (stage 1): a position opened while an opposite position of another account in the group
    was still open, within ``hedge_max_delay_s`` of its open — and, in a second grid, a position closed
    within ``hedge_max_delay_s`` of an opposite one. The second grid is what finds legs opened inside a
    crowd (hundreds of opens on EURUSD in the minutes after the London open put the other leg beyond the
    neighbour limit), because a crowd opens together but does not close together, while a hedge's legs
    come off together. The exact pass (stage 2) compares every overlapping opposite pair of a candidate
    pair of accounts, whatever the delay and the sizes.
    """
    group, sign = symbol_groups(frame, config)
    g = group[frame.sym]
    direction = frame.side * sign[frame.sym]
    end = _end_ms(frame)

    def accept(i, j):
        overlap = np.minimum(end[i], end[j]) - np.maximum(frame.open_ms[i], frame.open_ms[j])
        return (frame.acc[i] != frame.acc[j]) & (g[i] == g[j]) & (direction[i] != direction[j]) & (overlap > 0)

    tau = _hedge_tau(frame, config)
    duration = end - frame.open_ms

    least = int(config.hedge_max_delay_s * 1000)

    def accept_stage1(i, j):  # columns of rows i and j: held alike, overlapping half the shorter one
        di, dj = i["end"] - i["open"], j["end"] - j["open"]
        allowance = 2 * np.maximum(least, (np.maximum(di, dj) * config.hedge_delay_share).astype(np.int64))
        overlap = np.minimum(i["end"], j["end"]) - np.maximum(i["open"], j["open"])
        return (i["acc"] != j["acc"]) & (2 * overlap >= np.minimum(di, dj)) & (np.abs(di - dj) <= allowance)

    return Buckets([g.astype(np.int64)], int(config.hedge_max_delay_s * 1000),
                   {"acc": frame.acc, "end": end, "open": frame.open_ms},
                   accept_stage1, accept, exact_window=None, neighbours=config.hedge_candidate_neighbours,
                   opposite=direction, accept_stage1=accept_stage1, closes=end,
                   close_window=int(config.hedge_close_delay_s * 1000), close_neighbours=config.hedge_close_neighbours)


def copy_buckets(frame: TradeFrame, config: AnalysisConfig) -> Buckets:
    def accept(i, j):
        return (frame.acc[i] != frame.acc[j]) & (frame.sym[i] == frame.sym[j]) & (frame.side[i] == frame.side[j])

    return Buckets([frame.sym.astype(np.int64) * 2 + (frame.side > 0)], int(config.copy_window_s * 1000),
                   {"acc": frame.acc}, lambda lo, hi: lo["acc"] != hi["acc"], accept,
                   neighbours=config.copy_candidate_neighbours)


def opposite_pairs(key: np.ndarray, direction: np.ndarray, t: np.ndarray, window: int, max_offset: int,
                   columns: dict[str, np.ndarray], accept, account_pairs: int = 0, *,
                   queries: np.ndarray | None = None, targets: np.ndarray | None = None):
    """Row pairs (i, j): j among the ``max_offset`` next opens of i's ``key`` in the *opposite* direction, at most
    ``window`` later, that ``accept(ci, cj)`` keeps (``columns`` of i and of j). Searching only the opposite
    side doubles the reach of a neighbour limit in a busy symbol (half the opens there are on i's own side).
    ``queries`` / ``targets`` (masks over rows): only these rows are i / j."""
    out_i, out_j = [], []
    if not t.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    t0, mask = int(t.min()), (1 << 40) - 1
    for d, side in ((1, "left"), (-1, "right")):  # simultaneous opposite opens: found from the buy side only
        x_mask, y_mask = direction == d, direction == -d
        if queries is not None:
            x_mask &= queries
        if targets is not None:
            y_mask &= targets
        x, y = np.flatnonzero(x_mask), np.flatnonzero(y_mask)
        if not x.size or not y.size:
            continue
        y_packed = key[y].astype(np.int64) << 40 | (t[y] - t0)
        order = np.argsort(y_packed, kind="stable")
        ys, y_rows = y_packed[order], y[order]
        y_cols = {name: col[y_rows] for name, col in columns.items()}
        x_packed = key[x].astype(np.int64) << 40 | (t[x] - t0)
        order = np.argsort(x_packed, kind="stable")
        x, x_packed = x[order], x_packed[order]
        x_cols = {name: col[x] for name, col in columns.items()}
        pos = np.searchsorted(ys, x_packed, side=side)
        for offset in range(max_offset):
            p = pos + offset
            ok = p < ys.size
            p = np.where(ok, p, 0)
            ok &= (ys[p] >> 40 == x_packed >> 40) & ((ys[p] & mask) - (x_packed & mask) <= window)
            if not ok.any():
                break
            if not ok.all():  # beyond the window (or the array): done with those rows
                x, x_packed, p, pos = x[ok], x_packed[ok], p[ok], pos[ok]
                x_cols = {name: col[ok] for name, col in x_cols.items()}
            y_here = {name: col[p] for name, col in y_cols.items()}
            keep = accept(x_cols, y_here)
            if account_pairs:  # only the pairs' account keys (min·n + max): no gathers of rows
                a, b = x_cols["acc"][keep], y_here["acc"][keep]
                out_i.append(np.minimum(a, b).astype(np.int64) * account_pairs + np.maximum(a, b))
                continue
            out_i.append(x[keep])
            out_j.append(y_rows[p[keep]])
    if account_pairs:
        return np.concatenate(out_i) if out_i else np.zeros(0, np.int64)
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)


def _opposite_grids(frame: TradeFrame, buckets: Buckets, limit: int):
    """Each stage-1 grid of a detector that pairs opposite positions, as (direction, time, window, limit):
    the opens, then the closes of closed positions (an open one ends at the frame's last time with every
    other open one), searched in a shorter window among fewer neighbours."""
    yield buckets.opposite, frame.open_ms, buckets.window, limit
    if buckets.closes is not None:
        yield (np.where(frame.close_ms >= 0, buckets.opposite, 0), buckets.closes, buckets.close_window,
               buckets.close_neighbours)


def _most_per_key(grids: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys of several (keys, counts) and, for each key, its largest count."""
    keys = np.concatenate([k for k, _c in grids])
    counts = np.concatenate([c for _k, c in grids])
    if not keys.size:
        return keys, counts
    order = np.lexsort((counts, keys))  # by key, then count: the last of each key is its largest
    keys, counts = keys[order], counts[order]
    last = np.flatnonzero(np.r_[keys[1:] != keys[:-1], True])
    return keys[last], counts[last]


def stage1_rows(frame: TradeFrame, buckets: Buckets, config: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    """Trade pairs among each trade's ``candidate_neighbours`` following trades of its bucket (each pair once)."""
    if buckets.opposite is not None:
        limit = buckets.neighbours or config.candidate_neighbours
        found = [np.minimum(i, j) * frame.n + np.maximum(i, j)
                 for i, j in (opposite_pairs(buckets.keys[0], direction, t, window, reach, buckets.columns,
                                             buckets.accept_stage1)
                              for direction, t, window, reach in _opposite_grids(frame, buckets, limit))]
        rows = unique(np.concatenate(found)) if len(found) > 1 else found[0]  # a trade pair once, in any grid
        return rows // max(frame.n, 1), rows % max(frame.n, 1)
    found = []
    for key in buckets.keys:
        i, j = window_pairs(key, frame.open_ms, buckets.window,
                            max_offset=buckets.neighbours or config.candidate_neighbours,
                            columns=buckets.columns, accept=buckets.accept_sorted)
        found.append(np.minimum(i, j) * frame.n + np.maximum(i, j))
    if len(found) == 1:  # one grid: window_pairs gives each pair once already
        rows = found[0]
    else:
        rows = unique(np.concatenate(found)) if found else np.zeros(0, np.int64)  # a trade pair once, in any grid
    return rows // max(frame.n, 1), rows % max(frame.n, 1)


def stage1_counts(frame: TradeFrame, buckets: Buckets, config: AnalysisConfig, label: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Coincidences per pair of accounts (key a·n + b, a < b) in stage 1."""
    n_acc = len(frame.accounts)
    limit = buckets.neighbours or config.candidate_neighbours
    if buckets.opposite is not None:
        # coincidences per pair of accounts among the opens, and among the closes of crowded rows; a pair
        # counts as often as the better of the two found it (never the sum: one pair of legs found by
        # both is one coincidence)
        per_grid = [unique(opposite_pairs(buckets.keys[0], direction, t, window, reach, buckets.columns,
                                          buckets.accept_stage1, account_pairs=max(n_acc, 1)), counts=True)
                    for direction, t, window, reach in _opposite_grids(frame, buckets, limit)]
        pk, counts = per_grid[0] if len(per_grid) == 1 else _most_per_key(per_grid)
        if label:
            frame.__dict__.setdefault("_stage1", {})[label] = (pk[counts >= 2], counts[counts >= 2])
        return pk, counts
    elif len(buckets.keys) == 1 and "acc" in buckets.columns:
        keys = window_pairs(buckets.keys[0], frame.open_ms, buckets.window, max_offset=limit,
                            columns=buckets.columns, accept=buckets.accept_sorted, account_pairs=max(n_acc, 1))
    else:
        i, j = stage1_rows(frame, buckets, config)
        a, b = frame.acc[i].astype(np.int64), frame.acc[j].astype(np.int64)
        keys = np.minimum(a, b) * n_acc + np.maximum(a, b)
    pk, counts = unique(keys, counts=True)
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
    window = buckets.window if buckets.exact_window == -1 else buckets.exact_window
    accept = buckets.accept
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
        ok = accept(i, j)
        if window is not None:
            ok &= np.abs(frame.open_ms[i] - frame.open_ms[j]) <= window
        out_i.append(i[ok])
        out_j.append(j[ok])
        first = last
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)


def find_hedging(frame: TradeFrame, config: AnalysisConfig) -> list[Finding]:
    """Accounts that hold opposite exposure on one (or a correlated) symbol at the same time, repeatedly.

    Judged on exposure over time, not on a window between the legs: a position of one account is
    *hedged* by another when the other's opposite positions in the symbol group cover at least
    ``hedge_min_coverage`` of its lots × time (legs opened minutes apart, split in parts or of another
    size included). A pair is flagged when each account has at least ``hedge_min_matches`` hedged
    positions, the smaller account at least ``hedge_min_share`` of its positions, and for either
    account that many hedged positions are unlikely for honest traders in the same crowd (see
    :func:`_hedge_expected`; looked at within τ and within ``hedge_quick_delay_s``: the smallest of the four
    p-values, ×4), corrected for the number of account pairs tested.
    """
    if frame.n < 2:
        return []
    n_acc = len(frame.accounts)
    i, j = find_pairs(frame, hedging_buckets(frame, config), config, label="hedging")
    if not i.size:
        return []
    i, j = _canonical(frame, i, j)
    end, start = _end_ms(frame), frame.open_ms
    pk = frame.acc[i].astype(np.int64) * n_acc + frame.acc[j]
    overlap = (np.minimum(end[i], end[j]) - np.maximum(start[i], start[j])).astype(np.float64)
    duration = np.maximum(end - start, 1).astype(np.float64)
    lots = frame.lots
    tau = _hedge_tau(frame, config)
    gap = np.abs(start[i] - start[j])
    held = np.abs(duration[i] - duration[j])
    # x is covered by y's exposure only when y is x's counterpart: opened within x's delay allowance τ and
    # held about as long (within 2τ) — what the chance model counts
    cov_i = np.where((gap <= tau[i]) & (held <= 2 * tau[i]),
                     overlap * np.minimum(1.0, lots[j] / lots[i]) / duration[i], 0.0)
    cov_j = np.where((gap <= tau[j]) & (held <= 2 * tau[j]),
                     overlap * np.minimum(1.0, lots[i] / lots[j]) / duration[j], 0.0)

    def hedged_rows(rows, cov):
        key = pk * max(frame.n, 1) + rows
        keys, inverse = np.unique(key, return_inverse=True)
        covered = np.bincount(inverse, weights=cov)
        ok = covered >= config.hedge_min_coverage
        return keys[ok] // max(frame.n, 1), keys[ok] % max(frame.n, 1), np.minimum(covered[ok], 1.0)

    pa, ra, ca = hedged_rows(i, cov_i)
    pb, rb, cb = hedged_rows(j, cov_j)
    keys_a, k_a = unique(pa, counts=True)
    keys_b, k_b = unique(pb, counts=True)
    both = np.intersect1d(keys_a[k_a >= config.hedge_min_matches], keys_b[k_b >= config.hedge_min_matches])
    if not both.size:
        return []
    ka = k_a[np.searchsorted(keys_a, both)]
    kb = k_b[np.searchsorted(keys_b, both)]
    counts = np.bincount(frame.acc, minlength=n_acc)
    a_of, b_of = both // n_acc, both % n_acc
    smaller_k = np.where(counts[a_of] <= counts[b_of], ka, kb)
    smaller_n = np.minimum(counts[a_of], counts[b_of])
    keep = smaller_k >= config.hedge_min_share * smaller_n
    both, ka, kb, a_of, b_of = both[keep], ka[keep], kb[keep], a_of[keep], b_of[keep]
    if not both.size:
        return []
    expected_a = _hedge_expected(frame, config, a_of, b_of)
    expected_b = _hedge_expected(frame, config, b_of, a_of)
    # a second look at legs opened within hedge_quick_delay_s: the textbook hedge, judged against the far
    # smaller chance of a counterpart that close (the crowd within a minute, not a quarter of an hour)
    quick = int(config.hedge_quick_delay_s * 1000)
    close_i = np.where(gap <= quick, cov_i, 0.0)
    close_j = np.where(gap <= quick, cov_j, 0.0)
    qa_keys, qa_k = unique(hedged_rows(i, close_i)[0], counts=True)
    qb_keys, qb_k = unique(hedged_rows(j, close_j)[0], counts=True)

    def lookup(keys, values, wanted):
        at = np.clip(np.searchsorted(keys, wanted), 0, max(keys.size - 1, 0))
        return np.where((keys.size > 0) & (keys[at] == wanted), values[at], 0) if keys.size else np.zeros(wanted.size, np.int64)

    qa, qb = lookup(qa_keys, qa_k, both), lookup(qb_keys, qb_k, both)
    quick_a = _hedge_expected(frame, config, a_of, b_of, cap_ms=quick)
    quick_b = _hedge_expected(frame, config, b_of, a_of, cap_ms=quick)
    active = int(np.count_nonzero(counts))
    tests = max(active * (active - 1) // 2, 1)
    flagged, details = [], {}
    for key, a, b, x_k, y_k, ea, eb, xq, yq, eqa, eqb in zip(
            both.tolist(), a_of.tolist(), b_of.tolist(), ka.tolist(), kb.tolist(), expected_a.tolist(),
            expected_b.tolist(), qa.tolist(), qb.tolist(), quick_a.tolist(), quick_b.tolist()):
        # each side's count is judged against its own chance model, within τ and within a minute; the most
        # unlikely of the four is the evidence (each side holds opposite exposure: ≥ hedge_min_matches), ×4
        looks = [poisson_tail(x_k, ea), poisson_tail(y_k, eb)]
        if min(xq, yq) >= config.hedge_min_matches:
            looks += [poisson_tail(xq, eqa), poisson_tail(yq, eqb)]
        p = min(1.0, 4 * min(looks))
        corrected = min(1.0, p * tests)
        if corrected > config.chance_alpha:
            continue
        names = (frame.accounts[a], frame.accounts[b])
        rows = pk == key
        pairs = sorted(zip(i[rows].tolist(), j[rows].tolist()), key=lambda q: (int(start[q[0]]), int(start[q[1]])))
        hedged = set(ra[pa == key].tolist()) | set(rb[pb == key].tolist())
        pairs = [q for q in pairs if q[0] in hedged or q[1] in hedged]
        share = (x_k if counts[a] <= counts[b] else y_k) / min(counts[a], counts[b])
        odds = {"hedged_positions": {names[0]: x_k, names[1]: y_k},
                "expected_by_chance": {names[0]: round(ea, 4), names[1]: round(eb, 4)},
                "chance_p": float(f"{p:.3g}"), "account_pairs_in_firm": tests,
                "chance_corrected": float(f"{corrected:.3g}")}
        flagged.append(names)
        details[names] = (pairs, share, odds, sorted(hedged), corrected)
    frame.prefetch(r for d in details.values() for p in d[0][: config.evidence_limit] for r in p)
    findings = []
    for members in _pair_groups(flagged):
        member_set = set(members)
        pair_evidence, all_rows, shares, chances = [], [], [], []
        for names, (pairs, share, odds, hedged, corrected) in sorted(details.items()):
            if names[0] not in member_set:
                continue
            shares.append(share)
            chances.append(corrected)
            all_rows.extend(hedged)
            pair_evidence.append({
                "accounts": list(names), "matched": len(pairs), "share_of_smaller_account": round(share, 3), **odds,
                "combined_profit": money_text(sum(int(frame.profit_e8[r]) for r in hedged)),
                "net_exposure": _net_exposure(frame, hedged),
                "trades": [{"a": frame.trade_evidence(x), "b": frame.trade_evidence(y),
                            "gap_s": round(abs(int(start[y]) - int(start[x])) / 1000, 3),
                            "overlap_s": round(max(0, min(int(end[x]), int(end[y])) - max(int(start[x]), int(start[y]))) / 1000, 1)}
                           for x, y in pairs[: config.evidence_limit]],
            })
        chance = min(chances)
        combined = money_text(sum(int(frame.profit_e8[r]) for r in set(all_rows)))
        findings.append(Finding(
            "hedging", tuple(members), strength_of(chance),
            f"{len(members)} accounts hold opposite exposure at the same time: "
            f"{sum(sum(p['hedged_positions'].values()) for p in pair_evidence)} hedged positions, combined P/L {combined} "
            f"(chance for honest traders {chance:.2g})",
            {"pairs": pair_evidence, "combined_profit": combined,
             "net_exposure": _net_exposure(frame, sorted(set(all_rows)))}, chance=chance,
        ))
    findings.sort(key=lambda f: f.accounts)
    return findings


def _hedge_expected(frame: TradeFrame, config: AnalysisConfig, a: np.ndarray, b: np.ndarray,
                    cap_ms: int | None = None) -> np.ndarray:
    """For each pair (a[k], b[k]): how many of a's positions an honest b would overlap with opposite exposure.

    The chance model of the crowd: b's positions are like positions drawn from the firm's positions in
    the same symbol group (so busy minutes and popular symbols count). A position x of a can only be
    covered by a draw that opened within its delay allowance τ (:func:`_hedge_tau`) in the opposite
    direction and was held about as long (within 2τ): expected = b's positions in the group × the
    firm's opposite opens in [x.open − τ, x.open + τ] ÷ all positions in the group × the group's share
    of positions held that long (open time and holding time independent; at most 1 per position).
    An upper bound on being *covered*, so conservative.
    """
    cached = frame.__dict__.get("_hedge_model")
    if cached is None or cached[0] is not frame.open_ms or cached[1] != config.correlated:
        cached = (frame.open_ms, config.correlated, _hedge_model(frame, config))
        frame.__dict__["_hedge_model"] = cached
    g, n_groups, direction, end, t0, packed, per_group, acc_group, tau, own_sorted, dur, dur_packed, crowding = cached[2]
    order, starts = _account_rows(frame)
    lengths = starts[a + 1] - starts[a]
    pair = np.repeat(np.arange(a.size), lengths)
    offsets = np.repeat(starts[a] - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    rows = order[np.arange(int(lengths.sum())) + offsets]
    other = b[pair]
    opposite = (g[rows] * 2 + (direction[rows] < 0)) << 40
    window = tau[rows] if cap_ms is None else np.minimum(tau[rows], cap_ms)  # the quick look: opens within cap_ms
    lo = np.maximum(frame.open_ms[rows] - window - t0, 0)
    hi = frame.open_ms[rows] + window - t0
    opens = np.searchsorted(packed, opposite | hi, side="right") - np.searchsorted(packed, opposite | lo, side="left")
    # the crowd is the *other* accounts: b's own opens (its hedge legs among them) are what is judged
    own_probe = ((other * n_groups + g[rows]) * 2 + (direction[rows] < 0)) << 40
    own = (np.searchsorted(own_sorted, own_probe | hi, side="right")
           - np.searchsorted(own_sorted, own_probe | lo, side="left"))
    opens = np.maximum(opens - own, 0)
    # held about as long: the share of the group's positions whose holding time is within 2τ of x's
    base = g[rows] << 42
    d = dur[rows]
    similar = (np.searchsorted(dur_packed, base | np.minimum(d + 2 * tau[rows], (1 << 42) - 1), side="right")
               - np.searchsorted(dur_packed, base | np.maximum(d - 2 * tau[rows], 0), side="left"))
    share = similar / np.maximum(per_group[g[rows]], 1)
    # b's own crowding: when b trades in busier minutes than the firm's average position, it is not a
    # random draw of the group's positions — scale by how much busier (never below 1)
    q = np.minimum(1.0, acc_group[other * n_groups + g[rows]] * opens * share * crowding[other]
                   / np.maximum(per_group[g[rows]], 1))
    return np.bincount(pair, weights=q, minlength=a.size)


def _hedge_model(frame: TradeFrame, config: AnalysisConfig) -> tuple:
    """The sorted columns the hedging chance model searches (built once per frame and configuration)."""
    n_acc = len(frame.accounts)
    group, sign = symbol_groups(frame, config)
    g = group[frame.sym].astype(np.int64)
    n_groups = int(group.max()) + 1 if group.size else 1
    direction = frame.side * sign[frame.sym]
    end = _end_ms(frame)
    t0 = int(frame.open_ms.min())
    packed = np.sort((g * 2 + (direction > 0)) << 40 | (frame.open_ms - t0))
    per_group = np.bincount(g, minlength=n_groups).astype(np.float64)
    acc_group = np.bincount(frame.acc.astype(np.int64) * n_groups + g, minlength=n_acc * n_groups).astype(np.float64)
    tau = _hedge_tau(frame, config)
    own_sorted = np.sort(((frame.acc.astype(np.int64) * n_groups + g) * 2 + (direction > 0)) << 40
                         | (frame.open_ms - t0))
    dur = (end - frame.open_ms).astype(np.int64)
    dur_packed = np.sort(g << 42 | np.minimum(dur, (1 << 42) - 1))
    crowding = _hedge_crowding(frame, config, packed, t0, g, tau)
    return g, n_groups, direction, end, t0, packed, per_group, acc_group, tau, own_sorted, dur, dur_packed, crowding


def _hedge_crowding(frame: TradeFrame, config: AnalysisConfig, packed: np.ndarray, t0: int, g: np.ndarray,
                    tau: np.ndarray) -> np.ndarray:
    """Per account: the mean number of the group's opens near its positions ÷ the firm's mean (≥ 1)."""
    cached = frame.__dict__.get("_hedge_crowding")
    if cached is not None and cached[0] is frame.open_ms:
        return cached[1]
    n_acc = len(frame.accounts)
    # the group's opens within ±hedge_max_delay_s (the usual τ) of each position: sorted probes, one pass
    near = background(g, g, frame.open_ms, int(config.hedge_max_delay_s * 1000)).astype(np.float64)
    per_account = np.bincount(frame.acc, weights=near, minlength=n_acc) / np.maximum(
        np.bincount(frame.acc, minlength=n_acc), 1)
    out = np.maximum(per_account / max(float(near.mean()) if near.size else 1.0, 1e-9), 1.0)
    frame.__dict__["_hedge_crowding"] = (frame.open_ms, out)
    return out


def _hedge_tau(frame: TradeFrame, config: AnalysisConfig) -> np.ndarray:
    """Per position: how far apart (ms) a counterpart leg may open — ``hedge_max_delay_s``, or a share of the
    position's holding time when that is longer (a hedge held for days may be completed hours later)."""
    duration = _end_ms(frame) - frame.open_ms
    return np.maximum(int(config.hedge_max_delay_s * 1000), (duration * config.hedge_delay_share).astype(np.int64))


def strength_of(chance: float) -> int:
    """A finding's strength 0–100 from its corrected chance: 0.01 → 50, 1e-12 or less → 100."""
    return int(min(100, max(0, round(50 + 5 * (-math.log10(max(chance, 1e-300)) - 2)))))


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
    chance = _copy_chance(frame, config) if matched else None
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
        chance = min(e["chance_corrected"] for e in evidence)
        findings.append(Finding(
            "copy", tuple(members), strength_of(chance),
            f"{len(members)} accounts trade the same signals (similarity {similarity:.2f}, "
            f"{sum(e['matched'] for e in evidence)} matched trades)",
            {"similarity": round(similarity, 3), "pairs": evidence}, chance=chance,
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
    active = max(int(np.count_nonzero(n_ref)), 1)
    tested = max(int(np.count_nonzero(n_closed)), 1)
    # chance models, corrected for the number of accounts tested: how often an honest fill is that far
    # better than the reference (the firm's own rate), how often an honest short trade wins
    stale_rate = min(max(float(n_stale.sum()) / max(float(n_ref.sum()), 1.0), 1e-4), 0.5)
    short = closed & ((frame.close_ms - frame.open_ms) <= config.latency_quick_max_hold_s * 1000)
    short_rate = float((short & (frame.profit_e8 > 0)).sum()) / max(float(short.sum()), 1.0)
    short_rate = min(max(short_rate, 0.5), 0.95)
    chance = np.ones(n_acc)
    by_stale = (n_stale >= config.latency_min_stale) & (share >= config.latency_min_stale_share) & (
        win >= config.latency_min_win_rate)
    for a in np.flatnonzero(by_stale).tolist():
        others = float(n_ref.sum() - n_ref[a])  # the honest rate from everyone else (a prior when few)
        rate = (float(n_stale.sum() - n_stale[a]) / others) if others >= 100 else config.latency_stale_prior
        rate = min(max(rate, 1e-4), 0.5)
        p = min(1.0, binomial_tail(int(n_stale[a]), int(n_ref[a]), rate) * active)
        by_stale[a] = p <= config.chance_alpha
        chance[a] = min(chance[a], p)
    by_slippage = (slip_any >= config.latency_slippage_min_fills) & (
        slip_good >= config.latency_slippage_min_share * slip_any)
    for a in np.flatnonzero(by_slippage).tolist():  # as unlikely for fair fills (either way, even odds)
        p = min(1.0, binomial_tail(int(slip_good[a]), int(slip_any[a])) * active)
        by_slippage[a] = p <= config.chance_alpha
        if by_slippage[a]:
            chance[a] = min(chance[a], p)
    quick = (n_closed >= config.latency_quick_min_trades) & (win_all >= config.latency_quick_min_win_rate)
    for a in np.flatnonzero(quick).tolist():
        p = min(1.0, binomial_tail(int(wins[a]), int(n_closed[a]), short_rate) * tested)
        quick[a] = p <= config.chance_alpha
        if quick[a]:
            chance[a] = min(chance[a], p)
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
        findings.append(Finding(
            "latency", (frame.accounts[a],), strength_of(float(chance[a])),
            "; ".join(reasons),
            {"reasons": reasons, "stale_fills": int(n_stale[a]), "fills_with_reference": int(n_ref[a]),
             "stale_share": round(float(share[a]), 3), "win_rate_on_stale": round(float(win[a]), 3),
             "win_rate": round(float(win_all[a]), 3), "closed_trades": int(n_closed[a]),
             "median_hold_s": round(median_hold, 1) if median_hold is not None else None,
             "favourable_slippage_share": round(asym, 3) if asym is not None else None,
             "honest_stale_fill_rate": round(stale_rate, 5), "honest_short_trade_win_rate": round(short_rate, 3),
             "accounts_tested": active, "chance_corrected": float(f"{chance[a]:.3g}"), "trades": trades},
            chance=float(chance[a]),
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
    # chance model: an honest account escalates after a loss at the firm's own rate; corrected for the
    # accounts tested (those with enough steps to be judged)
    all_steps = np.bincount(acc[lost], minlength=n_acc)
    honest_rate = min(max(float(escalated.sum()) / max(float(all_steps.sum()), 1.0), 0.01), 0.9)
    tested = max(int(np.count_nonzero(steps >= config.martingale_min_steps)), 1)
    findings = []
    by_account = np.argsort(acc, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(acc, minlength=n_acc))]
    lost_sorted = np.sort(ratio[lost])
    for a in suspects.tolist():
        own = by_account[bounds[a]:bounds[a + 1]]
        mine = own[lost[own]]
        median = float(np.median(ratio[mine]))
        after_win = ratio[own[~lost[own]]]
        consistency = float(np.mean(np.abs(ratio[mine] / median - 1) <= 0.25))
        if median < config.martingale_min_ratio or consistency < config.martingale_min_consistency:
            continue
        # the test: how many of its after-loss steps multiply by about the same factor (≥ 1.5×, within ±25% of
        # its median) — against how often everyone else's after-loss steps land in that band
        low, high = max(1.5, 0.75 * median), 1.25 * median
        r_own = ratio[mine]
        in_band = int(np.count_nonzero((r_own >= low) & (r_own <= high)))
        everyone = int(np.searchsorted(lost_sorted, high, side="right") - np.searchsorted(lost_sorted, low, side="left"))
        others = float(all_steps.sum() - all_steps[a])  # everyone else's rate (a prior when they are few)
        rate = ((everyone - in_band) / others) if others >= 50 else config.martingale_escalation_prior
        rate = min(max(rate, 0.02), 0.9)
        chance = min(1.0, binomial_tail(in_band, int(steps[a]), rate) * tested)
        if chance > config.chance_alpha:
            continue
        previous = frame.__dict__["_escalation_previous"]
        mine = mine[np.argsort(frame.open_ms[rows[mine]], kind="stable")][: config.evidence_limit]
        findings.append(Finding(
            "martingale", (frame.accounts[a],), strength_of(chance),
            f"lots multiplied by {median:.2f} (median) after {int(steps[a])} losing trades",
            {"steps_after_loss": int(steps[a]), "escalated_after_loss": int(escalated[a]),
             "median_lot_multiplier_after_loss": round(median, 3), "multiplier_consistency": round(consistency, 3),
             "median_lot_multiplier_after_win": round(float(np.median(after_win)), 3) if after_win.size else None,
             "honest_escalation_rate": round(honest_rate, 4), "accounts_tested": tested,
             "chance_corrected": float(f"{chance:.3g}"),
             "steps": [{"after_loss": frame.trade_evidence(previous[k]), "next": frame.trade_evidence(rows[k]),
                        "lot_multiplier": round(float(ratio[k]), 4)} for k in mine.tolist()]},
            chance=chance,
        ))
    findings.sort(key=lambda f: f.accounts)
    return findings


__all__ = ["DETECTORS", "AnalysisConfig", "Finding", "escalation_columns", "execution_columns", "find_copy",
           "find_hedging", "find_latency", "find_pairs", "copy_buckets", "hedging_buckets", "stage1_counts", "stage1_rows", "find_linkage", "find_martingale", "quote_at", "window_pairs"]
