"""Fault injection and control plumbing shared by the sandbox CRMs (Salesforce, HubSpot,
Pipedrive).

`crm_app` builds each CRM stand-in as one Starlette app: its API routes sit behind a
`FaultInjector`, its control routes do not, so a test can always read the truth and turn the
faults off however unlucky the draws are:

- `GET /__sandbox/state`: the CRM's knobs, usage counters and the faults injected so far;
- `POST /__sandbox/state`: any knob of the CRM or of `FaultConfig`, and `"reset": true` (every
  record, token, job, counter and rate window cleared; the fault draws start again from the
  seed). A request with one bad knob changes nothing (400);
- `GET /__sandbox/truth[?kind=]`: per object kind the record count, the records, and how
  many records share one external id (`duplicates`, only values held by more than one).

Faults are drawn once per API request from a generator seeded with (CRM, seed), so a run with
the same requests in the same order meets the same faults. The shares below are tried in
this order (should they sum to more than 1, the later kinds get only what is left):

- `error_share`: a 5xx in the API's own error form; nothing is processed.
- `throttle_share`: the API's own "slow down" answer (HubSpot and Pipedrive 429 with their
  rate-limit headers; Salesforce 403 REQUEST_LIMIT_EXCEEDED, which is how it refuses too many
  concurrent long requests); nothing is processed.
- `timeout_share`: the request is held `timeout_seconds` before it reaches the API, so a client
  with a shorter time-out gives up first. The request is then processed: a write lands after
  its client stopped waiting, as behind a slow proxy, so a time-out means "maybe written".
- `lost_response_share`: the request is processed (a write is committed), then the server
  sends response headers announcing a body it never sends and closes the connection. The
  client sees a connection error (httpx `RemoteProtocolError`, requests
  `ChunkedEncodingError`, urllib3 `ProtocolError`), never the answer. ASGI has no way to drop
  a connection before the status line: an app that returns after `http.response.start`
  without finishing the body is how a server is told to close it (uvicorn logs one line,
  "ASGI callable returned without completing response").
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leadflow.settings import Settings
from sandbox.hunter import parse_bool, parse_non_negative_float, parse_share, read_control_request

FAULT_KINDS = ("error", "throttle", "timeout", "lost_response")


@dataclass(slots=True)
class FaultConfig:
    error_share: float = 0.0
    throttle_share: float = 0.0
    timeout_share: float = 0.0
    lost_response_share: float = 0.0
    timeout_seconds: float = 30.0  # how long a "timeout" request is held before it is processed

    @classmethod
    def from_settings(cls, settings: Settings) -> FaultConfig:
        return cls(
            error_share=settings.sandbox_crm_error_share,
            throttle_share=settings.sandbox_crm_throttle_share,
            timeout_share=settings.sandbox_crm_timeout_share,
            lost_response_share=settings.sandbox_crm_lost_response_share,
            timeout_seconds=settings.sandbox_crm_timeout_seconds,
        )

    def shares(self) -> tuple[float, ...]:
        return (self.error_share, self.throttle_share, self.timeout_share, self.lost_response_share)


Parser = Callable[[Any], Any]
FAULT_KNOBS: dict[str, Parser] = {
    "error_share": parse_share,
    "throttle_share": parse_share,
    "timeout_share": parse_share,
    "lost_response_share": parse_share,
    "timeout_seconds": parse_non_negative_float,
}


def apply_knobs(
    changes: Mapping[str, Any], targets: Sequence[tuple[Any, Mapping[str, Parser]]]
) -> None:
    """Set knobs on several config objects from one control request: every value is checked
    before any is set, so a request with one bad knob changes nothing (ValueError)."""
    known = {
        name: (target, parse) for target, parsers in targets for name, parse in parsers.items()
    }
    unknown = sorted(set(changes) - set(known))
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(unknown)}; known: {', '.join(known)}")
    parsed = [(known[name][0], name, known[name][1](value)) for name, value in changes.items()]
    for target, name, value in parsed:
        setattr(target, name, value)


class Faults:
    """The fault knobs of one CRM sandbox, its seeded draws and what it has injected."""

    def __init__(
        self,
        config: FaultConfig,
        label: str,
        *,
        error_response: Callable[[], Response],
        throttle_response: Callable[[], Response],
    ) -> None:
        self.config = config
        self.label = label  # seeds the draws: "<crm>/<seed>"
        self.error_response = error_response
        self.throttle_response = throttle_response
        self._lock = threading.Lock()
        self._rng = random.Random(f"crm-faults/{label}")
        self.injected: Counter[str] = Counter()

    def draw(self) -> str | None:
        """The fault for the next API request, or None."""
        with self._lock:
            roll = self._rng.random()
            bound = 0.0
            for kind, share in zip(FAULT_KINDS, self.config.shares(), strict=True):
                bound += share
                if roll < bound:
                    self.injected[kind] += 1
                    return kind
            return None

    def reset(self) -> None:
        with self._lock:
            self._rng = random.Random(f"crm-faults/{self.label}")
            self.injected.clear()

    def state(self) -> dict[str, Any]:
        return {
            "config": {f.name: getattr(self.config, f.name) for f in fields(self.config)},
            "injected": {kind: self.injected[kind] for kind in FAULT_KINDS},
        }


class FaultInjector:
    """ASGI middleware that injects the drawn fault into an API request (see module doc)."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = self.faults.draw() if scope["type"] == "http" else None
        if kind == "error":
            await self.faults.error_response()(scope, receive, send)
        elif kind == "throttle":
            await self.faults.throttle_response()(scope, receive, send)
        elif kind == "timeout":
            # Read the body first: once the client has given up, the server could no longer
            # read it, and the held request is to be processed all the same.
            messages = await _read_request(receive)
            await asyncio.sleep(self.faults.config.timeout_seconds)
            await self.app(scope, _replay(messages, receive), send)
        elif kind == "lost_response":
            await self._lose_response(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lose_response(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def discard(message: Message) -> None:
            pass

        await self.app(scope, receive, discard)  # the write is committed; its answer dropped
        # Headers announcing a one-byte body that never comes, so that even an answer without
        # a body (204) cannot look complete; returning now makes the server close the connection.
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]}
        )


