"""Lead and run queries: the filters of `GET /leads` and `GET /export` as MongoDB queries,
and opaque cursors for keyset pagination (stable under inserts, one query per page).
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.errors import ApiError

LeadSort = Literal["-score", "score", "-first_seen", "first_seen", "-last_seen", "last_seen",
                   "name", "-name"]  # fmt: skip
SORT_FIELDS = {
    "score": "score.value",
    "first_seen": "first_seen",
    "last_seen": "last_seen",
    "name": "name",
}
NULL = {"$in": [None]}
ReviewStatus = Literal["new", "qualified", "disqualified", "contacted", "won", "lost"]


class LeadFilters(BaseModel):
    """Which leads: every filter given must match. Tombstones (merged leads) never do."""

    model_config = ConfigDict(extra="forbid")

    category: str | None = Field(None, max_length=100, examples=["dentist"])
    city: str | None = Field(None, max_length=100, examples=["Austin"])
    min_score: float | None = Field(None, ge=0, le=100, examples=[60])
    has_email: bool | None = Field(None, description="Only leads with (or without) an email.")
    run: str | None = Field(None, max_length=100, description="Leads seen in this run (id).")
    tag: str | None = Field(None, max_length=50, description="Review tag.")
    owner: str | None = Field(None, max_length=200, description="Review owner.")
    review_status: ReviewStatus | None = Field(None, description="'new' includes unreviewed.")
    q: str | None = Field(None, max_length=100, description="Text in the name (any case).")
    sort: LeadSort = Field("-score", description="Field, '-' for descending; ties by lead_id.")


class LeadListQuery(LeadFilters):
    cursor: str | None = Field(None, max_length=500, description="From the previous page.")
    limit: int = Field(50, ge=1, le=200, description="Leads per page.")


class ExportQuery(LeadFilters):
    format: Literal["csv", "jsonl", "xlsx"] = "csv"


def lead_query(filters: LeadFilters) -> dict[str, Any]:
    # Null and array-member matches are written as `$in` throughout: equivalent on MongoDB,
    # and the only form the embedded MongoDB-wire server matches reliably in compound queries.
    query: dict[str, Any] = {"merged_into": NULL}
    if filters.category:
        query["category"] = filters.category
    if filters.city:
        query["address.city"] = filters.city
    if filters.min_score is not None:
        query["score.value"] = {"$gte": filters.min_score}
    if filters.has_email is not None:
        query["best_email"] = {"$ne": None} if filters.has_email else NULL
    if filters.run:
        query["run_ids"] = {"$in": [filters.run]}
    if filters.tag:
        query["review.tags"] = {"$in": [filters.tag]}
    if filters.owner:
        query["review.owner"] = filters.owner
    if filters.review_status:
        statuses: list[str | None] = [filters.review_status]
        if filters.review_status == "new":
            statuses.append(None)  # never reviewed
        query["review.status"] = {"$in": statuses}
    if filters.q:
        query["name"] = {"$regex": re.escape(filters.q), "$options": "i"}
    return query


def sort_spec(sort: str) -> tuple[str, int]:
    """(MongoDB field, direction) of a sort parameter like '-score'."""
    return SORT_FIELDS[sort.lstrip("-")], -1 if sort.startswith("-") else 1


# --- cursors -------------------------------------------------------------------------------


def encode_cursor(sort: str, value: Any, tie: str) -> str:
    kind = "dt" if isinstance(value, datetime) else "v"
    raw = json.dumps(
        {"s": sort, "k": kind, "v": value.isoformat() if kind == "dt" else value, "t": tie},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        value = datetime.fromisoformat(raw["v"]) if raw["k"] == "dt" else raw["v"]
        tie, cursor_sort = str(raw["t"]), raw["s"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(400, "Invalid cursor: pass `next_cursor` from the previous page.") from exc
    if cursor_sort != sort:
        raise ApiError(400, f"This cursor belongs to sort={cursor_sort!r}, not {sort!r}.")
    return value, tie


def after_cursor(field: str, direction: int, value: Any, tie_field: str, tie: str) -> dict:
    """Documents after (value, tie) in the order (field direction, tie ascending).

    MongoDB orders null below every value and `$lt`/`$gt` never match null, hence the
    explicit null branches: nulls come last in a descending order and first in an ascending.
    """
    same = {field: {"$in": [value]}, tie_field: {"$gt": tie}}
    if value is None:
        if direction < 0:
            return same
        return {"$or": [same, {field: {"$ne": None}}]}
    beyond = {field: {"$lt" if direction < 0 else "$gt": value}}
    branches = [beyond, same] + ([{field: NULL}] if direction < 0 else [])
    return {"$or": branches}


def dotted(doc: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)  # type: ignore[assignment]
    return doc
