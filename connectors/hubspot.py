"""HubSpot CRM client: companies and contacts upserted by lead_id, associated, and listed.

Built on `hubspot-api-client` (`hubspot.Client.create(access_token=..., host=...)`; the host is
`LEADFLOW_HUBSPOT_HOST`: the sandbox stand-in in sandbox mode, https://api.hubapi.com
otherwise). What `upsert` does, per chunk of at most 100 records (HubSpot's batch limit):

1. once per client: the unique property `leadflow_lead_id` exists on every mapped object
   (created with `hasUniqueValue` if missing), and so does every other property the mapping
   names (created as text, or number when the lead field is a number), from one read of each
   object's property list;
2. companies, then contacts, through the batch upsert endpoints with
   `idProperty=leadflow_lead_id`: the lead_id, never an email, finds the record, so a repeated
   call updates what the first one wrote. Results come back in no particular order and are
   matched by that property's value;
3. each contact gets the default association with its company (v4 batch form);
4. contacts join the list `options.list_id` of the mapping, when set (adding a member twice
   is a no-op).

Workflow enrolment is not offered: HubSpot's v3/v4 APIs have no enrolment call (only the legacy
v2 one, by email) and the sandbox none at all, so a `workflow_id` option is refused; enrol
through the list instead (a workflow triggered by membership of `list_id`).

Every request is safe to repeat after a lost response, a time-out (the write may still land) or
a 5xx, so each is retried `retries` times, waiting `backoff` doubling per retry (at most
`backoff_max`). A 429 waits Retry-After, else the rate-limit window HubSpot's headers name (10
s), at most `backoff_max`; a 429 past the retries, or HubSpot's DAILY policy, ends the call:
the records not done get `throttled` outcomes and no further request is made. A record HubSpot
refuses for its data (an invalid email or number, an email another contact holds) fails on its
own, not retryable, with HubSpot's message: a refused batch is split in halves until the
refused records are found. One refusal is expected, not an error: HubSpot holds one contact
per email, and branches of a chain often share one, so a contact whose email another lead's
contact already holds is sent again without the email (the lead_id still identifies it).
401/403 raise `CrmError` (a private-app token cannot be renewed here). Empty mapped values
are left out of the payload, so a value someone typed into HubSpot is not wiped by a lead that
lacks it. Responses are read as raw JSON, not the client's models: its v4 batch association
method maps no 207 answer, and its models reject enum values they do not know. The token never
appears in logs or errors.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import hubspot
import urllib3
from hubspot.crm.associations.v4 import ApiException as AssociationsApiException
from hubspot.crm.companies import ApiException as CompaniesApiException
from hubspot.crm.contacts import ApiException as ContactsApiException
from hubspot.crm.lists import ApiException as ListsApiException
from hubspot.crm.properties import ApiException as PropertiesApiException
from pydantic import BaseModel

from connectors.common import Limiter
from leadflow.settings import Settings, get_settings
from models.crm import (
    OBJECTS,
    CrmError,
    CrmMappingError,
    Destination,
    DestinationMapping,
    FieldRule,
    MappedLead,
    SyncOutcome,
    load_mapping,
)
from models.lead import Lead

log = logging.getLogger("leadflow.hubspot")

ID_PROPERTY = "leadflow_lead_id"
BATCH_LIMIT = 100  # inputs per batch upsert, association and list call
OBJECT_TYPES = {"company": "companies", "contact": "contacts"}
PROPERTY_GROUPS = {"company": "companyinformation", "contact": "contactinformation"}
OPTIONS = ("list_id",)
# Property problems that come from the mapping (every record naming that property fails), not
# from one record's value: splitting the batch would not isolate anything.
MAPPING_PROBLEMS = frozenset({"PROPERTY_DOESNT_EXIST", "READ_ONLY_VALUE"})
# Categories of per-record batch errors that are about the record's data (e.g. CONFLICT: its
# email belongs to another contact), so retrying the same payload cannot help.
REFUSED_CATEGORIES = frozenset({"CONFLICT", "VALIDATION_ERROR", "OBJECT_ALREADY_EXISTS"})
_API_ERRORS = (
    ContactsApiException,
    CompaniesApiException,
    PropertiesApiException,
    AssociationsApiException,
    ListsApiException,
)


class _Throttled(Exception):
    """HubSpot still answered 429 after the retries, or the day's budget is spent."""


