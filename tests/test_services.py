"""`leadflow up / down / status` and the Prefect wiring, against real services."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest
from typer.testing import CliRunner

from leadflow import prefect_setup
from leadflow import services as svc
from leadflow.cli_services import services_app
from leadflow.services import free_ports
from leadflow.settings import Settings

if TYPE_CHECKING:
    from conftest import RunningServices
    from pymongo.database import Database

# --- no services needed -----------------------------------------------------------------


def test_mask_url_hides_the_password() -> None:
    assert (
        svc.mask_url("mongodb://app:s3cret@db.example:27017/leads?tls=true")
        == "mongodb://app:***@db.example:27017/leads?tls=true"
    )
    assert svc.mask_url("mongodb://127.0.0.1:27017/") == "mongodb://127.0.0.1:27017/"


def test_settings_env_round_trips(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, home=tmp_path, mongo_port=1234, sandbox=False, zombie_after_seconds=77
    )
    env = svc.settings_env(settings)
    assert env["LEADFLOW_HOME"] == str(tmp_path.resolve())
    assert "LEADFLOW_MONGODB_URI" not in env  # unset stays unset: embedded MongoDB
    rebuilt = Settings(
        _env_file=None, **{k.removeprefix("LEADFLOW_").lower(): v for k, v in env.items()}
    )
    assert rebuilt == settings


@pytest.fixture
def listening_socket() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_port_in_use(listening_socket: int) -> None:
    assert svc.port_in_use("127.0.0.1", listening_socket)
    assert not svc.port_in_use("127.0.0.1", free_ports(1)[0])


def test_taken_mongo_port_gives_a_clear_error(tmp_path: Path, listening_socket: int) -> None:
    settings = Settings(_env_file=None, home=tmp_path, mongo_port=listening_socket)
    with pytest.raises(svc.PortInUseError) as err:
        svc.up(settings)
    assert str(err.value).startswith(
        f"port {listening_socket} (mongo) is in use by another program; set LEADFLOW_MONGO_PORT"
    )
    assert not svc.pid_file(settings, "mongo").exists()


def test_cli_up_reports_a_taken_port(
    tmp_path: Path, listening_socket: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadflow.settings import get_settings

    monkeypatch.setenv("LEADFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("LEADFLOW_MONGO_PORT", str(listening_socket))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(services_app, ["up"])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert f"port {listening_socket} (mongo) is in use" in result.output


# --- against the session's services ------------------------------------------------------


def test_status_shows_every_service_up(services: RunningServices) -> None:
    result = CliRunner().invoke(services_app, ["status"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split(None, 2) for line in result.output.splitlines()}
    s = services.settings
    assert lines["mongo"] == ["mongo", "up", s.mongo_url]
    assert lines["prefect"] == ["prefect", "up", s.prefect_ui]
    assert lines["sandbox"] == ["sandbox", "up", s.sandbox_url]
    assert lines["worker"] == ["worker", "up", f"pool {s.work_pool}"]
    assert lines["api"] == ["api", "up", f"http://127.0.0.1:{s.api_port}"]
    assert lines["mail"] == ["mail", "up", f"smtp://127.0.0.1:{s.smtp_port}"]


def test_up_again_is_a_no_op(services: RunningServices) -> None:
    before = {st.name: st.pid for st in svc.status(services.settings)}
    svc.up(services.settings)
    after = {st.name: st.pid for st in svc.status(services.settings)}
    assert before == after
    assert all(pid is not None for pid in after.values())


def test_deployment_is_registered_with_a_paused_schedule(services: RunningServices) -> None:
    with prefect_setup.client_for(services.settings) as client:
        deployment = client.read_deployment_by_name("lead_pipeline/lead-pipeline")
    assert deployment.work_pool_name == services.settings.work_pool
    assert deployment.entrypoint == "flows/lead_pipeline.py:lead_pipeline"
    assert deployment.parameters == {"spec": {"sources": ["directory"], "limit": 200}}
    assert len(deployment.schedules) == 1
    schedule = deployment.schedules[0]
    assert schedule.active is False
    assert getattr(schedule.schedule, "cron", None) == "0 6 * * *"
    # The code location is resolved on the worker at run time, not baked in at deploy time.
    assert deployment.pull_steps == [
        {
            "prefect.deployments.steps.set_working_directory": {
                "directory": "{{ $LEADFLOW_PROJECT_DIR }}"
            }
        }
    ]


def test_work_pool_exists_and_worker_is_online(services: RunningServices) -> None:
    with prefect_setup.client_for(services.settings) as client:
        pool = client.read_work_pool(services.settings.work_pool)
    assert pool.type == "process"
    assert svc.worker_online(services.settings)


def test_zombie_automation_exists_once_after_repeated_setup(services: RunningServices) -> None:
    prefect_setup.setup(services.settings)
    prefect_setup.setup(services.settings)
    with prefect_setup.client_for(services.settings) as client:
        found = client.read_automations_by_name(prefect_setup.ZOMBIE_AUTOMATION_NAME)
    assert len(found) == 1
    trigger = found[0].trigger
    assert trigger.posture == "Proactive"
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert "prefect.flow-run.Completed" in trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.within.total_seconds() == services.settings.zombie_after_seconds
    action = found[0].actions[0]
    assert action.type == "change-flow-run-state"
    assert action.state == "CRASHED"
    assert "heartbeats stopped" in (action.message or "")


def test_taken_prefect_port_names_the_setting(
    services: RunningServices, tmp_path: Path, listening_socket: int
) -> None:
    # MongoDB is "external" here (the session's), so the Prefect port is the first checked.
    settings = Settings(
        _env_file=None,
        home=tmp_path,
        mongodb_uri=services.mongo_url,
        prefect_port=listening_socket,
    )
    with pytest.raises(
        svc.PortInUseError, match=rf"port {listening_socket} \(prefect\).*LEADFLOW_PREFECT_PORT"
    ):
        svc.up(settings)


def test_mongo_db_fixture_is_clean_and_unique(mongo_db: Database) -> None:
    assert mongo_db.list_collection_names() == []
    mongo_db.things.insert_one({"a": 1})
    assert mongo_db.things.count_documents({}) == 1


# --- a stack of its own ------------------------------------------------------------------


def test_down_stops_everything(tmp_path: Path) -> None:
    """A second, separate stack (own home and ports): up, then down, then nothing is left."""
    mongo_port, prefect_port, sandbox_port, api_port, smtp_port = free_ports(5)
    settings = Settings(
        _env_file=None,
        home=tmp_path / "home",
        mongo_port=mongo_port,
        prefect_port=prefect_port,
        sandbox_port=sandbox_port,
        api_port=api_port,
        smtp_port=smtp_port,
    )
    try:
        svc.up(settings)
        statuses = svc.status(settings)
        assert all(st.up for st in statuses), statuses
        pids = [st.pid for st in statuses if st.pid is not None]
        assert len(pids) == 6
        trees = [proc for pid in pids for proc in psutil.Process(pid).children(recursive=True)]
    finally:
        svc.down(settings)
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    for proc in trees:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    assert not any(svc.pid_file(settings, name).exists() for name in svc.SERVICE_NAMES)
    assert not any(st.up for st in svc.status(settings))
    for port in (mongo_port, prefect_port, sandbox_port, api_port, smtp_port):
        assert not svc.port_in_use("127.0.0.1", port)
