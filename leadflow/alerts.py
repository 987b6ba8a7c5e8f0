"""The Prefect automation that e-mails an alert for a pipeline run that Crashed.

A run whose process died (killed worker, OOM, lost machine) is marked Crashed by the server —
by the zombie-run automation of `leadflow/prefect_setup.py` — and none of its code is left to
run a state hook. This automation reacts to that `prefect.flow-run.Crashed` event by running
the `crashed-alert` deployment (`flows/reports.py:crashed_alert`) with the run's id, on any
worker that is alive. Failed runs are e-mailed by their own `on_failure` hook
(`tasks.notify_email.alert_on_failure`), so each run gets one alert.

It lives here, beside `prefect_setup`, rather than in `tasks/`: it is server set-up, made
with that module's client.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectNotFound

from leadflow.prefect_setup import SetupError, client_for
from leadflow.settings import Settings

CRASHED_ALERT_AUTOMATION_NAME = "leadflow: e-mail crashed runs"
CRASHED_ALERT_DEPLOYMENT = "crashed_alert/crashed-alert"
# Flows whose crashes are e-mailed; the alert flow itself is left out so that it can never
# trigger itself.
ALERTED_FLOWS = ("lead_pipeline", "enrich_pending", "crm_sync")


def crashed_alert_automation(deployment_id: UUID) -> AutomationCore:
    """Each Crashed run of `ALERTED_FLOWS` runs the given crashed-alert deployment once."""
    return AutomationCore(
        name=CRASHED_ALERT_AUTOMATION_NAME,
        description=(
            f"E-mails an alert for each Crashed run of {', '.join(ALERTED_FLOWS)} by running "
            f"{CRASHED_ALERT_DEPLOYMENT} (a crashed process cannot run its own hook)."
        ),
        enabled=True,
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            # State-change events list the run's flow as a related resource with this role.
            match_related=ResourceSpecification(
                {"prefect.resource.role": "flow", "prefect.resource.name": list(ALERTED_FLOWS)}
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=deployment_id,
                # Rendered by the server from the triggering event's flow run, as text: the
                # plain "{{ flow_run.id }}" shorthand renders through `tojson`, which fails
                # on a UUID.
                parameters={
                    "flow_run_id": {"__prefect_kind": "jinja", "template": "{{ flow_run.id }}"}
                },
            )
        ],
    )


def ensure_crashed_alert_automation(settings: Settings) -> str:
    """Create or update the automation so exactly one exists; returns its id.

    Needs the crashed-alert deployment, so it runs after `prefect_setup.deploy`.
    """
    with client_for(settings) as client:
        try:
            deployment = client.read_deployment_by_name(CRASHED_ALERT_DEPLOYMENT)
        except ObjectNotFound as exc:
            raise SetupError(
                f"deployment {CRASHED_ALERT_DEPLOYMENT} is missing: register prefect.yaml "
                "first (`leadflow up` does)"
            ) from exc
        wanted = crashed_alert_automation(deployment.id)
        existing = client.read_automations_by_name(CRASHED_ALERT_AUTOMATION_NAME)
        if not existing:
            return str(client.create_automation(wanted))
        keep, *extra = sorted(existing, key=lambda a: str(a.id))
        # Extras can only come from two `up`s racing; keep one.
        for automation in extra:
            client.delete_automation(automation.id)
        # In place, so the action follows the deployment even if it was deleted and
        # registered again under a new id.
        client.update_automation(keep.id, wanted)
        return str(keep.id)
