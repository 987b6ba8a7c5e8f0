"""Runs: start the pipeline's deployment on demand, list runs, read one and its quarantine."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import anyio
import httpx
from bson import ObjectId
from fastapi import APIRouter, Depends, Header, Path, Query, Response
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from api.deps import ApiState, Guard, State
from api.errors import AUTH_RESPONSES, ApiError, ErrorBody
from api.keys import ApiKeyRecord, Scope
from api.queries import decode_cursor, encode_cursor
from api.schemas import QuarantinePage, QuarantineRow, RunOut, RunPage
from api.timing import prefect_call
from leadflow.logs import request_id_var
from leadflow.runner import FINAL_STATES
from models.search import SearchSpec

log = logging.getLogger("leadflow.api.runs")
router = APIRouter(prefix="/runs", tags=["runs"], responses=AUTH_RESPONSES)

RUNS_SORT = "-created_at"
RunId = Annotated[UUID, Path(description="The run's id (its Prefect flow run id).")]
Cursor = Annotated[
    str | None, Query(max_length=500, description="`next_cursor` of the previous page.")
]
_NOT_FOUND = {404: {"model": ErrorBody, "description": "No such run."}}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a POST with the same key (and API key) to get the same run back.",
    ),
]


def _run_out(doc: dict[str, Any], flow_run: FlowRun | None = None) -> RunOut:
    state = doc.get("state") or "SCHEDULED"
    message = doc.get("state_message")
    if flow_run is not None and flow_run.state is not None:
        # Prefect knows the live state; the runs document only what the flow wrote so far.
        state, message = flow_run.state.type.value, flow_run.state.message or message
    return RunOut(
        run_id=doc["run_id"],
        name=doc.get("flow_run_name") or (flow_run.name if flow_run else None),
        state=state,
        state_message=message,
        spec=doc.get("spec") or {},
        counts=doc.get("counts") or {},
        stage=doc.get("stage"),
        summary=doc.get("summary"),
        tags=list(flow_run.tags) if flow_run else list(doc.get("tags") or []),
        created_at=doc.get("created_at"),
        started_at=doc.get("started_at"),
        finished_at=doc.get("finished_at"),
    )


async def _deployment_id(state: ApiState) -> UUID:
    name = state.settings.api_deployment
    if name not in state.deployment_ids:
        try:
            with prefect_call():
                deployment = await state.prefect.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ApiError(
                503,
                f"The deployment {name!r} is not registered on the Prefect server "
                "(run `leadflow up`).",
            ) from None
        state.deployment_ids[name] = deployment.id
    return state.deployment_ids[name]


@router.post(
    "",
    status_code=201,
    response_model=RunOut,
    responses={
        200: {"model": RunOut, "description": "Replay of an Idempotency-Key: the same run."},
        503: {"model": ErrorBody, "description": "Prefect or the deployment is unavailable."},
    },
    summary="Start a pipeline run",
)
async def create_run(
    spec: SearchSpec,
    response: Response,
    state: State,
    key: Annotated[ApiKeyRecord, Depends(Guard(Scope.RUNS_WRITE, route_limit="runs:create"))],
    idempotency_key: IdempotencyKey = None,
) -> RunOut:
    """Creates a flow run of the `lead-pipeline` deployment with `spec` as its parameter and
    records it in `runs` right away, so it is listed before a worker picks it up."""
    request_id = request_id_var.get() or ""
    run, created = await start_pipeline_run(
        state,
        spec,
        requested_by=key.key_id,
        tags=["leadflow-api", f"request-id:{request_id}", f"api-key:{key.key_id}"],
        idempotency_key=f"{key.key_id}:{idempotency_key}" if idempotency_key else None,
    )
    if created:
        response.headers["Location"] = f"/runs/{run.run_id}"
    else:
        response.status_code = 200
    return run


async def start_pipeline_run(
    state: ApiState,
    spec: SearchSpec,
    *,
    requested_by: str,
    tags: list[str],
    idempotency_key: str | None = None,
) -> tuple[RunOut, bool]:
    """Start a run of the configured deployment (or find the one `idempotency_key` already
    started) and record it in `runs`; (the run, whether it was created now)."""
    if idempotency_key:
        existing = await anyio.to_thread.run_sync(
            lambda: state.store.runs.find_one({"idempotency_key": idempotency_key})
        )
        if existing is not None:
            return _run_out(existing), False
    spec_doc = spec.model_dump(mode="json")
    try:
        deployment_id = await _deployment_id(state)
        with prefect_call():
            flow_run = await state.prefect.create_flow_run_from_deployment(
                deployment_id,
                parameters={"spec": spec_doc},
                tags=tags,
                # Prefect itself returns the first run for a repeated key: two concurrent
                # replays that both missed the lookup above still make one run.
                idempotency_key=idempotency_key,
                work_queue_name=state.settings.api_work_queue,
            )
    except ObjectNotFound:
        state.deployment_ids.clear()  # re-registered under a new id: look it up again
        raise ApiError(503, "The deployment changed on the Prefect server; retry.") from None
    except (PrefectHTTPStatusError, httpx.HTTPError) as exc:
        # Prefect's client has already retried (its SQLite server answers 503 when busy).
        log.warning("Prefect did not create the run: %s", exc)
        raise ApiError(
            503, "The Prefect server is unavailable; retry shortly.", headers={"Retry-After": "5"}
        ) from None
    run_id = str(flow_run.id)
    fields: dict[str, Any] = {
        "state": "SCHEDULED",
        "flow_run_name": flow_run.name,
        "requested_by": requested_by,
        "request_id": request_id_var.get() or "",
        "tags": list(flow_run.tags),
    }
    if idempotency_key:
        fields["idempotency_key"] = idempotency_key
    await anyio.to_thread.run_sync(lambda: state.store.create_run(run_id, spec_doc, **fields))
    state.metrics.runs_started.inc()
    doc = {"run_id": run_id, "spec": spec_doc, "created_at": flow_run.created, **fields}
    return _run_out(doc, flow_run), True


async def _live(state: ApiState, docs: list[dict[str, Any]]) -> dict[str, FlowRun]:
    """Prefect's view of the runs not final yet in MongoDB (one API call)."""
    ids = [UUID(d["run_id"]) for d in docs if d.get("state") not in FINAL_STATES]
    if not ids:
        return {}
    try:
        with prefect_call():
            runs = await state.prefect.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
            )
    except Exception:  # Prefect down: answer with what MongoDB knows
        return {}
    return {str(r.id): r for r in runs}


