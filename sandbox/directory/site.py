"""HTML of the demo directory (directory.test) and of the businesses' own websites.

Pure functions from the generated `Directory` to strings; `sandbox.server` maps URLs onto
them. Detail pages carry each business as visible HTML with schema.org microdata, and most
also as JSON-LD, the way real directories do. Malformed pages are broken on purpose.
"""

# ruff: noqa: RUF001  (Greek script, en dashes and typographic marks are the data)

from __future__ import annotations

import json
import unicodedata
from html import escape
from urllib.parse import urlencode

from sandbox.directory.generate import (
    CATEGORY_SLUGS,
    CITIES,
    DIRECTORY_BASE,
    WEEKDAYS,
    Business,
    Directory,
    Listing,
    Website,
    cf_encode,
)

PAGE_SIZE = 20

ROBOTS_DIRECTORY = "User-agent: *\nDisallow: /admin\n"
ROBOTS_WEBSITE = "User-agent: *\nAllow: /\n"

_STATUS_TEXT = {
    "OPERATIONAL": "Open",
    "CLOSED_TEMPORARILY": "Temporarily closed",
    "CLOSED_PERMANENTLY": "Permanently closed",
}
_CATEGORY_LABELS = {slug: slug.replace("_", " ").capitalize() for slug in CATEGORY_SLUGS}
_CITY_LOCATIONS = {
    c.key: f"{c.name}, {c.state}" if c.state else f"{c.name}, {c.country}" for c in CITIES
}


