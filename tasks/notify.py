"""Stage `notify`: the run's new and changed leads to the configured webhooks (a task), and
Slack when a run ends (a flow-run state hook; e-mail alerts are in tasks/notify_email.py).

Hooks run in the flow's process once the state is final and never raise into the flow: a
notification outage must not fail a run that succeeded.
"""

from __future__ import annotations

import logging

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.flows import Flow
from prefect.states import State

from connectors.mongo import shared_store
from connectors.slack import SlackNotifier, run_message
from connectors.webhooks import deliver_leads
from leadflow.settings import get_settings
from models.lead import Lead

log = logging.getLogger("leadflow.notify")


def notify_slack(flow: Flow, flow_run: FlowRun, state: State) -> None:
    settings = get_settings()
    try:
        notifier = SlackNotifier.from_settings(settings)
        if notifier is None:
            return
        doc = shared_store(settings).get_run(str(flow_run.id)) or {}
        text, blocks = run_message(
            flow.name,
            flow_run.name,
            state.type.value,
            f"{settings.prefect_ui}/runs/flow-run/{flow_run.id}",
            doc.get("summary"),
            None if state.is_completed() else (state.message or doc.get("state_message")),
        )
        notifier.post(text, blocks)
    except Exception as exc:
        log.warning("Slack notification for run %s failed: %s", flow_run.name, exc)


@task(name="notify", cache_policy=NO_CACHE, persist_result=False)
def webhooks_task(leads: list[Lead], run_id: str) -> dict[str, int]:
    """Deliver this run's new and changed leads to every configured webhook endpoint."""
    settings = get_settings()
    store = shared_store(settings)
    counts = deliver_leads(leads, store.db, settings)
    store.record_stage(run_id, "notify", counts)
    get_run_logger().info("webhooks: %s", counts)
    return counts
