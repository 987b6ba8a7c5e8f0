"""Dependencies: the app's shared state, and the guard every protected route declares.

`Guard(Scope.LEADS_READ)` authenticates the `X-API-Key` (or `Authorization: Bearer`) key,
applies the rate limits (api/ratelimit.py), checks the scope, and returns the key's record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from api.keys import ApiKeyRecord, ApiKeys, Scope
from api.metrics import ApiMetrics
from api.ratelimit import LimitState, RateLimited, RateLimits
from connectors.mongo import LeadStore
from leadflow.settings import Settings


@dataclass
class ApiState:
    settings: Settings
    store: LeadStore
    keys: ApiKeys
    limits: RateLimits
    metrics: ApiMetrics
    prefect: Any  # prefect.client.orchestration.PrefectClient, opened by the lifespan
    deployment_ids: dict[str, Any] = field(default_factory=dict)


def get_state(request: Request) -> ApiState:
    return request.app.state.api


State = Annotated[ApiState, Depends(get_state)]

# Declared for the OpenAPI schema (the "Authorize" button); Guard reads the headers itself.
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="lf_<id>_<secret>")
_bearer = HTTPBearer(auto_error=False, description="The same key as a Bearer token.")


def _rate_limited(exc: RateLimited) -> ApiError:
    return ApiError(
        429,
        str(exc),
        headers={**exc.state.headers(), "Retry-After": str(exc.state.retry_after())},
    )


class Guard:
    def __init__(self, scope: Scope, *, route_limit: str | None = None) -> None:
        self.scope = scope
        self.route_limit = route_limit

    def __call__(
        self,
        request: Request,
        response: Response,
        state: State,
        api_key: Annotated[str | None, Depends(_api_key_header)] = None,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
    ) -> ApiKeyRecord:
        presented = api_key or (bearer.credentials if bearer else None)
        record = state.keys.verify(presented.strip()) if presented else None
        exempt = record is not None and record.ratelimit_exempt
        limits: list[LimitState] = []
        try:
            if not exempt:
                limits.append(state.limits.check_ip(request))
            if record is None:
                raise ApiError(
                    401,
                    "Unknown or revoked API key."
                    if presented
                    else "An API key is required (X-API-Key header or Authorization: Bearer).",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            request.state.api_key_id = record.key_id
            if not record.allows(self.scope):
                raise ApiError(403, f"This API key lacks the scope {self.scope.value!r}.")
            if not exempt:
                limits += state.limits.check_key(record.key_id, self.route_limit)
        except RateLimited as exc:
            raise _rate_limited(exc) from None
        if limits:
            tightest = min(limits, key=lambda s: s.remaining)
            response.headers.update(tightest.headers())
            request.state.rate_limit_headers = tightest.headers()
        return record
