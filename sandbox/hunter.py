"""A stand-in for the Hunter.io API v2: domain search, email finder, email verifier, account.

Mounted by `sandbox.server` under `/hunter/v2`, so a client's base URL is
`http://127.0.0.1:<sandbox_port>/hunter/v2`; pyhunter runs against it unchanged once its URL
template points there (`client.base_endpoint = base_url + "/{}"`). The shapes follow
../shared/API_CONTRACTS.md and Hunter's reference (https://hunter.io/api-documentation/v2):

- `GET /domain-search?domain=|company=&limit=&offset=&type=&seniority=&department=
  &required_field=&verification_status=` -> `{"data": {domain, pattern, organization,
  accept_all, webmail, disposable, address fields, emails: [...]}, "meta": {results, limit,
  offset, params}}`; `limit` 1-100 (default 10).
- `GET /email-finder?domain=|company=&first_name=&last_name=|full_name=` -> `data {email,
  score, position, sources, verification, ...}`; `email` and `score` are null when nothing is
  found (unsure: Hunter may answer 404 instead; a client should accept both).
- `GET /email-verifier?email=` -> `data {status, result, score, regexp, gibberish, disposable,
  webmail, mx_records, smtp_server, smtp_check, accept_all, block, sources}`. Some addresses
  need a slow SMTP check: the first ask starts it and answers **202** until
  `verifier_pending_seconds` have passed; the 202 body has no `data` (unsure what Hunter sends),
  so pyhunter raises `HunterApiError` with `status_code == 202`.
- `GET /account` (free) -> `data {plan_name, plan_level, reset_date, calls: {used, available},
  requests: {searches: {used, available}, verifications: {used, available}}}`. pyhunter's
  `account_information()` reads the deprecated `calls` block (the two quotas summed).

The key is accepted as `api_key`, `X-API-KEY` or `Authorization: Bearer`. Errors are
`{"errors": [{"id", "code", "details"}]}`: 400 `wrong_params` (Hunter's documented id),
401 `authentication_failed`, 403 `rate_limit_exceeded` (too many requests per second or per
minute, per key: 15/s and 500/min, the verifier 10/s and 300/min, as Hunter's reference
gives them), 429 `usage_limit_exceeded` (the month's credits are spent: stop paying calls),
451 `claimed_email` (the person asked Hunter to stop processing their address: never store
it), 503 `service_unavailable` (injected faults). Only the codes are Hunter's contract; the
ids other than `wrong_params` are the sandbox's names. Note that pyhunter 2.1 reports
`status_code=None` for every 4xx/5xx (it tests the falsy `Response`), so a client reads
the code from `HunterApiError.payload["errors"][0]["code"]`.

Credit accounting, from Hunter's help centre ("Hunter's Credit System",
https://help.hunter.io/en/articles/1911617) and the status table of the API reference:

- Two monthly quotas, searches and verifications, counted separately.
- Domain Search: 1 search credit per 1-10 emails returned (a page of 25 costs 3); nothing
  when no email comes back ("no credits are counted if Hunter cannot provide at least one
  email").
- Email Finder: 1 search credit when it returns an email; nothing when it finds none.
- Email Verifier: 1 verification credit per completed verification; nothing for the 202
  answers ("it will only count as a single request until we return the response") and
  nothing for status `unknown` ("... or verify an email address"). Older versions of the
  article also exempted webmail and disposable addresses; the sandbox follows the current one.
- Repeats: Hunter does not bill the same request twice in a billing period. The sandbox does,
  unless `free_repeats` is on (LEADFLOW_SANDBOX_HUNTER_FREE_REPEATS), so a pipeline that
  forgets its cache shows up in `/account`; turn it on to bill exactly as Hunter does.
- A spent quota answers 429 on its endpoints (searches: domain search and finder;
  verifications: verifier), as does an answer that would cost more than what is left.
`/account` and the control route report the usage; `paid_calls` there counts the answers
that cost at least one credit.

What Hunter "knows" is derived from the seeded demo directory, per domain and independent of
the order of requests: for most business sites (not all: some are not indexed) the generic
and personal addresses planted on the site plus a few generated people (names, position,
seniority, department, confidence, sources) following the domain's pattern. A few people have
asked to be removed: the finder and verifier answer 451 for them and the domain search never
lists them. Some mail servers accept every address (`accept_all`), a few never answer the
SMTP check (`unknown`), and some generated people have left (their address is `invalid`).

Control routes for tests (not Hunter's API), under the same mount:
`GET /__sandbox/state` (usage, paid calls, answers per endpoint and status, knobs),
`POST /__sandbox/state` with any of the `HunterSandboxConfig` knobs (`searches_available`,
`verifications_available`, `requests_per_second`, `requests_per_minute`,
`verifier_requests_per_second`, `verifier_requests_per_minute`, `verifier_pending_seconds`,
`free_repeats`, `fault_share`, `down`) and `"reset": true` (a new billing month: usage,
repeat memory, started checks, rate windows and counters cleared); `GET /__sandbox/truth
[?domain=]` shows what Hunter knows about a domain, removed people included.
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from leadflow.settings import SANDBOX_HUNTER_KEY, Settings
from sandbox.directory.generate import Business, Directory, Website, ascii_slug

# --- the world Hunter sees (shares of directory domains / people, drawn per domain) ---------
NOT_INDEXED_SHARE = 0.12  # business sites Hunter has never crawled
ACCEPT_ALL_SHARE = 0.15  # mail servers that accept any address
SMTP_SILENT_SHARE = 0.06  # mail servers that never answer the check: status "unknown"
REMOVED_SHARE = 0.07  # people who asked Hunter to stop processing their address
DEPARTED_SHARE = 0.1  # generated people who left: their mailbox is gone ("invalid")
SLOW_CHECK_SHARE = 0.3  # addresses at business domains whose first check answers 202

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
EMAILS_PER_SEARCH_CREDIT = 10

WEBMAIL_DOMAINS = frozenset(
    {"gmail.com", "googlemail.com", "yahoo.com", "outlook.com", "hotmail.com", "live.com",
     "aol.com", "icloud.com", "gmx.de", "web.de", "protonmail.com", "yandex.com"}
)  # fmt: skip
DISPOSABLE_DOMAINS = frozenset(
    {"mailinator.com", "guerrillamail.com", "10minutemail.com", "yopmail.com",
     "temp-mail.org", "trashmail.com", "sharklasers.com"}
)  # fmt: skip

EMAIL_TYPES = frozenset({"personal", "generic"})
SENIORITIES = frozenset({"junior", "senior", "executive"})
DEPARTMENTS = frozenset(
    {"executive", "it", "finance", "management", "sales", "legal", "support", "hr",
     "marketing", "communication", "education", "design", "health", "operations"}
)  # fmt: skip
REQUIRED_FIELDS = frozenset({"full_name", "position", "phone_number"})
VERIFICATION_FILTERS = frozenset({"valid", "accept_all", "unknown"})

PATTERNS: tuple[str, ...] = (
    "{first}.{last}",
    "{first}",
    "{f}{last}",
    "{first}{l}",
    "{first}_{last}",
)

DOMAIN_RE = re.compile(r"(?=.{4,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
EMAIL_RE = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(.+)")

Role = tuple[str, str, str]  # position, seniority, department
_ROLES: dict[str, tuple[Role, ...]] = {
    "restaurant": (("Owner", "executive", "executive"), ("General Manager", "executive", "management"),
                   ("Head Chef", "senior", "operations")),
    "cafe": (("Owner", "executive", "executive"), ("Store Manager", "senior", "management"),
             ("Head Barista", "junior", "operations")),
    "bar": (("Owner", "executive", "executive"), ("Bar Manager", "senior", "management"),
            ("Events Manager", "senior", "marketing")),
    "dentist": (("Principal Dentist", "executive", "health"), ("Practice Manager", "senior", "management"),
                ("Dental Hygienist", "junior", "health")),
    "plumber": (("Owner", "executive", "executive"), ("Service Manager", "senior", "operations"),
                ("Estimator", "junior", "sales")),
    "lawyer": (("Managing Partner", "executive", "legal"), ("Associate Attorney", "senior", "legal"),
               ("Paralegal", "junior", "legal")),
    "hotel": (("General Manager", "executive", "management"), ("Director of Sales", "executive", "sales"),
              ("Front Office Manager", "senior", "operations"), ("Events Coordinator", "junior", "marketing")),
    "salon": (("Owner", "executive", "executive"), ("Salon Manager", "senior", "management"),
              ("Senior Stylist", "senior", "design")),
    "auto_repair": (("Owner", "executive", "executive"), ("Service Advisor", "senior", "sales"),
                    ("Shop Foreman", "senior", "operations")),
    "accountant": (("Managing Partner", "executive", "finance"), ("Senior Tax Accountant", "senior", "finance"),
                   ("IT Administrator", "junior", "it")),
}  # fmt: skip
_COMMON_ROLES: tuple[Role, ...] = (
    ("Office Manager", "senior", "management"),
    ("Marketing Coordinator", "junior", "marketing"),
    ("Bookkeeper", "junior", "finance"),
    ("Customer Service Representative", "junior", "support"),
    ("HR Manager", "senior", "hr"),
)

# Staff names by the business's country (ASCII, so they make plain addresses).
_FIRST_NAMES: dict[str, tuple[str, ...]] = {
    "en": ("Amelia", "Ben", "Carla", "Daniel", "Elena", "Frank", "Gina", "Hugo", "Isla", "Jack",
           "Kira", "Liam", "Mia", "Noah", "Paula", "Ryan", "Sara", "Tom", "Vera", "Zoe"),
    "de": ("Jan", "Katrin", "Lars", "Mia", "Nils", "Petra", "Stefan", "Ute", "Jonas", "Lena"),
    "el": ("Alexandros", "Christina", "Eleni", "Giannis", "Katerina", "Nikos", "Sofia", "Vasilis"),
}  # fmt: skip
_LAST_NAMES: dict[str, tuple[str, ...]] = {
    "en": ("Adams", "Baker", "Carter", "Diaz", "Ellis", "Foster", "Gray", "Hayes", "Irwin",
           "Jones", "Kelly", "Lopez", "Mason", "Nolan", "Owens", "Perry", "Quinn", "Reed"),
    "de": ("Bauer", "Fuchs", "Hartmann", "Jung", "Lang", "Vogel", "Werner", "Zimmer"),
    "el": ("Alexiou", "Christou", "Konstantinou", "Lamprou", "Pappas", "Samaras", "Stavrou"),
}  # fmt: skip
_LANGUAGE_BY_COUNTRY = {"DE": "de", "GR": "el"}
# Pages elsewhere on the web where Hunter saw a staff address.
_MENTION_HOSTS = ("news.test", "chamber-of-commerce.test", "events.test", "jobs.test")
_FIRST_SEEN = date(2019, 1, 1)
_SEEN_SPAN_DAYS = 6 * 365


class HunterError(Exception):
    """An error answer: HTTP status and Hunter's error body."""

    def __init__(self, status: int, error_id: str, details: str) -> None:
        super().__init__(details)
        self.status = status
        self.error_id = error_id
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"errors": [{"id": self.error_id, "code": self.status, "details": self.details}]}