async def _read_request(receive: Receive) -> list[Message]:
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


class SandboxConfig(Protocol):
    seed: int


ConfigT = TypeVar("ConfigT", bound=SandboxConfig)


class CrmSandboxBase(ABC, Generic[ConfigT]):
    """What each CRM's state shares: its config, clock, lock, seeded faults and control knobs.

    A subclass names itself (`name` seeds the fault draws), gives its config type and knobs,
    how it clears its records (`_clear`), and the 5xx and "slow down" answers a fault sends.
    """

    name: ClassVar[str]
    config_type: ClassVar[Callable[..., Any]]  # a dataclass with `from_settings(settings, seed)`
    control_knobs: ClassVar[Mapping[str, Callable[[Any], Any]]]

    def __init__(
        self,
        config: ConfigT | None = None,
        *,
        fault_config: FaultConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config: ConfigT = config or self.config_type()
        self._clock = clock
        self._lock = threading.RLock()
        self.faults = Faults(
            fault_config or FaultConfig(),
            f"{self.name}/{self.config.seed}",
            error_response=self._fault_error,
            throttle_response=self._fault_throttled,
        )
        self._clear()

    @classmethod
    def from_settings(cls, settings: Settings, seed: int | None = None) -> Self:
        return cls(
            cls.config_type.from_settings(settings, seed),  # type: ignore[attr-defined]
            fault_config=FaultConfig.from_settings(settings),
        )

    def control(self, changes: Mapping[str, Any]) -> None:
        reset, knobs = pop_reset(changes)
        with self._lock:
            self._apply_knobs(knobs)
            if reset:
                self._clear()
                self.faults.reset()

    def _apply_knobs(self, knobs: dict[str, Any]) -> None:
        apply_knobs(knobs, [(self.config, self.control_knobs), (self.faults.config, FAULT_KNOBS)])

    @abstractmethod
    def _clear(self) -> None:
        """Drop every record, token, job, counter and rate window."""

    @abstractmethod
    def _fault_error(self) -> Response:
        """The CRM's own 5xx answer."""

    @abstractmethod
    def _fault_throttled(self) -> Response:
        """The CRM's own "slow down" answer."""


class CrmSandbox(Protocol):
    faults: Faults

    def state(self) -> dict[str, Any]: ...

    def control(self, changes: Mapping[str, Any]) -> None: ...

    def truth(self, kind: str | None = None) -> dict[str, Any]: ...


def crm_app(name: str, sandbox: CrmSandbox, api_routes: Sequence[BaseRoute]) -> Starlette:
    """The CRM stand-in as an ASGI app: API routes behind the fault injector, control routes
    in front of it; `app.state.<name>` is the sandbox object."""

    async def state(request: Request) -> Response:
        if request.method == "POST":
            try:
                sandbox.control(await read_control_request(request))
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(sandbox.state())

    async def truth(request: Request) -> Response:
        try:
            return JSONResponse(sandbox.truth(request.query_params.get("kind")))
        except KeyError as exc:
            return JSONResponse({"error": f"unknown kind {exc}"}, status_code=404)

    app = Starlette(
        routes=[
            Route("/__sandbox/state", state, methods=["GET", "POST"]),
            Route("/__sandbox/truth", truth),
            Mount("", app=FaultInjector(Router(routes=list(api_routes)), sandbox.faults)),
        ]
    )
    setattr(app.state, name, sandbox)
    return app


def pop_reset(changes: Mapping[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Split a control request into its `reset` flag and the knobs."""
    rest = dict(changes)
    return parse_bool(rest.pop("reset", False)), rest


def duplicates(values: Sequence[str | None]) -> dict[str, int]:
    """External-id values held by more than one record, with how many hold each."""
    counts = Counter(v for v in values if v is not None)
    return {value: n for value, n in sorted(counts.items()) if n > 1}
