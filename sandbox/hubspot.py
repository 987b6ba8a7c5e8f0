"""A stand-in for the HubSpot CRM API (v3 objects and properties, v4 associations, v3 lists)
for contacts and companies.

Mounted by `sandbox.server` under `/hubspot`: the real client runs unchanged with
`hubspot.Client.create(access_token=<token>, host="http://127.0.0.1:<port>/hubspot")` (every
API of hubspot-api-client 12 takes its base URL from `host`). Authentication is a private-app
token as `Authorization: Bearer`; anything else answers 401 `{"status": "error", "message":
"Authentication credentials not found. ...", "correlationId", "category":
"INVALID_AUTHENTICATION"}`. Errors have HubSpot's shape `{status, message, correlationId,
category, [errors, context]}`; a non-2xx answer makes the client raise `ApiException`.

Endpoints, `{objectType}` being `contacts` or `companies` (`contact`/`company`, `0-1`/`0-2` too):

- `POST /crm/v3/objects/{objectType}` `{properties, associations?}` always creates (201); a
  contact whose `email` another contact has, or a value another record holds in a unique
  property, answers 409 `CONFLICT` ("Contact already exists. Existing ID: N").
- `GET`/`PATCH /crm/v3/objects/{objectType}/{id}[?idProperty=&properties=]`.
- `POST /crm/v3/objects/{objectType}/batch/upsert` `{"inputs": [{"id", "idProperty",
  "properties"}]}`: at most 100 inputs, ids unique within the batch, `idProperty` a unique
  property (`email` for contacts, or a custom one with `hasUniqueValue`); creates or updates
  by that value -> 200 `{status: "COMPLETE", results: [{id, properties, createdAt, updatedAt,
  archived, new}], startedAt, completedAt}`, or 207 with `errors` and `numErrors` when some
  inputs conflict (the rest are written). As HubSpot warns, results do not come back in
  input order (the sandbox shuffles them, seeded): match them by the id property's value.
  Property problems (unknown `PROPERTY_DOESNT_EXIST`, read-only `READ_ONLY_VALUE`, bad
  number `INVALID_FLOAT`, option `INVALID_OPTION`, email `INVALID_EMAIL`) fail the whole
  request with 400 `VALIDATION_ERROR` "Property values were not valid: [...]".
- `POST /crm/v3/objects/{objectType}/search` `{filterGroups: [{filters: [{propertyName,
  operator: EQ|NEQ|IN|NOT_IN|HAS_PROPERTY|NOT_HAS_PROPERTY, value | values}]}], properties,
  sorts, limit <= 200, after}` -> `{total, results, paging: {next: {after}}}`; string
  comparisons ignore case. Its own limit: `search_requests_per_second` (429 `SECONDLY`).
- `POST /crm/v3/objects/{objectType}/merge` `{primaryObjectId, objectIdToMerge}` -> the
  primary, which keeps its values, takes the other's where it has none, and inherits its
  associations and list memberships; the merged record is gone (404).
- `GET /crm/v3/properties/{objectType}[/{name}]` (404 `OBJECT_NOT_FOUND` when missing);
  `POST /crm/v3/properties/{objectType}` creates a property (`name`, `label`, `type`,
  `fieldType`, `groupName`, `hasUniqueValue`; 409 when it exists; at most 10 unique ones).
- `PUT /crm/v4/objects/{from}/{fromId}/associations/default/{to}/{toId}` and `POST
  /crm/v4/associations/{from}/{to}/batch/associate/default` `{inputs: [{from: {id}, to:
  {id}}]}` -> the default (unlabeled) association both ways (contact->company type 279).
- `PUT /crm/v3/lists/{listId}/memberships/add` with a JSON list of record ids ->
  `{recordsIdsAdded, recordIdsMissing, recordIdsRemoved}` (the key names of HubSpot's spec).
  The sandbox has the manual contact lists `list_ids` (default `["1"]`).

Limits (settings): `requests_per_ten_seconds` on a rolling 10-second window and
`requests_per_day`; over either, 429 `{"status": "error", "message": "You have reached your
ten_secondly_rolling limit.", "errorType": "RATE_LIMIT", "correlationId", "policyName":
"TEN_SECONDLY_ROLLING" | "DAILY"}`. Authenticated answers carry
`X-HubSpot-RateLimit-Interval-Milliseconds`, `-Max`, `-Remaining`, `-Daily`,
`-Daily-Remaining`. Injected faults (`sandbox.crm_faults`): 500 `INTERNAL_ERROR` (the
sandbox's wording) and that 429.

Control (see `sandbox.crm_faults`): knobs `requests_per_ten_seconds`, `requests_per_day`,
`search_requests_per_second`, `list_ids`, the fault knobs, `"reset": true`; truth kinds
`contacts`, `companies` (duplicates by the `id_property` setting's property), `associations`,
`lists`.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
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
from sandbox.hunter import SlidingWindowLimiter, parse_positive_int

PORTAL_ID = 24681357
OBJECT_TYPES = {
    "contacts": "contacts", "contact": "contacts", "0-1": "contacts",
    "companies": "companies", "company": "companies", "0-2": "companies",
}  # fmt: skip
OTHER_TYPE = {"contacts": "companies", "companies": "contacts"}
# Default (unlabeled) association type ids, by direction.
DEFAULT_ASSOCIATION_TYPE = {("contacts", "companies"): 279, ("companies", "contacts"): 280}
MAX_BATCH_INPUTS = 100
MAX_SEARCH_LIMIT = 200
MAX_FILTER_GROUPS, MAX_FILTERS_PER_GROUP = 5, 6
MAX_UNIQUE_PROPERTIES = 10
TEN_SECONDS = 10.0
DAY = 86_400.0
PROPERTY_TYPES = ("string", "number", "date", "datetime", "enumeration", "bool")
FIELD_TYPES = (
    "textarea",
    "text",
    "date",
    "file",
    "number",
    "select",
    "radio",
    "checkbox",
    "booleancheckbox",
    "calculation_equation",
    "phonenumber",
)
PROPERTY_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,99}")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
READ_ONLY = frozenset(
    {
        "hs_object_id",
        "createdate",
        "lastmodifieddate",
        "hs_lastmodifieddate",
        "hs_merged_object_ids",
    }
)
GROUPS = {"contacts": "contactinformation", "companies": "companyinformation"}
DEFAULT_READ = {
    "contacts": (
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    ),
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
}
MODIFIED = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate"}
LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
LEAD_STATUSES = (
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
    "BAD_TIMING",
)

# name, type, fieldType, options (enumerations)
_BUILT_IN: dict[str, tuple[tuple[str, str, str, tuple[str, ...]], ...]] = {
    "contacts": (
        ("email", "string", "text", ()), ("firstname", "string", "text", ()),
        ("lastname", "string", "text", ()), ("phone", "string", "phonenumber", ()),
        ("mobilephone", "string", "phonenumber", ()), ("company", "string", "text", ()),
        ("website", "string", "text", ()), ("jobtitle", "string", "text", ()),
        ("address", "string", "text", ()), ("city", "string", "text", ()),
        ("state", "string", "text", ()), ("zip", "string", "text", ()),
        ("country", "string", "text", ()), ("industry", "string", "text", ()),
        ("lifecyclestage", "enumeration", "radio", LIFECYCLE_STAGES),
        ("hs_lead_status", "enumeration", "radio", LEAD_STATUSES),
        ("createdate", "datetime", "date", ()), ("lastmodifieddate", "datetime", "date", ()),
        ("hs_object_id", "number", "number", ()),
        ("hs_merged_object_ids", "enumeration", "checkbox", ()),
    ),
    "companies": (
        ("name", "string", "text", ()), ("domain", "string", "text", ()),
        ("website", "string", "text", ()), ("phone", "string", "phonenumber", ()),
        ("address", "string", "text", ()), ("city", "string", "text", ()),
        ("state", "string", "text", ()), ("zip", "string", "text", ()),
        ("country", "string", "text", ()), ("industry", "string", "text", ()),
        ("description", "string", "textarea", ()), ("numberofemployees", "number", "number", ()),
        ("annualrevenue", "number", "number", ()),
        ("createdate", "datetime", "date", ()), ("hs_lastmodifieddate", "datetime", "date", ()),
        ("hs_object_id", "number", "number", ()),
        ("hs_merged_object_ids", "enumeration", "checkbox", ()),
    ),
}  # fmt: skip


class HubSpotError(Exception):
    def __init__(self, status: int, category: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {
            "status": "error",
            "message": self.message,
            "correlationId": str(uuid.uuid4()),
            "category": self.category,
            **self.extra,
        }


def _property_error(problems: list[dict[str, Any]]) -> HubSpotError:
    return HubSpotError(
        400,
        "VALIDATION_ERROR",
        "Property values were not valid: " + json.dumps(problems, separators=(",", ":")),
    )


def _problem(name: str, code: str, message: str) -> dict[str, Any]:
    return {
        "isValid": False,
        "message": message,
        "error": code,
        "name": name,
        "localizedErrorMessage": message,
        "portalId": PORTAL_ID,
    }


def _not_found(object_id: str) -> HubSpotError:
    return HubSpotError(
        404,
        "OBJECT_NOT_FOUND",
        "Object not found.  objectId are usually numeric.",
        context={"id": [object_id]},
    )


def _object_type(raw: str) -> str:
    kind = OBJECT_TYPES.get(raw.lower())
    if kind is None:
        raise HubSpotError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {raw}")
    return kind


def _iso(moment: float) -> str:
    return (
        datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{int(moment * 1000) % 1000:03d}Z"
    )


@dataclass(slots=True)
class HubObject:
    id: str
    properties: dict[str, str]
    created: float
    updated: float

    def as_json(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        props = self.properties if names is None else {n: self.properties.get(n) for n in names}
        return {
            "id": self.id,
            "properties": dict(props),
            "createdAt": _iso(self.created),
            "updatedAt": _iso(self.updated),
            "archived": False,
        }


@dataclass(slots=True)
class HubSpotSandboxConfig:
    access_token: str = "sandbox-hubspot-token"
    id_property: str = "leadflow_lead_id"
    requests_per_ten_seconds: int = 100
    requests_per_day: int = 250_000
    search_requests_per_second: int = 5
    list_ids: tuple[str, ...] = ("1",)
    seed: int = 42

    @classmethod
    def from_settings(cls, settings: Settings, seed: int | None = None) -> HubSpotSandboxConfig:
        return cls(
            access_token=settings.sandbox_crm_hubspot_access_token,
            id_property=settings.sandbox_crm_hubspot_id_property,
            requests_per_ten_seconds=settings.sandbox_crm_hubspot_requests_per_ten_seconds,
            requests_per_day=settings.sandbox_crm_hubspot_requests_per_day,
            search_requests_per_second=settings.sandbox_crm_hubspot_search_requests_per_second,
            seed=settings.sandbox_seed if seed is None else seed,
        )


def _parse_list_ids(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.isdigit() for v in value):
        raise ValueError(f"expected a list of numeric strings, got {value!r}")
    return tuple(value)


_CONTROL_KNOBS: dict[str, Callable[[Any], Any]] = {
    "requests_per_ten_seconds": parse_positive_int,
    "requests_per_day": parse_positive_int,
    "search_requests_per_second": parse_positive_int,
    "list_ids": _parse_list_ids,
}


@dataclass(slots=True)
class _Usage:
    day: deque[float] = field(default_factory=deque)  # clock times of the last day's requests
    answers: Counter[int] = field(default_factory=Counter)


class HubSpotSandbox(CrmSandboxBase[HubSpotSandboxConfig]):
    """The portal's state: properties, contacts, companies, associations, lists, usage."""

    name = "hubspot"
    config_type = HubSpotSandboxConfig
    control_knobs = _CONTROL_KNOBS

    def _fault_error(self) -> Response:
        return JSONResponse(
            HubSpotError(500, "INTERNAL_ERROR", "internal error").body(), status_code=500
        )

    def _fault_throttled(self) -> Response:
        return self.throttled("TEN_SECONDLY_ROLLING")

    def _clear(self) -> None:
        now = time.time()
        self._properties: dict[str, dict[str, dict[str, Any]]] = {}
        for kind, specs in _BUILT_IN.items():
            self._properties[kind] = {
                name: _property(
                    name,
                    kind,
                    prop_type,
                    field_type,
                    options,
                    unique=(kind, name) == ("contacts", "email"),
                    built_in=True,
                    at=now,
                )
                for name, prop_type, field_type, options in specs
            }
        self._objects: dict[str, dict[str, HubObject]] = {"contacts": {}, "companies": {}}
        self._associations: set[tuple[str, str]] = set()  # (contact id, company id)
        self._lists: dict[str, list[str]] = {list_id: [] for list_id in self.config.list_ids}
        self._serial = 10_000
        self._order_rng = random.Random(f"hubspot-order/{self.config.seed}")
        self._usage = _Usage()
        self._limiter = SlidingWindowLimiter(self._clock)

    # --- limits -----------------------------------------------------------------------------------

    def authorize(self, header: str | None, search: bool) -> None:
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.config.access_token:
            raise HubSpotError(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            )
        with self._lock:
            c, now = self.config, self._clock()
            while self._usage.day and self._usage.day[0] <= now - DAY:
                self._usage.day.popleft()
            if len(self._usage.day) >= c.requests_per_day:
                raise _RateLimited("DAILY")
            # Both windows are checked before either records the request: a refused request
            # counts against no limit.
            if self._limiter.used("ten", TEN_SECONDS) >= c.requests_per_ten_seconds:
                raise _RateLimited("TEN_SECONDLY_ROLLING")
            if search and self._limiter.used("search", 1.0) >= c.search_requests_per_second:
                raise _RateLimited("SECONDLY")
            self._limiter.admit("ten", [(TEN_SECONDS, c.requests_per_ten_seconds)])
            if search:
                self._limiter.admit("search", [(1.0, c.search_requests_per_second)])
            self._usage.day.append(now)

    def rate_headers(self) -> dict[str, str]:
        with self._lock:
            c = self.config
            used = self._limiter.used("ten", TEN_SECONDS)
            return {
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(TEN_SECONDS * 1000)),
                "X-HubSpot-RateLimit-Max": str(c.requests_per_ten_seconds),
                "X-HubSpot-RateLimit-Remaining": str(max(0, c.requests_per_ten_seconds - used)),
                "X-HubSpot-RateLimit-Daily": str(c.requests_per_day),
                "X-HubSpot-RateLimit-Daily-Remaining": str(
                    max(0, c.requests_per_day - len(self._usage.day))
                ),
            }

    def throttled(self, policy: str) -> Response:
        body = {
            "status": "error",
            "message": f"You have reached your {policy.lower()} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "groupName": f"publicapi:private-app:{PORTAL_ID}",
        }
        return JSONResponse(
            body,
            status_code=429,
            headers={**self.rate_headers(), "X-HubSpot-RateLimit-Remaining": "0"},
        )

    def record_answer(self, status: int) -> None:
        with self._lock:
            self._usage.answers[status] += 1

    # --- properties -------------------------------------------------------------------------------

    def property(self, kind: str, name: str) -> dict[str, Any]:
        with self._lock:
            found = self._properties[kind].get(name)
            if found is None:
                raise HubSpotError(
                    404,
                    "OBJECT_NOT_FOUND",
                    f"Unable to find property with name '{name}' for object type '{kind}'.",
                )
            return found

    def properties(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._properties[kind].values())

    def create_property(self, kind: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
        name, label = body.get("name"), body.get("label")
        prop_type, field_type, group = (
            body.get("type"),
            body.get("fieldType"),
            body.get("groupName"),
        )
        unique = bool(body.get("hasUniqueValue", False))
        if not isinstance(name, str) or not PROPERTY_NAME_RE.fullmatch(name):
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Property name {name!r} must start with a lower-case letter and hold only a-z, 0-9 and _",
            )
        if not isinstance(label, str) or not label.strip():
            raise HubSpotError(400, "VALIDATION_ERROR", "label is required")
        if prop_type not in PROPERTY_TYPES or field_type not in FIELD_TYPES:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"type must be one of {PROPERTY_TYPES} and fieldType one of {FIELD_TYPES}",
            )
        if group != GROUPS[kind]:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Property group {group!r} does not exist for {kind} (the sandbox has {GROUPS[kind]!r})",
            )
        if unique and prop_type not in ("string", "number"):
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                "Only single-line text and number properties can require unique values",
            )
        options = body.get("options") or []
        if prop_type == "enumeration" and not options:
            raise HubSpotError(400, "VALIDATION_ERROR", "An enumeration property needs options")
        with self._lock:
            existing = self._properties[kind]
            if name in existing:
                raise HubSpotError(
                    409, "OBJECT_ALREADY_EXISTS", f"Property named '{name}' already exists."
                )
            if (
                unique
                and sum(
                    1 for p in existing.values() if p["hasUniqueValue"] and not p["hubspotDefined"]
                )
                >= MAX_UNIQUE_PROPERTIES
            ):
                raise HubSpotError(
                    400,
                    "VALIDATION_ERROR",
                    f"An object can have at most {MAX_UNIQUE_PROPERTIES} unique properties",
                )
            values = tuple(o["value"] for o in options if isinstance(o, dict) and "value" in o)
            created = _property(
                name,
                kind,
                prop_type,
                field_type,
                values,
                unique=unique,
                built_in=False,
                at=time.time(),
                label=label,
                description=body.get("description", ""),
            )
            existing[name] = created
            return created

    def _checked(
        self, kind: str, raw: Any, *, problems: list[dict[str, Any]]
    ) -> dict[str, str | None]:
        """Property values as HubSpot stores them (strings; None clears), problems collected."""
        if not isinstance(raw, dict):
            problems.append(_problem("properties", "INVALID_INPUT", "properties must be an object"))
            return {}
        checked: dict[str, str | None] = {}
        for name, value in raw.items():
            spec = self._properties[kind].get(name)
            if spec is None:
                problems.append(
                    _problem(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
                )
                continue
            if name in READ_ONLY:
                problems.append(
                    _problem(
                        name,
                        "READ_ONLY_VALUE",
                        f'"{name}" is a read only property; its value cannot be set.',
                    )
                )
                continue
            text = (
                None
                if value is None
                else str(value).lower()
                if isinstance(value, bool)
                else str(value)
            )
            if text in (None, ""):
                checked[name] = None
                continue
            if spec["type"] == "number" and not re.fullmatch(r"-?\d+(\.\d+)?", text):
                problems.append(_problem(name, "INVALID_FLOAT", f"{text} was not a valid number."))
            elif (
                spec["type"] == "enumeration"
                and spec["options"]
                and text not in {o["value"] for o in spec["options"]}
            ):
                problems.append(
                    _problem(
                        name,
                        "INVALID_OPTION",
                        f"{text} was not one of the allowed options: {[o['value'] for o in spec['options']]}",
                    )
                )
            elif (kind, name) == ("contacts", "email") and not EMAIL_RE.fullmatch(text):
                problems.append(_problem(name, "INVALID_EMAIL", f"Email address {text} is invalid"))
            else:
                checked[name] = text
        return checked

    def _unique_names(self, kind: str) -> list[str]:
        return [name for name, spec in self._properties[kind].items() if spec["hasUniqueValue"]]

    def _find(self, kind: str, name: str, value: str) -> HubObject | None:
        wanted = value.lower()
        return next(
            (
                o
                for o in self._objects[kind].values()
                if (o.properties.get(name) or "").lower() == wanted
            ),
            None,
        )

    def _conflict(
        self, kind: str, obj_id: str | None, props: Mapping[str, str | None]
    ) -> HubSpotError | None:
        for name in self._unique_names(kind):
            value = props.get(name)
            other = self._find(kind, name, value) if value else None
            if other is not None and other.id != obj_id:
                what = "Contact" if kind == "contacts" else "Company"
                return HubSpotError(
                    409,
                    "CONFLICT",
                    f"{what} already exists. Existing ID: {other.id}",
                    context={"id": [other.id], "property": [name]},
                )
        return None

    def _write(
        self, kind: str, obj: HubObject | None, props: Mapping[str, str | None]
    ) -> HubObject:
        now = time.time()
        if obj is None:
            self._serial += 1
            obj = HubObject(str(self._serial), {}, now, now)
            obj.properties.update(hs_object_id=obj.id, createdate=_iso(now))
            self._objects[kind][obj.id] = obj
        for name, value in props.items():
            if value is None:
                obj.properties.pop(name, None)
            else:
                obj.properties[name] = value
        obj.updated = now
        obj.properties[MODIFIED[kind]] = _iso(now)
        return obj

    # --- objects ----------------------------------------------------------------------------------

    def create(self, kind: str, body: Any) -> dict[str, Any]:
        problems: list[dict[str, Any]] = []
        with self._lock:
            props = self._checked(
                kind, body.get("properties") if isinstance(body, dict) else None, problems=problems
            )
            if problems:
                raise _property_error(problems)
            links = self._inline_associations(kind, body.get("associations") or [])
            conflict = self._conflict(kind, None, props)
            if conflict is not None:
                raise conflict
            obj = self._write(kind, None, props)
            for other_id in links:
                self._associate(kind, obj.id, other_id)
            return obj.as_json()

    def _inline_associations(self, kind: str, associations: Any) -> list[str]:
        """The ids a create request associates its new record with (default type only)."""
        other = OTHER_TYPE[kind]
        type_id = DEFAULT_ASSOCIATION_TYPE[(kind, other)]
        if not isinstance(associations, list):
            raise HubSpotError(400, "VALIDATION_ERROR", "associations must be a list")
        ids = []
        for item in associations:
            try:
                target, types = str(item["to"]["id"]), item["types"]
            except (KeyError, TypeError):
                raise HubSpotError(
                    400, "VALIDATION_ERROR", "Every association needs to.id and types"
                ) from None
            if not types or any(
                not isinstance(t, dict) or t.get("associationTypeId") != type_id for t in types
            ):
                raise HubSpotError(
                    400,
                    "VALIDATION_ERROR",
                    f"The sandbox supports the default association type {type_id} only",
                )
            if target not in self._objects[other]:
                raise HubSpotError(400, "VALIDATION_ERROR", f"{other} {target!r} does not exist")
            ids.append(target)
        return ids

    def _resolve(self, kind: str, object_id: str, id_property: str | None) -> HubObject:
        if id_property:
            found = self._find(kind, id_property, object_id)
        else:
            found = self._objects[kind].get(object_id)
        if found is None:
            raise _not_found(object_id)
        return found

    def get(
        self, kind: str, object_id: str, id_property: str | None, names: list[str]
    ) -> dict[str, Any]:
        with self._lock:
            obj = self._resolve(kind, object_id, id_property)
            return obj.as_json(
                [*DEFAULT_READ[kind], *(n for n in names if n in self._properties[kind])]
            )

    def update(
        self, kind: str, object_id: str, id_property: str | None, body: Any
    ) -> dict[str, Any]:
        problems: list[dict[str, Any]] = []
        with self._lock:
            obj = self._resolve(kind, object_id, id_property)
            props = self._checked(
                kind, body.get("properties") if isinstance(body, dict) else None, problems=problems
            )
            if problems:
                raise _property_error(problems)
            conflict = self._conflict(kind, obj.id, props)
            if conflict is not None:
                raise conflict
            return self._write(kind, obj, props).as_json()

    def batch_upsert(self, kind: str, body: Any) -> tuple[int, dict[str, Any]]:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            raise HubSpotError(400, "VALIDATION_ERROR", "inputs must be a non-empty list")
        if len(inputs) > MAX_BATCH_INPUTS:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Batch input limit of {MAX_BATCH_INPUTS} exceeded: {len(inputs)} inputs",
            )
        started = time.time()
        with self._lock:
            problems: list[dict[str, Any]] = []
            plans: list[tuple[str, str, dict[str, str | None]]] = []
            for item in inputs:
                item = item if isinstance(item, dict) else {}
                value, id_property = item.get("id"), item.get("idProperty")
                if not isinstance(value, str) or not value:
                    raise HubSpotError(
                        400, "VALIDATION_ERROR", "Every input needs a non-empty string id"
                    )
                spec = (
                    self._properties[kind].get(id_property)
                    if isinstance(id_property, str)
                    else None
                )
                if spec is None:
                    problems.append(
                        _problem(
                            str(id_property),
                            "PROPERTY_DOESNT_EXIST",
                            f'Property "{id_property}" does not exist',
                        )
                    )
                    continue
                if not spec["hasUniqueValue"]:
                    raise HubSpotError(
                        400,
                        "VALIDATION_ERROR",
                        f"{id_property} is not a unique identifier property: upsert needs a property with hasUniqueValue",
                    )
                plans.append(
                    (
                        value,
                        id_property,
                        self._checked(kind, item.get("properties"), problems=problems),
                    )
                )
            if problems:
                raise _property_error(problems)
            repeated = sorted(
                v for v, n in Counter(v.lower() for v, _, _ in plans).items() if n > 1
            )
            if repeated:
                raise HubSpotError(
                    400,
                    "VALIDATION_ERROR",
                    f"Duplicate IDs found in batch input: {repeated}. IDs must be unique",
                )
            results, errors = [], []
            for value, id_property, props in plans:
                existing = self._find(kind, id_property, value)
                props = {
                    **props,
                    id_property: value if existing is None else existing.properties[id_property],
                }
                conflict = self._conflict(kind, existing.id if existing else None, props)
                if conflict is not None:
                    errors.append(
                        {**conflict.body(), "context": {"ids": [value]}, "links": {}, "errors": []}
                    )
                    continue
                obj = self._write(kind, existing, props)
                results.append({**obj.as_json(), "new": existing is None})
            self._order_rng.shuffle(results)
        answer: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": _iso(started),
            "completedAt": _iso(time.time()),
        }
        if errors:
            answer.update(errors=errors, numErrors=len(errors))
            return 207, answer
        return 200, answer

    def search(self, kind: str, body: Any) -> dict[str, Any]:
        body = body if isinstance(body, dict) else {}
        groups = body.get("filterGroups") or []
        limit, after = body.get("limit", 10), body.get("after") or "0"
        if not isinstance(limit, int) or not 0 < limit <= MAX_SEARCH_LIMIT:
            raise HubSpotError(
                400, "VALIDATION_ERROR", f"limit must be between 1 and {MAX_SEARCH_LIMIT}"
            )
        if not str(after).isdigit():
            raise HubSpotError(
                400, "VALIDATION_ERROR", "after must be the paging.next.after of a previous page"
            )
        if len(groups) > MAX_FILTER_GROUPS or any(
            len(g.get("filters") or []) > MAX_FILTERS_PER_GROUP for g in groups
        ):
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"At most {MAX_FILTER_GROUPS} filterGroups of at most {MAX_FILTERS_PER_GROUP} filters each",
            )
        with self._lock:
            known = self._properties[kind]
            tests = [[_filter_test(f, known) for f in g.get("filters") or []] for g in groups]
            matches = [
                o
                for o in self._objects[kind].values()
                if not tests or any(all(t(o) for t in group) for group in tests)
            ]
            for sort in reversed(body.get("sorts") or []):
                name = sort if isinstance(sort, str) else sort.get("propertyName", "")
                descending = isinstance(sort, dict) and sort.get("direction") == "DESCENDING"
                matches.sort(key=lambda o, n=name: o.properties.get(n) or "", reverse=descending)
            start = int(after)
            names = [
                "createdate",
                "hs_object_id",
                MODIFIED[kind],
                *(n for n in body.get("properties") or [] if n in known),
            ]
            page = [o.as_json(names) for o in matches[start : start + limit]]
            answer: dict[str, Any] = {"total": len(matches), "results": page}
            if start + limit < len(matches):
                answer["paging"] = {"next": {"after": str(start + limit)}}
            return answer

    def merge(self, kind: str, body: Any) -> dict[str, Any]:
        body = body if isinstance(body, dict) else {}
        primary_id, other_id = (
            str(body.get("primaryObjectId", "")),
            str(body.get("objectIdToMerge", "")),
        )
        with self._lock:
            primary = self._resolve(kind, primary_id, None)
            other = self._resolve(kind, other_id, None)
            if primary.id == other.id:
                raise HubSpotError(
                    400, "VALIDATION_ERROR", "An object cannot be merged with itself"
                )
            del self._objects[kind][other.id]
            taken = {
                n: v
                for n, v in other.properties.items()
                if n not in READ_ONLY and n not in primary.properties
            }
            merged_ids = [
                i for i in (primary.properties.get("hs_merged_object_ids") or "").split(";") if i
            ]
            self._write(kind, primary, taken)
            primary.properties["hs_merged_object_ids"] = ";".join([*merged_ids, other.id])
            index = 0 if kind == "contacts" else 1
            for pair in [p for p in self._associations if p[index] == other.id]:
                self._associations.discard(pair)
                self._associations.add(
                    (primary.id, pair[1]) if index == 0 else (pair[0], primary.id)
                )
            for members in self._lists.values():
                if other.id in members:
                    members.remove(other.id)
                    if primary.id not in members:
                        members.append(primary.id)
            return primary.as_json()

    # --- associations and lists -------------------------------------------------------------------

    def _associate(self, kind: str, from_id: str, to_id: str) -> dict[str, Any]:
        other = OTHER_TYPE[kind]
        if from_id not in self._objects[kind]:
            raise _not_found(from_id)
        if to_id not in self._objects[other]:
            raise _not_found(to_id)
        self._associations.add((from_id, to_id) if kind == "contacts" else (to_id, from_id))
        spec = {
            "associationCategory": "HUBSPOT_DEFINED",
            "associationTypeId": DEFAULT_ASSOCIATION_TYPE[(kind, other)],
        }
        return {"from": {"id": from_id}, "to": {"id": to_id}, "associationSpec": spec}

    def associate_default(
        self, from_kind: str, to_kind: str, pairs: list[tuple[str, str]]
    ) -> tuple[int, dict[str, Any]]:
        if OTHER_TYPE[from_kind] != to_kind:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"The sandbox associates contacts with companies only, not {from_kind} with {to_kind}",
            )
        started = time.time()
        results, errors = [], []
        with self._lock:
            for from_id, to_id in pairs:
                try:
                    results.append(self._associate(from_kind, from_id, to_id))
                except HubSpotError as exc:
                    errors.append(
                        {
                            **exc.body(),
                            "context": exc.extra.get("context", {}),
                            "links": {},
                            "errors": [],
                        }
                    )
        if len(pairs) == 1 and errors:
            raise _not_found(errors[0]["context"]["id"][0])
        answer: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": _iso(started),
            "completedAt": _iso(time.time()),
        }
        if errors:
            answer.update(errors=errors, numErrors=len(errors))
            return 207, answer
        return 200, answer

    def add_to_list(self, list_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, list) or not all(
            isinstance(i, str | int) and not isinstance(i, bool) for i in body
        ):
            raise HubSpotError(
                400, "VALIDATION_ERROR", "The body must be a JSON list of record ids"
            )
        with self._lock:
            members = self._lists.get(list_id)
            if members is None:
                raise HubSpotError(404, "OBJECT_NOT_FOUND", f"List {list_id} does not exist.")
            added, missing = [], []
            for record_id in map(str, body):
                if record_id not in self._objects["contacts"]:
                    missing.append(record_id)
                elif record_id not in members:
                    members.append(record_id)
                    added.append(record_id)
            return {"recordsIdsAdded": added, "recordIdsMissing": missing, "recordIdsRemoved": []}

    # --- control and truth ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            c = self.config
            return {
                "config": {
                    **{name: getattr(c, name) for name in _CONTROL_KNOBS},
                    "id_property": c.id_property,
                },
                "usage": {
                    "ten_seconds": self._limiter.used("ten", TEN_SECONDS),
                    "day": len(self._usage.day),
                },
                "answers": {str(s): n for s, n in sorted(self._usage.answers.items())},
                "faults": self.faults.state(),
            }

    def _apply_knobs(self, knobs: dict[str, Any]) -> None:
        super()._apply_knobs(knobs)
        for list_id in self.config.list_ids:
            self._lists.setdefault(list_id, [])

    def truth(self, kind: str | None = None) -> dict[str, Any]:
        with self._lock:
            prop = self.config.id_property
            everything = {
                **{
                    k: {
                        "count": len(objects),
                        "duplicates": duplicates(
                            [o.properties.get(prop) for o in objects.values()]
                        ),
                        "records": [o.as_json() for o in objects.values()],
                    }
                    for k, objects in self._objects.items()
                },
                "associations": {
                    "count": len(self._associations),
                    "records": [
                        {"contact": c, "company": co} for c, co in sorted(self._associations)
                    ],
                },
                "lists": {list_id: list(members) for list_id, members in self._lists.items()},
            }
            return everything if kind is None else {kind: everything[kind]}