class _Refused(Exception):
    """A request that failed for good: `retryable` when a later run may succeed (5xx or no
    answer after the retries), not when HubSpot refused the request itself (4xx)."""

    def __init__(
        self, message: str, *, status: int | None, retryable: bool, body: Mapping[str, Any]
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.body = body

    def value_problems_only(self) -> bool:
        """Whether HubSpot refused property values (a record's data), not the mapping."""
        problems = _property_problems(self.body)
        return bool(problems) and all(p.get("error") not in MAPPING_PROBLEMS for p in problems)


@dataclass(frozen=True)
class _Answer:
    status: int
    body: dict[str, Any]
    uncertain: bool  # an earlier attempt got no answer: it may have written too


@dataclass(frozen=True)
class _Written:
    id: str
    new: bool
    uncertain: bool


@dataclass(frozen=True)
class _Failure:
    error: str
    retryable: bool
    conflict: bool = False  # a unique value (e.g. the email) belongs to another record


@dataclass
class _Progress:
    """One lead's way through a call: ids written so far, then ok, failed or throttled."""

    external_ids: dict[str, str] = field(default_factory=dict)
    created: bool = False
    failure: _Failure | None = None
    done: bool = False

    def outcome(self, lead_id: str, throttled: str | None) -> SyncOutcome:
        ids = dict(self.external_ids)
        if self.failure is not None:
            return SyncOutcome(
                lead_id, ok=False, external_ids=ids, created=self.created,
                error=self.failure.error, retryable=self.failure.retryable,
            )  # fmt: skip
        if self.done:
            return SyncOutcome(lead_id, ok=True, external_ids=ids, created=self.created)
        return SyncOutcome(
            lead_id, ok=False, external_ids=ids, created=self.created,
            error=throttled or "not sent", throttled=throttled is not None,
        )  # fmt: skip


class HubSpotClient:
    """One HubSpot portal, built from settings (`from_settings`) or explicit arguments."""

    destination: Destination = "hubspot"

    def __init__(
        self,
        access_token: str,
        host: str,
        mapping: DestinationMapping,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 1.0,
        backoff_max: float = 10.0,
        limiter: Limiter | None = None,
    ) -> None:
        self.mapping = mapping
        self.objects = [o for o in OBJECTS["hubspot"] if o in mapping.objects]
        self.list_id = _check_options(mapping)
        for name in self.objects:
            if ID_PROPERTY in mapping.objects[name].fields:
                raise CrmMappingError(
                    f"hubspot.{name}.{ID_PROPERTY}: the connector writes the lead_id there; "
                    "do not map it"
                )
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.limiter = limiter
        # retry=False: urllib3 must not repeat requests on its own, so every retry is counted
        # and paced here. Each API object holds its own connection pool: build them once.
        crm = hubspot.Client.create(
            access_token=access_token, host=host.rstrip("/"), retry=False
        ).crm
        self._batch = {"company": crm.companies.batch_api, "contact": crm.contacts.batch_api}
        self._basic = {"company": crm.companies.basic_api, "contact": crm.contacts.basic_api}
        self._properties = crm.properties.core_api
        self._associations = crm.associations.v4.batch_api
        self._lists = crm.lists.memberships_api
        self._setup_lock = threading.Lock()
        self._properties_ready = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        mapping: DestinationMapping | None = None,
        limiter: Limiter | None = None,
    ) -> HubSpotClient:
        """The configured client; `mapping` defaults to the mapping file's hubspot entry."""
        settings = settings or get_settings()
        if mapping is None:
            found = load_mapping(Path(settings.crm_mapping)).destinations.get("hubspot")
            if found is None:
                raise CrmMappingError(f"{settings.crm_mapping}: no hubspot destination")
            mapping = found
        token = settings.hubspot_token
        if token is None:
            raise CrmError("HubSpot: no private-app token (set LEADFLOW_HUBSPOT_ACCESS_TOKEN)")
        return cls(
            token.get_secret_value(),
            settings.hubspot_base_url,
            mapping,
            timeout=settings.hubspot_timeout,
            retries=settings.hubspot_retries,
            backoff=settings.hubspot_backoff,
            backoff_max=settings.hubspot_backoff_max,
            limiter=limiter,
        )

    def close(self) -> None:
        apis = [*self._batch.values(), *self._basic.values()]
        for api in [*apis, self._properties, self._associations, self._lists]:
            api.api_client.rest_client.pool_manager.clear()

    # --- the CrmClient protocol ---------------------------------------------------------

    def upsert(
        self, records: list[MappedLead], known: dict[str, dict[str, str]]
    ) -> list[SyncOutcome]:
        if not records:
            return []
        # One input per lead (HubSpot refuses a batch naming an id twice): the last one wins.
        latest = {r.lead_id: r for r in records}
        progress = {lead_id: _Progress() for lead_id in latest}
        throttled: str | None = None
        try:
            self._ensure_properties()
            unique = list(latest.values())
            for start in range(0, len(unique), BATCH_LIMIT):
                self._sync_chunk(unique[start : start + BATCH_LIMIT], progress, known)
        except _Throttled as exc:
            throttled = str(exc)
            log.warning("%s: the rest of the batch waits for the next run", exc)
        return [progress[r.lead_id].outcome(r.lead_id, throttled) for r in records]

    def merge(self, survivor: dict[str, str], tombstone: dict[str, str]) -> bool:
        """Merge the tombstone's contact and company into the survivor's. A record merged
        already (the answer to an earlier merge was lost) counts as done."""
        try:
            for name in ("contact", "company"):
                keep, gone = survivor.get(name), tombstone.get(name)
                if keep and gone and keep != gone:
                    self._merge_one(name, keep, gone)
        except (_Throttled, _Refused) as exc:
            raise CrmError(str(exc)) from None
        return True

    def clear_email(self, external_ids: dict[str, str]) -> None:
        """Set the contact's `email`, and every property mapped from an email, to "" (how
        HubSpot clears a value). A record that is gone has no email left to clear."""
        try:
            for name in self.objects:
                record_id = external_ids.get(name)
                fields = self._email_properties(name)
                if not record_id or not fields:
                    continue
                body = {"properties": dict.fromkeys(fields, "")}
                try:
                    self._call(
                        f"{OBJECT_TYPES[name]} update", self._basic[name].update, record_id, body
                    )
                except _Refused as exc:
                    if exc.status != 404:
                        raise
        except (_Throttled, _Refused) as exc:
            raise CrmError(str(exc)) from None

    # --- upsert steps -------------------------------------------------------------------

    def _ensure_properties(self) -> None:
        """Once per client: the unique lead-id property and every mapped property exist."""
        with self._setup_lock:
            if self._properties_ready:
                return
            try:
                for name in self.objects:
                    kind = OBJECT_TYPES[name]
                    answer = self._call(f"{kind} properties", self._properties.get_all, kind)
                    existing = {p.get("name"): p for p in answer.body.get("results") or []}
                    id_spec = existing.get(ID_PROPERTY)
                    if id_spec is None:
                        self._create_property(name, ID_PROPERTY, "string", unique=True)
                    elif not id_spec.get("hasUniqueValue"):
                        raise CrmError(
                            f"HubSpot {kind} property {ID_PROPERTY} exists without unique "
                            "values: upserts need a unique one, and HubSpot cannot make an "
                            "existing property unique; fix it in HubSpot"
                        )
                    for prop, rule in self.mapping.objects[name].fields.items():
                        if prop not in existing:
                            self._create_property(name, prop, _property_type(rule), unique=False)
            except _Refused as exc:
                raise CrmError(str(exc)) from None
            self._properties_ready = True

    def _create_property(
        self, name: str, prop: str, prop_type: Literal["string", "number"], *, unique: bool
    ) -> None:
        kind = OBJECT_TYPES[name]
        body = {
            "name": prop,
            "label": "Leadflow lead id" if prop == ID_PROPERTY else prop.replace("_", " ").title(),
            "type": prop_type,
            "fieldType": "number" if prop_type == "number" else "text",
            "groupName": PROPERTY_GROUPS[name],
            "hasUniqueValue": unique,
            "description": "Written by the Leadflow CRM sync.",
        }
        try:
            self._call(f"create {kind} property {prop}", self._properties.create, kind, body)
        except _Refused as exc:
            # 409: another sync made it, or our own earlier attempt did and its answer was lost.
            if exc.status != 409:
                raise
        log.info("HubSpot %s property %s ready (%s%s)", kind, prop, prop_type, ", unique" * unique)

    def _sync_chunk(
        self,
        chunk: Sequence[MappedLead],
        progress: dict[str, _Progress],
        known: Mapping[str, Mapping[str, str]],
    ) -> None:
        for name in self.objects:  # companies first: a contact is associated with its company
            todo = [r for r in chunk if progress[r.lead_id].failure is None]
            if not todo:
                break
            for lead_id, result in self._upsert_objects(name, todo).items():
                p = progress[lead_id]
                if isinstance(result, _Failure):
                    p.failure = result
                    continue
                p.external_ids[name] = result.id
                # Created: HubSpot said so, or an attempt whose answer never came may have
                # created it (then the next attempt saw it as existing) and the ledger did not
                # know this id yet.
                p.created |= result.new or (
                    result.uncertain and (known.get(lead_id) or {}).get(name) != result.id
                )
        ok = [r.lead_id for r in chunk if progress[r.lead_id].failure is None]
        if "company" in self.objects and "contact" in self.objects:
            self._associate(ok, progress)
        if self.list_id is not None and "contact" in self.objects:
            self._add_to_list(ok, progress)
        for lead_id in ok:
            progress[lead_id].done = progress[lead_id].failure is None

    def _upsert_objects(
        self, name: str, records: Sequence[MappedLead]
    ) -> dict[str, _Written | _Failure]:
        """Batch upsert by the lead-id property; a batch refused for a record's values is
        split in halves until each refused record stands alone."""
        kind = OBJECT_TYPES[name]
        inputs = [
            {
                "id": r.lead_id,
                "idProperty": ID_PROPERTY,
                "properties": _hubspot_values(r.objects.get(name) or {}),
            }
            for r in records
        ]
        try:
            answer = self._call(
                f"{kind} batch upsert", self._batch[name].upsert, {"inputs": inputs}
            )
        except _Refused as exc:
            if len(records) > 1 and exc.value_problems_only():
                half = len(records) // 2
                return {
                    **self._upsert_objects(name, records[:half]),
                    **self._upsert_objects(name, records[half:]),
                }
            return {r.lead_id: _Failure(str(exc), exc.retryable) for r in records}
        found: dict[str, _Written | _Failure] = {}
        for result in answer.body.get("results") or []:
            value = (result.get("properties") or {}).get(ID_PROPERTY)
            if value and result.get("id"):
                found[str(value).lower()] = _Written(
                    str(result["id"]), bool(result.get("new")), answer.uncertain
                )
        for error in answer.body.get("errors") or []:
            category = str(error.get("category") or "")
            message = f"HubSpot {kind} upsert: {category}: {error.get('message')}"
            for value in (error.get("context") or {}).get("ids") or []:
                found.setdefault(
                    str(value).lower(),
                    _Failure(
                        message,
                        category not in REFUSED_CATEGORIES,
                        conflict=category == "CONFLICT",
                    ),
                )
        missing = _Failure(f"HubSpot {kind} upsert: no result for this record", True)
        # HubSpot matches unique values without regard to case; so does this lookup.
        results = {r.lead_id: found.get(r.lead_id.lower(), missing) for r in records}
        shared_email = [
            r
            for r in records
            if name == "contact"
            and (r.objects.get(name) or {}).get("email")
            and isinstance(failure := results[r.lead_id], _Failure)
            and failure.conflict
        ]
        if shared_email:
            log.info(
                "%d HubSpot contacts share their email with another contact: sent without it",
                len(shared_email),
            )
            results.update(
                self._upsert_objects(name, [_without(r, name, "email") for r in shared_email])
            )
        return results

    def _associate(self, lead_ids: Sequence[str], progress: dict[str, _Progress]) -> None:
        pairs = [
            (lead_id, ids["contact"], ids["company"])
            for lead_id in lead_ids
            if "contact" in (ids := progress[lead_id].external_ids) and "company" in ids
        ]
        if not pairs:
            return
        body = {"inputs": [{"from": {"id": c}, "to": {"id": co}} for _, c, co in pairs]}
        try:
            answer = self._call(
                "contact-company associations",
                self._associations.create_default,
                "contacts",
                "companies",
                body,
            )
        except _Refused as exc:
            # Both records exist (just written): a later run links them.
            for lead_id, _, _ in pairs:
                progress[lead_id].failure = _Failure(str(exc), True)
            return
        for error in answer.body.get("errors") or []:
            gone = set(map(str, (error.get("context") or {}).get("id") or []))
            for lead_id, contact_id, company_id in pairs:
                if contact_id in gone or company_id in gone:
                    progress[lead_id].failure = _Failure(
                        f"HubSpot association: {error.get('category')}: {error.get('message')}",
                        True,
                    )

    def _add_to_list(self, lead_ids: Sequence[str], progress: dict[str, _Progress]) -> None:
        members = [
            (lead_id, progress[lead_id].external_ids["contact"])
            for lead_id in lead_ids
            if progress[lead_id].failure is None
        ]
        if not members or self.list_id is None:
            return
        try:
            answer = self._call(
                f"list {self.list_id} membership",
                self._lists.add,
                self.list_id,
                [contact_id for _, contact_id in members],
            )
        except _Refused as exc:
            # A 404 (no such list) is the mapping's list_id to fix, not worth retrying.
            for lead_id, _ in members:
                progress[lead_id].failure = _Failure(str(exc), exc.retryable)
            return
        missing = set(map(str, answer.body.get("recordIdsMissing") or []))
        for lead_id, contact_id in members:
            if contact_id in missing:
                progress[lead_id].failure = _Failure(
                    f"HubSpot list {self.list_id}: contact {contact_id} not found", True
                )

    # --- merge and forget ---------------------------------------------------------------

    def _merge_one(self, name: str, keep: str, gone: str) -> None:
        kind = OBJECT_TYPES[name]
        body = {"primaryObjectId": keep, "objectIdToMerge": gone}
        try:
            self._call(f"{kind} merge", self._basic[name].merge, body)
        except _Refused as exc:
            if exc.retryable or not self._merged_already(name, keep, gone):
                raise
            log.info("HubSpot %s %s was merged already", kind, gone)

    def _merged_already(self, name: str, keep: str, gone: str) -> bool:
        """After a refused merge: whether the tombstone's record is merged or gone already."""
        kind, api = OBJECT_TYPES[name], self._basic[name]
        try:
            survivor = self._call(
                f"{kind} read", api.get_by_id, keep, properties=["hs_merged_object_ids"]
            ).body
        except _Refused:
            return False  # the survivor itself is unreadable: the merge error stands
        merged = str((survivor.get("properties") or {}).get("hs_merged_object_ids") or "")
        if gone in merged.split(";"):
            return True
        try:
            record = self._call(f"{kind} read", api.get_by_id, gone).body
        except _Refused as exc:
            return exc.status == 404  # gone (merged elsewhere or deleted): nothing to merge
        # HubSpot answers a merged-away id with the record it lives on now.
        return str(record.get("id")) != gone

    def _email_properties(self, name: str) -> list[str]:
        mapped = [
            prop
            for prop, rule in self.mapping.objects[name].fields.items()
            if rule.source is not None and "email" in rule.source
        ]
        return sorted({*mapped, "email"} if name == "contact" else set(mapped))

    # --- plumbing -------------------------------------------------------------------------

    def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> _Answer:
        """One API request with bounded retries; raw JSON back (see the module docstring)."""
        uncertain = False
        attempt = 0
        while True:
            if self.limiter is not None:
                self.limiter()
            try:
                response = method(
                    *args, _preload_content=False, _request_timeout=self.timeout, **kwargs
                )
                try:
                    raw = response.data  # a lost response fails here, while reading the body
                finally:
                    response.release_conn()
                return _Answer(response.status, _json_object(raw), uncertain)
            except _API_ERRORS as exc:
                status = int(exc.status or 0)
                body = _json_object(exc.body)
                message = _error_message(what, status, body, exc.body)
                if status == 429:
                    wait = rate_limit_wait(exc.headers or {}, body, self.backoff_max)
                    if wait is None or attempt >= self.retries:
                        raise _Throttled(message) from None
                    delay = wait
                elif status in (401, 403):
                    raise CrmError(message) from None  # a wrong or revoked token, missing scopes
                elif status >= 500 or status == 0:
                    uncertain = True  # a 5xx may come after the write
                    if attempt >= self.retries:
                        raise _Refused(message, status=status, retryable=True, body=body) from None
                    delay = self._backoff_delay(attempt)
                else:
                    raise _Refused(message, status=status, retryable=False, body=body) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                # A time-out or a dropped connection: the request may have been processed.
                uncertain = True
                message = f"HubSpot {what}: no answer ({type(exc).__name__}: {exc})"
                if attempt >= self.retries:
                    raise _Refused(message, status=None, retryable=True, body={}) from None
                delay = self._backoff_delay(attempt)
            attempt += 1
            log.warning("%s; retry %d of %d in %.2f s", message, attempt, self.retries, delay)
            time.sleep(delay)

    def _backoff_delay(self, attempt: int) -> float:
        return min(self.backoff * 2**attempt, self.backoff_max)


