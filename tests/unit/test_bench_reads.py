"""``propcrm bench ingest``'s own looks at the database (the watcher's pending count, every 2 ms, and the
highest stored position after each request) must not take SQLite's write lock: queued for it in SQLite's
busy handler behind the server's writers they measured their own waits as the server's latency
(docs/benchmarks.md, "One driver …")."""

import shutil
import sqlite3

from sqlalchemy import event

from propcrm.adapters.db.session import make_engine
from propcrm.tools.bench_service import _pending, _top


def test_the_bench_reads_begin_deferred_and_pass_a_held_write_lock(sqlite_template, tmp_path):
    path = tmp_path / "propcrm.db"
    shutil.copyfile(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: statements.append(sql))
    try:
        assert _pending(engine) == (0, None)
        assert _top(engine) is None
        begins = [sql for sql in statements if sql.startswith("BEGIN")]
        assert begins and all(sql == "BEGIN DEFERRED" for sql in begins), begins
        writer = sqlite3.connect(path, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")  # a server's batch holding the write lock
            writer.execute("INSERT INTO cluster_checkpoints (stream, partition, seq, state_seq, updated_at) "
                           "VALUES ('x', 0, 0, 0, '2026-01-01')")
            assert _pending(engine) == (0, None)  # read at once from the last committed state
            assert _top(engine) is None
        finally:
            writer.execute("ROLLBACK")
            writer.close()
    finally:
        engine.dispose()
