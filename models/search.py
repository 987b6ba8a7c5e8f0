"""`SearchSpec`: the one definition of "what to scrape".

It is the flow parameter, the CLI flags, the API body and the parsed Slack command.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Source = Literal["directory", "google_maps"]


class BoundingBox(BaseModel):
    """A rectangle in WGS84 degrees; large areas are split into a grid of searches."""

    model_config = ConfigDict(frozen=True)

    south: float = Field(ge=-90, le=90)
    west: float = Field(ge=-180, le=180)
    north: float = Field(ge=-90, le=90)
    east: float = Field(ge=-180, le=180)

    @model_validator(mode="after")
    def _ordered(self) -> BoundingBox:
        if self.south >= self.north:
            raise ValueError("south must be below north")
        if self.west >= self.east:
            raise ValueError("west must be left of east")
        return self


class SearchSpec(BaseModel):
    """What one pipeline run scrapes: e.g. dentists in Austin, TX, 200 at most."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "category": "dentist",
                    "location": "Austin, TX",
                    "sources": ["directory"],
                    "limit": 200,
                }
            ]
        },
    )

    category: str | None = Field(
        None, max_length=100, description="What to look for; empty = every category."
    )
    location: str | None = Field(
        None,
        max_length=200,
        description="Where: a city, 'City, ST' or 'City, Country'; empty = anywhere.",
    )
    sources: list[Source] = Field(default_factory=lambda: ["directory"], min_length=1)
    limit: int = Field(200, ge=1, le=100_000, description="At most this many places per source.")
    bbox: BoundingBox | None = Field(None, description="Optional area; searched as a grid.")

    @field_validator("category", "location")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        return value or None

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, value: list[Source]) -> list[Source]:
        return list(dict.fromkeys(value))

    def describe(self) -> str:
        what = self.category or "all businesses"
        where = f" in {self.location}" if self.location else ""
        return f"{what}{where} from {', '.join(self.sources)} (limit {self.limit})"
