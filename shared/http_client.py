"""HTTP clients the platform ships (the demo, tools): they honour `429` and `503` with `Retry-After`.

A service that says "slow down: try again in 2 s" means the caller, not one
request: every request through the client waits the pause out, then goes again.
Without that, a client with several requests in flight keeps spending its
budget on refusals, and a rerun never catches up (docs/security.md, rate limits).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx

RETRIED_STATUSES = (429, 503)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds: delay-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class RetryAfterTransport(httpx.AsyncBaseTransport):
    """Wraps a transport: a `429` or `503` carrying `Retry-After` pauses every request of the client, then retries.

    Only those: the service refused before doing anything (the rate limit) or rolled
    back (a lock timeout), so going again is safe. Gives up after `max_attempts`
    tries of one request, answering the last refusal; a pause longer than
    `max_wait` seconds is cut to it.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        max_attempts: int = 30,
        max_wait: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.clock = clock
        self.sleep = sleep
        self.retried = 0
        """How many refusals were waited out: a demo reports it."""
        self._resume_at = 0.0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        attempt = 1
        while True:
            pause = self._resume_at - self.clock()
            if pause > 0:
                await self.sleep(pause)
            response = await self.inner.handle_async_request(request)
            if response.status_code not in RETRIED_STATUSES or attempt >= self.max_attempts:
                return response
            wait = retry_after_seconds(response.headers.get("retry-after"))
            if wait is None:
                return response
            await response.aread()
            await response.aclose()
            self._resume_at = max(self._resume_at, self.clock() + min(wait, self.max_wait))
            self.retried += 1
            attempt += 1

    async def aclose(self) -> None:
        await self.inner.aclose()


def polite_client(
    base_url: str, *, max_connections: int = 16, timeout: float = 60.0, inner: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for one service, through `RetryAfterTransport`."""
    transport = RetryAfterTransport(
        inner or httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=max_connections))
    )
    return httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)
