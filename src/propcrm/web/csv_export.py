"""CSV exports of the staff lists: streamed, read in batches from a read-only unit of work of their own,
and safe to open in a spreadsheet.

**Formula injection**: a cell a spreadsheet would run as a formula — text starting with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return — gets a leading apostrophe (OWASP's advice), unless it is a plain number
(``-12.50`` stays a number). Trader names, messages and audit texts are user text, so this matters.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
BATCH = 500


def cell(value: Any) -> str:
    """One value as CSV text: exact decimals, ISO-8601 UTC times, formulas defused."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc)
        return value.isoformat()
    text = str(value)
    if text.startswith(FORMULA_START) and not _NUMBER.match(text):
        return "'" + text
    return text


def rows_as_csv(header: list[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """``header`` then ``rows``, as CSV text in chunks (one a batch of rows)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow([cell(value) for value in row])
        count += 1
        if count % BATCH == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def csv_response(request: Request, filename: str, header: list[str],
                 produce: Callable[[Session], Iterable[Iterable[Any]]]) -> StreamingResponse:
    """Stream ``produce(session)``'s rows as a download; ``session`` is a read-only unit of work opened for
    the stream (the request's own has ended by the time the body is sent)."""
    factory = request.app.state.read_sessions

    def body() -> Iterator[str]:
        with factory() as session:
            yield from rows_as_csv(header, produce(session))

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(body(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{filename}-{stamp}.csv"', "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff"})


def batched(fetch: Callable[[int, int], list[Any]], *, limit: int = BATCH) -> Iterator[Any]:
    """Every item of a paged read: ``fetch(limit, offset)`` until a short page."""
    offset = 0
    while True:
        items = fetch(limit, offset)
        yield from items
        if len(items) < limit:
            return
        offset += limit


__all__ = ["FORMULA_START", "batched", "cell", "csv_response", "rows_as_csv"]
