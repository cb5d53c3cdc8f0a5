"""SQLite writers of one process queueing for the write lock: throughput and each transaction's wait.

    .venv/bin/python -m bench.sqlite_writers [--writers 8] [--transactions 50]

Each writer commits one-row transactions (synchronous=FULL, as the services) on
one file through `shared.db.Database`. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from sqlalchemy import text

from shared.db import Database


async def run(writers: int, transactions: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        db = Database(f"sqlite+aiosqlite:///{scratch}/writers.db")
        async with db.sessions() as session, session.begin():
            await session.execute(text("CREATE TABLE t (x INTEGER)"))
        waits: list[float] = []

        async def writer(n: int) -> None:
            for _ in range(transactions):
                started = time.perf_counter()
                async with db.sessions() as session, session.begin():
                    await session.execute(text("INSERT INTO t VALUES (:x)"), {"x": n})
                waits.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(writer(n) for n in range(writers)))
        took = time.perf_counter() - began
        await db.dispose()
    waits.sort()
    total = len(waits)
    print(
        f"{total} commits by {writers} writers in {took:.2f} s; per transaction p50 "
        f"{waits[total // 2] * 1000:.1f} ms, p99 {waits[int(total * 0.99) - 1] * 1000:.1f} ms, max {waits[-1] * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--transactions", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.writers, args.transactions))


if __name__ == "__main__":
    main()
