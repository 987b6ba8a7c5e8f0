"""A stand-in for Salesforce: OAuth 2.0 token endpoint and the REST API for the Lead sObject.

Mounted by `sandbox.server` under `/salesforce`, so the sandbox answers
`http://127.0.0.1:<port>/salesforce/services/...` for every Salesforce host.

**HTTPS.** simple-salesforce builds every URL as `https://<host>/...`: the login URLs are
`https://{login|test}.salesforce.com/services/oauth2/token` and the API URLs
`https://<instance host>/services/data/vXX.X/...`. Rather than serving TLS, the sandbox is
reached through a `requests.Session` (`connectors.salesforce.salesforce_session(base_url)`)
whose transport adapter is mounted for exactly those hosts and sends their requests, path and
query unchanged, to the sandbox's plain-HTTP base URL. The connector passes that session as
`session=` to `simple_salesforce.Salesforce` (a plain `requests.Session()` in production) and
everything else is as against Salesforce, including simple-salesforce's own OAuth logins
(username-password with `consumer_key`/`consumer_secret`, JWT bearer with `privatekey`) and
its re-login on `INVALID_SESSION_ID`. The token endpoint answers with the configured
`instance_url` (default `https://leadflow-sandbox.my.salesforce.com`, a host the adapter
maps), so `Salesforce(session_id=..., instance_url=..., session=...)` works as well.

Endpoints (`vXX.X` from v31.0 to v64.0; answers as Salesforce's REST API documents them):

- `POST /services/oauth2/token` (form): `grant_type=password` (`client_id`, `client_secret`,
  `username`, `password`) or `urn:ietf:params:oauth:grant-type:jwt-bearer` (`assertion`: an
  RS256 JWT with `iss` = consumer key, `sub` = username, `aud` = a login URL, `exp` in the
  future, signed by the key whose certificate or public key is configured) -> `{access_token,
  instance_url, id, token_type: "Bearer", issued_at, signature, scope}`; errors 400
  `{"error", "error_description"}` (`invalid_client_id`, `invalid_client`, `invalid_grant`,
  `unsupported_grant_type`). Tokens live `token_ttl` seconds; after that, or for any unknown
  token, the API answers 401 `[{"message": "Session expired or invalid", "errorCode":
  "INVALID_SESSION_ID"}]`.
- `GET .../sobjects/Lead/describe`; `POST .../sobjects/Lead` (always creates: 201 `{id,
  success, errors}`); `GET`/`PATCH .../sobjects/Lead/{Id}` (204); `GET .../sobjects/Lead/
  {extField}/{value}`; `PATCH .../sobjects/Lead/{extField}/{value}` upsert: 201 `{id, success,
  errors, created: true}`, or for an update 200 with `created: false` from API v46.0 on and
  204 before; 300 with the matching record URLs when the value is not unique.
- `PATCH .../composite/sobjects/Lead/{extField}` `{allOrNone, records: [{attributes: {type},
  ...}]}` (v46.0+, at most 200 records) -> one result per record in input order; errors carry
  `statusCode`. With `allOrNone` one failure rolls every record back
  (`ALL_OR_NONE_OPERATION_ROLLED_BACK`).
- `GET .../query?q=` for a small SOQL subset: `SELECT f1, f2 | COUNT() FROM Lead [WHERE f = 'v'
  | f != 'v' | f IN ('a', 'b') [AND ...]] [ORDER BY f [ASC|DESC]] [LIMIT n]`; 2000 records a
  page (or `Sforce-Query-Options: batchSize=N`, 200-2000), then `nextRecordsUrl` ->
  `GET .../query/{locator}`. Unknown fields `INVALID_FIELD`, anything else `MALFORMED_QUERY`.
- Bulk API 2.0 ingest (`insert`, `upsert`, `update`): `POST .../jobs/ingest`, `PUT
  .../jobs/ingest/{id}/batches` (CSV, 201), `PATCH .../jobs/ingest/{id}` `{"state":
  "UploadComplete" | "Aborted"}`, `GET .../jobs/ingest/{id}` (UploadComplete -> InProgress for
  `bulk_processing_seconds` -> JobComplete, or Failed for a CSV column Lead does not have),
  `GET .../jobs/ingest/{id}/successfulResults | failedResults | unprocessedrecords` (CSV with
  `sf__Id`, `sf__Created` / `sf__Error`). Empty CSV cells leave a field unchanged, `#N/A`
  clears it. This is what `sf.bulk2.Lead.upsert(records=..., external_id_field=...)` drives.
- `GET .../limits` -> `DailyApiRequests {Max, Remaining}`.

Lead validation: field names are case-insensitive; an unknown field is `INVALID_FIELD`, a
system field `INVALID_FIELD_FOR_INSERT_UPDATE`; `LastName` and `Company` are required
(`REQUIRED_FIELD_MISSING` with `fields`); lengths (`STRING_TOO_LONG`), `Email`
(`INVALID_EMAIL_ADDRESS`), the restricted `Status` picklist
(`INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`) and JSON types (`JSON_PARSER_ERROR`) are checked.
The custom fields are the configured ones (`Name__c[:string|double|int|boolean]`) plus the
external-id field, which is unique unless `external_id_unique` is turned off (then POSTs can
create duplicates and an upsert on a shared value answers 300). Within one composite or bulk
request every record that shares its external id with another fails `DUPLICATE_EXTERNAL_ID`
(the sandbox's reading; Salesforce documents the error, not which records get it).

Every authenticated API request counts against the org's daily budget (`api_requests_per_day`)
and every answer carries `Sforce-Limit-Info: api-usage=N/M`; once it is spent the API answers
403 `REQUEST_LIMIT_EXCEEDED`. Injected faults (`sandbox.crm_faults`): 500 `UNKNOWN_EXCEPTION`,
and for "throttle" the 403 `REQUEST_LIMIT_EXCEEDED` Salesforce gives for too many concurrent
long requests.

Control (not Salesforce's API, see `sandbox.crm_faults`): `/__sandbox/state` knobs
`token_ttl`, `api_requests_per_day`, `api_requests_used`, `bulk_processing_seconds`,
`external_id_unique`, the fault knobs, and the actions `"expire_tokens": true` and `"reset":
true`; `/__sandbox/truth` kind `leads`, duplicates by external id.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
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
from sandbox.hunter import (
    parse_bool,
    parse_non_negative_float,
    parse_non_negative_int,
    parse_positive_int,
)

LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com")
DEFAULT_INSTANCE_URL = "https://leadflow-sandbox.my.salesforce.com"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MIN_API_VERSION, MAX_API_VERSION = 31, 64
UPDATE_ANSWERS_200_SINCE = 46  # upsert of an existing record: 204 before v46.0, 200 + body since
COLLECTIONS_UPSERT_SINCE = 46
MAX_COLLECTION_RECORDS = 200
QUERY_BATCH_DEFAULT, QUERY_BATCH_MIN = 2000, 200
ORG_ID = "00D5g00000LfSbx"
USER_ID = "0055g00000LfUsr"
LEAD_STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
)
BULK_OPERATIONS = ("insert", "upsert", "update")
BULK_DELIMITERS = {
    "COMMA": ",",
    "TAB": "\t",
    "PIPE": "|",
    "SEMICOLON": ";",
    "CARET": "^",
    "BACKQUOTE": "`",
}
RESULT_KINDS = {
    "successfulresults": "successful",
    "failedresults": "failed",
    "unprocessedrecords": "unprocessed",
}
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
STRING_TYPES = frozenset({"string", "email", "phone", "url", "textarea", "picklist"})


@dataclass(frozen=True, slots=True)
class LeadField:
    name: str
    type: str  # Salesforce's describe type
    length: int = 0  # 0 for non-text fields
    writable: bool = True
    custom: bool = False
    external_id: bool = False
    unique: bool = False
    picklist: tuple[str, ...] = ()  # the values of a restricted picklist


STANDARD_LEAD_FIELDS: tuple[LeadField, ...] = (
    LeadField("Id", "id", 18, writable=False),
    LeadField("FirstName", "string", 40),
    LeadField("LastName", "string", 80),
    LeadField("Company", "string", 255),
    LeadField("Title", "string", 128),
    LeadField("Email", "email", 80),
    LeadField("Phone", "phone", 40),
    LeadField("MobilePhone", "phone", 40),
    LeadField("Website", "url", 255),
    LeadField("Street", "textarea", 255),
    LeadField("City", "string", 40),
    LeadField("State", "string", 80),
    LeadField("PostalCode", "string", 20),
    LeadField("Country", "string", 80),
    LeadField("Industry", "picklist", 255),
    LeadField("LeadSource", "picklist", 255),
    LeadField("Status", "picklist", 255, picklist=LEAD_STATUSES),
    LeadField("Rating", "picklist", 255),
    LeadField("Description", "textarea", 32000),
    LeadField("NumberOfEmployees", "int"),
    LeadField("AnnualRevenue", "currency"),
    LeadField("IsConverted", "boolean", writable=False),
    LeadField("IsDeleted", "boolean", writable=False),
    LeadField("CreatedDate", "datetime", writable=False),
    LeadField("LastModifiedDate", "datetime", writable=False),
    LeadField("SystemModstamp", "datetime", writable=False),
)
REQUIRED_FIELDS = ("LastName", "Company")
CUSTOM_FIELD_TYPES = {
    "string": ("string", 255),
    "double": ("double", 0),
    "int": ("int", 0),
    "boolean": ("boolean", 0),
}
DEFAULT_CUSTOM_FIELDS = "Leadflow_Score__c:double,Leadflow_Score_Reasons__c,Leadflow_Source__c,Leadflow_Category__c,Leadflow_Merged_Into__c"


class SalesforceError(Exception):
    """An error answer: HTTP status and one entry of Salesforce's error list."""

    def __init__(
        self, status: int, code: str, message: str, error_fields: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(error_fields)

    def rest_body(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields:
            entry["fields"] = self.fields
        return [entry]

    def record_error(self) -> dict[str, Any]:
        """The error as composite collections and bulk results carry it."""
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


class MultipleMatches(Exception):
    """An upsert or lookup by external id that matched more than one record (HTTP 300)."""

    def __init__(self, ids: Sequence[str]) -> None:
        super().__init__(f"{len(ids)} records match")
        self.ids = list(ids)


def _not_found() -> SalesforceError:
    return SalesforceError(404, "NOT_FOUND", "The requested resource does not exist")


def _oauth_error(error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=400)


def salesforce_id(prefix: str, number: int) -> str:
    """An 18-character Salesforce id: 15 case-sensitive characters plus the 3-character
    suffix that encodes where the upper-case letters are."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    digits = ""
    for _ in range(8):
        number, rest = divmod(number, 62)
        digits = alphabet[rest] + digits
    short = f"{prefix}5g00{digits}"
    suffix = ""
    for chunk in (short[0:5], short[5:10], short[10:15]):
        flags = sum(1 << i for i, char in enumerate(chunk) if char.isupper())
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[flags]
    return short + suffix


def parse_custom_fields(
    spec: str, external_id_field: str, external_id_unique: bool
) -> tuple[LeadField, ...]:
    """`A__c:double,B__c` -> the Lead custom fields, the external-id field first."""
    custom = [
        LeadField(
            external_id_field,
            "string",
            255,
            custom=True,
            external_id=True,
            unique=external_id_unique,
        )
    ]
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, kind = item.partition(":")
        if not name.endswith("__c") or (kind and kind not in CUSTOM_FIELD_TYPES):
            raise ValueError(
                f"bad custom field {item!r}: expected Name__c[:{'|'.join(CUSTOM_FIELD_TYPES)}]"
            )
        field_type, length = CUSTOM_FIELD_TYPES[kind or "string"]
        if name.lower() != external_id_field.lower():
            custom.append(LeadField(name, field_type, length, custom=True))
    return tuple(custom)


def load_public_key(pem: bytes) -> RSAPublicKey:
    """The RSA key of a PEM certificate (what a connected app holds) or public key."""
    if b"BEGIN CERTIFICATE" in pem:
        key = x509.load_pem_x509_certificate(pem).public_key()
    else:
        key = serialization.load_pem_public_key(pem)
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the JWT bearer flow needs an RSA key")
    return key


# --------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class SalesforceSandboxConfig:
    username: str = "leadflow@sandbox.test"
    password: str = "sandbox-salesforce-password"
    consumer_key: str = "sandbox-salesforce-consumer-key"
    consumer_secret: str = "sandbox-salesforce-consumer-secret"
    jwt_public_key_pem: bytes | None = None  # certificate or public key; None = JWT flow refused
    instance_url: str = DEFAULT_INSTANCE_URL
    token_ttl: float = 7200.0
    api_requests_per_day: int = 15_000
    external_id_field: str = "Leadflow_Lead_Id__c"
    external_id_unique: bool = True
    custom_fields: str = DEFAULT_CUSTOM_FIELDS
    bulk_processing_seconds: float = 2.0
    seed: int = 42

    @classmethod
    def from_settings(cls, settings: Settings, seed: int | None = None) -> SalesforceSandboxConfig:
        certificate = settings.sandbox_crm_salesforce_jwt_certificate
        return cls(
            username=settings.sandbox_crm_salesforce_username,
            password=settings.sandbox_crm_salesforce_password,
            consumer_key=settings.sandbox_crm_salesforce_consumer_key,
            consumer_secret=settings.sandbox_crm_salesforce_consumer_secret,
            jwt_public_key_pem=Path(certificate).read_bytes() if certificate else None,
            instance_url=settings.sandbox_crm_salesforce_instance_url,
            token_ttl=settings.sandbox_crm_salesforce_token_ttl,
            api_requests_per_day=settings.sandbox_crm_salesforce_api_requests_per_day,
            external_id_field=settings.sandbox_crm_salesforce_external_id_field,
            custom_fields=settings.sandbox_crm_salesforce_custom_fields,
            bulk_processing_seconds=settings.sandbox_crm_salesforce_bulk_processing_seconds,
            seed=settings.sandbox_seed if seed is None else seed,
        )


_CONTROL_KNOBS: dict[str, Callable[[Any], Any]] = {
    "token_ttl": parse_non_negative_float,
    "api_requests_per_day": parse_positive_int,
    "bulk_processing_seconds": parse_non_negative_float,
    "external_id_unique": parse_bool,
}


@dataclass(slots=True)
class BulkJob:
    id: str
    operation: str
    external_id_field: str | None
    delimiter: str
    line_ending: str
    version: str
    created: str
    state: str = "Open"  # Open, UploadComplete, JobComplete, Failed, Aborted
    uploads: list[str] = field(default_factory=list)
    closed_at: float = 0.0
    error_message: str | None = None
    columns: list[str] = field(default_factory=list)
    successful: list[list[str]] = field(default_factory=list)  # sf__Id, sf__Created, row...
    failed: list[list[str]] = field(default_factory=list)  # sf__Id, sf__Error, row...
    unprocessed: list[list[str]] = field(default_factory=list)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


class SalesforceSandbox(CrmSandboxBase[SalesforceSandboxConfig]):
    """The org's state: leads, issued tokens, API usage, bulk jobs, open query cursors."""

    name = "salesforce"
    config_type = SalesforceSandboxConfig
    control_knobs = _CONTROL_KNOBS

    def _fault_error(self) -> Response:
        return self._error_response(
            SalesforceError(
                500,
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact support: 1951318051-31337 (-1571483921)",
            )
        )

    def _fault_throttled(self) -> Response:
        return self._error_response(
            SalesforceError(
                403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."
            )
        )

    def _from_config(self) -> None:
        """What the config fixes: the key JWT logins are checked with, the Lead's fields."""
        pem = self.config.jwt_public_key_pem
        self._public_key = load_public_key(pem) if pem else None
        self._fields = STANDARD_LEAD_FIELDS + parse_custom_fields(
            self.config.custom_fields,
            self.config.external_id_field,
            self.config.external_id_unique,
        )
        self._by_lower = {f.name.lower(): f for f in self._fields}

    def _clear(self) -> None:
        self._from_config()
        self._leads: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, float] = {}  # access token -> clock time it expires
        self._api_used = 0
        self._jobs: dict[str, BulkJob] = {}
        # Open query cursors: locator -> (the rows, the page size).
        self._cursors: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self._serial = 0
        self._answers: Counter[int] = Counter()

    def _next_id(self, prefix: str) -> str:
        self._serial += 1
        return salesforce_id(prefix, 7_000_000 + self._serial)

    def lead_field(self, name: str) -> LeadField | None:
        return self._by_lower.get(name.lower())

    # --- OAuth ------------------------------------------------------------------------------

    def issue_token(self, form: Mapping[str, str]) -> Response:
        c = self.config
        grant = form.get("grant_type", "")
        if grant == "password":
            if form.get("client_id") != c.consumer_key:
                return _oauth_error("invalid_client_id", "client identifier invalid")
            if form.get("client_secret") != c.consumer_secret:
                return _oauth_error("invalid_client", "invalid client credentials")
            if form.get("username") != c.username or form.get("password") != c.password:
                return _oauth_error("invalid_grant", "authentication failure")
        elif grant == JWT_GRANT:
            problem = self._check_assertion(form.get("assertion", ""))
            if problem is not None:
                return _oauth_error("invalid_grant", problem)
        else:
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        token = f"{ORG_ID}!AR" + secrets.token_urlsafe(72)
        issued_at = str(int(time.time() * 1000))
        identity = f"https://login.salesforce.com/id/{ORG_ID}/{USER_ID}"
        signature = hmac.new(
            c.consumer_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
        )
        with self._lock:
            self._tokens[token] = self._clock() + c.token_ttl
        return JSONResponse(
            {
                "access_token": token,
                "instance_url": c.instance_url,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
                "signature": base64.b64encode(signature.digest()).decode(),
                "scope": "api",
            }
        )

    def _check_assertion(self, assertion: str) -> str | None:
        """Why a JWT bearer assertion is refused, or None when it is good."""
        if self._public_key is None:
            return "no certificate is configured for this connected app"
        try:
            # simple-salesforce sends `exp` as a string, which PyJWT's own check rejects, and
            # Salesforce accepts: `exp` is checked below.
            claims = jwt.decode(
                assertion,
                self._public_key,
                algorithms=["RS256"],
                audience=[f"https://{host}" for host in LOGIN_HOSTS],
                options={"verify_exp": False, "require": ["iss", "sub", "aud", "exp"]},
            )
        except jwt.InvalidTokenError:
            return "invalid assertion"
        try:
            expires = float(claims["exp"])
        except (TypeError, ValueError):
            return "invalid assertion"
        if expires < time.time():
            return "expired authorization code"
        if claims["iss"] != self.config.consumer_key:
            return "invalid client credentials"
        if claims["sub"] != self.config.username:
            return "user hasn't approved this consumer"
        return None

    # --- REST bookkeeping ---------------------------------------------------------------------

    def authorize(self, header: str | None) -> None:
        """Check the bearer token and count the request against the daily budget."""
        scheme, _, token = (header or "").partition(" ")
        with self._lock:
            expires = (
                self._tokens.get(token.strip()) if scheme.lower() in ("bearer", "oauth") else None
            )
            if expires is None or self._clock() >= expires:
                raise SalesforceError(401, "INVALID_SESSION_ID", "Session expired or invalid")
            if self._api_used >= self.config.api_requests_per_day:
                raise SalesforceError(
                    403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."
                )
            self._api_used += 1

    def limit_info(self) -> str:
        with self._lock:
            return f"api-usage={self._api_used}/{self.config.api_requests_per_day}"

    def record_answer(self, status: int) -> None:
        with self._lock:
            self._answers[status] += 1

    def _error_response(self, error: SalesforceError) -> Response:
        return JSONResponse(
            error.rest_body(),
            status_code=error.status,
            headers={"Sforce-Limit-Info": self.limit_info()},
        )

    def limits(self) -> dict[str, Any]:
        with self._lock:
            budget = self.config.api_requests_per_day
            return {
                "DailyApiRequests": {"Max": budget, "Remaining": max(0, budget - self._api_used)}
            }

    # --- leads ----------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "name": "Lead",
            "label": "Lead",
            "custom": False,
            "createable": True,
            "updateable": True,
            "fields": [
                {
                    "name": f.name,
                    "label": f.name.removesuffix("__c").replace("_", " "),
                    "type": f.type,
                    "length": f.length,
                    "custom": f.custom,
                    "createable": f.writable,
                    "updateable": f.writable,
                    "nillable": f.writable and f.name not in REQUIRED_FIELDS,
                    "externalId": f.external_id,
                    "unique": f.unique,
                    "restrictedPicklist": bool(f.picklist),
                    "picklistValues": [
                        {
                            "value": v,
                            "label": v,
                            "active": True,
                            "defaultValue": v == LEAD_STATUSES[0],
                        }
                        for v in f.picklist
                    ],
                }
                for f in self._fields
            ],
        }

    def _clean(self, data: Any) -> dict[str, Any]:
        """The writable fields of a request body, by canonical name, with checked values."""
        if not isinstance(data, dict):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "Expected a JSON object for an sObject")
        cleaned: dict[str, Any] = {}
        read_only = []
        for key, value in data.items():
            if key == "attributes":
                continue
            spec = self.lead_field(key)
            if spec is None:
                raise SalesforceError(
                    400, "INVALID_FIELD", f"No such column '{key}' on sobject of type Lead"
                )
            if not spec.writable:
                read_only.append(spec.name)
                continue
            cleaned[spec.name] = _checked_value(spec, value)
        if read_only:
            raise SalesforceError(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(read_only)}. Please check the security "
                "settings of this field and verify that it is read/write for your profile or permission set.",
                read_only,
            )
        return cleaned

    def _matching(self, spec: LeadField, value: Any) -> list[str]:
        return [
            lead_id
            for lead_id, lead in self._leads.items()
            if value is not None and lead.get(spec.name) == value
        ]

    def _store(self, lead_id: str | None, changes: Mapping[str, Any]) -> str:
        """Create (`lead_id` None) or update a lead after the checks a save runs."""
        now = _now_iso()
        if lead_id is None:
            lead_id = self._next_id("00Q")
            record: dict[str, Any] = {f.name: None for f in self._fields}
            record.update(
                Id=lead_id,
                Status=LEAD_STATUSES[0],
                IsConverted=False,
                IsDeleted=False,
                CreatedDate=now,
            )
        else:
            record = dict(self._leads[lead_id])
        record.update(changes)
        missing = [name for name in REQUIRED_FIELDS if record.get(name) in (None, "")]
        if missing:
            raise SalesforceError(
                400,
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        for spec in self._fields:
            if spec.unique and record.get(spec.name) is not None:
                other = next(
                    (i for i in self._matching(spec, record[spec.name]) if i != lead_id), None
                )
                if other is not None:
                    raise SalesforceError(
                        400,
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {spec.name} duplicates value on record with id: {other}",
                    )
        record.update(LastModifiedDate=now, SystemModstamp=now)
        self._leads[lead_id] = record
        return lead_id

    def create(self, data: Any) -> str:
        with self._lock:
            return self._store(None, self._clean(data))

    def update(self, lead_id: str, data: Any) -> None:
        with self._lock:
            if lead_id not in self._leads:
                raise _not_found()
            self._store(lead_id, self._clean(data))

    def external_id_spec(self, name: str) -> LeadField:
        spec = self.lead_field(name)
        if spec is None or not spec.external_id:
            raise SalesforceError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {name}",
            )
        return spec

    def upsert(self, ext_field: str, value: str, data: Any) -> tuple[str, bool]:
        """Create or update the lead whose external id is `value`: (Id, created)."""
        with self._lock:
            spec = self.external_id_spec(ext_field)
            return self._upsert(spec, value, self._clean(data))

    def _upsert(self, spec: LeadField, value: str, changes: dict[str, Any]) -> tuple[str, bool]:
        matches = self._matching(spec, value)
        if len(matches) > 1:
            raise MultipleMatches(matches)
        changes[spec.name] = value
        if matches:
            self._store(matches[0], changes)
            return matches[0], False
        return self._store(None, changes), True

    def get(self, lead_id: str) -> dict[str, Any]:
        with self._lock:
            if lead_id not in self._leads:
                raise _not_found()
            return dict(self._leads[lead_id])

    def get_by_external_id(self, ext_field: str, value: str) -> dict[str, Any]:
        with self._lock:
            matches = self._matching(self.external_id_spec(ext_field), value)
            if len(matches) > 1:
                raise MultipleMatches(matches)
            if not matches:
                raise _not_found()
            return dict(self._leads[matches[0]])

    def upsert_collection(self, ext_field: str, body: Any) -> list[dict[str, Any]]:
        """Composite sObject collections upsert: one result per record, in input order."""
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "Expected {allOrNone, records: [...]}")
        records, all_or_none = body["records"], bool(body.get("allOrNone", False))
        if len(records) > MAX_COLLECTION_RECORDS:
            raise SalesforceError(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION_RECORDS} records into this call",
            )
        with self._lock:
            spec = self.external_id_spec(ext_field)
            values = [_record_value(r, spec.name) for r in records]
            shared = {v for v, n in Counter(v for v in values if v is not None).items() if n > 1}
            saved = dict(self._leads)
            results: list[dict[str, Any]] = []
            for record, value in zip(records, values, strict=True):
                try:
                    if (
                        not isinstance(record, dict)
                        or (record.get("attributes") or {}).get("type") != "Lead"
                    ):
                        raise SalesforceError(
                            400,
                            "INVALID_TYPE",
                            "Must specify the sObject type in attributes.type: Lead",
                        )
                    if value is None:
                        raise SalesforceError(400, "MISSING_ARGUMENT", f"{spec.name} not specified")
                    if value in shared:
                        raise SalesforceError(
                            400,
                            "DUPLICATE_EXTERNAL_ID",
                            f"Duplicate external id specified: {value}",
                            [spec.name],
                        )
                    lead_id, created = self._upsert(spec, value, self._clean(record))
                    results.append(
                        {"id": lead_id, "success": True, "errors": [], "created": created}
                    )
                except SalesforceError as exc:
                    results.append({"success": False, "errors": [exc.record_error()]})
                except MultipleMatches as exc:
                    error = SalesforceError(
                        300,
                        "DUPLICATE_EXTERNAL_ID",
                        f"{spec.name}: more than one record found for external id field: {exc.ids}",
                        [spec.name],
                    )
                    results.append({"success": False, "errors": [error.record_error()]})
            if all_or_none and not all(r["success"] for r in results):
                self._leads = saved
                rolled_back = SalesforceError(
                    400, "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was using AllOrNone header",
                ).record_error()  # fmt: skip
                results = [
                    r if not r["success"] else {"success": False, "errors": [rolled_back]}
                    for r in results
                ]
            return results

    # --- SOQL ----------------------------------------------------------------------------------

    def query(self, soql: str, version: str, batch_size: int) -> dict[str, Any]:
        select, where, order, limit = _parse_soql(soql)
        with self._lock:
            columns = None if select is None else [self._query_field(name) for name in select]
            conditions = [(self._query_field(name), op, value) for name, op, value in where]
            rows = [
                lead for lead in self._leads.values() if all(_holds(lead, *c) for c in conditions)
            ]
            if order is not None:
                key, descending = self._query_field(order[0]), order[1]
                rows.sort(
                    key=lambda lead: (lead.get(key) is None, lead.get(key) or ""),
                    reverse=descending,
                )
            rows = rows[:limit] if limit is not None else rows
            if columns is None:  # COUNT()
                return {"totalSize": len(rows), "done": True, "records": []}
            records = [
                _with_attributes({c: lead.get(c) for c in columns}, lead["Id"], version)
                for lead in rows
            ]
            return self._page(records, 0, version, batch_size, locator=None)

    def _query_field(self, name: str) -> str:
        spec = self.lead_field(name)
        if spec is None:
            raise SalesforceError(
                400,
                "INVALID_FIELD",
                f"No such column '{name}' on entity 'Lead'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.",
            )
        return spec.name

    def _page(
        self,
        records: list[dict[str, Any]],
        start: int,
        version: str,
        batch_size: int,
        locator: str | None,
    ) -> dict[str, Any]:
        end = start + batch_size
        page: dict[str, Any] = {
            "totalSize": len(records),
            "done": end >= len(records),
            "records": records[start:end],
        }
        if end < len(records):
            locator = locator or self._next_id("01g")
            self._cursors[locator] = (records, batch_size)
            page["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{end}"
        return page

    def query_more(self, cursor: str, version: str) -> dict[str, Any]:
        locator, _, start = cursor.rpartition("-")
        with self._lock:
            if locator not in self._cursors or not start.isdigit():
                raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
            records, batch_size = self._cursors[locator]
            return self._page(records, int(start), version, batch_size, locator)

    # --- Bulk API 2.0 ---------------------------------------------------------------------------

    def create_job(self, body: Any, version: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "Expected a JSON object")
        operation, ext_field = body.get("operation"), body.get("externalIdFieldName")
        if body.get("object") != "Lead":
            raise SalesforceError(400, "INVALIDJOB", f"Unable to find object: {body.get('object')}")
        if operation not in BULK_OPERATIONS:
            raise SalesforceError(
                400,
                "INVALIDJOB",
                f"The operation {operation} is not supported by the sandbox (it supports {', '.join(BULK_OPERATIONS)})",
            )
        if body.get("contentType", "CSV") != "CSV":
            raise SalesforceError(400, "INVALIDJOB", "Unsupported contentType: only CSV")
        delimiter = BULK_DELIMITERS.get(body.get("columnDelimiter", "COMMA"))
        line_ending = {"LF": "\n", "CRLF": "\r\n"}.get(body.get("lineEnding", "LF"))
        if delimiter is None or line_ending is None:
            raise SalesforceError(400, "INVALIDJOB", "Unsupported columnDelimiter or lineEnding")
        with self._lock:
            if operation == "upsert":
                if not ext_field:
                    raise SalesforceError(
                        400, "INVALIDJOB", "External ID field is required for upsert"
                    )
                ext_field = self.external_id_spec(ext_field).name
            job = BulkJob(
                self._next_id("750"),
                operation,
                ext_field if operation == "upsert" else None,
                delimiter,
                line_ending,
                version,
                _now_iso(),
            )
            self._jobs[job.id] = job
            return self._job_info(job)

    def _job(self, job_id: str) -> BulkJob:
        job = self._jobs.get(job_id)
        if job is None:
            raise _not_found()
        return job

    def upload(self, job_id: str, data: bytes) -> None:
        with self._lock:
            job = self._job(job_id)
            if job.state != "Open":
                raise SalesforceError(
                    409, "INVALIDJOBSTATE", f"Job is not open for uploads: {job.state}"
                )
            job.uploads.append(data.decode("utf-8-sig"))

    def set_job_state(self, job_id: str, body: Any) -> dict[str, Any]:
        wanted = body.get("state") if isinstance(body, dict) else None
        with self._lock:
            job = self._job(job_id)
            if wanted == "UploadComplete" and job.state == "Open":
                if not job.uploads:
                    raise SalesforceError(
                        400, "INVALIDJOBSTATE", "No data was uploaded for this job"
                    )
                job.state, job.closed_at = "UploadComplete", self._clock()
            elif wanted == "Aborted" and job.state in ("Open", "UploadComplete"):
                job.state = "Aborted"
            else:
                raise SalesforceError(
                    400,
                    "INVALIDJOBSTATE",
                    f"Cannot change the state of a job from {job.state} to {wanted}",
                )
            return self._job_info(job)

    def job_info(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._job(job_id)
            if (
                job.state == "UploadComplete"
                and self._clock() >= job.closed_at + self.config.bulk_processing_seconds
            ):
                self._process(job)
            info = self._job_info(job)
            if job.state == "UploadComplete":
                info["state"] = "InProgress"  # processing: the job's data is being loaded
            return info

    def job_results(self, job_id: str, kind: str) -> str:
        with self._lock:
            job = self._job(job_id)
            if job.state not in ("JobComplete", "Failed"):
                raise SalesforceError(
                    400, "INVALIDJOBSTATE", "Results are available once the job is complete"
                )
            out = io.StringIO()
            writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
            prefix = {
                "successful": ["sf__Id", "sf__Created"],
                "failed": ["sf__Id", "sf__Error"],
                "unprocessed": [],
            }[kind]
            writer.writerow(prefix + job.columns)
            writer.writerows(getattr(job, kind))
            return out.getvalue()

    def _job_info(self, job: BulkJob) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": job.id,
            "operation": job.operation,
            "object": "Lead",
            "createdById": USER_ID,
            "createdDate": job.created,
            "systemModstamp": job.created,
            "state": job.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(job.version.removeprefix("v")),
            "jobType": "V2Ingest",
            "contentUrl": f"services/data/{job.version}/jobs/ingest/{job.id}/batches",
            "lineEnding": "LF" if job.line_ending == "\n" else "CRLF",
            "columnDelimiter": next(k for k, v in BULK_DELIMITERS.items() if v == job.delimiter),
            "numberRecordsProcessed": len(job.successful) + len(job.failed),
            "numberRecordsFailed": len(job.failed),
            "retries": 0,
            "totalProcessingTime": 0,
        }
        if job.external_id_field:
            info["externalIdFieldName"] = job.external_id_field
        if job.error_message:
            info["errorMessage"] = job.error_message
        return info

    def _process(self, job: BulkJob) -> None:
        rows: list[list[str]] = []
        for upload in job.uploads:
            reader = csv.reader(io.StringIO(upload), delimiter=job.delimiter)
            parsed = [row for row in reader if row]
            if not parsed:
                continue
            header, *body = parsed
            if job.columns and header != job.columns:
                job.state, job.error_message = (
                    "Failed",
                    "InvalidBatch : All uploads of a job must have the same columns",
                )
                return
            job.columns = header
            rows.extend(body)
        specs = [self.lead_field(name) for name in job.columns]
        unknown = [name for name, spec in zip(job.columns, specs, strict=True) if spec is None]
        required = (
            job.external_id_field
            if job.operation == "upsert"
            else "Id"
            if job.operation == "update"
            else None
        )
        if unknown or (required and required.lower() not in (c.lower() for c in job.columns)):
            job.state = "Failed"
            job.error_message = (
                f"InvalidBatch : Field name not found : {unknown[0] if unknown else required}"
            )
            job.unprocessed = rows
            return
        key_index = next(
            (i for i, c in enumerate(job.columns) if required and c.lower() == required.lower()),
            None,
        )
        keys = [
            row[key_index] if key_index is not None and key_index < len(row) else "" for row in rows
        ]
        shared = (
            {k for k, n in Counter(k for k in keys if k).items() if n > 1}
            if job.operation == "upsert"
            else set()
        )
        for row, key in zip(rows, keys, strict=True):
            try:
                if len(row) != len(job.columns):
                    raise SalesforceError(
                        400,
                        "INVALID_FIELD",
                        "The row does not have as many values as the header has columns",
                    )
                data = {
                    spec.name: _csv_value(spec, cell)
                    for spec, cell in zip(specs, row, strict=True)
                    if spec is not None and cell != ""
                }
                if job.operation == "insert":
                    lead_id, created = self._store(None, self._clean(data)), True
                elif job.operation == "update":
                    data.pop("Id", None)
                    if key not in self._leads:
                        raise SalesforceError(
                            400,
                            "ENTITY_IS_DELETED",
                            f"entity is deleted or does not exist: {key}",
                            ["Id"],
                        )
                    lead_id, created = self._store(key, self._clean(data)), False
                else:
                    assert job.external_id_field is not None
                    if not key:
                        raise SalesforceError(
                            400, "MISSING_ARGUMENT", f"{job.external_id_field} not specified"
                        )
                    if key in shared:
                        raise SalesforceError(
                            400,
                            "DUPLICATE_EXTERNAL_ID",
                            f"Duplicate external id specified: {key}",
                            [job.external_id_field],
                        )
                    lead_id, created = self._upsert(
                        self.external_id_spec(job.external_id_field), key, self._clean(data)
                    )
                job.successful.append([lead_id, "true" if created else "false", *row])
            except SalesforceError as exc:
                job.failed.append(["", f"{exc.code}:{exc.message}:{','.join(exc.fields)} --", *row])
            except MultipleMatches as exc:
                job.failed.append(
                    [
                        "",
                        f"DUPLICATE_EXTERNAL_ID:more than one record found for external id field: {exc.ids}:{job.external_id_field} --",
                        *row,
                    ]
                )
        job.state = "JobComplete"

    # --- control and truth ----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            c = self.config
            return {
                "config": {
                    **{name: getattr(c, name) for name in _CONTROL_KNOBS},
                    "instance_url": c.instance_url,
                    "external_id_field": c.external_id_field,
                    "jwt_configured": self._public_key is not None,
                },
                "api_usage": {"used": self._api_used, "max": c.api_requests_per_day},
                "live_tokens": sum(
                    1 for expires in self._tokens.values() if expires > self._clock()
                ),
                "answers": {str(status): n for status, n in sorted(self._answers.items())},
                "faults": self.faults.state(),
            }

    def _apply_knobs(self, knobs: dict[str, Any]) -> None:
        expire_tokens = parse_bool(knobs.pop("expire_tokens", False))
        api_used = knobs.pop("api_requests_used", None)
        used = self._api_used if api_used is None else parse_non_negative_int(api_used)
        super()._apply_knobs(knobs)
        self._api_used = used
        if "external_id_unique" in knobs:
            self._from_config()
        if expire_tokens:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    def truth(self, kind: str | None = None) -> dict[str, Any]:
        if kind not in (None, "leads"):
            raise KeyError(kind)
        with self._lock:
            leads = list(self._leads.values())
            ext = self.config.external_id_field
            return {
                "leads": {
                    "count": len(leads),
                    "duplicates": duplicates([lead.get(ext) for lead in leads]),
                    "records": leads,
                }
            }


def _checked_value(spec: LeadField, value: Any) -> Any:
    if value is None:
        return None
    if spec.type in STRING_TYPES:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise SalesforceError(
                400,
                "JSON_PARSER_ERROR",
                f"Cannot deserialize instance of string from {type(value).__name__} value {value!r} for field {spec.name}",
            )
        text = str(value)
        if text == "":
            return None  # Salesforce stores an empty string as null
        if len(text) > spec.length:
            raise SalesforceError(
                400,
                "STRING_TOO_LONG",
                f"{spec.name}: data value too large: {text[:40]}... (max length={spec.length})",
                [spec.name],
            )
        if spec.type == "email" and not EMAIL_RE.fullmatch(text):
            raise SalesforceError(
                400,
                "INVALID_EMAIL_ADDRESS",
                f"{spec.name}: invalid email address: {text}",
                [spec.name],
            )
        if spec.picklist and text not in spec.picklist:
            raise SalesforceError(
                400,
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{spec.name}: bad value for restricted picklist field: {text}",
                [spec.name],
            )
        return text
    wanted = {"int": (int,), "double": (int, float), "currency": (int, float), "boolean": (bool,)}[
        spec.type
    ]
    if isinstance(value, bool) != (spec.type == "boolean") or not isinstance(value, wanted):
        raise SalesforceError(
            400,
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {spec.type} from value {value!r} for field {spec.name}",
        )
    return value


def _csv_value(spec: LeadField, cell: str) -> Any:
    """A bulk CSV cell as the JSON value the same field would take (`#N/A` clears it)."""
    if cell == "#N/A":
        return None
    try:
        if spec.type == "int":
            return int(cell)
        if spec.type in ("double", "currency"):
            return float(cell)
    except ValueError:
        raise SalesforceError(
            400,
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            f"{spec.name}: value not of required type: {cell}",
            [spec.name],
        ) from None
    if spec.type == "boolean":
        if cell.lower() not in ("true", "false"):
            raise SalesforceError(
                400,
                "INVALID_TYPE_ON_FIELD_IN_RECORD",
                f"{spec.name}: value not of required type: {cell}",
                [spec.name],
            )
        return cell.lower() == "true"
    return cell


def _record_value(record: Any, field_name: str) -> str | None:
    if not isinstance(record, dict):
        return None
    value = next((v for k, v in record.items() if k.lower() == field_name.lower()), None)
    return None if value in (None, "") else str(value)


def _with_attributes(record: dict[str, Any], lead_id: str, version: str) -> dict[str, Any]:
    return {
        "attributes": {"type": "Lead", "url": f"/services/data/{version}/sobjects/Lead/{lead_id}"},
        **record,
    }


# --- the SOQL subset ---------------------------------------------------------------------------

_SOQL_RE = re.compile(
    r"\s*SELECT\s+(?P<select>.+?)\s+FROM\s+(?P<object>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>\w+)(?:\s+(?P<direction>ASC|DESC))?)?"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*",
    re.IGNORECASE | re.DOTALL,
)
_LITERAL = r"'(?:[^'\\]|\\.)*'|-?\d+(?:\.\d+)?|null|true|false"
_CONDITION_RE = re.compile(
    rf"\s*(?P<field>\w+)\s*"
    rf"(?:(?P<op>=|!=)\s*(?P<value>{_LITERAL})"
    rf"|IN\s*\((?P<values>\s*(?:{_LITERAL})(?:\s*,\s*(?:{_LITERAL}))*)\s*\))\s*",
    re.IGNORECASE,
)

Condition = tuple[str, str, Any]


def _literal(text: str) -> Any:
    lowered = text.lower()
    if text.startswith("'"):
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    return float(text) if "." in text else int(text)


def _parse_soql(
    soql: str,
) -> tuple[list[str] | None, list[Condition], tuple[str, bool] | None, int | None]:
    """(fields or None for COUNT(), conditions, (order field, descending), limit)."""
    match = _SOQL_RE.fullmatch(soql)
    if match is None:
        raise SalesforceError(400, "MALFORMED_QUERY", f"unexpected token in: {soql[:80]}")
    if match["object"].lower() != "lead":
        raise SalesforceError(
            400, "INVALID_TYPE", f"sObject type '{match['object']}' is not supported."
        )
    select = [name.strip() for name in match["select"].split(",")]
    columns = None if [s.replace(" ", "").upper() for s in select] == ["COUNT()"] else select
    if columns is not None and not all(re.fullmatch(r"\w+", name) for name in columns):
        raise SalesforceError(
            400, "MALFORMED_QUERY", "the sandbox supports plain field lists and COUNT() only"
        )
    conditions: list[Condition] = []
    if match["where"]:
        for part in re.split(r"\s+AND\s+", match["where"], flags=re.IGNORECASE):
            condition = _CONDITION_RE.fullmatch(part)
            if condition is None:
                raise SalesforceError(
                    400, "MALFORMED_QUERY", f"unexpected condition: {part.strip()[:80]}"
                )
            if condition["values"] is not None:
                values = [
                    _literal(v)
                    for v in re.findall(_LITERAL, condition["values"], flags=re.IGNORECASE)
                ]
                conditions.append((condition["field"], "IN", values))
            else:
                conditions.append(
                    (condition["field"], condition["op"], _literal(condition["value"]))
                )
    order = (
        (match["order"], (match["direction"] or "").upper() == "DESC") if match["order"] else None
    )
    return columns, conditions, order, int(match["limit"]) if match["limit"] else None


def _holds(lead: Mapping[str, Any], field_name: str, op: str, value: Any) -> bool:
    actual = lead.get(field_name)
    if op == "IN":
        return actual in value
    return (actual == value) == (op == "=")


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------


def salesforce_app(sandbox: SalesforceSandbox) -> ASGIApp:
    """The Salesforce stand-in as an ASGI app (mount it under `/salesforce`)."""

    def rest(
        handler: Callable[[Request, str, bytes], Response],
    ) -> Callable[[Request], Awaitable[Response]]:
        """Version check, bearer token and API budget, error list, `Sforce-Limit-Info`."""

        async def endpoint(request: Request) -> Response:
            version = request.path_params["version"]
            body = await request.body()
            try:
                match = re.fullmatch(r"v(\d+)\.0", version)
                if match is None or not MIN_API_VERSION <= int(match[1]) <= MAX_API_VERSION:
                    raise _not_found()
                sandbox.authorize(request.headers.get("authorization"))
                response = handler(request, version, body)
            except SalesforceError as exc:
                response = JSONResponse(exc.rest_body(), status_code=exc.status)
            except MultipleMatches as exc:
                urls = [f"/services/data/{version}/sobjects/Lead/{lead_id}" for lead_id in exc.ids]
                response = JSONResponse(urls, status_code=300)
            response.headers["Sforce-Limit-Info"] = sandbox.limit_info()
            sandbox.record_answer(response.status_code)
            return response

        return endpoint

    def json_body(body: bytes) -> Any:
        try:
            return json.loads(body or b"null")
        except ValueError:
            raise SalesforceError(
                400, "JSON_PARSER_ERROR", "Unexpected character in the request body: not JSON"
            ) from None

    def lead_only(request: Request) -> None:
        if request.path_params["sobject"] != "Lead":
            raise _not_found()

    def version_number(version: str) -> int:
        return int(version[1:].split(".")[0])

    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        response = sandbox.issue_token(form)
        sandbox.record_answer(response.status_code)
        return response

    def limits(request: Request, version: str, body: bytes) -> Response:
        return JSONResponse(sandbox.limits())

    def describe(request: Request, version: str, body: bytes) -> Response:
        lead_only(request)
        return JSONResponse(sandbox.describe())

    def create(request: Request, version: str, body: bytes) -> Response:
        lead_only(request)
        lead_id = sandbox.create(json_body(body))
        return JSONResponse({"id": lead_id, "success": True, "errors": []}, status_code=201)

    def by_id(request: Request, version: str, body: bytes) -> Response:
        lead_only(request)
        lead_id = request.path_params["record_id"]
        if request.method == "GET":
            return JSONResponse(_with_attributes(sandbox.get(lead_id), lead_id, version))
        sandbox.update(lead_id, json_body(body))
        return Response(status_code=204)

    def by_external_id(request: Request, version: str, body: bytes) -> Response:
        lead_only(request)
        ext_field, value = request.path_params["field"], request.path_params["value"]
        if request.method == "GET":
            record = sandbox.get_by_external_id(ext_field, value)
            return JSONResponse(_with_attributes(record, record["Id"], version))
        lead_id, created = sandbox.upsert(ext_field, value, json_body(body))
        answer = {"id": lead_id, "success": True, "errors": [], "created": created}
        if created:
            return JSONResponse(answer, status_code=201)
        if version_number(version) >= UPDATE_ANSWERS_200_SINCE:
            return JSONResponse(answer)
        return Response(status_code=204)

    def collection_upsert(request: Request, version: str, body: bytes) -> Response:
        lead_only(request)
        if version_number(version) < COLLECTIONS_UPSERT_SINCE:
            raise _not_found()
        return JSONResponse(
            sandbox.upsert_collection(request.path_params["field"], json_body(body))
        )

    def query(request: Request, version: str, body: bytes) -> Response:
        soql = request.query_params.get("q")
        if not soql:
            raise SalesforceError(400, "MALFORMED_QUERY", "A query string has to be specified")
        options = dict(
            part.strip().split("=", 1)
            for part in request.headers.get("sforce-query-options", "").split(",")
            if "=" in part
        )
        try:
            batch_size = int(options.get("batchSize", QUERY_BATCH_DEFAULT))
        except ValueError:
            batch_size = QUERY_BATCH_DEFAULT
        batch_size = min(QUERY_BATCH_DEFAULT, max(QUERY_BATCH_MIN, batch_size))
        return JSONResponse(sandbox.query(soql, version, batch_size))

    def query_more(request: Request, version: str, body: bytes) -> Response:
        return JSONResponse(sandbox.query_more(request.path_params["locator"], version))

    def create_job(request: Request, version: str, body: bytes) -> Response:
        return JSONResponse(sandbox.create_job(json_body(body), version))

    def job(request: Request, version: str, body: bytes) -> Response:
        job_id = request.path_params["job_id"]
        if request.method == "GET":
            return JSONResponse(sandbox.job_info(job_id))
        return JSONResponse(sandbox.set_job_state(job_id, json_body(body)))

    def upload(request: Request, version: str, body: bytes) -> Response:
        if not request.headers.get("content-type", "").startswith("text/csv"):
            raise SalesforceError(400, "INVALIDJOB", "Content-Type must be text/csv")
        sandbox.upload(request.path_params["job_id"], body)
        return Response(status_code=201)

    def results(request: Request, version: str, body: bytes) -> Response:
        kind = RESULT_KINDS.get(request.path_params["results"].lower())
        if kind is None:
            raise _not_found()
        return Response(
            sandbox.job_results(request.path_params["job_id"], kind), media_type="text/csv"
        )

    data = "/services/data/{version}"

    def route(
        path: str, handler: Callable[[Request, str, bytes], Response], methods: list[str]
    ) -> list[BaseRoute]:
        # simple-salesforce asks for some paths with a trailing slash (`.../query/`,
        # `.../sobjects/Lead/`) and others without: answer both, as Salesforce does.
        endpoint = rest(handler)
        return [
            Route(data + path, endpoint, methods=methods),
            Route(data + path + "/", endpoint, methods=methods),
        ]

    routes: list[BaseRoute] = [
        Route("/services/oauth2/token", token, methods=["POST"]),
        *route("/limits", limits, ["GET"]),
        *route("/sobjects/{sobject}/describe", describe, ["GET"]),
        *route("/sobjects/{sobject}", create, ["POST"]),
        *route("/sobjects/{sobject}/{record_id}", by_id, ["GET", "PATCH"]),
        *route("/sobjects/{sobject}/{field}/{value}", by_external_id, ["GET", "PATCH"]),
        *route("/composite/sobjects/{sobject}/{field}", collection_upsert, ["PATCH"]),
        *route("/query", query, ["GET"]),
        *route("/query/{locator}", query_more, ["GET"]),
        *route("/jobs/ingest", create_job, ["POST"]),
        *route("/jobs/ingest/{job_id}", job, ["GET", "PATCH"]),
        *route("/jobs/ingest/{job_id}/batches", upload, ["PUT"]),
        *route("/jobs/ingest/{job_id}/{results}", results, ["GET"]),
    ]
    return crm_app("salesforce", sandbox, routes)
