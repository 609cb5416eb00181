"""Issue 16's scale bound, the list pages' plans (SQLite, migrated database): the staff tasks' "done" view
(newest done first) walks ``ix_staff_tasks_done`` (migration 0025) instead of sorting every done task of the
firm for each page."""

from __future__ import annotations

from sqlalchemy import event, text

from propcrm.adapters.db.session import make_engine, migrate, sessions
from propcrm.services import tasks as task_service
from propcrm.services.catalog import ensure_firm


def test_the_done_tasks_are_read_along_an_index_not_sorted(tmp_path):
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    migrate(url)
    engine = make_engine(url)
    seen: list[tuple[str, object]] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        if "FROM staff_tasks" in statement and "ORDER BY" in statement:
            seen.append((statement, parameters))

    try:
        with sessions(engine).begin() as s:
            ensure_firm(s, firm_id="fa")
        event.listen(engine, "before_cursor_execute", note)
        with sessions(engine)() as s:
            page = task_service.list_tasks(s, firm_id="fa", status="done", limit=50, offset=100)
        event.remove(engine, "before_cursor_execute", note)
        assert page.rows == [] and len(seen) == 1
        statement, parameters = seen[0]
        with engine.connect() as conn:
            plan = " | ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))
    finally:
        engine.dispose()
    assert "ix_staff_tasks_done" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
