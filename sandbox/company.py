"""A stand-in for the Clearbit Company API: find a company by its domain.

Mounted by `sandbox.server` under `/company`, so a client calls
`GET http://127.0.0.1:<sandbox_port>/company/v2/companies/find?domain=example.test` with the
API key as the HTTP Basic user name and an empty password (Clearbit's way; `Authorization:
Bearer <key>` works too). Answers, as ../shared/API_CONTRACTS.md and Clearbit's docs give them:

- 200: the company in Clearbit's shape: `id, name, legalName, domain, domainAliases, site,
  category {sector, industryGroup, industry, subIndustry, sicCode, sic4Codes, naicsCode
  (2-digit sector, as Clearbit's), naics6Codes}, tags, description, foundedYear, location,
  timeZone, utcOffset, geo, logo, facebook/linkedin/twitter/crunchbase {handle}, type, phone,
  metrics {employees, employeesRange ("51-250"), estimatedAnnualRevenue ("$10M-$50M"),
  raised, ...}, tech, techCategories, indexedAt`. An alias domain finds the same company.
- 202 `{}`: the lookup is queued ("not yet cached; retry later"). For a deterministic share of
  domains (`not_ready_share`) the first ask starts the lookup and every ask answers 202 until
  `not_ready_seconds` have passed since then. Clearbit's Python client returns
  `{"pending": True}` for it.
- 404 `unknown_record`: a domain the provider has no company for (a few business domains and
  every domain outside the demo directory).
- 401 `auth_required` (no key) or `invalid_api_key`; 422 `invalid_domain` (missing or not a
  domain name; the type name is the sandbox's: Clearbit does not document its 4xx bodies);
  429 `rate_limit` with `Retry-After` (seconds) once a key passes `requests_per_minute`
  (Clearbit: 600 per minute per API); 503 `service_unavailable` for injected faults.
  Errors are `{"error": {"type", "message"}}`. Authenticated answers carry
  `X-RateLimit-Limit` / `X-RateLimit-Remaining`, as Clearbit's do.

Only matched lookups (200) cost money with Clearbit; the control route's `paid_calls` counts
them so pipeline tests can check that cached domains are not asked again.

Control routes for tests (not Clearbit's API), under the same mount: `GET /__sandbox/state`
(answers by status, paid calls, knobs); `POST /__sandbox/state` with any of
`requests_per_minute`, `not_ready_share`, `not_ready_seconds`, `fault_share`, `down`, and
`"reset": true` (counters, queued lookups and rate windows cleared); `GET /__sandbox/truth
?domain=` shows whether the provider knows a domain, whether its first ask is queued, and its
aliases.
"""

from __future__ import annotations

import base64
import binascii
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from leadflow.settings import SANDBOX_COMPANY_KEY, Settings
from sandbox.directory.generate import Business, Directory, Website, ascii_slug
from sandbox.hunter import (
    SlidingWindowLimiter,
    apply_changes,
    normalise_domain,
    parse_bool,
    parse_non_negative_float,
    parse_positive_int,
    parse_share,
    read_control_request,
)

UNKNOWN_SHARE = 0.15  # business domains the provider has no company for (404)
ALIAS_SHARE = 0.3  # companies that also own the hyphen-less spelling of their domain
RATE_WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class Industry:
    sector: str
    industry_group: str
    industry: str
    sub_industry: str
    sic4: str
    naics6: str
    tags: tuple[str, ...]
    employees: tuple[int, int, int]  # low, most likely, high for one location
    revenue_per_employee: int  # dollars a year


