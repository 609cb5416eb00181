"""Incremental analysis: a new batch of trades is analysed with only the history it can match.

A batch can change the findings of its own accounts and of their possible counterparts: accounts
that opened a trade on the same symbol inside the hedging or copy window of a new trade, and accounts
sharing an IP, device or payment method with them. :class:`HistoryIndex` finds those in O(log n) per
new trade (binary search over trades sorted by symbol and time; rows grouped by account), and the
detectors then run on that slice of the history plus the batch. Risk scores are placed against the
population quantiles of the last full analysis.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .detect import AnalysisConfig, symbol_groups
from .frame import TradeFrame, unique
from .run import Analysis, analyze


def take(frame: TradeFrame, rows: np.ndarray, *, quote_from: int | None = None, quote_to: int | None = None) -> TradeFrame:
    """The frame restricted to ``rows`` (and the sessions of their accounts, the quotes in a time range)."""
    rows = np.sort(rows)
    accounts = np.unique(frame.acc[rows])
    remap = np.full(len(frame.accounts), -1, np.int64)
    remap[accounts] = np.arange(accounts.size)
    s_rows = np.flatnonzero(remap[frame.session_acc] >= 0) if frame.session_acc.size else np.zeros(0, np.int64)
    if frame.quote_ms.size and quote_from is not None:
        q = np.flatnonzero((frame.quote_ms >= quote_from) & (frame.quote_ms <= quote_to))
    else:
        q = np.arange(frame.quote_ms.size)
    pick = (lambda seq: [seq[i] for i in rows.tolist()]) if rows.size else (lambda seq: [])
    names = [frame.accounts[a] for a in accounts.tolist()]
    index = {a: k for k, a in enumerate(accounts.tolist())}
    return replace(
        frame, accounts=names, acc=remap[frame.acc[rows]].astype(np.int32), sym=frame.sym[rows], side=frame.side[rows],
        lots=frame.lots[rows], open_ms=frame.open_ms[rows], order_ms=frame.order_ms[rows],
        open_price=frame.open_price[rows], close_ms=frame.close_ms[rows], close_price=frame.close_price[rows],
        closed_lots=frame.closed_lots[rows], profit_e8=frame.profit_e8[rows], closes=frame.closes[rows],
        position=pick(frame.position) if frame.position is not None else None,
        lots_text=pick(frame.lots_text) if frame.lots_text is not None else None,
        price_text=pick(frame.price_text) if frame.price_text is not None else None,
        close_detail={k: frame.close_detail[r] for k, r in enumerate(rows.tolist()) if r in frame.close_detail},
        session_acc=remap[frame.session_acc[s_rows]].astype(np.int32), session_ms=frame.session_ms[s_rows],
        session_ip=[frame.session_ip[i] for i in s_rows.tolist()],
        session_device=[frame.session_device[i] for i in s_rows.tolist()],
        quote_sym=frame.quote_sym[q], quote_ms=frame.quote_ms[q], quote_bid=frame.quote_bid[q],
        quote_ask=frame.quote_ask[q],
        trader_of={index[a]: t for a, t in frame.trader_of.items() if a in index},
        payments_of={index[a]: p for a, p in frame.payments_of.items() if a in index},
    )


def concat(base: TradeFrame, batch: TradeFrame) -> TradeFrame:
    """``base`` followed by ``batch`` (accounts and symbols matched by name)."""
    acc_index = {n: i for i, n in enumerate(base.accounts)}
    accounts = list(base.accounts)
    for n in batch.accounts:
        if n not in acc_index:
            acc_index[n] = len(accounts)
            accounts.append(n)
    sym_index = {n: i for i, n in enumerate(base.symbols)}
    symbols = list(base.symbols)
    for n in batch.symbols:
        if n not in sym_index:
            sym_index[n] = len(symbols)
            symbols.append(n)
    amap = np.asarray([acc_index[n] for n in batch.accounts], np.int32) if batch.accounts else np.zeros(0, np.int32)
    smap = np.asarray([sym_index[n] for n in batch.symbols], np.int32) if batch.symbols else np.zeros(0, np.int32)

    def cat(name):
        return np.concatenate([getattr(base, name), getattr(batch, name)])

    def join(name):
        a, b = getattr(base, name), getattr(batch, name)
        if a is None or b is None:
            return None
        return a + b

    qsym = np.concatenate([base.quote_sym, smap[batch.quote_sym] if batch.quote_sym.size else batch.quote_sym])
    qms = cat("quote_ms")
    order = np.lexsort((qms, qsym))
    return replace(
        base, accounts=accounts, symbols=symbols,
        acc=np.concatenate([base.acc, amap[batch.acc] if batch.acc.size else batch.acc]),
        sym=np.concatenate([base.sym, smap[batch.sym] if batch.sym.size else batch.sym]),
        side=cat("side"), lots=cat("lots"), open_ms=cat("open_ms"), order_ms=cat("order_ms"), open_price=cat("open_price"),
        close_ms=cat("close_ms"), close_price=cat("close_price"), closed_lots=cat("closed_lots"),
        profit_e8=cat("profit_e8"), closes=cat("closes"), position=join("position"), lots_text=join("lots_text"),
        price_text=join("price_text"),
        close_detail={**base.close_detail, **{base.n + k: v for k, v in batch.close_detail.items()}},
        session_acc=np.concatenate([base.session_acc, amap[batch.session_acc] if batch.session_acc.size else batch.session_acc]),
        session_ms=cat("session_ms"), session_ip=base.session_ip + batch.session_ip,
        session_device=base.session_device + batch.session_device,
        quote_sym=qsym[order], quote_ms=qms[order], quote_bid=cat("quote_bid")[order], quote_ask=cat("quote_ask")[order],
        trader_of={**base.trader_of, **{int(amap[a]): t for a, t in batch.trader_of.items()}},
        payments_of={**base.payments_of, **{int(amap[a]): p for a, p in batch.payments_of.items()}},
    )


@dataclass
class HistoryIndex:
    """The history's rows grouped by account and sorted by (symbol, open time), for fast scoping."""

    frame: TradeFrame
    by_account: np.ndarray  # rows sorted by account
    account_start: np.ndarray  # start of each account's rows in by_account
    by_time: np.ndarray  # rows sorted by (symbol, open time)
    time_key: np.ndarray  # symbol << 42 | open_ms, sorted
    by_value: dict[str, set[int]]  # session ip / device -> accounts
    values_of: dict[int, set[str]]  # account -> its session values
    stage1: dict[str, tuple[np.ndarray, np.ndarray]]  # detector -> (pair keys, coincidences ≥ 2) of the history

    @classmethod
    def build(cls, frame: TradeFrame, config: AnalysisConfig | None = None) -> HistoryIndex:
        """Index ``frame``; its stage-1 coincidence counts come from the full analysis of it, when it ran."""
        from .detect import copy_buckets, hedging_buckets, stage1_counts

        config = config or AnalysisConfig()
        cached = frame.__dict__.get("_stage1", {})
        for label, make in (("hedging", hedging_buckets), ("copy", copy_buckets)):
            if label not in cached:
                stage1_counts(frame, make(frame, config), config, label)
        index = cls._build(frame)
        index._buckets(config)  # the sorted buckets the batches are searched in
        return index

    @classmethod
    def _build(cls, frame: TradeFrame) -> HistoryIndex:
        by_account = np.argsort(frame.acc, kind="stable")
        counts = np.bincount(frame.acc, minlength=len(frame.accounts))
        start = np.r_[0, np.cumsum(counts)]
        key = frame.sym.astype(np.int64) << 42 | frame.open_ms
        by_time = np.argsort(key, kind="stable")
        by_value: dict[str, set[int]] = {}
        values_of: dict[int, set[str]] = {}
        for a, ip, device in zip(frame.session_acc.tolist(), frame.session_ip, frame.session_device):
            for value in (ip, device):
                if value:
                    by_value.setdefault(value, set()).add(a)
                    values_of.setdefault(a, set()).add(value)
        return cls(frame, by_account, start, by_time, key[by_time], by_value, values_of,
                   dict(frame.__dict__.get("_stage1", {})))

    def rows_of(self, accounts: np.ndarray) -> np.ndarray:
        if not accounts.size:
            return np.zeros(0, np.int64)
        starts, ends = self.account_start[accounts], self.account_start[accounts + 1]
        lengths = ends - starts
        offsets = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
        return self.by_account[np.arange(lengths.sum()) + offsets]

    def counterparts(self, sym: np.ndarray, open_ms: np.ndarray, window_ms: int) -> np.ndarray:
        """Accounts of the history with an open on ``sym`` within ``window_ms`` of ``open_ms``."""
        if not sym.size:
            return np.zeros(0, np.int64)
        base = sym.astype(np.int64) << 42
        lo = np.searchsorted(self.time_key, base | np.maximum(open_ms - window_ms, 0), side="left")
        hi = np.searchsorted(self.time_key, base | (open_ms + window_ms), side="right")
        lengths = hi - lo
        offsets = np.repeat(lo - np.r_[0, np.cumsum(lengths)[:-1]], lengths)
        rows = self.by_time[np.arange(lengths.sum()) + offsets]
        return np.unique(self.frame.acc[rows])

    def _buckets(self, config: AnalysisConfig) -> list[tuple[int, np.ndarray, np.ndarray, int]]:
        """Per bucket grid (copy: symbol and side; hedging: symbol group): (key base, row order, sorted packed key|time, window),
        built once per configuration."""
        cache = self.__dict__.setdefault("_sorted", {})
        ident = (config.correlated, config.copy_window_s, config.hedge_max_delay_s)
        if ident not in cache:
            frame = self.frame
            group, _sign = symbol_groups(frame, config)
            keys = [(frame.sym.astype(np.int64) * 2 + (frame.side > 0), int(config.copy_window_s * 1000)),
                    (group[frame.sym].astype(np.int64), int(config.hedge_max_delay_s * 1000))]
            built = []
            for hist_key, window in keys:
                base = int(hist_key.min()) - 1 if hist_key.size else 0
                packed = (hist_key - base) << 38 | (frame.open_ms - self.t0)
                order = np.argsort(packed, kind="stable")
                built.append((base, order, packed[order], window))
            cache[ident] = built
        return cache[ident]

    @property
    def t0(self) -> int:
        return (int(self.frame.open_ms.min()) if self.frame.n else 0) - (1 << 36)  # room for older batch trades

    def near_rows(self, batch: TradeFrame, config: AnalysisConfig) -> np.ndarray:
        """History rows the detectors could pair with the batch's trades: in each detector's bucket (copy:
        symbol and side; hedging: symbol group and size bin) the ``candidate_neighbours`` nearest opens on
        either side inside the window — the neighbourhood a full analysis searches for candidates."""
        frame = self.frame
        index = {name: i for i, name in enumerate(frame.symbols)}
        bsym = np.asarray([index.get(batch.symbols[s], -1) for s in batch.sym.tolist()], np.int64)
        known = bsym >= 0
        if not known.any() or not frame.n:
            return np.zeros(0, np.int64)
        bsym, bside, blots, bms = bsym[known], batch.side[known], batch.lots[known], batch.open_ms[known]
        group, _sign = symbol_groups(frame, config)
        batch_keys = [bsym * 2 + (bside > 0), group[bsym].astype(np.int64)]
        limits = [config.copy_candidate_neighbours, config.hedge_candidate_neighbours]
        low_bits = (1 << 38) - 1
        found = []
        for batch_key, limit, (base, order, sorted_packed, window) in zip(batch_keys, limits, self._buckets(config)):
            probe = np.maximum(batch_key - base, 0) << 38 | (bms - self.t0)
            at = np.searchsorted(sorted_packed, probe)
            for step in range(-limit, limit):
                pos = at + step
                ok = (pos >= 0) & (pos < sorted_packed.size)
                pos = np.where(ok, pos, 0)
                near = (ok & (sorted_packed[pos] >> 38 == probe >> 38)
                        & (np.abs((sorted_packed[pos] & low_bits) - (probe & low_bits)) <= window))
                found.append(order[pos[near]])
        return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)


