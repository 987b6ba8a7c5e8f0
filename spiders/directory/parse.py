"""Pure parsers for the business directory's pages (no Scrapy: testable on saved HTML).

`parse_listing_page` reads a search-results page: detail links and the rel=next link.
`parse_detail_page` reads a business page into the raw record every spider yields (keys
`spiders.items.RAW_FIELDS`), values as shown. It reads schema.org microdata first and fills
gaps from JSON-LD; a page with neither business block is not a business page and raises
`ParseError` naming the URL and what is missing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from parsel import Selector

SOURCE = "directory"
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_RAW_FIELDS: tuple[str, ...] = (
    "source", "source_id", "url", "name", "category", "categories", "address", "street",
    "city", "postal_code", "state", "country", "phone", "website", "emails", "rating",
    "review_count", "latitude", "longitude", "open_hours", "business_status", "place_id",
    "cid", "data_id", "parse_error",
)  # fmt: skip
_SPACES = re.compile(r"\s+")


class ParseError(ValueError):
    """The page is not what the parser expects (not a business page, truncated, blocked)."""


@dataclass(slots=True)
class ListingPage:
    detail_urls: list[str] = field(default_factory=list)
    next_url: str | None = None


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = _SPACES.sub(" ", text).strip()
    return text or None


def _text(sel: Selector | None) -> str | None:
    """All text inside the element, whitespace collapsed; None when empty or absent."""
    if sel is None:
        return None
    return _clean("".join(sel.css("::text").getall()))


def _first(sel: Selector, query: str) -> Selector | None:
    found = sel.css(query)
    return found[0] if found else None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(str(value).replace(",", "")) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def parse_listing_page(html: str, url: str) -> ListingPage:
    """Detail-page URLs (absolute, in page order, no repeats) and the next page's URL."""
    sel = Selector(text=html)
    results = sel.css("ol.results")
    if not results and not sel.css(".no-results"):
        raise ParseError(f"{url}: not a listing page (no ol.results list and no no-results note)")
    seen: set[str] = set()
    urls: list[str] = []
    for href in results.css("li.result a.biz-link::attr(href)").getall():
        absolute = urljoin(url, href.strip())
        if absolute not in seen:
            seen.add(absolute)
            urls.append(absolute)
    nxt = (
        sel.css('a[rel~="next"]::attr(href)').get()
        or sel.css('link[rel~="next"]::attr(href)').get()
    )
    return ListingPage(detail_urls=urls, next_url=urljoin(url, nxt.strip()) if nxt else None)


def _jsonld_business(sel: Selector) -> dict[str, Any] | None:
    """The first JSON-LD object that describes a business (has a name and an address or @type)."""
    for raw in sel.css('script[type="application/ld+json"]::text').getall():
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        candidates = data if isinstance(data, list) else data.get("@graph", [data])
        for obj in candidates:
            if not isinstance(obj, dict):
                continue
            kind = obj.get("@type")
            kinds = kind if isinstance(kind, list) else [kind]
            if any(isinstance(k, str) and ("Business" in k or k in _LOCAL_TYPES) for k in kinds):
                return obj
    return None


# schema.org LocalBusiness subtypes a directory may use instead of LocalBusiness itself.
_LOCAL_TYPES = frozenset(
    {"Dentist", "Restaurant", "CafeOrCoffeeShop", "BarOrPub", "Plumber", "Attorney",
     "LegalService", "Hotel", "HairSalon", "BeautySalon", "AutoRepair", "AccountingService",
     "Store", "MedicalBusiness"}
)  # fmt: skip