_INDUSTRIES: dict[str, Industry] = {
    "restaurant": Industry("Consumer Discretionary", "Consumer Services", "Hotels, Restaurants & Leisure",
                           "Restaurants", "5812", "722511", ("Restaurants", "Food", "B2C"), (6, 18, 60), 70_000),
    "cafe": Industry("Consumer Discretionary", "Consumer Services", "Hotels, Restaurants & Leisure",
                     "Restaurants", "5812", "722515", ("Coffee", "Food", "B2C"), (3, 8, 25), 60_000),
    "bar": Industry("Consumer Discretionary", "Consumer Services", "Hotels, Restaurants & Leisure",
                    "Restaurants", "5813", "722410", ("Bars", "Nightlife", "B2C"), (4, 10, 30), 80_000),
    "hotel": Industry("Consumer Discretionary", "Consumer Services", "Hotels, Restaurants & Leisure",
                      "Hotels, Resorts & Cruise Lines", "7011", "721110", ("Hospitality", "Travel", "B2C"),
                      (15, 60, 300), 110_000),
    "dentist": Industry("Health Care", "Health Care Equipment & Services", "Health Care Providers & Services",
                        "Health Care Services", "8021", "621210", ("Dental", "Health Care", "B2C"),
                        (3, 8, 30), 150_000),
    "plumber": Industry("Industrials", "Capital Goods", "Construction & Engineering",
                        "Construction & Engineering", "1711", "238220", ("Plumbing", "Home Services", "B2C"),
                        (2, 6, 35), 120_000),
    "lawyer": Industry("Industrials", "Commercial & Professional Services", "Professional Services",
                       "Legal Services", "8111", "541110", ("Legal", "Professional Services", "B2B"),
                       (2, 8, 80), 200_000),
    "salon": Industry("Consumer Discretionary", "Consumer Services", "Diversified Consumer Services",
                      "Specialized Consumer Services", "7231", "812112", ("Beauty", "Personal Care", "B2C"),
                      (2, 5, 15), 55_000),
    "auto_repair": Industry("Consumer Discretionary", "Consumer Services", "Diversified Consumer Services",
                            "Specialized Consumer Services", "7538", "811111", ("Automotive", "Repair", "B2C"),
                            (3, 7, 25), 110_000),
    "accountant": Industry("Industrials", "Commercial & Professional Services", "Professional Services",
                           "Research & Consulting Services", "8721", "541211",
                           ("Accounting", "Professional Services", "B2B"), (2, 7, 45), 140_000),
}  # fmt: skip

# Clearbit's buckets: upper bound (inclusive for employees, exclusive for revenue) -> label.
EMPLOYEE_RANGES: tuple[tuple[int, str], ...] = (
    (10, "1-10"), (50, "11-50"), (250, "51-250"), (1_000, "251-1K"), (5_000, "1K-5K"),
    (10_000, "5K-10K"), (50_000, "10K-50K"), (100_000, "50K-100K"),
)  # fmt: skip
REVENUE_RANGES: tuple[tuple[float, str], ...] = (
    (1e6, "$0-$1M"), (1e7, "$1M-$10M"), (5e7, "$10M-$50M"), (1e8, "$50M-$100M"),
    (2.5e8, "$100M-$250M"), (5e8, "$250M-$500M"), (1e9, "$500M-$1B"), (1e10, "$1B-$10B"),
)  # fmt: skip

_TIME_ZONES = {
    "austin": ("America/Chicago", -6),
    "seattle": ("America/Los_Angeles", -8),
    "london": ("Europe/London", 0),
    "berlin": ("Europe/Berlin", 1),
    "athens": ("Europe/Athens", 2),
}
_COUNTRIES = {"US": "United States", "GB": "United Kingdom", "DE": "Germany", "GR": "Greece"}
_STATES = {"TX": "Texas", "WA": "Washington"}
_LEGAL_FORMS = {"US": "LLC", "GB": "Ltd", "DE": "GmbH"}
_TECH = {
    "google_analytics": "analytics", "google_tag_manager": "tag_management",
    "facebook_advertiser": "advertising", "wordpress": "cms", "squarespace": "cms",
    "wix": "cms", "mailchimp": "email_marketing", "stripe": "payment",
    "opentable": "reservations", "google_maps": "maps",
}  # fmt: skip


def employees_range(employees: int) -> str:
    return next((label for top, label in EMPLOYEE_RANGES if employees <= top), "100K+")


def revenue_range(revenue: float) -> str:
    return next((label for top, label in REVENUE_RANGES if revenue < top), "$10B+")


def alias_of(seed: int, domain: str) -> str | None:
    """The second domain a company owns, if it owns one: its domain without hyphens."""
    if random.Random(f"company-alias/{seed}/{domain}").random() >= ALIAS_SHARE:
        return None
    name, _, suffix = domain.rpartition(".")
    alias = f"{ascii_slug(name)}.{suffix}"
    return alias if alias != domain else None


