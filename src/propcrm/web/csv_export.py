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
# the first rows go out on their own, before the second read: at 100,000 accounts a first read of 500 rows (a
# page of traders with their counts, of audit entries with their JSON) cost 85-110 ms of CPU before a byte was
# sent; 50 cost what the list page does
FIRST = 50


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
    """``header`` then ``rows``, as CSV text in chunks: the header and the first ``FIRST`` rows, then a chunk
    every ``BATCH`` rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow([cell(value) for value in row])
        count += 1
        if count == FIRST or (count - FIRST) % BATCH == 0:
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


def batched(fetch: Callable[[int, int], list[Any]], *, limit: int = BATCH, first: int = FIRST) -> Iterator[Any]:
    """Every item of a paged read: ``fetch(first, 0)``, then ``fetch(limit, offset)`` until a short page (the
    first page small, so that its rows are sent before the rest is read)."""
    offset, size = 0, min(first, limit)
    while True:
        items = fetch(size, offset)
        yield from items
        if len(items) < size:
            return
        offset += size
        size = limit


__all__ = ["BATCH", "FIRST", "FORMULA_START", "batched", "cell", "csv_response", "rows_as_csv"]
