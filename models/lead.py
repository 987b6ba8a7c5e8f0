"""The `Lead` schema: what a lead is, with field paths every later stage relies on.

Field paths are a contract: the API filters, the CRM mappings and the validation suite use
them. Stages own their blocks (`enrichment`, `score`); the analyst owns `review`, which the
pipeline never writes (dedup only carries it over to the survivor of a merge).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from ulid import ULID

from models.taxonomy import OTHER

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_lead_id() -> str:
    """A permanent lead id: a ULID, sortable by creation time, never derived from fields."""
    return str(ULID())


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=False)


class Address(_Model):
    full: str | None = None
    street: str | None = None
    city: str | None = None
    postal_code: str | None = None
    state: str | None = None
    country: str | None = Field(None, description="ISO 3166-1 alpha-2 code, upper case.")


class GeoPoint(_Model):
    """GeoJSON point: coordinates are [longitude, latitude]."""

    type: Literal["Point"] = "Point"
    coordinates: tuple[float, float]

    @field_validator("coordinates")
    @classmethod
    def _in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        lng, lat = value
        if not (-180 <= lng <= 180 and -90 <= lat <= 90):
            raise ValueError(f"coordinates out of range: {value}")
        return value


# What an email address looks like, for every stage that reads or checks one (unanchored: anchor
# it to validate a whole value, leave it bare to find addresses in text).
EMAIL_PATTERN = r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"

EmailStatus = Literal[
    "unverified", "valid", "invalid", "accept_all", "webmail", "disposable", "unknown"
]


class Email(_Model):
    value: str
    source: str = Field(description="Where it was found: website, hunter, directory, ...")
    status: EmailStatus = "unverified"
    confidence: int | None = Field(None, ge=0, le=100)


class SourceRecord(_Model):
    """One sighting of the business in one source; a merged lead keeps all of them."""

    source: str
    source_id: str
    place_id: str | None = None
    cid: str | None = None
    data_id: str | None = None
    url: str | None = None
    seen_at: datetime = Field(default_factory=utcnow)
    run_id: str | None = None


class CompanyFacts(_Model):
    """Company data from an enrichment provider (the Clearbit Company API shape, flattened)."""

    provider: str
    name: str | None = None
    domain: str | None = None
    industry: str | None = None
    sector: str | None = None
    employees: int | None = None
    employees_range: str | None = Field(None, examples=["51-250"])
    estimated_revenue: str | None = Field(None, examples=["$10M-$50M"])
    founded_year: int | None = None
    linkedin: str | None = Field(None, description="LinkedIn handle, e.g. company/acme.")
    twitter: str | None = None


class WebsiteContacts(_Model):
    """What the business's own website shows (stage `contacts`)."""

    emails: list[str] = Field(default_factory=list)
    phones: list[str] = Field(default_factory=list, description="E.164.")
    socials: dict[str, str] = Field(default_factory=dict, examples=[{"facebook": "https://..."}])
    pages: int = 0
    error: str | None = None


EnrichmentStatus = Literal["done", "pending", "skipped"]


class Enrichment(_Model):
    """Stage-owned (`tasks/contacts`, `tasks/enrich`): what was found and what is still to do."""

    status: EnrichmentStatus = Field(
        "pending",
        description="done; pending (not enriched yet, or a provider was down or out of credits: "
        "the next run or `enrich_pending` finishes it); skipped (nothing to enrich with).",
    )
    website: WebsiteContacts | None = None
    emails: EnrichmentStatus = "skipped"
    company: EnrichmentStatus = "skipped"
    company_facts: CompanyFacts | None = None
    pending_reasons: list[str] = Field(default_factory=list)
    updated_at: datetime = Field(default_factory=utcnow)


class Score(_Model):
    """Stage-owned (`tasks/score`): 0-100, the top reasons, and the model that gave it."""

    value: float = Field(ge=0, le=100)
    reasons: list[str] = Field(default_factory=list, examples=[["verified email", "4.8 rating"]])
    model_version: str = Field(examples=["heuristic-1", "leads-20261125T1530-3f2a"])
    scored_at: datetime = Field(default_factory=utcnow)


class Review(_Model):
    """Analyst-owned: written only by the API, never by the pipeline."""

    status: Literal["new", "qualified", "disqualified", "contacted", "won", "lost"] = "new"
    tags: list[str] = Field(default_factory=list)
    notes: str = ""
    owner: str | None = None


class Lead(_Model):
    lead_id: str | None = Field(None, description="ULID given when the lead is first stored.")
    name: str
    categories: list[str] = Field(
        default_factory=list, description="Raw, as the source shows them."
    )
    category: str = Field(OTHER, description="Slug from models.taxonomy; unknown -> other.")
    address: Address = Field(default_factory=Address)
    location: GeoPoint | None = None
    phone: str | None = Field(None, description="E.164, when the raw phone could be parsed.")
    phone_raw: str | None = None
    website: str | None = None
    domain: str | None = Field(None, description="Registered domain of the website.")
    emails: list[Email] = Field(default_factory=list)
    best_email: str | None = None
    rating: float | None = None
    review_count: int | None = None
    open_hours: dict[str, list[str]] | None = None
    business_status: str | None = None
    details: dict[str, Any] | None = Field(
        None,
        description="What some sources add: plus_code, timezone, price_range, reviews_per_rating, "
        "thumbnail, owner, order_online, credit_cards, ...",
    )
    sources: list[SourceRecord] = Field(default_factory=list)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    run_ids: list[str] = Field(default_factory=list)
    blocking_keys: list[str] = Field(
        default_factory=list,
        description="Dedup candidate keys (place id, phone, domain, name+area).",
    )
    quality_flags: list[str] = Field(
        default_factory=list, description="Data-quality notes that did not stop the lead."
    )
    merged_into: str | None = Field(None, description="Set on tombstones: the survivor's lead_id.")
    enrichment: Enrichment | None = None
    score: Score | None = None
    review: Review | None = None

    def to_document(self) -> dict[str, Any]:
        """The MongoDB document (datetimes stay datetimes)."""
        return self.model_dump(mode="python", exclude_none=False)


class Quarantined(_Model):
    """A record that could not become (or stay) a lead, kept with the reasons."""

    run_id: str | None
    stage: str
    reasons: list[str]
    source: str | None = None
    payload: dict[str, Any]
    created_at: datetime = Field(default_factory=utcnow)