def _wrong_params(details: str) -> HunterError:
    return HunterError(400, "wrong_params", details)


# --------------------------------------------------------------------------------------
# Helpers shared with sandbox.company
# --------------------------------------------------------------------------------------


def normalise_domain(value: str | None) -> str | None:
    """`Example.COM`, `www.example.com`, `https://example.com/x` -> `example.com`; None when
    the value is not a domain name."""
    text = (value or "").strip().lower()
    if "://" in text:
        text = urlsplit(text).hostname or ""
    text = text.split("/", 1)[0].removeprefix("www.").rstrip(".")
    return text if DOMAIN_RE.fullmatch(text) else None


class SlidingWindowLimiter:
    """Requests admitted per key within trailing windows (e.g. 15 per second and 500 per
    minute). A refused request is not recorded, so a client that backs off gets through."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._admitted: dict[Hashable, deque[float]] = {}

    def admit(self, key: Hashable, limits: Sequence[tuple[float, int]]) -> float:
        """Record the request and return 0.0, or return the seconds until it would fit."""
        now = self._clock()
        longest = max(window for window, _ in limits)
        times = self._admitted.setdefault(key, deque())
        while times and times[0] <= now - longest:
            times.popleft()
        wait = 0.0
        for window, limit in limits:
            in_window = [t for t in times if t > now - window]
            if len(in_window) >= limit:
                # Room comes back when the oldest of the last `limit` requests leaves.
                wait = max(wait, in_window[-limit] + window - now)
        if wait <= 0:
            times.append(now)
        return wait

    def used(self, key: Hashable, window: float) -> int:
        """Requests admitted for `key` within the last `window` seconds."""
        since = self._clock() - window
        return sum(1 for t in self._admitted.get(key, ()) if t > since)

    def clear(self) -> None:
        self._admitted.clear()


def parse_non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected an integer >= 0, got {value!r}")
    return value


def parse_positive_int(value: Any) -> int:
    if parse_non_negative_int(value) < 1:
        raise ValueError(f"expected an integer >= 1, got {value!r}")
    return int(value)


def parse_non_negative_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"expected a number >= 0, got {value!r}")
    return float(value)


def parse_share(value: Any) -> float:
    if parse_non_negative_float(value) > 1:
        raise ValueError(f"expected a share between 0 and 1, got {value!r}")
    return float(value)


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def apply_changes(
    config: Any, changes: Mapping[str, Any], parsers: Mapping[str, Callable[[Any], Any]]
) -> None:
    """Set knobs on a config from a control request: all are checked before any is set, so a
    request with one bad field changes nothing (ValueError)."""
    unknown = sorted(set(changes) - set(parsers))
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(unknown)}; known: {', '.join(parsers)}")
    parsed = {name: parsers[name](value) for name, value in changes.items()}
    for name, value in parsed.items():
        setattr(config, name, value)


async def read_control_request(request: Request) -> dict[str, Any]:
    """The JSON object of a control POST (ValueError if it is not one)."""
    data = json.loads(await request.body() or b"{}")
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


# --------------------------------------------------------------------------------------
# What Hunter knows about a domain
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    domain: str
    uri: str
    extracted_on: str
    last_seen_on: str
    still_on_page: bool


@dataclass(frozen=True, slots=True)
class Contact:
    """One address Hunter has seen on the web: a generic mailbox or a person's."""

    email: str
    personal: bool
    first_name: str | None
    last_name: str | None
    position: str | None
    seniority: str | None
    department: str | None
    linkedin: str | None
    confidence: int
    sources: tuple[Source, ...]
    verified_on: str | None  # when Hunter last verified it; None = never
    deliverable: bool  # False: the mailbox is gone, the verifier says "invalid"
    removed: bool  # asked Hunter to stop processing it: 451, never listed


