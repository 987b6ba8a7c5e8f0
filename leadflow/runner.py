"""Start a pipeline run and follow it to a final state: through the deployment, or in-process."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import Cancelling
from rich.console import Console

from connectors.mongo import shared_store
from leadflow.prefect_setup import client_for, prefect_server
from leadflow.settings import Settings
from models.search import SearchSpec

DEPLOYMENT = "lead_pipeline/lead-pipeline"
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


@dataclass
class RunOutcome:
    run_id: str
    state: str
    message: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def start_deployed_run(
    spec: SearchSpec, settings: Settings, *, tags: list[str] | None = None
) -> FlowRun:
    """Create a flow run of the deployment and write its `runs` document (the creator's job)."""
    with prefect_server(settings):
        flow_run: FlowRun = run_deployment(  # type: ignore[assignment]
            DEPLOYMENT,
            parameters={"spec": spec.model_dump(mode="json")},
            timeout=0,
            tags=tags or ["leadflow-cli"],
        )
    shared_store(settings).create_run(
        str(flow_run.id),
        spec.model_dump(mode="json"),
        state="SCHEDULED",
        flow_run_name=flow_run.name,
    )
    return flow_run


def _outcome(run_id: str, state: str, message: str | None, settings: Settings) -> RunOutcome:
    doc = shared_store(settings).get_run(run_id) or {}
    return RunOutcome(run_id=run_id, state=state, message=message, summary=doc.get("summary") or {})


def wait_for_run(run_id: UUID, settings: Settings, console: Console | None = None) -> RunOutcome:
    """Poll the flow run until it is final; Ctrl-C asks Prefect to cancel it, then waits.

    Ctrl-C only sets a flag, read between polls: a KeyboardInterrupt raised in the middle of
    an HTTP request can leave the client's connection pool locked, and the cancel request
    after it would then hang. A second Ctrl-C stops waiting.
    """
    interrupts = _Interrupts()
    status = console.status("waiting for a worker...") if console else None
    if status:
        status.start()
    try:
        with interrupts.installed(), client_for(settings) as client:
            cancel_requested = False
            while True:
                if interrupts.count and not cancel_requested:
                    cancel_requested = True
                    if status:
                        status.update("cancelling (Ctrl-C again to stop waiting)...")
                    client.set_flow_run_state(
                        run_id,
                        Cancelling(message="cancelled from `leadflow run` (Ctrl-C)"),
                        force=True,
                    )
                if interrupts.count > 1:
                    raise KeyboardInterrupt
                flow_run = client.read_flow_run(run_id)
                state = flow_run.state
                state_name = state.type.value if state else "PENDING"
                if state_name in FINAL_STATES:
                    return _outcome(
                        str(run_id), state_name, state.message if state else None, settings
                    )
                if status and not cancel_requested:
                    stage = (shared_store(settings).get_run(str(run_id)) or {}).get("stage")
                    status.update(f"{state_name.lower()}" + (f": {stage} done" if stage else ""))
                interrupts.wait(settings.run_poll_interval)
    finally:
        if status:
            status.stop()


class _Interrupts:
    """Counts Ctrl-C presses (SIGINT) while installed, instead of raising KeyboardInterrupt."""

    def __init__(self) -> None:
        self.count = 0
        self._event = threading.Event()

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1
        self._event.set()

    def wait(self, seconds: float) -> None:
        """Sleep, cut short by a Ctrl-C."""
        self._event.wait(seconds)
        self._event.clear()

    @contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers live in the main thread only
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def run_deployed(
    spec: SearchSpec, settings: Settings, console: Console | None = None
) -> RunOutcome:
    flow_run = start_deployed_run(spec, settings)
    if console:
        console.print(f"Started flow run {flow_run.name} ({flow_run.id}): {spec.describe()}")
    return wait_for_run(flow_run.id, settings, console)


def run_local(spec: SearchSpec, settings: Settings) -> RunOutcome:
    """Run the flow in this process (still reported to the Prefect server)."""
    from flows.lead_pipeline import lead_pipeline

    with prefect_server(settings):
        state = lead_pipeline(spec, return_state=True)
        run_id = str(state.state_details.flow_run_id)
        message = None if state.is_completed() else state.message
    return _outcome(run_id, state.type.value, message, settings)
