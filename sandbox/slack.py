"""A stand-in for Slack incoming webhooks, mounted by `sandbox.server` under `/slack`.

`POST /slack/services/<team>/<bot>/<token>` with a JSON body `{"text", "blocks"}` answers as
Slack documents (../shared/API_CONTRACTS.md):

- 200 `ok` (plain text) and the message is kept;
- 400 `invalid_payload` (not JSON, or neither `text` nor `blocks`), `no_text`;
- 404 `no_service` for a hook that does not exist or was revoked;
- 429 `rate_limited` with `Retry-After` past one message per second per hook (Slack's limit
  for incoming webhooks, short bursts allowed).

Hooks exist once created: the sandbox creates `services/T0SANDBOX/B0SANDBOX/sandbox-hook` at
start. Control routes (not Slack's): `GET /__sandbox/messages` lists what each hook received;
`POST /__sandbox/state` with `{"revoke": path}`, `{"create": path}`, `{"burst": n}` or
`{"reset": true}`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

DEFAULT_HOOK = "services/T0SANDBOX/B0SANDBOX/sandbox-hook"


@dataclass
class SlackSandbox:
    hooks: set[str] = field(default_factory=lambda: {DEFAULT_HOOK})
    burst: int = 5  # messages a hook may send back to back before the 1/s limit bites
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    _sent: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, hook: str, raw: bytes) -> tuple[int, str, dict[str, str]]:
        with self._lock:
            if hook not in self.hooks:
                return 404, "no_service", {}
            try:
                body = json.loads(raw)
            except ValueError:
                return 400, "invalid_payload", {}
            if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
                return 400, "no_text", {}
            now = time.monotonic()
            window = [t for t in self._sent[hook] if now - t < self.burst]
            if len(window) >= self.burst:
                self._sent[hook] = window
                return 429, "rate_limited", {"Retry-After": "1"}
            self._sent[hook] = [*window, now]
            self.messages[hook].append(body)
            return 200, "ok", {}

    def control(self, request: dict[str, Any]) -> None:
        with self._lock:
            if request.get("reset"):
                self.hooks = {DEFAULT_HOOK}
                self.messages.clear()
                self._sent.clear()
            if "revoke" in request:
                self.hooks.discard(str(request["revoke"]))
            if "create" in request:
                self.hooks.add(str(request["create"]))
            if "burst" in request:
                self.burst = max(1, int(request["burst"]))


def slack_app(sandbox: SlackSandbox | None = None) -> Starlette:
    sandbox = sandbox or SlackSandbox()

    async def webhook(request: Request) -> Response:
        hook = "services/" + request.path_params["rest"]
        status, text, headers = sandbox.post(hook, await request.body())
        return PlainTextResponse(text, status_code=status, headers=headers)

    async def messages(request: Request) -> Response:
        return JSONResponse({hook: list(msgs) for hook, msgs in sandbox.messages.items()})

    async def state(request: Request) -> Response:
        try:
            sandbox.control(await request.json())
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"hooks": sorted(sandbox.hooks), "burst": sandbox.burst})

    app = Starlette(
        routes=[
            Route("/services/{rest:path}", webhook, methods=["POST"]),
            Route("/__sandbox/messages", messages),
            Route("/__sandbox/state", state, methods=["POST"]),
        ]
    )
    app.state.slack = sandbox
    return app