@dataclass(frozen=True, slots=True)
class DomainRecord:
    domain: str
    organization: str
    indexed: bool  # crawled by Hunter: domain search and finder know its people
    pattern: str
    accept_all: bool
    smtp_answers: bool  # False: checks of its addresses end "unknown"
    contacts: tuple[Contact, ...]
    business: Business

    def contact(self, email: str) -> Contact | None:
        return next((c for c in self.contacts if c.email == email), None)


def _day(rng: random.Random, after: date | None = None) -> date:
    start = after or _FIRST_SEEN
    span = max(1, _SEEN_SPAN_DAYS - (start - _FIRST_SEEN).days)
    return start + timedelta(days=rng.randrange(span))


def address_local(pattern: str, first: str, last: str) -> str:
    first_slug, last_slug = ascii_slug(first), ascii_slug(last)
    return pattern.format(first=first_slug, last=last_slug, f=first_slug[:1], l=last_slug[:1])


def build_domain_record(seed: int, site: Website, business: Business) -> DomainRecord:
    """What Hunter knows about `site`, drawn from (seed, domain) alone."""
    rng = random.Random(f"hunter/{seed}/{site.domain}")
    indexed = rng.random() >= NOT_INDEXED_SHARE
    accept_all = rng.random() < ACCEPT_ALL_SHARE
    smtp_answers = rng.random() >= SMTP_SILENT_SHARE
    # A person's address planted on the site is first.last: that is then the domain's pattern.
    site_people = [e for e in site.emails if "." in e.split("@", 1)[0]]
    pattern = PATTERNS[0] if site_people else rng.choice(PATTERNS)
    roles = _ROLES.get(business.category_slug, _COMMON_ROLES)
    language = _LANGUAGE_BY_COUNTRY.get(business.country, "en")
    contacts: list[Contact] = []
    people = 0

    def role() -> Role:
        return roles[0] if people == 0 else rng.choice(roles[1:] + _COMMON_ROLES)

    def verified_on(deliverable: bool, first_seen: date) -> str | None:
        if deliverable and smtp_answers and rng.random() < 0.8:
            return _day(rng, first_seen).isoformat()
        return None

    for email, page in zip(site.emails, site.email_pages, strict=True):
        first_seen = _day(rng)
        source = Source(
            domain=site.domain,
            uri=site.url if page == "home" else urljoin(site.url, "contact"),
            extracted_on=first_seen.isoformat(),
            last_seen_on=_day(rng, first_seen).isoformat(),
            still_on_page=True,
        )
        local = email.split("@", 1)[0]
        if "." in local:
            position, seniority, department = role()
            people += 1
            first, last = (part.capitalize() for part in local.split(".", 1))
            contact = Contact(
                email=email, personal=True, first_name=first, last_name=last,
                position=position, seniority=seniority, department=department,
                linkedin=None, confidence=rng.randint(85, 99), sources=(source,),
                verified_on=verified_on(True, first_seen), deliverable=True,
                removed=rng.random() < REMOVED_SHARE,
            )  # fmt: skip
        else:
            contact = Contact(
                email=email, personal=False, first_name=None, last_name=None, position=None,
                seniority=None, department=None, linkedin=None,
                confidence=rng.randint(80, 97), sources=(source,),
                verified_on=verified_on(True, first_seen), deliverable=True, removed=False,
            )  # fmt: skip
        contacts.append(contact)

    staff = (
        rng.randint(1, 3)
        + len(site.entity_ids)
        - 1
        + (2 if business.category_slug == "hotel" else 0)
    )
    seen = {c.email for c in contacts}
    for _ in range(staff):
        first = rng.choice(_FIRST_NAMES[language])
        last = rng.choice(_LAST_NAMES[language])
        email = f"{address_local(pattern, first, last)}@{site.domain}"
        if email in seen:  # the pattern made the same address for another person
            continue
        seen.add(email)
        position, seniority, department = role()
        people += 1
        deliverable = rng.random() >= DEPARTED_SHARE
        sources = []
        for _ in range(rng.randint(1, 3)):
            first_seen = _day(rng)
            host = rng.choice(_MENTION_HOSTS)
            sources.append(
                Source(
                    domain=host,
                    uri=f"http://{host}/{ascii_slug(site.name)}/{ascii_slug(first)}-{ascii_slug(last)}",
                    extracted_on=first_seen.isoformat(),
                    last_seen_on=_day(rng, first_seen).isoformat(),
                    still_on_page=deliverable and rng.random() < 0.8,
                )
            )
        linkedin = None
        if rng.random() < 0.3:
            linkedin = f"https://www.linkedin.com/in/{ascii_slug(first)}-{ascii_slug(last)}-{rng.randrange(10**6):06d}"
        contacts.append(
            Contact(
                email=email, personal=True, first_name=first, last_name=last,
                position=position, seniority=seniority, department=department,
                linkedin=linkedin,
                confidence=rng.randint(40, 97) if deliverable else rng.randint(20, 50),
                sources=tuple(sources),
                verified_on=verified_on(deliverable, date.fromisoformat(sources[0].extracted_on)),
                deliverable=deliverable, removed=rng.random() < REMOVED_SHARE,
            )
        )  # fmt: skip
    return DomainRecord(
        domain=site.domain,
        organization=site.name,
        indexed=indexed,
        pattern=pattern,
        accept_all=accept_all,
        smtp_answers=smtp_answers,
        contacts=tuple(contacts),
        business=business,
    )