@dataclass(frozen=True, slots=True)
class CompanyRecord:
    domain: str
    known: bool  # False: 404
    queue_draw: float  # the first ask is queued (202) when this is below `not_ready_share`
    body: dict[str, Any]


def build_company(
    seed: int, site: Website, business: Business, aliases: tuple[str, ...]
) -> CompanyRecord:
    """The provider's company for `site`, drawn from (seed, domain) alone."""
    rng = random.Random(f"company/{seed}/{site.domain}")
    known = rng.random() >= UNKNOWN_SHARE
    queue_draw = rng.random()
    industry = _INDUSTRIES.get(business.category_slug, _INDUSTRIES["restaurant"])
    low, mode, high = industry.employees
    locations = len(site.entity_ids)
    employees = max(1, round(rng.triangular(low, high, mode) * locations))
    revenue = employees * industry.revenue_per_employee * rng.uniform(0.6, 1.6)
    handle = ascii_slug(site.domain.rpartition(".")[0])
    facebook = next(
        (u.rstrip("/").rsplit("/", 1)[-1] for u in site.socials if "facebook." in u), None
    )
    legal_form = _LEGAL_FORMS.get(business.country)
    legal_name = None
    if legal_form and rng.random() < 0.6:
        legal_name = (
            site.name
            if site.name.endswith(("LLP", "LLC", "Inc.", "Ltd", "GmbH"))
            else f"{site.name} {legal_form}"
        )
    time_zone, utc_offset = _TIME_ZONES.get(business.city_key, (None, None))
    tech = sorted(rng.sample(sorted(_TECH), rng.randint(1, 4)))
    indexed = date(2024, 1, 1) + timedelta(days=rng.randrange(600))
    body: dict[str, Any] = {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "name": site.name,
        "legalName": legal_name,
        "domain": site.domain,
        "domainAliases": list(aliases),
        "site": {
            "phoneNumbers": [business.phone],
            "emailAddresses": [e for e in site.emails if "." not in e.split("@", 1)[0]],
        },
        "category": {
            "sector": industry.sector,
            "industryGroup": industry.industry_group,
            "industry": industry.industry,
            "subIndustry": industry.sub_industry,
            "sicCode": industry.sic4[:2],
            "sic4Codes": [industry.sic4],
            "naicsCode": industry.naics6[:2],
            "naics6Codes": [industry.naics6],
        },
        "tags": list(industry.tags),
        "description": f"{site.name} is a {business.category.lower()} in {business.city}.",
        "foundedYear": 2024 - min(int(rng.expovariate(1 / 14)), 70),
        "location": f"{business.street}, {business.postal_code} {business.city}, {business.country}",
        "timeZone": time_zone,
        "utcOffset": utc_offset,
        "geo": {
            "streetAddress": business.street,
            "city": business.city,
            "postalCode": business.postal_code,
            "state": _STATES.get(business.state or ""),
            "stateCode": business.state,
            "country": _COUNTRIES.get(business.country),
            "countryCode": business.country,
            "lat": business.latitude,
            "lng": business.longitude,
        },
        "logo": None,
        "facebook": {"handle": facebook},
        "linkedin": {"handle": f"company/{handle}" if rng.random() < 0.65 else None},
        "twitter": {"handle": handle[:15] if rng.random() < 0.45 else None},
        "crunchbase": {"handle": None},
        "emailProvider": False,
        "type": "private",
        "ticker": None,
        "phone": business.phone,
        "metrics": {
            "alexaUsRank": None,
            "alexaGlobalRank": None,
            "employees": employees,
            "employeesRange": employees_range(employees),
            "marketCap": None,
            "raised": None,
            "annualRevenue": None,
            "estimatedAnnualRevenue": revenue_range(revenue),
            "fiscalYearEnd": None,
        },
        "tech": tech,
        "techCategories": sorted({_TECH[t] for t in tech}),
        "parent": {"domain": None},
        "ultimateParent": {"domain": None},
        "indexedAt": f"{indexed.isoformat()}T00:00:00.000Z",
    }
    return CompanyRecord(domain=site.domain, known=known, queue_draw=queue_draw, body=body)


