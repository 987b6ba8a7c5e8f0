"""Helpers for stages that build or compare large batches of records in memory."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a stage allocates a whole batch.

    Building 100,000 leads allocates millions of small acyclic objects; every allocation
    threshold crossing makes the collector walk the growing heap, which more than doubles
    the stage's time. Reference counting still frees everything; one collection runs after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
