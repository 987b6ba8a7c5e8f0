"""Stage `enrich`: the email waterfall and company data, paid for at most once per domain.

Emails, per lead, in this order (each step only where the previous one found nothing):

1. the business's own website (stage `contacts`) and the listing itself: free, then checked
   by the Hunter verifier (the best `hunter_verify_candidates` unverified ones);
2. where no deliverable address is left, Hunter domain search on the lead's registered
   domain (one paid search per domain), whose best candidates are verified in turn.

Each email keeps its source, verification status and confidence; `best_email` is the best
deliverable one (verified first, then the website's, then the most confident). Company facts
come from the configured `CompanyProvider` (none configured: that step is skipped and the
summary says so).

Money: every provider answer is cached per domain (verifications per address) in MongoDB
for `enrichment_cache_days`, checked on read, so a domain is never paid for twice within
it. Before the batch the account's credits are read (free) and a per-run budget caps paid
calls. A 429 (month used up), a bad key or an outage stops that provider for the run: its
remaining leads are marked `pending` with the reason, and the next run (or the
`enrich_pending` deployment) finishes them. Calls go through Prefect's global rate limits
(`hunter-api`, `company-api`), shared by every run.

Suppression: emails, domains and lead ids on the suppression list are never looked up nor
stored; an address Hunter answers 451 for joins the list.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import rate_limit

from connectors.company import (
    CompanyLookup,
    CompanyProvider,
    CompanyProviderError,
    CompanyProviderUnavailable,
    company_provider_from_settings,
)
from connectors.hunter import (
    Credits,
    HunterAuthError,
    HunterClient,
    HunterError,
    HunterQuotaExceeded,
    HunterRemoved,
    HunterUnavailable,
)
from connectors.mongo import LeadStore, shared_store
from leadflow.settings import Settings, get_settings
from models.lead import CompanyFacts, Email, Enrichment, EnrichmentStatus, Lead, utcnow
from models.suppression import Suppressions

STAGE = "enrich"
HUNTER_LIMIT = "hunter-api"
COMPANY_LIMIT = "company-api"
DOMAIN_SEARCH = "hunter-domain"
VERIFICATION = "hunter-verify"
COMPANY = "company"

log = logging.getLogger("leadflow.enrich")

# Verification statuses from best to worst; invalid and disposable addresses are never "best".
_STATUS_RANK = {
    "valid": 0,
    "accept_all": 1,
    "webmail": 2,
    "unverified": 3,
    "unknown": 3,
    "disposable": 9,
    "invalid": 9,
}
_UNDELIVERABLE = frozenset({"invalid", "disposable"})
_FREE_SOURCES = ("website", "directory", "google_maps")


@dataclass
class EnrichResult:
    leads: list[Lead]
    domains: int = 0
    searches_paid: int = 0
    verifications_paid: int = 0
    company_lookups_paid: int = 0
    cache_hits: int = 0
    emails_found: int = 0
    emails_verified: int = 0
    companies_found: int = 0
    suppressed_emails: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        statuses = defaultdict(int)
        for lead in self.leads:
            statuses[lead.enrichment.status if lead.enrichment else "skipped"] += 1
        return {
            "domains": self.domains,
            "searches_paid": self.searches_paid,
            "verifications_paid": self.verifications_paid,
            "company_lookups_paid": self.company_lookups_paid,
            "cache_hits": self.cache_hits,
            "emails_found": self.emails_found,
            "emails_verified": self.emails_verified,
            "companies_found": self.companies_found,
            "suppressed_emails": self.suppressed_emails,
            "done": statuses["done"],
            "pending": statuses["pending"],
            "skipped": statuses["skipped"],
        }


@dataclass
class _Step:
    """One provider's state during a batch: budget left, and why it stopped, if it did."""

    budget: int
    stopped: str | None = None
    what: str = "paid calls"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        with self.lock:
            if self.stopped is not None or self.budget <= 0:
                return False
            self.budget -= 1
            return True

    def stop(self, reason: str) -> None:
        with self.lock:
            self.stopped = self.stopped or reason

    @property
    def reason(self) -> str:
        """Why a key was not asked: the provider stopped, or the run's budget ran out."""
        return self.stopped or f"the run's budget of {self.what} is spent"