def fold(text: str) -> str:
    """Case- and accent-insensitive form used for matching filters (Αθήνα == αθηνα)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(ch for ch in decomposed if not unicodedata.combining(ch)).split())


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _page(title: str, body: str, head: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n{head}</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _header() -> str:
    links = " ".join(
        f'<a href="/search?{urlencode({"category": slug})}">{_e(label)}</a>'
        for slug, label in _CATEGORY_LABELS.items()
    )
    return (
        '<header class="site-header"><a class="logo" href="/">Local Directory</a>\n'
        f'<nav class="categories">{links}</nav></header>\n'
    )


# --------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------


class SearchIndex:
    """Filters listings by category and location; results are cached per filter."""

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self._cache: dict[tuple[str, str], list[Listing]] = {}
        self._city_aliases = {c.key: frozenset(c.aliases) for c in CITIES}
        self._category_text = [
            fold(" ".join([lst.category or "", *lst.categories])) for lst in directory.listings
        ]

    def search(self, category: str | None, location: str | None) -> list[Listing]:
        # "Austin,TX" and "Austin , TX" mean "Austin, TX".
        where = ", ".join(part.strip() for part in fold(location or "").split(",") if part.strip())
        key = (fold(category or ""), where)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._search(*key)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def _search(self, category: str, location: str) -> list[Listing]:
        slug = category.replace("-", "_").replace(" ", "_")
        by_slug = slug in CATEGORY_SLUGS
        cities: set[str] | None = None
        if location:
            cities = {key for key, aliases in self._city_aliases.items() if location in aliases}
        out = []
        for lst, text in zip(self.directory.listings, self._category_text, strict=True):
            if cities is not None and lst.city_key not in cities:
                continue
            if category:
                # A known slug selects the taxonomy (Greek and German dentists too); any
                # other text is a substring of the categories as shown.
                if by_slug:
                    if lst.category_slug != slug:
                        continue
                elif category not in text:
                    continue
            out.append(lst)
        return out


def render_home(directory: Directory) -> str:
    rows = []
    for key, location in _CITY_LOCATIONS.items():
        links = " ".join(
            f'<a href="/search?{_e(urlencode({"category": slug, "location": location}))}">'
            f"{_e(label)}</a>"
            for slug, label in _CATEGORY_LABELS.items()
        )
        all_link = f"/search?{_e(urlencode({'location': location}))}"
        rows.append(
            f'<section class="city" data-city="{key}"><h2><a href="{all_link}">'
            f"{_e(location)}</a></h2><p>{links}</p></section>"
        )
    body = (
        _header()
        + "<main><h1>Find local businesses</h1>\n"
        + f"<p>{len(directory.listings)} listings.</p>\n"
        + '<form action="/search" method="get"><input name="category" placeholder="What">'
        + '<input name="location" placeholder="Where"><button>Search</button></form>\n'
        + "\n".join(rows)
        + "</main>"
    )
    return _page("Local Directory", body)


def _result_row(lst: Listing) -> str:
    parts = [f'<a class="biz-link" href="/biz/{lst.listing_id}">{_e(lst.name or "(unnamed)")}</a>']
    if lst.category:
        parts.append(f'<span class="cat">{_e(lst.category)}</span>')
    if lst.address:
        parts.append(f'<span class="addr">{_e(lst.address)}</span>')
    if lst.phone:
        parts.append(f'<span class="phone">{_e(lst.phone)}</span>')
    if lst.rating is not None:
        parts.append(f'<span class="rating">{lst.rating}</span>')
    return f'<li class="result" data-listing-id="{lst.listing_id}">{" ".join(parts)}</li>'


def render_search(
    results: list[Listing], category: str | None, location: str | None, page: int
) -> str:
    page = max(1, page)
    pages = max(1, -(-len(results) // PAGE_SIZE))
    chunk = results[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]

    def link(n: int) -> str:
        params = {k: v for k, v in (("category", category), ("location", location)) if v}
        params["page"] = str(n)
        return "/search?" + urlencode(params)

    title = " ".join(
        x for x in (category or "Businesses", "in " + location if location else "") if x
    )
    head = ""
    nav = []
    if page > 1:
        nav.append(f'<a rel="prev" href="{_e(link(page - 1))}">Previous</a>')
    nav.append(f'<span class="page">Page {page} of {pages}</span>')
    if page < pages:
        nav.append(f'<a rel="next" href="{_e(link(page + 1))}">Next</a>')
        head = f'<link rel="next" href="{_e(link(page + 1))}">\n'
    rows = "\n".join(_result_row(lst) for lst in chunk)
    empty = '<p class="no-results">No results.</p>\n' if not chunk else ""
    body = (
        _header()
        + f"<main><h1>{_e(title)}</h1>\n"
        + f'<p class="count">{len(results)} results</p>\n{empty}'
        + f'<ol class="results" start="{(page - 1) * PAGE_SIZE + 1}">\n{rows}\n</ol>\n'
        + f'<nav class="pager">{" ".join(nav)}</nav></main>'
    )
    return _page(title, body, head)


# --------------------------------------------------------------------------------------
# Detail pages
# --------------------------------------------------------------------------------------


def _address_html(lst: Listing) -> str:
    if lst.street is None or lst.country is None:
        return ""
    street = f'<span itemprop="streetAddress">{_e(lst.street)}</span>'
    city = f'<span itemprop="addressLocality">{_e(lst.city)}</span>'
    pc = f'<span itemprop="postalCode">{_e(lst.postal_code)}</span>' if lst.postal_code else ""
    country = f'<meta itemprop="addressCountry" content="{_e(lst.country)}">'
    if lst.country == "US":
        region = f'<span itemprop="addressRegion">{_e(lst.state)}</span>'
        inner = f"{street}, {city}, {region} {pc}"
    elif lst.country == "GB":
        inner = f"{street}, {city} {pc}"
    else:
        inner = f"{street}, {pc} {city}"
    return (
        '<p class="address" itemprop="address" itemscope '
        f'itemtype="https://schema.org/PostalAddress">{inner}{country}</p>\n'
    )


def _jsonld(lst: Listing) -> str:
    data: dict[str, object] = {
        "@context": "https://schema.org",
        "@type": "LocalBusiness",
        "@id": lst.url,
        "name": lst.name,
    }
    if lst.street:
        address = {
            "@type": "PostalAddress",
            "streetAddress": lst.street,
            "addressLocality": lst.city,
            "addressRegion": lst.state,
            "postalCode": lst.postal_code,
            "addressCountry": lst.country,
        }
        data["address"] = {k: v for k, v in address.items() if v is not None}
    if lst.phone:
        data["telephone"] = lst.phone
    if lst.website:
        data["url"] = lst.website
    if lst.emails:
        data["email"] = lst.emails[0]
    if lst.latitude is not None:
        data["geo"] = {
            "@type": "GeoCoordinates",
            "latitude": lst.latitude,
            "longitude": lst.longitude,
        }
    if lst.rating is not None:
        data["aggregateRating"] = {
            "@type": "AggregateRating",
            "ratingValue": lst.rating,
            "reviewCount": lst.review_count,
        }
    text = json.dumps(data, ensure_ascii=False, indent=1).replace("</", "<\\/")
    return f'<script type="application/ld+json">\n{text}\n</script>\n'


def _business_block(lst: Listing) -> str:
    out = [
        f'<article class="biz" data-listing-id="{lst.listing_id}" itemscope '
        'itemtype="https://schema.org/LocalBusiness">',
        f'<h1 itemprop="name">{_e(lst.name or "")}</h1>',
    ]
    if lst.categories:
        cats = " · ".join(f'<span class="category">{_e(c)}</span>' for c in lst.categories)
        out.append(f'<p class="categories">{cats}</p>')
    if lst.business_status:
        text = _STATUS_TEXT.get(lst.business_status, lst.business_status)
        out.append(f'<p class="status" data-status="{_e(lst.business_status)}">{_e(text)}</p>')
    if lst.rating is not None:
        out.append(
            '<div class="rating" itemprop="aggregateRating" itemscope '
            'itemtype="https://schema.org/AggregateRating">'
            f'<span itemprop="ratingValue">{lst.rating}</span> stars '
            f'(<span itemprop="reviewCount">{lst.review_count}</span> reviews)</div>'
        )
    out.append(_address_html(lst))
    if lst.phone:
        out.append(f'<p class="phone">Phone: <span itemprop="telephone">{_e(lst.phone)}</span></p>')
    if lst.website:
        label = lst.website.split("//", 1)[-1].rstrip("/")
        out.append(
            f'<p class="website"><a itemprop="url" rel="nofollow" href="{_e(lst.website)}">'
            f"{_e(label)}</a></p>"
        )
    if lst.emails:
        links = " ".join(
            f'<a class="email" itemprop="email" href="mailto:{_e(m)}">{_e(m)}</a>'
            for m in lst.emails
        )
        out.append(f'<p class="emails">{links}</p>')
    if lst.latitude is not None:
        out.append(
            '<div itemprop="geo" itemscope itemtype="https://schema.org/GeoCoordinates">'
            f'<meta itemprop="latitude" content="{lst.latitude}">'
            f'<meta itemprop="longitude" content="{lst.longitude}"></div>'
        )
    if lst.open_hours:
        rows = "".join(
            f"<tr><th>{day}</th><td>{_e(', '.join(lst.open_hours[day]))}</td></tr>"
            for day in WEEKDAYS
            if day in lst.open_hours
        )
        out.append(f'<table class="hours"><caption>Opening hours</caption>{rows}</table>')
    out.append("</article>")
    return "\n".join(x for x in out if x)


def render_detail(lst: Listing) -> str:
    """The listing's detail page; broken on purpose when `lst.malformed` says so."""
    title = f"{lst.name or 'Listing'} - Local Directory"
    canonical = f'<link rel="canonical" href="{_e(lst.url)}">\n'
    crumbs = '<div class="breadcrumbs"><a href="/">Home</a> › Listing</div>\n'
    if lst.malformed == "missing_block":
        main = '<div class="notice">This listing is being updated. Please check back later.</div>'
        return _page(title, f"{_header()}<main>\n{crumbs}{main}\n</main>", canonical)
    body = f"{_header()}<main>\n{crumbs}{_business_block(lst)}\n</main>\n"
    body += '<footer class="site-footer">© Local Directory</footer>\n'
    if lst.jsonld:
        body += _jsonld(lst)
    html = _page(title, body, canonical)
    if lst.malformed == "truncated":
        # The connection dropped mid-page: the business block never arrived.
        cut = html.index("<main>") + len('<main>\n<div class="bre')
        return html[:cut]
    return html