def _from_microdata(block: Selector) -> dict[str, Any]:
    rec: dict[str, Any] = {}
    rec["name"] = _text(_first(block, '[itemprop="name"]'))
    categories = [c for c in (_text(s) for s in block.css(".categories .category")) if c]
    rec["categories"] = categories
    rec["category"] = categories[0] if categories else None
    status = block.css(".status::attr(data-status)").get()
    rec["business_status"] = _clean(status)
    rating = _first(block, '[itemprop="aggregateRating"]')
    if rating is not None:
        rec["rating"] = _float(_text(_first(rating, '[itemprop="ratingValue"]')))
        rec["review_count"] = _int(_text(_first(rating, '[itemprop="reviewCount"]')))
    address = _first(block, '[itemprop="address"]')
    if address is not None:
        rec["address"] = _text(address)
        rec["street"] = _text(_first(address, '[itemprop="streetAddress"]'))
        rec["city"] = _text(_first(address, '[itemprop="addressLocality"]'))
        rec["state"] = _text(_first(address, '[itemprop="addressRegion"]'))
        rec["postal_code"] = _text(_first(address, '[itemprop="postalCode"]'))
        country = address.css('[itemprop="addressCountry"]')
        if country:
            rec["country"] = _clean(country.attrib.get("content")) or _text(country[0])
    rec["phone"] = _text(_first(block, '[itemprop="telephone"]'))
    website = block.css('.website a::attr(href), a[itemprop="url"]::attr(href)').get()
    rec["website"] = _clean(website)
    emails = []
    for href in block.css('a[href^="mailto:"]::attr(href)').getall():
        email = href.removeprefix("mailto:").split("?", 1)[0].strip()
        if email and email not in emails:
            emails.append(email)
    rec["emails"] = emails
    geo = _first(block, '[itemprop="geo"]')
    if geo is not None:
        rec["latitude"] = _float(geo.css('[itemprop="latitude"]::attr(content)').get())
        rec["longitude"] = _float(geo.css('[itemprop="longitude"]::attr(content)').get())
    hours: dict[str, list[str]] = {}
    for row in block.css("table.hours tr"):
        day = _text(_first(row, "th"))
        value = _text(_first(row, "td"))
        if day in _WEEKDAYS and value:
            hours[day] = [part.strip() for part in value.split(",") if part.strip()]
    rec["open_hours"] = hours or None
    return rec


def _from_jsonld(obj: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {"name": _clean(obj.get("name"))}
    address = obj.get("address")
    if isinstance(address, dict):
        rec["street"] = _clean(address.get("streetAddress"))
        rec["city"] = _clean(address.get("addressLocality"))
        rec["state"] = _clean(address.get("addressRegion"))
        rec["postal_code"] = _clean(address.get("postalCode"))
        country = address.get("addressCountry")
        rec["country"] = _clean(country.get("name") if isinstance(country, dict) else country)
    elif isinstance(address, str):
        rec["address"] = _clean(address)
    rec["phone"] = _clean(obj.get("telephone"))
    rec["website"] = _clean(obj.get("url"))
    email = obj.get("email")
    if isinstance(email, str) and email.strip():
        rec["emails"] = [email.strip().removeprefix("mailto:")]
    geo = obj.get("geo")
    if isinstance(geo, dict):
        rec["latitude"] = _float(geo.get("latitude"))
        rec["longitude"] = _float(geo.get("longitude"))
    rating = obj.get("aggregateRating")
    if isinstance(rating, dict):
        rec["rating"] = _float(rating.get("ratingValue"))
        rec["review_count"] = _int(rating.get("reviewCount") or rating.get("ratingCount"))
    return rec


def _source_id(url: str, block: Selector | None) -> str:
    if block is not None:
        listing_id = block.attrib.get("data-listing-id")
        if listing_id:
            return listing_id.strip()
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def parse_detail_page(html: str, url: str) -> dict[str, Any]:
    """The raw record of one business page; `ParseError` if the page has no business on it."""
    sel = Selector(text=html)
    blocks = sel.css('[itemscope][itemtype*="schema.org/"][data-listing-id]') or sel.css(
        'article.biz, [itemscope][itemtype$="LocalBusiness"]'
    )
    block = blocks[0] if blocks else None
    jsonld = _jsonld_business(sel)
    if block is None and jsonld is None:
        truncated = "</html>" not in html[-200:].lower()
        why = "page truncated" if truncated else "page complete"
        raise ParseError(
            f"{url}: no business block (no LocalBusiness microdata and no JSON-LD; {why})"
        )
    record: dict[str, Any] = dict.fromkeys(_RAW_FIELDS)
    record.update(source=SOURCE, source_id=_source_id(url, block), url=url)
    micro = _from_microdata(block) if block is not None else {}
    extra = _from_jsonld(jsonld) if jsonld is not None else {}
    for key in set(micro) | set(extra):
        value = micro.get(key)
        record[key] = value if value not in (None, [], {}) else extra.get(key, value)
    record["categories"] = record["categories"] or []
    record["emails"] = record["emails"] or []
    if record["address"] is None and record["street"]:
        parts = [record["street"], record["city"], record["postal_code"]]
        record["address"] = ", ".join(p for p in parts if p)
    return record