@dataclass(frozen=True, slots=True)
class Verification:
    """The verifier's answer for one address, and whether its first check is slow."""

    email: str
    status: str
    score: int
    gibberish: bool
    disposable: bool
    webmail: bool
    mx_records: bool
    smtp_server: bool
    smtp_check: bool
    accept_all: bool
    sources: tuple[Source, ...]
    slow: bool

    def as_json(self) -> dict[str, Any]:
        result = {"valid": "deliverable", "invalid": "undeliverable"}.get(self.status, "risky")
        return {
            "status": self.status,
            "result": result,  # deprecated by Hunter in favour of `status`, still sent
            "_deprecation_notice": "Using result is deprecated, use status instead",
            "score": self.score,
            "email": self.email,
            "regexp": True,
            "gibberish": self.gibberish,
            "disposable": self.disposable,
            "webmail": self.webmail,
            "mx_records": self.mx_records,
            "smtp_server": self.smtp_server,
            "smtp_check": self.smtp_check,
            "accept_all": self.accept_all,
            "block": False,
            "sources": [asdict(s) for s in self.sources],
        }


def _looks_gibberish(local: str) -> bool:
    letters = re.sub(r"[^a-z]", "", local)
    return len(letters) >= 4 and not re.search(r"[aeiouy]", letters)


