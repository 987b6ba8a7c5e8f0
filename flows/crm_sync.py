"""Flow `crm_sync`: re-sync what earlier syncs left pending or failed, and report the dead
letters. Deployment `crm-sync` (prefect.yaml) runs it on its own schedule."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from connectors.mongo import shared_store
from leadflow.settings import get_settings
from tasks.notify_email import alert_on_failure
from tasks.sync import crm_sync_from_settings


def dead_letter_report(dead: list[dict[str, Any]]) -> str:
    if not dead:
        return "# CRM dead letters\n\nNone."
    rows = [
        f"| {d['destination']} | {d['lead_id']} | {d.get('attempts', 0)} | "
        f"{str(d.get('last_error') or '').replace('|', '/')[:200]} |"
        for d in dead
    ]
    return "\n".join(
        [f"# CRM dead letters: {len(dead)}", "", "| CRM | lead | attempts | reason |",
         "|---|---|---|---|", *rows]
    )  # fmt: skip


@flow(name="crm_sync", on_failure=[alert_on_failure])
def crm_sync(limit: int = 5000) -> dict[str, Any]:
    """Retry the pending and failed ledger entries whose backoff has passed."""
    settings = get_settings()
    store = shared_store(settings)
    sync = crm_sync_from_settings(settings, store.db)
    result: dict[str, Any] = {
        destination: counts.as_dict()
        for destination, counts in sync.retry_due(store.leads_by_ids, limit).items()
    }
    dead = sync.ledger.dead()
    result["dead_letters"] = len(dead)
    create_markdown_artifact(dead_letter_report(dead), key="crm-dead-letters")
    get_run_logger().info("CRM re-sync: %s", result)
    return result
