"""`leadflow forget EMAIL|DOMAIN|LEAD_ID`: erase personal data everywhere Leadflow keeps it.

What is erased, for an email (or every email at a domain):
- the leads' `emails`, `best_email` and website-contact emails;
- the enrichment cache (Hunter domain-search answers listing it, its verification);
- quarantine payloads (the value is replaced by `[forgotten]`);
- the raw files under `LEADFLOW_HOME/runs/` (crawl feeds, logs, Data Docs): same replacement;
- Prefect artifacts whose text contains it (rewritten);
- the webhook delivery log and the CRM sync ledger (error texts, dead letters), and, in each
  CRM the ledger says has the lead, the email on the lead's records (cleared through the
  CRM's API; a merged lead's survivor too).
For a lead id: the lead document itself (its tombstones point nowhere afterwards), plus its
emails as above. The value then joins the suppression list, stored only as a hash, so no
later run stores it again: the enrich stage drops suppressed emails before load, quarantine
payloads and new crawl files are scrubbed as they are written.

The embedded MongoDB-wire server's own data files and the Prefect server's database are
databases, not files Leadflow writes: they are erased through their APIs, not byte by byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prefect.exceptions import PrefectException

from connectors.mongo import LeadStore, lead_from_document
from leadflow.settings import Settings
from models.suppression import (
    SuppressionKind,
    Suppressions,
    normalise_value,
    scrub_file,
    scrub_text,
    scrub_value,
    suppression_hash,
)

# Files under LEADFLOW_HOME that are databases, erased through their own APIs.
_DATABASE_DIRS = ("mongo", "prefect")


@dataclass
class ForgetReport:
    kind: SuppressionKind
    value_hash: str
    leads_changed: int = 0
    leads_deleted: int = 0
    cache_entries: int = 0
    quarantine_rows: int = 0
    files: list[str] = field(default_factory=list)
    artifacts: int = 0
    artifacts_error: str | None = None  # the Prefect server could not be reached
    webhook_entries: int = 0
    ledger_entries: int = 0
    crm_records_cleared: int = 0
    crm_errors: list[str] = field(default_factory=list)


class Forgetter:
    def __init__(self, store: LeadStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def forget(self, value: str, kind: SuppressionKind) -> ForgetReport:
        value = normalise_value(kind, value)
        report = ForgetReport(kind=kind, value_hash=suppression_hash(kind, value))
        emails: set[str] = set()
        affected: set[str] = set()
        if kind == "lead_id":
            emails |= self._delete_lead(value, report)
            affected.add(value)
        # Added first: whatever runs meanwhile already drops the value.
        self.store.suppress(kind, value, reason="forget")
        for email in emails:
            self.store.suppress("email", email, reason="forget (lead id)")
        suppressed = self.store.suppressions()
        extra = sorted({value, *emails}) if kind != "domain" else sorted(emails)
        affected |= self._leads(suppressed, kind, value, report)
        self._cache(suppressed, kind, value, report)
        self._quarantine(suppressed, extra, report)
        self._files(suppressed, extra, report)
        self._deliveries(kind, value, emails, report)
        self._crms(suppressed, extra, affected, report)
        try:
            report.artifacts = scrub_artifacts(self.settings, suppressed, extra)
        except (httpx.HTTPError, PrefectException, OSError) as exc:
            report.artifacts_error = f"{type(exc).__name__}: {exc}"
        return report

    # --- MongoDB ----------------------------------------------------------------------

    def _delete_lead(self, lead_id: str, report: ForgetReport) -> set[str]:
        doc = self.store.leads.find_one({"lead_id": lead_id})
        if doc is None:
            return set()
        lead = lead_from_document(doc)
        self.store.leads.delete_one({"lead_id": lead_id})
        report.leads_deleted += 1
        found = {e.value for e in lead.emails}
        if lead.enrichment and lead.enrichment.website:
            found |= set(lead.enrichment.website.emails)
        return found

    def _leads(
        self, suppressed: Suppressions, kind: SuppressionKind, value: str, report: ForgetReport
    ) -> set[str]:
        """Scrub the value from the leads; the ids of the leads that had it."""
        changed: set[str] = set()
        if kind == "domain":
            query: dict[str, Any] = {"domain": {"$in": [value]}}
        else:
            query = {}  # an email can sit in three places: check every lead that has one
        for doc in self.store.leads.find(query):
            lead = lead_from_document(doc)
            kept = [e for e in lead.emails if not suppressed.email(e.value)]
            website = lead.enrichment.website if lead.enrichment else None
            site_kept = [e for e in website.emails if not suppressed.email(e)] if website else []
            best = lead.best_email if not suppressed.email(lead.best_email) else None
            if (
                len(kept) == len(lead.emails)
                and best == lead.best_email
                and (website is None or len(site_kept) == len(website.emails))
            ):
                continue
            fields: dict[str, Any] = {
                "emails": [e.model_dump() for e in kept],
                "best_email": best,
            }
            if website is not None:
                fields["enrichment.website.emails"] = site_kept
            self.store.leads.update_one({"lead_id": lead.lead_id}, {"$set": fields})
            report.leads_changed += 1
            changed.add(str(lead.lead_id))
        return changed

    # --- deliveries: webhooks and CRMs -------------------------------------------------------

    def _deliveries(
        self, kind: SuppressionKind, value: str, emails: set[str], report: ForgetReport
    ) -> None:
        from connectors.webhooks import scrub_webhook_logs

        report.webhook_entries += scrub_webhook_logs(self.store.db, value, kind)
        for email in emails:  # a forgotten lead's emails appear in error texts by value
            report.webhook_entries += scrub_webhook_logs(self.store.db, email, "email")

    def _crms(
        self, suppressed: Suppressions, extra: list[str], affected: set[str], report: ForgetReport
    ) -> None:
        """Scrub the ledger's texts; clear the email in the CRM records of the affected leads
        (and of the survivors they were merged into, which hold the merged emails)."""
        from models.crm import CrmError, load_mapping
        from tasks.sync import LEDGER, build_clients

        ledger = self.store.db[LEDGER]
        for doc in ledger.find({"last_error": {"$ne": None}}):
            cleaned = scrub_text(str(doc["last_error"]), suppressed, extra)
            if cleaned != doc["last_error"]:
                ledger.update_one({"_id": doc["_id"]}, {"$set": {"last_error": cleaned}})
                report.ledger_entries += 1
        if not affected:
            return
        entries = list(ledger.find({"lead_id": {"$in": sorted(affected)}}))
        survivors = {e["merged_into"] for e in entries if e.get("merged_into")}
        if survivors:
            entries += list(ledger.find({"lead_id": {"$in": sorted(survivors)}}))
        targets = [e for e in entries if e.get("external_ids")]
        if not targets:
            return
        try:
            clients = build_clients(load_mapping(Path(self.settings.crm_mapping)), self.settings)
        except (CrmError, ValueError) as exc:
            report.crm_errors.append(f"CRM clients: {exc}")
            return
        for entry in targets:
            client = clients.get(entry["destination"])
            if client is None:
                report.crm_errors.append(f"{entry['destination']}: not configured; clear by hand")
                continue
            try:
                client.clear_email(dict(entry["external_ids"]))
                report.crm_records_cleared += 1
            except CrmError as exc:
                report.crm_errors.append(f"{entry['destination']} {entry['lead_id']}: {exc}")

    def _cache(
        self, suppressed: Suppressions, kind: SuppressionKind, value: str, report: ForgetReport
    ) -> None:
        for doc in self.store.cache.find({}):
            key, answer = str(doc.get("key", "")), doc.get("value") or {}
            if suppressed.email(key) or (kind == "domain" and key == value):
                self.store.cache.delete_one({"_id": doc["_id"]})
                report.cache_entries += 1
                continue
            listed = answer.get("emails") if isinstance(answer, dict) else None
            if isinstance(listed, list):
                kept = [e for e in listed if not suppressed.email(str(e.get("value")))]
                if len(kept) != len(listed):
                    self.store.cache.update_one(
                        {"_id": doc["_id"]}, {"$set": {"value": {**answer, "emails": kept}}}
                    )
                    report.cache_entries += 1

    def _quarantine(self, suppressed: Suppressions, extra: list[str], report: ForgetReport) -> None:
        collection = self.store.quarantine_collection
        for doc in collection.find({}):
            payload = doc.get("payload")
            cleaned = scrub_value(payload, suppressed, extra)
            if cleaned != payload:
                collection.update_one({"_id": doc["_id"]}, {"$set": {"payload": cleaned}})
                report.quarantine_rows += 1

    # --- files ------------------------------------------------------------------------

    def _files(self, suppressed: Suppressions, extra: list[str], report: ForgetReport) -> None:
        for path in _text_files(self.settings.home_dir):
            if scrub_file(path, suppressed, extra):
                report.files.append(str(path))


def _text_files(home: Path) -> Iterator[Path]:
    if not home.exists():
        return
    for path in sorted(home.rglob("*")):
        relative = path.relative_to(home).parts
        if path.is_file() and relative and relative[0] not in _DATABASE_DIRS:
            yield path


def scrub_artifacts(settings: Settings, suppressed: Suppressions, extra: list[str]) -> int:
    """Rewrite the Prefect artifacts whose data mentions a forgotten value."""
    from prefect.client.schemas.actions import ArtifactUpdate

    from leadflow.prefect_setup import client_for

    changed = 0
    with client_for(settings) as client:
        offset = 0
        while True:
            page = client.read_artifacts(limit=200, offset=offset)
            if not page:
                break
            for artifact in page:
                text = (
                    artifact.data
                    if isinstance(artifact.data, str)
                    else json.dumps(artifact.data, default=str)
                )
                cleaned = scrub_text(text, suppressed, extra)
                if cleaned != text:
                    data: Any = cleaned if isinstance(artifact.data, str) else json.loads(cleaned)
                    client.update_artifact(artifact.id, ArtifactUpdate(data=data))
                    changed += 1
            offset += len(page)
    return changed