@dataclass
class _LeadState:
    """One lead's outcome per step; the email and company steps run in parallel threads, so
    each writes only its own fields."""

    emails: EnrichmentStatus = "skipped"
    company: EnrichmentStatus = "skipped"
    facts: CompanyFacts | None = None
    reasons: dict[str, list[str]] = field(default_factory=lambda: {"emails": [], "company": []})

    def pending(self, what: str, reason: str) -> None:
        setattr(self, what, "pending")
        if reason not in self.reasons[what]:
            self.reasons[what].append(reason)


class Enricher:
    """The waterfall over one batch; plain Python (the Prefect task below wires it up)."""

    def __init__(
        self,
        store: LeadStore,
        hunter: HunterClient | None,
        company: CompanyProvider | None,
        settings: Settings | None = None,
    ) -> None:
        self.store = store
        self.hunter = hunter
        self.company = company
        self.settings = settings or get_settings()
        self.ttl = timedelta(days=self.settings.enrichment_cache_days)
        self.suppressed = Suppressions()
        self._verify_step: _Step | None = None

    def run(self, leads: list[Lead]) -> EnrichResult:
        result = EnrichResult(leads=leads)
        self._verify_step = None
        self.suppressed = self.store.suppressions()
        states = {id(lead): _LeadState() for lead in leads}
        self._drop_suppressed(leads, result)
        eligible = [
            lead
            for lead in leads
            if not self.suppressed.lead_id(lead.lead_id) and not self.suppressed.domain(lead.domain)
        ]
        by_domain: dict[str, list[Lead]] = defaultdict(list)
        for lead in eligible:
            if lead.domain:
                by_domain[lead.domain].append(lead)
        result.domains = len(by_domain)

        # Company data from its own provider, under its own rate limit, meanwhile.
        company_part = EnrichResult(leads=[])
        with ThreadPoolExecutor(1) as side:
            companies = side.submit(
                copy_context().run, self._companies, by_domain, states, company_part
            )
            # The free addresses are verified first: one that turns out invalid sends its
            # domain on to Hunter in this same run, whose addresses are verified in turn.
            self._verify(eligible, states, result)
            self._emails(by_domain, states, result)
            self._verify(eligible, states, result)
            companies.result()
        result.cache_hits += company_part.cache_hits
        result.company_lookups_paid = company_part.company_lookups_paid
        result.companies_found = company_part.companies_found
        result.notes += company_part.notes

        for lead in leads:
            self._finish(lead, states[id(lead)])
        result.emails_found = sum(1 for lead in leads if lead.best_email)
        return result

    # --- step 2: Hunter domain search ---------------------------------------------------

    def _emails(
        self, by_domain: dict[str, list[Lead]], states: dict[int, _LeadState], result: EnrichResult
    ) -> None:
        needing = {}
        for domain, group in by_domain.items():
            if any(_deliverable(lead.emails) for lead in group):
                for lead in group:
                    states[id(lead)].emails = "done"  # the website (or listing) had one: free
            else:
                needing[domain] = group
        if not needing:
            return
        if self.hunter is None:
            result.notes.append("Hunter not configured: domain search skipped")
            return
        cached = self.store.cache_get(DOMAIN_SEARCH, needing)
        result.cache_hits += len(cached)
        step = self._hunter_budget("searches", self.settings.hunter_run_search_budget, result)
        fresh = self._paid_calls(
            [d for d in needing if d not in cached], step, self._search_domain, result
        )
        # Hunter charges a domain search only when it lists at least one address.
        result.searches_paid += sum(
            1 for out in fresh.values() if out is not None and out["listed"]
        )
        self.store.cache_put(
            DOMAIN_SEARCH, {d: v for d, v in fresh.items() if v is not None}, self.ttl
        )
        answers = {**cached, **{d: v for d, v in fresh.items() if v is not None}}
        for domain, group in needing.items():
            answer = answers.get(domain)
            for lead in group:
                state = states[id(lead)]
                if answer is None:
                    state.pending("emails", step.reason)
                    continue
                for found in answer["emails"]:
                    self._add_email(lead, found["value"], "hunter", found.get("confidence"))
                state.emails = "done"

    def _search_domain(self, domain: str) -> dict[str, Any]:
        assert self.hunter is not None
        search = self.hunter.domain_search(domain)
        return {
            "organization": search.organization,
            "pattern": search.pattern,
            "listed": len(search.emails),
            "emails": [asdict(e) for e in search.emails if not self.suppressed.email(e.value)],
        }

    # --- step 3: the verifier -----------------------------------------------------------

    def _verify(
        self, leads: Sequence[Lead], states: dict[int, _LeadState], result: EnrichResult
    ) -> None:
        per_lead = self.settings.hunter_verify_candidates
        wanted: dict[str, list[Lead]] = defaultdict(list)
        for lead in leads:
            for email in _ranked(lead.emails)[:per_lead]:
                if email.status == "unverified":
                    wanted[email.value].append(lead)
        if not wanted or self.hunter is None:
            return
        cached = self.store.cache_get(VERIFICATION, wanted)
        result.cache_hits += len(cached)
        # One budget for the run's verifier passes (free addresses, then Hunter's).
        if self._verify_step is None:
            self._verify_step = self._hunter_budget(
                "verifications", self.settings.hunter_run_verification_budget, result
            )
        step = self._verify_step
        fresh = self._paid_calls(
            [e for e in wanted if e not in cached], step, self._verify_email, result
        )
        removed = {email for email, outcome in fresh.items() if outcome == {"removed": True}}
        verdicts = {e: v for e, v in fresh.items() if v is not None and e not in removed}
        # Hunter charges a completed verification, not an "unknown" verdict.
        result.verifications_paid += sum(1 for v in verdicts.values() if v["status"] != "unknown")
        self.store.cache_put(VERIFICATION, verdicts, self.ttl)
        for email in removed:
            # The person asked Hunter to be removed: never store the address, anywhere.
            self.store.suppress("email", email, reason="hunter 451")
        if removed:
            self.suppressed = self.store.suppressions()
        verdicts.update(cached)
        for email, group in wanted.items():
            for lead in group:
                if email in removed:
                    _remove_email(lead, email)
                    result.suppressed_emails += 1
                elif email in verdicts:
                    for held in lead.emails:
                        if held.value == email:
                            held.status = verdicts[email]["status"]
                            result.emails_verified += 1
                else:
                    states[id(lead)].pending("emails", step.reason)

    def _verify_email(self, email: str) -> dict[str, Any]:
        assert self.hunter is not None
        try:
            verdict = self.hunter.verify(email)
        except HunterRemoved:
            return {"removed": True}
        return {"status": verdict.status, "score": verdict.score}

    # --- company data -------------------------------------------------------------------

    def _companies(
        self, by_domain: dict[str, list[Lead]], states: dict[int, _LeadState], result: EnrichResult
    ) -> None:
        if not by_domain:
            return
        if self.company is None:
            result.notes.append("no company-data provider configured: company step skipped")
            return
        kind = f"{COMPANY}-{self.company.name}"
        cached = self.store.cache_get(kind, by_domain)
        result.cache_hits += len(cached)
        step = _Step(budget=len(by_domain), what="company lookups")
        fresh = self._paid_calls(
            [d for d in by_domain if d not in cached], step, self._find_company, result
        )
        settled = {d: v for d, v in fresh.items() if v is not None and v["status"] != "pending"}
        result.company_lookups_paid += len(settled)
        self.store.cache_put(kind, settled, self.ttl)
        answers = {**cached, **{d: v for d, v in fresh.items() if v is not None}}
        for domain, group in by_domain.items():
            answer = answers.get(domain)
            for lead in group:
                state = states[id(lead)]
                if answer is None:
                    state.pending("company", step.reason)
                elif answer["status"] == "pending":
                    state.pending("company", "company data still being gathered by the provider")
                else:
                    state.company = "done"
                    if answer["status"] == "found":
                        state.facts = CompanyFacts.model_validate(answer["facts"])
        result.companies_found = sum(1 for s in states.values() if s.facts is not None)

    def _find_company(self, domain: str) -> dict[str, Any]:
        assert self.company is not None
        lookup: CompanyLookup = self.company.find(domain)
        return {
            "status": lookup.status,
            "facts": lookup.facts.model_dump() if lookup.facts else None,
        }

    # --- plumbing -----------------------------------------------------------------------

    def _hunter_budget(self, kind: str, run_budget: int, result: EnrichResult) -> _Step:
        """The paid calls this run may make: the run budget, capped by the credits left."""
        assert self.hunter is not None
        what = f"Hunter {kind}"
        try:
            credits: Credits = self.hunter.account()
        except HunterError as exc:
            return _Step(budget=0, stopped=_why_stopped(exc), what=what)
        left = credits.searches_left if kind == "searches" else credits.verifications_left
        if left <= 0:
            return _Step(budget=0, stopped=f"no Hunter {kind} left this month", what=what)
        if left < run_budget:
            result.notes.append(f"Hunter {kind}: {left} left this month (run budget {run_budget})")
        return _Step(budget=min(run_budget, left), what=what)

    def _paid_calls(
        self,
        keys: Iterable[str],
        step: _Step,
        call: Callable[[str], dict[str, Any]],
        result: EnrichResult,
    ) -> dict[str, dict[str, Any] | None]:
        """`call(key)` for each key, a few in flight, until the budget is spent or the
        provider is stopped; None for a key not (successfully) asked."""
        keys = list(keys)
        outcomes: dict[str, dict[str, Any] | None] = dict.fromkeys(keys)

        def one(key: str) -> None:
            if not step.take():
                return
            try:
                outcomes[key] = call(key)
            except (HunterQuotaExceeded, HunterAuthError, HunterUnavailable) as exc:
                step.stop(_why_stopped(exc))
            except CompanyProviderUnavailable as exc:
                step.stop(f"company data unavailable: {exc}")
            except CompanyProviderError as exc:
                step.stop(f"company data refused the request: {exc}")
            except HunterError as exc:  # this key only (e.g. a malformed domain): go on
                log.warning("%s", exc)

        # Each call in a copy of this thread's context: Prefect's settings (the API URL) live in
        # context variables, and a bare pool thread would otherwise start an ephemeral server.
        contexts = [copy_context() for _ in keys]
        with ThreadPoolExecutor(self.settings.enrichment_workers) as pool:
            list(pool.map(lambda context, key: context.run(one, key), contexts, keys))
        if step.stopped:
            result.notes.append(step.stopped)
        return outcomes

    def _drop_suppressed(self, leads: Iterable[Lead], result: EnrichResult) -> None:
        for lead in leads:
            for email in [e.value for e in lead.emails if self.suppressed.email(e.value)]:
                _remove_email(lead, email)
                result.suppressed_emails += 1
            if lead.enrichment and lead.enrichment.website:
                website = lead.enrichment.website
                website.emails = [e for e in website.emails if not self.suppressed.email(e)]

    def _add_email(self, lead: Lead, value: str, source: str, confidence: int | None) -> None:
        value = value.lower()
        if self.suppressed.email(value) or any(e.value == value for e in lead.emails):
            return
        lead.emails.append(
            Email(value=value, source=source, status="unverified", confidence=confidence)
        )

    def _finish(self, lead: Lead, state: _LeadState) -> None:
        best = _ranked(lead.emails)
        lead.best_email = best[0].value if best and best[0].status not in _UNDELIVERABLE else None
        enrichment = lead.enrichment or Enrichment()
        enrichment.emails = state.emails
        enrichment.company = state.company
        if state.facts is not None:
            enrichment.company_facts = state.facts
        enrichment.pending_reasons = [
            reason
            for step in ("emails", "company")
            if getattr(state, step) == "pending"
            for reason in state.reasons[step]
        ]
        steps = (state.emails, state.company)
        enrichment.status = (
            "pending" if "pending" in steps else "done" if "done" in steps else "skipped"
        )
        enrichment.updated_at = utcnow()
        lead.enrichment = enrichment


