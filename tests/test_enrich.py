"""Stage enrich against the Hunter and company-data sandboxes over HTTP and MongoDB over the wire.

The waterfall (website emails first, Hunter second, the verifier on the best candidates), the
per-domain cache counted by the sandbox's own `/account`, pending on zero credits and on an
outage (finished by the next run), 451 -> suppression, and a suppressed domain never asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from pymongo.database import Database

from connectors.mongo import LeadStore
from leadflow.settings import Settings
from models.lead import Email, Lead, SourceRecord, new_lead_id
from sandbox.company import CompanySandbox, CompanySandboxConfig, company_app
from sandbox.directory.generate import Directory, generate
from sandbox.hunter import HunterSandbox, HunterSandboxConfig, hunter_app
from tasks.enrich import enrich_leads
from tests.conftest import RunningServices, leadflow_env
from tests.servers import serve_in_thread

SEED = 42


@pytest.fixture(scope="module")
def world() -> Directory:
    return generate(seed=SEED, n_businesses=120)


@pytest.fixture
def providers(world: Directory) -> Iterator[tuple[str, HunterSandbox, CompanySandbox]]:
    """Fresh Hunter and company stand-ins (own usage and state) served on one address."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    hunter = HunterSandbox(
        HunterSandboxConfig(seed=SEED, verifier_pending_seconds=0.3, requests_per_second=100,
                            requests_per_minute=6000, verifier_requests_per_second=100,
                            verifier_requests_per_minute=6000),
        world,
    )  # fmt: skip
    company = CompanySandbox(
        CompanySandboxConfig(seed=SEED, not_ready_share=0.0, requests_per_minute=6000), world
    )
    app = Starlette(
        routes=[
            Mount("/hunter/v2", app=hunter_app(hunter)),
            Mount("/company", app=company_app(company)),
        ]
    )
    with serve_in_thread(app) as url:
        yield url, hunter, company


@pytest.fixture
def store(services: RunningServices, mongo_db: Database) -> Iterator[LeadStore]:
    client: MongoClient = MongoClient(services.mongo_url, tz_aware=True)
    store = LeadStore(client, mongo_db.name)
    store.create_indexes()
    yield store
    client.close()


def settings_for(url: str, **overrides: Any) -> Settings:
    base = {
        "sandbox": True,
        "hunter_url": f"{url}/hunter/v2",
        "company_url": f"{url}/company",
        "hunter_verify_max_wait": 5.0,
        "hunter_verify_candidates": 1,
        "enrichment_workers": 4,
    }
    return Settings(**{**base, **overrides})


def leads_of(world: Directory, count: int = 12) -> list[Lead]:
    leads = []
    for domain, site in list(world.websites.items())[:count]:
        leads.append(
            Lead(
                lead_id=new_lead_id(),
                name=site.name,
                website=f"http://{domain}/",
                domain=domain,
                sources=[SourceRecord(source="directory", source_id=domain)],
            )
        )
    return leads


def account(url: str) -> dict[str, Any]:
    params = {"api_key": "sandbox-hunter-key"}
    return httpx.get(f"{url}/hunter/v2/account", params=params).json()["data"]["requests"]


def paid(url: str) -> tuple[int, int]:
    used = account(url)
    return used["searches"]["used"], used["verifications"]["used"]


def test_waterfall_website_first_then_hunter_then_verifier(
    world: Directory, providers: tuple[str, HunterSandbox, CompanySandbox], store: LeadStore
) -> None:
    url, hunter, _ = providers
    leads = leads_of(world)
    on_site = leads[0]
    site_email = f"hello@{on_site.domain}"
    on_site.emails = [Email(value=site_email, source="website")]

    result = enrich_leads(leads, store=store, settings=settings_for(url))

    # The lead whose website showed an address: no Hunter search for its domain.
    state = httpx.get(f"{url}/hunter/v2/__sandbox/state").json()
    searched = result.searches_paid
    assert searched == paid(url)[0] > 0
    assert all(e.source == "website" for e in on_site.emails)
    assert on_site.best_email == site_email or on_site.best_email is None
    assert on_site.enrichment is not None and on_site.enrichment.emails == "done"

    known = {lead.domain: hunter.truth(lead.domain or "") for lead in leads[1:] if lead.domain}
    with_hunter_emails = [
        lead for lead in leads[1:] if any(e.source == "hunter" for e in lead.emails)
    ]
    assert with_hunter_emails, state
    for lead in with_hunter_emails:
        truth = known[lead.domain]
        assert truth is not None
        listed = {c["email"] for c in truth["contacts"] if not c["removed"]}
        removed = {c["email"] for c in truth["contacts"] if c["removed"]}
        values = {e.value for e in lead.emails}
        assert values <= listed and not values & removed
        assert all(e.confidence is not None for e in lead.emails)
        # The best candidate went to the verifier: its status is Hunter's verdict.
        assert any(e.status != "unverified" for e in lead.emails)
        if lead.best_email:
            best = next(e for e in lead.emails if e.value == lead.best_email)
            assert best.status not in ("invalid", "disposable")
    assert result.verifications_paid == paid(url)[1] > 0
    assert result.companies_found > 0
    with_facts = [lead for lead in leads if lead.enrichment and lead.enrichment.company_facts]
    assert with_facts and all(lead.enrichment.company == "done" for lead in with_facts)  # type: ignore[union-attr]
    assert all(lead.enrichment and lead.enrichment.status == "done" for lead in leads)


