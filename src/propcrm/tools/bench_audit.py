"""The audit log's append path (issue 14): ``python -m propcrm.tools.bench_audit``.

* ``contention``: PostgreSQL, two firms' writers at once, each 40 transactions of ``append_many`` (5 entries)
  followed by 20 ms of other work before the commit (a partition worker's batch). Prints the wall time
  and the time each writer spent appending and committing (waiting for the append lock, mostly).
* ``cpu``: one writer, 400 transactions of ``append_many`` (5 entries, one firm): CPU µs per transaction.

Each run creates a scratch database (``propcrm_bench_audit`` on PostgreSQL at ``--pg``, a temporary file
on SQLite) and drops it afterwards. Run it from two checkouts to compare.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

from sqlalchemy import create_engine, text

from ..adapters.db.session import make_engine, migrate, sessions
from ..services import audit

NAME = "propcrm_bench_audit"


def _database(backend: str, pg: str) -> tuple[str, object]:
    if backend == "sqlite":
        return f"sqlite:///{tempfile.mkdtemp()}/bench.db", None
    admin = create_engine(f"{pg}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{NAME}"'))
        conn.execute(text(f'CREATE DATABASE "{NAME}"'))
    return f"{pg}/{NAME}", admin


def _batch(firm: str) -> list[dict]:
    return [dict(actor="w", action="decision.breach", entity="account", entity_id=str(j), firm_id=firm,
                 after={"v": j}) for j in range(5)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("contention", "cpu"))
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    url, admin = _database("postgresql" if args.what == "contention" else args.backend, args.pg)
    migrate(url)
    engine = make_engine(url)
    Session = sessions(engine)
    try:
        if args.what == "contention":
            inside: dict[str, float] = {}

            def writer(firm: str) -> None:
                spent = 0.0
                for _ in range(40):
                    started = time.monotonic()
                    with Session.begin() as s:  # (the entries are written, and the lock taken, by the commit)
                        audit.append_many(s, _batch(firm))
                        time.sleep(0.02)  # the rest of the unit of work
                    spent += time.monotonic() - started - 0.02
                inside[firm] = spent

            threads = [threading.Thread(target=writer, args=(firm,)) for firm in ("fa", "fb")]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.monotonic() - started
            print(f"contention: wall {wall:.2f} s for 2 x 40 transactions; appending and committing: "
                  f"fa {inside['fa']:.2f} s, fb {inside['fb']:.2f} s")
        else:
            for _ in range(20):
                with Session.begin() as s:
                    audit.append_many(s, _batch("fa"))
            cpu = time.process_time()
            for _ in range(400):
                with Session.begin() as s:
                    audit.append_many(s, _batch("fa"))
            print(f"cpu ({args.backend}): {(time.process_time() - cpu) * 1e6 / 400:.0f} µs CPU per transaction")
        with Session() as s:
            assert audit.verify(s).ok
    finally:
        engine.dispose()
        if admin is not None:
            with admin.connect() as conn:  # type: ignore[attr-defined]
                conn.execute(text(f'DROP DATABASE IF EXISTS "{NAME}"'))


if __name__ == "__main__":
    main()
