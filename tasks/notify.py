"""Stage `notify`: tell people a run ended. Slack here; webhooks and e-mail in their modules.

These are flow-run state hooks: they run in the flow's process once the state is final, and
never raise into the flow (a notification outage must not fail a run that succeeded).
"""

from __future__ import annotations

import logging

from prefect.client.schemas.objects import FlowRun
from prefect.flows import Flow
from prefect.states import State

from connectors.mongo import shared_store
from connectors.slack import SlackNotifier, run_message
from leadflow.settings import get_settings

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