def _ranked(emails: Sequence[Email]) -> list[Email]:
    """Best first: verification status, then the free sources, then Hunter's confidence."""
    return sorted(
        emails,
        key=lambda e: (
            _STATUS_RANK.get(e.status, 5),
            0 if e.source in _FREE_SOURCES else 1,
            -(e.confidence or 0),
        ),
    )


def _deliverable(emails: Sequence[Email]) -> bool:
    return any(e.status not in _UNDELIVERABLE for e in emails)


def _remove_email(lead: Lead, value: str) -> None:
    lead.emails = [e for e in lead.emails if e.value != value]
    if lead.best_email == value:
        lead.best_email = None


def _why_stopped(exc: HunterError) -> str:
    if isinstance(exc, HunterQuotaExceeded):
        return "Hunter credits for this month are used up (429)"
    if isinstance(exc, HunterAuthError):
        return "Hunter rejected the API key (401)"
    if isinstance(exc, HunterUnavailable):
        return f"Hunter unavailable: {exc}"
    return f"Hunter error: {exc}"


class PrefectRateLimiter:
    """A limiter for the connectors: Prefect's global rate limit `name` (created by `leadflow
    up` at the provider's calls per second; without it Prefect lets calls through).

    Slots are taken `chunk` at a time and handed out one per call: the same average rate,
    with a fifth of the round trips to the Prefect server (which also serves the runs).
    """

    def __init__(self, name: str, calls_per_second: float, chunk: int = 5) -> None:
        self.name = name
        self.chunk = max(1, min(chunk, int(calls_per_second)))
        self.left = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            if self.left == 0:
                rate_limit(self.name, occupy=self.chunk, timeout_seconds=300)
                self.left = self.chunk
            self.left -= 1