class CompanyError(Exception):
    """An error answer: HTTP status, Clearbit's error body and extra headers."""

    def __init__(
        self, status: int, error_type: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.error_type, "message": self.message}}


@dataclass(slots=True)
class CompanySandboxConfig:
    api_keys: tuple[str, ...] = (SANDBOX_COMPANY_KEY,)
    requests_per_minute: int = 600  # per key (Clearbit: 600 per minute per API)
    not_ready_share: float = 0.2  # share of domains whose first ask is queued (202)
    not_ready_seconds: float = 2.0  # how long a queued lookup answers 202
    fault_share: float = 0.0  # share of requests answered 503 (seeded)
    down: bool = False  # every request answered 503
    seed: int = 42

    @classmethod
    def from_settings(cls, settings: Settings, seed: int | None = None) -> CompanySandboxConfig:
        keys = [SANDBOX_COMPANY_KEY]
        if settings.company_api_key is not None:
            keys.append(settings.company_api_key.get_secret_value())
        return cls(
            api_keys=tuple(keys),
            requests_per_minute=settings.sandbox_company_requests_per_minute,
            not_ready_share=settings.sandbox_company_not_ready_share,
            not_ready_seconds=settings.sandbox_company_not_ready_seconds,
            fault_share=settings.sandbox_company_fault_share,
            seed=settings.sandbox_seed if seed is None else seed,
        )


_CONTROL_FIELDS: dict[str, Callable[[Any], Any]] = {
    "requests_per_minute": parse_positive_int,
    "not_ready_share": parse_share,
    "not_ready_seconds": parse_non_negative_float,
    "fault_share": parse_share,
    "down": parse_bool,
}


@dataclass(slots=True)
class _Usage:
    answers: Counter[int] = field(default_factory=Counter)
    queued_at: dict[str, float] = field(default_factory=dict)  # domain -> clock time of first ask


