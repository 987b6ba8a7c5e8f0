"""A stand-in for the 2captcha API (reCAPTCHA v2 only), and the token check the sandbox sites use.

Mounted by `sandbox.server` under `/2captcha`, so a client's base URL is
`http://127.0.0.1:<sandbox_port>/2captcha`. It speaks both public APIs with their documented
shapes (https://2captcha.com/2captcha-api, https://2captcha.com/api-docs):

- legacy (v1): `POST|GET /in.php` (`key, method=userrecaptcha, googlekey, pageurl, json`) ->
  `OK|<id>` or `{"status": 1, "request": "<id>"}`; `GET|POST /res.php` with `action=get`
  (`CAPCHA_NOT_READY`, sic, until the solve delay has passed, then `OK|<token>`),
  `action=getbalance`, `action=reportbad` / `reportgood` (`OK_REPORT_RECORDED`). Errors are
  the bare code as text (`json=0`) or `{"status": 0, "request": "ERROR_...", "error_text"}`.
- v2 JSON: `POST /createTask` (`RecaptchaV2TaskProxyless`), `POST /getTaskResult`,
  `POST /getBalance`, `POST /reportIncorrect` / `reportCorrect`; errors as
  `{"errorId": n, "errorCode": "ERROR_...", "errorDescription": "..."}`.

Like the real service, every answer is HTTP 200 (the error is in the body), a task is charged
when it is submitted and refunded when it ends unsolvable, and a key with too little money gets
`ERROR_ZERO_BALANCE`. `ERROR_NO_SLOT_AVAILABLE` answers a key that already has `max_pending`
tasks being solved.

Each solved task carries a fresh random token. `CaptchaSandbox.verify_token(token, sitekey,
page_url)` is what a sandbox site calls (in process, or `POST /2captcha/__verify` over HTTP,
shaped like Google's siteverify): true only for a token this server issued for that sitekey
and page URL, within `token_ttl` seconds (120, as for reCAPTCHA) of being issued, and only
once: like siteverify, the first check burns a token whatever its outcome, so a token shown
to the wrong page cannot be replayed on the right one.

Not implemented (answered with `ERROR_BAD_PARAMETERS`): image and other CAPTCHA types,
reCAPTCHA v3/Enterprise, proxies, pingback. Reports are recorded but refund nothing: 2captcha
only refunds reCAPTCHA reports after its own statistical review.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from leadflow.settings import SANDBOX_CAPTCHA_KEY, Settings

DEFAULT_COST = 0.00299  # 2captcha's reCAPTCHA v2 price: $2.99 per 1000
RECAPTCHA_TOKEN_TTL = 120.0  # a reCAPTCHA response token is valid for two minutes
CENT = Decimal("0.00001")  # balances are reported to 5 decimals, as 2captcha does

# Legacy API codes with the documented meaning (the `error_text` of a json=1 answer).
V1_ERRORS: dict[str, str] = {
    "ERROR_WRONG_USER_KEY": "The key parameter is missing or not in the right format (32 characters).",
    "ERROR_KEY_DOES_NOT_EXIST": "The key you've provided does not exist.",
    "ERROR_ZERO_BALANCE": "You don't have funds on your account.",
    "ERROR_NO_SLOT_AVAILABLE": "Your queue of captchas that are not distributed to workers is too long; retry in 5 seconds.",
    "ERROR_PAGEURL": "The pageurl parameter is missing.",
    "ERROR_GOOGLEKEY": "The googlekey parameter is missing or malformed.",
    "ERROR_BAD_PARAMETERS": "Required parameters are missing or not supported by the sandbox (reCAPTCHA v2 only).",
    "ERROR_CAPTCHA_UNSOLVABLE": "Workers could not solve the captcha; you were not charged.",
    "ERROR_WRONG_ID_FORMAT": "The captcha id is not a number.",
    "ERROR_WRONG_CAPTCHA_ID": "The captcha id is wrong or belongs to another key.",
    "ERROR_EMPTY_ACTION": "The action parameter is missing or unknown.",
    "ERROR_REPORT_NOT_RECORDED": "Only solved captchas can be reported.",
    "ERROR_DUPLICATE_REPORT": "This captcha was already reported.",
}

# API v2 error ids (https://2captcha.com/api-docs/error-codes).
V2_ERRORS: dict[str, tuple[int, str]] = {
    "ERROR_KEY_DOES_NOT_EXIST": (1, "Your API key is incorrect."),
    "ERROR_NO_SLOT_AVAILABLE": (2, "Your bid is too low or your captcha queue is too long."),
    "ERROR_PAGEURL": (5, "websiteURL is missing or malformed."),
    "ERROR_ZERO_BALANCE": (10, "No funds on your account."),
    "ERROR_CAPTCHA_UNSOLVABLE": (12, "Workers could not solve the Captcha."),
    "ERROR_NO_SUCH_CAPCHA_ID": (16, "Incorrect captcha ID."),
    "ERROR_TASK_ABSENT": (22, "The task property is missing."),
    "ERROR_TASK_NOT_SUPPORTED": (
        23,
        "The task type is not supported (sandbox: RecaptchaV2TaskProxyless).",
    ),
    "ERROR_BAD_PARAMETERS": (110, "Required captcha parameters are missing or malformed."),
}
# v1 codes that have another name in v2.
_V1_TO_V2 = {
    "ERROR_WRONG_USER_KEY": "ERROR_KEY_DOES_NOT_EXIST",
    "ERROR_WRONG_CAPTCHA_ID": "ERROR_NO_SUCH_CAPCHA_ID",
    "ERROR_WRONG_ID_FORMAT": "ERROR_NO_SUCH_CAPCHA_ID",
    "ERROR_GOOGLEKEY": "ERROR_BAD_PARAMETERS",
    "ERROR_REPORT_NOT_RECORDED": "ERROR_NO_SUCH_CAPCHA_ID",
    "ERROR_DUPLICATE_REPORT": "ERROR_NO_SUCH_CAPCHA_ID",
}

V2_TASK_TYPES = frozenset({"RecaptchaV2TaskProxyless", "NoCaptchaTaskProxyless"})


class CaptchaApiError(Exception):
    """A documented 2captcha error; `code` is the legacy (v1) name."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class NotReady(Exception):
    """The task is still being solved (`CAPCHA_NOT_READY` / `"status": "processing"`)."""


