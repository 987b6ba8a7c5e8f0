"""Stage normalize: raw records -> leads or quarantine, with every edge case a listing has."""

from __future__ import annotations

import pytest

from models.lead import Lead, Quarantined
from models.taxonomy import category_slug
from tasks.normalize import country_code, normalize_record, normalize_records, registered_domain


def raw(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "source": "directory",
        "source_id": "L1",
        "name": "Art's Deli",
        "address": "100 Main Street, Austin, TX 78701",
        "city": "Austin",
        "state": "TX",
        "country": "US",
        "phone": "(512) 555-0100",
        "website": "WWW.ArtsDeli-Austin.test/",
        "categories": ["Delicatessen", "Sandwich shop"],
    }
    base.update(fields)
    return base


def lead_of(record: dict[str, object]) -> Lead:
    outcome = normalize_record(record, run_id="run-1")
    assert isinstance(outcome, Lead), outcome
    return outcome


def test_phone_becomes_e164_in_the_leads_country() -> None:
    assert lead_of(raw()).phone == "+15125550100"
    assert lead_of(raw(phone="512.555.0100")).phone == "+15125550100"
    london = lead_of(raw(country="United Kingdom", state=None, phone="020 7946 0018"))
    assert london.phone == "+442079460018"
    athens = lead_of(raw(country="Ελλάδα", state=None, phone="21 0322 1111"))
    assert athens.address.country == "GR"
    assert athens.phone == "+302103221111"


def test_unparseable_phone_keeps_raw_and_flags_but_the_lead_survives() -> None:
    lead = lead_of(raw(phone="call us"))
    assert lead.phone is None
    assert lead.phone_raw == "call us"
    assert any("unparseable phone" in flag for flag in lead.quality_flags)


def test_website_and_registered_domain() -> None:
    lead = lead_of(raw())
    assert lead.website == "http://www.artsdeli-austin.test"
    assert lead.domain == "artsdeli-austin.test"
    assert registered_domain("https://shop.example.co.uk/x") == "example.co.uk"


def test_missing_name_is_quarantined_with_reason() -> None:
    outcome = normalize_record(raw(name="   "), run_id="run-1")
    assert isinstance(outcome, Quarantined)
    assert outcome.reasons == ["missing name"]
    assert outcome.payload["source_id"] == "L1"
    assert outcome.run_id == "run-1"


def test_nothing_to_identify_is_quarantined() -> None:
    outcome = normalize_record(raw(address=None, street=None, phone=None, website=None), run_id="r")
    assert isinstance(outcome, Quarantined)
    assert "no address, phone or website" in outcome.reasons[0]


def test_parse_error_record_is_quarantined_with_the_parsers_message() -> None:
    outcome = normalize_record(
        {"source": "directory", "source_id": "9", "parse_error": "no business block in /biz/9"},
        run_id="r",
    )
    assert isinstance(outcome, Quarantined)
    assert "no business block" in outcome.reasons[0]


def test_unicode_names_and_whitespace() -> None:
    lead = lead_of(
        raw(name="  Ταβέρνα   του Ψυρρή ", country="GR", state=None, phone="210 321 4923")
    )
    assert lead.name == "Ταβέρνα του Ψυρρή"
    assert lead_of(raw(name="Café Zoë")).name == "Café Zoë"


def test_category_slug_and_raw_categories() -> None:
    lead = lead_of(raw())
    assert lead.categories == ["Delicatessen", "Sandwich shop"]
    assert lead.category == "restaurant"
    assert category_slug(["Οδοντίατρος"]) == "dentist"
    assert category_slug(["Barber shop"]) == "salon"
    assert category_slug(["Something unheard of"]) == "other"
    assert category_slug(None) == "other"


def test_ranges_are_checked_not_trusted() -> None:
    lead = lead_of(raw(rating="7", review_count="-3", latitude="95", longitude="10"))
    assert lead.rating is None and lead.review_count is None and lead.location is None
    assert len(lead.quality_flags) == 3
    good = lead_of(raw(rating="4,5", review_count="1,204", latitude="30.26", longitude="-97.74"))
    assert (good.rating, good.review_count) == (4.5, 1204)
    assert good.location is not None and good.location.coordinates == (-97.74, 30.26)


def test_emails_validated_and_best_email() -> None:
    lead = lead_of(
        raw(
            emails=[
                "mailto:Hello@ArtsDeli-Austin.test",
                "not-an-email",
                "hello@artsdeli-austin.test",
            ]
        )
    )
    assert [e.value for e in lead.emails] == ["hello@artsdeli-austin.test"]
    assert lead.best_email == "hello@artsdeli-austin.test"
    assert any("malformed email" in flag for flag in lead.quality_flags)


def test_source_record_and_run_ids() -> None:
    lead = lead_of(raw(place_id="ChIJ123", url="http://directory.test/biz/L1"))
    (record,) = lead.sources
    assert (record.source, record.source_id, record.place_id, record.run_id) == (
        "directory",
        "L1",
        "ChIJ123",
        "run-1",
    )
    assert lead.run_ids == ["run-1"]
    assert lead.lead_id is None  # given by dedup when first stored, never here


def test_us_state_implies_country_and_unknown_country_is_flagged() -> None:
    assert lead_of(raw(country=None)).address.country == "US"
    lead = lead_of(raw(country="Atlantis"))
    assert any("unknown country" in flag for flag in lead.quality_flags)


@pytest.mark.parametrize(
    ("shown", "code"),
    [("USA", "US"), ("Germany", "DE"), ("gb", "GB"), ("Deutschland", "DE"), ("nowhere", None)],
)
def test_country_codes(shown: str, code: str | None) -> None:
    assert country_code(shown) == code


def test_batch_keeps_every_record() -> None:
    records = [raw(source_id=str(i)) for i in range(5)] + [
        raw(name=None),
        42,
        raw(phone="x", address=None, website=None),
    ]
    result = normalize_records(records, run_id="r")  # type: ignore[arg-type]
    assert len(result.leads) + len(result.quarantined) == len(records)
    assert result.counts == {"normalized": 6, "quarantined": 2}


def test_google_maps_record_keeps_its_details(google_maps_record: dict[str, object]) -> None:
    lead = lead_of(google_maps_record)
    assert lead.sources[0].source == "google_maps"
    assert lead.sources[0].place_id == google_maps_record["place_id"]
    assert lead.details is not None
    assert lead.details["timezone"] == google_maps_record["timezone"]
    assert lead.phone == "+35725101555"  # Limassol, Cyprus: read in the place's country


@pytest.fixture
def google_maps_record() -> dict[str, object]:
    from pathlib import Path

    from spiders.google_maps.parse import parse_file

    (record,) = parse_file(Path(__file__).parent / "fixtures" / "google_maps" / "raw2.json")
    return record
