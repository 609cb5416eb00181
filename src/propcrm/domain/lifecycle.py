"""A trader's life in the firm as an explicit state machine. Pure.

::

    lead ──convert──► registered ──order paid──► customer ──challenge assigned──► evaluation
                          ▲                          │                           │     │
                          └──────── refund ──────────┘              final phase  │     │ breach
                                                                       passed    ▼     ▼
                                                       funded ◄──────────── evaluation   failed
                                                         │  (payouts, scaling)           │
                                                         └──── breach ──► failed ──reset / re-purchase──► customer / evaluation

    any stage except terminated ──► suspended ──reinstate──► the stage the facts say
    any stage ──► terminated (final)

Only the transitions below are allowed; a refusal names the ones that are.
"""

from __future__ import annotations

from collections import deque

STAGES = ("registered", "customer", "evaluation", "funded", "failed", "suspended", "terminated")
HELD = ("suspended", "terminated")  # set by staff; facts (orders, accounts) never move a trader out of them

TRANSITIONS: dict[str, tuple[str, ...]] = {
    "registered": ("customer", "suspended", "terminated"),
    "customer": ("evaluation", "registered", "suspended", "terminated"),
    "evaluation": ("funded", "failed", "customer", "suspended", "terminated"),
    "funded": ("failed", "evaluation", "suspended", "terminated"),
    "failed": ("customer", "evaluation", "suspended", "terminated"),
    "suspended": ("registered", "customer", "evaluation", "funded", "failed", "terminated"),
    "terminated": (),
}

KYC_STATUSES = ("pending", "approved", "rejected", "expired")


def allowed(stage: str) -> tuple[str, ...]:
    return TRANSITIONS.get(stage, ())


def can(from_stage: str, to_stage: str) -> bool:
    return to_stage in allowed(from_stage)


def path(from_stage: str, to_stage: str) -> list[str] | None:
    """The shortest chain of allowed transitions from one stage to another (without ``from_stage``),
    never passing through ``suspended`` or ``terminated``; ``None`` when there is none."""
    if from_stage == to_stage:
        return []
    seen = {from_stage}
    queue: deque[tuple[str, list[str]]] = deque([(from_stage, [])])
    while queue:
        stage, chain = queue.popleft()
        for nxt in allowed(stage):
            if nxt in seen or (nxt in HELD and nxt != to_stage):
                continue
            if nxt == to_stage:
                return chain + [nxt]
            seen.add(nxt)
            queue.append((nxt, chain + [nxt]))
    return None


def refusal(from_stage: str, to_stage: str) -> str:
    options = allowed(from_stage)
    return (f"a trader cannot go from {from_stage} to {to_stage}; allowed from {from_stage}: "
            + (", ".join(options) if options else "nothing (final)"))


__all__ = ["HELD", "KYC_STATUSES", "STAGES", "TRANSITIONS", "allowed", "can", "path", "refusal"]
