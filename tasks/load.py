"""Stage `load`: bulk upsert the deduplicated batch into MongoDB, keyed on `lead_id`.

One `bulk_write` round trip per `load_batch_size` leads. `first_seen` is set on insert only,
`last_seen` and the run ids are updated, and the analyst-owned `review` block is untouched
(except where dedup carried a merged lead's review over to its survivor).
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.mongo import LeadStore, LoadCounts, shared_store
from tasks.dedup import DedupResult

STAGE = "load"


def load(result: DedupResult, store: LeadStore) -> LoadCounts:
    return store.upsert_leads(result.leads, result.tombstones, carry_review=result.carried_review)


@task(name="load", cache_policy=NO_CACHE, persist_result=False)
def load_task(result: DedupResult, run_id: str) -> LoadCounts:
    store = shared_store()
    counts = load(result, store)
    store.record_stage(run_id, STAGE, counts.as_dict())
    get_run_logger().info("loaded: %s", counts.as_dict())
    return counts
