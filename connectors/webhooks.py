"""Webhooks: new and changed leads POSTed to configured URLs, signed as the Standard Webhooks
specification says, retried with backoff, logged in MongoDB, dead letters replayable.

Endpoints are the JSON list in `LEADFLOW_WEBHOOKS` (a secret setting: it holds the signing
secrets, so it is redacted from logs and never printed), one `WebhookEndpoint` each:
    [{"name": "crm", "url": "https://example.com/hooks", "secret": "whsec_<base64>",
      "events": ["lead.created", "lead.updated"], "template_path": "hooks/lead.json.j2",
      "timeout": 5}]

Payload: `{"type": "lead.created", "timestamp": "<event time>", "data": {...}}`, the shape the
specification recommends. `data` is what the endpoint's Jinja2 template (or `DEFAULT_TEMPLATE`)
renders from `lead` (the Lead as JSON); it must be a JSON object. Only `data` is hashed, so
the event type and time never make unchanged content look new.

Exactly once, as far as a receiver can tell: the webhook-id is derived from (endpoint, lead id,
event, payload hash, version), so a re-run, a resumed retry or a replay of the same content
reuses it and receivers drop the repeat; `version` counts the lead's contents for the endpoint,
so a lead that changes back to an earlier content gets a new id rather than one a receiver
already dropped. Every attempt is signed afresh (new `webhook-timestamp`), as the spec says.

The delivery log (`webhook_deliveries`, `_id` = the webhook-id) holds no payloads, only their
SHA-256, the event, the status, attempts, the last error and timestamps. Status:
- delivered: a 2xx came back;
- failed: an attempt failed and the delivery is being retried; a run that stopped mid-retry
  leaves it so, and the next `deliver_leads` with the lead resumes it under the same id;
- dead: given up (retries exhausted, or a 4xx other than 408/409/425/429, which no retry
  fixes); `replay` re-sends it;
- filtered: the endpoint does not take this event; kept so the lead's next change is an update;
- superseded: a failed or dead event of content the lead no longer has (never re-sent).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, get_args

import httpx
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.database import Database
from standardwebhooks import Webhook

from connectors.mongo import LEADS, lead_from_document
from leadflow.settings import Settings
from models.lead import Lead, utcnow
from models.suppression import (
    SuppressionKind,
    Suppressions,
    guess_kind,
    normalise_value,
    scrub_text,
    suppression_hash,
)

logger = logging.getLogger(__name__)

DELIVERIES = "webhook_deliveries"
EventType = Literal["lead.created", "lead.updated"]
DeliveryStatus = Literal["delivered", "failed", "dead", "filtered", "superseded"]
STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)
# Answers that say "not now" rather than "never": a later attempt may succeed (with 5xx).
_RETRY_STATUS = frozenset({408, 409, 425, 429})
# Characters of a receiver's error answer kept in `last_error`: enough to say why.
_ERROR_EXCERPT = 200
# Lead ids per `$in` query: far below the 16 MB query limit however large the batch.
_QUERY_CHUNK = 10_000
USER_AGENT = "Leadflow-Webhooks/0.1"

DELIVERY_INDEXES: tuple[IndexModel, ...] = (
    IndexModel([("lead_id", ASCENDING), ("endpoint", ASCENDING)], name="lead_endpoint"),
    IndexModel([("status", ASCENDING), ("updated_at", DESCENDING)], name="status_updated"),
)

DEFAULT_TEMPLATE = """{
  "lead_id": {{ lead.lead_id | tojson }},
  "name": {{ lead.name | tojson }},
  "category": {{ lead.category | tojson }},
  "categories": {{ lead.categories | tojson }},
  "address": {{ lead.address | tojson }},
  "location": {{ lead.location | tojson }},
  "phone": {{ lead.phone | tojson }},
  "website": {{ lead.website | tojson }},
  "domain": {{ lead.domain | tojson }},
  "best_email": {{ lead.best_email | tojson }},
  "emails": {{ lead.emails | tojson }},
  "rating": {{ lead.rating | tojson }},
  "review_count": {{ lead.review_count | tojson }},
  "business_status": {{ lead.business_status | tojson }},
  "sources": {{ lead.sources | map(attribute="source") | unique | sort | list | tojson }},
  "score": {{ (lead.score.value if lead.score else none) | tojson }},
  "score_reasons": {{ (lead.score.reasons if lead.score else []) | tojson }},
  "company": {{ (lead.enrichment.company_facts if lead.enrichment else none) | tojson }}
}"""
# The default leaves out what changes on every run without the business changing (last_seen,
# run ids, sighting and scoring times), or every run would send every lead again.

# Sandboxed: a template from configuration renders data and cannot reach Python internals.
# StrictUndefined: a misspelt field fails at start-up instead of sending an empty value.
_JINJA = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def _json_default(value: object) -> object:
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises UndefinedError, naming the missing field
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# `tojson` of a missing field: the UndefinedError every other use gives, not a TypeError.
_JINJA.policies["json.dumps_function"] = lambda value, **kwargs: json.dumps(
    value, default=_json_default, **kwargs
)
# What templates are tried on when an endpoint is loaded: every optional block empty, as a
# freshly scraped lead has them.
_SAMPLE_LEAD = Lead(lead_id="01J00000000000000000000000", name="Sample business")


class WebhookConfigError(ValueError):
    """LEADFLOW_WEBHOOKS is not a valid list of endpoints (the message never shows a secret)."""


class WebhookEndpoint(BaseModel):
    """One receiver: an item of LEADFLOW_WEBHOOKS."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Stable id, part of every webhook-id and log entry: renaming an endpoint "
        "sends it every lead again.",
    )
    url: str = Field(pattern=r"^https?://\S+$")
    secret: SecretStr = Field(
        description="`whsec_` + base64 of 24-64 random bytes, as Standard Webhooks secrets are."
    )
    events: frozenset[EventType] = Field(frozenset({"lead.created", "lead.updated"}), min_length=1)
    template: str | None = Field(None, description="Jinja2 template of the payload's `data`.")
    template_path: Path | None = Field(
        None, description="File holding that template (relative = to the current directory)."
    )
    timeout: float | None = Field(
        None, gt=0, description="Seconds per attempt; unset = LEADFLOW_WEBHOOK_TIMEOUT."
    )

    _template: jinja2.Template = PrivateAttr()
    _signer: Webhook = PrivateAttr()

    @field_validator("secret")
    @classmethod
    def _standard_secret(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if not raw.startswith("whsec_"):
            raise ValueError("must start with whsec_ (Standard Webhooks secret format)")
        encoded = raw.removeprefix("whsec_")
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except binascii.Error:
            raise ValueError("after whsec_ must come base64") from None
        if not 24 <= len(key) <= 64:
            raise ValueError("must hold 24 to 64 bytes (the spec's range)")
        return value

    @model_validator(mode="after")
    def _prepare(self) -> WebhookEndpoint:
        if self.template is not None and self.template_path is not None:
            raise ValueError("give template or template_path, not both")
        try:
            source = (
                self.template_path.read_text(encoding="utf-8")
                if self.template_path is not None
                else self.template or DEFAULT_TEMPLATE
            )
            self._template = _JINJA.from_string(source)
            self.render(_SAMPLE_LEAD)
        except (OSError, jinja2.TemplateError) as exc:
            raise ValueError(f"template: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"template: {exc}") from None
        self._signer = Webhook(self.secret.get_secret_value())
        return self

    def render(self, lead: Lead) -> dict[str, Any]:
        """The payload's `data` for this lead: the template's output, a JSON object.

        Raises jinja2.TemplateError or ValueError (not JSON, or not an object)."""
        text = self._template.render(lead=lead.model_dump(mode="json"))
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the template's output is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("the template must render a JSON object")
        return data

    def headers(self, webhook_id: str, body: str) -> dict[str, str]:
        """The Standard Webhooks headers of one attempt, signed now."""
        now = datetime.now(UTC)
        return {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(webhook_id, now, body),
        }


_ENDPOINT_LIST = TypeAdapter(list[WebhookEndpoint])


def load_endpoints(settings: Settings) -> list[WebhookEndpoint]:
    """The configured endpoints (none when LEADFLOW_WEBHOOKS is unset); WebhookConfigError when
    the list is wrong, naming the item and field but never an input value."""
    if settings.webhooks is None:
        return []
    # `from None` throughout: a chained JSON or validation error would print the secrets.
    try:
        items = json.loads(settings.webhooks.get_secret_value())
    except json.JSONDecodeError as exc:
        raise WebhookConfigError(
            f"LEADFLOW_WEBHOOKS is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(items, list):
        raise WebhookConfigError("LEADFLOW_WEBHOOKS must be a JSON list of endpoints")
    try:
        endpoints = _ENDPOINT_LIST.validate_python(items)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        raise WebhookConfigError(f"LEADFLOW_WEBHOOKS: {problems}") from None
    names = [endpoint.name for endpoint in endpoints]
    if len(set(names)) != len(names):
        raise WebhookConfigError("LEADFLOW_WEBHOOKS: endpoint names must be unique")
    return endpoints


# --- events ------------------------------------------------------------------------------


def payload_hash(data: dict[str, Any]) -> str:
    """SHA-256 of the payload's `data`, key order aside."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def webhook_id(endpoint: str, lead_id: str, event: str, digest: str, version: int) -> str:
    """The deterministic webhook-id of one event (`msg_` + 32 base32 characters)."""
    key = "\x1f".join((endpoint, lead_id, event, digest, str(version))).encode()
    return "msg_" + base64.b32encode(hashlib.sha256(key).digest()[:20]).decode().lower()


def _aware(moment: datetime) -> datetime:
    # pymongo returns naive UTC datetimes unless the client is tz_aware.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Delivery:
    """One event for one endpoint, ready to send."""

    webhook_id: str
    endpoint: str
    lead_id: str
    event: EventType
    version: int
    payload_hash: str
    created_at: datetime
    body: str
    supersedes: tuple[str, ...] = ()

    @classmethod
    def new(
        cls,
        endpoint: str,
        lead_id: str,
        event: EventType,
        version: int,
        data: dict[str, Any],
        *,
        created_at: datetime | None = None,
        supersedes: tuple[str, ...] = (),
    ) -> Delivery:
        digest = payload_hash(data)
        # Whole seconds: the timestamp in the body must read back from MongoDB unchanged.
        moment = _aware(created_at or utcnow()).astimezone(UTC).replace(microsecond=0)
        body = json.dumps(
            {"type": event, "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"), "data": data},
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return cls(
            webhook_id=webhook_id(endpoint, lead_id, event, digest, version),
            endpoint=endpoint,
            lead_id=lead_id,
            event=event,
            version=version,
            payload_hash=digest,
            created_at=moment,
            body=body,
            supersedes=supersedes,
        )

    @classmethod
    def again(cls, record: dict[str, Any], data: dict[str, Any]) -> Delivery:
        """The recorded event with the same content: same webhook-id, event and timestamp."""
        return cls.new(
            record["endpoint"],
            record["lead_id"],
            record["event"],
            record["version"],
            data,
            created_at=record["created_at"],
        )


@dataclass(frozen=True)
class Outcome:
    delivery: Delivery
    status: Literal["delivered", "dead"]
    attempts: int
    error: str | None = None


@dataclass
class WebhookCounts:
    created: int = 0  # lead.created events delivered
    updated: int = 0  # lead.updated events delivered
    dead: int = 0  # events that became dead letters in this call
    unchanged: int = 0  # (endpoint, lead) pairs whose content the endpoint already has
    awaiting_replay: int = 0  # unchanged, but its last event is a dead letter
    filtered: int = 0  # events the endpoint does not take
    superseded: int = 0  # failed or dead events replaced by newer content
    template_errors: int = 0  # leads a template could not render (logged)
    gone: int = 0  # replay only: the lead or the endpoint no longer exists

    def as_dict(self) -> dict[str, int]:
        return {"delivered": self.created + self.updated, **asdict(self)}


def _render(endpoint: WebhookEndpoint, lead: Lead, counts: WebhookCounts) -> dict[str, Any] | None:
    try:
        return endpoint.render(lead)
    except (jinja2.TemplateError, ValueError) as exc:
        counts.template_errors += 1
        logger.warning(
            "webhook %s: template failed for lead %s: %s", endpoint.name, lead.lead_id, exc
        )
        return None


def _plan(
    endpoint: WebhookEndpoint,
    lead_id: str,
    data: dict[str, Any],
    records: Sequence[dict[str, Any]],
    counts: WebhookCounts,
) -> Delivery | None:
    """The event this content calls for, given the (endpoint, lead)'s log, oldest first."""
    digest = payload_hash(data)
    latest = records[-1] if records else None
    if latest is not None and latest["payload_hash"] == digest:
        if latest["status"] == "failed":  # a run stopped mid-retry: go on under the same id
            return Delivery.again(latest, data)
        if latest["status"] == "dead":
            counts.awaiting_replay += 1
        else:
            counts.unchanged += 1
        return None
    # An update only for a receiver that has the lead (or has chosen not to hear of new ones).
    known = any(record["status"] in ("delivered", "filtered") for record in records)
    return Delivery.new(
        endpoint.name,
        lead_id,
        "lead.updated" if known else "lead.created",
        latest["version"] + 1 if latest is not None else 1,
        data,
        supersedes=tuple(r["_id"] for r in records if r["status"] in ("failed", "dead")),
    )


# --- the delivery log --------------------------------------------------------------------


class DeliveryLog:
    """The `webhook_deliveries` collection: one document per event, `_id` = its webhook-id."""

    def __init__(self, db: Database) -> None:
        self.collection = db[DELIVERIES]
        self.collection.create_indexes(list(DELIVERY_INDEXES))

    def history(self, lead_ids: Iterable[str]) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Every recorded event of these leads by (endpoint, lead id), oldest version first."""
        ids = list(dict.fromkeys(lead_ids))
        found: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for start in range(0, len(ids), _QUERY_CHUNK):
            for doc in self.collection.find(
                {"lead_id": {"$in": ids[start : start + _QUERY_CHUNK]}}
            ):
                found[(doc["endpoint"], doc["lead_id"])].append(doc)
        for records in found.values():
            records.sort(key=lambda record: record["version"])
        return found

    def find(
        self, *, status: str | None = None, ids: Sequence[str] = (), limit: int = 0
    ) -> list[dict[str, Any]]:
        """Entries by status and/or webhook-id, most recently updated first."""
        query: dict[str, Any] = {}
        if status is not None:
            query["status"] = status
        if ids:
            query["_id"] = {"$in": list(ids)}
        return list(self.collection.find(query).sort("updated_at", DESCENDING).limit(limit))

    def status_counts(self) -> dict[str, int]:
        pipeline = [{"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        return {doc["_id"]: int(doc["n"]) for doc in self.collection.aggregate(pipeline)}

    def attempt_failed(self, delivery: Delivery, error: str) -> None:
        """Record a failed attempt that will be retried (one round trip; failures are rare)."""
        self.collection.update_one(
            {"_id": delivery.webhook_id}, _entry(delivery, "failed", 1, error), upsert=True
        )

    def record(
        self,
        outcomes: Sequence[Outcome],
        filtered: Sequence[Delivery] = (),
        superseded: Mapping[str, str] | None = None,
    ) -> None:
        """Write a batch's results in one round trip: the outcomes (their final attempt), the
        filtered events, then the superseded entries (old webhook-id -> newer one)."""
        operations = [
            UpdateOne(
                {"_id": o.delivery.webhook_id},
                # Earlier attempts were counted by attempt_failed as they failed.
                _entry(o.delivery, o.status, min(o.attempts, 1), o.error),
                upsert=True,
            )
            for o in outcomes
        ]
        operations += [
            UpdateOne({"_id": d.webhook_id}, _entry(d, "filtered", 0, None), upsert=True)
            for d in filtered
        ]
        # After the new entries (ordered): a crash in between leaves an old entry dead, never
        # a lead with no current entry.
        operations += [
            UpdateOne(
                {"_id": old, "status": {"$in": ["failed", "dead"]}},
                {
                    "$set": {"status": "superseded", "superseded_by": new},
                    "$currentDate": {"updated_at": True},
                },
            )
            for old, new in (superseded or {}).items()
        ]
        if operations:
            self.collection.bulk_write(operations, ordered=True)


def _entry(
    delivery: Delivery, status: DeliveryStatus, attempts: int, error: str | None
) -> dict[str, Any]:
    stamps = {"updated_at": True, **({"delivered_at": True} if status == "delivered" else {})}
    return {
        # Dates only on insert or as $currentDate: the embedded server turns a date given to
        # `$set` on an existing document into a string.
        "$setOnInsert": {
            "endpoint": delivery.endpoint,
            "lead_id": delivery.lead_id,
            "event": delivery.event,
            "version": delivery.version,
            "payload_hash": delivery.payload_hash,
            "created_at": delivery.created_at,
        },
        "$set": {"status": status, "last_error": error},
        "$inc": {"attempts": attempts},
        "$currentDate": stamps,
    }


# --- sending -----------------------------------------------------------------------------


class _Attempt(NamedTuple):
    error: str | None  # None = delivered
    retryable: bool = False
    retry_after: float | None = None


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the receiver asked to wait: Retry-After as seconds or as an HTTP date."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (_aware(moment) - datetime.now(UTC)).total_seconds())


class WebhookSender:
    """POSTs deliveries, signed per attempt, retried with exponential backoff; thread-safe."""

    def __init__(
        self,
        endpoints: Iterable[WebhookEndpoint],
        *,
        timeout: float,
        retries: int,
        backoff: float,
        backoff_max: float,
        concurrency: int,
    ) -> None:
        self.endpoints = {endpoint.name: endpoint for endpoint in endpoints}
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.concurrency = concurrency
        # Redirects are not followed: a signed event goes only where it was configured to.
        self.client = httpx.Client(
            limits=httpx.Limits(max_connections=concurrency),
            follow_redirects=False,
            headers={"user-agent": USER_AGENT},
        )
        # Endpoints that exhausted a delivery's retries in this sender's life: the rest of
        # their batch is dead-lettered at once instead of each waiting out the full backoff.
        self._failing: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSender:
        return cls(
            load_endpoints(settings),
            timeout=settings.webhook_timeout,
            retries=settings.webhook_retries,
            backoff=settings.webhook_backoff,
            backoff_max=settings.webhook_backoff_max,
            concurrency=settings.webhook_concurrency,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def send_all(
        self,
        deliveries: Sequence[Delivery],
        on_failure: Callable[[Delivery, str], None] | None = None,
    ) -> list[Outcome]:
        """Send deliveries `concurrency` at a time; `on_failure` hears each retried failure."""
        if not deliveries:
            return []
        workers = min(self.concurrency, len(deliveries))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook") as pool:
            return list(pool.map(lambda d: self.send(d, on_failure), deliveries))

    def send(
        self, delivery: Delivery, on_failure: Callable[[Delivery, str], None] | None = None
    ) -> Outcome:
        """All attempts of one delivery: the first plus up to `retries` more."""
        endpoint = self.endpoints[delivery.endpoint]
        with self._lock:
            failing = self._failing.get(endpoint.name)
        if failing is not None:
            return Outcome(delivery, "dead", 0, f"not sent: the endpoint is failing ({failing})")
        attempts = 0
        while True:
            attempts += 1
            attempt = self._attempt(endpoint, delivery)
            if attempt.error is None:
                return Outcome(delivery, "delivered", attempts)
            if not attempt.retryable:
                return self._dead(delivery, attempts, f"{attempt.error} (not retryable)")
            if attempts > self.retries:
                reason = f"{attempt.error} (gave up after {attempts} attempts)"
                with self._lock:
                    self._failing.setdefault(endpoint.name, f"{delivery.webhook_id}: {reason}")
                return self._dead(delivery, attempts, reason)
            if on_failure is not None:
                on_failure(delivery, attempt.error)
            time.sleep(self._delay(attempts, attempt.retry_after))

    def _attempt(self, endpoint: WebhookEndpoint, delivery: Delivery) -> _Attempt:
        try:
            response = self.client.post(
                endpoint.url,
                content=delivery.body.encode(),
                # Signed per attempt: receivers reject timestamps older than a few minutes.
                headers=endpoint.headers(delivery.webhook_id, delivery.body),
                timeout=endpoint.timeout or self.timeout,
            )
        except httpx.TransportError as exc:  # time-outs, refused or dropped connections
            return _Attempt(type(exc).__name__ + (f": {exc}" if str(exc) else ""), True)
        if response.is_success:
            return _Attempt(None)
        status = response.status_code
        excerpt = " ".join(response.text.split())[:_ERROR_EXCERPT]
        error = f"HTTP {status} {response.reason_phrase}" + (f": {excerpt}" if excerpt else "")
        retryable = status in _RETRY_STATUS or status >= 500
        return _Attempt(error, retryable, _retry_after(response) if retryable else None)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay = self.backoff * 2 ** (attempt - 1)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.backoff_max)

    @staticmethod
    def _dead(delivery: Delivery, attempts: int, reason: str) -> Outcome:
        logger.warning(
            "webhook %s: %s for lead %s is dead: %s",
            delivery.endpoint,
            delivery.webhook_id,
            delivery.lead_id,
            reason,
        )
        return Outcome(delivery, "dead", attempts, reason)


def _dispatch(
    planned: Iterable[Delivery],
    sender: WebhookSender,
    log: DeliveryLog,
    counts: WebhookCounts,
    stale: Sequence[tuple[str, str]] = (),
) -> None:
    unique = list({delivery.webhook_id: delivery for delivery in planned}.values())
    takes = [d for d in unique if d.event in sender.endpoints[d.endpoint].events]
    filtered = [d for d in unique if d.event not in sender.endpoints[d.endpoint].events]
    superseded = dict(stale)
    superseded.update((old, d.webhook_id) for d in unique for old in d.supersedes)
    outcomes = sender.send_all(takes, on_failure=log.attempt_failed)
    log.record(outcomes, filtered, superseded)
    for outcome in outcomes:
        if outcome.status == "dead":
            counts.dead += 1
        elif outcome.delivery.event == "lead.created":
            counts.created += 1
        else:
            counts.updated += 1
    counts.filtered += len(filtered)
    counts.superseded += len(superseded)


# --- what the pipeline, the CLI and forget call ------------------------------------------


def deliver_leads(leads: Sequence[Lead], db: Database, settings: Settings) -> dict[str, int]:
    """Send every configured endpoint the leads that are new or changed for it (one call per
    batch; `db` is the store's database, `LeadStore.db`). Whether an event is lead.created or
    lead.updated comes from the delivery log; unchanged content sends nothing.

    Returns counts: delivered (= created + updated), dead, unchanged, awaiting_replay,
    filtered, superseded, template_errors, gone (0 here).
    """
    counts = WebhookCounts()
    with WebhookSender.from_settings(settings) as sender:
        if not sender.endpoints or not leads:
            return counts.as_dict()
        batch: dict[str, Lead] = {}
        for lead in leads:
            if not lead.lead_id:
                raise ValueError(f"lead {lead.name!r} has no lead_id: deliver after load")
            batch[lead.lead_id] = lead  # the last copy of a lead wins, as in a load
        log = DeliveryLog(db)
        history = log.history(batch)
        planned: list[Delivery] = []
        for endpoint in sender.endpoints.values():
            for lead_id, lead in batch.items():
                data = _render(endpoint, lead, counts)
                if data is None:
                    continue
                records = history.get((endpoint.name, lead_id), [])
                delivery = _plan(endpoint, lead_id, data, records, counts)
                if delivery is not None:
                    planned.append(delivery)
        _dispatch(planned, sender, log, counts)
    return counts.as_dict()


def replay(
    db: Database, settings: Settings, *, ids: Sequence[str] = (), all_dead: bool = False
) -> dict[str, int]:
    """Re-send the dead letters (`all_dead`) or the entries `ids`, under their webhook-ids.

    Payloads are not stored: each is rendered again from the lead as stored now. If that is the
    recorded content and the entry is the latest for its lead and endpoint, it goes out with its
    original webhook-id, event and timestamp. Otherwise the entry is stale (the lead or the
    template changed): it is superseded, and the lead's current content is delivered as a new
    event, as a pipeline run would. Entries whose lead or endpoint is gone are left alone.
    """
    if bool(ids) == all_dead:
        raise ValueError("give webhook ids or all_dead, not both or neither")
    counts = WebhookCounts()
    log = DeliveryLog(db)
    entries = log.find(ids=ids) if ids else log.find(status="dead")
    if not entries:
        return counts.as_dict()
    with WebhookSender.from_settings(settings) as sender:
        lead_ids = list({entry["lead_id"] for entry in entries})
        leads = {
            doc["lead_id"]: lead_from_document(doc)
            for doc in db[LEADS].find({"lead_id": {"$in": lead_ids}})
        }
        history = log.history(lead_ids)
        planned: list[Delivery] = []
        stale: list[tuple[str, str]] = []
        for entry in entries:
            endpoint = sender.endpoints.get(entry["endpoint"])
            lead = leads.get(entry["lead_id"])
            if endpoint is None or lead is None or lead.merged_into is not None:
                counts.gone += 1
                continue
            data = _render(endpoint, lead, counts)
            if data is None:
                continue
            records = history[(endpoint.name, entry["lead_id"])]
            latest = records[-1]
            if entry["_id"] == latest["_id"] and payload_hash(data) == entry["payload_hash"]:
                planned.append(Delivery.again(entry, data))
                continue
            if entry["_id"] != latest["_id"] and entry["status"] in ("failed", "dead"):
                stale.append((entry["_id"], latest["_id"]))
            delivery = _plan(endpoint, entry["lead_id"], data, records, counts)
            if delivery is not None:
                planned.append(delivery)
        _dispatch(planned, sender, log, counts, stale)
    return counts.as_dict()


def scrub_webhook_logs(db: Database, value: str, kind: SuppressionKind | None = None) -> int:
    """Erase an email, a domain's emails or a lead id from the delivery log; returns the entries
    changed or deleted.

    The log keeps no payloads, only their SHA-256. A lead id's entries are deleted (the lead
    is being erased). An email can only sit in `last_error`, the excerpt of a receiver's error
    answer, where it is replaced by `[forgotten]`.
    """
    kind = kind or guess_kind(value)
    value = normalise_value(kind, value)
    collection = db[DELIVERIES]
    if kind == "lead_id":
        return collection.delete_many({"lead_id": value}).deleted_count
    suppressed = Suppressions.of([suppression_hash(kind, value)])
    # A domain matches the emails at it (through `suppressed`); the bare name stays.
    extra = [value] if kind == "email" else []
    changed = 0
    query = {"last_error": {"$regex": re.escape(value), "$options": "i"}}
    for doc in collection.find(query, {"last_error": 1}):
        cleaned = scrub_text(doc["last_error"], suppressed, extra)
        if cleaned != doc["last_error"]:
            collection.update_one({"_id": doc["_id"]}, {"$set": {"last_error": cleaned}})
            changed += 1
    return changed