class _RateLimited(Exception):
    def __init__(self, policy: str) -> None:
        super().__init__(policy)
        self.policy = policy


def _property(
    name: str, kind: str, prop_type: str, field_type: str, options: tuple[str, ...], *,
    unique: bool, built_in: bool, at: float, label: str | None = None, description: str = "",
) -> dict[str, Any]:  # fmt: skip
    """A property definition in the shape of HubSpot's properties API."""
    return {
        "name": name,
        "label": label or name.replace("_", " ").title(),
        "type": prop_type,
        "fieldType": field_type,
        "groupName": GROUPS[kind],
        "description": description,
        "options": [
            {"label": o, "value": o, "displayOrder": i, "hidden": False}
            for i, o in enumerate(options)
        ],
        "hasUniqueValue": unique,
        "hubspotDefined": built_in,
        "calculated": False,
        "externalOptions": False,
        "formField": True,
        "hidden": False,
        "displayOrder": -1,
        "createdAt": _iso(at),
        "updatedAt": _iso(at),
        "archived": False,
        "modificationMetadata": {
            "archivable": not built_in,
            "readOnlyDefinition": built_in,
            "readOnlyValue": name in READ_ONLY,
        },
    }


def _filter_test(spec: Any, known: Mapping[str, Any]) -> Callable[[HubObject], bool]:
    """One search filter as a test on a record (string comparisons ignore case)."""
    if not isinstance(spec, dict):
        raise HubSpotError(400, "VALIDATION_ERROR", "Every filter must be an object")
    name, operator = spec.get("propertyName"), spec.get("operator")
    if name not in known:
        raise HubSpotError(
            400,
            "VALIDATION_ERROR",
            f"There was a problem with the request: property {name!r} does not exist",
        )

    def value_of(obj: HubObject) -> str | None:
        found = obj.properties.get(name)
        return None if found is None else found.lower()

    if operator in ("EQ", "NEQ"):
        wanted = str(spec.get("value", "")).lower()
        return (
            (lambda o: value_of(o) == wanted)
            if operator == "EQ"
            else (lambda o: value_of(o) != wanted)
        )
    if operator in ("IN", "NOT_IN"):
        values = spec.get("values")
        if not isinstance(values, list):
            raise HubSpotError(400, "VALIDATION_ERROR", f"{operator} needs a values list")
        wanted_set = {str(v).lower() for v in values}
        return (
            (lambda o: value_of(o) in wanted_set)
            if operator == "IN"
            else (lambda o: value_of(o) not in wanted_set)
        )
    if operator in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        return (
            (lambda o: value_of(o) is not None)
            if operator == "HAS_PROPERTY"
            else (lambda o: value_of(o) is None)
        )
    raise HubSpotError(
        400, "VALIDATION_ERROR", f"The sandbox does not support the {operator} operator"
    )


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------


