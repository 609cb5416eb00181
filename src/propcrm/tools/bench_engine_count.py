"""The engine run of ``propcrm bench engine`` alone, over the first chunks of its file: for counting
instructions, the one figure of the engine's speed that the machine's load does not move.

    valgrind --tool=cachegrind --cache-sim=no python -m propcrm.tools.bench_engine_count 4
    valgrind --tool=cachegrind --cache-sim=no python -m propcrm.tools.bench_engine_count 0

The difference of the two ``I refs`` divided by the events printed is the engine's instructions per
event (decode and every rule, as ``propcrm replay`` runs them), start-up excluded. ``--accounts`` and
``--events`` pick the file as the bench does (generated once, cached under ``PROPCRM_CACHE``).
"""

from __future__ import annotations

import argparse

from rich.console import Console

from ..domain.program import compile_pack
from ..domain.rulepack import parse_pack
from .bench_engine import BENCH_PACK, CHUNK, firm_file, line_chunks, run_engine


def count_run(chunks: int, *, accounts: int = 10_000, events: int = 2_000_000) -> tuple[int, int]:
    """Run the engine over the first ``chunks`` chunks of the bench file: (events applied, decisions)."""
    pack = compile_pack(parse_pack(BENCH_PACK))
    path = firm_file(accounts, events, Console(stderr=True))
    with open(path, "rb") as handle:
        data = handle.read((chunks + 1) * CHUNK) if chunks else b""
    engine = run_engine(line_chunks(data)[:chunks], pack)
    return engine.stats.events, sum(engine.stats.decisions.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m propcrm.tools.bench_engine_count")
    parser.add_argument("chunks", type=int, help="chunks of 4 MB from the start of the file (0: start-up only)")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    args = parser.parse_args(argv)
    events, decisions = count_run(args.chunks, accounts=args.accounts, events=args.events)
    print(f"{events} events, {decisions} decisions")


if __name__ == "__main__":
    main()