def render_not_found(what: str) -> str:
    return _page("Not found", f"{_header()}<main><h1>Not found</h1><p>{_e(what)}</p></main>")


# --------------------------------------------------------------------------------------
# Business websites
# --------------------------------------------------------------------------------------


def _email_html(email: str, style: str, cf_key: int) -> str:
    if style == "mailto":
        return f'<p class="email">Email: <a href="mailto:{_e(email)}">{_e(email)}</a></p>'
    if style == "text":
        return f'<p class="email">Write to us at {_e(email)}</p>'
    if style == "brackets":
        shown = email.replace("@", " [at] ").replace(".", " [dot] ")
        return f'<p class="email">Email: {_e(shown)}</p>'
    if style == "parens":
        shown = email.replace("@", " (at) ").replace(".", " (dot) ")
        return f'<p class="email">Email: {_e(shown)}</p>'
    enc = cf_encode(email, cf_key)
    return (
        f'<p class="email">Email: <a href="/cdn-cgi/l/email-protection#{enc}">'
        f'<span class="__cf_email__" data-cfemail="{enc}">[email&#160;protected]</span></a></p>'
    )


def _site_emails(site: Website, page: str) -> str:
    return "\n".join(
        _email_html(email, style, site.cf_key)
        for email, style, where in zip(
            site.emails, site.email_styles, site.email_pages, strict=True
        )
        if where == page
    )


