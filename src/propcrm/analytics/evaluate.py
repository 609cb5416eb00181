"""Precision and recall of each detector against what a synthetic firm planted (``synth/abuse.py``)."""

from __future__ import annotations

import numpy as np

from .detect import DETECTORS
from .run import Analysis


def evaluate(analysis: Analysis, truth: dict) -> dict:
    """Account-level precision/recall per detector, and false positives among honest-but-overlapping traders.

    A detector's *planted* accounts are the members of what was planted for it; its *flagged* accounts are
    the members of its findings. Precision = |flagged ∩ planted| / |flagged|, recall = |flagged ∩ planted| / |planted|.
    """
    overlap_groups = truth.get("honest_overlap", {})
    overlapping = {a for members in overlap_groups.values() for a in members}
    out = {}
    also = truth.get("also", {})
    for detector in DETECTORS:
        planted = {a for group in truth.get(detector, []) for a in group}
        # abusers of another kind who really do this too (a ring trading one signal is also copying):
        # flagging them is no error, missing them no miss
        tolerated = set(also.get(detector, ()))
        flagged = analysis.flagged(detector) - (tolerated - planted)
        hit = flagged & planted
        false = sorted(flagged - planted)
        out[detector] = {
            "planted": len(planted), "flagged": len(flagged), "true_positives": len(hit),
            "precision": round(len(hit) / len(flagged), 4) if flagged else (1.0 if not planted else 0.0),
            "recall": round(len(hit) / len(planted), 4) if planted else 1.0,
            "false_positives": false[:50],
            "missed": sorted(planted - flagged)[:50],
            "honest_overlap_false_positives": {
                name: sorted(set(members) & flagged) for name, members in overlap_groups.items()
            },
            "honest_overlap_accounts": len(overlapping),
        }
    return out


def risk_auc(analysis: Analysis, truth: dict) -> dict:
    """ROC AUC of the risk score: the chance that a planted abuser scores above an honest account (ties ½)."""
    abusers = {a for d in DETECTORS for group in truth.get(d, []) for a in group}
    names = analysis.frame.accounts
    scores = np.asarray(analysis.scores.score, np.float64)
    bad = np.asarray([n in abusers for n in names])
    pos, neg = scores[bad], scores[~bad]
    if not pos.size or not neg.size:
        return {"auc": None, "abusers": int(pos.size), "honest": int(neg.size)}
    ranks = _ranks(np.concatenate([pos, neg]))
    auc = (ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size)
    return {"auc": round(float(auc), 4), "abusers": int(pos.size), "honest": int(neg.size),
            "abusers_min_score": int(pos.min()), "honest_max_score": int(neg.max()),
            "honest_at_or_above_lowest_abuser": int(np.count_nonzero(neg >= pos.min()))}


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size)
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    for lo, hi in zip(starts.tolist(), ends.tolist()):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2  # average rank of a tie
    return ranks


def evaluation_text(result: dict) -> str:
    lines = [f"{'detector':<11} {'planted':>7} {'flagged':>7} {'precision':>9} {'recall':>7}  honest-overlap FP"]
    for detector, r in result.items():
        fp = {k: len(v) for k, v in r["honest_overlap_false_positives"].items()}
        fp_text = ", ".join(f"{k} {v}" for k, v in fp.items())
        lines.append(f"{detector:<11} {r['planted']:>7} {r['flagged']:>7} {r['precision']:>9.3f} {r['recall']:>7.3f}  {fp_text}")
        if r["false_positives"]:
            lines.append(f"{'':11} false positives: {', '.join(r['false_positives'][:10])}")
        if r["missed"]:
            lines.append(f"{'':11} missed: {', '.join(r['missed'][:10])}")
    return "\n".join(lines) + "\n"


__all__ = ["evaluate", "evaluation_text", "risk_auc"]
