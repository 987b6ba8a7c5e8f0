"""Stage `contacts` end to end: a sandbox subprocess serving the demo businesses' websites,
the `website_contacts` crawl launched by `find_contacts` exactly as the pipeline does, and the
leads compared with the generator's planted emails (`emails.json`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from leadflow.settings import Settings
from models.lead import Email, Lead, WebsiteContacts
from sandbox.directory.generate import Directory, generate
from spiders.contacts.extract import is_placeholder_email, valid_email
from tasks import contacts as contacts_stage
from tasks.contacts import find_contacts
from tasks.normalize import parse_phone
from tasks.scrape import CrawlFailed
from tests.servers import sandbox_process

REPO = Path(__file__).resolve().parent.parent
SEED, BUSINESSES = 42, 60
GHOST = "http://no-such-business.test/"  # a host the sandbox does not serve: 404


@pytest.fixture(scope="module")
def world() -> Directory:
    return generate(SEED, BUSINESSES)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """(port, data dir) of a sandbox server, as tests/test_directory_spider.py starts it."""
    data = tmp_path_factory.mktemp("sandbox")
    with sandbox_process(
        data, seed=SEED, businesses=BUSINESSES, args=["--latency-ms", "0"]
    ) as port:
        yield port, data


@pytest.fixture
def settings(
    sandbox: tuple[int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings for this process and, through the environment, for the crawl subprocess."""
    for key in ("LEADFLOW_PROXY_URLS", "LEADFLOW_HOST", "LEADFLOW_CRAWL_OBEY_ROBOTS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LEADFLOW_SANDBOX", "1")
    monkeypatch.setenv("LEADFLOW_SANDBOX_PORT", str(sandbox[0]))
    monkeypatch.setenv("LEADFLOW_HOME", str(tmp_path / "home"))
    return Settings()


def leads_of(world: Directory) -> list[Lead]:
    """A lead per business with a website, as normalise + dedup leave them."""
    return [
        Lead(
            lead_id=f"L{b.entity_id}",
            name=b.name,
            website=b.website,
            domain=b.domain,
            address={"country": b.country},
            phone=parse_phone(b.phone, b.country),
        )
        for b in world.businesses
        if b.website
    ]


