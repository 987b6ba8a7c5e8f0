"""The seeded directory generator: determinism, the planted mess, and the ground truth."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import phonenumbers
import pytest

from models.taxonomy import category_slug
from sandbox.directory.generate import (
    MALFORMED_ERROR,
    RAW_FIELDS,
    Directory,
    Listing,
    cf_decode,
    cf_encode,
    generate,
    main,
    phone_variants,
    raw_records,
    write_site_data,
)
from sandbox.directory.site import render_website
from spiders.items import RAW_FIELDS as SPIDER_RAW_FIELDS


@pytest.fixture(scope="module")
def world() -> Directory:
    return generate(seed=42, n_businesses=500)


def e164(phone: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def by_entity(world: Directory) -> dict[str, list[Listing]]:
    out: dict[str, list[Listing]] = defaultdict(list)
    for lst in world.listings:
        if lst.entity_id:
            out[lst.entity_id].append(lst)
    return out


def test_same_seed_gives_byte_identical_site_data(tmp_path: Path) -> None:
    a = write_site_data(generate(7, 300), tmp_path / "a")
    b = write_site_data(generate(7, 300), tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert names == [
        "businesses.jsonl",
        "emails.json",
        "export.csv",
        "ground_truth.json",
        "listings.jsonl",
    ]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_different_seeds_give_different_worlds() -> None:
    a, b = generate(1, 200), generate(2, 200)
    assert [x.name for x in a.businesses] != [x.name for x in b.businesses]
    assert raw_records(a) != raw_records(b)


def test_counts_and_truth_cover_every_listing(world: Directory) -> None:
    assert len(world.businesses) == 500
    assert set(world.truth) == {lst.listing_id for lst in world.listings}
    assert sorted(int(i) for i in world.truth) == list(range(1, len(world.listings) + 1))
    entities = {e for e in world.truth.values() if e is not None}
    assert entities == {b.entity_id for b in world.businesses}
    for lst in world.listings:
        assert world.truth[lst.listing_id] == lst.entity_id
        assert (lst.entity_id is None) == (lst.kind == "not_lead")


def test_duplicate_listings_are_the_same_business_formatted_differently(world: Directory) -> None:
    groups = by_entity(world)
    dups = [lst for lst in world.listings if lst.kind == "duplicate"]
    assert len(dups) >= 10
    flags = {f for d in dups for f in d.flags}
    assert {"name_variant", "phone_format", "street_abbrev"} <= flags
    for dup in dups:
        primary = next(x for x in groups[dup.entity_id] if x.kind == "primary")
        business = world.business(dup.entity_id)
        assert business is not None
        assert dup.flags
        if "name_variant" in dup.flags:
            assert dup.name != business.name
        if "phone_format" in dup.flags:
            assert dup.phone != business.phone
            assert e164(dup.phone, business.country) == e164(business.phone, business.country)
        if "street_abbrev" in dup.flags:
            assert dup.street != business.street
        assert dup.city == primary.city and dup.category_slug == primary.category_slug


def test_hotel_venues_share_phone_and_address_but_are_distinct(world: Directory) -> None:
    venues = [b for b in world.businesses if b.venue_of]
    assert venues
    for venue in venues:
        hotel = world.business(venue.venue_of or "")
        assert hotel is not None and hotel.category_slug == "hotel"
        assert venue.entity_id != hotel.entity_id
        assert (venue.phone, venue.street, venue.postal_code) == (
            hotel.phone,
            hotel.street,
            hotel.postal_code,
        )
        assert hotel.name in venue.name


def test_chain_branches_share_a_domain_but_are_distinct(world: Directory) -> None:
    chains: dict[str, list] = defaultdict(list)
    for b in world.businesses:
        if b.chain:
            chains[b.chain].append(b)
    assert chains
    for domain, branches in chains.items():
        assert len(branches) >= 2
        assert {b.domain for b in branches} == {domain}
        assert len({b.entity_id for b in branches}) == len(branches)
        assert len({b.phone for b in branches}) == len(branches)
        assert len({b.name for b in branches}) == 1
        assert world.websites[domain].entity_ids == [b.entity_id for b in branches]


def test_moved_business_keeps_name_and_phone_at_another_address(world: Directory) -> None:
    groups = by_entity(world)
    moved = [lst for lst in world.listings if lst.kind == "moved"]
    assert moved
    for old in moved:
        business = world.business(old.entity_id or "")
        assert business is not None
        assert old.name == business.name
        assert old.phone == business.phone
        assert old.street != business.street or old.postal_code != business.postal_code
        assert any(x.kind == "primary" for x in groups[business.entity_id])


def test_rows_that_are_not_leads(world: Directory) -> None:
    rows = [lst for lst in world.listings if lst.kind == "not_lead"]
    assert {"ad_row", "no_name"} <= {f for r in rows for f in r.flags}
    for row in rows:
        assert world.truth[row.listing_id] is None
        if "ad_row" in row.flags:
            assert row.name and row.address is None and row.phone is None and row.website is None
        else:
            assert row.name is None and row.address


def test_missing_fields_bad_phones_and_malformed_pages_are_planted(world: Directory) -> None:
    flags = {f for lst in world.listings for f in lst.flags}
    assert {"missing_phone", "missing_website", "missing_rating", "missing_hours", "bad_phone"} <= (
        flags
    )
    for lst in world.listings:
        if "bad_phone" in lst.flags:
            assert lst.phone is not None and e164(lst.phone, lst.country or "US") is None
    malformed = {lst.malformed for lst in world.listings if lst.malformed}
    assert malformed == {"truncated", "missing_block"}


def test_phones_are_valid_for_their_region(world: Directory) -> None:
    countries = set()
    for lst in world.listings:
        if lst.phone and "bad_phone" not in lst.flags:
            assert e164(lst.phone, lst.country or "") is not None, (lst.phone, lst.country)
            countries.add(lst.country)
    assert countries == {"US", "GB", "DE", "GR"}
    business = world.businesses[0]
    for variant in phone_variants(business.country, business.phone_nsn):
        assert e164(variant, business.country) == e164(business.phone, business.country)
    # Phones identify businesses, except where several share one (venues in a hotel).
    owners: dict[str, set[str]] = defaultdict(set)
    for b in world.businesses:
        owners[b.phone_nsn].add(b.venue_of or b.entity_id)
    assert all(len(v) == 1 for v in owners.values())


def test_local_formats_and_greek_script(world: Directory) -> None:
    phones = {b.country: b.phone for b in world.businesses}
    assert phones["US"].startswith("(")
    assert phones["GB"].startswith("020 ")
    assert phones["DE"].startswith("030 ")
    assert phones["GR"].startswith("210 ")
    greek = [b for b in world.businesses if b.city == "Αθήνα"]
    assert greek and all(any("\u0370" <= ch <= "\u03ff" for ch in b.name) for b in greek)
    for b in world.businesses:
        assert b.open_hours is not None and set(b.open_hours) == {
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        }
        assert b.website is None or (b.domain is not None and b.domain.endswith(".test"))


def test_categories_map_onto_the_taxonomy(world: Directory) -> None:
    for lst in world.listings:
        assert category_slug(lst.categories) == lst.category_slug, lst.categories


def test_raw_records_have_the_spider_shape(world: Directory) -> None:
    assert RAW_FIELDS == SPIDER_RAW_FIELDS
    records = raw_records(world)
    assert len(records) == len(world.listings)
    for record, lst in zip(records, world.listings, strict=True):
        assert tuple(record) == SPIDER_RAW_FIELDS
        assert record["source"] == "directory"
        assert record["source_id"] == lst.listing_id
        assert record["url"] == f"http://directory.test/biz/{lst.listing_id}"
        if lst.malformed:
            assert record["parse_error"] == MALFORMED_ERROR and record["name"] is None
        else:
            assert record["parse_error"] is None and record["name"] == lst.name


def test_site_data_files(world: Directory, tmp_path: Path) -> None:
    out = write_site_data(world, tmp_path)
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth == world.truth
    with (out / "export.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "listing_id",
        "name",
        "address",
        "city",
        "phone",
        "category",
        "website",
    ]
    assert len(rows) == len(world.listings)
    emails = json.loads((out / "emails.json").read_text())
    assert set(emails) == set(world.websites)
    assert sum(len(v) for v in emails.values()) > 50
    listing = json.loads((out / "listings.jsonl").read_text().splitlines()[0])
    assert listing["listing_id"] == "1" and "entity_id" in listing and "malformed" in listing


def test_cloudflare_email_encoding() -> None:
    encoded = cf_encode("info@x.test", 0x42)
    assert encoded.startswith("42")
    assert encoded[2:4] == f"{ord('i') ^ 0x42:02x}"
    assert cf_decode(encoded) == "info@x.test"


def test_websites_plant_emails_in_every_style_and_decoys(world: Directory) -> None:
    styles_seen = set()
    for site in world.websites.values():
        html = "".join(
            render_website(world, site, path) or "" for path in ("/", "/contact", "/about")
        )
        assert "logo@2x.png" in html
        for email, style in zip(site.emails, site.email_styles, strict=True):
            styles_seen.add(style)
            local, domain = email.split("@")
            if style in ("mailto", "text"):
                assert email in html
            elif style == "brackets":
                assert (
                    f"{local.replace('.', ' [dot] ')} [at] {domain.replace('.', ' [dot] ')}" in html
                )
            elif style == "parens":
                assert (
                    f"{local.replace('.', ' (dot) ')} (at) {domain.replace('.', ' (dot) ')}" in html
                )
            else:
                assert f'data-cfemail="{cf_encode(email, site.cf_key)}"' in html
                assert email not in html
        if "placeholder" in site.decoys:
            assert 'placeholder="you@example.com"' in html
        if "sprite" in site.decoys:
            assert "sprite@3x.webp" in html
    assert styles_seen == {"mailto", "text", "brackets", "parens", "cfemail"}
    some = next(iter(world.websites.values()))
    assert render_website(world, some, "/no-such-page") is None


def test_cli_writes_site_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--seed", "3", "--businesses", "40", "--out", str(tmp_path)])
    assert "40 businesses" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "ground_truth.json").read_text())) >= 40


def test_one_hundred_thousand_businesses() -> None:
    world = generate(seed=5, n_businesses=100_000)
    assert len(world.businesses) == 100_000
    assert len(world.listings) > 100_000
    assert len(
        {b.domain for b in world.businesses if b.domain and not b.chain and not b.venue_of}
    ) == (sum(1 for b in world.businesses if b.domain and not b.chain and not b.venue_of))