def _candidate_partners(index: HistoryIndex, batch: TradeFrame, config: AnalysisConfig) -> np.ndarray:
    """History accounts that, with the batch, may reach stage 1's threshold with a batch account.

    The batch's trades are compared with their neighbours in the history (and with each other); a pair
    of accounts is a candidate when its new coincidences plus those the history already had (kept when
    ≥ 2) reach ``candidate_min_cooccurrence`` — or when the batch alone brings two or more.
    """
    from .detect import copy_buckets, hedging_buckets, stage1_rows

    frame = index.frame
    near = index.near_rows(batch, config)
    mini = concat(take(frame, near, quote_from=0, quote_to=-1), batch)
    history_rows = near.size  # take() keeps the history rows first
    n_hist = len(frame.accounts)
    names = {n: i for i, n in enumerate(frame.accounts)}
    extra: dict[str, int] = {}
    gid = np.asarray([names.get(n, -1) if n in names else extra.setdefault(n, n_hist + len(extra))
                      for n in mini.accounts], np.int64)
    partners = []
    for label, make in (("hedging", hedging_buckets), ("copy", copy_buckets)):
        i, j = stage1_rows(mini, make(mini, config), config)
        fresh = (i >= history_rows) | (j >= history_rows)
        a, b = gid[mini.acc[i[fresh]]], gid[mini.acc[j[fresh]]]
        big = n_hist + len(extra) + 1
        pk, new = unique(np.minimum(a, b) * big + np.maximum(a, b), counts=True)
        old_pk, old_counts = index.stage1.get(label, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        lo, hi = pk // big, pk % big
        previous = np.zeros(pk.size, np.int64)
        inside = hi < n_hist
        if old_pk.size and inside.any():
            lookup = lo[inside] * n_hist + hi[inside]
            at = np.clip(np.searchsorted(old_pk, lookup), 0, old_pk.size - 1)
            previous[inside] = np.where(old_pk[at] == lookup, old_counts[at], 0)
        ok = (previous + new >= config.candidate_min_cooccurrence) | (new >= 2)
        partners.append(lo[ok])
        partners.append(hi[ok])
    found = np.unique(np.concatenate(partners)) if partners else np.zeros(0, np.int64)
    return found[found < n_hist]


def analyze_batch(index: HistoryIndex, batch: TradeFrame, config: AnalysisConfig | None = None, *,
                  population: dict | None = None) -> tuple[Analysis, set[str]]:
    """Findings and scores of a new batch against the history; returns the analysis and the batch's accounts."""
    config = config or AnalysisConfig()
    frame = index.frame
    names = {n: i for i, n in enumerate(frame.accounts)}
    touched = set(batch.accounts)
    known = np.asarray(sorted({names[n] for n in batch.accounts if n in names}), np.int64)
    scope = np.union1d(known, _candidate_partners(index, batch, config))
    # identity counterparts: accounts sharing a session value with a batch account
    values = {v for v in batch.session_ip + batch.session_device if v}
    ip_values = set(batch.session_ip) | set(frame.session_ip)
    for a in known.tolist():
        values |= index.values_of.get(a, set())
    sharing = set()
    for value in values:
        members = index.by_value.get(value, ())
        if len(members) <= (config.link_household_max if value in ip_values else config.link_crowded_check_max):
            sharing |= members
    if sharing:
        scope = np.union1d(scope, np.asarray(sorted(sharing), np.int64))
    rows = index.rows_of(scope.astype(np.int64))
    lo = int(batch.order_ms.min()) - 60_000 if batch.n else None
    hi = int(batch.open_ms.max()) if batch.n else None
    history = take(frame, rows, quote_from=lo, quote_to=hi)
    combined = concat(history, batch)
    return analyze(combined, config, population=population), touched


__all__ = ["HistoryIndex", "analyze_batch", "concat", "take"]