def rate_limit_wait(
    headers: Mapping[str, str], body: Mapping[str, Any], cap: float
) -> float | None:
    """Seconds to wait after a 429, at most `cap`; None when waiting cannot help (the DAILY
    policy: the day's budget is spent)."""
    if body.get("policyName") == "DAILY":
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    wait: float | None = None
    try:
        if lower.get("retry-after"):
            wait = float(lower["retry-after"])
        elif lower.get("x-hubspot-ratelimit-interval-milliseconds"):
            wait = float(lower["x-hubspot-ratelimit-interval-milliseconds"]) / 1000
    except ValueError:
        wait = None
    if wait is None:
        wait = 1.0 if body.get("policyName") == "SECONDLY" else 10.0
    return max(0.0, min(wait, cap))


def _check_options(mapping: DestinationMapping) -> str | None:
    """The list id from the mapping's options; unknown options are an error, not ignored."""
    options = dict(mapping.options)
    if "workflow_id" in options:
        raise CrmMappingError(
            "hubspot.options.workflow_id: HubSpot's API has no workflow enrolment call the sync "
            "can use; set list_id and let the workflow enrol that list's members"
        )
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise CrmMappingError(
            f"hubspot.options: unknown {', '.join(unknown)} (known: {', '.join(OPTIONS)})"
        )
    list_id = options.get("list_id")
    return None if list_id in (None, "") else str(list_id)


