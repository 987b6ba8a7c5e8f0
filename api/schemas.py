"""Request and response bodies (pydantic), with the examples the OpenAPI page shows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from models.lead import Lead

ReviewStatus = Literal["new", "qualified", "disqualified", "contacted", "won", "lost"]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]

RUN_EXAMPLE = {
    "run_id": "0f5e8c1a-3b7d-4e2a-9c6f-1d2e3f4a5b6c",
    "name": "crimson-otter",
    "state": "COMPLETED",
    "spec": {"category": "dentist", "location": "Austin, TX", "sources": ["directory"]},
    "counts": {"scrape": {"records": 180}, "load": {"inserted": 150, "updated": 20}},
    "stage": "load",
    "created_at": "2026-11-25T18:00:00Z",
}


class RunOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [RUN_EXAMPLE]})

    run_id: str = Field(description="The Prefect flow run id.")
    name: str | None = Field(None, description="The flow run's name in the Prefect UI.")
    state: str = Field(
        description="SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CRASHED, CANCELLED, ..."
    )
    state_message: str | None = None
    spec: dict[str, Any] = Field(description="The run's SearchSpec.")
    counts: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-stage counts, filled in as the stages finish."
    )
    stage: str | None = Field(None, description="The last stage that finished.")
    summary: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunPage(BaseModel):
    items: list[RunOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class QuarantineRow(BaseModel):
    run_id: str | None
    stage: str = Field(examples=["validate"])
    reasons: list[str] = Field(examples=[["email: not an email address"]])
    source: str | None = None
    payload: dict[str, Any]
    created_at: datetime | None = None


class QuarantinePage(BaseModel):
    items: list[QuarantineRow]
    next_cursor: str | None = None


class LeadPage(BaseModel):
    items: list[Lead]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class ReviewPatch(BaseModel):
    """The analyst-owned part of a lead: only these fields can be changed over the API.

    Give any of them; `owner: null` unassigns. The others take no null (tags `[]` clears).
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "minProperties": 1,
            "examples": [{"status": "qualified", "tags": ["q4"], "owner": "maria@example.com"}],
        },
    )

    # Typed without None but defaulting to it: absent is fine, an explicit null is invalid.
    status: ReviewStatus = Field(None)  # type: ignore[assignment]
    tags: list[Tag] = Field(None, max_length=50)  # type: ignore[assignment]
    notes: str = Field(None, max_length=10_000)  # type: ignore[assignment]
    owner: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _something(self) -> ReviewPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of status, tags, notes, owner")
        return self


class CheckResult(BaseModel):
    status: Literal["ok", "fail"]
    latency_ms: float | None = None
    detail: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, CheckResult]


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"
