"""The trigger and review API: `create_app(settings)` builds one instance.

    python -m api                      # one instance on LEADFLOW_HOST:LEADFLOW_API_PORT
    leadflow up                        # starts it with the other local services

OpenAPI at /docs and /openapi.json; docs/api.md describes the routes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prefect.client.orchestration import get_client

from api.deps import ApiState
from api.errors import install_error_handlers
from api.keys import ApiKeys
from api.metrics import ApiMetrics
from api.middleware import RequestContextMiddleware
from api.ratelimit import RateLimits
from api.routers import export, health, leads, metrics, runs, slack
from api.timing import MongoTimings
from connectors.mongo import LeadStore
from leadflow.logs import configure_logging
from leadflow.prefect_setup import prefect_server
from leadflow.settings import Settings, get_settings

log = logging.getLogger("leadflow.api")

TAGS = [
    {"name": "runs", "description": "Start pipeline runs and follow them."},
    {"name": "leads", "description": "Scored leads, and the analyst's review of each."},
    {"name": "export", "description": "Download leads as CSV, JSON lines or XLSX."},
    {"name": "health", "description": "Liveness and readiness, for load balancers."},
    {"name": "metrics", "description": "Prometheus metrics."},
]
DESCRIPTION = """Trigger Leadflow pipeline runs and review their scored leads.

Every route but `/health` needs an API key (`leadflow keys create`), sent as `X-API-Key` or
`Authorization: Bearer`. Errors share one shape: `{"error": {"code", "message",
"request_id"}}`; `X-Request-ID` is accepted from the client or generated, and echoed.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    api_metrics = ApiMetrics(lambda: app.state.api.store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The API's own client, with command monitoring for the per-request timings; made
        # here, so building the app (e.g. for its OpenAPI schema) connects to nothing.
        store = LeadStore.from_settings(settings, listeners=[MongoTimings()])
        configure_logging(settings, settings.api_instance)
        # RequestContextMiddleware writes the access line (with timings and key id).
        logging.getLogger("uvicorn.access").propagate = False
        keys = ApiKeys(store.db, last_used_every=settings.api_key_last_used_seconds)
        with prefect_server(settings):
            prefect = get_client()
        async with prefect:
            app.state.api = ApiState(
                settings=settings,
                store=store,
                keys=keys,
                limits=RateLimits(settings),
                metrics=api_metrics,
                prefect=prefect,
            )
            log.info("API instance %s ready", settings.api_instance)
            yield
        keys.close()
        store.close()

    app = FastAPI(
        title="Leadflow API",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (runs, leads, export, health, metrics, slack):
        app.include_router(module.router)
    app.add_middleware(RequestContextMiddleware, metrics=api_metrics)
    return app