def _without(record: MappedLead, name: str, crm_field: str) -> MappedLead:
    objects = {**record.objects, name: {**record.objects[name], crm_field: None}}
    return replace(record, objects=objects)


def _hubspot_values(values: Mapping[str, Any]) -> dict[str, str]:
    """Mapped values as HubSpot's property strings; empty ones are left out."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, float) and value.is_integer():
            out[name] = str(int(value))
        elif isinstance(value, list):
            out[name] = ";".join(str(v) for v in value)  # HubSpot's multi-value separator
        else:
            out[name] = str(value)
    return out


def _property_type(rule: FieldRule) -> Literal["string", "number"]:
    """The type a missing custom property is created with: number for numeric lead fields."""
    if rule.transform == "int":
        return "number"
    if rule.transform not in (None, "first"):
        return "string"
    if rule.source is None:
        numeric = isinstance(rule.value, int | float) and not isinstance(rule.value, bool)
        return "number" if numeric else "string"
    model: type[BaseModel] | None = Lead
    annotation: Any = None
    for part in rule.source.split("."):
        if model is None or part not in model.model_fields:
            return "string"
        annotation = model.model_fields[part].annotation
        model = _nested_model(annotation)
    return "number" if _is_number(annotation, through_list=rule.transform == "first") else "string"


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _is_number(annotation: Any, *, through_list: bool) -> bool:
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin is list and not through_list:
        return False
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return bool(args) and all(_is_number(a, through_list=through_list) for a in args)


def _json_object(raw: Any) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _property_problems(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-property problems of a VALIDATION_ERROR ("Property values were not valid:
    [...]"), or [] when the body is not one."""
    message = str(body.get("message") or "")
    prefix = "Property values were not valid:"
    if body.get("category") != "VALIDATION_ERROR" or not message.startswith(prefix):
        return []
    try:
        problems = json.loads(message[len(prefix) :])
    except ValueError:
        return []
    return [p for p in problems if isinstance(p, dict)] if isinstance(problems, list) else []


def _error_message(what: str, status: int, body: Mapping[str, Any], raw: Any) -> str:
    kind = body.get("category") or body.get("policyName") or body.get("errorType")
    text = body.get("message")
    if text is None:
        text = raw.decode(errors="replace")[:300] if isinstance(raw, bytes) else str(raw or "")
    return f"HubSpot {what}: HTTP {status}{f' {kind}' if kind else ''}: {text}"