# --------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class HunterSandboxConfig:
    api_keys: tuple[str, ...] = (SANDBOX_HUNTER_KEY,)
    searches_available: int = 5000  # monthly search credits
    verifications_available: int = 10000  # monthly verification credits
    requests_per_second: int = 15  # per key, every endpoint but the verifier
    requests_per_minute: int = 500
    verifier_requests_per_second: int = 10
    verifier_requests_per_minute: int = 300
    verifier_pending_seconds: float = 2.0  # 202 this long after the first check of a slow address
    free_repeats: bool = False  # bill an identical request once per month, as Hunter does
    fault_share: float = 0.0  # share of requests answered 503 (seeded)
    down: bool = False  # every request answered 503
    seed: int = 42

    @classmethod
    def from_settings(cls, settings: Settings, seed: int | None = None) -> HunterSandboxConfig:
        # A key set in the environment works against the sandbox too, so switching between
        # sandbox and production needs no key change.
        keys = [SANDBOX_HUNTER_KEY]
        if settings.hunter_api_key is not None:
            keys.append(settings.hunter_api_key.get_secret_value())
        return cls(
            api_keys=tuple(keys),
            searches_available=settings.sandbox_hunter_search_credits,
            verifications_available=settings.sandbox_hunter_verification_credits,
            requests_per_second=settings.sandbox_hunter_requests_per_second,
            requests_per_minute=settings.sandbox_hunter_requests_per_minute,
            verifier_requests_per_second=settings.sandbox_hunter_verifier_requests_per_second,
            verifier_requests_per_minute=settings.sandbox_hunter_verifier_requests_per_minute,
            verifier_pending_seconds=settings.sandbox_hunter_verifier_pending_seconds,
            free_repeats=settings.sandbox_hunter_free_repeats,
            fault_share=settings.sandbox_hunter_fault_share,
            seed=settings.sandbox_seed if seed is None else seed,
        )


# Knobs a control request may set, with their checks.
_CONTROL_FIELDS: dict[str, Callable[[Any], Any]] = {
    "searches_available": parse_non_negative_int,
    "verifications_available": parse_non_negative_int,
    "requests_per_second": parse_positive_int,
    "requests_per_minute": parse_positive_int,
    "verifier_requests_per_second": parse_positive_int,
    "verifier_requests_per_minute": parse_positive_int,
    "verifier_pending_seconds": parse_non_negative_float,
    "free_repeats": parse_bool,
    "fault_share": parse_share,
    "down": parse_bool,
}

ENDPOINTS = ("domain-search", "email-finder", "email-verifier", "account")
QUOTA_OF = {
    "domain-search": "searches",
    "email-finder": "searches",
    "email-verifier": "verifications",
}


@dataclass(slots=True)
class _Usage:
    searches: int = 0
    verifications: int = 0
    paid_calls: Counter[str] = field(default_factory=Counter)
    answers: dict[str, Counter[int]] = field(default_factory=dict)
    billed: set[Hashable] = field(default_factory=set)  # requests charged this month
    checks_started: dict[str, float] = field(default_factory=dict)  # email -> clock time