def test_second_run_pays_nothing_for_the_same_domains(
    world: Directory, providers: tuple[str, HunterSandbox, CompanySandbox], store: LeadStore
) -> None:
    url, _, company = providers
    settings = settings_for(url)
    enrich_leads(leads_of(world), store=store, settings=settings)
    searches, verifications = paid(url)
    companies = company.state()["paid_calls"]

    again = enrich_leads(leads_of(world), store=store, settings=settings)

    assert paid(url) == (searches, verifications)  # the sandbox's own count
    assert company.state()["paid_calls"] == companies
    assert again.searches_paid == again.verifications_paid == again.company_lookups_paid == 0
    assert again.cache_hits > 0
    assert all(lead.enrichment and lead.enrichment.status == "done" for lead in again.leads)


def test_zero_credits_marks_pending_and_the_next_run_finishes(
    world: Directory, providers: tuple[str, HunterSandbox, CompanySandbox], store: LeadStore
) -> None:
    url, _, _ = providers
    settings = settings_for(url)
    httpx.post(f"{url}/hunter/v2/__sandbox/state", json={"searches_available": 0})
    first = enrich_leads(leads_of(world), store=store, settings=settings)
    assert paid(url) == (0, 0)
    pending = [
        lead for lead in first.leads if lead.enrichment and lead.enrichment.emails == "pending"
    ]
    assert pending and all(
        any("no Hunter searches left" in r for r in lead.enrichment.pending_reasons)  # type: ignore[union-attr]
        for lead in pending
    )
    assert all(lead.enrichment and lead.enrichment.status == "pending" for lead in pending)

    httpx.post(f"{url}/hunter/v2/__sandbox/state", json={"searches_available": 5000})
    second = enrich_leads(pending, store=store, settings=settings)
    assert second.searches_paid > 0
    assert all(lead.enrichment and lead.enrichment.emails == "done" for lead in second.leads)


def test_outage_marks_pending_then_completes(
    world: Directory, providers: tuple[str, HunterSandbox, CompanySandbox], store: LeadStore
) -> None:
    url, _, _ = providers
    settings = settings_for(url)
    for mount in ("hunter/v2", "company"):
        httpx.post(f"{url}/{mount}/__sandbox/state", json={"down": True})
    first = enrich_leads(leads_of(world), store=store, settings=settings)
    assert all(lead.enrichment and lead.enrichment.status == "pending" for lead in first.leads)
    reasons = {r for lead in first.leads for r in lead.enrichment.pending_reasons}  # type: ignore[union-attr]
    assert any("Hunter" in r for r in reasons) and any("company data" in r for r in reasons)
    assert any("Hunter" in note for note in first.notes)

    for mount in ("hunter/v2", "company"):
        httpx.post(f"{url}/{mount}/__sandbox/state", json={"down": False})
    second = enrich_leads(first.leads, store=store, settings=settings)
    assert all(lead.enrichment and lead.enrichment.status == "done" for lead in second.leads)
    assert all(lead.enrichment.pending_reasons == [] for lead in second.leads)  # type: ignore[union-attr]


def test_a_removed_person_is_suppressed_and_never_stored(
    world: Directory, providers: tuple[str, HunterSandbox, CompanySandbox], store: LeadStore
) -> None:
    url, hunter, _ = providers
    removed = next(
        (domain, c["email"])
        for domain in world.websites
        if (truth := hunter.truth(domain))
        for c in truth["contacts"]
        if c["removed"]
    )
    domain, email = removed
    lead = Lead(
        lead_id=new_lead_id(), name="Removed Person's Business", domain=domain,
        website=f"http://{domain}/", emails=[Email(value=email, source="website")],
    )  # fmt: skip
    result = enrich_leads([lead], store=store, settings=settings_for(url))
    assert email not in {e.value for e in lead.emails} and lead.best_email != email
    assert result.suppressed_emails == 1
    assert store.suppressions().email(email)
    # Only its hash is kept.
    assert store.suppression.count_documents({}) >= 1
    assert not list(store.suppression.find({"_id": email}))

    # A later batch that finds it again (the website still shows it) drops it before any call.
    again = Lead(lead_id=new_lead_id(), name="Again", domain=domain, website=f"http://{domain}/",
                 emails=[Email(value=email, source="website")])  # fmt: skip
    before = paid(url)
    enrich_leads([again], store=store, settings=settings_for(url))
    assert email not in {e.value for e in again.emails}
    assert paid(url)[1] == before[1]


