"""MongoDB store: leads, quarantine, runs. One client per process, built from settings.

Written for real MongoDB first; where the embedded MongoDB-wire server (nx-27017) differs,
the formulation chosen here is correct on both (see ARCHITECTURE.md): `$setOnInsert` only in
`update_one`/`bulk_write`, no `$max` on dates, simple queries.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, MongoClient, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from leadflow.settings import Settings, get_settings
from models.lead import Lead, Quarantined, utcnow
from models.suppression import SuppressionKind, Suppressions, scrub_value, suppression_hash

LEADS = "leads"
QUARANTINE = "quarantine"
RUNS = "runs"
MIGRATIONS = "migrations"
ENRICHMENT_CACHE = "enrichment_cache"
DUPLICATE_KEY = 11000
SUPPRESSION = "suppression"

# Fields the pipeline never writes with `$set` on an existing lead: the key, the insert-only
# timestamp, the run ids (added, never replaced, so concurrent runs both count), the
# analyst-owned review block, and `last_seen`, which is `$currentDate`: the embedded server
# stores a top-level datetime given to `$set` on an existing document as a string.
_NOT_SET = frozenset({"lead_id", "first_seen", "last_seen", "run_ids", "review"})

# Keys per `$in` query when looking up dedup candidates: keeps each query document well under
# the 16 MB BSON limit even for 100k-lead batches.
_CANDIDATE_CHUNK = 20_000

LEAD_INDEXES: tuple[IndexModel, ...] = (
    IndexModel([("lead_id", ASCENDING)], unique=True, name="lead_id_unique"),
    IndexModel([("blocking_keys", ASCENDING)], name="blocking_keys"),
    IndexModel([("merged_into", ASCENDING)], name="merged_into"),
    IndexModel([("category", ASCENDING), ("address.city", ASCENDING)], name="category_city"),
    IndexModel([("score.value", DESCENDING)], name="score"),
    IndexModel([("first_seen", DESCENDING)], name="first_seen"),
    IndexModel([("last_seen", DESCENDING)], name="last_seen"),
    IndexModel([("run_ids", ASCENDING)], name="run_ids"),
    IndexModel(
        [("sources.source", ASCENDING), ("sources.source_id", ASCENDING)], name="source_record"
    ),
)
# Created once and recorded in `migrations`: re-creating an existing text index is a no-op on
# MongoDB but an error on the embedded server, which also leaves text indexes out of
# `list_indexes`, so existence cannot be checked by listing.
LEAD_TEXT_INDEX = IndexModel([("name", "text")], name="name_text")
QUARANTINE_INDEXES: tuple[IndexModel, ...] = (
    IndexModel([("run_id", ASCENDING), ("created_at", DESCENDING)], name="run_created"),
)
RUN_INDEXES: tuple[IndexModel, ...] = (
    IndexModel([("created_at", DESCENDING)], name="created_at"),
    IndexModel([("state", ASCENDING)], name="state"),
)
# The TTL index only tidies up (MongoDB deletes expired entries about once a minute, the
# embedded server maybe never): every read checks `expires_at` itself.
CACHE_INDEXES: tuple[IndexModel, ...] = (
    IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_at_ttl"),
)


@dataclass
class LoadCounts:
    inserted: int = 0
    updated: int = 0
    tombstoned: int = 0
    round_trips: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "inserted": self.inserted,
            "updated": self.updated,
            "tombstoned": self.tombstoned,
            "round_trips": self.round_trips,
        }


class CommandCounter(CommandListener):
    """Counts round trips and time spent waiting on MongoDB (pymongo command monitoring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.commands: dict[str, int] = {}
            self.seconds = 0.0

    @property
    def round_trips(self) -> int:
        return sum(self.commands.values())

    def started(self, event: CommandStartedEvent) -> None:
        with self._lock:
            self.commands[event.command_name] = self.commands.get(event.command_name, 0) + 1

    def succeeded(self, event: CommandSucceededEvent) -> None:
        with self._lock:
            self.seconds += event.duration_micros / 1e6

    def failed(self, event: CommandFailedEvent) -> None:
        with self._lock:
            self.seconds += event.duration_micros / 1e6


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def count(collection: Collection, query: dict[str, Any]) -> int:
    """`$match` + `$count`: right on MongoDB and on the emulator, whose `count_documents`
    answers 0 for a `{field: None}` filter."""
    result = list(collection.aggregate([{"$match": query}, {"$count": "n"}]))
    return int(result[0]["n"]) if result else 0


def _aware(moment: datetime) -> datetime:
    # pymongo returns naive UTC datetimes unless the client is tz_aware.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def lead_from_document(doc: dict[str, Any]) -> Lead:
    doc.pop("_id", None)
    return Lead.model_validate(doc)


class LeadStore:
    """The pipeline's and the API's view of MongoDB."""

    def __init__(self, client: MongoClient, db_name: str, *, batch_size: int = 1000) -> None:
        self.client = client
        self.db: Database = client[db_name]
        self.batch_size = batch_size

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, listeners: Iterable[CommandListener] = ()
    ) -> LeadStore:
        settings = settings or get_settings()
        client: MongoClient = MongoClient(
            settings.mongo_url,
            tz_aware=True,
            serverSelectionTimeoutMS=10_000,
            event_listeners=list(listeners),
            appname="leadflow",
        )
        return cls(client, settings.mongodb_db, batch_size=settings.load_batch_size)

    def close(self) -> None:
        self.client.close()

    @property
    def leads(self) -> Collection:
        return self.db[LEADS]

    @property
    def quarantine_collection(self) -> Collection:
        return self.db[QUARANTINE]

    @property
    def runs(self) -> Collection:
        return self.db[RUNS]

    @property
    def cache(self) -> Collection:
        return self.db[ENRICHMENT_CACHE]

    @property
    def suppression(self) -> Collection:
        return self.db[SUPPRESSION]

    def ping(self) -> bool:
        self.client.admin.command("ping")
        return True

    def create_indexes(self) -> dict[str, list[str]]:
        """Create every index the pipeline and API queries need (idempotent)."""
        created = {
            LEADS: self.leads.create_indexes(list(LEAD_INDEXES)),
            QUARANTINE: self.quarantine_collection.create_indexes(list(QUARANTINE_INDEXES)),
            RUNS: self.runs.create_indexes(list(RUN_INDEXES)),
            ENRICHMENT_CACHE: self.cache.create_indexes(list(CACHE_INDEXES)),
        }
        marker = {"_id": f"{LEADS}.{LEAD_TEXT_INDEX.document['name']}"}
        if self.db[MIGRATIONS].find_one(marker) is None:
            created[LEADS] += self.leads.create_indexes([LEAD_TEXT_INDEX])
            self.db[MIGRATIONS].update_one(marker, {"$set": {"applied_at": utcnow()}}, upsert=True)
        return created

    # --- leads ---------------------------------------------------------------------------

    def find_candidates(self, keys: Iterable[str]) -> list[Lead]:
        """Stored, live (non-tombstone) leads sharing any blocking key: dedup's candidates."""
        unique_keys = sorted(set(keys))
        found: dict[str, Lead] = {}
        for chunk in _chunks(unique_keys, _CANDIDATE_CHUNK):
            cursor = self.leads.find({"blocking_keys": {"$in": list(chunk)}, "merged_into": None})
            for doc in cursor:
                lead = lead_from_document(doc)
                if lead.lead_id:
                    found[lead.lead_id] = lead
        return list(found.values())

    def get_lead(self, lead_id: str) -> Lead | None:
        doc = self.leads.find_one({"lead_id": lead_id})
        return lead_from_document(doc) if doc else None

    def leads_of_run(self, run_id: str) -> list[Lead]:
        # `$in`, not equality: the embedded server does not match an array element by `==`.
        return [
            lead_from_document(d)
            for d in self.leads.find({"run_ids": {"$in": [run_id]}, "merged_into": None})
        ]

    def leads_by_ids(self, lead_ids: Iterable[str]) -> list[Lead]:
        """The stored leads with these ids (tombstones included: callers follow `merged_into`)."""
        ids = list(dict.fromkeys(lead_ids))
        found: list[Lead] = []
        for chunk in _chunks(ids, self.batch_size):
            found.extend(
                lead_from_document(d) for d in self.leads.find({"lead_id": {"$in": list(chunk)}})
            )
        return found

    def pending_enrichment(self, limit: int) -> list[Lead]:
        """Live leads whose enrichment is pending (oldest update first)."""
        cursor = self.leads.find({"enrichment.status": "pending", "merged_into": None}).sort(
            "enrichment.updated_at", ASCENDING
        )
        return [lead_from_document(d) for d in cursor.limit(limit)]

    def count_live_leads(self) -> int:
        return count(self.leads, {"merged_into": None})

    def upsert_leads(
        self,
        leads: Sequence[Lead],
        tombstones: Sequence[Lead] = (),
        *,
        carry_review: Iterable[str] = (),
    ) -> LoadCounts:
        """Bulk upsert by `lead_id`: one `bulk_write` round trip per batch of `batch_size`.

        `carry_review` names survivors whose `review` dedup merged from a tombstone: only for
        those does the pipeline write the analyst-owned block.
        """
        carried = set(carry_review)
        operations: list[UpdateOne] = [
            self._upsert_op(lead, lead.lead_id in carried) for lead in leads
        ]
        operations += [self._tombstone_op(t) for t in tombstones]
        counts = LoadCounts(tombstoned=len(tombstones))
        for chunk in _chunks(operations, self.batch_size):
            result = self.leads.bulk_write(list(chunk), ordered=False)
            counts.round_trips += 1
            counts.inserted += result.upserted_count
            counts.updated += result.matched_count
        counts.updated -= counts.tombstoned
        return counts

    @staticmethod
    def _upsert_op(lead: Lead, write_review: bool) -> UpdateOne:
        if not lead.lead_id:
            raise ValueError(f"lead {lead.name!r} has no lead_id: dedup assigns one before load")
        document = lead.model_dump(mode="python", exclude=_NOT_SET)
        if write_review and lead.review is not None:
            document["review"] = lead.review.model_dump(mode="python")
        update: dict[str, Any] = {
            "$set": document,
            "$setOnInsert": {"lead_id": lead.lead_id, "first_seen": lead.first_seen or utcnow()},
            "$currentDate": {"last_seen": True},
        }
        if lead.run_ids:
            update["$addToSet"] = {"run_ids": {"$each": list(lead.run_ids)}}
        return UpdateOne({"lead_id": lead.lead_id}, update, upsert=True)

    @staticmethod
    def _tombstone_op(tombstone: Lead) -> UpdateOne:
        if not (tombstone.lead_id and tombstone.merged_into):
            raise ValueError("a tombstone needs its lead_id and merged_into")
        return UpdateOne(
            {"lead_id": tombstone.lead_id},
            {"$set": {"merged_into": tombstone.merged_into}, "$currentDate": {"last_seen": True}},
        )

    # --- quarantine ----------------------------------------------------------------------

    def quarantine(self, records: Sequence[Quarantined]) -> int:
        """Keep records aside with their reasons; suppressed emails in a payload are scrubbed."""
        if not records:
            return 0
        docs = [r.model_dump(mode="python") for r in records]
        suppressed = self.suppressions()
        if suppressed:
            for doc in docs:
                doc["payload"] = scrub_value(doc["payload"], suppressed)
        for chunk in _chunks(docs, self.batch_size):
            self.quarantine_collection.insert_many(list(chunk), ordered=False)
        return len(docs)

    def quarantined_for_run(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.quarantine_collection.find({"run_id": run_id}, {"_id": 0}))

    # --- enrichment cache ------------------------------------------------------------------

    def cache_get(self, kind: str, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Unexpired cached answers of `kind` (e.g. `hunter-domain`) by key; expiry is checked
        here, not left to the TTL index."""
        wanted = list(dict.fromkeys(keys))
        now = utcnow()
        found: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(wanted, self.batch_size):
            ids = [f"{kind}:{key}" for key in chunk]
            for doc in self.cache.find({"_id": {"$in": ids}}):
                expires = doc.get("expires_at")
                if isinstance(expires, datetime) and _aware(expires) > now:
                    found[doc["key"]] = doc["value"]
        return found

    def cache_put(self, kind: str, values: dict[str, dict[str, Any]], ttl: timedelta) -> None:
        """Store answers of `kind` by key until now + `ttl`.

        Delete + insert rather than an upsert with `$set`: the embedded server stores a
        top-level date given to `$set` on an existing document as a string, and the TTL index
        needs a date. A concurrent run inserting the same key first is fine: same answer.
        """
        if not values:
            return
        expires_at = utcnow() + ttl
        docs = [
            {
                "_id": f"{kind}:{key}",
                "kind": kind,
                "key": key,
                "value": value,
                "expires_at": expires_at,
            }
            for key, value in values.items()
        ]
        for chunk in _chunks(docs, self.batch_size):
            self.cache.delete_many({"_id": {"$in": [doc["_id"] for doc in chunk]}})
            try:
                self.cache.insert_many(list(chunk), ordered=False)
            except BulkWriteError as exc:
                if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                    raise

    # --- suppression -----------------------------------------------------------------------

    def suppressions(self) -> Suppressions:
        return Suppressions.of(doc["_id"] for doc in self.suppression.find({}, {"_id": 1}))

    def suppress(self, kind: SuppressionKind, value: str, *, reason: str) -> str:
        """Add a value (stored as its hash only); returns the hash."""
        digest = suppression_hash(kind, value)
        self.suppression.update_one(
            {"_id": digest},
            {"$setOnInsert": {"kind": kind, "reason": reason, "created_at": utcnow()}},
            upsert=True,
        )
        return digest

    # --- runs ----------------------------------------------------------------------------

    def create_run(
        self, run_id: str, spec: dict[str, Any], *, started: bool = False, **fields: Any
    ) -> None:
        """Record a run the moment it is created (idempotent: a retry keeps the first doc).

        Timestamps are `$currentDate` (server time), which both MongoDB and the embedded
        server store as dates on an existing document.
        """
        self.runs.update_one(
            {"_id": run_id},
            {
                "$setOnInsert": {
                    "run_id": run_id,
                    "spec": spec,
                    "counts": {},
                    "errors": [],
                    "created_at": utcnow(),
                },
                "$set": fields,
                "$currentDate": {"updated_at": True, **({"started_at": True} if started else {})},
            },
            upsert=True,
        )

    def update_run(self, run_id: str, *, timestamps: Iterable[str] = (), **fields: Any) -> None:
        update: dict[str, Any] = {
            "$currentDate": {"updated_at": True, **dict.fromkeys(timestamps, True)}
        }
        if fields:
            update["$set"] = fields
        self.runs.update_one({"_id": run_id}, update)

    def record_stage(self, run_id: str, stage: str, counts: dict[str, int]) -> None:
        self.update_run(run_id, **{f"counts.{stage}": counts, "stage": stage})

    def finish_run(self, run_id: str, state: str, *, message: str | None = None) -> None:
        fields: dict[str, Any] = {"state": state}
        if message:
            fields["state_message"] = message
        self.update_run(run_id, timestamps=("finished_at",), **fields)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        return self.runs.find_one({"_id": run_id})


_stores: dict[tuple[str, str, int], LeadStore] = {}
_stores_lock = threading.Lock()


def shared_store(settings: Settings | None = None) -> LeadStore:
    """One store (one connection pool) per process and configuration, as pymongo advises."""
    settings = settings or get_settings()
    key = (settings.mongo_url, settings.mongodb_db, settings.load_batch_size)
    with _stores_lock:
        if key not in _stores:
            _stores[key] = LeadStore.from_settings(settings)
        return _stores[key]
