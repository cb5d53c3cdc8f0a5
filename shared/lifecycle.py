"""Background loops that stop between their rounds of work, never inside one.

A service's loops (the outbox relay, consumers, schedulers, the webhook sender)
are stopped when the service stops (SIGTERM in a deploy, Ctrl-C, a test's end).
Cancelled inside a database call, a round would be torn mid-transaction, and
SQLAlchemy's asyncio pool cannot take back a connection whose task was cancelled
inside the driver: it stays checked out (on SQLite, holding the write lock) until
the garbage collector finds it. So a loop marks each round `with self.working():`;
`stop()` cancels it at once if it is between rounds (sleeping, waiting for a fetch),
or as soon as the round in hand ends. The app gives them a grace
(`ServiceSettings.stop_grace_seconds`), then cancels whatever still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class StopsBetweenRounds:
    """Mixed into a background loop: call `started()` first in `run()`, wrap each round in `working()`."""

    _loop_task: asyncio.Task[None] | None = None
    _in_round: bool = False
    _stop_asked: bool = False

    def started(self) -> None:
        self._loop_task = asyncio.current_task()
        self._stop_asked = False

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        """A round of work that a stop lets finish; none starts once a stop is asked."""
        if self._stop_asked:
            raise asyncio.CancelledError
        self._in_round = True
        try:
            yield
        finally:
            self._in_round = False
            if self._stop_asked and self._loop_task is not None:
                self._loop_task.cancel()  # delivered at the loop's next wait, between rounds

    def stop(self) -> None:
        """Stop now if between rounds, else when the round in hand ends."""
        self._stop_asked = True
        if not self._in_round and self._loop_task is not None:
            self._loop_task.cancel()
