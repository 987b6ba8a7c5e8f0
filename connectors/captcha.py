"""2captcha client: balance, reCAPTCHA v2 solving, bad-token reports, per-run solve statistics.

Talks to the legacy API (`in.php` / `res.php`, https://2captcha.com/2captcha-api) with httpx,
because the official `2captcha-python` always builds `https://` URLs and so cannot reach the
plain-HTTP sandbox (`LEADFLOW_CAPTCHA_URL`, default `<sandbox_url>/2captcha` in sandbox mode).

The API answers HTTP 200 with the outcome in the body; this module turns the documented
codes into typed errors:

- `ERROR_WRONG_USER_KEY` / `ERROR_KEY_DOES_NOT_EXIST` (and IP bans) -> `CaptchaAuthError`
- `ERROR_ZERO_BALANCE`, or a balance below the run's minimum -> `CaptchaBalanceError`
- `ERROR_CAPTCHA_UNSOLVABLE` -> `CaptchaUnsolvable`; no answer within `solve_timeout` ->
  `CaptchaTimeout`; every token rejected by the site -> `CaptchaRejected`
- `ERROR_NO_SLOT_AVAILABLE` -> waits `no_slot_backoff` and submits again (within the timeout).

`SolveStats` accumulates on the client, so a run can log its solve rate and cost. The API key
never appears in a log line or an error message: res.php takes it in the query string, so a
filter on httpx's request log masks it too.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from leadflow.settings import Settings, get_settings

log = logging.getLogger("leadflow.captcha")

AUTH_ERRORS = frozenset(
    {
        "ERROR_WRONG_USER_KEY",
        "ERROR_KEY_DOES_NOT_EXIST",
        "ERROR_IP_NOT_ALLOWED",
        "ERROR_IP_BANNED",
        "IP_BANNED",
    }
)
NOT_READY = "CAPCHA_NOT_READY"  # sic: 2captcha's spelling
MIN_BALANCE_ENV = "LEADFLOW_CAPTCHA_MIN_BALANCE"


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class CaptchaError(Exception):
    """A 2captcha failure; `code` is the API's error code when there is one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class CaptchaAuthError(CaptchaError):
    """The API key is missing, wrong, or not allowed from this IP: fix the configuration."""


class CaptchaBalanceError(CaptchaError):
    """Not enough money on the account: top up (or lower the minimum)."""


class CaptchaUnsolvable(CaptchaError):
    """2captcha's workers could not solve this CAPTCHA (not charged)."""


class CaptchaTimeout(CaptchaError):
    """No answer within the solve time-out."""


class CaptchaRejected(CaptchaError):
    """The site refused every token tried for one challenge."""


class CaptchaNetworkError(CaptchaError):
    """2captcha could not be reached, or answered with something that is not its API."""


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Solution:
    token: str  # the g-recaptcha-response to submit with the page's form
    captcha_id: str  # for report_bad when the site rejects the token
    cost: float  # dollars charged for this solve
    seconds: float  # from submit to token


@dataclass(slots=True)
class SolveStats:
    """What one run's CAPTCHA solving achieved and cost (accumulated on the client)."""

    attempted: int = 0  # tasks submitted (and accepted) by 2captcha
    solved: int = 0  # tokens received
    failed: int = 0  # unsolvable or timed out
    reported_bad: int = 0  # tokens the site rejected and 2captcha recorded as bad
    cost: float = 0.0  # dollars, solved tasks only (unsolvable ones are refunded)
    seconds: float = 0.0  # time spent waiting for solved tokens

    @property
    def solve_rate(self) -> float:
        return self.solved / self.attempted if self.attempted else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "solve_rate": round(self.solve_rate, 4)}

    def summary(self) -> str:
        mean = self.seconds / self.solved if self.solved else 0.0
        return (
            f"captcha: {self.solved}/{self.attempted} solved ({self.solve_rate:.0%}), "
            f"{self.failed} failed, {self.reported_bad} reported bad, "
            f"cost ${self.cost:.5f}, {mean:.1f} s per solve"
        )


# --------------------------------------------------------------------------------------
# Keeping the key out of logs
# --------------------------------------------------------------------------------------


