"""Session-wide test environment and the fixtures that start real services.

The environment is set when this module is imported, before any test module imports
Prefect or builds Settings: Prefect snapshots its settings when it is first imported, and
`get_settings()` is cached.

- `services` (session): `leadflow up` for real (nx-27017, Prefect server, sandbox, Prefect
  setup, worker) on free ports under a temporary LEADFLOW_HOME, `leadflow down` at the end.
  Only tests that request it (directly or through `mongo_db`) pay the ~15 s start-up; they
  are marked `services`, so `pytest -m "not services"` runs the rest.
- `mongo_db`: a fresh, uniquely named database on that server, dropped afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Only what imports no Prefect and builds no Settings: see the module docstring.
from leadflow.services import free_ports

if TYPE_CHECKING:
    from pymongo import MongoClient
    from pymongo.database import Database

    from leadflow.settings import Settings


# --- session environment (import time, see the module docstring) --------------------------
# Test modules that do `from tests.conftest import ...` load this file a second time under
# another module name; that copy must reuse this session's home and ports, not pick new ones.
_TWIN = next(
    (
        module
        for name, module in list(sys.modules.items())
        if name in ("conftest", "tests.conftest")
        and name != __name__
        and hasattr(module, "TEST_ROOT")
    ),
    None,
)
if _TWIN is not None:
    TEST_ROOT: Path = _TWIN.TEST_ROOT
    TEST_HOME: Path = _TWIN.TEST_HOME
else:
    TEST_ROOT = Path(tempfile.mkdtemp(prefix="leadflow-tests-"))
    TEST_HOME = TEST_ROOT / "home"
    _mongo_port, _prefect_port, _sandbox_port, _api_port, _smtp_port = free_ports(5)
    # A developer's own external services must not be used (or written to) by the tests.
    for _key in ("LEADFLOW_MONGODB_URI", "LEADFLOW_PREFECT_API_URL", "PREFECT_API_URL"):
        os.environ.pop(_key, None)
    os.environ.update(
        {
            # Telemetry tries DNS on this offline machine and logs an error per process.
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            # Keep Prefect's profiles and local result storage out of ~/.prefect.
            "PREFECT_HOME": str(TEST_HOME / "prefect"),
            # The worker polls every 2 s instead of 10, so deployment runs start quickly.
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "LEADFLOW_HOME": str(TEST_HOME),
            # The maps stand-in answers quickly and challenges one request in ten with a CAPTCHA,
            # which the 2captcha sandbox solves in 0.2 s (polled every 0.1 s).
            "LEADFLOW_SANDBOX_MAPS_LATENCY_MS": "20",
            "LEADFLOW_SANDBOX_CAPTCHA_SHARE": "0.1",
            "LEADFLOW_SANDBOX_CAPTCHA_SOLVE_SECONDS": "0.2",
            "LEADFLOW_CAPTCHA_POLL_INTERVAL": "0.1",
            # Hunter and company data at test speed: the same paths (rate limits, 202 polling,
            # credits), with caps far above what the demo runs need and short pending times.
            "LEADFLOW_HUNTER_REQUESTS_PER_SECOND": "200",
            "LEADFLOW_COMPANY_REQUESTS_PER_SECOND": "200",
            "LEADFLOW_SANDBOX_HUNTER_REQUESTS_PER_SECOND": "1000",
            "LEADFLOW_SANDBOX_HUNTER_REQUESTS_PER_MINUTE": "60000",
            "LEADFLOW_SANDBOX_HUNTER_VERIFIER_REQUESTS_PER_SECOND": "1000",
            "LEADFLOW_SANDBOX_HUNTER_VERIFIER_REQUESTS_PER_MINUTE": "60000",
            "LEADFLOW_SANDBOX_HUNTER_VERIFIER_PENDING_SECONDS": "0.2",
            "LEADFLOW_HUNTER_VERIFY_POLL_INTERVAL": "0.1",
            "LEADFLOW_SANDBOX_COMPANY_REQUESTS_PER_MINUTE": "60000",
            "LEADFLOW_ENRICHMENT_WORKERS": "8",
            # The CRM stand-ins' rate limits far above what the tests send (their limits are
            # tested in tests/test_crm_*.py), so pipeline runs do not wait on them.
            "LEADFLOW_SANDBOX_CRM_PIPEDRIVE_REQUESTS_PER_TWO_SECONDS": "100000",
            "LEADFLOW_SANDBOX_CRM_HUBSPOT_REQUESTS_PER_TEN_SECONDS": "100000",
            # Budgets above the demo's needs, so a second run's Hunter bill shows the cache only.
            "LEADFLOW_HUNTER_RUN_SEARCH_BUDGET": "5000",
            "LEADFLOW_HUNTER_RUN_VERIFICATION_BUDGET": "5000",
            # A killed worker's run is marked Crashed 60 s after its last heartbeat (default 90).
            "LEADFLOW_ZOMBIE_AFTER_SECONDS": "60",
            "LEADFLOW_MONGO_PORT": str(_mongo_port),
            "LEADFLOW_PREFECT_PORT": str(_prefect_port),
            "LEADFLOW_SANDBOX_PORT": str(_sandbox_port),
            "LEADFLOW_API_PORT": str(_api_port),
            "LEADFLOW_SMTP_PORT": str(_smtp_port),
        }
    )
    # Prefect warns at import if its home does not exist yet.
    (TEST_HOME / "prefect").mkdir(parents=True, exist_ok=True)


def _clear_settings_cache() -> None:
    from leadflow.settings import get_settings

    get_settings.cache_clear()


if _TWIN is None:
    _clear_settings_cache()


@contextmanager
def leadflow_env(**values: str) -> Iterator[Settings]:
    """Set environment variables (LEADFLOW_*, inherited by crawl subprocesses) for a block;
    yields the settings they give, and puts everything back afterwards."""
    from leadflow.settings import get_settings

    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    _clear_settings_cache()
    try:
        yield get_settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _clear_settings_cache()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Mark every test that needs the real services, so `-m "not services"` skips them.
    for item in items:
        if "services" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.services)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(TEST_ROOT, ignore_errors=True)


# --- fixtures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningServices:
    settings: Settings
    mongo_url: str
    prefect_api_url: str
    prefect_ui_url: str
    sandbox_url: str


if _TWIN is not None:
    RunningServices = _TWIN.RunningServices  # type: ignore[misc]  # one class, not two


@pytest.fixture(scope="session")
def services() -> Iterator[RunningServices]:
    """The real local stack, started once per session (only if a test asks for it)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from leadflow import services as svc
    from leadflow.settings import get_settings

    _clear_settings_cache()
    settings = get_settings()
    try:
        svc.up(settings)
    except BaseException:
        svc.down(settings)  # never leave half a stack running behind a failed session
        raise
    saved = {key: os.environ.get(key) for key in svc.prefect_env(settings)}
    # os.environ for subprocesses (crawls, CLI); temporary_settings for this process, whose
    # Prefect settings were snapshotted at import, before the server's URL was known.
    os.environ.update(svc.prefect_env(settings))
    try:
        with temporary_settings(updates={PREFECT_API_URL: settings.prefect_api}):
            yield RunningServices(
                settings=settings,
                mongo_url=settings.mongo_url,
                prefect_api_url=settings.prefect_api,
                prefect_ui_url=settings.prefect_ui,
                sandbox_url=settings.sandbox_url,
            )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        svc.down(settings)


@pytest.fixture(scope="session")
def mongo_client(services: RunningServices) -> Iterator[MongoClient]:
    from pymongo import MongoClient

    client: MongoClient = MongoClient(services.mongo_url, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture
def mongo_db(mongo_client: MongoClient, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A clean database with a unique name per test, dropped afterwards."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", request.node.name)[:30]
    name = f"t_{stem}_{uuid.uuid4().hex[:8]}"
    db = mongo_client[name]
    yield db
    mongo_client.drop_database(name)