def enrich_leads(
    leads: list[Lead],
    *,
    store: LeadStore,
    settings: Settings | None = None,
    hunter_limiter: Callable[[], None] | None = None,
    company_limiter: Callable[[], None] | None = None,
) -> EnrichResult:
    """Enrich a batch in place with the configured providers (see the module docstring)."""
    settings = settings or get_settings()
    hunter = HunterClient.from_settings(settings, limiter=hunter_limiter)
    company = company_provider_from_settings(settings, limiter=company_limiter)
    try:
        return Enricher(store, hunter, company, settings).run(leads)
    finally:
        if hunter is not None:
            hunter.close()
        if company is not None:
            company.close()


@task(name="enrich", cache_policy=NO_CACHE, persist_result=False)
def enrich_task(leads: list[Lead], run_id: str) -> EnrichResult:
    store = shared_store()
    settings = get_settings()
    result = enrich_leads(
        leads,
        store=store,
        settings=settings,
        hunter_limiter=PrefectRateLimiter(HUNTER_LIMIT, settings.hunter_requests_per_second),
        company_limiter=PrefectRateLimiter(COMPANY_LIMIT, settings.company_requests_per_second),
    )
    store.record_stage(run_id, STAGE, result.counts)
    logger = get_run_logger()
    logger.info("enriched: %s", result.counts)
    for note in result.notes:
        logger.warning("enrich: %s", note)
    return result
