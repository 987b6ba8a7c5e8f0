"""Prometheus text format of this instance's metrics (api/metrics.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import Guard, State
from api.errors import AUTH_RESPONSES
from api.keys import Scope

router = APIRouter(tags=["metrics"], responses=AUTH_RESPONSES)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
    dependencies=[Depends(Guard(Scope.METRICS_READ))],
    summary="Prometheus metrics",
)
def metrics(state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
