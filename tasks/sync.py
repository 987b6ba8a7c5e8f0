"""Stage `sync`: send new and changed leads to each configured CRM, exactly once.

The sync ledger (MongoDB `crm_sync`, one document per destination and lead) holds what each
CRM has: the external ids, the hash of the mapped payload last delivered, the status
(`synced`, `pending`, `failed`, `dead`, `merged`), consecutive attempts and the last error.

- Only what changed is sent: a lead whose mapped payload hashes the same as the ledger's is
  skipped, so a change the mapping does not send (e.g. `last_seen`) sends nothing.
- Safe at any point: the ledger is marked `pending` before the CRM call, and every connector
  writes by the lead_id external id (or finds by it before creating), so a crash after the
  CRM wrote but before the ledger did repeats the write as an update, never a duplicate.
- Failures retry with exponential backoff (`next_attempt_ts`), in later runs or in the
  `crm-sync` deployment; after `LEADFLOW_CRM_MAX_ATTEMPTS` failures, or at once when the CRM
  refuses the record's data, the entry is `dead` with the reason (`leadflow crm dead`).
- A throttled CRM (REQUEST_LIMIT_EXCEEDED, 429 past its retries) stops for this run; the rest
  stays `pending`, not counted as failures.
- When dedup merges two stored leads that were both synced, the tombstone's CRM records are
  merged into the survivor's where the CRM has a merge call, else marked `merged_into`.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.collection import Collection

from connectors.mongo import shared_store
from leadflow.settings import Settings, get_settings
from models.crm import (
    CrmClient,
    CrmError,
    CrmMapping,
    Destination,
    MappedLead,
    SyncOutcome,
    load_mapping,
    map_lead,
)
from models.lead import Lead

STAGE = "sync"
LEDGER = "crm_sync"
LEDGER_INDEXES = (
    IndexModel([("destination", ASCENDING), ("status", ASCENDING)], name="destination_status"),
    IndexModel([("lead_id", ASCENDING)], name="lead_id"),
)
log = logging.getLogger("leadflow.sync")


def ledger_id(destination: str, lead_id: str) -> str:
    return f"{destination}:{lead_id}"


@dataclass
class SyncCounts:
    considered: int = 0
    unchanged: int = 0
    sent: int = 0
    created: int = 0
    updated: int = 0
    failed: int = 0
    dead: int = 0
    throttled: int = 0
    merged: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "errors"} | {
            "errors": self.errors[:5]
        }


class Ledger:
    """The `crm_sync` collection."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection

    def ensure_indexes(self) -> None:
        self.collection.create_indexes(list(LEDGER_INDEXES))

    def entries(self, destination: str, lead_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = [ledger_id(destination, i) for i in lead_ids]
        if not ids:
            return {}
        return {d["lead_id"]: d for d in self.collection.find({"_id": {"$in": ids}})}

    def due(self, destination: str, now: float, limit: int) -> list[str]:
        """Lead ids whose entry is pending, or failed and past its backoff."""
        cursor = self.collection.find(
            {"destination": destination, "status": {"$in": ["pending", "failed"]}},
            {"lead_id": 1, "status": 1, "next_attempt_ts": 1},
        ).limit(limit)
        return [
            d["lead_id"]
            for d in cursor
            if d["status"] == "pending" or float(d.get("next_attempt_ts") or 0) <= now
        ]

    def counts(self) -> dict[tuple[str, str], int]:
        """Entries per (destination, status)."""
        # Grouped per destination on one field: a compound `$group` key is not understood by
        # every MongoDB-wire server (the embedded one included).
        return {
            (destination, row["_id"]): row["n"]
            for destination in sorted(self.collection.distinct("destination"))
            for row in self.collection.aggregate(
                [
                    {"$match": {"destination": destination}},
                    {"$group": {"_id": "$status", "n": {"$sum": 1}}},
                ]
            )
        }

    def dead(self, destination: str | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"status": "dead"}
        if destination:
            query["destination"] = destination
        return list(self.collection.find(query).sort("_id", 1))

    def write(self, operations: list[UpdateOne]) -> None:
        if operations:
            self.collection.bulk_write(operations, ordered=False)


def _entry_update(destination: str, lead_id: str, fields: dict[str, Any]) -> UpdateOne:
    return UpdateOne(
        {"_id": ledger_id(destination, lead_id)},
        {
            "$set": fields,
            "$setOnInsert": {"destination": destination, "lead_id": lead_id},
            # Server time: the embedded server would store a `$set` datetime as a string.
            "$currentDate": {"updated_at": True},
        },
        upsert=True,
    )


class CrmSync:
    """Sync batches of leads to every enabled destination of a mapping."""

    def __init__(
        self,
        mapping: CrmMapping,
        clients: dict[str, CrmClient],
        ledger: Ledger,
        *,
        batch_size: int = 200,
        max_attempts: int = 5,
        retry_backoff: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mapping = mapping
        self.clients = clients
        self.ledger = ledger
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff
        self.clock = clock

    def sync(self, leads: Sequence[Lead], tombstones: Sequence[Lead] = ()) -> dict[str, SyncCounts]:
        """Every destination at once (each CRM's latency is its own; none waits for another)."""
        return self._each_destination(lambda d: self.sync_destination(d, leads, tombstones))

    def retry_due(
        self, load_leads: Callable[[list[str]], Sequence[Lead]], limit: int = 5000
    ) -> dict[str, SyncCounts]:
        """Sync again the leads whose entries are pending, or failed and past their backoff."""

        def retry(destination: Destination) -> SyncCounts:
            due = self.ledger.due(destination, self.clock(), limit)
            live = [lead for lead in load_leads(due) if not lead.merged_into] if due else []
            return self.sync_destination(destination, live)

        return self._each_destination(retry)

    def _each_destination(self, work: Callable[[Destination], SyncCounts]) -> dict[str, SyncCounts]:
        names = list(self.clients)
        if len(names) <= 1:
            return {name: work(name) for name in names}  # type: ignore[arg-type]
        with ThreadPoolExecutor(len(names), thread_name_prefix="crm-sync") as pool:
            # copy_context: Prefect's settings (API URL, run context) live in context vars.
            futures = {n: pool.submit(contextvars.copy_context().run, work, n) for n in names}
            return {name: future.result() for name, future in futures.items()}

    def sync_destination(
        self, destination: Destination, leads: Sequence[Lead], tombstones: Sequence[Lead] = ()
    ) -> SyncCounts:
        counts = SyncCounts()
        client = self.clients[destination]
        spec = self.mapping.destinations[destination]
        live = [lead for lead in leads if lead.lead_id and not lead.merged_into]
        counts.considered = len(live)
        entries = self.ledger.entries(destination, (lead.lead_id for lead in live))  # type: ignore[misc]
        todo: list[MappedLead] = []
        for lead in live:
            mapped = map_lead(lead, spec)
            entry = entries.get(mapped.lead_id)
            if entry is None:
                todo.append(mapped)
            elif entry.get("status") == "dead" or entry.get("status") == "merged":
                continue  # dead letters wait for `leadflow crm retry`
            elif (
                entry.get("status") == "synced" and entry.get("payload_hash") == mapped.payload_hash
            ):
                counts.unchanged += 1
            elif (
                entry.get("status") == "failed"
                and float(entry.get("next_attempt_ts") or 0) > self.clock()
            ):
                continue  # still backing off
            else:
                todo.append(mapped)
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            if not self._send(destination, client, batch, entries, counts):
                counts.throttled += len(todo) - start - len(batch)
                self._mark_pending(destination, todo[start + len(batch) :], "throttled: not sent")
                break
        if tombstones:
            self._merge(destination, client, tombstones, counts)
        return counts

    def _mark_pending(self, destination: str, records: Sequence[MappedLead], why: str) -> None:
        self.ledger.write(
            [
                _entry_update(
                    destination,
                    r.lead_id,
                    {"status": "pending", "pending_hash": r.payload_hash, "last_error": why},
                )
                for r in records
            ]
        )

    def _send(
        self,
        destination: str,
        client: CrmClient,
        batch: list[MappedLead],
        entries: dict[str, dict[str, Any]],
        counts: SyncCounts,
    ) -> bool:
        """One batch; False when the CRM said stop."""
        # Intent first: should the process die after the CRM wrote, the entry says pending
        # and the next sync repeats the write (an update by lead_id, not a new record).
        self.ledger.write(
            [
                _entry_update(
                    destination,
                    r.lead_id,
                    {"status": "pending", "pending_hash": r.payload_hash}
                    | ({} if r.lead_id in entries else {"attempts": 0, "external_ids": {}}),
                )
                for r in batch
            ]
        )
        known = {
            r.lead_id: dict(entries[r.lead_id].get("external_ids") or {})
            for r in batch
            if r.lead_id in entries
        }
        try:
            outcomes = client.upsert(batch, known)
        except CrmError as exc:
            message = f"{destination}: {exc}"
            counts.errors.append(message)
            outcomes = [SyncOutcome(r.lead_id, ok=False, error=message) for r in batch]
        by_id = {o.lead_id: o for o in outcomes}
        operations: list[UpdateOne] = []
        stopped = False
        now = self.clock()
        for record in batch:
            outcome = by_id.get(record.lead_id) or SyncOutcome(
                record.lead_id, ok=False, error="no outcome from the connector"
            )
            entry = entries.get(record.lead_id) or {}
            ids = {**(entry.get("external_ids") or {}), **outcome.external_ids}
            if outcome.ok:
                counts.sent += 1
                counts.created += outcome.created
                counts.updated += not outcome.created
                operations.append(
                    _entry_update(
                        destination,
                        record.lead_id,
                        {
                            "status": "synced",
                            "payload_hash": record.payload_hash,
                            "external_ids": ids,
                            "attempts": 0,
                            "last_error": None,
                            "synced_ts": now,
                        },
                    )
                )
            elif outcome.throttled:
                stopped = True
                counts.throttled += 1
                operations.append(
                    _entry_update(
                        destination,
                        record.lead_id,
                        {"status": "pending", "external_ids": ids, "last_error": outcome.error},
                    )
                )
            else:
                attempts = int(entry.get("attempts") or 0) + 1
                dead = not outcome.retryable or attempts >= self.max_attempts
                counts.dead += dead
                counts.failed += not dead
                if outcome.error:
                    counts.errors.append(f"{record.lead_id}: {outcome.error}")
                operations.append(
                    _entry_update(
                        destination,
                        record.lead_id,
                        {
                            "status": "dead" if dead else "failed",
                            "external_ids": ids,
                            "attempts": attempts,
                            "last_error": outcome.error,
                            "next_attempt_ts": now + self.retry_backoff * 2 ** (attempts - 1),
                        },
                    )
                )
        self.ledger.write(operations)
        return not stopped

    def _merge(
        self, destination: str, client: CrmClient, tombstones: Sequence[Lead], counts: SyncCounts
    ) -> None:
        pairs = [(t.lead_id, t.merged_into) for t in tombstones if t.lead_id and t.merged_into]
        entries = self.ledger.entries(destination, [p for pair in pairs for p in pair])  # type: ignore[misc]
        operations: list[UpdateOne] = []
        for tombstone_id, survivor_id in pairs:
            gone, kept = entries.get(tombstone_id), entries.get(survivor_id)  # type: ignore[arg-type]
            if not gone or gone.get("status") == "merged" or not gone.get("external_ids"):
                continue
            survivor_ids = dict((kept or {}).get("external_ids") or {})
            try:
                merged = bool(survivor_ids) and client.merge(survivor_ids, gone["external_ids"])
                if not merged and hasattr(client, "mark_merged"):
                    client.mark_merged(gone["external_ids"], survivor_id)
            except CrmError as exc:
                counts.errors.append(f"merge {tombstone_id} into {survivor_id}: {exc}")
                continue
            counts.merged += 1
            operations.append(
                _entry_update(
                    destination,
                    tombstone_id,  # type: ignore[arg-type]
                    {"status": "merged", "merged_into": survivor_id, "crm_merged": merged},
                )
            )
        self.ledger.write(operations)


# --- building it from settings ------------------------------------------------------------------


def build_clients(mapping: CrmMapping, settings: Settings) -> dict[str, CrmClient]:
    """One client per enabled destination (connectors import lazily: each pulls its SDK)."""
    clients: dict[str, CrmClient] = {}
    for name, destination in mapping.enabled().items():
        if name not in settings.crm_destinations:
            continue
        if name == "salesforce":
            from connectors.salesforce import SalesforceClient

            clients[name] = SalesforceClient.from_settings(settings, destination)
        elif name == "hubspot":
            from connectors.hubspot import HubSpotClient

            clients[name] = HubSpotClient.from_settings(settings, destination)
        elif name == "pipedrive":
            from connectors.pipedrive import PipedriveClient

            clients[name] = PipedriveClient.from_settings(settings, destination)
    return clients


def crm_sync_from_settings(settings: Settings, db: Any) -> CrmSync:
    mapping = load_mapping(Path(settings.crm_mapping))
    ledger = Ledger(db[LEDGER])
    ledger.ensure_indexes()
    return CrmSync(
        mapping,
        build_clients(mapping, settings),
        ledger,
        batch_size=settings.crm_batch_size,
        max_attempts=settings.crm_max_attempts,
        retry_backoff=settings.crm_retry_backoff,
    )


@task(name="sync", cache_policy=NO_CACHE, persist_result=False)
def sync_task(
    leads: list[Lead], tombstones: list[Lead], run_id: str | None = None
) -> dict[str, dict[str, Any]]:
    """The pipeline's sync stage: this run's leads (and merges) to every configured CRM."""
    settings = get_settings()
    store = shared_store(settings)
    counts = {
        destination: c.as_dict()
        for destination, c in crm_sync_from_settings(settings, store.db)
        .sync(leads, tombstones)
        .items()
    }
    if run_id:
        store.record_stage(run_id, STAGE, counts)
    get_run_logger().info("CRM sync: %s", counts)
    return counts
