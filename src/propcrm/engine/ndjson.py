"""Reading NDJSON event files in large chunks, keeping line numbers for every rejection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..domain.events import Rejected, decode_lines

CHUNK_BYTES = 4 << 20


def read_chunks(
    source: BinaryIO, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[list[Any], list[int], list[Rejected]]]:
    """Yield (events, their line numbers, rejected lines) for each chunk of whole lines."""
    line = 1
    tail = b""
    while True:
        block = source.read(chunk_bytes)
        if not block:
            break
        block = tail + block
        cut = block.rfind(b"\n")
        if cut < 0:
            tail = block
            continue
        whole, tail = block[: cut + 1], block[cut + 1 :]
        yield decode_lines(whole, line)
        line += whole.count(b"\n")
    if tail.strip():
        yield decode_lines(tail, line)


def iter_file(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[list[Any], list[int], list[Rejected]]]:
    if str(path) == "-":
        import sys

        yield from read_chunks(sys.stdin.buffer, chunk_bytes)
        return
    with open(path, "rb") as handle:
        yield from read_chunks(handle, chunk_bytes)
