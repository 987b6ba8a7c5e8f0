"""Salesforce: Leads upserted by the `lead_id` external-id field, through simple-salesforce.

Every Lead carries the lead's `lead_id` in a unique external-id field
(`LEADFLOW_SALESFORCE_EXTERNAL_ID_FIELD`, default `Leadflow_Lead_Id__c`), and every write goes
by that value, never by a POST that always creates. So each call is safe to repeat after a lost
response (the write committed, the answer never came), a time-out (the write may land later),
a 5xx or a 429: the repeat updates the record the first attempt wrote.

- Login: simple-salesforce's own OAuth flows, username-password with the connected app's
  consumer key and secret at `https://{domain}.salesforce.com`, or JWT bearer with the app's
  private key file (`LEADFLOW_SALESFORCE_PRIVATE_KEY_FILE`), sent to the org's My Domain when
  its URL is configured.
- Batches up to `batch_size` (at most 200) go through the composite sObject collections upsert
  `PATCH /composite/sobjects/Lead/{extField}` with `allOrNone: false`: one result per record,
  in input order; a batch of `bulk_threshold` records or more goes through Bulk API 2.0
  (`sf.bulk2.Lead.upsert`), whose jobs are upserts by the same field.
- A request that fails for the whole batch is retried `max_retries` times with exponential
  backoff (Retry-After honoured): connection errors, time-outs, lost answers, 5xx and 429.
  403 `REQUEST_LIMIT_EXCEEDED`, a 429 past its retries, or an `Sforce-Limit-Info` header saying
  the org's API budget is spent stops the call: the records not done are `throttled`, and no
  further request is made. `INVALID_SESSION_ID` logs in again once; a second one, or a refused
  login, is a `CrmError`.
- A record Salesforce refuses for its data (`REQUIRED_FIELD_MISSING`, `INVALID_EMAIL_ADDRESS`,
  ...) is `ok=False, retryable=False` with Salesforce's code and message.
- Salesforce's REST API has no Lead merge: `merge` answers False and `mark_merged` sets
  `Leadflow_Merged_Into__c` on the tombstone's Lead instead.

simple-salesforce builds only `https://` URLs. The sandbox (`sandbox/salesforce.py`) serves
plain HTTP, so in sandbox mode the client gets `salesforce_session(...)`, whose transport
adapter sends the Salesforce login hosts and the sandbox's instance host to the sandbox; in
production it gets a plain `requests.Session`.

Tokens, passwords and keys are never logged: messages carry Salesforce's error codes and texts.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import requests
from pydantic import SecretStr
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceOperationError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)
from simple_salesforce.util import exception_handler

from leadflow.settings import Settings, get_settings
from models.crm import CrmError, Destination, DestinationMapping, MappedLead, SyncOutcome

log = logging.getLogger("leadflow.salesforce")

OBJECT = "Lead"
LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com")
MAX_COLLECTION_RECORDS = 200  # composite sObject collections take at most 200 records a call
# Record errors that say "try again", not "fix the data". DUPLICATE_EXTERNAL_ID and a
# DUPLICATE_VALUE on the external-id field mean that another write of the same lead_id (a
# held request that landed late) got there first: the repeat updates that record.
RETRYABLE_RECORD_ERRORS = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "DUPLICATE_EXTERNAL_ID",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "UNKNOWN_EXCEPTION",
        "SERVER_UNAVAILABLE",
        "REQUEST_LIMIT_EXCEEDED",
    }
)
_USAGE_RE = re.compile(r"api-usage=(\d+)/(\d+)")

T = TypeVar("T")


# --------------------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------------------


class TimeoutSession(requests.Session):
    """A session with a default time-out: simple-salesforce passes none to its logins and
    Bulk API calls, and a request without one can wait forever on a held connection."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().request(method, url, *args, **kwargs)


