"""Health: liveness (the process answers) and readiness (what a run needs is reachable)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ApiState, State
from api.schemas import CheckResult, Liveness, Readiness

router = APIRouter(prefix="/health", tags=["health"])
log = logging.getLogger("leadflow.api.health")


@router.get("", response_model=Liveness, summary="Liveness")
async def liveness() -> Liveness:
    return Liveness()


async def _timed(check: Callable[[], Awaitable[str | None]], timeout: float) -> CheckResult:
    started = time.perf_counter()
    try:
        with anyio.fail_after(timeout):
            detail = await check()
    except TimeoutError:
        return CheckResult(
            status="fail", latency_ms=timeout * 1000, detail=f"no answer in {timeout} s"
        )
    except Exception as exc:
        # The error's class only: this route is public, and messages name hosts and ports.
        log.warning("readiness check failed: %s", exc)
        detail = type(exc).__name__
        return CheckResult(
            status="fail",
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
            detail=detail,
        )
    return CheckResult(
        status="ok", latency_ms=round((time.perf_counter() - started) * 1000, 2), detail=detail
    )


def _checks(state: ApiState) -> dict[str, Callable[[], Awaitable[str | None]]]:
    async def mongo() -> str | None:
        await anyio.to_thread.run_sync(
            lambda: state.store.db.command("ping"), abandon_on_cancel=True
        )
        return None

    async def prefect() -> str | None:
        error = await state.prefect.api_healthcheck()
        if error is not None:
            raise error
        return None

    async def worker() -> str | None:
        pool = state.settings.work_pool
        workers = await state.prefect.read_workers_for_work_pool(pool)
        online = [w.name for w in workers if w.status.value == "ONLINE"]
        if not online:
            raise RuntimeError(f"no online worker in pool {pool!r}")
        return f"{len(online)} online in {pool}"

    checks = {"mongodb": mongo, "prefect": prefect, "worker": worker}
    if not state.settings.rate_limit_storage.startswith("memory://"):

        async def redis() -> str | None:
            if not await anyio.to_thread.run_sync(state.limits.ping, abandon_on_cancel=True):
                raise RuntimeError("rate-limit storage did not answer")
            return None

        checks["redis"] = redis
    return checks


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is down."}},
    summary="Readiness: MongoDB, Prefect, a worker, Redis",
)
async def readiness(state: State) -> JSONResponse:
    timeout = state.settings.api_ready_timeout
    results: dict[str, CheckResult] = {}

    async def run(name: str, check: Callable[[], Awaitable[str | None]]) -> None:
        results[name] = await _timed(check, timeout)

    async with anyio.create_task_group() as group:
        for name, check in _checks(state).items():
            group.start_soon(run, name, check)
    ready = all(r.status == "ok" for r in results.values())
    body = Readiness(status="ready" if ready else "not_ready", checks=dict(sorted(results.items())))
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)
