"""The directory page parsers on saved pages (tests/fixtures/directory) and on generated ones."""

# ruff: noqa: RUF001  (en dashes in opening hours are the data)

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.directory.generate import generate, raw_record
from sandbox.directory.site import render_detail
from spiders.directory.parse import ParseError, parse_detail_page, parse_listing_page
from spiders.items import RAW_FIELDS

FIXTURES = Path(__file__).parent / "fixtures" / "directory"


def page(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def detail(name: str, listing_id: str) -> dict:
    return parse_detail_page(page(name), f"http://directory.test/biz/{listing_id}")


def test_us_page_with_jsonld_gives_every_field() -> None:
    rec = detail("detail_us_jsonld.html", "33")
    assert tuple(rec) == RAW_FIELDS
    assert rec["source"] == "directory"
    assert rec["source_id"] == "33"
    assert rec["url"] == "http://directory.test/biz/33"
    assert rec["name"] == "Crown Tire & Auto"
    assert rec["category"] == "Auto repair shop"
    assert rec["categories"] == ["Auto repair shop"]
    assert rec["address"] == "7907 Pike Street, Seattle, WA 98153"
    assert rec["street"] == "7907 Pike Street"
    assert (rec["city"], rec["state"], rec["postal_code"], rec["country"]) == (
        "Seattle",
        "WA",
        "98153",
        "US",
    )
    assert rec["phone"] == "(206) 813-5381"
    assert rec["website"] == "http://www.crowntireauto.test/"
    assert rec["emails"] == ["office@crowntireauto.test"]
    assert rec["rating"] == 3.5
    assert rec["review_count"] == 1
    assert (rec["latitude"], rec["longitude"]) == (47.52874, -122.289894)
    assert rec["open_hours"]["Monday"] == ["7:30 AM–5:30 PM"]
    assert rec["open_hours"]["Sunday"] == ["Closed"]
    assert list(rec["open_hours"]) == [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ]
    assert rec["business_status"] == "OPERATIONAL"
    assert rec["parse_error"] is None
    assert rec["place_id"] is None


def test_greek_page_with_microdata_only() -> None:
    html = page("detail_greek_microdata.html")
    assert "application/ld+json" not in html
    rec = parse_detail_page(html, "http://directory.test/biz/41")
    assert rec["source_id"] == "41"
    assert rec["name"] == "Οδοντιατρείο Μακρής"
    assert rec["categories"] == ["Οδοντίατρος"]
    assert rec["address"] == "Σόλωνος 52, 106 58 Αθήνα"
    assert rec["street"] == "Σόλωνος 52"
    assert rec["city"] == "Αθήνα"
    assert rec["postal_code"] == "106 58"
    assert rec["state"] is None
    assert rec["country"] == "GR"
    assert rec["phone"] == "210 502 2243"
    assert rec["website"] == "http://odontiatreiomakris-athens.test/"
    assert rec["emails"] == []
    assert rec["rating"] is None and rec["review_count"] is None
    assert rec["latitude"] == 38.002416


def test_split_opening_hours_and_closed_days() -> None:
    rec = detail("detail_split_hours_email.html", "6")
    assert rec["open_hours"]["Monday"] == ["Closed"]
    assert rec["open_hours"]["Tuesday"] == ["11:30 AM–2:30 PM", "5–10 PM"]
    assert rec["street"] == "2525 Aurora Boulevard Suite 117"
    assert rec["emails"] == []


def test_unparseable_phone_is_kept_as_shown() -> None:
    rec = detail("detail_bad_phone.html", "127")
    assert rec["phone"] == "call us"
    assert rec["name"] == "Cafe Stone"
    assert rec["emails"] == ["susan.smith@cafestone-austin.test"]


def test_rows_that_are_not_leads_parse_without_error() -> None:
    ad = detail("detail_ad_row.html", "19")
    assert ad["name"] == "Advertise here"
    assert ad["categories"] == ["Dentist", "Cosmetic dentist"]
    assert ad["address"] is ad["phone"] is ad["website"] is None
    assert ad["business_status"] is None
    nameless = detail("detail_no_name.html", "26")
    assert nameless["name"] is None
    assert nameless["phone"] == "020 7293 6105"
    assert nameless["address"] == "347 Lordship Avenue, London SW1A 2EA"
    assert nameless["postal_code"] == "SW1A 2EA"


@pytest.mark.parametrize(
    ("name", "why"),
    [("detail_truncated.html", "page truncated"), ("detail_missing_block.html", "page complete")],
)
def test_malformed_pages_raise_parse_error_naming_url_and_what_is_missing(
    name: str, why: str
) -> None:
    url = "http://directory.test/biz/133"
    with pytest.raises(ParseError) as err:
        parse_detail_page(page(name), url)
    message = str(err.value)
    assert url in message
    assert "no business block" in message
    assert why in message


def test_search_page_is_not_a_business_page() -> None:
    with pytest.raises(ParseError, match="no business block"):
        parse_detail_page(page("search_austin_p1.html"), "http://directory.test/search")


def test_jsonld_alone_is_enough() -> None:
    html = """<html><head><script type="application/ld+json">
    {"@context": "https://schema.org", "@type": "Dentist", "name": "Bright Teeth",
     "address": {"@type": "PostalAddress", "streetAddress": "1 Main Street",
                 "addressLocality": "Austin", "addressRegion": "TX", "postalCode": "78701",
                 "addressCountry": "US"},
     "telephone": "(512) 555-0100", "url": "http://brightteeth.test/",
     "geo": {"latitude": "30.1", "longitude": "-97.7"},
     "aggregateRating": {"ratingValue": "4.5", "reviewCount": "1,204"}}
    </script></head><body><p>Loading...</p></body></html>"""
    rec = parse_detail_page(html, "http://directory.test/biz/77")
    assert rec["source_id"] == "77"
    assert rec["name"] == "Bright Teeth"
    assert rec["address"] == "1 Main Street, Austin, 78701"
    assert rec["phone"] == "(512) 555-0100"
    assert rec["review_count"] == 1204
    assert rec["rating"] == 4.5
    assert rec["latitude"] == 30.1


def test_listing_page_detail_links_and_next() -> None:
    url = "http://directory.test/search?location=Austin%2C+TX"
    first = parse_listing_page(page("search_austin_p1.html"), url)
    assert len(first.detail_urls) == 20
    assert first.detail_urls[:3] == [
        "http://directory.test/biz/1",
        "http://directory.test/biz/4",
        "http://directory.test/biz/5",
    ]
    assert first.next_url == "http://directory.test/search?location=Austin%2C+TX&page=2"
    last = parse_listing_page(page("search_austin_last.html"), url + "&page=7")
    assert len(last.detail_urls) == 11
    assert last.detail_urls[-1] == "http://directory.test/biz/527"
    assert last.next_url is None
    empty = parse_listing_page(
        page("search_empty.html"), "http://directory.test/search?category=zzz"
    )
    assert empty.detail_urls == [] and empty.next_url is None


def test_listing_parser_rejects_a_page_that_is_not_a_listing() -> None:
    with pytest.raises(ParseError, match="not a listing page"):
        parse_listing_page("<html><body>Access denied</body></html>", "http://directory.test/s")


def test_every_generated_page_round_trips_to_its_raw_record() -> None:
    directory = generate(seed=11, n_businesses=400)
    errors = 0
    for listing in directory.listings:
        html = render_detail(listing)
        if listing.malformed:
            with pytest.raises(ParseError):
                parse_detail_page(html, listing.url)
            errors += 1
            continue
        assert parse_detail_page(html, listing.url) == raw_record(listing), listing.listing_id
    assert errors == sum(1 for lst in directory.listings if lst.malformed)