@dataclass(slots=True)
class CaptchaSandboxConfig:
    # API key -> starting balance in dollars.
    accounts: Mapping[str, float] = field(default_factory=lambda: {SANDBOX_CAPTCHA_KEY: 10.0})
    cost: float = DEFAULT_COST
    solve_seconds: float = 1.0
    unsolvable_share: float = 0.0
    token_ttl: float = RECAPTCHA_TOKEN_TTL
    # Tasks one key may have in the solving queue before ERROR_NO_SLOT_AVAILABLE (2captcha: 50-100).
    max_pending: int = 100
    seed: int = 42
    # Tasks and tokens are forgotten this long after they were solved (2captcha keeps ~15 min).
    retention: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings, seed: int | None = None) -> CaptchaSandboxConfig:
        balance = settings.sandbox_captcha_balance
        accounts = {SANDBOX_CAPTCHA_KEY: balance}
        # A key set in the environment works against the sandbox too, so switching between
        # sandbox and production needs no key change.
        if settings.captcha_api_key is not None:
            accounts[settings.captcha_api_key.get_secret_value()] = balance
        return cls(
            accounts=accounts,
            cost=settings.sandbox_captcha_cost,
            solve_seconds=settings.sandbox_captcha_solve_seconds,
            unsolvable_share=settings.sandbox_captcha_unsolvable_share,
            token_ttl=settings.sandbox_captcha_token_ttl,
            seed=settings.sandbox_seed if seed is None else seed,
        )


@dataclass(slots=True)
class Task:
    task_id: int
    key: str
    sitekey: str
    page_url: str
    created: float  # clock time
    created_wall: float  # epoch seconds, for createTime/endTime
    ready_at: float  # clock time the solve (or the failure) becomes visible
    unsolvable: bool
    token: str | None
    cost: Decimal
    settled: bool = False  # the outcome is counted (and an unsolvable task refunded)
    report: str | None = None  # "bad" or "good"