class CompanySandbox:
    """In-memory state of the company-data stand-in. Thread-safe; `clock` is injectable so
    tests can move time for queued lookups and the rate window."""

    def __init__(
        self,
        config: CompanySandboxConfig,
        directory: Directory,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.directory = directory
        self._clock = clock
        self._lock = threading.RLock()
        self._fault_rng = random.Random(f"company-faults/{config.seed}")
        self._limiter = SlidingWindowLimiter(clock)
        self._usage = _Usage()
        self._records: dict[str, CompanyRecord] = {}
        self._domain_by_alias: dict[str, str] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, directory: Directory, seed: int | None = None
    ) -> CompanySandbox:
        return cls(CompanySandboxConfig.from_settings(settings, seed), directory)

    # --- the world --------------------------------------------------------------------------

    def _canonical(self, domain: str) -> str | None:
        """The directory domain a domain or alias belongs to."""
        if domain in self.directory.websites:
            return domain
        if self._domain_by_alias is None:
            seed = self.config.seed
            self._domain_by_alias = {
                alias: d
                for d in self.directory.websites
                if (alias := alias_of(seed, d)) is not None and alias not in self.directory.websites
            }
        return self._domain_by_alias.get(domain)

    def record(self, domain: str) -> CompanyRecord | None:
        """The company behind a business domain or alias (None outside the directory)."""
        with self._lock:
            canonical = self._canonical(domain)
            if canonical is None:
                return None
            cached = self._records.get(canonical)
            if cached is not None:
                return cached
            site = self.directory.websites[canonical]
            business = self.directory.business(site.entity_ids[0])
            if business is None:
                raise LookupError(f"website {canonical} has no business {site.entity_ids[0]}")
            alias = alias_of(self.config.seed, canonical)
            aliases = (alias,) if alias is not None and alias not in self.directory.websites else ()
            record = build_company(self.config.seed, site, business, aliases)
            self._records[canonical] = record
            return record

    def truth(self, domain: str) -> dict[str, Any] | None:
        """Whether the provider knows a domain and queues its first ask (tests only)."""
        with self._lock:
            record = self.record(domain)
            if record is None:
                return None
            return {
                "domain": record.domain,
                "known": record.known,
                "queued_first": record.queue_draw < self.config.not_ready_share,
                "aliases": record.body["domainAliases"],
            }

    # --- the API ------------------------------------------------------------------------

    def call(
        self, key: str | None, params: Mapping[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Answer one lookup: (HTTP status, JSON body, extra headers)."""
        with self._lock:
            headers: dict[str, str] = {}
            try:
                status, body = self._call(key, params, headers)
            except CompanyError as exc:
                status, body = exc.status, exc.body()
                headers.update(exc.headers)
            self._usage.answers[status] += 1
            return status, body, headers

    def _call(
        self, key: str | None, params: Mapping[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        c = self.config
        if c.down or (c.fault_share > 0 and self._fault_rng.random() < c.fault_share):
            raise CompanyError(
                503, "service_unavailable", "The service is temporarily unavailable; retry later."
            )
        if not key:
            raise CompanyError(401, "auth_required", "Authentication is required for this action.")
        if key not in c.api_keys:
            raise CompanyError(401, "invalid_api_key", "Invalid API key provided.")
        wait = self._limiter.admit(key, ((RATE_WINDOW, c.requests_per_minute),))
        headers["X-RateLimit-Limit"] = str(c.requests_per_minute)
        headers["X-RateLimit-Remaining"] = str(
            max(0, c.requests_per_minute - self._limiter.used(key, RATE_WINDOW))
        )
        if wait > 0:
            raise CompanyError(
                429,
                "rate_limit",
                f"Rate limit of {c.requests_per_minute} requests per minute exceeded.",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        raw = params.get("domain", "").strip()
        if not raw:
            raise CompanyError(422, "invalid_domain", "Missing domain parameter.")
        domain = normalise_domain(raw)
        if domain is None:
            raise CompanyError(422, "invalid_domain", f"Invalid domain: {raw}")
        record = self.record(domain)
        if record is None or not record.known:
            raise CompanyError(404, "unknown_record", f"Unknown domain: {domain}")
        if record.queue_draw < c.not_ready_share and c.not_ready_seconds > 0:
            queued = self._usage.queued_at.setdefault(record.domain, self._clock())
            if self._clock() < queued + c.not_ready_seconds:
                return 202, {}
        return 200, record.body

    # --- control (tests) ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            answers = self._usage.answers
            return {
                "answers": {str(s): n for s, n in sorted(answers.items())},
                "paid_calls": answers[200],
                "config": {
                    f.name: getattr(self.config, f.name)
                    for f in fields(self.config)
                    if f.name != "api_keys"
                },
            }

    def control(self, changes: Mapping[str, Any]) -> None:
        """Apply a control request: knobs, and `reset` (counters, queued lookups, rate window)."""
        changes = dict(changes)
        reset = parse_bool(changes.pop("reset", False))
        with self._lock:
            apply_changes(self.config, changes, _CONTROL_FIELDS)
            if reset:
                self._usage = _Usage()
                self._limiter.clear()


def request_api_key(request: Request) -> str | None:
    """The key from HTTP Basic (the user name) or a Bearer token; None when absent or unreadable."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def company_app(sandbox: CompanySandbox) -> Starlette:
    """The company-data stand-in as an ASGI app (mount it under `/company`)."""

    async def find(request: Request) -> Response:
        status, body, headers = sandbox.call(request_api_key(request), dict(request.query_params))
        return JSONResponse(body, status_code=status, headers=headers)

    async def state(request: Request) -> Response:
        if request.method == "POST":
            try:
                sandbox.control(await read_control_request(request))
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(sandbox.state())

    async def truth(request: Request) -> Response:
        raw = request.query_params.get("domain", "")
        found = sandbox.truth(normalise_domain(raw) or "")
        if found is None:
            return JSONResponse(
                {"error": f"{raw!r} is not a directory business domain"}, status_code=404
            )
        return JSONResponse(found)

    app = Starlette(
        routes=[
            Route("/v2/companies/find", find),
            Route("/__sandbox/state", state, methods=["GET", "POST"]),
            Route("/__sandbox/truth", truth),
        ]
    )
    app.state.company = sandbox
    return app