class SandboxAdapter(HTTPAdapter):
    """Sends each request to `base_url` + its path and query, over plain HTTP."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        parts = urlsplit(request.url or "")
        request.url = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        # Proxies from the environment were chosen for the Salesforce URL; the sandbox is a
        # local address that no proxy stands in front of.
        kwargs["proxies"] = None
        return super().send(request, *args, **kwargs)


def salesforce_session(
    base_url: str,
    instance_url: str = "https://leadflow-sandbox.my.salesforce.com",
    session: requests.Session | None = None,
) -> requests.Session:
    """A session for simple-salesforce whose requests to the login hosts and to
    `instance_url`'s host go to the sandbox at `base_url` (e.g.
    `http://127.0.0.1:8800/salesforce`); requests to any other URL are untouched. The adapter
    is mounted on `session` when one is given."""
    session = session or requests.Session()
    adapter = SandboxAdapter(base_url)
    for host in (*LOGIN_HOSTS, urlsplit(instance_url).netloc):
        session.mount(f"https://{host}/", adapter)
    return session


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class _Stop(Exception):
    """A request failed for the whole batch and retrying within this call will not help:
    `throttled` when Salesforce said slow down, else it is down, or refuses us."""

    def __init__(self, message: str, *, throttled: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.throttled = throttled


class _LoginUnreadable(Exception):
    """The token endpoint's answer could not be read (see `_connect`)."""


@dataclass(frozen=True)
class _Failure:
    kind: str  # transient | rate_limited | throttled | expired | fatal
    message: str


def _first_error(content: Any) -> dict[str, Any]:
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return content[0]
    return {}


def _classify(exc: Exception) -> _Failure:
    if isinstance(exc, SalesforceAuthenticationFailed):
        # The JSON error of a refused login carries OAuth's `error` (a string); a non-JSON
        # answer (a proxy's 502 page) its HTTP status.
        code = exc.code
        transient = isinstance(code, int) and (code >= 500 or code == 429)
        return _Failure(
            "transient" if transient else "fatal",
            f"Salesforce login refused: {code}: {exc.auth_message}",
        )
    if isinstance(exc, SalesforceError):
        first = _first_error(exc.content)
        code = first.get("errorCode")
        message = f"HTTP {exc.status} {code or ''}: {first.get('message') or exc.content!s:.200}"
        if isinstance(exc, SalesforceExpiredSession):
            return _Failure("expired", message)
        if isinstance(exc, SalesforceRefusedRequest) and code == "REQUEST_LIMIT_EXCEEDED":
            return _Failure("throttled", message)
        if isinstance(exc, SalesforceGeneralError) and exc.status == 429:
            return _Failure("rate_limited", message)
        if isinstance(exc, SalesforceGeneralError) and exc.status >= 500:
            return _Failure("transient", message)
        return _Failure("fatal", message)
    if isinstance(exc, requests.RequestException | _LoginUnreadable):
        return _Failure("transient", f"Salesforce unreachable: {type(exc).__name__}: {exc}")
    # Bulk API 2.0: a job that failed or was aborted, or data it would not take.
    return _Failure("fatal", f"Salesforce Bulk API: {exc}")


def _record_error(
    lead_id: str, errors: Sequence[dict[str, Any]], external_id_field: str
) -> SyncOutcome:
    first = errors[0] if errors else {}
    code = str(first.get("statusCode") or first.get("errorCode") or "UNKNOWN_EXCEPTION")
    fields = list(first.get("fields") or [])
    message = str(first.get("message") or "")
    retryable = code in RETRYABLE_RECORD_ERRORS or (
        code == "DUPLICATE_VALUE"
        and (external_id_field in fields or external_id_field.lower() in message.lower())
    )
    where = f" ({', '.join(fields)})" if fields else ""
    return SyncOutcome(lead_id, ok=False, error=f"{code}: {message}{where}", retryable=retryable)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the backoff decides instead


def _my_domain(instance_url: str) -> str:
    """`https://acme.my.salesforce.com` -> `acme.my`: the form simple-salesforce takes."""
    host = urlsplit(instance_url if "//" in instance_url else f"//{instance_url}").hostname or ""
    if not host.endswith(".salesforce.com"):
        raise ValueError(f"not a Salesforce org URL: {instance_url!r}")
    return host.removesuffix(".salesforce.com")