@dataclass(slots=True)
class IssuedToken:
    task_id: int
    sitekey: str
    page_url: str  # normalised
    issued_at: float  # clock time
    issued_wall: float
    used: bool = False


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of a token check, with Google siteverify's error codes."""

    success: bool
    error_codes: tuple[str, ...] = ()
    challenge_ts: str | None = None
    hostname: str | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"success": self.success, "error-codes": list(self.error_codes)}
        if self.success:
            body["challenge_ts"] = self.challenge_ts
            body["hostname"] = self.hostname
        return body


def normalise_url(url: str) -> str:
    """A page URL in one spelling: case-folded scheme and host, no default port, no fragment.

    Token checks compare page URLs; the browser, the crawler and the site may spell the same
    page differently (`HTTP://Maps.test:80` vs `http://maps.test/`), which must not fail a solve.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", parts.query, ""))


def _token() -> str:
    # Shaped like a reCAPTCHA response (a long URL-safe string starting 03A); random, so a
    # token cannot be guessed or forged.
    return "03A" + secrets.token_urlsafe(96)


class CaptchaSandbox:
    """In-memory state of the 2captcha stand-in: accounts, tasks, issued tokens.

    Thread-safe: the API runs in the server's event loop while a site in another thread (or
    a test) may call `verify_token`. `clock` is injectable so tests can move time.
    """

    def __init__(
        self,
        config: CaptchaSandboxConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or CaptchaSandboxConfig()
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.RLock()
        self._rng = random.Random(self.config.seed)
        self._cost = Decimal(str(self.config.cost))
        self._balances: dict[str, Decimal] = {
            k: Decimal(str(v)) for k, v in self.config.accounts.items()
        }
        self._tasks: dict[int, Task] = {}  # insertion (= creation) order, for pruning
        self._tokens: dict[str, IssuedToken] = {}
        self._pending: dict[str, deque[float]] = {}  # key -> ready_at of tasks being solved
        self._unsettled: deque[Task] = deque()  # tasks whose outcome is not yet counted
        # Ids look like 2captcha's (11 digits); the start is seeded so runs are reproducible.
        self._next_id = 70_000_000_000 + self._rng.randrange(1_000_000_000)
        self.counters: dict[str, int] = {
            "submitted": 0,
            "solved": 0,
            "unsolvable": 0,
            "reported_bad": 0,
            "reported_good": 0,
            "verified": 0,
            "refused": 0,
        }

    @classmethod
    def from_settings(cls, settings: Settings, seed: int | None = None) -> CaptchaSandbox:
        return cls(CaptchaSandboxConfig.from_settings(settings, seed))

    # --- accounts -------------------------------------------------------------------------

    def _account(self, key: str | None) -> str:
        key = (key or "").strip()
        if key in self._balances:
            return key
        # 2captcha answers a malformed key (not 32 characters) differently from an unknown one.
        if len(key) == 32 and key.isalnum():
            raise CaptchaApiError("ERROR_KEY_DOES_NOT_EXIST")
        raise CaptchaApiError("ERROR_WRONG_USER_KEY")

    def balance(self, key: str | None) -> Decimal:
        with self._lock:
            account = self._account(key)
            self._settle()
            return self._balances[account]

    def set_balance(self, key: str, amount: float) -> None:
        """Add or top up an account (tests, demos)."""
        with self._lock:
            self._balances[key] = Decimal(str(amount))

    # --- tasks ----------------------------------------------------------------------------

    def submit(self, key: str | None, sitekey: str | None, page_url: str | None) -> Task:
        """Queue a reCAPTCHA v2 task; charge it now (refunded if it ends unsolvable)."""
        with self._lock:
            account = self._account(key)
            if not sitekey or not sitekey.strip():
                raise CaptchaApiError("ERROR_GOOGLEKEY")
            if not page_url or not urlsplit(page_url.strip()).scheme:
                raise CaptchaApiError("ERROR_PAGEURL")
            now = self._clock()
            self._settle()
            self._prune(now)
            if self._balances[account] < self._cost:
                raise CaptchaApiError("ERROR_ZERO_BALANCE")
            pending = self._pending.setdefault(account, deque())
            while pending and pending[0] <= now:
                pending.popleft()
            if len(pending) >= self.config.max_pending:
                raise CaptchaApiError("ERROR_NO_SLOT_AVAILABLE")
            unsolvable = self._rng.random() < self.config.unsolvable_share
            task = Task(
                task_id=self._next_id,
                key=account,
                sitekey=sitekey.strip(),
                page_url=page_url.strip(),
                created=now,
                created_wall=self._wall(),
                ready_at=now + max(0.0, self.config.solve_seconds),
                unsolvable=unsolvable,
                token=None if unsolvable else _token(),
                cost=self._cost,
            )
            self._next_id += 1
            self._balances[account] -= self._cost
            self._tasks[task.task_id] = task
            pending.append(task.ready_at)
            if task.token is not None:
                # The token exists from the moment the "worker" finishes (ready_at); its TTL
                # runs from then, as a real reCAPTCHA token's does from when it is generated.
                self._tokens[task.token] = IssuedToken(
                    task_id=task.task_id,
                    sitekey=task.sitekey,
                    page_url=normalise_url(task.page_url),
                    issued_at=task.ready_at,
                    issued_wall=task.created_wall + (task.ready_at - task.created),
                )
            self._unsettled.append(task)
            self.counters["submitted"] += 1
            return task

    def _task(self, key: str | None, task_id: str | int | None) -> Task:
        account = self._account(key)
        try:
            number = int(str(task_id).strip())
        except ValueError:
            raise CaptchaApiError("ERROR_WRONG_ID_FORMAT") from None
        task = self._tasks.get(number)
        if task is None or task.key != account:
            raise CaptchaApiError("ERROR_WRONG_CAPTCHA_ID")
        return task

    def result(self, key: str | None, task_id: str | int | None) -> Task:
        """The finished task; raises NotReady while solving, or ERROR_CAPTCHA_UNSOLVABLE."""
        with self._lock:
            task = self._task(key, task_id)
            self._settle()
            if self._clock() < task.ready_at:
                raise NotReady
            if task.unsolvable:
                raise CaptchaApiError("ERROR_CAPTCHA_UNSOLVABLE")
            return task

    def report(self, key: str | None, task_id: str | int | None, *, bad: bool) -> None:
        with self._lock:
            task = self._task(key, task_id)
            if self._clock() < task.ready_at or task.unsolvable:
                raise CaptchaApiError("ERROR_REPORT_NOT_RECORDED")
            if task.report is not None:
                raise CaptchaApiError("ERROR_DUPLICATE_REPORT")
            task.report = "bad" if bad else "good"
            self.counters["reported_bad" if bad else "reported_good"] += 1

    def _settle(self) -> None:
        """Count the tasks whose outcome is now visible; refund the unsolvable ones."""
        now = self._clock()
        while self._unsettled and self._unsettled[0].ready_at <= now:
            task = self._unsettled.popleft()
            task.settled = True
            if task.unsolvable:
                # 2captcha does not charge for a CAPTCHA its workers could not solve.
                self._balances[task.key] += task.cost
                self.counters["unsolvable"] += 1
            else:
                self.counters["solved"] += 1

    def _prune(self, now: float) -> None:
        # Both dicts are in creation order and the solve delay is constant, so the old
        # entries are at the front: stop at the first one still kept.
        horizon = now - max(self.config.retention, self.config.token_ttl)
        for task_id in list(self._tasks):
            task = self._tasks[task_id]
            if task.ready_at > horizon or not task.settled:
                break
            del self._tasks[task_id]
        for token in list(self._tokens):
            if self._tokens[token].issued_at > horizon:
                break
            del self._tokens[token]

    # --- token checks (for the sandbox sites) ----------------------------------------------

    def check_token(self, token: str | None, sitekey: str, page_url: str) -> VerifyResult:
        """Check a response token the way a site's server would with Google's siteverify."""
        with self._lock:
            self._settle()
            result = self._check(token, sitekey, page_url)
            self.counters["verified" if result.success else "refused"] += 1
            return result

    def _check(self, token: str | None, sitekey: str, page_url: str) -> VerifyResult:
        if not token:
            return VerifyResult(False, ("missing-input-response",))
        issued = self._tokens.get(token.strip())
        now = self._clock()
        if issued is None or now < issued.issued_at:
            return VerifyResult(False, ("invalid-input-response",))
        if issued.used or now - issued.issued_at > self.config.token_ttl:
            return VerifyResult(False, ("timeout-or-duplicate",))
        issued.used = True  # single use, whatever the outcome below
        if issued.sitekey != (sitekey or "").strip():
            return VerifyResult(False, ("invalid-input-response",))
        if issued.page_url != normalise_url(page_url or ""):
            return VerifyResult(False, ("invalid-input-response",))
        return VerifyResult(
            True,
            challenge_ts=datetime.fromtimestamp(issued.issued_wall, UTC).isoformat(
                timespec="seconds"
            ),
            hostname=urlsplit(issued.page_url).hostname,
        )

    def verify_token(self, token: str | None, sitekey: str, page_url: str) -> bool:
        """True only for an unused, unexpired token issued here for this sitekey and page."""
        return self.check_token(token, sitekey, page_url).success

    def stats(self) -> dict[str, Any]:
        """Counters and balances (keys shortened: the state endpoint should not echo them)."""
        with self._lock:
            self._settle()
            return {
                **self.counters,
                "balances": {_mask(k): float(v.quantize(CENT)) for k, v in self._balances.items()},
            }


def _mask(key: str) -> str:
    return key[:4] + "…" if len(key) > 8 else "…"


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT))


async def _params(request: Request) -> dict[str, str]:
    """Query string and form body merged: 2captcha takes its parameters either way."""
    params = dict(request.query_params)
    if request.method == "POST":
        body = (await request.body()).decode("utf-8", "replace")
        ctype = request.headers.get("content-type", "")
        if "json" in ctype:
            try:
                data = json.loads(body or "{}")
            except ValueError:
                data = {}
            if isinstance(data, dict):
                params.update({k: str(v) for k, v in data.items() if v is not None})
        elif "multipart" in ctype:
            form = await request.form()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        else:
            params.update(dict(parse_qsl(body, keep_blank_values=True)))
    return params


def _v1(params: Mapping[str, str], ok: bool, value: str, error_text: str | None = None) -> Response:
    """A legacy answer: text (`OK|value`, a bare code) or, with json=1, status/request."""
    headers = {"Access-Control-Allow-Origin": "*"} if params.get("header_acao") == "1" else None
    if params.get("json") == "1":
        body: dict[str, Any] = {"status": 1 if ok else 0, "request": value}
        if error_text:
            body["error_text"] = error_text
        return JSONResponse(body, headers=headers)
    return PlainTextResponse(value, headers=headers)


def _v1_error(params: Mapping[str, str], code: str) -> Response:
    return _v1(params, False, code, V1_ERRORS.get(code, code))


def _v2_error(code: str) -> Response:
    code = _V1_TO_V2.get(code, code)
    error_id, description = V2_ERRORS.get(code, (110, code))
    return JSONResponse({"errorId": error_id, "errorCode": code, "errorDescription": description})


def captcha_app(sandbox: CaptchaSandbox) -> Starlette:
    """The 2captcha stand-in as an ASGI app (mount it under `/2captcha`)."""

    async def in_php(request: Request) -> Response:
        p = await _params(request)
        method = p.get("method", "")
        # The sandbox solves reCAPTCHA v2 only; v3 and Enterprise need scores it cannot fake.
        if (
            method != "userrecaptcha"
            or p.get("version", "v2") != "v2"
            or p.get("enterprise") == "1"
        ):
            try:
                sandbox.balance(p.get("key"))  # a wrong key is still reported as such
            except CaptchaApiError as exc:
                return _v1_error(p, exc.code)
            return _v1_error(p, "ERROR_BAD_PARAMETERS")
        try:
            task = sandbox.submit(p.get("key"), p.get("googlekey"), p.get("pageurl"))
        except CaptchaApiError as exc:
            return _v1_error(p, exc.code)
        if p.get("json") == "1":
            return _v1(p, True, str(task.task_id))
        return _v1(p, True, f"OK|{task.task_id}")

    async def res_php(request: Request) -> Response:
        p = await _params(request)
        action = p.get("action", "")
        try:
            if action == "get":
                try:
                    task = sandbox.result(p.get("key"), p.get("id"))
                except NotReady:
                    return _v1(p, False, "CAPCHA_NOT_READY")
                assert task.token is not None
                value = task.token if p.get("json") == "1" else f"OK|{task.token}"
                return _v1(p, True, value)
            if action == "getbalance":
                return _v1(p, True, _money(sandbox.balance(p.get("key"))))
            if action in ("reportbad", "reportgood"):
                sandbox.report(p.get("key"), p.get("id"), bad=action == "reportbad")
                return _v1(p, True, "OK_REPORT_RECORDED")
        except CaptchaApiError as exc:
            return _v1_error(p, exc.code)
        return _v1_error(p, "ERROR_EMPTY_ACTION")

    async def _json_body(request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    async def create_task(request: Request) -> Response:
        data = await _json_body(request)
        try:
            sandbox.balance(data.get("clientKey"))
        except CaptchaApiError as exc:
            return _v2_error(exc.code)
        task_spec = data.get("task")
        if not isinstance(task_spec, dict):
            return _v2_error("ERROR_TASK_ABSENT")
        if task_spec.get("type") not in V2_TASK_TYPES:
            return _v2_error("ERROR_TASK_NOT_SUPPORTED")
        try:
            task = sandbox.submit(
                data.get("clientKey"), task_spec.get("websiteKey"), task_spec.get("websiteURL")
            )
        except CaptchaApiError as exc:
            return _v2_error(exc.code)
        return JSONResponse({"errorId": 0, "taskId": task.task_id})

    async def get_task_result(request: Request) -> Response:
        data = await _json_body(request)
        try:
            task = sandbox.result(data.get("clientKey"), data.get("taskId"))
        except NotReady:
            return JSONResponse({"errorId": 0, "status": "processing"})
        except CaptchaApiError as exc:
            return _v2_error(exc.code)
        return JSONResponse(
            {
                "errorId": 0,
                "status": "ready",
                "solution": {"gRecaptchaResponse": task.token, "token": task.token},
                "cost": _money(task.cost),
                "ip": request.client.host if request.client else "127.0.0.1",
                "createTime": int(task.created_wall),
                "endTime": int(task.created_wall + (task.ready_at - task.created)),
                "solveCount": 1,
            }
        )

    async def get_balance(request: Request) -> Response:
        data = await _json_body(request)
        try:
            balance = sandbox.balance(data.get("clientKey"))
        except CaptchaApiError as exc:
            return _v2_error(exc.code)
        return JSONResponse({"errorId": 0, "balance": float(balance.quantize(CENT))})

    def _report_v2(bad: bool) -> Callable[[Request], Any]:
        async def report(request: Request) -> Response:
            data = await _json_body(request)
            try:
                sandbox.report(data.get("clientKey"), data.get("taskId"), bad=bad)
            except CaptchaApiError as exc:
                return _v2_error(exc.code)
            return JSONResponse({"errorId": 0, "status": "success"})

        return report

    async def verify(request: Request) -> Response:
        p = await _params(request)
        result = sandbox.check_token(
            p.get("response") or p.get("token"),
            p.get("sitekey", ""),
            p.get("pageurl") or p.get("page_url") or "",
        )
        return JSONResponse(result.as_json())

    async def state(request: Request) -> Response:
        return JSONResponse(sandbox.stats())

    app = Starlette(
        routes=[
            # 2captcha takes the legacy calls as GET or POST alike.
            Route("/in.php", in_php, methods=["GET", "POST"]),
            Route("/res.php", res_php, methods=["GET", "POST"]),
            Route("/createTask", create_task, methods=["POST"]),
            Route("/getTaskResult", get_task_result, methods=["POST"]),
            Route("/getBalance", get_balance, methods=["POST"]),
            Route("/reportIncorrect", _report_v2(True), methods=["POST"]),
            Route("/reportCorrect", _report_v2(False), methods=["POST"]),
            Route("/__verify", verify, methods=["POST"]),
            Route("/__sandbox/state", state),
        ]
    )
    # A site mounted in the same process can reach the state through the app.
    app.state.captcha = sandbox
    return app