@router.get(
    "",
    response_model=RunPage,
    dependencies=[Depends(Guard(Scope.RUNS_READ))],
    summary="List runs, newest first",
)
async def list_runs(
    state: State,
    run_state: Annotated[
        str | None,
        Query(alias="state", max_length=20, examples=["COMPLETED"], description="Only runs in it."),
    ] = None,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Runs per page.")] = 50,
) -> RunPage:
    query: dict[str, Any] = {}
    if run_state:
        query["state"] = run_state.upper()
    if cursor:
        created, tie = decode_cursor(cursor, RUNS_SORT)
        query = {
            "$and": [
                query,
                {
                    "$or": [
                        {"created_at": {"$lt": created}},
                        {"created_at": created, "_id": {"$gt": tie}},
                    ]
                },
            ]
        }

    def fetch() -> list[dict[str, Any]]:
        return list(
            state.store.runs.find(query).sort([("created_at", -1), ("_id", 1)]).limit(limit + 1)
        )

    docs = await anyio.to_thread.run_sync(fetch)
    next_cursor = None
    if len(docs) > limit:
        docs = docs[:limit]
        created_at: datetime = docs[-1]["created_at"]
        next_cursor = encode_cursor(RUNS_SORT, created_at, docs[-1]["_id"])
    live = await _live(state, docs)
    return RunPage(
        items=[_run_out(d, live.get(d["run_id"])) for d in docs], next_cursor=next_cursor
    )


@router.get(
    "/{run_id}",
    response_model=RunOut,
    responses=_NOT_FOUND,
    dependencies=[Depends(Guard(Scope.RUNS_READ))],
    summary="Read one run: state, parameters, per-stage counts",
)
async def get_run(state: State, run_id: RunId) -> RunOut:
    doc = await anyio.to_thread.run_sync(state.store.get_run, str(run_id))
    try:
        with prefect_call():
            flow_run = await state.prefect.read_flow_run(run_id)
    except ObjectNotFound:
        flow_run = None
    if doc is None and flow_run is None:
        raise ApiError(404, f"No run {run_id}.")
    if doc is None:
        # Started elsewhere (the Prefect UI, a schedule) and not begun yet.
        params = flow_run.parameters.get("spec") if flow_run else None  # type: ignore[union-attr]
        doc = {"run_id": str(run_id), "spec": params or {}, "created_at": flow_run.created}  # type: ignore[union-attr]
    return _run_out(doc, flow_run)


@router.get(
    "/{run_id}/quarantine",
    response_model=QuarantinePage,
    responses=_NOT_FOUND,
    dependencies=[Depends(Guard(Scope.RUNS_READ))],
    summary="The records a run set aside, with their reasons",
)
def run_quarantine(
    state: State,
    run_id: RunId,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Rows per page.")] = 100,
) -> QuarantinePage:
    query: dict[str, Any] = {"run_id": str(run_id)}
    if cursor:
        _, after = decode_cursor(cursor, "_id")
        if not ObjectId.is_valid(after):
            raise ApiError(400, "Invalid cursor: pass `next_cursor` from the previous page.")
        query["_id"] = {"$gt": ObjectId(after)}
    docs = list(state.store.quarantine_collection.find(query).sort("_id", 1).limit(limit + 1))
    if not docs and not cursor and state.store.get_run(str(run_id)) is None:
        raise ApiError(404, f"No run {run_id}.")
    next_cursor = None
    if len(docs) > limit:
        docs = docs[:limit]
        next_cursor = encode_cursor("_id", None, str(docs[-1]["_id"]))
    return QuarantinePage(
        items=[QuarantineRow.model_validate(d) for d in docs], next_cursor=next_cursor
    )