class _RedactSecrets(logging.Filter):
    """Masks registered secrets in the records of the logger it is attached to.

    httpx logs every request URL at INFO, and res.php takes the key as a query parameter.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                for s in self.secrets:
                    message = message.replace(s, "***")
                record.msg, record.args = message, None
        return True


_redactor = _RedactSecrets()
_redactor_lock = threading.Lock()


def _hide_in_logs(secret: str) -> None:
    with _redactor_lock:
        _redactor.secrets.add(secret)
        for name in ("httpx", "httpcore"):
            logger = logging.getLogger(name)
            if _redactor not in logger.filters:
                logger.addFilter(_redactor)


# --------------------------------------------------------------------------------------
# Challenge detection
# --------------------------------------------------------------------------------------

_SITEKEY_RE = re.compile(
    r"""<[^>]*\bclass=["'][^"']*\bg-recaptcha\b[^"']*["'][^>]*>""", re.IGNORECASE | re.DOTALL
)
_DATA_SITEKEY_RE = re.compile(r"""\bdata-sitekey=["']([^"']+)["']""", re.IGNORECASE)
_RENDER_RE = re.compile(r"""recaptcha/api\.js\?[^"']*\brender=([A-Za-z0-9_-]{20,})""")


def find_recaptcha_sitekey(html: str) -> str | None:
    """The reCAPTCHA v2 sitekey of a page, or None when the page shows no challenge.

    Looks for the standard widget (`<div class="g-recaptcha" data-sitekey=...>`), then for any
    `data-sitekey`, then for an explicit `api.js?render=<sitekey>`.
    """
    for tag in _SITEKEY_RE.findall(html):
        if m := _DATA_SITEKEY_RE.search(tag):
            return m.group(1)
    if m := _DATA_SITEKEY_RE.search(html):
        return m.group(1)
    if m := _RENDER_RE.search(html):
        return m.group(1)
    return None


# --------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------


