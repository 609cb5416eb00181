"""Executemany at the driver for the evaluation's group commit (SQLite).

``session.execute(statement, rows)`` with a list of rows runs each row through SQLAlchemy's parameter
machinery (``construct_params`` and a bind processor call per value, for every row) before the driver
sees it; for the few hundred rows of each table a worker pass writes, that cost more CPU than SQLite's
own work. :func:`executemany` compiles a statement once, takes the bind processors of its parameters
once, and hands the driver the processed rows: the same SQL and the same values (each value goes
through the same type's processor), without the per-row machinery.

Only on SQLite (the embedded deployment; PostgreSQL keeps SQLAlchemy's path, which batches inserts
into multi-row statements), and only for a statement whose parameters are all given by the rows: one
that needs a column default computed in Python, or an expanding (``IN``) parameter, goes through
``session.execute`` as before. :data:`ENABLED` False sends every statement that way (the equality
tests' reference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session

#: False: every statement goes through ``session.execute`` (SQLAlchemy's executemany)
ENABLED = True

_CONSTANT = object()  # marks a parameter bound to a column's constant default
_Plan = tuple[str, tuple[tuple[str, Callable[[Any], Any] | None], ...]]
_plans: dict[tuple[int, tuple[str, ...]], tuple[object, _Plan | None]] = {}


def applies(session: Session) -> bool:
    """Whether :func:`executemany` runs at the driver for ``session`` (SQLite, and enabled)."""
    return ENABLED and session.get_bind().dialect.name == "sqlite"


def executemany(session: Session, statement, rows: Sequence[dict]) -> None:
    """``session.execute(statement, rows)`` — every row has the same keys — inside the caller's
    transaction; at the driver on SQLite. ``statement`` should be built once (a module constant): its
    compiled form is kept by identity."""
    if not rows:
        return
    if not applies(session):
        session.execute(statement, list(rows))
        return
    keys = tuple(rows[0])
    plan = _plan(session, statement, keys)
    if plan is None or any(len(row) != len(keys) for row in rows):
        session.execute(statement, list(rows))
        return
    sql, params = plan
    try:
        values = [tuple([row[name] if process is None else process(row[name]) if process is not _CONSTANT else name
                         for name, process in params]) for row in rows]
    except Exception:  # noqa: BLE001 - a value its type refuses: SQLAlchemy's path raises what it always raised
        session.execute(statement, list(rows))
        raise  # (not reached: the same processors refuse the same value there)
    session.connection().exec_driver_sql(sql, values)


def _plan(session: Session, statement, keys: tuple[str, ...]) -> _Plan | None:
    cache_key = (id(statement), keys)
    cached = _plans.get(cache_key)
    if cached is not None and cached[0] is statement:
        return cached[1]
    dialect = session.get_bind().dialect
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    plan: _Plan | None = None
    names = compiled.positiontup
    # a column the rows leave out whose default is a constant (``default=0``) is bound to that constant
    constants = {column.key: column.default.arg for column in compiled.insert_prefetch
                 if column.key not in keys and column.default is not None and column.default.is_scalar}
    if (names is not None and len(constants) == len(compiled.insert_prefetch) and not compiled.update_prefetch
            and all((name in keys or name in constants) and not compiled.binds[name].expanding for name in names)):
        params = []
        for name in names:
            process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            if name in constants:  # (the processed constant stands in the name's place)
                params.append((constants[name] if process is None else process(constants[name]), _CONSTANT))
            else:
                params.append((name, process))
        plan = (compiled.string, tuple(params))
    if len(_plans) > 256:
        _plans.clear()
    _plans[cache_key] = (statement, plan)
    return plan


__all__ = ["ENABLED", "applies", "executemany"]
