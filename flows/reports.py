"""Flows that e-mail: `daily_summary`, `weekly_report` and `crashed_alert`.

The reports run on their deployments' schedules (`daily-summary`, `weekly-report`), read
MongoDB and send one e-mail each. `crashed_alert` is started by the automation of
`leadflow/alerts.py` when a pipeline run Crashed: that run's process died, so its own hooks
never ran, and this flow, on a worker that is alive, sends its alert and ends the run's
`runs` document in CRASHED (otherwise it would say RUNNING forever, and so would the weekly
report).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client

from connectors.mongo import shared_store
from leadflow.settings import get_settings
from tasks.notify_email import (
    RunFailure,
    daily_figures_task,
    daily_summary_email,
    send_email_task,
    send_failure_alert_task,
    weekly_figures_task,
    weekly_report_email,
)

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})


def _retrying() -> dict[str, Any]:
    # An SMTP server restarting is worth the same retries as any other stage.
    settings = get_settings()
    return {"retries": settings.task_retries, "retry_delay_seconds": settings.task_retry_delay}


@flow(
    name="daily_summary",
    description="E-mail the leads first seen in the last 24 hours: counts by category and "
    "city, the top 10 by score with their reasons.",
)
def daily_summary(hours: int = 24) -> dict[str, Any]:
    summary = daily_figures_task(hours)
    sent = send_email_task.with_options(**_retrying())(daily_summary_email(summary))
    return {"new_leads": summary.new_leads, "sent": sent}


@flow(
    name="weekly_report",
    description="E-mail the week: runs by state, leads new and updated, e-mails found, top "
    "categories.",
)
def weekly_report(days: int = 7) -> dict[str, Any]:
    report = weekly_figures_task(days)
    sent = send_email_task.with_options(**_retrying())(weekly_report_email(report))
    return {
        "runs": report.runs_total,
        "leads_new": report.leads_new,
        "leads_updated": report.leads_updated,
        "sent": sent,
    }


@task(name="record crash", cache_policy=NO_CACHE, persist_result=False)
def record_crash(failure: RunFailure) -> bool:
    """End the run's `runs` document as the dead run's own state hook would have; True if it
    was still open. A document that already has a final state is left alone."""
    store = shared_store()
    record = store.get_run(failure.run_id)
    if record is None or record.get("state") in FINAL_STATES:
        return False
    store.finish_run(failure.run_id, failure.state, message=failure.message)
    return True


@flow(
    name="crashed_alert",
    description="E-mail the failure alert of a flow run that Crashed (started by the "
    "crashed-run automation with that run's id).",
)
def crashed_alert(flow_run_id: str) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        crashed = client.read_flow_run(UUID(flow_run_id))
        flow_name = client.read_flow(crashed.flow_id).name
    failure = RunFailure.of(flow_name, crashed, crashed.state)
    # The alert first: it is the point of this flow, and it must not wait for MongoDB.
    sent = send_failure_alert_task.with_options(**_retrying())(failure)
    recorded = record_crash.with_options(**_retrying())(failure)
    return {"flow_run_id": flow_run_id, "state": failure.state, "sent": sent, "recorded": recorded}