def test_a_suppressed_domain_is_never_asked(
    world: Directory, providers: tuple[str, HunterSandbox, CompanySandbox], store: LeadStore
) -> None:
    url, _, company = providers
    lead = leads_of(world, 1)[0]
    assert lead.domain
    store.suppress("domain", lead.domain, reason="test")
    lead.emails = [Email(value=f"info@{lead.domain}", source="website")]
    calls_before = company.state()["paid_calls"], paid(url)
    result = enrich_leads([lead], store=store, settings=settings_for(url))
    assert result.domains == 0
    assert (company.state()["paid_calls"], paid(url)) == calls_before
    assert lead.emails == [] and lead.best_email is None
    assert lead.enrichment is not None and lead.enrichment.status == "skipped"


def test_no_provider_configured_skips_and_says_so(world: Directory, store: LeadStore) -> None:
    settings = Settings(sandbox=False, hunter_api_key=None, company_api_key=None)
    result = enrich_leads(leads_of(world, 3), store=store, settings=settings)
    assert any("Hunter not configured" in n for n in result.notes)
    assert any("no company-data provider" in n for n in result.notes)
    assert all(lead.enrichment and lead.enrichment.status == "skipped" for lead in result.leads)


@pytest.fixture
def own_db(services: RunningServices) -> Iterator[LeadStore]:
    """The flows' store (get_settings) pointed at this test's own database."""
    import os

    with leadflow_env(LEADFLOW_MONGODB_DB=f"enrich_pending_{os.getpid()}") as settings:
        store = LeadStore.from_settings(settings)
        store.create_indexes()
        yield store
        store.client.drop_database(store.db.name)
        store.close()


def test_enrich_pending_flow_finishes_what_an_outage_left(own_db: LeadStore) -> None:
    from flows.enrich_pending import enrich_pending
    from leadflow.settings import get_settings
    from models.lead import Enrichment

    settings = get_settings()
    world = generate(seed=settings.sandbox_seed, n_businesses=settings.sandbox_businesses)
    leads = leads_of(world, 6)
    for lead in leads:
        lead.enrichment = Enrichment(status="pending", pending_reasons=["Hunter unavailable"])
    own_db.upsert_leads(leads)
    done_already = leads_of(world, 8)[7]
    done_already.enrichment = Enrichment(status="done", emails="done")
    own_db.upsert_leads([done_already])

    state = enrich_pending(limit=100, return_state=True)

    assert state.is_completed(), state.message
    assert state.result()["picked_up"] == 6  # the finished lead was not picked up
    stored = {lead.lead_id: lead for lead in own_db.leads_by_ids(lead.lead_id for lead in leads)}
    for lead in leads:
        again = stored[lead.lead_id]
        assert again.enrichment is not None and again.enrichment.emails == "done", again.name
        # Done, unless the company provider is still gathering that company (it answers 202
        # for a share of first asks): then that, and only that, is why it is pending.
        if again.enrichment.status != "done":
            assert again.enrichment.company == "pending"
            assert again.enrichment.pending_reasons == [
                "company data still being gathered by the provider"
            ]
        assert again.score is not None  # re-scored with what was found


def test_run_budgets_cap_paid_calls_and_leave_the_rest_pending(
    world: Directory, providers: tuple[str, HunterSandbox, CompanySandbox], store: LeadStore
) -> None:
    url, _, _ = providers
    settings = settings_for(url, hunter_run_search_budget=2, hunter_run_verification_budget=3)
    result = enrich_leads(leads_of(world), store=store, settings=settings)
    searches, verifications = paid(url)
    assert searches <= 2 and verifications <= 3  # the sandbox's own count, over both passes
    pending = [
        lead for lead in result.leads if lead.enrichment and lead.enrichment.emails == "pending"
    ]
    assert pending
    assert all(
        any("budget" in reason for reason in lead.enrichment.pending_reasons)  # type: ignore[union-attr]
        for lead in pending
    )
