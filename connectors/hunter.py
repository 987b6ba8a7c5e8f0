"""Hunter.io client: domain search, email finder, email verifier and account credits.

Built on the `pyhunter` library (its `base_endpoint` points at `LEADFLOW_HUNTER_URL`: the
sandbox stand-in in sandbox mode, https://api.hunter.io/v2 otherwise). pyhunter's own retries
are off (it would retry a 429, which at Hunter means the month's credits are gone); this
module turns the documented statuses into typed errors and the right reaction:

- 401 -> `HunterAuthError` (fix the key; nothing to retry);
- 403 (too many requests per second) -> waits with exponential backoff and tries again, then
  `HunterRateLimited`;
- 429 (monthly usage exhausted) -> `HunterQuotaExceeded`, never retried: the caller stops
  paid calls for the run and marks the rest pending;
- 451 (the person asked to be removed) -> `HunterRemoved`: never store that email;
- 5xx or no answer -> one quick retry, then `HunterUnavailable` (the caller marks pending);
- 202 from the verifier (still checking) -> polls again until `verify_max_wait`.

Every call first goes through `limiter` (a callable; the enrich task passes Prefect's
`rate_limit` on a global limit, so all runs together respect Hunter's per-second cap).
The API key travels as a query parameter (pyhunter's way), so a filter masks it in urllib3's
debug log lines; error messages never include it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from pyhunter import PyHunter
from pyhunter.exceptions import HunterApiError, HunterTransportError

from connectors.common import Limiter, int_or_none
from leadflow.settings import Settings, get_settings

log = logging.getLogger("leadflow.hunter")


class HunterError(Exception):
    """A Hunter failure; `status` is the HTTP status and `error_id` Hunter's error id."""

    def __init__(self, message: str, status: int | None = None, error_id: str | None = None):
        super().__init__(message)
        self.status = status
        self.error_id = error_id


class HunterAuthError(HunterError):
    """401: the API key is missing or wrong."""


class HunterRateLimited(HunterError):
    """403: still too many requests per second after backing off."""


class HunterQuotaExceeded(HunterError):
    """429: the month's searches or verifications are used up. Do not retry this month."""


class HunterRemoved(HunterError):
    """451: the person asked Hunter to be removed; their email must not be stored."""


class HunterUnavailable(HunterError):
    """5xx, a time-out or no connection: try again in a later run."""


class HunterBadRequest(HunterError):
    """400/422 and other client errors: the request itself is wrong."""


@dataclass(frozen=True)
class HunterEmail:
    value: str
    type: str | None  # personal | generic
    confidence: int | None
    first_name: str | None = None
    last_name: str | None = None
    position: str | None = None
    verification_status: str | None = None


@dataclass(frozen=True)
class DomainSearch:
    domain: str
    organization: str | None
    pattern: str | None
    emails: list[HunterEmail] = field(default_factory=list)


@dataclass(frozen=True)
class Verification:
    email: str
    status: str  # valid | invalid | accept_all | webmail | disposable | unknown
    score: int | None


@dataclass(frozen=True)
class Credits:
    searches_used: int
    searches_available: int
    verifications_used: int
    verifications_available: int

    @property
    def searches_left(self) -> int:
        return max(0, self.searches_available - self.searches_used)

    @property
    def verifications_left(self) -> int:
        return max(0, self.verifications_available - self.verifications_used)


class _MaskApiKey(logging.Filter):
    _KEY = re.compile(r"(api_key=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = self._KEY.sub(r"\1***", str(record.msg))
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_MaskApiKey())


def _status_and_id(exc: HunterApiError) -> tuple[int | None, str | None, str]:
    """(status, error id, details) from a pyhunter error.

    pyhunter reads the status as `exc.response.status_code if exc.response else None`, and a
    `requests` response with an error status is falsy, so its `status_code` is None for every
    HTTP error; Hunter repeats the status in the error body, which is what is read here.
    """
    status = exc.status_code
    errors = exc.error if isinstance(exc.error, list) else []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    if status is None and isinstance(first.get("code"), int):
        status = int(first["code"])
    if status is None and isinstance(exc.__cause__, requests.HTTPError):
        response = exc.__cause__.response
        status = response.status_code if response is not None else None
    return status, first.get("id"), str(first.get("details") or exc)


