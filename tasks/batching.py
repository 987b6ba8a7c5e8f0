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
    the stage's time. Reference counting still frees everything.

    On the way out the survivors are frozen (moved out of the collector's generations):
    otherwise the first collection after re-enabling walks every object the batch made
    (about 1 s per 100,000 leads) and a full collection soon walks them all again. Frozen
    objects are still freed by reference counting when the batch is dropped; only
    reference cycles among them would wait, and leads, records and features hold none.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