def _branch_html(b: Business) -> str:
    return (
        f'<li class="branch"><strong>{_e(b.name)}</strong><br>{_e(b.address)}<br>'
        f'Tel: <a href="tel:{_e(b.phone)}">{_e(b.phone)}</a></li>'
    )


def _site_page(directory: Directory, site: Website, title: str, main: str) -> str:
    head = '<link rel="icon" href="/favicon.ico">\n'
    if "sprite" in site.decoys:
        head += "<style>.icons{background-image:url(/img/sprite@3x.webp)}</style>\n"
    nav = '<a href="/">Home</a> <a href="/contact">Contact</a>'
    if site.has_about:
        nav += ' <a href="/about">About us</a>'
    header = (
        f'<header><img class="logo" src="/img/logo.png" srcset="/img/logo@2x.png 2x" '
        f'alt="{_e(site.name)} logo"><nav>{nav}</nav></header>\n'
    )
    footer = ['<footer><span class="icons"></span>']
    for url in site.socials:
        footer.append(f'<a class="social" href="{_e(url)}">{_e(url.split("/")[2])}</a>')
    if "placeholder" in site.decoys:
        footer.append(
            '<form class="newsletter"><label>Newsletter <input type="email" name="email" '
            'placeholder="you@example.com"></label><button>Subscribe</button></form>'
        )
    footer.append(f"<p>© {_e(site.name)}</p></footer>")
    return _page(title, header + f"<main>\n{main}\n</main>\n" + "\n".join(footer), head)


def render_website(directory: Directory, site: Website, path: str) -> str | None:
    """A page of a business's own site, or None (404) for paths it does not have."""
    branches = [b for eid in site.entity_ids if (b := directory.business(eid)) is not None]
    first = branches[0]
    path = path.rstrip("/") or "/"
    if path in ("/", "/index.html"):
        what = first.category.lower()
        lead = (
            f'<h1>{_e(site.name)}</h1>\n<p class="tagline">Your {_e(what)} in '
            f"{_e(first.city)}.</p>\n"
        )
        if len(branches) > 1:
            lead += (
                "<h2>Our locations</h2>\n<ul>" + "".join(map(_branch_html, branches)) + "</ul>\n"
            )
        return _site_page(directory, site, site.name, lead + _site_emails(site, "home"))
    if path == "/contact":
        main = (
            f"<h1>Contact {_e(site.name)}</h1>\n<ul>"
            + "".join(map(_branch_html, branches))
            + "</ul>\n"
            + _site_emails(site, "contact")
            + '\n<form class="contact" method="post"><input name="name" placeholder="Your name">'
            + '<textarea name="message"></textarea><button>Send</button></form>'
        )
        return _site_page(directory, site, f"Contact - {site.name}", main)
    if path == "/about" and site.has_about:
        main = (
            f"<h1>About {_e(site.name)}</h1>\n<p>{_e(site.name)} has served "
            f"{_e(first.city)} for years. We look forward to seeing you.</p>"
        )
        return _site_page(directory, site, f"About - {site.name}", main)
    return None


__all__ = [
    "DIRECTORY_BASE",
    "PAGE_SIZE",
    "ROBOTS_DIRECTORY",
    "ROBOTS_WEBSITE",
    "SearchIndex",
    "fold",
    "render_detail",
    "render_home",
    "render_not_found",
    "render_search",
    "render_website",
]
