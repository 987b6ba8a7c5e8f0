"""What every provider connector shares: the limiter type, and reading a loose number."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Called before each provider call; blocks until the call may go (tasks/enrich passes
# Prefect's global rate limit, tests pass nothing).
Limiter = Callable[[], None]


def int_or_none(value: Any) -> int | None:
    """An int from a provider's JSON value ("12", 12.0, None, "n/a"...); None if it is not one."""
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
