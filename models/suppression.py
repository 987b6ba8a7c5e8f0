"""The suppression list: emails, domains and lead ids that must never be stored or contacted.

Entries are kept only as SHA-256 hashes of the normalised value (`suppression_hash`), so the
list itself holds no personal data, yet every stage can check a value against it. Fed by
Hunter's 451 answers (the person asked to be removed) and by `leadflow forget`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.lead import EMAIL_PATTERN

SuppressionKind = Literal["email", "domain", "lead_id"]
FORGOTTEN = "[forgotten]"
_EMAIL = re.compile(EMAIL_PATTERN)


def normalise_value(kind: SuppressionKind, value: str) -> str:
    text = value.strip()
    if kind == "email":
        return text.lower().removeprefix("mailto:")
    if kind == "domain":
        return text.lower().removeprefix("www.").rstrip(".")
    return text


def suppression_hash(kind: SuppressionKind, value: str) -> str:
    return hashlib.sha256(f"{kind}:{normalise_value(kind, value)}".encode()).hexdigest()


def guess_kind(value: str) -> SuppressionKind:
    """What `leadflow forget VALUE` was given: an email, a lead id (a ULID), or a domain."""
    text = value.strip()
    if "@" in text:
        return "email"
    if len(text) == 26 and text.isalnum() and text.upper() == text:
        return "lead_id"
    return "domain"


@dataclass(frozen=True)
class Suppressions:
    """A snapshot of the list, loaded once per batch: membership checks without queries."""

    hashes: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, hashes: Iterable[str]) -> Suppressions:
        return cls(frozenset(hashes))

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def email(self, value: str | None) -> bool:
        if not value or not self.hashes:
            return False
        if suppression_hash("email", value) in self.hashes:
            return True
        return self.domain(value.rsplit("@", 1)[-1])

    def domain(self, value: str | None) -> bool:
        return bool(value and self.hashes and suppression_hash("domain", value) in self.hashes)

    def lead_id(self, value: str | None) -> bool:
        return bool(value and self.hashes and suppression_hash("lead_id", value) in self.hashes)


def scrub_text(text: str, suppressed: Suppressions, extra: Iterable[str] = ()) -> str:
    """`text` with every suppressed email (and each of `extra`) replaced by `[forgotten]`."""
    for value in extra:
        text = re.sub(re.escape(value), FORGOTTEN, text, flags=re.IGNORECASE)
    if not suppressed:
        return text
    return _EMAIL.sub(lambda m: FORGOTTEN if suppressed.email(m.group(0)) else m.group(0), text)


def scrub_file(path: Path, suppressed: Suppressions, extra: Iterable[str] = ()) -> bool:
    """Rewrite a file without the suppressed values; True when it changed. Bytes that are
    not UTF-8 pass through untouched (surrogate escapes), so any file can be scrubbed."""
    try:
        raw = path.read_bytes()
    except OSError:
        return False
    text = raw.decode("utf-8", errors="surrogateescape")
    cleaned = scrub_text(text, suppressed, extra)
    if cleaned == text:
        return False
    path.write_bytes(cleaned.encode("utf-8", errors="surrogateescape"))
    return True


def scrub_value(value: Any, suppressed: Suppressions, extra: Iterable[str] = ()) -> Any:
    """A JSON-like value with suppressed strings scrubbed (for quarantine payloads)."""
    extra = list(extra)
    if isinstance(value, str):
        return scrub_text(value, suppressed, extra)
    if isinstance(value, list):
        return [scrub_value(v, suppressed, extra) for v in value]
    if isinstance(value, dict):
        return {k: scrub_value(v, suppressed, extra) for k, v in value.items()}
    return value
