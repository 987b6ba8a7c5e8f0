"""Flow `lead_pipeline`: one search, from crawl to stored, de-duplicated leads.

Reads like the DAG it runs: scrape -> normalize -> dedup -> contacts -> enrich -> score ->
validate -> load, each a batch-level task
with retries; a markdown run summary and a table of the top leads as artifacts. The run's id
is its Prefect flow-run id; its `runs` document in MongoDB records spec, state and counts.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import Flow, FlowRun
from prefect.runtime import flow_run
from prefect.states import State

from connectors.mongo import LoadCounts, shared_store
from leadflow.settings import get_settings
from models.lead import Lead
from models.search import SearchSpec
from tasks.contacts import contacts_task
from tasks.dedup import DedupResult, dedup_task
from tasks.enrich import EnrichResult, enrich_task
from tasks.load import load_task
from tasks.normalize import normalize_task
from tasks.notify import notify_slack, webhooks_task
from tasks.notify_email import alert_on_failure
from tasks.score import score_task
from tasks.scrape import CrawlResult, scrape_task
from tasks.sync import sync_task
from tasks.validate import validate_task

TOP_LEADS = 20


def _record_final_state(_flow: Flow, run: FlowRun, state: State) -> None:
    """State hook: the runs document ends in the same definite state as the flow run."""
    shared_store().finish_run(str(run.id), state.type.value, message=state.message)


def _captcha_figures(crawls: list[CrawlResult]) -> dict[str, Any]:
    stats = [c.stats for c in crawls]
    solved = sum(int(st.get("leadflow/captcha/solved", 0)) for st in stats)
    failed = sum(int(st.get("leadflow/captcha/failed", 0)) for st in stats)
    cost = sum(float(st.get("leadflow/captcha/cost", 0.0)) for st in stats)
    return {
        "captchas_solved": solved,
        # Challenges given up on after every retry: their pages' places are missing.
        "captcha_challenges_failed": sum(
            int(st.get("leadflow/captcha/challenges_failed", 0)) for st in stats
        ),
        "captcha_solve_rate": round(solved / (solved + failed), 3) if solved + failed else None,
        "captcha_cost_usd": round(cost, 5),
    }


def run_summary(
    spec: SearchSpec,
    crawls: list[CrawlResult],
    leads: list[Lead],
    dedup: DedupResult,
    enriched: EnrichResult,
    load: LoadCounts,
) -> dict[str, Any]:
    scraped = sum(c.item_count for c in crawls)
    return {
        "spec": spec.model_dump(mode="json"),
        "scraped": scraped,
        **{f"scraped_{c.source}": c.item_count for c in crawls},
        "normalized": len(leads),
        "quarantined": scraped - len(leads),
        "merged_in_batch": dedup.merged_in_batch,
        "matched_stored": dedup.matched_stored,
        "stored_merged": dedup.stored_merged,
        "new": dedup.new,
        "validation_quarantined": dedup.rejected,
        "leads_with_email": sum(1 for lead in dedup.leads if lead.best_email),
        "enrich_searches_paid": enriched.searches_paid,
        "enrich_verifications_paid": enriched.verifications_paid,
        "enrich_company_lookups_paid": enriched.company_lookups_paid,
        "enrich_cache_hits": enriched.cache_hits,
        "companies_found": enriched.companies_found,
        "enrich_pending": enriched.counts["pending"],
        "enrich_notes": "; ".join(enriched.notes) or None,
        "score_model": next((lead.score.model_version for lead in dedup.leads if lead.score), None),
        "inserted": load.inserted,
        "updated": load.updated,
        "tombstoned": load.tombstoned,
        "load_round_trips": load.round_trips,
        **_captcha_figures(crawls),
    }


def _summary_markdown(run_id: str, summary: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {key.replace('_', ' ')} | {value} |" for key, value in summary.items() if key != "spec"
    )
    return (
        f"# Lead pipeline run `{run_id}`\n\n"
        f"Search: **{SearchSpec.model_validate(summary['spec']).describe()}**\n\n"
        f"| stage count | value |\n|---|---|\n{rows}\n\n"
        f"Quarantined records (with reasons) are in the `quarantine` collection under run id `{run_id}`."
    )


def _top_leads_table(leads: list[Lead]) -> list[dict[str, Any]]:
    def rank(lead: Lead) -> tuple[float, int, int]:
        score = lead.score.value if lead.score else 0.0
        return (score, int(lead.review_count or 0), len(lead.sources))

    return [
        {
            "lead_id": lead.lead_id,
            "score": round(lead.score.value, 1) if lead.score else None,
            "why": "; ".join(lead.score.reasons[:3]) if lead.score else None,
            "name": lead.name,
            "category": lead.category,
            "city": lead.address.city,
            "phone": lead.phone or lead.phone_raw,
            "website": lead.website,
            "rating": lead.rating,
            "reviews": lead.review_count,
            "sources": len(lead.sources),
        }
        for lead in sorted(leads, key=rank, reverse=True)[:TOP_LEADS]
    ]


@flow(
    name="lead_pipeline",
    description="Scrape -> normalise -> dedup -> website contacts -> enrich -> score -> validate "
    "-> load -> CRM sync -> notify for one SearchSpec.",
    on_completion=[notify_slack],
    on_failure=[_record_final_state, notify_slack, alert_on_failure],
    on_crashed=[_record_final_state],
    on_cancellation=[_record_final_state],
)
def lead_pipeline(spec: SearchSpec) -> dict[str, Any]:
    settings = get_settings()
    logger = get_run_logger()
    run_id = str(flow_run.get_id())
    store = shared_store()
    store.create_indexes()
    store.create_run(run_id, spec.model_dump(mode="json"), started=True, state="RUNNING")
    logger.info("run %s: %s", run_id, spec.describe())

    retrying = {"retries": settings.task_retries, "retry_delay_seconds": settings.task_retry_delay}
    crawls = scrape_task.with_options(**retrying)(spec, run_id)
    leads = normalize_task.with_options(**retrying)(crawls, run_id)
    deduped = dedup_task.with_options(**retrying)(leads, run_id)
    deduped.leads = contacts_task.with_options(**retrying)(deduped.leads, run_id)
    enriched = enrich_task.with_options(**retrying)(deduped.leads, run_id)
    deduped.leads = score_task.with_options(**retrying)(deduped.leads, run_id)
    deduped.keep(validate_task.with_options(**retrying)(deduped.leads, run_id))
    loaded = load_task.with_options(**retrying)(deduped, run_id)
    synced = sync_task(deduped.leads, deduped.tombstones, run_id)
    delivered = webhooks_task(deduped.leads, run_id)

    summary = run_summary(spec, crawls, leads, deduped, enriched, loaded)
    for crm, counts in synced.items():
        summary[f"crm_{crm}"] = (
            f"sent {counts['sent']} (new {counts['created']}), unchanged {counts['unchanged']}, "
            f"failed {counts['failed']}, dead {counts['dead']}, throttled {counts['throttled']}"
        )
    summary["webhooks_delivered"] = delivered.get("delivered", 0)
    create_markdown_artifact(
        key="run-summary",
        markdown=_summary_markdown(run_id, summary),
        description="Counts per stage",
    )
    create_table_artifact(
        key="top-leads", table=_top_leads_table(deduped.leads), description="Top leads of this run"
    )
    store.update_run(run_id, summary=summary)
    store.finish_run(run_id, "COMPLETED")
    return summary
