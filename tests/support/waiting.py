"""Waiting for what arrives by the broker: a check repeated until it holds, with no assertion on time."""

from __future__ import annotations

import asyncio


async def eventually(check, *, timeout: float = 20.0, interval: float = 0.1):
    """The check's result once it is truthy; fails with the last result after `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"not so after {timeout}s: last saw {result!r}")
        await asyncio.sleep(interval)
