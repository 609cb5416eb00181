"""Behavioural risk score 0–100 per account, with its explanation.

Each feature is a float statistic of the account's own trades. A feature contributes
``weight × clip((value − benign) / (alarm − benign), 0, 1)`` points: nothing at or below the *benign*
level, its full weight at the *alarm* level; behaviour alone reaches at most ``BEHAVIOUR_CAP`` (80).
Detectors contribute their calibrated probability: a finding carries the chance that honest accounts
look like this, corrected for the number tested, and the account's probability of abuse is
``1 − ∏ chance`` over its findings. The score is ``100 × (1 − (1 − P_abuse) × (1 − behaviour / 100))``:
a strong finding puts an account above anything behaviour alone can reach, and behaviour orders the
rest. The scale is absolute; each feature's value is shown with its percentile among the firm's accounts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .detect import escalation_columns
from .frame import TradeFrame, unique

DAY_MS = 86_400_000
NEWS_WINDOW_MS = 120_000
SHORT_HOLD_MS = 60_000

#: name, weight, benign, alarm, what it means
FEATURES: tuple[tuple[str, float, float, float, str], ...] = (
    ("lot_escalation_after_loss", 25, 1.2, 2.0, "median lots after a losing trade ÷ lots of that trade"),
    ("profit_best_day_share", 15, 0.5, 0.9, "best day's profit ÷ all profitable days' profit"),
    ("news_profit_share", 15, 0.2, 0.7, "profit of trades opened ±2 min of high-impact news ÷ gross profit"),
    ("short_hold_share", 10, 0.3, 0.9, "share of trades held under 60 s"),
    ("strategy_shift", 10, 0.3, 1.0, "change of symbols, holding time or size between the first and second half"),
    ("volatility_exposure", 10, 1.5, 4.0, "lots-weighted volatility of the symbols traded ÷ the firm's median symbol"),
)
DETECTOR_POINTS = {"hedging": 35, "copy": 30, "latency": 35, "linkage": 20, "martingale": 25}  # legacy: unused
BEHAVIOUR_CAP = 80.0
QUANTILES = np.linspace(0, 1, 101)


@dataclass
class Scores:
    accounts: list[str]
    values: dict[str, np.ndarray]  # feature -> value per account
    contributions: dict[str, np.ndarray]
    hits: dict[int, list[str]]  # account index -> detectors that flagged it
    score: np.ndarray  # int per account
    population: dict[str, list[float]]  # feature -> 101 quantile points
    chances: dict[int, dict[str, float]] = None  # account index -> detector -> corrected chance of its finding
    behaviour: np.ndarray = None  # behaviour points per account (capped)

    def explain(self, a: int) -> dict:
        """The score of account ``a`` with its features, percentiles and the top contributors."""
        features = {}
        for name, _w, benign, alarm, meaning in FEATURES:
            value = float(self.values[name][a])
            features[name] = {"value": round(value, 4), "percentile": percentile(self.population[name], value),
                              "points": round(float(self.contributions[name][a]), 1), "benign": benign, "alarm": alarm,
                              "meaning": meaning}
        hits = self.hits.get(a, [])
        chances = (self.chances or {}).get(a, {})
        parts = [(f["points"], name) for name, f in features.items() if f["points"] > 0]
        parts += [(100.0 * (1 - chances.get(d, 0.01)), f"detector:{d}") for d in sorted(set(hits))]
        parts.sort(key=lambda p: (-p[0], p[1]))
        top = []
        for points, name in parts[:3]:
            if name.startswith("detector:"):
                chance = chances.get(name[9:], 0.01)
                top.append({"feature": name, "points": round(points, 1), "chance": float(f"{chance:.3g}"),
                            "why": f"flagged by the {name[9:]} detector (chance for an honest account {chance:.2g}, "
                                   "corrected for the accounts tested)"})
            else:
                f = features[name]
                top.append({"feature": name, "points": points, "value": f["value"], "percentile": f["percentile"],
                            "why": f"{f['meaning']} = {f['value']:g} (alarm at {f['alarm']:g}); "
                                   f"percentile {f['percentile']} of the firm's accounts"})
        return {"score": int(self.score[a]), "top": top, "features": features, "detectors": hits,
                "probability_of_abuse": round(1 - float(np.prod([chances.get(d, 0.01) for d in set(hits)])), 6)
                if hits else 0.0,
                "behaviour_points": round(float(self.behaviour[a]), 1) if self.behaviour is not None else None}


def percentile(points: list[float], value: float) -> int:
    """Where ``value`` sits among the population whose 101 quantile points are given (0–100)."""
    if not points:
        return 0
    return int(np.clip(np.searchsorted(np.asarray(points), value, side="right") - 1, 0, 100))


def _per_account(frame: TradeFrame, weights: np.ndarray) -> np.ndarray:
    return np.bincount(frame.acc, weights=weights, minlength=len(frame.accounts))


def _group_median(acc: np.ndarray, values: np.ndarray, n_acc: int, default: float) -> np.ndarray:
    out = np.full(n_acc, default)
    if not acc.size:
        return out
    order = np.lexsort((values, acc))
    a, v = acc[order], values[order]
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    ends = np.r_[starts[1:], a.size]
    lo = starts + (ends - starts - 1) // 2
    hi = starts + (ends - starts) // 2
    out[a[starts]] = (v[lo] + v[hi]) / 2
    return out


def features(frame: TradeFrame) -> dict[str, np.ndarray]:
    n_acc = len(frame.accounts)
    closed = frame.close_ms >= 0
    profit = frame.profit_e8.astype(np.float64) / 1e8
    # lot escalation after a loss
    rows, ratio, lost = escalation_columns(frame)
    escalation = _group_median(frame.acc[rows[lost]], ratio[lost], n_acc, 1.0)
    steps = np.bincount(frame.acc[rows[lost]], minlength=n_acc)
    escalation = np.where(steps >= 3, escalation, 1.0)
    # holding time
    hold = np.where(closed, frame.close_ms - frame.open_ms, 0)
    n_closed = _per_account(frame, closed)
    short = _per_account(frame, closed & (hold < SHORT_HOLD_MS)) / np.maximum(n_closed, 1)
    # profit concentration in one day
    day = np.where(closed, frame.close_ms // DAY_MS, 0)
    key = frame.acc.astype(np.int64) * 1_000_000 + (day - (day.min() if day.size else 0))
    keys = unique(key[closed])
    inverse = np.searchsorted(keys, key[closed])
    day_profit = np.bincount(inverse, weights=profit[closed]) if keys.size else np.zeros(0)
    day_acc = (keys // 1_000_000).astype(np.int64)
    positive = np.maximum(day_profit, 0)
    gross_days = np.bincount(day_acc, weights=positive, minlength=n_acc)
    best = np.zeros(n_acc)
    np.maximum.at(best, day_acc, positive)
    days = np.bincount(day_acc, minlength=n_acc)
    best_share = np.where((gross_days > 0) & (days >= 3), best / np.maximum(gross_days, 1e-12), 0.0)
    # profit in news windows
    gross = _per_account(frame, np.where(closed, np.maximum(profit, 0), 0))
    news_share = np.zeros(n_acc)
    if frame.news_ms:
        news_ms = np.asarray(frame.news_ms, np.int64)
        affects = np.zeros((len(news_ms), max(len(frame.symbols), 1)), bool)
        for k, symbols in enumerate(frame.news_symbols):
            affects[k, list(symbols)] = True
        idx = np.searchsorted(news_ms, frame.open_ms)
        inside = np.zeros(frame.n, bool)
        for cand in (idx - 1, idx):
            ok = (cand >= 0) & (cand < len(news_ms))
            c = np.where(ok, cand, 0)
            inside |= ok & (np.abs(news_ms[c] - frame.open_ms) <= NEWS_WINDOW_MS) & affects[c, frame.sym]
        news_profit = _per_account(frame, np.where(inside & closed, np.maximum(profit, 0), 0))
        news_share = np.where(gross > 0, news_profit / np.maximum(gross, 1e-12), 0.0)
    # strategy shift: first half of an account's trades against the second
    shift = _strategy_shift(frame, hold, closed)
    # volatility exposure
    volatility = _volatility_exposure(frame)
    return {"lot_escalation_after_loss": escalation, "profit_best_day_share": best_share,
            "news_profit_share": news_share, "short_hold_share": short, "strategy_shift": shift,
            "volatility_exposure": volatility}


def _strategy_shift(frame: TradeFrame, hold: np.ndarray, closed: np.ndarray) -> np.ndarray:
    n_acc = len(frame.accounts)
    order = frame.account_time_order()
    acc = frame.acc[order]
    counts = np.bincount(acc, minlength=n_acc)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank = np.arange(acc.size) - starts[acc]
    second = np.empty(frame.n, bool)
    second[order] = rank >= counts[acc] / 2
    out = np.zeros(n_acc)
    halves = {}
    for half in (False, True):
        mask = second == half
        halves[half] = (
            _group_median(frame.acc[mask & closed], hold[mask & closed].astype(np.float64), n_acc, np.nan),
            _group_median(frame.acc[mask], frame.lots[mask], n_acc, np.nan),
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        hold_change = np.abs(np.log(np.maximum(halves[True][0], 1000) / np.maximum(halves[False][0], 1000))) / math.log(4)
        size_change = np.abs(np.log(halves[True][1] / halves[False][1])) / math.log(4)
    # symbols: 1 - |both halves| / |either half|
    pair = frame.acc.astype(np.int64) * (len(frame.symbols) + 1) + frame.sym
    seen_first = unique(pair[~second])
    seen_second = unique(pair[second])
    both = np.bincount((np.intersect1d(seen_first, seen_second) // (len(frame.symbols) + 1)).astype(np.int64), minlength=n_acc)
    either = np.bincount((np.union1d(seen_first, seen_second) // (len(frame.symbols) + 1)).astype(np.int64), minlength=n_acc)
    symbol_change = 1 - both / np.maximum(either, 1)
    out = np.nanmax(np.vstack([np.nan_to_num(hold_change), np.nan_to_num(size_change), symbol_change]), axis=0)
    return np.where(counts >= 10, np.clip(out, 0, 1), 0.0)


def _volatility_exposure(frame: TradeFrame) -> np.ndarray:
    n_acc = len(frame.accounts)
    if frame.quote_ms.size < 3:
        return np.ones(n_acc)
    vol = np.full(len(frame.symbols), np.nan)
    mid = np.log((frame.quote_bid + frame.quote_ask) / 2)
    same = frame.quote_sym[1:] == frame.quote_sym[:-1]
    dt_s = np.maximum((frame.quote_ms[1:] - frame.quote_ms[:-1]) / 1000, 1e-3)
    scaled = np.where(same, np.diff(mid) / np.sqrt(dt_s), 0)
    s = frame.quote_sym[1:][same]
    total = np.bincount(s, weights=scaled[same] ** 2, minlength=len(frame.symbols))
    count = np.bincount(s, minlength=len(frame.symbols))
    vol = np.where(count > 1, np.sqrt(total / np.maximum(count, 1)), np.nan)
    if np.all(np.isnan(vol)):
        return np.ones(n_acc)
    relative = vol / np.nanmedian(vol)
    per_trade = np.nan_to_num(relative[frame.sym], nan=1.0)
    weight = _per_account(frame, frame.lots)
    return np.where(weight > 0, _per_account(frame, per_trade * frame.lots) / np.maximum(weight, 1e-12), 1.0)


def score_accounts(frame: TradeFrame, hits: dict[int, list[str]], *,
                   population: dict[str, list[float]] | None = None,
                   chances: dict[int, dict[str, float]] | None = None) -> Scores:
    """Scores of every account of ``frame``; ``population`` (quantile points) places values in a larger firm;
    ``chances`` (account → detector → corrected chance of its finding) calibrate the detector part."""
    values = features(frame)
    n_acc = len(frame.accounts)
    total = np.zeros(n_acc)
    contributions = {}
    for name, weight, benign, alarm, _ in FEATURES:
        points = weight * np.clip((values[name] - benign) / (alarm - benign), 0, 1)
        contributions[name] = points
        total += points
    behaviour = np.minimum(total, BEHAVIOUR_CAP)
    honest = np.ones(n_acc)  # ∏ chance over the account's findings
    chances = chances or {}
    for a, detectors in hits.items():
        own = chances.get(a, {})
        for d in set(detectors):
            honest[a] *= min(max(own.get(d, 0.01), 0.0), 1.0)
    combined = 100.0 * (1.0 - honest * (1.0 - behaviour / 100.0))
    score = np.clip(np.floor(combined + 1e-9), 0, 100).astype(np.int64)
    if population is None:
        population = {name: np.quantile(values[name], QUANTILES).round(6).tolist() if n_acc else [] for name, *_ in FEATURES}
    return Scores(frame.accounts, values, contributions, hits, score, population, chances, behaviour)


__all__ = ["BEHAVIOUR_CAP", "DETECTOR_POINTS", "FEATURES", "Scores", "features", "percentile", "score_accounts"]
