"""Company data providers: one small interface, and the first provider (Clearbit Company API shape).

A provider answers `find(domain)` with a `CompanyLookup`: `found` (with `CompanyFacts`),
`unknown` (the provider has no record: 404), or `pending` (202: the provider is still
gathering it; ask again in a later run). Outages and throttling beyond a short wait raise
`CompanyProviderUnavailable`, which the enrich stage turns into "pending" for those leads.

Clearbit was bought by HubSpot and issues no new keys; any provider with the same
find-by-domain shape (or a new class with the same two methods) plugs in here. The base URL
is `LEADFLOW_COMPANY_URL` (the sandbox stand-in in sandbox mode); the key goes as the HTTP
Basic user name, as Clearbit documents, never into a URL or a log line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

from connectors.common import Limiter, int_or_none
from leadflow.settings import Settings, get_settings
from models.lead import CompanyFacts

LookupStatus = Literal["found", "unknown", "pending"]


class CompanyProviderError(Exception):
    """A company-data failure the configuration has to fix (bad key, bad request)."""


class CompanyProviderUnavailable(CompanyProviderError):
    """5xx, a time-out, or still throttled after waiting: try again in a later run."""


@dataclass(frozen=True)
class CompanyLookup:
    status: LookupStatus
    facts: CompanyFacts | None = None


class CompanyProvider(Protocol):
    name: str

    def find(self, domain: str) -> CompanyLookup: ...

    def close(self) -> None: ...


class ClearbitCompanyProvider:
    """`GET /v2/companies/find?domain=` with Basic auth (the key as user name)."""

    name = "clearbit"

    def __init__(
        self,
        api_key: str,
        base_url: str,
        *,
        timeout: float = 15.0,
        limiter: Limiter | None = None,
        max_throttle_wait: float = 10.0,
    ) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), auth=(api_key, ""), timeout=timeout)
        self.limiter = limiter
        self.max_throttle_wait = max_throttle_wait

    def close(self) -> None:
        self.http.close()

    def find(self, domain: str) -> CompanyLookup:
        waited = 0.0
        retried_outage = False
        while True:
            if self.limiter is not None:
                self.limiter()
            try:
                response = self.http.get("/v2/companies/find", params={"domain": domain})
            except httpx.HTTPError as exc:
                if not retried_outage:
                    retried_outage = True
                    continue
                raise CompanyProviderUnavailable(
                    f"company data unreachable: {type(exc).__name__}"
                ) from None
            status = response.status_code
            if status == 200:
                return CompanyLookup("found", facts_from_clearbit(response.json(), self.name))
            if status == 202:
                return CompanyLookup("pending")
            if status == 404:
                return CompanyLookup("unknown")
            if status == 429:
                delay = _retry_after(response)
                if waited + delay <= self.max_throttle_wait:
                    waited += delay
                    time.sleep(delay)
                    continue
                raise CompanyProviderUnavailable(
                    f"company data throttled (429) for longer than {self.max_throttle_wait:.0f} s"
                )
            if status >= 500:
                if not retried_outage:
                    retried_outage = True
                    continue
                raise CompanyProviderUnavailable(f"company data answered HTTP {status}")
            raise CompanyProviderError(
                f"company data answered HTTP {status}: {_error_message(response)}"
            )


def facts_from_clearbit(body: dict[str, Any], provider: str) -> CompanyFacts:
    """The Clearbit Company object, flattened to the fields a lead keeps."""
    metrics = body.get("metrics") or {}
    category = body.get("category") or {}
    linkedin = body.get("linkedin") or {}
    twitter = body.get("twitter") or {}
    return CompanyFacts(
        provider=provider,
        name=body.get("name"),
        domain=body.get("domain"),
        industry=category.get("industry"),
        sector=category.get("sector"),
        employees=int_or_none(metrics.get("employees")),
        employees_range=metrics.get("employeesRange"),
        estimated_revenue=metrics.get("estimatedAnnualRevenue"),
        founded_year=int_or_none(body.get("foundedYear")),
        linkedin=linkedin.get("handle"),
        twitter=twitter.get("handle"),
    )


def company_provider_from_settings(
    settings: Settings | None = None, limiter: Limiter | None = None
) -> CompanyProvider | None:
    """The configured provider, or None when no key is configured (the step is skipped)."""
    settings = settings or get_settings()
    key = settings.company_key
    if key is None:
        return None
    return ClearbitCompanyProvider(
        key.get_secret_value(),
        settings.company_base_url,
        timeout=settings.company_timeout,
        limiter=limiter,
    )


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
        return str(error.get("message") or error.get("type") or response.text[:200])
    except ValueError:
        return response.text[:200]
