"""The Prefect objects Leadflow needs on its server, created idempotently by `leadflow up`.

- the process work pool `settings.work_pool`;
- the deployments of `prefect.yaml` (the source of truth), registered with
  `prefect --no-prompt deploy --all`, the documented path, so what the UI shows is exactly
  what the YAML says;
- the "zombie flow run" automation from Prefect's "detect zombie flows" guide: a flow run
  whose heartbeats stop is marked Crashed;
- the global rate limits the enrich stage takes a slot of per provider call (`hunter-api`,
  `company-api`), so every run together stays under each provider's per-second cap.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    WorkPoolCreate,
)
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from leadflow.services import ServiceError, child_env, prefect_env, venv_bin
from leadflow.settings import PROJECT_DIR, Settings

PREFECT_YAML = PROJECT_DIR / "prefect.yaml"
ZOMBIE_AUTOMATION_NAME = "leadflow: crash zombie flow runs"
ZOMBIE_MESSAGE = (
    "Flow run marked Crashed: its heartbeats stopped (zombie run; the worker or machine died)."
)

Echo = Callable[[str], None]


class SetupError(ServiceError):
    """Setting up the Prefect objects failed; the message is meant for the user."""


def prefect_server(settings: Settings) -> AbstractContextManager[Any]:
    """Within it, Prefect clients and flows in this process use this settings' Prefect
    server, whatever the process env says."""
    return temporary_settings(updates={PREFECT_API_URL: settings.prefect_api})


@contextmanager
def client_for(settings: Settings) -> Iterator[SyncPrefectClient]:
    """A sync Prefect client pointed at this settings' API, whatever the process env says."""
    with prefect_server(settings), get_client(sync_client=True) as client:
        yield client


# --------------------------------------------------------------------------------------
# work pool
# --------------------------------------------------------------------------------------


def ensure_work_pool(settings: Settings) -> bool:
    """Create the process work pool if missing; True if it was created."""
    from prefect.workers.process import ProcessWorker

    with client_for(settings) as client:
        try:
            client.create_work_pool(
                WorkPoolCreate(
                    name=settings.work_pool,
                    type="process",
                    # The same template `prefect work-pool create --type process` uses.
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="Leadflow local process pool (created by `leadflow up`).",
                )
            )
        except ObjectAlreadyExists:
            return False
    return True


# --------------------------------------------------------------------------------------
# deployments
# --------------------------------------------------------------------------------------


def load_prefect_yaml(path: Path = PREFECT_YAML) -> dict[str, Any]:
    with path.open() as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


def deployment_names(path: Path = PREFECT_YAML) -> list[str]:
    return [d["name"] for d in load_prefect_yaml(path).get("deployments") or []]


def _fingerprint(settings: Settings, project_dir: Path) -> str:
    """Hash of what a deployment is made of: prefect.yaml, flow code, the parameter models."""
    digest = hashlib.sha256(settings.prefect_api.encode())
    files = [project_dir / "prefect.yaml"]
    for folder in ("flows", "models"):
        files.extend(sorted((project_dir / folder).rglob("*.py")))
    for file in files:
        if file.exists():
            digest.update(str(file.relative_to(project_dir)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _fingerprint_file(settings: Settings) -> Path:
    return settings.home_dir / "run" / "deployments.sha256"


def deployments_exist(settings: Settings, names: list[str]) -> bool:
    with client_for(settings) as client:
        found = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names))
        )
    return {d.name for d in found} >= set(names)


