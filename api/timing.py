"""Where a request's time goes: MongoDB round trips and Prefect calls, per request.

The middleware opens a `RequestTimings` for each request; `MongoTimings` (pymongo command
monitoring on the API's client) and `prefect_call` add to it, and the middleware reports it
in the standard `Server-Timing` header:

    Server-Timing: mongo;dur=3.10;desc="2", prefect;dur=0.00;desc="0", app;dur=4.02

(`desc` = round trips or calls; `app` = the request's own time, end to end minus the waits.)
The embedded MongoDB-wire server is far slower than MongoDB, so load tests (bench/api.py)
read this header to separate the API's own cost from the database's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)


@dataclass
class RequestTimings:
    mongo_seconds: float = 0.0
    mongo_round_trips: int = 0
    prefect_seconds: float = 0.0
    prefect_calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def header(self, total_seconds: float) -> str:
        own = max(0.0, total_seconds - self.mongo_seconds - self.prefect_seconds)
        return (
            f'mongo;dur={self.mongo_seconds * 1000:.2f};desc="{self.mongo_round_trips}", '
            f'prefect;dur={self.prefect_seconds * 1000:.2f};desc="{self.prefect_calls}", '
            f"app;dur={own * 1000:.2f}"
        )


# The object is shared by reference with the worker threads a request's MongoDB calls run
# in (anyio copies the context into them), so their additions reach the middleware.
current_timings: ContextVar[RequestTimings | None] = ContextVar("leadflow_timings", default=None)


class MongoTimings(CommandListener):
    """Adds each command's round trip and duration to the current request's timings.

    Listener callbacks run in the thread that ran the command, in its context.
    """

    def started(self, event: CommandStartedEvent) -> None:
        timings = current_timings.get()
        if timings is not None:
            with timings._lock:
                timings.mongo_round_trips += 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        self._add(event.duration_micros)

    def failed(self, event: CommandFailedEvent) -> None:
        self._add(event.duration_micros)

    @staticmethod
    def _add(micros: int) -> None:
        timings = current_timings.get()
        if timings is not None:
            with timings._lock:
                timings.mongo_seconds += micros / 1e6


@contextmanager
def prefect_call() -> Iterator[None]:
    """Time one call to the Prefect API for the current request."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings = current_timings.get()
        if timings is not None:
            with timings._lock:
                timings.prefect_seconds += time.perf_counter() - started
                timings.prefect_calls += 1
