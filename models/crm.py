"""CRM sync: the field mapping (one YAML file, per destination) and the shapes every CRM
connector shares.

A mapping says, per destination and CRM object, which CRM field gets which lead field
(`source`, a dotted path into `Lead`), or a constant (`value`), optionally through a simple
`transform`. It is validated when loaded: an unknown lead field, an unknown transform or a
missing required CRM field is an error naming the destination, object and field.

Every destination record also carries the lead's `lead_id` in the CRM's external-id field
(added by the connector, never mapped by hand): that id, not an email or a name, is what makes
a replay harmless, since many leads have no email.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.lead import Lead

Destination = Literal["salesforce", "hubspot", "pipedrive"]
DESTINATIONS: tuple[Destination, ...] = ("salesforce", "hubspot", "pipedrive")

# The CRM objects each destination writes, in the order they are written, and the CRM fields
# each requires (the APIs refuse a record without them).
OBJECTS: dict[str, tuple[str, ...]] = {
    "salesforce": ("Lead",),
    "hubspot": ("company", "contact"),
    "pipedrive": ("organization", "person", "deal", "note"),
}
REQUIRED: dict[tuple[str, str], tuple[str, ...]] = {
    ("salesforce", "Lead"): ("LastName", "Company"),
    ("hubspot", "company"): ("name",),
    ("pipedrive", "organization"): ("name",),
    ("pipedrive", "person"): ("name",),
    ("pipedrive", "deal"): ("title",),
    ("pipedrive", "note"): ("content",),
}

Transform = Literal[
    "upper", "lower", "title", "label", "strip", "join", "first", "int", "str", "bool"
]


class FieldRule(BaseModel):
    """One CRM field: from a lead field (`source`) or a constant (`value`)."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(None, examples=["address.city", "best_email", "score.value"])
    value: Any = Field(None, description="A constant, when there is no source.")
    transform: Transform | None = None
    default: Any = Field(None, description="Used when the source is empty.")
    max_length: int | None = Field(None, ge=1, description="Cut longer text (CRM field size).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `City: address.city` is short for `City: {source: address.city}`.
        return {"source": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_origin(self) -> FieldRule:
        if (self.source is None) == (self.value is None):
            raise ValueError("give exactly one of `source` or `value`")
        return self


class ObjectMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: dict[str, FieldRule]


class DestinationMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    objects: dict[str, ObjectMapping]
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Destination settings that are not fields, e.g. a HubSpot list id or a "
        "Pipedrive pipeline and stage.",
    )


class CrmMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    destinations: dict[Destination, DestinationMapping]

    @model_validator(mode="after")
    def _known_objects_and_fields(self) -> CrmMapping:
        problems: list[str] = []
        for name, destination in self.destinations.items():
            for object_name, mapping in destination.objects.items():
                where = f"{name}.{object_name}"
                if object_name not in OBJECTS[name]:
                    problems.append(f"{where}: unknown object (known: {', '.join(OBJECTS[name])})")
                    continue
                for crm_field, rule in mapping.fields.items():
                    if rule.source is not None and not lead_path_exists(rule.source):
                        problems.append(f"{where}.{crm_field}: unknown lead field {rule.source!r}")
                missing = [
                    f for f in REQUIRED.get((name, object_name), ()) if f not in mapping.fields
                ]
                if missing:
                    problems.append(
                        f"{where}: required CRM field(s) not mapped: {', '.join(missing)}"
                    )
        if problems:
            raise ValueError("invalid CRM mapping:\n  " + "\n  ".join(problems))
        return self

    def enabled(self) -> dict[str, DestinationMapping]:
        return {n: d for n, d in self.destinations.items() if d.enabled}


class CrmMappingError(ValueError):
    pass


def load_mapping(path: Path) -> CrmMapping:
    """Read and validate a mapping file; every problem in one clear error."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CrmMappingError(f"cannot read the CRM mapping {path}: {exc}") from exc
    try:
        return CrmMapping.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise CrmMappingError(f"invalid CRM mapping {path}: {details}") from None


# --- lead field paths --------------------------------------------------------------------


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like `Address | None` or `list[Email]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def lead_path_exists(path: str) -> bool:
    """Whether `path` ('address.city', 'score.value', 'emails.value') names a Lead field."""
    model: type[BaseModel] | None = Lead
    for part in path.split("."):
        if model is None or part not in model.model_fields:
            return False
        model = _model_of(model.model_fields[part].annotation)
    return True


def lead_value(lead: dict[str, Any], path: str) -> Any:
    """The value at `path` in a lead dict; through a list it collects every item's value."""
    values: Any = lead
    for part in path.split("."):
        if isinstance(values, list):
            values = [v.get(part) for v in values if isinstance(v, dict)]
        elif isinstance(values, dict):
            values = values.get(part)
        else:
            return None
    return values


def _transform(value: Any, transform: str | None) -> Any:
    if value is None or transform is None:
        return value
    if transform == "join":
        return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if transform == "first":
        return value[0] if isinstance(value, list) and value else (None if value == [] else value)
    if transform == "int":
        return int(float(value))
    if transform == "str":
        return str(value)
    if transform == "bool":
        return bool(value)
    text = str(value)
    return {
        "upper": text.upper(),
        "lower": text.lower(),
        "title": text.title(),
        # A code as a person reads it: "auto_repair" -> "Auto Repair".
        "label": " ".join(text.replace("_", " ").split()).title(),
        "strip": text.strip(),
    }[transform]


def apply_rule(lead: dict[str, Any], rule: FieldRule) -> Any:
    value = rule.value if rule.source is None else lead_value(lead, rule.source)
    if value in (None, "", []):
        value = rule.default
    value = _transform(value, rule.transform)
    if rule.max_length and isinstance(value, str):
        value = value[: rule.max_length]
    return value


# --- what connectors take and give ----------------------------------------------------------


@dataclass(frozen=True)
class MappedLead:
    """One lead as one destination will receive it: fields per CRM object, and the hash of
    exactly that (so a change elsewhere in the lead, e.g. `last_seen`, sends nothing)."""

    lead_id: str
    objects: dict[str, dict[str, Any]]
    payload_hash: str


def payload_hash(objects: dict[str, dict[str, Any]]) -> str:
    canonical = json.dumps(objects, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def map_lead(lead: Lead, destination: DestinationMapping) -> MappedLead:
    if not lead.lead_id:
        raise ValueError(f"lead {lead.name!r} has no lead_id: only stored leads are synced")
    data = lead.model_dump(mode="json")
    objects = {
        name: {crm_field: apply_rule(data, rule) for crm_field, rule in mapping.fields.items()}
        for name, mapping in destination.objects.items()
    }
    return MappedLead(lead.lead_id, objects, payload_hash(objects))


@dataclass
class SyncOutcome:
    """What one lead's sync to one destination did.

    `external_ids` are the CRM ids per object (e.g. {"Lead": "00Q.."} or {"person": "12",
    "deal": "40"}); a failed outcome keeps the ids written before the failure, so a retry
    updates those records instead of creating new ones.
    """

    lead_id: str
    ok: bool
    external_ids: dict[str, str] = field(default_factory=dict)
    created: bool = False
    error: str | None = None
    retryable: bool = True  # False: the CRM refused the record itself (fix the data or mapping)
    throttled: bool = False  # the CRM said stop before this record: nothing more this run


class CrmError(Exception):
    """A CRM call failed for the whole batch (auth, outage)."""


class CrmClient(Protocol):
    """One CRM. Every method is idempotent by `lead_id`: a replay after a lost response finds
    the record written the first time instead of creating a second one."""

    destination: Destination

    def upsert(
        self, records: list[MappedLead], known: dict[str, dict[str, str]]
    ) -> list[SyncOutcome]:
        """Create or update each record: one outcome per record, in input order. `known`
        holds the external ids the ledger has for a lead. When the CRM says stop
        (Salesforce REQUEST_LIMIT_EXCEEDED, a 429 past its Retry-After), the records not
        done get `throttled=True` outcomes and no further call is made. Raises CrmError
        when nothing can be done at all (bad credentials, CRM down)."""
        ...

    def merge(self, survivor: dict[str, str], tombstone: dict[str, str]) -> bool:
        """Merge the tombstone's records into the survivor's where the CRM can; False where
        it has no merge call (the caller then marks the tombstone's records merged)."""
        ...

    def clear_email(self, external_ids: dict[str, str]) -> None:
        """Remove the email from the records a forgotten lead has in this CRM."""
        ...
