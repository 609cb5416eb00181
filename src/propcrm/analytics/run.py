"""One analysis over a frame: every detector, the risk scores, and the report (text or JSON)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .detect import (DETECTORS, AnalysisConfig, Finding, find_copy, find_hedging, find_latency, find_linkage,
                     find_martingale)
from .frame import TradeFrame
from .score import Scores, score_accounts


@dataclass
class Analysis:
    frame: TradeFrame
    findings: dict[str, list[Finding]]
    links: list[dict]
    scores: Scores
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def crowded(self) -> list[dict]:
        """IPs shared by more accounts than a household (office, VPN, carrier NAT), with the pairs corroborated."""
        return self.frame.__dict__.get("_crowded", [])

    def flagged(self, detector: str) -> set[str]:
        return {a for f in self.findings[detector] for a in f.accounts}

    def all_findings(self) -> list[Finding]:
        return [f for d in DETECTORS for f in self.findings[d]]

    def to_dict(self, *, scores_at_least: int = 0, only_accounts: set[str] | None = None) -> dict:
        frame = self.frame
        scored = []
        for a in np.argsort(-self.scores.score, kind="stable").tolist():
            name = frame.accounts[a]
            if self.scores.score[a] < scores_at_least or (only_accounts is not None and name not in only_accounts):
                continue
            scored.append({"account": name, **self.scores.explain(a)})
        findings = [f.to_dict() for f in self.all_findings()
                    if only_accounts is None or set(f.accounts) & only_accounts]
        return {"accounts": len(frame.accounts), "trades": frame.n, "findings": findings,
                "counts": {d: len(self.findings[d]) for d in DETECTORS}, "links": len(self.links),
                "crowded_values": self.crowded,
                "risk_scores": scored, "timings_s": {k: round(v, 3) for k, v in self.timings.items()}}


def analyze(frame: TradeFrame, config: AnalysisConfig | None = None, *, population: dict | None = None,
            detectors: tuple[str, ...] = DETECTORS) -> Analysis:
    """Run the detectors and score every account of ``frame``."""
    config = config or AnalysisConfig()
    timings: dict[str, float] = {}
    findings: dict[str, list[Finding]] = {d: [] for d in DETECTORS}
    links: list[dict] = []
    runners = {"linkage": None, "hedging": find_hedging, "copy": find_copy, "latency": find_latency,
               "martingale": find_martingale}
    # linkage last: a crowded IP links a pair only with corroboration, and trading together is one
    for name in sorted(DETECTORS, key=lambda d: d == "linkage"):
        if name not in detectors:
            continue
        started = time.perf_counter()
        if name == "linkage":
            corroborated = {(x, y) for d in ("hedging", "copy") for f in findings[d]
                            for x in f.accounts for y in f.accounts if x < y}
            links, findings[name] = find_linkage(frame, config, corroborated)
        else:
            findings[name] = runners[name](frame, config)
        timings[name] = time.perf_counter() - started
    started = time.perf_counter()
    index = {n: i for i, n in enumerate(frame.accounts)}
    hits: dict[int, list[str]] = {}
    chances: dict[int, dict[str, float]] = {}
    for name, items in findings.items():
        for f in items:
            for account in f.accounts:
                hits.setdefault(index[account], []).append(name)
                own = chances.setdefault(index[account], {})
                chance = f.chance if f.chance is not None else config.chance_alpha
                own[name] = min(own.get(name, 1.0), chance)
    scores = score_accounts(frame, hits, population=population, chances=chances)
    timings["risk_score"] = time.perf_counter() - started
    return Analysis(frame, findings, links, scores, timings)


def report_text(analysis: Analysis, *, top: int = 20, trades_per_finding: int = 5) -> str:
    """What a risk officer reads: each finding with its first matched trades, then the riskiest accounts."""
    frame, lines = analysis.frame, []
    lines.append(f"analysed {len(frame.accounts):,} accounts, {frame.n:,} trades")
    lines.append("findings: " + ", ".join(f"{d} {len(analysis.findings[d])}" for d in DETECTORS))
    for f in analysis.all_findings():
        lines.append("")
        lines.append(f"[{f.detector}] score {f.score}: {f.title}")
        lines.append(f"  accounts: {', '.join(f.accounts)}")
        for line in _evidence_lines(f, trades_per_finding):
            lines.append("  " + line)
    if analysis.crowded:
        lines.append("")
        lines.append(f"crowded values (weak evidence, linked only with corroboration): {len(analysis.crowded)}")
        for c in analysis.crowded[:top]:
            extra = f", {len(c['corroborated'])} corroborated pairs" if c["corroborated"] else ""
            lines.append(f"  {c['via']} {c['value']}: {c['accounts']} accounts of {c['people']} people{extra}")
    lines.append("")
    lines.append(f"riskiest accounts (top {top}):")
    for a in np.argsort(-analysis.scores.score, kind="stable")[:top].tolist():
        explanation = analysis.scores.explain(a)
        if explanation["score"] == 0:
            break
        reasons = "; ".join(t["why"] for t in explanation["top"])
        lines.append(f"  {frame.accounts[a]}: {explanation['score']} — {reasons}")
    return "\n".join(lines) + "\n"


def _trade_line(t: dict) -> str:
    text = f"{t['account']} {t['position']} {t['side']} {t['lots']} {t['symbol']} @ {t['open_price']} {t['opened_at']}"
    if "closed_at" in t:
        text += f" → {t['close_price']} {t['closed_at']} net {t['net_profit']}"
    return text


def _evidence_lines(f: Finding, limit: int) -> list[str]:
    ev, out = f.evidence, []
    if f.detector == "linkage":
        for link in ev["links"][: limit * 2]:
            out.append(f"{link['account_a']} ↔ {link['account_b']} via {link['via']} {link['value']}"
                       + (f" (last seen {link['last_seen']})" if link.get("last_seen") else ""))
    elif f.detector in ("hedging", "copy"):
        for pair in ev["pairs"]:
            head = f"{pair['accounts'][0]} ↔ {pair['accounts'][1]}: {pair['matched']} matched trades"
            if f.detector == "hedging":
                head += f", combined P/L {pair['combined_profit']}, net exposure {pair['net_exposure']}"
            else:
                head += f", size ratio {pair['size_ratio_median']} (consistency {pair['size_ratio_consistency']})"
            out.append(head)
            for t in pair["trades"][:limit]:
                out.append(f"  {_trade_line(t['a'])}  |  {_trade_line(t['b'])}  (gap {t['gap_s']} s)")
    elif f.detector == "latency":
        for t in ev["trades"][:limit]:
            ref = t["reference_at_fill"]
            out.append(f"{_trade_line(t)}; market at fill bid {ref['bid']} ask {ref['ask']} ({ref['at']}), "
                       f"gap {t['gap_in_traders_favour']} ({t['gap_spreads']} spreads)")
    elif f.detector == "martingale":
        for step in ev["steps"][:limit]:
            out.append(f"{_trade_line(step['after_loss'])}  ⇒  next {step['next']['lots']} lots "
                       f"(×{step['lot_multiplier']:g}) {step['next']['opened_at']}")
    return out


__all__ = ["Analysis", "analyze", "report_text"]