def test_every_planted_email_is_found_and_nothing_else(
    world: Directory, sandbox: tuple[int, Path], settings: Settings
) -> None:
    planted: dict[str, list[str]] = json.loads((sandbox[1] / "emails.json").read_text())
    leads = leads_of(world)
    known = next(lead for lead in leads if planted[lead.domain or ""])
    # An email the lead already had (e.g. from the directory) is not added twice.
    known.emails = [Email(value=planted[known.domain or ""][0].upper(), source="directory")]
    ghost = Lead(lead_id="Lghost", name="Ghost Business", website=GHOST)
    offline = Lead(lead_id="Loffline", name="No Website Bakery")
    batch = [*leads, ghost, offline]

    result = find_contacts(batch, "run-contacts", settings)

    assert result.leads is batch
    domains = {lead.domain for lead in leads}
    assert result.sites == len(domains) + 1  # chain branches share one site
    assert result.sites_failed == 1
    assert result.emails_found == sum(len(planted[d]) for d in domains if d)
    assert result.leads_with_email == sum(1 for lead in leads if planted[lead.domain or ""])

    styles: set[str] = set()
    for lead in leads:
        assert lead.domain is not None and lead.enrichment is not None
        site = world.websites[lead.domain]
        contacts = lead.enrichment.website
        assert contacts is not None
        # Exactly the planted addresses: every obfuscation decoded, no decoy taken.
        assert sorted(contacts.emails) == sorted(planted[lead.domain]), site.email_styles
        assert contacts.error is None
        assert 1 <= contacts.pages <= settings.contacts_max_pages_per_site
        assert sorted(contacts.socials.values()) == sorted(site.socials)
        assert lead.phone in contacts.phones  # the branch's tel: link on /contact
        values = [email.value.lower() for email in lead.emails]
        assert sorted(set(values)) == sorted(values) == sorted(planted[lead.domain])
        if planted[lead.domain]:
            assert lead.best_email in planted[lead.domain]
        else:
            assert lead.best_email is None
        styles.update(site.email_styles)
    assert styles == {"mailto", "text", "brackets", "parens", "cfemail"}
    assert known.emails[0].source == "directory"
    assert all(e.source == "website" and e.status == "unverified" for e in known.emails[1:])

    found = [
        e
        for lead in batch
        if lead.enrichment and lead.enrichment.website
        for e in lead.enrichment.website.emails
    ]
    assert found and all(valid_email(e) and not is_placeholder_email(e) for e in found)
    assert not any(e.rsplit(".", 1)[-1] in ("png", "jpg", "gif", "webp", "svg") for e in found)

    assert ghost.enrichment is not None
    assert ghost.enrichment.website == WebsiteContacts(pages=0, error="HTTP 404")
    assert ghost.emails == [] and ghost.best_email is None
    assert offline.enrichment is None

    # The crawl's own record: one item per site, the stats file the extension writes.
    assert result.items_path is not None
    items = [json.loads(line) for line in result.items_path.read_text().splitlines()]
    assert len(items) == result.sites
    assert [i for i in items if i["error"]] == [
        {"source": "website_contacts", "lead_id": "Lghost", "website": GHOST, "emails": [],
         "phones": [], "socials": {}, "pages": [], "error": "HTTP 404"}
    ]  # fmt: skip
    assert result.stats["finish_reason"] == "finished"
    assert result.stats["leadflow/contacts/sites_failed"] == 1
    assert result.stats["robotstxt/request_count"] == result.sites  # robots.txt obeyed, per host


def test_page_cap_and_site_time_limit(
    world: Directory, sandbox: tuple[int, Path], settings: Settings
) -> None:
    leads = leads_of(world)
    with_about = {d for d, site in world.websites.items() if site.has_about}
    assert with_about  # those sites link two contact-like pages: the cap must bite

    capped = settings.model_copy(update={"contacts_max_pages_per_site": 2})
    result = find_contacts(leads, "run-capped", capped)
    assert result.sites_failed == 0
    assert all(
        lead.enrichment and lead.enrichment.website and lead.enrichment.website.pages == 2
        for lead in leads
    )

    # A site whose time is up before its home page is read gets no further requests.
    leads = leads_of(world)
    hurried = settings.model_copy(update={"contacts_site_time_limit": 0.001})
    result = find_contacts(leads, "run-hurried", hurried)
    assert result.sites_failed == 0
    assert all(
        lead.enrichment and lead.enrichment.website and lead.enrichment.website.pages == 1
        for lead in leads
    )
    assert result.stats["leadflow/contacts/sites_out_of_time"] == result.sites


def test_a_crawl_that_yields_nothing_fails_clearly(
    world: Directory, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crawl that cannot even start (here: an unknown spider) writes no items at all.
    original = contacts_stage.contacts_command

    def broken(*args: object, **kwargs: object) -> list[str]:
        command = original(*args, **kwargs)  # type: ignore[arg-type]
        return [part.replace("website_contacts", "no_such_spider", 1) for part in command]

    monkeypatch.setattr(contacts_stage, "contacts_command", broken)
    with pytest.raises(CrawlFailed, match=r"crawl of 3 websites produced no items") as failed:
        find_contacts(leads_of(world)[:3], "run-broken", settings)
    assert "no_such_spider" in str(failed.value)  # the reason, from the crawl's output


def test_no_websites_no_crawl(settings: Settings) -> None:
    lead = Lead(name="Offline Cafe")
    result = find_contacts([lead], "run-none", settings)
    assert result.counts == {
        "sites": 0,
        "sites_failed": 0,
        "emails_found": 0,
        "leads_with_email": 0,
    }
    assert result.items_path is None and lead.enrichment is None
