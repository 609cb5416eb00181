"""``propcrm bench pseudonym``: the leaderboard's check that a pseudonym is not one of the firm's account ids
or logins (services/leaderboard.py, :func:`~propcrm.services.leaderboard.is_account_name`), at a firm
with many accounts.

Builds (or reuses) a SQLite database with ``--accounts`` accounts in one firm, then times, in process CPU
time (SQLite runs in the process, so its work is counted), the median of ``--runs`` checks of a free
pseudonym (the worst case: nothing found, every probe done) two ways:

- *walk*: the check as it was before migration 0024 — ``lower(external_id) IN (…) OR lower(login) IN
  (…)`` over the firm's accounts, which no index answers (every account of the firm is read);
- *index*: :func:`is_account_name` — two probes of the (firm, ``lower(…)``) expression indexes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from sqlalchemy import func, insert, or_, select

from ..adapters.db import models as m
from ..adapters.db.session import make_engine, migrate, sessions
from ..domain.rulepack import load_pack
from ..services import leaderboard
from ..services.catalog import add_pack, ensure_firm

FIRM = "bench-lb"
BATCH = 5_000


def build(url: str, *, accounts: int, console: Console) -> None:
    engine = make_engine(url)
    try:
        with sessions(engine).begin() as s:
            ensure_firm(s, firm_id=FIRM)
            pack = load_pack("two-step-100k")
            version = add_pack(s, firm_id=FIRM, pack=pack, activate=True).id
            table = m.Account.__table__
            for start in range(0, accounts, BATCH):
                s.execute(insert(table), [{"firm_id": FIRM, "external_id": f"ACC-{n:07d}", "platform": "mt5",
                                           "login": f"{5_000_000 + n}", "pack_version_id": version,
                                           "phase": pack.phases[0].name, "status": "active"}
                                          for n in range(start, min(start + BATCH, accounts))])
        console.print(f"built {accounts:,} accounts of firm {FIRM}")
    finally:
        engine.dispose()


def _walk(session, folded: str) -> bool:
    """The check before migration 0024 (kept here only to measure against)."""
    names = [folded, folded.replace(" ", "")]
    return bool(session.scalar(select(func.count()).select_from(m.Account).where(
        m.Account.firm_id == FIRM, or_(func.lower(m.Account.external_id).in_(names),
                                       func.lower(m.Account.login).in_(names)))))


def bench_pseudonym(*, accounts: int = 100_000, runs: int = 21, db: str | None = None,
                    console: Console | None = None) -> dict[str, float]:
    console = console or Console()
    path = Path(db) if db else Path(tempfile.mkdtemp(prefix="propcrm-bench-lb-")) / "lb.db"
    url = f"sqlite:///{path}"
    fresh = not path.exists()
    migrate(url)
    if fresh:
        build(url, accounts=accounts, console=console)
    engine = make_engine(url)
    out: dict[str, float] = {}
    try:
        with sessions(engine)() as s:
            count = s.scalar(select(func.count()).select_from(m.Account).where(m.Account.firm_id == FIRM))
            assert leaderboard.is_account_name(s, firm_id=FIRM, text="acc-0000042")  # the check finds one
            assert _walk(s, "acc-0000042")
            for name, check in (("walk", lambda: _walk(s, "swift otter 417")),
                                ("index", lambda: leaderboard.is_account_name(s, firm_id=FIRM,
                                                                              text="swift otter 417"))):
                samples = []
                for _ in range(runs):
                    begun = time.process_time()
                    assert not check()
                    samples.append((time.process_time() - begun) * 1000)
                out[name] = statistics.median(samples)
                console.print(f"  {name}: median {out[name]:.3f} ms CPU over {runs} checks ({count:,} accounts)")
    finally:
        engine.dispose()
    return out


__all__ = ["bench_pseudonym", "build"]
