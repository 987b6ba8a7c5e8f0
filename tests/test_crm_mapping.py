"""models/crm.py: the mapping file is checked when loaded, and a lead maps to exactly what
each CRM is sent (the payload hash covers that and nothing else)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from leadflow.settings import PROJECT_DIR
from models.crm import CrmMappingError, load_mapping, map_lead
from models.lead import Address, Lead, Score

DEFAULT = PROJECT_DIR / "deployments" / "crm_mapping.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def salesforce_lead(tmp_path: Path, fields: str, *, also: str = "") -> Path:
    """A mapping file: Salesforce's Lead gets `fields` (YAML lines), then `also` (more
    destinations)."""
    lines = textwrap.indent(textwrap.dedent(fields).strip(), " " * 10)
    header = "destinations:\n  salesforce:\n    objects:\n      Lead:\n        fields:\n"
    return write(tmp_path, f"{header}{lines}\n{also}")


def lead(**changes: object) -> Lead:
    fields: dict[str, object] = {
        "lead_id": "01HMAPPING0000000000000001",
        "name": "  Bright Smile Dental  ",
        "category": "auto_repair",
        "phone": "+15125550100",
        "address": Address(city="Austin", state="TX", country="US"),
        "score": Score(value=72.0, reasons=["verified email", "phone number"], model_version="h"),
    }
    return Lead(**{**fields, **changes})


def test_the_shipped_mapping_loads_with_every_destination() -> None:
    mapping = load_mapping(DEFAULT)
    assert set(mapping.enabled()) == {"salesforce", "hubspot", "pipedrive"}


def test_every_problem_is_named_in_one_error(tmp_path: Path) -> None:
    path = salesforce_lead(
        tmp_path,
        "Company: name\nCity: address.town",
        also="  pipedrive:\n    objects:\n      organisation:\n        fields: {name: name}\n",
    )
    with pytest.raises(CrmMappingError) as caught:
        load_mapping(path)
    message = str(caught.value)
    assert "salesforce.Lead.City: unknown lead field 'address.town'" in message
    assert "salesforce.Lead: required CRM field(s) not mapped: LastName" in message
    assert "pipedrive.organisation: unknown object" in message


@pytest.mark.parametrize(
    ("rule", "complaint"),
    [
        ("{source: name, transform: shout}", "transform"),
        ("{source: name, value: x}", "exactly one of `source` or `value`"),
        ("{source: name, colour: red}", "Extra inputs are not permitted"),
    ],
)
def test_a_malformed_rule_is_refused(tmp_path: Path, rule: str, complaint: str) -> None:
    path = write(
        tmp_path,
        f"destinations:\n  hubspot:\n    objects:\n      company:\n        fields:\n"
        f"          name: {rule}\n",
    )
    with pytest.raises(CrmMappingError, match=complaint):
        load_mapping(path)


def test_an_unreadable_file_is_a_mapping_error(tmp_path: Path) -> None:
    with pytest.raises(CrmMappingError, match="cannot read the CRM mapping"):
        load_mapping(tmp_path / "missing.yaml")
    with pytest.raises(CrmMappingError, match="cannot read the CRM mapping"):
        load_mapping(write(tmp_path, "destinations: [unclosed"))


def test_rules_map_sources_constants_transforms_defaults_and_lengths(tmp_path: Path) -> None:
    path = salesforce_lead(
        tmp_path,
        """
        Company: {source: name, transform: strip}
        LastName: {source: name, transform: upper, max_length: 8}
        Industry: {source: category, transform: label}
        Description: {source: score.reasons, transform: join}
        Email: {source: best_email, default: none@unknown.test}
        LeadSource: {value: Leadflow}
        """,
    )
    mapped = map_lead(lead(), load_mapping(path).destinations["salesforce"])
    assert mapped.objects == {
        "Lead": {
            "Company": "Bright Smile Dental",
            "LastName": "  BRIGHT",
            "Industry": "Auto Repair",
            "Description": "verified email, phone number",
            "Email": "none@unknown.test",
            "LeadSource": "Leadflow",
        }
    }


def test_the_payload_hash_changes_with_what_is_sent_only() -> None:
    hubspot = load_mapping(DEFAULT).destinations["hubspot"]
    first = map_lead(lead(), hubspot)
    seen_again = map_lead(lead(last_seen=datetime(2030, 1, 1, tzinfo=UTC)), hubspot)
    new_phone = map_lead(lead(phone="+15125550199"), hubspot)
    assert seen_again.payload_hash == first.payload_hash
    assert new_phone.payload_hash != first.payload_hash


def test_only_stored_leads_are_mapped() -> None:
    with pytest.raises(ValueError, match="no lead_id"):
        map_lead(lead(lead_id=None), load_mapping(DEFAULT).destinations["hubspot"])
