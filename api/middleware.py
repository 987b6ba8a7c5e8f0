"""Per-request context: the request id, the timings (api/timing.py), the access log line and
the request metrics.

A pure ASGI middleware (not `BaseHTTPMiddleware`): it adds no task or stream per request, and
the request id stays set in the context of everything the request runs, so every log line of
the request carries it.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from api.metrics import ApiMetrics
from api.timing import RequestTimings, current_timings
from leadflow.logs import accept_request_id, request_id_var

REQUEST_ID_HEADER = "X-Request-ID"
access_log = logging.getLogger("leadflow.api.access")
log = logging.getLogger("leadflow.api")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                header = value.decode("latin-1")
                break
        request_id = accept_request_id(header)
        token = request_id_var.set(request_id)
        timings = RequestTimings()
        timings_token = current_timings.set(timings)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                # The waits so far: for a streamed body, the time to its first byte.
                headers["Server-Timing"] = timings.header(time.perf_counter() - started)
            await send(message)

        started_response = False

        async def send_tracked(message: Message) -> None:
            nonlocal started_response
            started_response = started_response or message["type"] == "http.response.start"
            await send_with_id(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            # Answered here, not by Starlette's outermost error middleware, so the 500 still
            # carries the request id (header, body and the log line with the traceback).
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if started_response:
                raise
            await error_response(
                500, "internal_error", "Internal error; the request id is in the server log."
            )(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            state = scope.get("state", {})
            access_log.info(
                "%s %s %d %.1f ms",
                method,
                scope["path"],
                status,
                elapsed * 1000,
                extra={
                    "method": method,
                    "path": scope["path"],
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                    "api_key_id": state.get("api_key_id"),
                    "mongo_ms": round(timings.mongo_seconds * 1000, 2),
                    "mongo_round_trips": timings.mongo_round_trips,
                    "prefect_ms": round(timings.prefect_seconds * 1000, 2),
                },
            )
            current_timings.reset(timings_token)
            request_id_var.reset(token)
