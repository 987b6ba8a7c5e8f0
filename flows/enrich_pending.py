"""Flow `enrich_pending`: finish the enrichment of stored leads a provider left pending.

A Hunter outage, a month's credits used up or a company lookup still being gathered leave
leads `enrichment.status == "pending"`; the next pipeline run finishes those it scrapes
again, and this flow (deployment `enrich-pending`, on its own schedule) finishes the rest.
Reads like its DAG: pending leads -> enrich -> score -> store.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from connectors.mongo import shared_store
from leadflow.settings import get_settings
from models.lead import Lead
from tasks.enrich import enrich_task
from tasks.notify_email import alert_on_failure
from tasks.score import score_task


@task(name="pending leads", cache_policy=NO_CACHE, persist_result=False)
def pending_leads(limit: int) -> list[Lead]:
    return shared_store().pending_enrichment(limit)


@task(name="store enriched", cache_policy=NO_CACHE, persist_result=False)
def store_enriched(leads: list[Lead]) -> int:
    counts = shared_store().upsert_leads(leads, [])
    return counts.updated + counts.inserted


@flow(
    name="enrich_pending",
    description="Finish enrichment left pending by earlier runs.",
    on_failure=[alert_on_failure],
)
def enrich_pending(limit: int = 1000) -> dict[str, Any]:
    settings = get_settings()
    run_id = str(flow_run.get_id())
    retrying = {"retries": settings.task_retries, "retry_delay_seconds": settings.task_retry_delay}
    leads = pending_leads(limit)
    if not leads:
        get_run_logger().info("no leads pending enrichment")
        return {"picked_up": 0}
    enriched = enrich_task.with_options(**retrying)(leads, run_id)
    # New emails and company facts change the score.
    stored = store_enriched(score_task.with_options(**retrying)(enriched.leads, run_id))
    # `pending` (from the enrich counts) is what is still pending afterwards.
    summary = {"picked_up": len(leads), "stored": stored, **enriched.counts}
    rows = "\n".join(f"| {k.replace('_', ' ')} | {v} |" for k, v in summary.items())
    create_markdown_artifact(
        key="enrich-pending-summary",
        markdown=f"# Pending enrichment\n\n| count | value |\n|---|---|\n{rows}\n"
        + "".join(f"\n- {note}" for note in enriched.notes),
        description="Leads finished by enrich_pending",
    )
    return summary