class HunterClient:
    """One Hunter account, built from settings (`from_settings`) or explicit arguments."""

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        timeout: float = 15.0,
        limiter: Limiter | None = None,
        rate_limit_retries: int = 4,
        backoff: float = 0.5,
        verify_max_wait: float = 20.0,
        verify_poll_interval: float = 1.0,
    ) -> None:
        self._api = PyHunter(api_key, timeout=timeout, max_retries=0)
        self._api.base_endpoint = base_url.rstrip("/") + "/{}"
        self.limiter = limiter
        self.rate_limit_retries = rate_limit_retries
        self.backoff = backoff
        self.verify_max_wait = verify_max_wait
        self.verify_poll_interval = verify_poll_interval

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, limiter: Limiter | None = None
    ) -> HunterClient | None:
        """The configured client, or None when no key is configured (the step is skipped)."""
        settings = settings or get_settings()
        key = settings.hunter_key
        if key is None:
            return None
        return cls(
            key.get_secret_value(),
            settings.hunter_base_url,
            timeout=settings.hunter_timeout,
            limiter=limiter,
            verify_max_wait=settings.hunter_verify_max_wait,
            verify_poll_interval=settings.hunter_verify_poll_interval,
        )

    def close(self) -> None:
        self._api.session.close()

    # --- calls ------------------------------------------------------------------------

    def account(self) -> Credits:
        """Credits used and available this month (free: Hunter does not charge for it)."""
        data = self._call(self._api.account_information)
        requests_block = data.get("requests") or {}
        searches = requests_block.get("searches") or {}
        verifications = requests_block.get("verifications") or {}
        return Credits(
            searches_used=int(searches.get("used") or 0),
            searches_available=int(searches.get("available") or 0),
            verifications_used=int(verifications.get("used") or 0),
            verifications_available=int(verifications.get("available") or 0),
        )

    def domain_search(self, domain: str, limit: int = 10) -> DomainSearch:
        data = self._call(self._api.domain_search, domain=domain, limit=limit)
        emails = [
            HunterEmail(
                value=str(e["value"]).lower(),
                type=e.get("type"),
                confidence=int_or_none(e.get("confidence")),
                first_name=e.get("first_name"),
                last_name=e.get("last_name"),
                position=e.get("position"),
                verification_status=(e.get("verification") or {}).get("status"),
            )
            for e in data.get("emails") or []
            if isinstance(e, dict) and e.get("value")
        ]
        return DomainSearch(
            domain=str(data.get("domain") or domain),
            organization=data.get("organization"),
            pattern=data.get("pattern"),
            emails=emails,
        )

    def email_finder(self, domain: str, first_name: str, last_name: str) -> HunterEmail | None:
        """The person's most likely address, or None when Hunter has none."""
        email, score = self._call(
            self._api.email_finder, domain=domain, first_name=first_name, last_name=last_name
        )
        if not email:
            return None
        return HunterEmail(
            value=str(email).lower(),
            type="personal",
            confidence=int_or_none(score),
            first_name=first_name,
            last_name=last_name,
        )

    def verify(self, email: str) -> Verification:
        """The verifier's verdict; polls while Hunter answers 202 (still checking)."""
        deadline = time.monotonic() + self.verify_max_wait
        while True:
            response = self._call(self._api.email_verifier, email, raw=True)
            if response.status_code != 202:
                data = (response.json() or {}).get("data") or {}
                return Verification(
                    email=email,
                    status=str(data.get("status") or "unknown"),
                    score=int_or_none(data.get("score")),
                )
            if time.monotonic() + self.verify_poll_interval > deadline:
                raise HunterUnavailable(
                    f"verification of an address still running after {self.verify_max_wait:.0f} s",
                    status=202,
                )
            time.sleep(self.verify_poll_interval)

    # --- plumbing ---------------------------------------------------------------------

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        rate_limited = 0
        unavailable = 0
        while True:
            if self.limiter is not None:
                self.limiter()
            try:
                return method(*args, **kwargs)
            except HunterApiError as exc:
                status, error_id, details = _status_and_id(exc)
                where = (exc.endpoint or "").rsplit("/", 1)[-1] or "request"
                message = f"Hunter {where}: HTTP {status} {error_id or ''}: {details}".strip()
                if status == 403 and rate_limited < self.rate_limit_retries:
                    rate_limited += 1
                    time.sleep(self.backoff * 2 ** (rate_limited - 1))
                    continue
                if status is not None and status >= 500 and unavailable < 1:
                    unavailable += 1
                    time.sleep(self.backoff)
                    continue
                raise _typed_error(status, error_id, message) from None
            except HunterTransportError as exc:
                if unavailable < 1:
                    unavailable += 1
                    time.sleep(self.backoff)
                    continue
                raise HunterUnavailable(f"Hunter unreachable: {exc}") from None


def _typed_error(status: int | None, error_id: str | None, message: str) -> HunterError:
    kind: type[HunterError]
    if status == 401:
        kind = HunterAuthError
    elif status == 403:
        kind = HunterRateLimited
    elif status == 429:
        kind = HunterQuotaExceeded
    elif status == 451:
        kind = HunterRemoved
    elif status is None or status >= 500:
        kind = HunterUnavailable
    else:
        kind = HunterBadRequest
    return kind(message, status=status, error_id=error_id)