def deploy(
    settings: Settings,
    *,
    force: bool = False,
    project_dir: Path = PROJECT_DIR,
    env: dict[str, str] | None = None,
    timeout: float = 180.0,
) -> bool:
    """Register every deployment of `<project_dir>/prefect.yaml`; True if it ran.

    Skipped when nothing it is made of changed since the last deploy to this server and the
    deployments exist: a redeploy resets schedules to the YAML (`active: false`), which
    would undo a schedule someone switched on in the UI.
    """
    names = deployment_names(project_dir / "prefect.yaml")
    stamp = _fingerprint_file(settings)
    fingerprint = _fingerprint(settings, project_dir)
    if (
        not force
        and stamp.exists()
        and stamp.read_text().strip() == fingerprint
        and deployments_exist(settings, names)
    ):
        return False
    run_env = env or {**child_env(settings), **prefect_env(settings)}
    # `prefect deploy` substitutes env vars it can see, pull steps included: without this
    # variable the `{{ $LEADFLOW_PROJECT_DIR }}` placeholder is stored as is and resolved on
    # the worker at run time, so the deployment follows whichever checkout the worker uses.
    run_env.pop("LEADFLOW_PROJECT_DIR", None)
    # The CLI is the documented way to apply prefect.yaml; its flags keep it non-interactive.
    cmd = [venv_bin("prefect"), "--no-prompt", "deploy", "--all"]
    try:
        result = subprocess.run(
            cmd, cwd=project_dir, env=run_env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f"`{' '.join(cmd)}` timed out after {timeout:.0f}s") from exc
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise SetupError(f"`prefect deploy --all` failed in {project_dir}:\n{output}")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")
    return True


# --------------------------------------------------------------------------------------
# the zombie-run automation
# --------------------------------------------------------------------------------------


def zombie_automation(settings: Settings) -> AutomationCore:
    """Prefect's documented "detect zombie flows" automation, with our time window."""
    return AutomationCore(
        name=ZOMBIE_AUTOMATION_NAME,
        description=(
            f"Marks a flow run Crashed when no heartbeat or final state arrives within "
            f"{settings.zombie_after_seconds}s of its last heartbeat."
        ),
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=settings.zombie_after_seconds),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=ZOMBIE_MESSAGE)],
    )


def ensure_zombie_automation(settings: Settings) -> str:
    """Create or update the automation so exactly one exists; returns its id."""
    wanted = zombie_automation(settings)
    with client_for(settings) as client:
        existing = client.read_automations_by_name(ZOMBIE_AUTOMATION_NAME)
        if not existing:
            return str(client.create_automation(wanted))
        keep, *extra = sorted(existing, key=lambda a: str(a.id))
        # Extras can only come from two `up`s racing; keep one.
        for automation in extra:
            client.delete_automation(automation.id)
        # Update in place so a changed LEADFLOW_ZOMBIE_AFTER_SECONDS takes effect.
        client.update_automation(keep.id, wanted)
        return str(keep.id)


# --------------------------------------------------------------------------------------
# provider rate limits
# --------------------------------------------------------------------------------------


def provider_rate_limits(settings: Settings) -> dict[str, float]:
    """Global rate-limit name -> calls per second (the names tasks/enrich acquires)."""
    return {
        "hunter-api": settings.hunter_requests_per_second,
        "company-api": settings.company_requests_per_second,
    }


def ensure_rate_limits(settings: Settings) -> None:
    """Create or update each provider's rate limit: at most `rate` slots, decaying at `rate`
    per second (Prefect's documented rate-limit recipe)."""
    with client_for(settings) as client:
        for name, rate in provider_rate_limits(settings).items():
            slots = max(1, math.ceil(rate))
            try:
                client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=slots, slot_decay_per_second=rate)
                )
            else:
                client.update_global_concurrency_limit(
                    name,
                    GlobalConcurrencyLimitUpdate(limit=slots, slot_decay_per_second=rate),
                )


# --------------------------------------------------------------------------------------
# all of it
# --------------------------------------------------------------------------------------


def setup(settings: Settings, *, echo: Echo | None = None, force_deploy: bool = False) -> None:
    say: Echo = echo or (lambda _msg: None)
    if ensure_work_pool(settings):
        say(f"prefect  work pool {settings.work_pool} created")
    if deploy(settings, force=force_deploy):
        say(f"prefect  deployments registered: {', '.join(deployment_names())}")
    ensure_zombie_automation(settings)
    ensure_rate_limits(settings)
    # Imported here: leadflow.alerts builds on this module.
    from leadflow.alerts import ensure_crashed_alert_automation

    ensure_crashed_alert_automation(settings)
