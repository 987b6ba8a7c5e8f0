"""Stage `contacts`: crawl each lead's own website for emails, phones and social profiles.

Runs after dedup and before enrichment; what it finds is the first step of the enrichment
waterfall (website emails -> Hunter -> verifier). One `website_contacts` crawl subprocess per
batch, launched like `tasks/scrape` (same environment, feed and stats file). The batch's
leads are grouped by website first, so chain branches sharing a site cost one visit and share
its result.

What a lead gets:
- each found email in `lead.emails` as `Email(value, source="website", status="unverified")`
  unless it is already there (whatever its source);
- `best_email`, if it had none: the first found address on the lead's own domain, else the
  first found at all;
- `enrichment.website`: `WebsiteContacts` (emails, phones in E.164, socials, pages, error).

A site that cannot be crawled only sets its leads' `error`. The stage fails (`CrawlFailed`)
only when the crawl yields nothing at all for a non-empty input, which means the crawl
itself is broken (bad settings, proxy down), not the sites.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.mongo import shared_store
from leadflow.settings import Settings, get_settings
from models.lead import Email, Enrichment, Lead, WebsiteContacts
from spiders.contacts.extract import site_key
from tasks.normalize import parse_phone
from tasks.scrape import (
    CrawlFailed,
    failure_summary,
    log_tail,
    read_items,
    run_crawl_process,
    scrub_run_files,
)

STAGE = "contacts"
SPIDER = "website_contacts"
EMAIL_SOURCE = "website"
# Share of the subprocess time limit after which the spider closes itself, so it still
# writes its stats and the items of every finished site instead of being killed.
_GRACEFUL_SHARE = 0.9


@dataclass
class ContactsResult:
    leads: list[Lead]
    run_dir: Path | None = None
    sites: int = 0
    sites_failed: int = 0
    emails_found: int = 0
    leads_with_email: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "sites": self.sites,
            "sites_failed": self.sites_failed,
            "emails_found": self.emails_found,
            "leads_with_email": self.leads_with_email,
        }

    @property
    def items_path(self) -> Path | None:
        return self.run_dir / f"{SPIDER}.jsonl" if self.run_dir else None


def group_by_site(leads: list[Lead]) -> dict[str, list[Lead]]:
    """Leads with a website, by site, in batch order; tombstones of merges are left out."""
    sites: dict[str, list[Lead]] = {}
    for lead in leads:
        if lead.website and lead.merged_into is None:
            sites.setdefault(site_key(lead.website), []).append(lead)
    return sites


def _input_id(index: int, group: list[Lead]) -> str:
    # The first lead's id names the site in the crawl; a lead not stored yet has none.
    return group[0].lead_id or f"site-{index}"


def contacts_command(
    input_path: Path, *, items_path: Path, stats_path: Path, log_path: Path, settings: Settings
) -> list[str]:
    """The crawl command: caps and time limits come from `settings`, the rest from the env."""
    graceful = max(1, int(settings.contacts_crawl_timeout * _GRACEFUL_SHARE))
    return [
        sys.executable, "-m", "scrapy", "crawl", SPIDER, "-a", f"input={input_path}",
        "-O", f"{items_path}:jsonlines",
        "-s", f"LEADFLOW_STATS_FILE={stats_path}",
        "-s", f"LOG_FILE={log_path}",
        "-s", f"LEADFLOW_CONTACTS_MAX_PAGES={settings.contacts_max_pages_per_site}",
        "-s", f"LEADFLOW_CONTACTS_SITE_TIME_LIMIT={settings.contacts_site_time_limit}",
        "-s", f"CLOSESPIDER_TIMEOUT={graceful}",
    ]  # fmt: skip


def _best_email(lead: Lead, found: list[str]) -> str | None:
    domain = (lead.domain or "").lower()
    if domain:
        for email in found:
            host = email.rsplit("@", 1)[-1]
            if host == domain or host.endswith("." + domain):
                return email
    return found[0] if found else None


def _phones(lead: Lead, shown: list[str], default_region: str) -> list[str]:
    """E.164 numbers; what does not parse as a valid number in the lead's country is dropped
    (text patterns on a web page catch the odd order or reference number)."""
    region = lead.address.country or default_region
    out: list[str] = []
    for raw in shown:
        number = parse_phone(raw, region)
        if number and number not in out:
            out.append(number)
    return out


def merge_contacts(lead: Lead, item: dict[str, Any], default_region: str) -> None:
    """Apply one crawl item to a lead (see the module docstring)."""
    emails = [str(e).lower() for e in item.get("emails") or []]
    known = {email.value.lower() for email in lead.emails}
    for value in emails:
        if value not in known:
            lead.emails.append(Email(value=value, source=EMAIL_SOURCE, status="unverified"))
            known.add(value)
    if not lead.best_email:
        lead.best_email = _best_email(lead, emails)
    pages = item.get("pages")
    lead.enrichment = lead.enrichment or Enrichment()
    lead.enrichment.website = WebsiteContacts(
        emails=emails,
        phones=_phones(lead, list(item.get("phones") or []), default_region),
        socials={str(k): str(v) for k, v in dict(item.get("socials") or {}).items()},
        pages=len(pages) if isinstance(pages, list) else 0,
        error=item.get("error"),
    )


def find_contacts(
    leads: list[Lead], run_id: str, settings: Settings | None = None
) -> ContactsResult:
    """Crawl the batch's websites and merge what they show into the leads (in place)."""
    settings = settings or get_settings()
    result = ContactsResult(leads=leads)
    sites = group_by_site(leads)
    result.sites = len(sites)
    if not sites:
        result.leads_with_email = sum(1 for lead in leads if lead.emails)
        return result

    run_dir = settings.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    result.run_dir = run_dir
    input_path = run_dir / f"{SPIDER}.input.jsonl"
    items_path, stats_path = run_dir / f"{SPIDER}.jsonl", run_dir / f"{SPIDER}.stats.json"
    log_path = run_dir / f"{SPIDER}.log"
    by_id: dict[str, list[Lead]] = {}
    with input_path.open("w", encoding="utf-8") as out:
        for index, group in enumerate(sites.values(), 1):
            site_id = _input_id(index, group)
            by_id[site_id] = group
            website = group[0].website
            out.write(json.dumps({"lead_id": site_id, "website": website}) + "\n")

    command = contacts_command(
        input_path, items_path=items_path, stats_path=stats_path, log_path=log_path,
        settings=settings,
    )  # fmt: skip
    timed_out = False
    completed: subprocess.CompletedProcess[str] | None = None
    try:
        completed = run_crawl_process(command, settings.contacts_crawl_timeout)
    except subprocess.TimeoutExpired:
        # Killed: keep the sites it finished; the others get an error below.
        timed_out = True

    if stats_path.exists():
        result.stats = json.loads(stats_path.read_text(encoding="utf-8"))
    # A line cut by a kill is not an item (read_items marks it with parse_error).
    items = [r for r in read_items(items_path, SPIDER) if "parse_error" not in r]
    if not items:
        detail = log_tail(log_path) or ((completed.stderr or "") if completed else "")[-1000:]
        how = (
            f"was stopped at its time limit of {settings.contacts_crawl_timeout:g}s "
            "(LEADFLOW_CONTACTS_CRAWL_TIMEOUT)"
            if timed_out
            else f"exited with code {completed.returncode if completed else '?'}"
        )
        raise CrawlFailed(
            f"crawl of {len(sites)} websites produced no items: it {how}; "
            f"{failure_summary(result.stats)}. Log: {log_path}" + (f"\n{detail}" if detail else "")
        )

    by_site_item = {str(item.get("lead_id")): item for item in items}
    found: set[str] = set()
    unfinished = (
        "the crawl stopped at its time limit before this site was done"
        if timed_out or result.stats.get("finish_reason") == "closespider_timeout"
        else "the crawl returned no result for this site"
    )
    for site_id, group in by_id.items():
        item = by_site_item.get(site_id) or {"error": unfinished}
        if item.get("error"):
            result.sites_failed += 1
        found.update(str(e).lower() for e in item.get("emails") or [])
        for lead in group:
            merge_contacts(lead, item, settings.default_region)
    result.emails_found = len(found)
    result.leads_with_email = sum(1 for lead in leads if lead.emails)
    return result


@task(name="contacts", cache_policy=NO_CACHE, persist_result=False)
def contacts_task(leads: list[Lead], run_id: str) -> list[Lead]:
    """Find emails, phones and social profiles on the leads' websites."""
    result = find_contacts(leads, run_id)
    store = shared_store()
    scrub_run_files(run_id, store.suppressions())
    store.record_stage(run_id, STAGE, result.counts)
    get_run_logger().info(
        "%s (items in %s)", result.counts, result.items_path or "no websites to crawl"
    )
    return result.leads
