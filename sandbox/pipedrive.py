"""A stand-in for the Pipedrive API: v2 persons, organizations, deals, search, pipelines and
stages; v1 notes, merges and entity fields.

Mounted by `sandbox.server` under `/pipedrive`, so a client's base URL is
`http://127.0.0.1:<port>/pipedrive` (Pipedrive's is `https://<company>.pipedrive.com`) and it
calls `/api/v2/...` and `/api/v1/...` below it with httpx. The API token goes in the
`x-api-token` header or the `api_token` query parameter; without a good one the answer is
401 `{"success": false, "error": "unauthorized access", "errorCode": 401, "error_info"}`.
Answers use Pipedrive's envelope `{"success", "data", "additional_data"}`; errors are
`{"success": false, "error", "error_info", "data": null, "additional_data": null}` (the
messages are the sandbox's).

Pipedrive has no upsert: every POST creates, so a sync finds its records first. Each entity
has a custom field "Leadflow lead id" (`varchar`, searchable) whose key is a 40-character
hash, as Pipedrive's custom field keys are; discover it with `GET /api/v1/personFields`
(`organizationFields`, `dealFields`), where `POST` adds more custom fields. In v2 bodies and
answers custom fields live in a `custom_fields` object keyed by that hash.

- `POST /api/v2/persons` `{name, owner_id, org_id, emails: [{value, primary, label}], phones,
  visible_to, label_ids, marketing_status, add_time, custom_fields}` (name required);
  organizations `{name, owner_id, address: {value}, visible_to, label_ids, add_time,
  custom_fields}`; deals `{title, value, currency, person_id, org_id, pipeline_id, stage_id,
  status, owner_id, probability, expected_close_date, visible_to, label_ids, add_time,
  custom_fields}` (title required; stage defaults to the pipeline's first, pipeline to the
  first one; a stage of another pipeline is refused). v2 validates strictly, as its migration
  guide says: an unknown field, a string where a number belongs or a reference to a record
  that does not exist answers 400.
- `GET`/`PATCH /api/v2/{persons|organizations|deals}/{id}` (404 once deleted or merged away);
  `GET /api/v2/{entity}?limit=&cursor=` lists by id with `additional_data.next_cursor`
  (limit 1-500, default 100).
- `GET /api/v2/{entity}/search?term=&fields=&exact_match=&limit=&cursor=` (persons also
  `organization_id`, deals `person_id`/`organization_id`): fields per entity as Pipedrive
  lists them (persons `custom_fields, email, notes, phone, name`; organizations `address,
  custom_fields, notes, name`; deals `custom_fields, notes, title`); `exact_match=true` matches
  a whole value ignoring case, otherwise a term of 2+ characters matches inside a value ->
  `data.items[{result_score, item: {id, type, ...}}]`.
- `POST /api/v1/notes` `{content, deal_id | person_id | org_id}` (201) and `GET
  /api/v1/notes?deal_id=|person_id=|org_id=&start=&limit=` (v1 pagination); `PUT
  /api/v1/notes/{id}` `{content}` changes one.
- `PUT /api/v1/persons/{id}/merge` and `/api/v1/organizations/{id}/merge` `{merge_with_id}`:
  `{id}` is merged into `merge_with_id`, which keeps its values and takes the other's where
  it has none; deals, notes (and an organization's persons) move to it.
- `GET /api/v2/pipelines`, `GET /api/v2/stages?pipeline_id=`: two pipelines, "Leadflow" (New
  lead, Contacted, Qualified, Proposal) and "Partners" (Intro, Negotiation).

Limits: a burst limit per token and 2-second window (`requests_per_two_seconds`); every
authenticated answer carries `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset`
(seconds until the window resets); over the limit 429 `{"success": false, "error": "Too many
requests", "errorCode": 429, ...}` (the body's wording is the sandbox's). Injected faults
(`sandbox.crm_faults`): 500 and that 429.

Control (see `sandbox.crm_faults`): knobs `requests_per_two_seconds`, the fault knobs,
`"reset": true`; truth kinds `organizations`, `persons`, `deals` (duplicates by the "Leadflow
lead id" value) and `notes` (duplicates: the same content on the same records).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from leadflow.settings import Settings
from sandbox.crm_faults import (
    CrmSandboxBase,
    crm_app,
    duplicates,
)
from sandbox.hunter import parse_positive_int

ERROR_INFO = "Please check developers.pipedrive.com for more information about Pipedrive API."
ENTITIES = ("persons", "organizations", "deals")
SINGULAR = {"persons": "Person", "organizations": "Organization", "deals": "Deal"}
FIELD_LISTS = {
    "personFields": "persons",
    "organizationFields": "organizations",
    "dealFields": "deals",
}
LEAD_ID_FIELD = "Leadflow lead id"
OWNER_ID = 1
WINDOW_SECONDS = 2.0
DEFAULT_LIMIT, MAX_LIMIT = 100, 500
VISIBILITY = (1, 3, 5, 7)
DEAL_STATUSES = ("open", "won", "lost")
FIELD_TYPES = (
    "address",
    "date",
    "daterange",
    "double",
    "enum",
    "monetary",
    "org",
    "people",
    "phone",
    "set",
    "text",
    "time",
    "timerange",
    "user",
    "varchar",
    "varchar_auto",
    "visible_to",
)
SEARCHABLE_TYPES = frozenset(
    {"address", "varchar", "text", "varchar_auto", "double", "monetary", "phone"}
)
SEARCH_FIELDS = {
    "persons": ("custom_fields", "email", "notes", "phone", "name"),
    "organizations": ("address", "custom_fields", "notes", "name"),
    "deals": ("custom_fields", "notes", "title"),
}
SEARCH_FILTERS = {
    "persons": ("organization_id",),
    "organizations": (),
    "deals": ("person_id", "organization_id"),
}
# The v2 body fields of each entity (beyond custom_fields), and the standard fields the v1
# field lists show for it.
BODY_FIELDS = {
    "persons": ("name", "owner_id", "org_id", "emails", "phones", "visible_to", "label_ids",
                "marketing_status", "add_time"),
    "organizations": ("name", "owner_id", "address", "visible_to", "label_ids", "add_time"),
    "deals": ("title", "value", "currency", "person_id", "org_id", "pipeline_id", "stage_id",
              "status", "owner_id", "probability", "expected_close_date", "visible_to", "label_ids",
              "add_time"),
}  # fmt: skip
PIPELINES: dict[int, tuple[str, tuple[tuple[int, str], ...]]] = {
    1: ("Leadflow", ((1, "New lead"), (2, "Contacted"), (3, "Qualified"), (4, "Proposal"))),
    2: ("Partners", ((5, "Intro"), (6, "Negotiation"))),
}
STAGE_PIPELINE = {
    stage_id: pipeline_id
    for pipeline_id, (_, stages) in PIPELINES.items()
    for stage_id, _ in stages
}
STAGE_NAME = {stage_id: name for _, (_, stages) in PIPELINES.items() for stage_id, name in stages}
EPOCH = "2024-01-01T00:00:00Z"


class PipedriveError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "success": False,
            "error": self.message,
            "error_info": ERROR_INFO,
            "data": None,
            "additional_data": None,
        }


def _bad(message: str) -> PipedriveError:
    return PipedriveError(400, message)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def field_key(seed: int, entity: str, name: str) -> str:
    """A custom field key as Pipedrive makes them: 40 hex characters."""
    return hashlib.sha1(f"pipedrive/{seed}/{entity}/{name}".encode()).hexdigest()


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["offset"]
    except (ValueError, KeyError, TypeError):
        raise _bad("Invalid cursor") from None
    if not isinstance(offset, int) or offset < 0:
        raise _bad("Invalid cursor")
    return offset


def _int(value: Any, name: str) -> int:
    # v2 no longer coerces strings to numbers (Pipedrive's migration guide).
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"Validation failed: {name}: expected an integer, got {value!r}")
    return value


@dataclass(slots=True)
class CustomField:
    id: int
    key: str
    name: str
    field_type: str
    add_time: str

    def as_json(self, order: int) -> dict[str, Any]:
        return {
            "id": self.id, "key": self.key, "name": self.name, "order_nr": order,
            "field_type": self.field_type, "add_time": self.add_time, "update_time": self.add_time,
            "active_flag": True, "edit_flag": True, "index_visible_flag": True,
            "details_visible_flag": True, "add_visible_flag": True, "important_flag": False,
            "bulk_edit_allowed": True, "searchable_flag": self.field_type in SEARCHABLE_TYPES,
            "filtering_allowed": True, "sortable_flag": True, "mandatory_flag": False,
        }  # fmt: skip


@dataclass(slots=True)
class PipedriveSandboxConfig:
    api_token: str = "sandbox-pipedrive-token"
    requests_per_two_seconds: int = 120
    seed: int = 42

    @classmethod
    def from_settings(cls, settings: Settings, seed: int | None = None) -> PipedriveSandboxConfig:
        return cls(
            api_token=settings.sandbox_crm_pipedrive_api_token,
            requests_per_two_seconds=settings.sandbox_crm_pipedrive_requests_per_two_seconds,
            seed=settings.sandbox_seed if seed is None else seed,
        )


_CONTROL_KNOBS: dict[str, Callable[[Any], Any]] = {"requests_per_two_seconds": parse_positive_int}


@dataclass(slots=True)
class _Window:
    """A fixed rate-limit window: it starts with the first request after the last one ended."""

    started: float = -math.inf
    used: int = 0


@dataclass(slots=True)
class _Usage:
    windows: dict[str, _Window] = field(default_factory=dict)  # per token
    answers: Counter[int] = field(default_factory=Counter)


class PipedriveSandbox(CrmSandboxBase[PipedriveSandboxConfig]):
    """The company's state: organizations, persons, deals, notes, custom fields, usage."""

    name = "pipedrive"
    config_type = PipedriveSandboxConfig
    control_knobs = _CONTROL_KNOBS

    def _fault_error(self) -> Response:
        return JSONResponse(
            {**PipedriveError(500, "Internal server error").body(), "errorCode": 500},
            status_code=500,
        )

    def _fault_throttled(self) -> Response:
        return self.throttled(WINDOW_SECONDS)

    def _clear(self) -> None:
        self._records: dict[str, dict[int, dict[str, Any]]] = {entity: {} for entity in ENTITIES}
        self._notes: dict[int, dict[str, Any]] = {}
        self._serial: Counter[str] = Counter()
        self._fields: dict[str, dict[str, CustomField]] = {}
        for number, entity in enumerate(ENTITIES):
            key = field_key(self.config.seed, entity, LEAD_ID_FIELD)
            self._fields[entity] = {
                key: CustomField(12_001 + number, key, LEAD_ID_FIELD, "varchar", EPOCH)
            }
        self._usage = _Usage()

    def lead_id_key(self, entity: str) -> str:
        """The key of the entity's "Leadflow lead id" custom field."""
        return field_key(self.config.seed, entity, LEAD_ID_FIELD)

    def _next(self, kind: str) -> int:
        self._serial[kind] += 1
        return self._serial[kind]

    # --- limits ---------------------------------------------------------------------------------

    def authorize(self, token: str | None) -> None:
        if token != self.config.api_token:
            raise PipedriveError(401, "unauthorized access")
        with self._lock:
            window = self._usage.windows.setdefault(token, _Window())
            now = self._clock()
            if now >= window.started + WINDOW_SECONDS:
                window.started, window.used = now, 0
            if window.used >= self.config.requests_per_two_seconds:
                raise _RateLimited(window.started + WINDOW_SECONDS - now)
            window.used += 1

    def rate_headers(self, token: str) -> dict[str, str]:
        with self._lock:
            window = self._usage.windows.get(token, _Window())
            limit = self.config.requests_per_two_seconds
            reset = max(0.0, window.started + WINDOW_SECONDS - self._clock())
            return {
                "x-ratelimit-limit": str(limit),
                "x-ratelimit-remaining": str(max(0, limit - window.used)),
                "x-ratelimit-reset": str(math.ceil(reset)),
            }

    def throttled(self, reset: float) -> Response:
        body = {**PipedriveError(429, "Too many requests").body(), "errorCode": 429}
        headers = {
            "x-ratelimit-limit": str(self.config.requests_per_two_seconds),
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(math.ceil(reset)),
        }
        return JSONResponse(body, status_code=429, headers=headers)

    def record_answer(self, status: int) -> None:
        with self._lock:
            self._usage.answers[status] += 1

    # --- fields ---------------------------------------------------------------------------------

    def field_list(self, entity: str) -> list[dict[str, Any]]:
        with self._lock:
            standard = [
                {"id": 9_000 + i, "key": name, "name": name.replace("_", " ").capitalize(),
                 "order_nr": i, "field_type": "varchar", "edit_flag": False, "active_flag": True,
                 "mandatory_flag": name in ("name", "title")}
                for i, name in enumerate(BODY_FIELDS[entity])
            ]  # fmt: skip
            custom = [
                f.as_json(len(standard) + i) for i, f in enumerate(self._fields[entity].values())
            ]
            return standard + custom

    def add_field(self, entity: str, body: Any) -> dict[str, Any]:
        body = body if isinstance(body, dict) else {}
        name, field_type = body.get("name"), body.get("field_type")
        if not isinstance(name, str) or not name.strip():
            raise _bad("Field name must be given")
        if field_type not in FIELD_TYPES:
            raise _bad(f"field_type must be one of {', '.join(FIELD_TYPES)}")
        with self._lock:
            if any(f.name == name for f in self._fields[entity].values()):
                raise _bad(f"A field named {name!r} already exists")
            key = field_key(self.config.seed, entity, name)
            created = CustomField(
                12_100 + sum(len(f) for f in self._fields.values()), key, name, field_type, _now()
            )
            self._fields[entity][key] = created
            return created.as_json(len(BODY_FIELDS[entity]) + len(self._fields[entity]) - 1)

    # --- persons, organizations, deals ------------------------------------------------------------

    def _live(self, entity: str, record_id: int) -> dict[str, Any]:
        found = self._records[entity].get(record_id)
        if found is None or found["is_deleted"]:
            raise PipedriveError(404, f"{SINGULAR[entity]} not found")
        return found

    def _reference(self, entity: str, value: Any, name: str) -> int | None:
        if value is None:
            return None
        record_id = _int(value, name)
        if record_id not in self._records[entity] or self._records[entity][record_id]["is_deleted"]:
            raise _bad(f"{SINGULAR[entity]} with id {record_id} does not exist")
        return record_id

    def _checked(self, entity: str, body: Any, current: Mapping[str, Any] | None) -> dict[str, Any]:
        """A create (current None) or update body as the values to store."""
        if not isinstance(body, dict):
            raise _bad("Validation failed: the body must be a JSON object")
        unknown = sorted(set(body) - {*BODY_FIELDS[entity], "custom_fields"})
        if unknown:
            raise _bad(f"Validation failed: unknown fields: {', '.join(unknown)}")
        changes: dict[str, Any] = {}
        for name, value in body.items():
            if name == "custom_fields":
                changes[name] = self._custom_values(entity, value)
            elif name in (
                "name",
                "title",
                "currency",
                "marketing_status",
                "expected_close_date",
                "add_time",
            ):
                if value is not None and not isinstance(value, str):
                    raise _bad(f"Validation failed: {name}: expected a string")
                changes[name] = value
            elif name in ("emails", "phones"):
                changes[name] = _contact_items(value, name)
            elif name == "address":
                if value is not None and not (
                    isinstance(value, dict) and isinstance(value.get("value"), str)
                ):
                    raise _bad("Validation failed: address: expected {value: string}")
                changes[name] = value
            elif name in ("value", "probability"):
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int | float)
                ):
                    raise _bad(f"Validation failed: {name}: expected a number, got {value!r}")
                changes[name] = value
            elif name == "label_ids":
                if not isinstance(value, list):
                    raise _bad("Validation failed: label_ids: expected a list of integers")
                changes[name] = [_int(v, name) for v in value]
            elif name == "visible_to":
                if _int(value, name) not in VISIBILITY:
                    raise _bad(f"Validation failed: visible_to must be one of {VISIBILITY}")
                changes[name] = value
            elif name == "status":
                if value not in DEAL_STATUSES:
                    raise _bad(
                        f"Validation failed: status must be one of {', '.join(DEAL_STATUSES)}"
                    )
                changes[name] = value
            elif name == "owner_id":
                if _int(value, name) != OWNER_ID:
                    raise _bad(f"User with id {value} does not exist")
                changes[name] = value
            elif name in ("org_id", "person_id"):
                changes[name] = self._reference(
                    "organizations" if name == "org_id" else "persons", value, name
                )
            else:  # pipeline_id, stage_id
                record_id = _int(value, name)
                if record_id not in (PIPELINES if name == "pipeline_id" else STAGE_PIPELINE):
                    raise _bad(f"{name} {record_id} does not exist")
                changes[name] = record_id
        required = "title" if entity == "deals" else "name"
        if (current is None or required in changes) and not (changes.get(required) or "").strip():
            raise _bad(f"Validation failed: {required} is required")
        if entity == "deals":
            self._place_deal(changes, current)
        return changes

    def _custom_values(self, entity: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _bad("Validation failed: custom_fields must be an object")
        for key, item in value.items():
            spec = self._fields[entity].get(key)
            if spec is None:
                raise _bad(f"Validation failed: custom_fields: unknown field key {key}")
            if item is not None and not isinstance(
                item,
                str
                if spec.field_type in ("varchar", "text", "varchar_auto", "phone")
                else int | float,
            ):
                raise _bad(
                    f"Validation failed: custom_fields.{key}: wrong type for a {spec.field_type} field"
                )
        return dict(value)

    @staticmethod
    def _place_deal(changes: dict[str, Any], current: Mapping[str, Any] | None) -> None:
        """Fill and check the deal's pipeline and stage."""
        pipeline, stage = changes.get("pipeline_id"), changes.get("stage_id")
        if pipeline is None and stage is not None:
            pipeline = STAGE_PIPELINE[stage]  # a new stage moves the deal to its pipeline
        if current is not None and pipeline in (None, current["pipeline_id"]):
            pipeline, stage = current["pipeline_id"], stage or current["stage_id"]
        pipeline = pipeline or min(PIPELINES)
        stage = stage or PIPELINES[pipeline][1][0][0]
        if STAGE_PIPELINE[stage] != pipeline:
            raise _bad(f"Stage {stage} does not belong to pipeline {pipeline}")
        changes["pipeline_id"], changes["stage_id"] = pipeline, stage

    def create(self, entity: str, body: Any) -> dict[str, Any]:
        with self._lock:
            changes = self._checked(entity, body, None)
            now = _now()
            record_id = self._next(entity)
            record: dict[str, Any] = {
                "id": record_id,
                **_blank(entity),
                "add_time": now,
                "update_time": now,
            }
            record["custom_fields"] = dict.fromkeys(self._fields[entity])
            self._apply(record, changes)
            self._records[entity][record_id] = record
            return self._public(entity, record)

    def update(self, entity: str, record_id: int, body: Any) -> dict[str, Any]:
        with self._lock:
            record = self._live(entity, record_id)
            self._apply(record, self._checked(entity, body, record))
            record["update_time"] = _now()
            return self._public(entity, record)

    def get(self, entity: str, record_id: int) -> dict[str, Any]:
        with self._lock:
            return self._public(entity, self._live(entity, record_id))

    @staticmethod
    def _apply(record: dict[str, Any], changes: Mapping[str, Any]) -> None:
        for name, value in changes.items():
            if name == "custom_fields":
                record["custom_fields"].update(value)
            else:
                record[name] = value

    def _public(self, entity: str, record: Mapping[str, Any]) -> dict[str, Any]:
        public = dict(record)
        public["custom_fields"] = {
            key: record["custom_fields"].get(key) for key in self._fields[entity]
        }
        return public

    def list_records(
        self, entity: str, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        with self._lock:
            live = [
                self._public(entity, r)
                for r in self._records[entity].values()
                if not r["is_deleted"]
            ]
            return _paginate(live, limit, cursor)

    def search(
        self, entity: str, params: Mapping[str, str]
    ) -> tuple[list[dict[str, Any]], str | None]:
        term = params.get("term", "")
        exact = _bool_param(params, "exact_match")
        if not term or (not exact and len(term) < 2):
            raise _bad("term must be at least 2 characters long (1 with exact_match)")
        fields = [f for f in params.get("fields", "").split(",") if f] or list(
            SEARCH_FIELDS[entity]
        )
        bad = [f for f in fields if f not in SEARCH_FIELDS[entity]]
        if bad:
            raise _bad(
                f"fields must be among {', '.join(SEARCH_FIELDS[entity])}; got {', '.join(bad)}"
            )
        filters = {
            name: _int_param(params, name) for name in SEARCH_FILTERS[entity] if name in params
        }
        limit = _limit(params)
        wanted = term.lower()
        with self._lock:
            # The notes' texts by the record they are attached to, gathered once per search.
            notes: dict[int, list[str]] = {}
            if "notes" in fields:
                owner = {"persons": "person_id", "organizations": "org_id", "deals": "deal_id"}
                for note in self._notes.values():
                    notes.setdefault(note[owner[entity]], []).append(note["content"])
            items = []
            for record in self._records[entity].values():
                if record["is_deleted"] or any(
                    record["org_id" if n == "organization_id" else n] != v
                    for n, v in filters.items()
                ):
                    continue
                texts = self._search_texts(entity, record, fields, notes)
                hits = [t for t in texts if (t.lower() == wanted if exact else wanted in t.lower())]
                if hits:
                    score = (
                        1.0
                        if any(t.lower() == wanted for t in hits)
                        else round(len(wanted) / max(len(t) for t in hits), 4)
                    )
                    items.append(
                        {"result_score": score, "item": self._search_item(entity, record, fields)}
                    )
            items.sort(key=lambda i: (-i["result_score"], i["item"]["id"]))
            return _paginate(items, limit, params.get("cursor"))

    def _search_texts(
        self,
        entity: str,
        record: Mapping[str, Any],
        fields: list[str],
        notes: Mapping[int, list[str]],
    ) -> list[str]:
        texts: list[str] = []
        for name in fields:
            if name in ("name", "title"):
                texts.append(record[name] or "")
            elif name in ("email", "phone"):
                texts += [item["value"] for item in record[name + "s"]]
            elif name == "address":
                texts.append((record["address"] or {}).get("value", ""))
            elif name == "notes":
                texts += notes.get(record["id"], [])
            else:
                texts += [
                    str(value)
                    for key, value in record["custom_fields"].items()
                    if value is not None
                    and self._fields[entity][key].field_type in SEARCHABLE_TYPES
                ]
        return texts

    def _search_item(
        self, entity: str, record: Mapping[str, Any], fields: list[str]
    ) -> dict[str, Any]:
        custom = (
            self._search_texts(entity, record, ["custom_fields"], {})
            if "custom_fields" in fields
            else []
        )
        common = {
            "id": record["id"],
            "type": SINGULAR[entity].lower(),
            "visible_to": record["visible_to"],
            "owner": {"id": record["owner_id"]},
            "custom_fields": custom,
            "notes": [],
        }
        organization = self._records["organizations"].get(record.get("org_id") or 0)
        org_ref = (
            {
                "id": organization["id"],
                "name": organization["name"],
                "address": (organization["address"] or {}).get("value"),
            }
            if organization
            else None
        )
        if entity == "persons":
            return {
                **common,
                "name": record["name"],
                "phones": [p["value"] for p in record["phones"]],
                "emails": [e["value"] for e in record["emails"]],
                "organization": org_ref,
                "update_time": record["update_time"],
            }
        if entity == "organizations":
            return {
                **common,
                "name": record["name"],
                "address": (record["address"] or {}).get("value"),
                "update_time": record["update_time"],
            }
        person = self._records["persons"].get(record["person_id"] or 0)
        return {
            **common,
            "title": record["title"],
            "value": record["value"],
            "currency": record["currency"],
            "status": record["status"],
            "stage": {"id": record["stage_id"], "name": STAGE_NAME[record["stage_id"]]},
            "person": {"id": person["id"], "name": person["name"]} if person else None,
            "organization": org_ref,
        }

    def merge(self, entity: str, record_id: int, body: Any) -> dict[str, Any]:
        survivor_id = body.get("merge_with_id") if isinstance(body, dict) else None
        with self._lock:
            merged = self._live(entity, record_id)
            survivor = self._live(entity, _int(survivor_id, "merge_with_id"))
            if merged is survivor:
                raise _bad("Cannot merge a record with itself")
            for name, value in merged.items():
                if name == "custom_fields":
                    for key, custom in value.items():
                        if survivor["custom_fields"].get(key) is None:
                            survivor["custom_fields"][key] = custom
                elif name in ("emails", "phones"):
                    known = {item["value"] for item in survivor[name]}
                    survivor[name] += [
                        {**item, "primary": False} for item in value if item["value"] not in known
                    ]
                elif survivor.get(name) in (None, "", []):
                    survivor[name] = value
            merged.update(is_deleted=True, update_time=_now())
            survivor["update_time"] = _now()
            link = "person_id" if entity == "persons" else "org_id"
            moved = [*self._records["deals"].values(), *self._notes.values()]
            if entity == "organizations":
                moved += list(self._records["persons"].values())
            for item in moved:
                if item.get(link) == merged["id"]:
                    item[link] = survivor["id"]
            return {"id": survivor["id"], "merge_what_id": merged["id"], "name": survivor["name"]}

    # --- notes ---------------------------------------------------------------------------------

    def add_note(self, body: Any) -> dict[str, Any]:
        body = body if isinstance(body, dict) else {}
        content = body.get("content")
        if not isinstance(content, str) or not content.strip():
            raise _bad("Note content is required")
        with self._lock:
            links = {
                "deal_id": self._reference("deals", body.get("deal_id"), "deal_id"),
                "person_id": self._reference("persons", body.get("person_id"), "person_id"),
                "org_id": self._reference("organizations", body.get("org_id"), "org_id"),
            }
            if body.get("lead_id") is not None:
                raise _bad(f"Lead {body['lead_id']} does not exist")
            if all(v is None for v in links.values()):
                raise _bad("A note must be attached to a deal, person, organization or lead")
            now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")  # v1 timestamps
            note = {
                "id": self._next("notes"),
                "user_id": OWNER_ID,
                **links,
                "lead_id": None,
                "content": content,
                "add_time": now,
                "update_time": now,
                "active_flag": True,
                "pinned_to_deal_flag": False,
                "pinned_to_person_flag": False,
                "pinned_to_organization_flag": False,
                "last_update_user_id": None,
            }
            self._notes[note["id"]] = note
            return dict(note)

    def update_note(self, note_id: int, body: Any) -> dict[str, Any]:
        """`PUT /api/v1/notes/{id}`: change the content (and links) of an existing note."""
        body = body if isinstance(body, dict) else {}
        with self._lock:
            note = self._notes.get(note_id)
            if note is None:
                raise PipedriveError(404, f"Note {note_id} not found")
            content = body.get("content", note["content"])
            if not isinstance(content, str) or not content.strip():
                raise _bad("Note content is required")
            note["content"] = content
            for link, entity in (
                ("deal_id", "deals"),
                ("person_id", "persons"),
                ("org_id", "organizations"),
            ):
                if body.get(link) is not None:
                    note[link] = self._reference(entity, body[link], link)
            note["update_time"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
            return dict(note)

    def notes(self, params: Mapping[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        filters = {
            name: _int_param(params, name)
            for name in ("deal_id", "person_id", "org_id")
            if name in params
        }
        start = _int_param(params, "start") if "start" in params else 0
        limit = _limit(params)
        with self._lock:
            found = [
                dict(n) for n in self._notes.values() if all(n[k] == v for k, v in filters.items())
            ]
        page = found[start : start + limit]
        more = start + limit < len(found)
        pagination = {"start": start, "limit": limit, "more_items_in_collection": more}
        if more:
            pagination["next_start"] = start + limit
        return page, {"pagination": pagination}

    # --- control and truth ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "config": {name: getattr(self.config, name) for name in _CONTROL_KNOBS},
                "lead_id_field_keys": {entity: self.lead_id_key(entity) for entity in ENTITIES},
                "answers": {str(s): n for s, n in sorted(self._usage.answers.items())},
                "faults": self.faults.state(),
            }

    def truth(self, kind: str | None = None) -> dict[str, Any]:
        with self._lock:
            everything: dict[str, Any] = {}
            for entity in ENTITIES:
                live = [
                    self._public(entity, r)
                    for r in self._records[entity].values()
                    if not r["is_deleted"]
                ]
                key = self.lead_id_key(entity)
                everything[entity] = {
                    "count": len(live),
                    "duplicates": duplicates([r["custom_fields"].get(key) for r in live]),
                    "merged": sum(1 for r in self._records[entity].values() if r["is_deleted"]),
                    "records": live,
                }
            notes = list(self._notes.values())
            everything["notes"] = {
                "count": len(notes),
                "duplicates": duplicates(
                    [
                        f"deal={n['deal_id']} person={n['person_id']} org={n['org_id']}: {n['content']}"
                        for n in notes
                    ]
                ),
                "records": [dict(n) for n in notes],
            }
            return everything if kind is None else {kind: everything[kind]}


class _RateLimited(Exception):
    def __init__(self, reset: float) -> None:
        super().__init__(f"over the limit for {reset:.1f} s")
        self.reset = reset


def _blank(entity: str) -> dict[str, Any]:
    common = {"owner_id": OWNER_ID, "is_deleted": False, "visible_to": 3, "label_ids": []}
    if entity == "persons":
        return {
            **common,
            "name": None,
            "org_id": None,
            "emails": [],
            "phones": [],
            "marketing_status": None,
            "picture_id": None,
        }
    if entity == "organizations":
        return {**common, "name": None, "address": None}
    return {
        **common,
        "title": None,
        "creator_user_id": OWNER_ID,
        "value": 0,
        "currency": "USD",
        "person_id": None,
        "org_id": None,
        "pipeline_id": None,
        "stage_id": None,
        "status": "open",
        "probability": None,
        "expected_close_date": None,
        "stage_change_time": None,
    }


def _contact_items(value: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _bad(f"Validation failed: {name}: expected a list of {{value, primary, label}}")
    items = []
    for item in value:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("value"), str)
            or not item["value"]
        ):
            raise _bad(f"Validation failed: {name}: every item needs a value")
        if not isinstance(item.get("primary", False), bool) or not isinstance(
            item.get("label", "work"), str
        ):
            raise _bad(f"Validation failed: {name}: primary must be a boolean and label a string")
        items.append(
            {
                "value": item["value"],
                "primary": item.get("primary", False),
                "label": item.get("label", "work"),
            }
        )
    if sum(1 for item in items if item["primary"]) > 1:
        raise _bad(f"Validation failed: {name}: at most one item can be primary")
    return items


def _paginate(items: list[Any], limit: int, cursor: str | None) -> tuple[list[Any], str | None]:
    start = decode_cursor(cursor)
    end = start + limit
    return items[start:end], encode_cursor(end) if end < len(items) else None


def _int_param(params: Mapping[str, str], name: str) -> int:
    raw = params.get(name, "")
    if not raw.isdigit():
        raise _bad(f"{name} must be a non-negative integer")
    return int(raw)


def _bool_param(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name, "false")
    if raw not in ("true", "false"):
        raise _bad(f"{name} must be true or false")  # v2 accepts no 1/0 (migration guide)
    return raw == "true"


def _limit(params: Mapping[str, str]) -> int:
    if "limit" not in params:
        return DEFAULT_LIMIT
    limit = _int_param(params, "limit")
    if not 1 <= limit <= MAX_LIMIT:
        raise _bad(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------


def pipedrive_app(sandbox: PipedriveSandbox) -> ASGIApp:
    """The Pipedrive stand-in as an ASGI app (mount it under `/pipedrive`)."""

    def api(
        handler: Callable[[Request, Any], Response],
    ) -> Callable[[Request], Awaitable[Response]]:
        """API token, burst limit, JSON body, Pipedrive's error envelope and rate headers."""

        async def endpoint(request: Request) -> Response:
            token = request.headers.get("x-api-token") or request.query_params.get("api_token")
            raw = await request.body()
            try:
                sandbox.authorize(token)
            except PipedriveError as exc:
                sandbox.record_answer(exc.status)
                return JSONResponse({**exc.body(), "errorCode": exc.status}, status_code=exc.status)
            except _RateLimited as exc:
                sandbox.record_answer(429)
                return sandbox.throttled(exc.reset)
            assert token is not None
            try:
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    raise _bad("The request body is not valid JSON") from None
                response = handler(request, body)
            except PipedriveError as exc:
                response = JSONResponse(exc.body(), status_code=exc.status)
            response.headers.update(sandbox.rate_headers(token))
            sandbox.record_answer(response.status_code)
            return response

        return endpoint

    def entity_of(request: Request) -> str:
        entity = request.path_params["entity"]
        if entity not in ENTITIES:
            raise PipedriveError(404, f"Unknown entity {entity}")
        return entity

    def record_id(request: Request) -> int:
        raw = request.path_params["record_id"]
        if not raw.isdigit():
            raise _bad("id must be an integer")
        return int(raw)

    def envelope(data: Any, status: int = 200, additional: Any = None) -> Response:
        return JSONResponse(
            {"success": True, "data": data, "additional_data": additional}, status_code=status
        )

    def collection(request: Request, body: Any) -> Response:
        entity = entity_of(request)
        if request.method == "POST":
            return envelope(sandbox.create(entity, body))
        page, next_cursor = sandbox.list_records(
            entity, _limit(request.query_params), request.query_params.get("cursor")
        )
        return envelope(page, additional={"next_cursor": next_cursor})

    def one(request: Request, body: Any) -> Response:
        entity = entity_of(request)
        if request.method == "GET":
            return envelope(sandbox.get(entity, record_id(request)))
        return envelope(sandbox.update(entity, record_id(request), body))

    def search(request: Request, body: Any) -> Response:
        items, next_cursor = sandbox.search(entity_of(request), request.query_params)
        return envelope({"items": items}, additional={"next_cursor": next_cursor})

    def merge(request: Request, body: Any) -> Response:
        entity = request.path_params["entity"]
        if entity not in ("persons", "organizations"):
            raise PipedriveError(404, f"Unknown entity {entity}")
        return envelope(sandbox.merge(entity, record_id(request), body))

    def notes(request: Request, body: Any) -> Response:
        if request.method == "POST":
            return envelope(sandbox.add_note(body), status=201)
        page, additional = sandbox.notes(request.query_params)
        return envelope(page, additional=additional)

    def note(request: Request, body: Any) -> Response:
        return envelope(sandbox.update_note(record_id(request), body))

    def entity_fields(request: Request, body: Any) -> Response:
        entity = FIELD_LISTS.get(request.path_params["field_list"])
        if entity is None:
            raise PipedriveError(404, "Unknown field list")
        if request.method == "POST":
            return envelope(sandbox.add_field(entity, body), status=201)
        everything = sandbox.field_list(entity)
        start = _int_param(request.query_params, "start") if "start" in request.query_params else 0
        limit = _limit(request.query_params)
        more = start + limit < len(everything)
        pagination = {"start": start, "limit": limit, "more_items_in_collection": more}
        return envelope(everything[start : start + limit], additional={"pagination": pagination})

    def pipelines(request: Request, body: Any) -> Response:
        rows = [
            {
                "id": pid,
                "name": name,
                "order_nr": pid,
                "is_deleted": False,
                "is_deal_probability_enabled": False,
                "add_time": EPOCH,
                "update_time": EPOCH,
                "is_selected": pid == min(PIPELINES),
            }
            for pid, (name, _) in PIPELINES.items()
        ]
        page, next_cursor = _paginate(
            rows, _limit(request.query_params), request.query_params.get("cursor")
        )
        return envelope(page, additional={"next_cursor": next_cursor})

    def stages(request: Request, body: Any) -> Response:
        wanted = (
            _int_param(request.query_params, "pipeline_id")
            if "pipeline_id" in request.query_params
            else None
        )
        rows = [
            {
                "id": sid,
                "order_nr": order,
                "name": name,
                "is_deleted": False,
                "deal_probability": 100,
                "pipeline_id": pid,
                "is_deal_rot_enabled": False,
                "days_to_rotten": None,
                "add_time": EPOCH,
                "update_time": EPOCH,
            }
            for pid, (_, stage_list) in PIPELINES.items()
            if wanted in (None, pid)
            for order, (sid, name) in enumerate(stage_list, start=1)
        ]
        page, next_cursor = _paginate(
            rows, _limit(request.query_params), request.query_params.get("cursor")
        )
        return envelope(page, additional={"next_cursor": next_cursor})

    routes: list[BaseRoute] = [
        Route("/api/v2/pipelines", api(pipelines), methods=["GET"]),
        Route("/api/v2/stages", api(stages), methods=["GET"]),
        Route("/api/v2/{entity}/search", api(search), methods=["GET"]),
        Route("/api/v2/{entity}", api(collection), methods=["GET", "POST"]),
        Route("/api/v2/{entity}/{record_id}", api(one), methods=["GET", "PATCH"]),
        Route("/api/v1/notes", api(notes), methods=["GET", "POST"]),
        Route("/api/v1/notes/{record_id}", api(note), methods=["PUT"]),
        Route("/api/v1/{entity}/{record_id}/merge", api(merge), methods=["PUT"]),
        Route("/api/v1/{field_list}", api(entity_fields), methods=["GET", "POST"]),
    ]
    return crm_app("pipedrive", sandbox, routes)
