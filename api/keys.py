"""API keys: `lf_<key id>_<secret>`, stored as the key id plus a keyed hash of the key.

- The key id (12 hex characters) is not secret: `leadflow keys list` shows it, logs keep it,
  it is the document's `_id`, so a key is found in one indexed round trip.
- The secret is 32 random bytes (43 URL-safe characters), shown once by `leadflow keys create`
  and never stored: the document holds HMAC-SHA256(per-key random salt, whole key).
- Why not bcrypt/scrypt/argon2: those slow hashes exist to make guessing low-entropy
  passwords expensive. A 256-bit random secret cannot be guessed, even against a fast hash,
  while a slow hash would spend 50-250 ms of CPU on every request against a 20 ms budget for
  the API's own time per request.
- The comparison is constant-time (`hmac.compare_digest`). A key id that does not exist
  answers faster than a wrong secret, which tells a caller only what `keys list` shows anyway.
- Revocation is immediate on every instance: each request reads the key's document; nothing
  is cached.
- `last_used` is written at most once per key and interval per process, by a background thread,
  so a request pays exactly one MongoDB round trip for its key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from leadflow.settings import Settings, get_settings

log = logging.getLogger("leadflow.api.keys")

API_KEYS = "api_keys"
KEY_PREFIX = "lf"
KEY_ID_BYTES = 6  # 12 hex characters
SECRET_BYTES = 32  # 43 URL-safe base64 characters
SALT_BYTES = 16
HASH_ALGORITHM = "hmac-sha256"
NAME_MAX_LENGTH = 100
KEY_ID_PATTERN = re.compile(rf"[0-9a-f]{{{KEY_ID_BYTES * 2}}}")
# Exactly what `create` makes: anything else is rejected before MongoDB is asked.
KEY_PATTERN = re.compile(rf"{KEY_PREFIX}_({KEY_ID_PATTERN.pattern})_([A-Za-z0-9_-]{{43}})")


class Scope(StrEnum):
    """What a key may do; each route requires one."""

    RUNS_READ = "runs:read"  # GET /runs, /runs/{id}, /runs/{id}/quarantine
    RUNS_WRITE = "runs:write"  # POST /runs
    LEADS_READ = "leads:read"  # GET /leads, /leads/{lead_id}
    LEADS_WRITE = "leads:write"  # PATCH /leads/{lead_id} (the analyst-owned review block)
    EXPORT_READ = "export:read"  # GET /export: every matching lead at once, so its own scope
    METRICS_READ = "metrics:read"  # GET /metrics (a Prometheus scraper's key)
    ADMIN = "admin"  # every scope above
    # Not covered by admin; granted only through `leadflow keys create` (allow_exempt=True),
    # never by anything an HTTP caller can reach.
    RATELIMIT_EXEMPT = "ratelimit:exempt"


DEFAULT_SCOPES: frozenset[Scope] = frozenset({Scope.RUNS_READ, Scope.LEADS_READ})


_SCOPE_VALUES = frozenset(scope.value for scope in Scope)


def parse_scopes(value: str | Iterable[str]) -> frozenset[Scope]:
    """Scopes from `runs:write,leads:read` or a list; a clear ValueError for unknown ones."""
    names = value.split(",") if isinstance(value, str) else list(value)
    wanted = {name.strip() for name in names if name.strip()}
    unknown = sorted(wanted - _SCOPE_VALUES)
    if unknown:
        raise ValueError(
            f"unknown scope{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"valid scopes: {', '.join(scope.value for scope in Scope)}"
        )
    if not wanted:
        raise ValueError(f"no scopes given; valid scopes: {', '.join(s.value for s in Scope)}")
    return frozenset(Scope(name) for name in wanted)


@dataclass(frozen=True)
class ApiKeyRecord:
    """A stored key without its hash: what callers may see and log."""

    key_id: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None = None
    last_used: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, scope: Scope) -> bool:
        """Whether the key grants `scope` (admin grants every scope but ratelimit:exempt)."""
        if scope in self.scopes:
            return True
        return scope is not Scope.RATELIMIT_EXEMPT and Scope.ADMIN in self.scopes

    @property
    def ratelimit_exempt(self) -> bool:
        return Scope.RATELIMIT_EXEMPT in self.scopes


def _digest(salt: bytes, key: str) -> bytes:
    return hmac.new(salt, key.encode("ascii"), hashlib.sha256).digest()


def _aware(moment: Any) -> datetime | None:
    # pymongo returns naive UTC datetimes unless its client is tz_aware.
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _record(doc: dict[str, Any]) -> ApiKeyRecord:
    created_at = _aware(doc["created_at"])
    assert created_at is not None  # written by create()
    return ApiKeyRecord(
        key_id=doc["_id"],
        name=doc["name"],
        # A scope removed from the code since the key was made no longer grants anything.
        scopes=frozenset(Scope(s) for s in doc["scopes"] if s in _SCOPE_VALUES),
        created_at=created_at,
        revoked_at=_aware(doc.get("revoked_at")),
        last_used=_aware(doc.get("last_used")),
    )


class ApiKeys:
    """The `api_keys` collection: create, list, revoke, verify.

    Make one per process (the API: at start-up) and share it: it holds the `last_used`
    throttle and the thread that writes it.
    """

    def __init__(self, db: Database, *, last_used_every: float = 300.0) -> None:
        self.collection: Collection = db[API_KEYS]
        self.last_used_every = last_used_every
        self._touched: dict[str, float] = {}
        self._touch_lock = threading.Lock()
        # One thread writes every last_used update, off the requests' path.
        self._toucher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-key-last-used")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> ApiKeys:
        """On the process's shared MongoDB client (the API's connection pool)."""
        from connectors.mongo import shared_store

        settings = settings or get_settings()
        return cls(shared_store(settings).db, last_used_every=settings.api_key_last_used_seconds)

    def close(self) -> None:
        """Wait for pending last_used writes; the MongoDB client is not this object's."""
        self._toucher.shutdown(wait=True)

    def create(
        self, name: str, scopes: Iterable[str] = DEFAULT_SCOPES, *, allow_exempt: bool = False
    ) -> tuple[ApiKeyRecord, str]:
        """A new key: its record and the plaintext key, which exists only in this return value.

        `allow_exempt` is for the CLI alone: an HTTP route must never pass it.
        """
        name = name.strip()
        if not name or len(name) > NAME_MAX_LENGTH:
            raise ValueError(f"a key needs a name of 1-{NAME_MAX_LENGTH} characters")
        granted = parse_scopes(scopes)
        if Scope.RATELIMIT_EXEMPT in granted and not allow_exempt:
            raise ValueError(
                f"{Scope.RATELIMIT_EXEMPT} can only be granted from the command line "
                "(leadflow keys create)"
            )
        while True:
            key_id = secrets.token_hex(KEY_ID_BYTES)
            plaintext = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
            salt = secrets.token_bytes(SALT_BYTES)
            doc = {
                "_id": key_id,
                "name": name,
                "scopes": sorted(scope.value for scope in granted),
                "salt": salt.hex(),
                "hash": _digest(salt, plaintext).hex(),
                "hash_algorithm": HASH_ALGORITHM,
                "created_at": datetime.now(UTC),
                "revoked_at": None,
                "last_used": None,
            }
            try:
                self.collection.insert_one(doc)
            except DuplicateKeyError:  # 48-bit ids: a clash is rare but must not fail
                continue
            return _record(doc), plaintext

    def list(self) -> Sequence[ApiKeyRecord]:
        """Every key, revoked ones too, oldest first; hashes and salts are not read."""
        cursor = self.collection.find({}, {"salt": 0, "hash": 0}).sort("created_at", 1)
        return [_record(doc) for doc in cursor]

    def revoke(self, key_id: str) -> ApiKeyRecord | None:
        """Revoke a key (it fails verification from the next request on, on every instance).

        Returns the key as stored afterwards (a key revoked earlier keeps its first
        revocation time), or None when there is no such key.
        """
        # $currentDate, not $set: the embedded server stores a datetime `$set` on an existing
        # document as a string.
        self.collection.update_one(
            {"_id": key_id, "revoked_at": None}, {"$currentDate": {"revoked_at": True}}
        )
        doc = self.collection.find_one({"_id": key_id}, {"salt": 0, "hash": 0})
        return _record(doc) if doc is not None else None

    def verify(self, presented: str) -> ApiKeyRecord | None:
        """The live key `presented` is, or None: malformed (no round trip), unknown, revoked
        or a wrong secret all look the same to the caller."""
        match = KEY_PATTERN.fullmatch(presented)
        if match is None:
            return None
        doc = self.collection.find_one({"_id": match.group(1)})
        if doc is None or doc.get("revoked_at") is not None:
            return None
        expected = bytes.fromhex(doc["hash"])
        if not hmac.compare_digest(expected, _digest(bytes.fromhex(doc["salt"]), presented)):
            return None
        record = _record(doc)
        self._touch(record.key_id)
        return record

    def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        with self._touch_lock:
            last = self._touched.get(key_id)
            if last is not None and now - last < self.last_used_every:
                return
            self._touched[key_id] = now
        self._toucher.submit(self._write_last_used, key_id)

    def _write_last_used(self, key_id: str) -> None:
        try:
            self.collection.update_one({"_id": key_id}, {"$currentDate": {"last_used": True}})
        except PyMongoError as exc:  # bookkeeping only: never fails a request
            log.warning("could not record last use of API key %s: %s", key_id, exc)
