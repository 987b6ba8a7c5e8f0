"""Pipedrive client (`models.crm.CrmClient`): per lead an organization, a person, a deal and a
note, over Pipedrive's REST API with httpx (v2 for organizations, persons and deals; v1 for
notes, merges and the field lists).

Pipedrive has no upsert: a POST always creates. What makes a replay harmless is the lead's
`lead_id` in the custom field "Leadflow lead id" of each organization, person and deal (its
key is found in `/api/v1/{organization,person,deal}Fields`, created there when missing), and a
marker line `leadflow:<lead_id>` at the end of the note. Per object:

1. an id the ledger knows -> PATCH it (a 404 means it was deleted or merged away: go on);
2. else search by the lead id (`/api/v2/<entity>/search`, custom fields, exact match; notes:
   the deal's notes, by id or marker) and PATCH what is found;
3. only when nothing is found, POST.

A POST whose answer never came (time-out, dropped connection, 5xx) may have written, or may
still write: a proxy can hold it and deliver it later. It is never repeated blindly: the lead
is put aside, and once `write_settle` seconds have passed since that POST was sent (one wait
for all such leads of the batch) it is processed again from step 1, so the search finds what
the POST made. The ids written before a failure are returned, so later runs PATCH them.

Every other call is safe to repeat (GET, PATCH with the same values, a merge whose tombstone is
already gone) and is retried on a 5xx or no answer. A 429 waits for the window Pipedrive
announces (`x-ratelimit-reset`, Retry-After) and retries; still refused after `retries`, the
batch stops and the leads not done are `throttled`. An answer saying the window is used up
(`x-ratelimit-remaining: 0`) pauses the next call until it resets, so a busy sync slows down
instead of collecting 429s. The token travels in the `x-api-token` header only (never in a
URL that could be logged), and no message includes it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from connectors.common import Limiter
from leadflow.settings import Settings, get_settings
from models.crm import (
    CrmError,
    Destination,
    DestinationMapping,
    MappedLead,
    SyncOutcome,
    load_mapping,
)

log = logging.getLogger("leadflow.pipedrive")

LEAD_ID_FIELD = "Leadflow lead id"
# Mapping object -> v2 entity, in the order a lead's records are written (each links the
# ones before it).
ENTITIES = {"organization": "organizations", "person": "persons", "deal": "deals"}
FIELD_LISTS = {
    "organizations": "organizationFields",
    "persons": "personFields",
    "deals": "dealFields",
}
# The v2 body fields a mapping may name directly; any other name is a custom field, given by
# its name or key. `email`/`phone` (persons) and a text `address` (organizations) are
# shorthands turned into v2's shapes.
STANDARD_FIELDS = {
    "organizations": {"name", "owner_id", "address", "visible_to", "label_ids", "add_time"},
    "persons": {
        "name", "owner_id", "org_id", "emails", "phones", "visible_to", "label_ids",
        "marketing_status", "add_time",
    },
    "deals": {
        "title", "value", "currency", "person_id", "org_id", "pipeline_id", "stage_id", "status",
        "owner_id", "probability", "expected_close_date", "visible_to", "label_ids", "add_time",
    },
}  # fmt: skip
# What each object links to (and the v2 body field holding the link).
LINKS = {"person": ("organization",), "deal": ("organization", "person")}
LINK_FIELD = {"organization": "org_id", "person": "person_id"}
PAGE = 500  # Pipedrive's largest page


class _Refused(Exception):
    """Pipedrive refused the request for what it says (400, 403, 422...): do not repeat it."""


class _NotFound(_Refused):
    """404/410: the record is not there (deleted, or merged into another)."""


class _Throttled(Exception):
    """Still 429 after the retries: stop calling for this run."""


class _Unavailable(Exception):
    """5xx or no answer to a call that is safe to repeat, after the retries."""


class _MaybeWritten(Exception):
    """A POST without a clear answer: it may have created the record, now or later."""

    def __init__(self, message: str, sent_at: float) -> None:
        super().__init__(message)
        self.sent_at = sent_at


@dataclass
class _Progress:
    """One lead within an upsert call: ids so far, objects finished, anything created."""

    ids: dict[str, str]
    done: set[str] = field(default_factory=set)
    created: bool = False
    fresh_deal: bool = False  # its deal was just created and no note was tried on it yet
    retry_at: float = 0.0  # when it may be searched for again after an unclear POST
    unclear: int = 0  # unclear POSTs so far


@dataclass(frozen=True)
class _Fields:
    """One entity's custom fields: the lead-id field's key, and every custom field's key by
    its name or key (for mapped custom fields)."""

    lead_id_key: str
    custom_keys: dict[str, str]


class PipedriveClient:
    """One Pipedrive company, built from settings (`from_settings`) or explicit arguments."""

    destination: Destination = "pipedrive"

    def __init__(
        self,
        api_token: str,
        base_url: str,
        *,
        pipeline_id: int | None = None,
        stage_id: int | None = None,
        timeout: float = 20.0,
        retries: int = 4,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        write_settle: float = 45.0,
        workers: int = 1,
        limiter: Limiter | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"x-api-token": api_token, "accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )
        self.pipeline_id = pipeline_id
        self.stage_id = stage_id
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.write_settle = write_settle
        self.workers = max(1, workers)
        self.limiter = limiter
        self._fields: dict[str, _Fields] = {}
        self._resume_at = 0.0  # the rate-limit window is used up until then

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        mapping: DestinationMapping | None = None,
        limiter: Limiter | None = None,
    ) -> PipedriveClient:
        """The configured client. `mapping` (the engine passes the destination's; default: the
        mapping file's pipedrive entry) gives, in its options, the `pipeline_id` and
        `stage_id` of new deals."""
        settings = settings or get_settings()
        if mapping is None:
            mapping = load_mapping(Path(settings.crm_mapping)).destinations.get("pipedrive")
        token = settings.pipedrive_token
        if token is None:
            raise CrmError("Pipedrive: no API token (set LEADFLOW_PIPEDRIVE_API_TOKEN)")
        options = mapping.options if mapping is not None else {}
        return cls(
            token.get_secret_value(),
            settings.pipedrive_base_url,
            pipeline_id=_option_id(options, "pipeline_id"),
            stage_id=_option_id(options, "stage_id"),
            timeout=settings.pipedrive_timeout,
            retries=settings.pipedrive_retries,
            backoff=settings.pipedrive_backoff,
            backoff_max=settings.pipedrive_backoff_max,
            write_settle=settings.pipedrive_write_settle,
            workers=settings.pipedrive_workers,
            limiter=limiter,
        )

    def close(self) -> None:
        self._http.close()

    # --- CrmClient ----------------------------------------------------------------------

    def upsert(
        self, records: list[MappedLead], known: dict[str, dict[str, str]]
    ) -> list[SyncOutcome]:
        """As `CrmClient.upsert`; leads whose create got no clear answer are put aside and
        tried again (searching first) after `write_settle`, up to `retries` times."""
        if not records:
            return []
        try:
            self._discover_fields()
        except _Throttled as exc:
            return [_throttled(r.lead_id, {}, str(exc)) for r in records]

        # Pipedrive has no batch call: each lead is several round trips in a row, so slices
        # of the batch go in parallel. A throttle in one slice stops the others too.
        stop = threading.Event()
        size = -(-len(records) // self.workers)
        slices = [records[i : i + size] for i in range(0, len(records), size)]
        if len(slices) == 1:
            return self._upsert_slice(records, known, stop)
        with ThreadPoolExecutor(len(slices), thread_name_prefix="pipedrive") as pool:
            done = pool.map(lambda part: self._upsert_slice(part, known, stop), slices)
            return [outcome for part in done for outcome in part]

    def _upsert_slice(
        self, records: list[MappedLead], known: dict[str, dict[str, str]], stop: threading.Event
    ) -> list[SyncOutcome]:
        progress = [_Progress(dict(known.get(r.lead_id) or {})) for r in records]
        outcomes: dict[int, SyncOutcome] = {}
        pending = list(range(len(records)))
        while pending:
            unclear: list[int] = []
            for position, index in enumerate(pending):
                record, state = records[index], progress[index]
                if stop.is_set():
                    for rest in [*pending[position:], *unclear]:
                        outcomes[rest] = _throttled(
                            records[rest].lead_id, progress[rest].ids, "Pipedrive said stop"
                        )
                    return [outcomes[i] for i in range(len(records))]
                if state.retry_at:
                    # Its unclear POST gets `write_settle` seconds to land before the lead is
                    # searched for again; leads run in sent order, so mostly one wait in all.
                    _sleep_until(state.retry_at)
                try:
                    self._sync_lead(record, state)
                except _MaybeWritten as exc:
                    state.unclear += 1
                    if state.unclear <= self.retries:
                        state.retry_at = exc.sent_at + self.write_settle
                        unclear.append(index)
                        continue
                    outcomes[index] = _failed(
                        record.lead_id, state, f"{exc}; it may still appear in Pipedrive"
                    )
                except _Refused as exc:
                    outcomes[index] = _failed(record.lead_id, state, str(exc), retryable=False)
                except _Throttled as exc:
                    stop.set()
                    for rest in [*pending[position:], *unclear]:
                        outcomes[rest] = _throttled(
                            records[rest].lead_id, progress[rest].ids, str(exc)
                        )
                    return [outcomes[i] for i in range(len(records))]
                except _Unavailable as exc:
                    # Pipedrive is failing: calling on for the other leads would only spend
                    # every retry and back-off again. They are left for the next run.
                    outcomes[index] = _failed(record.lead_id, state, str(exc))
                    for rest in [*pending[position + 1 :], *unclear]:
                        outcomes[rest] = _failed(
                            records[rest].lead_id,
                            progress[rest],
                            f"not attempted: Pipedrive unavailable ({exc})",
                        )
                    return [outcomes[i] for i in range(len(records))]
                else:
                    outcomes[index] = SyncOutcome(
                        record.lead_id, ok=True, external_ids=dict(state.ids), created=state.created
                    )
            pending = unclear
        return [outcomes[i] for i in range(len(records))]

    def merge(self, survivor: dict[str, str], tombstone: dict[str, str]) -> bool:
        """Merge the tombstone's person and organization into the survivor's (Pipedrive's
        merge moves their deals and notes along); repeating it is harmless: a tombstone
        already gone counts as merged."""
        for kind in ("person", "organization"):
            keep, drop = survivor.get(kind), tombstone.get(kind)
            if keep is None or drop is None or keep == drop:
                continue
            entity = ENTITIES[kind]
            try:
                self._call(
                    "PUT", f"/api/v1/{entity}/{drop}/merge", body={"merge_with_id": int(keep)}
                )
            except _NotFound:
                # Which side is missing? The tombstone gone = merged before (a repeat after a
                # lost answer); the survivor gone = nothing to merge into.
                try:
                    self._call("GET", f"/api/v2/{entity}/{drop}")
                except _NotFound:
                    continue
                except (_Refused, _Throttled, _Unavailable) as exc:
                    raise CrmError(f"Pipedrive {kind} merge {drop} -> {keep}: {exc}") from None
                raise CrmError(
                    f"Pipedrive {kind} merge {drop} -> {keep}: the survivor is not there"
                ) from None
            except (_Refused, _Throttled, _Unavailable) as exc:
                raise CrmError(f"Pipedrive {kind} merge {drop} -> {keep}: {exc}") from None
        return True

    def clear_email(self, external_ids: dict[str, str]) -> None:
        person = external_ids.get("person")
        if person is None:
            return
        try:
            self._call("PATCH", f"/api/v2/persons/{person}", body={"emails": []})
        except _NotFound:
            return  # deleted, or merged away (its emails went to the survivor, cleared there)
        except (_Refused, _Throttled, _Unavailable) as exc:
            raise CrmError(f"Pipedrive person {person}: clearing the email failed: {exc}") from None

    # --- one lead -----------------------------------------------------------------------

    def _sync_lead(self, record: MappedLead, state: _Progress) -> None:
        """Write the lead's objects in order, skipping those already done in this call."""
        objects, ids = record.objects, state.ids
        for kind, entity in ENTITIES.items():
            if kind not in objects or kind in state.done:
                continue
            body = self._body(entity, objects[kind], record.lead_id)
            for linked in LINKS.get(kind, ()):
                if linked in ids:
                    body[LINK_FIELD[linked]] = int(ids[linked])
            on_create: dict[str, Any] = {}
            if kind == "deal":
                # Only a new deal is placed: a salesperson moves it along the pipeline after.
                if self.pipeline_id is not None:
                    on_create["pipeline_id"] = self.pipeline_id
                if self.stage_id is not None:
                    on_create["stage_id"] = self.stage_id
            if self._put(entity, kind, body, on_create, record.lead_id, ids):
                state.created = True
                state.fresh_deal = state.fresh_deal or kind == "deal"
            state.done.add(kind)
        if "note" in objects and "note" not in state.done:
            content = objects["note"].get("content")
            fresh_deal, state.fresh_deal = state.fresh_deal, False  # a retry may find a note
            if self._put_note(record.lead_id, content, ids, fresh_deal=fresh_deal):
                state.created = True
            state.done.add("note")

    def _put(
        self,
        entity: str,
        kind: str,
        body: dict[str, Any],
        on_create: dict[str, Any],
        lead_id: str,
        ids: dict[str, str],
    ) -> bool:
        """PATCH the known or found record, else POST one; True when it was created."""
        record_id = ids.get(kind)
        if record_id is not None:
            try:
                self._call("PATCH", f"/api/v2/{entity}/{record_id}", body=body)
                return False
            except _NotFound:
                del ids[kind]  # deleted or merged away since: find it by lead id or make it
        found = self._find(entity, lead_id)
        if found is not None:
            ids[kind] = str(found)
            self._call("PATCH", f"/api/v2/{entity}/{found}", body=body)
            return False
        created = _data(self._call("POST", f"/api/v2/{entity}", body={**body, **on_create}))
        ids[kind] = str(created["id"])
        return True

    def _find(self, entity: str, lead_id: str) -> int | None:
        data = _data(
            self._call(
                "GET",
                f"/api/v2/{entity}/search",
                params={
                    "term": lead_id,
                    "fields": "custom_fields",
                    "exact_match": "true",
                    "limit": PAGE,
                },
            )
        )
        found = sorted(int(item["item"]["id"]) for item in data.get("items") or [])
        if len(found) > 1:
            # Written twice by someone else (or a create that landed after `write_settle`):
            # keep using the oldest, consistently.
            log.warning("Pipedrive %s with lead id %s: %s records", entity, lead_id, len(found))
        return found[0] if found else None

    def _put_note(
        self, lead_id: str, content: Any, ids: dict[str, str], *, fresh_deal: bool
    ) -> bool:
        """The lead's note on its deal (or person, or organization), found by its id or its
        marker line, updated only when its text changed; True when it was created."""
        links = {
            name: int(ids[kind])
            for name, kind in (("deal_id", "deal"), ("person_id", "person"), ("org_id", "organization"))
            if kind in ids
        }  # fmt: skip
        if not links:
            raise _Refused("a note needs a deal, person or organization, and none was written")
        marker = f"leadflow:{lead_id}"
        text = "" if content is None else str(content).strip()
        wanted = f"{text}\n\n{marker}" if text else marker
        # A deal created in this call has no notes yet: nothing to look for.
        existing = None if fresh_deal else self._find_note(links, ids.get("note"), marker)
        if existing is not None:
            ids["note"] = str(existing["id"])
            if existing.get("content") != wanted:
                self._call("PUT", f"/api/v1/notes/{existing['id']}", body={"content": wanted})
            return False
        created = _data(self._call("POST", "/api/v1/notes", body={"content": wanted, **links}))
        ids["note"] = str(created["id"])
        return True

    def _find_note(
        self, links: Mapping[str, int], known_id: str | None, marker: str
    ) -> dict[str, Any] | None:
        # Notes have no custom fields and no search by content: list the record's notes.
        name, value = next(iter(links.items()))  # the deal's when there is one
        pattern = re.compile(re.escape(marker) + r"(?![\w-])")
        by_marker = None
        for note in self._pages_v1("/api/v1/notes", {name: value}):
            if known_id is not None and str(note.get("id")) == known_id:
                return note
            if by_marker is None and pattern.search(str(note.get("content") or "")):
                by_marker = note
        return by_marker

    def _body(self, entity: str, fields: Mapping[str, Any], lead_id: str) -> dict[str, Any]:
        """A v2 body from one mapped object; empty values are left out (never blank a field
        a salesperson may have filled)."""
        spec = self._fields[entity]
        body: dict[str, Any] = {}
        custom: dict[str, Any] = {spec.lead_id_key: lead_id}
        for name, value in fields.items():
            if value is None or value == "" or value == []:
                continue
            if entity == "persons" and name in ("email", "phone"):
                values = value if isinstance(value, list) else [value]
                body[name + "s"] = [
                    {"value": str(v), "primary": i == 0, "label": "work"}
                    for i, v in enumerate(values)
                ]
            elif entity == "organizations" and name == "address" and isinstance(value, str):
                body["address"] = {"value": value}
            elif name in STANDARD_FIELDS[entity]:
                body[name] = value
            elif name in spec.custom_keys:
                custom[spec.custom_keys[name]] = value
            else:
                raise _Refused(f"Pipedrive {entity} have no field {name!r} (check the mapping)")
        body["custom_fields"] = custom
        return body

    # --- custom fields ------------------------------------------------------------------

    def _discover_fields(self) -> None:
        """The key of each entity's "Leadflow lead id" field (created when missing), once."""
        for entity, list_name in FIELD_LISTS.items():
            if entity in self._fields:
                continue
            try:
                listed = list(self._pages_v1(f"/api/v1/{list_name}", {}))
                lead_field = _lead_id_field(listed) or self._create_lead_id_field(list_name)
            except (_Refused, _Unavailable, _MaybeWritten) as exc:
                raise CrmError(f"Pipedrive {list_name}: {exc}") from None
            if lead_field.get("searchable_flag") is False:
                # Find-before-create needs the search to see the field: without it every
                # replay would create another record.
                raise CrmError(
                    f"Pipedrive {list_name}: the {LEAD_ID_FIELD!r} field is not searchable"
                )
            custom = {}
            for item in listed:
                if item.get("edit_flag"):  # custom fields; the standard ones cannot be edited
                    custom.setdefault(str(item["name"]), str(item["key"]))
                    custom[str(item["key"])] = str(item["key"])
            self._fields[entity] = _Fields(str(lead_field["key"]), custom)

    def _create_lead_id_field(self, list_name: str) -> dict[str, Any]:
        body = {"name": LEAD_ID_FIELD, "field_type": "varchar"}
        try:
            return _data(self._call("POST", f"/api/v1/{list_name}", body=body))
        except _MaybeWritten as exc:
            # Pipedrive allows two fields of one name: look before trying again.
            _sleep_until(exc.sent_at + self.write_settle)
            again = _lead_id_field(list(self._pages_v1(f"/api/v1/{list_name}", {})))
            if again is None:
                raise
            return again
        except _Refused:
            # Another worker may have just made it.
            again = _lead_id_field(list(self._pages_v1(f"/api/v1/{list_name}", {})))
            if again is None:
                raise
            return again

    # --- HTTP ---------------------------------------------------------------------------

    def _pages_v1(self, path: str, params: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
        """Every item of a v1 list (start/limit pagination)."""
        start = 0
        while True:
            answer = self._call("GET", path, params={**params, "start": start, "limit": PAGE})
            yield from answer.get("data") or []
            pagination = (answer.get("additional_data") or {}).get("pagination") or {}
            if not pagination.get("more_items_in_collection"):
                return
            start = int(pagination.get("next_start") or start + PAGE)

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        """One API call, retried as far as it is safe; Pipedrive's answer envelope."""
        creates = method == "POST"  # a POST always creates at Pipedrive: never repeat it blind
        attempt = 0
        while True:
            _sleep_until(self._resume_at)
            if self.limiter is not None:
                self.limiter()
            sent_at = time.monotonic()
            try:
                response = self._http.request(method, path, params=params, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                problem = f"no connection ({type(exc).__name__})"  # never sent: safe to repeat
            except httpx.TransportError as exc:
                problem = f"no answer ({type(exc).__name__})"
                if creates:
                    raise _MaybeWritten(f"{method} {path}: {problem}", sent_at) from None
            else:
                status = response.status_code
                message = f"{method} {path}: HTTP {status} {_error_text(response)}".rstrip()
                if status == 429:
                    if attempt >= self.retries:
                        raise _Throttled(message)
                    time.sleep(self._delay(attempt, _rate_limit_wait(response)))
                    attempt += 1
                    continue
                self._note_window(response)
                if status < 300:
                    try:
                        answer = response.json()
                    except ValueError:
                        answer = None
                    if isinstance(answer, dict):
                        return answer
                    problem = f"HTTP {status} without Pipedrive's envelope"
                elif status == 401:
                    raise CrmError(f"Pipedrive refused the API token: {message}")
                elif status in (404, 410):
                    raise _NotFound(message)
                elif status < 500:
                    raise _Refused(message)
                else:
                    problem = f"HTTP {status} {_error_text(response)}".rstrip()
                if creates:
                    raise _MaybeWritten(f"{method} {path}: {problem}", sent_at)
            if attempt >= self.retries:
                raise _Unavailable(f"{method} {path}: {problem}")
            time.sleep(self._delay(attempt, 0.0))
            attempt += 1

    def _delay(self, attempt: int, hint: float) -> float:
        return min(self.backoff_max, max(hint, self.backoff * 2**attempt))

    def _note_window(self, response: httpx.Response) -> None:
        """Pause the next call when Pipedrive says this window has no request left."""
        if response.headers.get("x-ratelimit-remaining") == "0":
            wait = min(self.backoff_max, _rate_limit_wait(response))
            self._resume_at = max(self._resume_at, time.monotonic() + wait)


# --- helpers ------------------------------------------------------------------------------


def _option_id(options: Mapping[str, Any], name: str) -> int | None:
    value = options.get(name)
    if value is None:
        return None
    try:
        return int(value)  # v2 refuses "1" where 1 belongs
    except (TypeError, ValueError):
        raise ValueError(f"Pipedrive option {name} must be an id, got {value!r}") from None


def _lead_id_field(listed: list[dict[str, Any]]) -> dict[str, Any] | None:
    matches = sorted(
        (f for f in listed if f.get("name") == LEAD_ID_FIELD), key=lambda f: int(f.get("id") or 0)
    )
    return matches[0] if matches else None


def _data(envelope: Mapping[str, Any]) -> dict[str, Any]:
    data = envelope.get("data")
    return data if isinstance(data, dict) else {}


def _rate_limit_wait(response: httpx.Response) -> float:
    """Seconds until Pipedrive takes requests again, from Retry-After or x-ratelimit-reset."""
    for header in ("retry-after", "x-ratelimit-reset"):
        try:
            return max(0.0, float(response.headers[header]))
        except (KeyError, ValueError):
            continue
    return 0.0


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("error_info") or "")
    return ""


def _sleep_until(moment: float) -> None:
    wait = moment - time.monotonic()
    if wait > 0:
        time.sleep(wait)


def _failed(lead_id: str, state: _Progress, error: str, *, retryable: bool = True) -> SyncOutcome:
    return SyncOutcome(
        lead_id, ok=False, external_ids=dict(state.ids), error=error, retryable=retryable
    )


def _throttled(lead_id: str, ids: Mapping[str, str], error: str) -> SyncOutcome:
    return SyncOutcome(
        lead_id, ok=False, external_ids=dict(ids), error=f"throttled: {error}", throttled=True
    )
