"""Runs through the deployment on the real process worker: `leadflow run`, and a worker
killed mid-run, which must leave the run Crashed (heartbeats + zombie automation), never
Running forever. Only these tests pay for deployment + worker; the rest run flows in-process."""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from uuid import UUID

import httpx
import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from leadflow import services as svc
from leadflow.runner import DEPLOYMENT
from leadflow.settings import get_settings
from tasks.notify_email import RUN_HEADER
from tests.conftest import RunningServices


@pytest.fixture
def run_db(services: RunningServices) -> Iterator[str]:
    name = f"worker_runs_{os.getpid()}"
    yield name
    from pymongo import MongoClient

    MongoClient(services.mongo_url).drop_database(name)


def read_state(flow_run_id: UUID) -> tuple[str, str | None]:
    import asyncio

    async def read() -> tuple[str, str | None]:
        async with get_client() as client:
            flow_run = await client.read_flow_run(flow_run_id)
            state = flow_run.state
            return (state.type.value if state else "PENDING", state.message if state else None)

    return asyncio.run(read())


def wait_for(flow_run_id: UUID, states: set[str], timeout: float) -> tuple[str, str | None]:
    deadline = time.monotonic() + timeout
    state = ("PENDING", None)
    while time.monotonic() < deadline:
        state = read_state(flow_run_id)
        if state[0] in states:
            return state
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} still {state[0]} after {timeout}s")


def test_leadflow_run_goes_through_the_deployment_and_a_worker(services: RunningServices) -> None:
    # The CLI and the worker's flow run share the session's database, as they do for users.
    env = {**os.environ, "LEADFLOW_RUN_POLL_INTERVAL": "0.5"}
    completed = subprocess.run(
        [sys.executable, "-m", "leadflow.cli", "run", "--category", "dentist", "--limit", "30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "COMPLETED" in completed.stdout
    assert "inserted" in completed.stdout
    assert services.prefect_ui_url in completed.stdout


def wait_for_mail(maildir: Path, flow_run_id: str, timeout: float) -> EmailMessage:
    """The alert e-mail about `flow_run_id` once it is in the Maildir."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if maildir.exists():
            box = mailbox.Maildir(maildir, factory=None, create=False)
            for key in box.iterkeys():
                message = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
                if message[RUN_HEADER] == flow_run_id:
                    return message  # type: ignore[return-value]
        time.sleep(1)
    raise AssertionError(f"no alert e-mail about {flow_run_id} in {maildir} after {timeout}s")


def test_killed_worker_leaves_the_run_crashed_not_running(
    services: RunningServices, run_db: str
) -> None:
    settings = get_settings()
    # A crawl slow enough (3 s between requests) to be mid-run when the worker dies.
    flow_run = run_deployment(
        DEPLOYMENT,
        parameters={"spec": {"sources": ["directory"], "limit": 500}},
        timeout=0,
        job_variables={
            "env": {
                "LEADFLOW_MONGODB_DB": run_db,
                "LEADFLOW_CRAWL_DOWNLOAD_DELAY": "3",
                "LEADFLOW_CRAWL_CONCURRENCY": "1",
            }
        },
    )
    wait_for(flow_run.id, {"RUNNING"}, timeout=90)
    time.sleep(3)  # the run has sent its first heartbeat

    worker_pid = svc.read_pid(settings, "worker")
    assert worker_pid is not None
    # The machine dies: the worker and everything it started (flow-run process, crawl).
    worker = psutil.Process(worker_pid)
    family = [worker, *worker.children(recursive=True)]
    for process in family:
        process.kill()
    psutil.wait_procs(family, timeout=10)
    try:
        state, message = wait_for(
            flow_run.id, {"CRASHED", "COMPLETED", "FAILED", "CANCELLED"}, timeout=180
        )
        assert state == "CRASHED"
        assert message and "heartbeat" in message.lower()
    finally:
        svc.up(settings)  # a new worker for whatever runs next

    # No process of the run is left to report it: the Crashed-run automation starts the
    # crashed-alert deployment, whose run (on the new worker) e-mails the alert through the
    # local SMTP service into its Maildir.
    alert = wait_for_mail(settings.home_dir / "mail", str(flow_run.id), timeout=120)
    assert "CRASHED" in alert["Subject"]
    body = alert.get_body(("plain",))
    assert body is not None and "heartbeat" in body.get_content().lower()


def test_ctrl_c_on_leadflow_run_cancels_the_run(services: RunningServices) -> None:
    # The run happens in the worker's process, not the CLI's: slow the sandbox itself so the
    # run is still crawling when Ctrl-C arrives.
    control = f"{services.sandbox_url}/__sandbox/config"
    assert httpx.post(control, json={"latency_ms": 1500}).json() == {"latency_ms": 1500}
    try:
        env = {**os.environ, "LEADFLOW_RUN_POLL_INTERVAL": "0.5"}
        cli = subprocess.Popen(
            [sys.executable, "-m", "leadflow.cli", "run", "--limit", "300"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert cli.stdout is not None
        started = ""
        while "Started flow run" not in started:
            line = cli.stdout.readline()
            assert line, f"leadflow run ended before starting a run: {started}"
            started += line
        flow_run_id = UUID(
            started.rsplit("Started flow run", 1)[1].split("(", 1)[1].split(")", 1)[0]
        )
        wait_for(flow_run_id, {"RUNNING"}, timeout=90)
        cli.send_signal(signal.SIGINT)
        try:
            output, _ = cli.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            cli.kill()
            output, _ = cli.communicate()
            raise AssertionError(
                f"leadflow run still waiting 120 s after Ctrl-C; the run is "
                f"{read_state(flow_run_id)}; its output:\n{started}{output}"
            ) from None
    finally:
        httpx.post(control, json={"latency_ms": 0})
    assert cli.returncode == 130, started + output
    state, _ = wait_for(flow_run_id, {"CANCELLED", "COMPLETED", "FAILED", "CRASHED"}, timeout=60)
    assert state == "CANCELLED"
    assert "CANCELLED" in output