def hubspot_app(sandbox: HubSpotSandbox) -> ASGIApp:
    """The HubSpot stand-in as an ASGI app (mount it under `/hubspot`)."""

    def api(
        handler: Callable[[Request, Any], Response], *, search: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """Token, rate limits, JSON body, HubSpot's error shape and rate-limit headers."""

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                sandbox.authorize(request.headers.get("authorization"), search)
            except HubSpotError as exc:
                sandbox.record_answer(exc.status)
                return JSONResponse(exc.body(), status_code=exc.status)
            except _RateLimited as exc:
                response = sandbox.throttled(exc.policy)
                sandbox.record_answer(response.status_code)
                return response
            try:
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    raise HubSpotError(
                        400, "VALIDATION_ERROR", "Invalid input JSON on line 1"
                    ) from None
                response = handler(request, body)
            except HubSpotError as exc:
                response = JSONResponse(exc.body(), status_code=exc.status)
            response.headers.update(sandbox.rate_headers())
            sandbox.record_answer(response.status_code)
            return response

        return endpoint

    def kind_of(request: Request) -> str:
        return _object_type(request.path_params["object_type"])

    def create(request: Request, body: Any) -> Response:
        return JSONResponse(sandbox.create(kind_of(request), body), status_code=201)

    def by_id(request: Request, body: Any) -> Response:
        kind, object_id = kind_of(request), request.path_params["object_id"]
        id_property = request.query_params.get("idProperty")
        if request.method == "GET":
            names = [n for n in request.query_params.get("properties", "").split(",") if n]
            return JSONResponse(sandbox.get(kind, object_id, id_property, names))
        return JSONResponse(sandbox.update(kind, object_id, id_property, body))

    def batch_upsert(request: Request, body: Any) -> Response:
        status, answer = sandbox.batch_upsert(kind_of(request), body)
        return JSONResponse(answer, status_code=status)

    def search(request: Request, body: Any) -> Response:
        return JSONResponse(sandbox.search(kind_of(request), body))

    def merge(request: Request, body: Any) -> Response:
        return JSONResponse(sandbox.merge(kind_of(request), body))

    def properties(request: Request, body: Any) -> Response:
        kind = kind_of(request)
        if request.method == "GET":
            return JSONResponse({"results": sandbox.properties(kind)})
        return JSONResponse(sandbox.create_property(kind, body), status_code=201)

    def one_property(request: Request, body: Any) -> Response:
        return JSONResponse(sandbox.property(kind_of(request), request.path_params["name"]))

    def associate_one(request: Request, body: Any) -> Response:
        p = request.path_params
        status, answer = sandbox.associate_default(
            _object_type(p["from_type"]), _object_type(p["to_type"]), [(p["from_id"], p["to_id"])]
        )
        return JSONResponse(answer, status_code=status)

    def associate_batch(request: Request, body: Any) -> Response:
        p = request.path_params
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            raise HubSpotError(400, "VALIDATION_ERROR", "inputs must be a non-empty list")
        try:
            pairs = [(str(i["from"]["id"]), str(i["to"]["id"])) for i in inputs]
        except (KeyError, TypeError):
            raise HubSpotError(
                400, "VALIDATION_ERROR", "Every input needs from.id and to.id"
            ) from None
        status, answer = sandbox.associate_default(
            _object_type(p["from_type"]), _object_type(p["to_type"]), pairs
        )
        return JSONResponse(answer, status_code=status)

    def add_members(request: Request, body: Any) -> Response:
        return JSONResponse(sandbox.add_to_list(request.path_params["list_id"], body))

    objects = "/crm/v3/objects/{object_type}"
    routes: list[BaseRoute] = [
        Route(objects, api(create), methods=["POST"]),
        Route(objects + "/batch/upsert", api(batch_upsert), methods=["POST"]),
        Route(objects + "/search", api(search, search=True), methods=["POST"]),
        Route(objects + "/merge", api(merge), methods=["POST"]),
        Route(objects + "/{object_id}", api(by_id), methods=["GET", "PATCH"]),
        Route("/crm/v3/properties/{object_type}", api(properties), methods=["GET", "POST"]),
        Route("/crm/v3/properties/{object_type}/{name}", api(one_property), methods=["GET"]),
        Route(
            "/crm/v4/objects/{from_type}/{from_id}/associations/default/{to_type}/{to_id}",
            api(associate_one),
            methods=["PUT"],
        ),
        Route(
            "/crm/v4/associations/{from_type}/{to_type}/batch/associate/default",
            api(associate_batch),
            methods=["POST"],
        ),
        Route("/crm/v3/lists/{list_id}/memberships/add", api(add_members), methods=["PUT"]),
    ]
    return crm_app("hubspot", sandbox, routes)