def _csv_cell(value: Any) -> str:
    """A Bulk API 2.0 CSV cell: `#N/A` sets null (an empty cell would leave the old value)."""
    if value is None:
        return "#N/A"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------


class SalesforceClient:
    """One Salesforce org (the `CrmClient` of `salesforce`), built from settings
    (`from_settings`) or explicit arguments. It logs in on its first call."""

    destination: Destination = "salesforce"

    def __init__(
        self,
        *,
        username: str,
        consumer_key: str,
        password: SecretStr | None = None,
        consumer_secret: SecretStr | None = None,
        private_key_file: Path | None = None,
        domain: str = "login",
        instance_url: str | None = None,
        api_version: str = "59.0",
        session: requests.Session | None = None,
        external_id_field: str = "Leadflow_Lead_Id__c",
        merged_into_field: str = "Leadflow_Merged_Into__c",
        batch_size: int = MAX_COLLECTION_RECORDS,
        bulk_threshold: int = 2000,
        bulk_poll_interval: float = 2.0,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        if private_key_file is None and (password is None or consumer_secret is None):
            raise ValueError(
                "Salesforce login needs a private key file (JWT bearer flow), or a password "
                "and the consumer secret (username-password flow)"
            )
        if not 1 <= batch_size <= MAX_COLLECTION_RECORDS:
            raise ValueError(f"batch_size must be 1-{MAX_COLLECTION_RECORDS}")
        self.username = username
        self.consumer_key = consumer_key
        self._password = password
        self._consumer_secret = consumer_secret
        self.private_key_file = private_key_file
        self.domain = domain
        self.my_domain = _my_domain(instance_url) if instance_url else None
        self.api_version = api_version
        self.session = session or TimeoutSession(timeout)
        self.session.hooks["response"].append(self._read_headers)
        self.external_id_field = external_id_field
        self.merged_into_field = merged_into_field
        self.batch_size = batch_size
        self.bulk_threshold = bulk_threshold
        self.bulk_poll_interval = bulk_poll_interval
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self._sf: Salesforce | None = None
        self._retry_after: float | None = None  # of the last answer
        self._api_usage: tuple[int, int] | None = None  # (used, max) of the last answer

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, mapping: DestinationMapping | None = None
    ) -> SalesforceClient:
        """The configured client; in sandbox mode with no org configured, the sandbox's
        Salesforce and its credentials. `mapping` (the engine passes the destination's) is
        checked: the external-id field is the connector's to fill, never mapped by hand."""
        settings = settings or get_settings()
        ext = settings.salesforce_external_id_field
        if mapping is not None:
            for object_mapping in mapping.objects.values():
                if any(f.lower() == ext.lower() for f in object_mapping.fields):
                    raise ValueError(
                        f"the Salesforce mapping sets {ext}: it holds the lead_id and is filled "
                        "by the connector; remove it from the mapping"
                    )
        username = settings.salesforce_login_username
        consumer_key = settings.salesforce_login_consumer_key
        if username is None or consumer_key is None:
            raise ValueError(
                "Salesforce is a sync destination but has no login: set "
                "LEADFLOW_SALESFORCE_USERNAME, LEADFLOW_SALESFORCE_CONSUMER_KEY and either "
                "LEADFLOW_SALESFORCE_PASSWORD + LEADFLOW_SALESFORCE_CONSUMER_SECRET or "
                "LEADFLOW_SALESFORCE_PRIVATE_KEY_FILE"
            )
        session = TimeoutSession(settings.salesforce_timeout)
        sandbox = settings.salesforce_sandbox_url
        if sandbox is not None:
            salesforce_session(sandbox, settings.sandbox_crm_salesforce_instance_url, session)
        return cls(
            username=username,
            consumer_key=consumer_key,
            password=settings.salesforce_login_password,
            consumer_secret=settings.salesforce_login_consumer_secret,
            private_key_file=settings.salesforce_private_key_file,
            domain=settings.salesforce_domain,
            instance_url=settings.salesforce_instance_url,
            api_version=settings.salesforce_api_version,
            session=session,
            external_id_field=ext,
            merged_into_field=settings.salesforce_merged_into_field,
            batch_size=settings.salesforce_batch_size,
            bulk_threshold=settings.salesforce_bulk_threshold,
            bulk_poll_interval=settings.salesforce_bulk_poll_interval,
            timeout=settings.salesforce_timeout,
            max_retries=settings.salesforce_max_retries,
            backoff=settings.salesforce_backoff,
            backoff_max=settings.salesforce_backoff_max,
        )

    def close(self) -> None:
        self.session.close()

    # --- the CrmClient protocol -------------------------------------------------------------

    def upsert(
        self, records: list[MappedLead], known: dict[str, dict[str, str]]
    ) -> list[SyncOutcome]:
        """Create or update one Lead per record, by its lead_id in the external-id field; one
        outcome per record, in input order. `known` is not needed: the external id finds the
        record whatever the ledger holds."""
        if not records:
            return []
        self._api_usage = None  # the budget read in an earlier call may have been renewed
        # One lead twice in a batch would make Salesforce refuse both (DUPLICATE_EXTERNAL_ID):
        # send it once, with its last fields, and give both places that outcome.
        unique = list({r.lead_id: r for r in records}.values())
        if len(unique) >= self.bulk_threshold:
            outcomes = self._upsert_bulk(unique)
        else:
            outcomes = self._upsert_collections(unique)
        return [outcomes[r.lead_id] for r in records]

    def merge(self, survivor: dict[str, str], tombstone: dict[str, str]) -> bool:
        """Salesforce's REST API has no Lead merge (only the SOAP API and the UI do): False,
        so the caller marks the tombstone's Lead with `mark_merged`."""
        return False

    def mark_merged(self, tombstone_ids: dict[str, str], survivor_lead_id: str) -> None:
        """Set the merged-into field of the tombstone's Lead to the survivor's lead_id (the
        same value every time, so a repeat changes nothing). A Lead that no longer exists
        needs no mark."""
        lead = tombstone_ids.get(OBJECT)
        if lead:
            self._update(lead, {self.merged_into_field: survivor_lead_id}, "mark merged")

    def clear_email(self, external_ids: dict[str, str]) -> None:
        """Set Email to null on the forgotten lead's Lead (repeatable; a Lead that no longer
        exists has nothing to clear)."""
        lead = external_ids.get(OBJECT)
        if lead:
            self._update(lead, {"Email": None}, "clear email")

    # --- upsert paths ---------------------------------------------------------------------------

    def _fields(self, record: MappedLead) -> dict[str, Any]:
        # The external id goes last, so nothing in the mapping can override it.
        return {**record.objects.get(OBJECT, {}), self.external_id_field: record.lead_id}

    def _upsert_collections(self, records: list[MappedLead]) -> dict[str, SyncOutcome]:
        outcomes: dict[str, SyncOutcome] = {}
        for start in range(0, len(records), self.batch_size):
            chunk = records[start : start + self.batch_size]
            rows = [{"attributes": {"type": OBJECT}, **self._fields(r)} for r in chunk]
            try:
                results = self._call(
                    f"upsert of {len(rows)} Leads", partial(self._collection_request, rows=rows)
                )
            except _Stop as stop:
                self._not_done(outcomes, records[start:], stop)
                break
            for record, result in zip(chunk, results, strict=True):
                outcomes[record.lead_id] = self._outcome(record.lead_id, result)
        return outcomes

    def _collection_request(self, sf: Salesforce, rows: list[dict[str, Any]]) -> list[Any]:
        # The session directly rather than `sf.restful`: restful logs in again by itself up
        # to four times on INVALID_SESSION_ID, and this client re-authenticates once.
        response = sf.session.request(
            "PATCH",
            f"{sf.base_url}composite/sobjects/{OBJECT}/{self.external_id_field}",
            headers=sf.headers,
            data=json.dumps({"allOrNone": False, "records": rows}),
            timeout=self.timeout,
        )
        if response.status_code >= 300:
            exception_handler(response, name="composite/sobjects")
        results = response.json()
        if not isinstance(results, list) or len(results) != len(rows):
            raise _Stop(f"Salesforce answered {len(rows)} records with {str(results)[:200]}")
        return results

    def _outcome(self, lead_id: str, result: dict[str, Any]) -> SyncOutcome:
        if result.get("success"):
            return SyncOutcome(
                lead_id,
                ok=True,
                external_ids={OBJECT: str(result["id"])},
                created=bool(result.get("created")),
            )
        return _record_error(lead_id, result.get("errors") or [], self.external_id_field)

    def _upsert_bulk(self, records: list[MappedLead]) -> dict[str, SyncOutcome]:
        """Bulk API 2.0: one upsert job (a retry is a new job, harmless: it is an upsert by
        the external id too), then its successful, failed and unprocessed records."""
        rows = [{k: _csv_cell(v) for k, v in self._fields(r).items()} for r in records]
        outcomes: dict[str, SyncOutcome] = {}
        try:
            jobs = self._call(
                f"bulk upsert of {len(rows)} Leads", partial(self._bulk_job, rows=rows)
            )
            for job in jobs:
                results = self._call(
                    "bulk upsert results", partial(self._bulk_results, job_id=job["job_id"])
                )
                outcomes.update(self._bulk_outcomes(results))
        except _Stop as stop:
            self._not_done(outcomes, [r for r in records if r.lead_id not in outcomes], stop)
            return outcomes
        for record in records:
            outcomes.setdefault(
                record.lead_id,
                SyncOutcome(record.lead_id, ok=False, error="Bulk API: no result for the record"),
            )
        return outcomes

    def _bulk_job(self, sf: Salesforce, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
        return sf.bulk2.Lead.upsert(
            records=rows, external_id_field=self.external_id_field, wait=self.bulk_poll_interval
        )

    def _bulk_results(self, sf: Salesforce, job_id: str) -> dict[str, list[Any]]:
        return sf.bulk2.Lead.get_all_ingest_records(job_id)

    def _bulk_outcomes(self, results: dict[str, list[Any]]) -> dict[str, SyncOutcome]:
        ext = self.external_id_field
        outcomes: dict[str, SyncOutcome] = {}
        for row in results.get("successfulRecords") or []:
            outcomes[row[ext]] = SyncOutcome(
                row[ext],
                ok=True,
                external_ids={OBJECT: row["sf__Id"]},
                created=str(row.get("sf__Created")).lower() == "true",
            )
        for row in results.get("failedRecords") or []:
            # `CODE:message:fields --`
            code, _, rest = str(row.get("sf__Error") or "").partition(":")
            message, _, fields = rest.removesuffix(" --").rpartition(":")
            error = {
                "statusCode": code,
                "message": message,
                "fields": [f for f in fields.split(",") if f],
            }
            outcomes[row[ext]] = _record_error(row[ext], [error], ext)
        for row in results.get("unprocessedRecords") or []:
            outcomes[row[ext]] = SyncOutcome(
                row[ext], ok=False, error="Bulk API: the job stopped before the record"
            )
        return outcomes

    def _not_done(
        self, outcomes: dict[str, SyncOutcome], records: Sequence[MappedLead], stop: _Stop
    ) -> None:
        """Outcomes for the records a stop left undone. Nothing done at all and Salesforce is
        down or refuses us: that is the whole batch's failure, a CrmError."""
        if not stop.throttled and not outcomes:
            raise CrmError(stop.message)
        for record in records:
            outcomes[record.lead_id] = SyncOutcome(
                record.lead_id, ok=False, error=stop.message, throttled=stop.throttled
            )

    # --- updates by Salesforce Id ---------------------------------------------------------------

    def _update(self, lead: str, fields: dict[str, Any], what: str) -> None:
        self._api_usage = None
        try:
            self._call(what, partial(self._update_request, lead=lead, fields=fields))
        except _Stop as stop:
            raise CrmError(f"Salesforce {what}: {stop.message}") from None

    def _update_request(self, sf: Salesforce, lead: str, fields: dict[str, Any]) -> None:
        response = sf.session.request(
            "PATCH",
            f"{sf.base_url}sobjects/{OBJECT}/{quote(lead, safe='')}",
            headers=sf.headers,
            data=json.dumps(fields),
            timeout=self.timeout,
        )
        if response.status_code >= 300:
            try:
                exception_handler(response, name=f"sobjects/{OBJECT}")
            except SalesforceResourceNotFound:
                log.info("Salesforce Lead %s no longer exists: nothing to update", lead)

    # --- requests, retries and login ------------------------------------------------------------

    def _call(self, what: str, request: Callable[[Salesforce], T]) -> T:
        """`request(sf)` under the retry policy of the module docstring; `_Stop` when it
        cannot be done in this call."""
        attempt = 0
        logged_in_again = False
        while True:
            if self._api_usage is not None and self._api_usage[0] >= self._api_usage[1]:
                used, budget = self._api_usage
                raise _Stop(
                    f"REQUEST_LIMIT_EXCEEDED: the org's API requests are used up ({used}/{budget})",
                    throttled=True,
                )
            self._retry_after = None
            try:
                return request(self._connect())
            except (SalesforceError, SalesforceOperationError, requests.RequestException,
                    _LoginUnreadable) as exc:  # fmt: skip
                failure = _classify(exc)
            if failure.kind == "expired" and not logged_in_again:
                logged_in_again = True
                self._sf = None
                continue
            if failure.kind == "expired":
                raise _Stop(f"{failure.message} (again after logging in anew)")
            if failure.kind in ("throttled", "fatal"):
                raise _Stop(failure.message, throttled=failure.kind == "throttled")
            delay = (
                self._retry_after if self._retry_after is not None else self.backoff * 2**attempt
            )
            if attempt >= self.max_retries or delay > self.backoff_max:
                raise _Stop(failure.message, throttled=failure.kind == "rate_limited")
            attempt += 1
            log.warning(
                "Salesforce %s: %s; retry %d/%d in %.1f s",
                what, failure.message, attempt, self.max_retries, delay,
            )  # fmt: skip
            time.sleep(delay)

    def _connect(self) -> Salesforce:
        if self._sf is None:
            try:
                self._sf = self._login()
            except (AttributeError, TypeError) as exc:
                # simple-salesforce reads any non-200 token answer as an OAuth error object
                # (`.get('error')`); a 5xx that is not one (e.g. a JSON list) breaks it so.
                raise _LoginUnreadable("unreadable answer from the token endpoint") from exc
        return self._sf

    def _login(self) -> Salesforce:
        if self.private_key_file is not None:
            return Salesforce(
                username=self.username,
                consumer_key=self.consumer_key,
                privatekey_file=str(self.private_key_file),
                # simple-salesforce posts the assertion to https://{instance_url}.salesforce.com
                # (the org's My Domain) and keeps https://{domain}.salesforce.com as its `aud`,
                # which Salesforce wants to be login or test.
                instance_url=self.my_domain,
                domain=self.domain,
                version=self.api_version,
                session=self.session,
            )
        assert self._password is not None and self._consumer_secret is not None
        return Salesforce(
            username=self.username,
            password=self._password.get_secret_value(),
            consumer_key=self.consumer_key,
            consumer_secret=self._consumer_secret.get_secret_value(),
            domain=self.domain,
            version=self.api_version,
            session=self.session,
        )

    def _read_headers(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """A response hook: remembers the last answer's Retry-After and the org's API usage
        (`Sforce-Limit-Info: api-usage=N/M`), which every REST answer carries."""
        self._retry_after = _retry_after(response.headers.get("Retry-After"))
        usage = _USAGE_RE.search(response.headers.get("Sforce-Limit-Info", ""))
        if usage:
            self._api_usage = (int(usage[1]), int(usage[2]))