class HunterSandbox:
    """In-memory state of the Hunter stand-in: what it knows, usage, rate windows.

    Thread-safe (one lock around each call): uvicorn and in-process callers may use it at
    once. `clock` is injectable so tests can move time for rate windows and slow checks.
    """

    def __init__(
        self,
        config: HunterSandboxConfig,
        directory: Directory,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.directory = directory
        self._clock = clock
        self._lock = threading.RLock()
        self._fault_rng = random.Random(f"hunter-faults/{config.seed}")
        self._limiter = SlidingWindowLimiter(clock)
        self._usage = _Usage()
        self._records: dict[str, DomainRecord] = {}
        self._domain_by_name: dict[str, str] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, directory: Directory, seed: int | None = None
    ) -> HunterSandbox:
        return cls(HunterSandboxConfig.from_settings(settings, seed), directory)

    # --- the world --------------------------------------------------------------------------

    def record(self, domain: str) -> DomainRecord | None:
        """What Hunter knows about a business domain (None for domains outside the directory)."""
        with self._lock:
            cached = self._records.get(domain)
            if cached is not None:
                return cached
            site = self.directory.websites.get(domain)
            if site is None:
                return None
            business = self.directory.business(site.entity_ids[0])
            if business is None:
                raise LookupError(f"website {domain} has no business {site.entity_ids[0]}")
            record = build_domain_record(self.config.seed, site, business)
            self._records[domain] = record
            return record

    def _domain_of_company(self, name: str) -> str | None:
        if self._domain_by_name is None:
            index: dict[str, str] = {}
            for domain, site in self.directory.websites.items():
                index.setdefault(ascii_slug(site.name), domain)
            self._domain_by_name = index
        return self._domain_by_name.get(ascii_slug(name))

    def truth(self, domain: str) -> dict[str, Any] | None:
        """Everything about a domain, removed people included (for tests, never the API)."""
        record = self.record(domain)
        if record is None:
            return None
        return {
            "domain": record.domain,
            "organization": record.organization,
            "indexed": record.indexed,
            "pattern": record.pattern,
            "accept_all": record.accept_all,
            "smtp_answers": record.smtp_answers,
            "contacts": [
                {
                    "email": c.email,
                    "type": "personal" if c.personal else "generic",
                    "first_name": c.first_name,
                    "last_name": c.last_name,
                    "deliverable": c.deliverable,
                    "removed": c.removed,
                }
                for c in record.contacts
            ],
        }

    def all_truth(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {d: t for d in self.directory.websites if (t := self.truth(d)) is not None}

    # --- the API --------------------------------------------------------------------------

    def call(
        self, endpoint: str, key: str | None, params: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """Answer one API request: (HTTP status, JSON body)."""
        with self._lock:
            try:
                status, body = self._call(endpoint, key, params)
            except HunterError as exc:
                status, body = exc.status, exc.body()
            self._usage.answers.setdefault(endpoint, Counter())[status] += 1
            return status, body

    def _call(
        self, endpoint: str, key: str | None, params: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        if self.config.down or (
            self.config.fault_share > 0 and self._fault_rng.random() < self.config.fault_share
        ):
            raise HunterError(
                503, "service_unavailable", "Something went wrong on Hunter's end; retry later."
            )
        if not key:
            raise HunterError(401, "authentication_failed", "No API key supplied.")
        if key not in self.config.api_keys:
            raise HunterError(
                401, "authentication_failed", "No user found for the API key supplied."
            )
        self._throttle(key, endpoint)
        if endpoint == "domain-search":
            return 200, self._domain_search(params)
        if endpoint == "email-finder":
            return 200, self._email_finder(params)
        if endpoint == "email-verifier":
            return self._email_verifier(params)
        return 200, self._account()

    def _throttle(self, key: str, endpoint: str) -> None:
        c = self.config
        if endpoint == "email-verifier":
            bucket, limits = (
                "verifier",
                ((1.0, c.verifier_requests_per_second), (60.0, c.verifier_requests_per_minute)),
            )
        else:
            bucket, limits = (
                "default",
                ((1.0, c.requests_per_second), (60.0, c.requests_per_minute)),
            )
        if self._limiter.admit((key, bucket), limits) > 0:
            raise HunterError(
                403,
                "rate_limit_exceeded",
                "You have reached the rate limit for this endpoint; slow down and retry.",
            )

    def _remaining(self, quota: str) -> int:
        available = (
            self.config.searches_available
            if quota == "searches"
            else self.config.verifications_available
        )
        return available - getattr(self._usage, quota)

    def _check_quota(self, quota: str) -> None:
        if self._remaining(quota) <= 0:
            raise HunterError(
                429,
                "usage_limit_exceeded",
                f"You have used all your monthly {quota}; upgrade or wait for the reset.",
            )

    def _charge(self, endpoint: str, cost: int, request: Hashable) -> None:
        """Bill an answer about to be sent (429, and nothing billed, if the quota cannot pay)."""
        quota = QUOTA_OF[endpoint]
        if self.config.free_repeats and request in self._usage.billed:
            cost = 0
        self._check_quota(quota)
        if cost > self._remaining(quota):
            raise HunterError(
                429,
                "usage_limit_exceeded",
                f"This request needs {cost} {quota} credits; not enough are left this month.",
            )
        if cost:
            setattr(self._usage, quota, getattr(self._usage, quota) + cost)
            self._usage.paid_calls[endpoint] += 1
            self._usage.billed.add(request)

    def _target(self, params: Mapping[str, str]) -> tuple[str | None, str | None]:
        """(normalised domain, company name) of a request; the domain wins, as in Hunter."""
        raw_domain, company = params.get("domain", "").strip(), params.get("company", "").strip()
        if raw_domain:
            domain = normalise_domain(raw_domain)
            if domain is None:
                raise _wrong_params(f"The domain {raw_domain!r} is not a valid domain name.")
            return domain, None
        if company:
            return self._domain_of_company(company), company
        raise _wrong_params("You are missing the domain parameter.")

    def _indexed(self, domain: str | None) -> DomainRecord | None:
        record = self.record(domain) if domain else None
        return record if record is not None and record.indexed else None

    def _domain_search(self, params: Mapping[str, str]) -> dict[str, Any]:
        domain, company = self._target(params)
        limit = _int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _int_param(params, "offset", 0, 0, None)
        email_type = params.get("type", "").strip().lower() or None
        if email_type is not None and email_type not in EMAIL_TYPES:
            raise _wrong_params("type must be personal or generic.")
        seniority = _list_param(params, "seniority", SENIORITIES)
        department = _list_param(params, "department", DEPARTMENTS)
        required = _list_param(params, "required_field", REQUIRED_FIELDS)
        statuses = _list_param(params, "verification_status", VERIFICATION_FILTERS)
        record = self._indexed(domain)

        def wanted(c: Contact) -> bool:
            present = {
                "full_name": bool(c.first_name and c.last_name),
                "position": c.position is not None,
                "phone_number": False,  # the sandbox knows no phone numbers
            }
            return (
                not c.removed
                and (email_type is None or email_type == ("personal" if c.personal else "generic"))
                and (not seniority or c.seniority in seniority)
                and (not department or c.department in department)
                and all(present[name] for name in required)
                and (not statuses or (_stored_status(record, c) or "unknown") in statuses)
            )

        matching = [c for c in record.contacts if wanted(c)] if record else []
        page = matching[offset : offset + limit]
        request = (
            "domain-search",
            domain,
            limit,
            offset,
            email_type,
            seniority,
            department,
            required,
            statuses,
        )
        self._charge("domain-search", math.ceil(len(page) / EMAILS_PER_SEARCH_CREDIT), request)
        business = record.business if record else None
        data: dict[str, Any] = {
            "domain": domain,
            "disposable": False,
            "webmail": False,
            "accept_all": record.accept_all if record else False,
            "pattern": record.pattern if record else None,
            "organization": record.organization if record else None,
            "description": None,
            "industry": None,
            "twitter": None,
            "facebook": None,
            "linkedin": None,
            "instagram": None,
            "youtube": None,
            "technologies": [],
            "country": business.country if business else None,
            "state": business.state if business else None,
            "city": business.city if business else None,
            "postal_code": business.postal_code if business else None,
            "street": business.street if business else None,
            "headcount": None,
            "company_type": None,
            "emails": [_email_json(record, c) for c in page] if record else [],
            "linked_domains": [],
        }
        return {
            "data": data,
            "meta": {
                "results": len(matching),
                "limit": limit,
                "offset": offset,
                "params": {
                    "domain": domain,
                    "company": company,
                    "type": email_type,
                    "seniority": ",".join(seniority) or None,
                    "department": ",".join(department) or None,
                },
            },
        }

    def _email_finder(self, params: Mapping[str, str]) -> dict[str, Any]:
        if params.get("linkedin_handle") and not (params.get("domain") or params.get("company")):
            raise _wrong_params(
                "The sandbox finds people by name and domain or company, not by linkedin_handle."
            )
        domain, company = self._target(params)
        first, last = params.get("first_name", "").strip(), params.get("last_name", "").strip()
        full_name = params.get("full_name", "").strip()
        if not (first and last):
            parts = full_name.split()
            if len(parts) < 2:
                raise _wrong_params(
                    "You are missing the first_name and last_name (or full_name) parameters."
                )
            first, last = parts[0], " ".join(parts[1:])
        if params.get("max_duration"):
            _int_param(params, "max_duration", 10, 3, 20)
        record = self._indexed(domain)
        contact = _find_person(record, first, last) if record else None
        if contact is not None and contact.removed:
            raise _claimed(contact.email)
        email: str | None = contact.email if contact else None
        score: int | None = contact.confidence if contact else None
        if contact is None and record is not None and record.accept_all:
            # A server that accepts everything cannot refute a guess from the pattern: Hunter
            # returns it with a low score. Elsewhere the SMTP check rejects unknown people.
            guess = f"{address_local(record.pattern, first, last)}@{record.domain}"
            if record.contact(guess) is None:
                email = guess
                score = random.Random(f"hunter-guess/{self.config.seed}/{guess}").randint(20, 55)
        request = ("email-finder", domain, ascii_slug(first), ascii_slug(last))
        self._charge("email-finder", 1 if email else 0, request)
        status = None
        if contact is not None:
            status = _stored_status(record, contact)
        elif email is not None:
            status = "accept_all"
        return {
            "data": {
                "first_name": contact.first_name if contact else first,
                "last_name": contact.last_name if contact else last,
                "email": email,
                "score": score,
                "domain": domain,
                "accept_all": record.accept_all if record else None,
                "position": contact.position if contact else None,
                "twitter": None,
                "linkedin_url": contact.linkedin if contact else None,
                "phone_number": None,
                "company": record.organization if record else company,
                "sources": [asdict(s) for s in contact.sources] if contact else [],
                "verification": {
                    "date": contact.verified_on if contact else None,
                    "status": status,
                },
            },
            "meta": {
                "params": {
                    "first_name": first,
                    "last_name": last,
                    "full_name": full_name or None,
                    "domain": domain,
                    "company": company,
                    "max_duration": params.get("max_duration"),
                }
            },
        }

    def _email_verifier(self, params: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        email = params.get("email", "").strip().lower()
        if not email:
            raise _wrong_params("You are missing the email parameter.")
        match = EMAIL_RE.fullmatch(email)
        if match is None or normalise_domain(match.group(1)) != match.group(1):
            raise _wrong_params(f"{email!r} is not a valid email address.")
        verification = self._verify(email, match.group(1))
        self._check_quota("verifications")
        if verification.slow and self.config.verifier_pending_seconds > 0:
            started = self._usage.checks_started.setdefault(email, self._clock())
            if self._clock() < started + self.config.verifier_pending_seconds:
                return 202, {
                    "errors": [
                        {
                            "id": "verification_in_progress",
                            "code": 202,
                            "details": "The verification is still in progress; make the same request again later.",
                        }
                    ]
                }
        self._charge(
            "email-verifier",
            0 if verification.status == "unknown" else 1,
            ("email-verifier", email),
        )
        return 200, {"data": verification.as_json(), "meta": {"params": {"email": email}}}

    def _verify(self, email: str, domain: str) -> Verification:
        rng = random.Random(f"hunter-verify/{self.config.seed}/{email}")
        gibberish = _looks_gibberish(email.split("@", 1)[0])
        common = {"email": email, "gibberish": gibberish, "sources": (), "slow": False}
        if domain in WEBMAIL_DOMAINS:
            return Verification(
                status="webmail", score=rng.randint(60, 80), disposable=False, webmail=True,
                mx_records=True, smtp_server=True, smtp_check=True, accept_all=False, **common,
            )  # fmt: skip
        if domain in DISPOSABLE_DOMAINS:
            return Verification(
                status="disposable", score=rng.randint(0, 30), disposable=True, webmail=False,
                mx_records=True, smtp_server=True, smtp_check=True, accept_all=True, **common,
            )  # fmt: skip
        record = self.record(domain)
        if record is None:  # no such business: the domain has no mail server
            return Verification(
                status="invalid", score=0, disposable=False, webmail=False, mx_records=False,
                smtp_server=False, smtp_check=False, accept_all=False, **common,
            )  # fmt: skip
        contact = record.contact(email)
        if contact is not None and contact.removed:
            raise _claimed(email)
        slow = rng.random() < SLOW_CHECK_SHARE
        sources = contact.sources if contact else ()
        known = {"email": email, "gibberish": gibberish, "sources": sources, "slow": slow}
        flags = {"disposable": False, "webmail": False, "mx_records": True}
        if not record.smtp_answers:
            return Verification(
                status="unknown", score=rng.randint(0, 40), smtp_server=False,
                smtp_check=False, accept_all=False, **flags, **known,
            )  # fmt: skip
        if record.accept_all:
            return Verification(
                status="accept_all", score=rng.randint(50, 80), smtp_server=True,
                smtp_check=True, accept_all=True, **flags, **known,
            )  # fmt: skip
        if contact is not None and contact.deliverable:
            return Verification(
                status="valid", score=rng.randint(85, 100), smtp_server=True,
                smtp_check=True, accept_all=False, **flags, **known,
            )  # fmt: skip
        return Verification(
            status="invalid", score=rng.randint(0, 20), smtp_server=True, smtp_check=False,
            accept_all=False, **flags, **known,
        )  # fmt: skip

    def _account(self) -> dict[str, Any]:
        c, u = self.config, self._usage
        today = datetime.now(UTC).date()
        reset = date(today.year + today.month // 12, today.month % 12 + 1, 1)
        return {
            "data": {
                "first_name": "Sandbox",
                "last_name": "Account",
                "email": "sandbox@leadflow.test",
                "plan_name": "Sandbox",
                "plan_level": 1,
                "reset_date": reset.isoformat(),
                "team_id": None,
                "calls": {
                    "_deprecation_notice": "Sums the searches and the verifications; use requests instead.",
                    "used": u.searches + u.verifications,
                    "available": c.searches_available + c.verifications_available,
                },
                "requests": {
                    "searches": {"used": u.searches, "available": c.searches_available},
                    "verifications": {
                        "used": u.verifications,
                        "available": c.verifications_available,
                    },
                },
            }
        }

    # --- control (tests) ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            u = self._usage
            return {
                "usage": {
                    "searches": {"used": u.searches, "available": self.config.searches_available},
                    "verifications": {
                        "used": u.verifications,
                        "available": self.config.verifications_available,
                    },
                },
                "paid_calls": {e: u.paid_calls[e] for e in QUOTA_OF},
                "answers": {
                    e: {str(s): n for s, n in sorted(c.items())} for e, c in u.answers.items()
                },
                "config": {
                    f.name: getattr(self.config, f.name)
                    for f in fields(self.config)
                    if f.name != "api_keys"
                },
            }

    def control(self, changes: Mapping[str, Any]) -> None:
        """Apply a control request: knobs, and `reset` (a fresh billing month)."""
        changes = dict(changes)
        reset = parse_bool(changes.pop("reset", False))
        with self._lock:
            apply_changes(self.config, changes, _CONTROL_FIELDS)
            if reset:
                self._usage = _Usage()
                self._limiter.clear()


def _int_param(
    params: Mapping[str, str], name: str, default: int, low: int, high: int | None
) -> int:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _wrong_params(f"{name} must be an integer.") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise _wrong_params(f"{name} must be {bounds}.")
    return value


def _list_param(params: Mapping[str, str], name: str, allowed: frozenset[str]) -> tuple[str, ...]:
    values = tuple(
        sorted({v.strip().lower() for v in params.get(name, "").split(",") if v.strip()})
    )
    bad = [v for v in values if v not in allowed]
    if bad:
        raise _wrong_params(
            f"{name} must be among {', '.join(sorted(allowed))}; got {', '.join(bad)}."
        )
    return values


def _stored_status(record: DomainRecord | None, contact: Contact) -> str | None:
    """The verification status Hunter shows next to an address it has verified before."""
    if record is None or contact.verified_on is None:
        return None
    return "accept_all" if record.accept_all else "valid"


def _email_json(record: DomainRecord, c: Contact) -> dict[str, Any]:
    return {
        "value": c.email,
        "type": "personal" if c.personal else "generic",
        "confidence": c.confidence,
        "sources": [asdict(s) for s in c.sources],
        "first_name": c.first_name,
        "last_name": c.last_name,
        "position": c.position,
        "seniority": c.seniority,
        "department": c.department,
        "linkedin": c.linkedin,
        "twitter": None,
        "phone_number": None,
        "verification": {"date": c.verified_on, "status": _stored_status(record, c)},
    }


def _find_person(record: DomainRecord, first: str, last: str) -> Contact | None:
    wanted = (ascii_slug(first), ascii_slug(last))
    return next(
        (
            c
            for c in record.contacts
            if c.personal
            and (ascii_slug(c.first_name or ""), ascii_slug(c.last_name or "")) == wanted
        ),
        None,
    )


def _claimed(email: str) -> HunterError:
    return HunterError(
        451,
        "claimed_email",
        f"The person behind {email} asked us to stop processing it; you should not process it either.",
    )


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------


def request_api_key(request: Request) -> str | None:
    """The key from `api_key`, `X-API-KEY` or `Authorization: Bearer`, as Hunter accepts it."""
    key = request.query_params.get("api_key") or request.headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def hunter_app(sandbox: HunterSandbox) -> Starlette:
    """The Hunter stand-in as an ASGI app (mount it under `/hunter/v2`)."""

    def endpoint(name: str) -> Callable[[Request], Any]:
        async def answer(request: Request) -> Response:
            params = {k: v for k, v in request.query_params.items() if k != "api_key"}
            status, body = sandbox.call(name, request_api_key(request), params)
            return JSONResponse(body, status_code=status)

        return answer

    async def state(request: Request) -> Response:
        if request.method == "POST":
            try:
                sandbox.control(await read_control_request(request))
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(sandbox.state())

    async def truth(request: Request) -> Response:
        raw = request.query_params.get("domain")
        if raw is None:
            return JSONResponse(sandbox.all_truth())
        found = sandbox.truth(normalise_domain(raw) or "")
        if found is None:
            return JSONResponse(
                {"error": f"{raw} is not a directory business domain"}, status_code=404
            )
        return JSONResponse(found)

    app = Starlette(
        routes=[
            *(Route(f"/{name}", endpoint(name)) for name in ENDPOINTS),
            Route("/__sandbox/state", state, methods=["GET", "POST"]),
            Route("/__sandbox/truth", truth),
        ]
    )
    app.state.hunter = sandbox
    return app