class CaptchaClient:
    """A synchronous 2captcha client for one run (its `stats` are that run's figures).

    `limiter` is called before every paid request (each in.php submit); the Prefect task
    passes its rate limit there, so this module stays free of Prefect.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        poll_interval: float = 5.0,
        solve_timeout: float = 180.0,
        min_balance: float = 0.10,
        max_attempts: int = 3,
        no_slot_backoff: float = 5.0,
        cost_per_solve: float = 0.00299,
        http_timeout: float = 30.0,
        limiter: Callable[[], None] | None = None,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise CaptchaAuthError(
                "no 2captcha API key: set LEADFLOW_CAPTCHA_API_KEY (or LEADFLOW_SANDBOX=1)"
            )
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        _hide_in_logs(api_key)
        self.poll_interval = poll_interval
        self.solve_timeout = solve_timeout
        self.min_balance = min_balance
        self.max_attempts = max(1, max_attempts)
        self.no_slot_backoff = no_slot_backoff
        self.cost_per_solve = cost_per_solve
        self.limiter = limiter
        self._sleep = sleep
        self._own_client = client is None
        self._http = client or httpx.Client(timeout=http_timeout)
        self._stats_lock = threading.Lock()
        self.stats = SolveStats()

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        limiter: Callable[[], None] | None = None,
        client: httpx.Client | None = None,
    ) -> CaptchaClient:
        s = settings or get_settings()
        key = s.captcha_key
        return cls(
            s.captcha_base_url,
            key.get_secret_value() if key is not None else "",
            poll_interval=s.captcha_poll_interval,
            solve_timeout=s.captcha_solve_timeout,
            min_balance=s.captcha_min_balance,
            max_attempts=s.captcha_max_attempts,
            no_slot_backoff=s.captcha_no_slot_backoff,
            cost_per_solve=s.captcha_cost_per_solve,
            http_timeout=s.captcha_http_timeout,
            limiter=limiter,
            client=client,
        )

    def __repr__(self) -> str:  # never the key
        return f"CaptchaClient(base_url={self.base_url!r})"

    # --- plumbing ---------------------------------------------------------------------

    def _call(
        self, endpoint: str, params: dict[str, str], *, post: bool = False
    ) -> tuple[bool, str]:
        """One legacy API call with json=1 -> (ok, request). Raises on transport trouble."""
        url = f"{self.base_url}/{endpoint}"
        data = {"key": self._key, "json": "1", **params}
        what = params.get("action") or params.get("method") or endpoint
        try:
            # in.php takes a form POST; res.php is documented as GET.
            response = self._http.post(url, data=data) if post else self._http.get(url, params=data)
        except httpx.HTTPError as exc:
            # The message names the exception type only: httpx's text can carry the URL,
            # and the URL carries the key.
            raise CaptchaNetworkError(
                f"2captcha {what} request to {self.base_url} failed: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise CaptchaNetworkError(
                f"2captcha {what} answered HTTP {response.status_code}",
                code=str(response.status_code),
            )
        try:
            body = response.json()
            ok, value = body["status"] == 1, str(body["request"])
        except (ValueError, KeyError, TypeError):
            # With json=1 2captcha answers JSON; tolerate a bare code or OK|value anyway.
            text = response.text.strip()
            if text.startswith("OK|"):
                return True, text[3:]
            if text.startswith(("ERROR", "CAPCHA_NOT_READY", "IP_BANNED")):
                return False, text
            raise CaptchaNetworkError(f"2captcha {what}: unexpected answer {text[:80]!r}") from None
        return ok, value

    @staticmethod
    def _raise(code: str, context: str) -> None:
        if code in AUTH_ERRORS:
            raise CaptchaAuthError(
                f"2captcha refused the API key ({code}) during {context}: check "
                "LEADFLOW_CAPTCHA_API_KEY",
                code,
            )
        if code == "ERROR_ZERO_BALANCE":
            raise CaptchaBalanceError(
                f"2captcha balance is empty ({code}) during {context}: top up the account", code
            )
        if code == "ERROR_CAPTCHA_UNSOLVABLE":
            raise CaptchaUnsolvable(f"2captcha could not solve the CAPTCHA ({code})", code)
        raise CaptchaError(f"2captcha {context} failed: {code}", code)

    # --- balance ------------------------------------------------------------------------

    def balance(self) -> float:
        """The account balance in dollars (free call)."""
        ok, value = self._call("res.php", {"action": "getbalance"})
        if not ok:
            self._raise(value, "getbalance")
        try:
            return float(value)
        except ValueError:
            raise CaptchaNetworkError(f"2captcha getbalance: not a number {value!r}") from None

    def ensure_balance(self, min_balance: float | None = None) -> float:
        """The balance, or CaptchaBalanceError when it is below the minimum (before a scrape)."""
        minimum = self.min_balance if min_balance is None else min_balance
        balance = self.balance()
        if balance < minimum:
            raise CaptchaBalanceError(
                f"2captcha balance ${balance:.2f} is below the ${minimum:.2f} minimum "
                f"({MIN_BALANCE_ENV}); top up or raise the limit",
                "BELOW_MIN_BALANCE",
            )
        log.info("2captcha balance $%.2f (minimum $%.2f)", balance, minimum)
        return balance

    # --- solving ------------------------------------------------------------------------

    def _submit(self, sitekey: str, page_url: str, deadline: float) -> str:
        params = {"method": "userrecaptcha", "googlekey": sitekey, "pageurl": page_url}
        while True:
            if self.limiter is not None:
                self.limiter()
            ok, value = self._call("in.php", params, post=True)
            if ok:
                return value
            if value != "ERROR_NO_SLOT_AVAILABLE":
                self._raise(value, "submit")
            # 2captcha asks for a pause before submitting again; give up at the deadline.
            if time.monotonic() + self.no_slot_backoff > deadline:
                raise CaptchaTimeout(
                    f"2captcha had no free slot for {self.solve_timeout:.0f} s "
                    "(ERROR_NO_SLOT_AVAILABLE)",
                    value,
                )
            log.info("2captcha: no slot available, retrying in %.1f s", self.no_slot_backoff)
            self._sleep(self.no_slot_backoff)

    def solve_recaptcha_v2(self, sitekey: str, page_url: str) -> Solution:
        """Submit a reCAPTCHA v2 and poll every `poll_interval` until the token is ready."""
        started = time.monotonic()
        deadline = started + self.solve_timeout
        captcha_id = self._submit(sitekey, page_url, deadline)
        with self._stats_lock:
            self.stats.attempted += 1
        try:
            token = self._poll(captcha_id, deadline)
        except (CaptchaUnsolvable, CaptchaTimeout, CaptchaNetworkError):
            with self._stats_lock:
                self.stats.failed += 1
            raise
        seconds = time.monotonic() - started
        with self._stats_lock:
            self.stats.solved += 1
            self.stats.cost += self.cost_per_solve
            self.stats.seconds += seconds
        log.info("2captcha solved task %s in %.1f s", captcha_id, seconds)
        return Solution(token, captcha_id, self.cost_per_solve, seconds)

    def _poll(self, captcha_id: str, deadline: float) -> str:
        while True:
            # 2captcha asks clients to wait before the first poll too.
            self._sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))
            try:
                ok, value = self._call("res.php", {"action": "get", "id": captcha_id})
            except CaptchaNetworkError as exc:
                # A poll is free and idempotent: a hiccup only costs one interval.
                log.warning("2captcha poll of task %s failed (%s); retrying", captcha_id, exc)
                ok, value = False, NOT_READY
            if ok:
                return value
            if value != NOT_READY:
                self._raise(value, f"result of task {captcha_id}")
            if time.monotonic() >= deadline:
                raise CaptchaTimeout(
                    f"2captcha task {captcha_id} not solved within {self.solve_timeout:.0f} s "
                    "(LEADFLOW_CAPTCHA_SOLVE_TIMEOUT)"
                )

    def report_bad(self, captcha_id: str) -> bool:
        """Tell 2captcha a token was rejected; True when the report was recorded."""
        ok, value = self._call("res.php", {"action": "reportbad", "id": captcha_id})
        if not ok:
            if value in AUTH_ERRORS:
                self._raise(value, "reportbad")
            # Too late, already reported, ...: worth a warning, not a failed run.
            log.warning("2captcha did not record the bad report for %s: %s", captcha_id, value)
            return False
        with self._stats_lock:
            self.stats.reported_bad += 1
        return True

    def report_good(self, captcha_id: str) -> bool:
        """Tell 2captcha a token worked (helps its worker selection)."""
        ok, value = self._call("res.php", {"action": "reportgood", "id": captcha_id})
        if not ok and value in AUTH_ERRORS:
            self._raise(value, "reportgood")
        return ok

    def solve_and_submit(
        self,
        sitekey: str,
        page_url: str,
        submit: Callable[[Solution], bool],
        *,
        max_attempts: int | None = None,
    ) -> Solution:
        """Solve, hand the token to `submit` (True = the site accepted it), retry when not.

        A rejected token is reported bad and a new one solved; an unsolvable task is retried
        too. At most `max_attempts` tokens (LEADFLOW_CAPTCHA_MAX_ATTEMPTS): then
        CaptchaRejected (or the last CaptchaUnsolvable). Key, balance and time-out errors
        are not retried.
        """
        attempts = self.max_attempts if max_attempts is None else max(1, max_attempts)
        last: CaptchaError | None = None
        for attempt in range(1, attempts + 1):
            try:
                solution = self.solve_recaptcha_v2(sitekey, page_url)
            except CaptchaUnsolvable as exc:
                last = exc
                log.info("2captcha attempt %d/%d unsolvable", attempt, attempts)
                continue
            if submit(solution):
                return solution
            log.info(
                "site rejected token of task %s (attempt %d/%d)",
                solution.captcha_id,
                attempt,
                attempts,
            )
            self.report_bad(solution.captcha_id)
            last = CaptchaRejected(
                f"the site rejected {attempt} 2captcha token(s) for {page_url}", "REJECTED"
            )
        assert last is not None
        if isinstance(last, CaptchaRejected):
            last = CaptchaRejected(
                f"the site rejected the 2captcha tokens for {page_url} ({attempts} attempts, "
                "LEADFLOW_CAPTCHA_MAX_ATTEMPTS)",
                "REJECTED",
            )
        raise last

    def log_stats(self, logger: logging.Logger | None = None) -> SolveStats:
        """Log this run's solve rate and cost; returns the figures."""
        (logger or log).info(self.stats.summary())
        return self.stats

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        if self._own_client:
            self._http.close()

    def __enter__(self) -> CaptchaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
