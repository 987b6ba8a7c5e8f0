"""Google Maps payloads built from the demo directory's businesses (pure functions, no I/O).

Google ships places as positional JSON arrays. This module fills the same index paths the
real payloads use (see tests/fixtures/google_maps and `spiders.google_maps.parse`), so the
spider's parser reads the sandbox exactly as it reads Google:

- `place_array(place)`: the place array ("darray", 246 entries): name [11], categories [13],
  data id [10], place id [78], coordinates [9][2..3] and [208][0][2..3], address [39] / [2] /
  [18] / [183][1] (street, city, postal code, state, country), phone [178][0] (national form
  at [0], international variant kind 2 at [1], E.164 at [3]), website [7][0], rating/review
  count/price [4], reviews per rating [175][3], hours [34][1] (place page rows) and [203][0]
  (search rows), the open-now line [34][4][4] / [203][1][4][0], time zone [30], plus code
  [183][2], owner [57], header photos [72], "order online" [75], payments [100], ids [227].
- `search_payload(query, places)`: a search-results payload (`[0]` = [query, results]; the
  first result is search metadata, each other one holds a place array at index 14).
- `place_page_payload(place)`: a place-page state (element 6 is the place array; the CID is
  also at [25][3][0][13][0][0][1], as on Google).
- `wrap_json(payload)`: the `{"c": 0, "d": ")]}'\\n[...]"}` envelope Google's XHRs answer with.

Identifiers are derived from (seed, entity id) with SHA-256, so one seed gives the same ids
in every process. They have Google's real structure: the data id is "0x<feature>:0x<cid>",
and the place id is the base64 of the protobuf {1: {1: feature, 2: cid}} that Google's
"ChIJ..." ids are (checked against the fixtures: it reproduces their place ids).

Text follows Google's English UI: U+202F before AM/PM, an en dash in ranges, "⋅" in the
open-now line. Names, categories and addresses are the directory's, as shown.
"""

# ruff: noqa: RUF001, RUF002, RUF003  (en dashes and narrow no-break spaces are what Google shows)

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
from openlocationcode import openlocationcode as olc

from models.taxonomy import category_slug
from sandbox.directory.generate import CITIES, CITY_BY_KEY, WEEKDAYS, Business, City

MAPS_HOST = "maps.test"
MAPS_BASE = f"http://{MAPS_HOST}"
XSSI = ")]}'\n"  # Google's anti-XSSI guard in front of every JSON answer

PLACE_ARRAY_LEN = 246  # as in the fixtures' place arrays
SEARCH_PAYLOAD_LEN = 67
PLACE_PAGE_LEN = 32

NNBSP = "\u202f"  # Google writes "9\u202fAM"
DOT = "⋅"

CITY_TIMEZONES: dict[str, str] = {
    "austin": "America/Chicago",
    "seattle": "America/Los_Angeles",
    "london": "Europe/London",
    "berlin": "Europe/Berlin",
    "athens": "Europe/Athens",
}
COUNTRY_NAMES = {"US": "United States", "GB": "United Kingdom", "DE": "Germany", "GR": "Greece"}
_CURRENCY = {"US": "$", "GB": "£", "DE": "€", "GR": "€"}
_PRICE_TEXT = ("Inexpensive", "Moderately expensive", "Expensive", "Very expensive")
_PRICED_SLUGS = frozenset({"restaurant", "cafe", "bar", "hotel"})
_CARDS = {
    "US": ("VISA", "MasterCard", "American Express", "Discover"),
    "GB": ("VISA", "MasterCard", "American Express"),
    "DE": ("VISA", "MasterCard", "Maestro"),
    "GR": ("VISA", "MasterCard"),
}
# (source domain, shown name, link template) of "Order online" providers per country.
_ORDER_PROVIDERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "US": (("doordash.com", "DoorDash", "https://www.doordash.com/store/{slug}-{n}/"),
           ("ubereats.com", "Uber Eats", "https://www.ubereats.com/store/{slug}/{n}"),
           ("grubhub.com", "Grubhub", "https://www.grubhub.com/restaurant/{slug}/{n}")),
    "GB": (("deliveroo.co.uk", "Deliveroo", "https://deliveroo.co.uk/menu/london/{slug}-{n}"),
           ("just-eat.co.uk", "Just Eat", "https://www.just-eat.co.uk/restaurants-{slug}-{n}")),
    "DE": (("lieferando.de", "Lieferando", "https://www.lieferando.de/speisekarte/{slug}-{n}"),
           ("wolt.com", "Wolt", "https://wolt.com/de/deu/berlin/restaurant/{slug}-{n}")),
    "GR": (("efood.gr", "efood", "https://www.e-food.gr/delivery/athina/{slug}-{n}"),
           ("wolt.com", "Wolt", "https://wolt.com/el/grc/athens/restaurant/{slug}-{n}")),
}  # fmt: skip
# Businesses are drawn within ±0.08° lat / ±0.11° lng of the centre (generate._latlng); the
# city's search viewport is that box with a small margin, as Google's city viewport would be.
CITY_HALF_SPAN = (0.09, 0.12)


# --------------------------------------------------------------------------------------
# Viewports
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Viewport:
    """A lat/lng box (south, west, north, east), as in the `vp=` search parameter."""

    south: float
    west: float
    north: float
    east: float

    def contains(self, lat: float, lng: float) -> bool:
        return self.south <= lat <= self.north and self.west <= lng <= self.east

    @property
    def center(self) -> tuple[float, float]:
        return (self.south + self.north) / 2, (self.west + self.east) / 2

    def param(self) -> str:
        return f"{self.south:.6f},{self.west:.6f},{self.north:.6f},{self.east:.6f}"

    @classmethod
    def parse(cls, text: str) -> Viewport:
        """`south,west,north,east` -> Viewport; ValueError if malformed or inverted."""
        parts = [float(p) for p in text.split(",")]
        if len(parts) != 4 or not all(math.isfinite(p) for p in parts):
            raise ValueError("vp must be south,west,north,east")
        south, west, north, east = parts
        if not (-90 <= south <= north <= 90 and -180 <= west <= east <= 180):
            raise ValueError("vp must satisfy south<=north and west<=east within lat/lng bounds")
        return cls(south, west, north, east)


WORLD = Viewport(-90.0, -180.0, 90.0, 180.0)


def city_viewport(city: City) -> Viewport:
    dlat, dlng = CITY_HALF_SPAN
    return Viewport(city.lat - dlat, city.lng - dlng, city.lat + dlat, city.lng + dlng)


CITY_VIEWPORTS: dict[str, Viewport] = {c.key: city_viewport(c) for c in CITIES}


def viewport_at(
    lat: float, lng: float, zoom: float, size: tuple[int, int] = (1024, 768)
) -> Viewport:
    """The box a `@lat,lng,<zoom>z` map URL shows in a window of `size` pixels (Web Mercator)."""
    degrees_per_px = 360.0 / (256.0 * 2.0**zoom)
    half_lng = size[0] * degrees_per_px / 2
    half_lat = size[1] * degrees_per_px * math.cos(math.radians(lat)) / 2
    return Viewport(
        max(-90.0, lat - half_lat),
        max(-180.0, lng - half_lng),
        min(90.0, lat + half_lat),
        min(180.0, lng + half_lng),
    )


# --------------------------------------------------------------------------------------
# Places: the directory's businesses with Google's identifiers
# --------------------------------------------------------------------------------------


def _digest(seed: int, entity_id: str) -> bytes:
    # hashlib, not hash(): the ids must be equal in every process for one seed.
    return hashlib.sha256(f"leadflow-maps:{seed}:{entity_id}".encode()).digest()


@dataclass(frozen=True, slots=True)
class Place:
    """One business as a Google Maps place."""

    business: Business
    seed: int
    feature: int  # first half of the data id (Google: the feature's S2-based id)
    cid: int  # the customer id ("ludocid"): second half of the data id, decimal in ?cid=
    slug: str  # taxonomy slug of its categories, for category search
    prominence: float  # ranking: better-rated, more-reviewed places first

    @property
    def data_id(self) -> str:
        return f"0x{self.feature:x}:0x{self.cid:x}"

    @property
    def place_id(self) -> str:
        # Protobuf {1: {1: fixed64 feature, 2: fixed64 cid}} in URL-safe base64, padding cut:
        # exactly how Google's "ChIJ..." ids are built.
        raw = (
            b"\x0a\x12\x09"
            + self.feature.to_bytes(8, "little")
            + b"\x11"
            + self.cid.to_bytes(8, "little")
        )
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @property
    def digest(self) -> bytes:
        return _digest(self.seed, self.business.entity_id)

    @property
    def kgmid(self) -> str:
        alphabet = "0123456789abcdefghijklmnopqrstuvwxyz_"
        d = self.digest
        return "/g/11" + "".join(alphabet[b % len(alphabet)] for b in d[16:25])

    @property
    def owner_id(self) -> str:
        return "1" + str(int.from_bytes(self.digest[20:29], "big")).rjust(20, "0")[:20]

    @property
    def photo_id(self) -> str:
        return "AF1Qip" + base64.urlsafe_b64encode(self.digest).decode()[:38]

    @property
    def city(self) -> City:
        return CITY_BY_KEY[self.business.city_key]

    @property
    def timezone(self) -> str:
        return CITY_TIMEZONES.get(self.business.city_key, "UTC")

    @property
    def url_path(self) -> str:
        """The place page's path, as Google links it from the result list."""
        return f"/maps/place/{quote_name(self.business.name)}/data=!4m2!3m1!1s{self.data_id}"


def quote_name(name: str) -> str:
    """A name as Google writes it in a /maps/place/<name>/ path (spaces as '+')."""
    from urllib.parse import quote

    return quote(name, safe="").replace("%20", "+")


def make_place(business: Business, seed: int) -> Place:
    d = _digest(seed, business.entity_id)
    # Top bits set so the ids have Google's typical length; never zero.
    feature = int.from_bytes(d[0:8], "big") | (1 << 60)
    cid = int.from_bytes(d[8:16], "big") | (1 << 63)
    reviews = business.review_count or 0
    prominence = (business.rating or 0.0) * math.log1p(reviews)
    return Place(
        business=business,
        seed=seed,
        feature=feature,
        cid=cid,
        slug=category_slug(business.categories),
        prominence=prominence,
    )


def places_of(businesses: Sequence[Business], seed: int) -> list[Place]:
    """One place per business (the directory's entities: no non-lead rows, no duplicate
    listings); businesses without coordinates are not on the map."""
    return [
        make_place(b, seed)
        for b in businesses
        if b.latitude is not None and b.longitude is not None and b.name
    ]


# --------------------------------------------------------------------------------------
# Field formatting
# --------------------------------------------------------------------------------------


def phone_forms(business: Business) -> tuple[str, str, str] | None:
    """(national, international, E.164) as Google shows them (libphonenumber, like Google)."""
    try:
        number = phonenumbers.parse(business.phone_nsn, business.country)
    except phonenumbers.NumberParseException:
        return None
    fmt = phonenumbers.PhoneNumberFormat
    return (
        phonenumbers.format_number(number, fmt.NATIONAL),
        phonenumbers.format_number(number, fmt.INTERNATIONAL),
        phonenumbers.format_number(number, fmt.E164),
    )


def city_line(business: Business) -> str:
    """The address after the street ("Austin, TX 78701", "10115 Berlin")."""
    prefix = f"{business.street}, "
    address = business.address
    return address[len(prefix) :] if address.startswith(prefix) else address


def olc_encode(latitude: float, longitude: float) -> str:
    """The 10-digit Open Location Code ("plus code") of a point, e.g. "8G6MM2CR+22"."""
    return olc.encode(latitude, longitude)


def reviews_per_rating(rating: float | None, count: int | None) -> list[int] | None:
    """Counts of 1..5-star reviews that sum to `count`, centred on `rating` (largest remainder)."""
    if rating is None or not count:
        return None
    weights = [math.exp(-((k - rating) ** 2) / 1.2) for k in range(1, 6)]
    total = sum(weights)
    exact = [count * w / total for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(5), key=lambda i: (exact[i] - counts[i], i), reverse=True)
    for i in order[: count - sum(counts)]:
        counts[i] += 1
    return counts


# --- opening hours ----------------------------------------------------------------------

_TIME = re.compile(r"^\s*(\d{1,2})(?::(\d{2}))?\s*(AM|PM)?\s*$", re.IGNORECASE)


def _to_24h(hour: int, minute: int, meridiem: str) -> tuple[int, int]:
    meridiem = meridiem.upper()
    if meridiem == "AM":
        return (0 if hour == 12 else hour), minute
    return (12 if hour == 12 else hour + 12), minute


def parse_range(text: str) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """ "8:30 AM–5:30 PM" / "5–10 PM" -> ((h, m), (h, m)) in 24 h; None if not a range."""
    parts = text.replace("\u202f", " ").split("–")
    if len(parts) != 2:
        return None
    start, end = _TIME.match(parts[0]), _TIME.match(parts[1])
    if not start or not end or not end.group(3):
        return None
    end_meridiem = end.group(3)
    # "5–10 PM": the first time takes the second's AM/PM, as Google abbreviates it.
    start_meridiem = start.group(3) or end_meridiem
    return (
        _to_24h(int(start.group(1)), int(start.group(2) or 0), start_meridiem),
        _to_24h(int(end.group(1)), int(end.group(2) or 0), end_meridiem),
    )


def day_periods(texts: Sequence[str]) -> list[tuple[int, int]] | None:
    """A day's opening periods as (open, close) minutes after midnight (close may pass 24 h).

    [] = closed all day; None = a text this module cannot read.
    """
    periods: list[tuple[int, int]] = []
    for text in texts:
        if text == "Closed":
            continue
        if text == "Open 24 hours":
            periods.append((0, 24 * 60))
            continue
        parsed = parse_range(text)
        if parsed is None:
            return None
        (h1, m1), (h2, m2) = parsed
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if end <= start:  # "4 PM–2 AM": closes after midnight
            end += 24 * 60
        periods.append((start, end))
    return periods


def shown(text: str) -> str:
    """A time text as Google shows it: narrow no-break space before AM/PM."""
    return text.replace(" AM", f"{NNBSP}AM").replace(" PM", f"{NNBSP}PM")


def clock_text(minutes: int) -> str:
    """Minutes after midnight -> "9\u202fAM" / "8:30\u202fPM" (Google's 12-hour form)."""
    hour, minute = divmod(minutes % (24 * 60), 60)
    meridiem = "AM" if hour < 12 else "PM"
    hour12 = hour % 12 or 12
    return (
        f"{hour12}{NNBSP}{meridiem}" if minute == 0 else f"{hour12}:{minute:02d}{NNBSP}{meridiem}"
    )


def status_line(business: Business, local_now: datetime) -> str | None:
    """The open-now line under the name ("Open ⋅ Closes 10 PM", "Permanently closed")."""
    if business.business_status == "CLOSED_PERMANENTLY":
        return "Permanently closed"
    if business.business_status == "CLOSED_TEMPORARILY":
        return "Temporarily closed"
    hours = business.open_hours
    if not hours:
        return None
    if all(hours.get(day) == ["Open 24 hours"] for day in WEEKDAYS):
        return "Open 24 hours"
    today = local_now.date()
    now_min = local_now.hour * 60 + local_now.minute
    # Yesterday's late periods can still be running ("4 PM–2 AM").
    for offset in (-1, 0):
        day = today + timedelta(days=offset)
        for start, end in day_periods(hours.get(WEEKDAYS[day.weekday()], [])) or []:
            start, end = start + offset * 1440, end + offset * 1440
            if start <= now_min < end:
                return f"Open {DOT} Closes {clock_text(end)}"
    for offset in range(8):
        day = today + timedelta(days=offset)
        for start, _end in day_periods(hours.get(WEEKDAYS[day.weekday()], [])) or []:
            if offset == 0 and start <= now_min:
                continue
            when = clock_text(start)
            if offset == 0:
                return f"Closed {DOT} Opens {when}"
            return f"Closed {DOT} Opens {when} {WEEKDAYS[day.weekday()][:3]}"
    return "Closed"


def _hours_rows(
    hours: dict[str, list[str]], today: date
) -> tuple[list[list[Any]], list[list[Any]]]:
    """The week from today as place-page rows ([34][1]) and search rows ([203][0])."""
    page_rows: list[list[Any]] = []
    search_rows: list[list[Any]] = []
    for offset in range(7):
        day = today + timedelta(days=offset)
        name = WEEKDAYS[day.weekday()]
        texts = hours.get(name)
        if not texts:
            continue
        periods = day_periods(texts) or []
        closed = not periods
        flag = 2 if closed else 1
        page_rows.append(
            [
                name,
                [shown(t) for t in texts],
                None,
                None,
                day.isoformat(),
                flag,
                None if closed else [[s // 60, s % 60, e // 60, e % 60] for s, e in periods],
                0,
            ]
        )

        def hm(minutes: int) -> list[int]:
            h, m = divmod(minutes, 60)
            return [h, m] if m else [h]

        shown_periods: list[list[Any]] = (
            [["Closed"]]
            if closed
            else [[shown(t), [hm(s), hm(e)]] for t, (s, e) in zip(texts, periods, strict=False)]
        )
        search_rows.append(
            [name, day.isoweekday(), [day.year, day.month, day.day], shown_periods, 0, flag]
        )
    return page_rows, search_rows


# --------------------------------------------------------------------------------------
# The place array
# --------------------------------------------------------------------------------------


def _ved(place: Place, n: int) -> str:
    # Google's tracking token: opaque, URL-safe; only its shape matters.
    tail = base64.urlsafe_b64encode(place.digest[n % 16 : n % 16 + 12]).decode().rstrip("=")
    return f"0ahUKEw{tail}QQ8BcI{n}"


def _ei(seed: int, key: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(f"ei:{seed}:{key}".encode()).digest()[:17])[
        :23
    ].decode()


def _photo(place: Place, size: int) -> list[Any]:
    url = f"{MAPS_BASE}/p/{place.photo_id}=w{size}-h{size}-k-no"
    return [place.photo_id, 10, 12, "", None, 0.0, [url, place.business.name, [2048, 2048],
            [size, size]]]  # fmt: skip


def _payments(place: Place) -> list[Any] | None:
    """The About tab's "payments" group, for about half of the places (cards listed)."""
    d = place.digest
    if d[29] % 2:
        return None
    brands = _CARDS.get(place.business.country, _CARDS["US"])
    chosen = [b for i, b in enumerate(brands) if i < 2 or (d[30] >> i) & 1]

    def option(option_id: str, label: str, detail: list[Any]) -> list[Any]:
        return [f"/geo/type/establishment_poi/{option_id}", label, detail, None, [59], 0]

    cards = [[f"/g/11card{i:04d}", None, brand, brand] for i, brand in enumerate(chosen)]
    return [
        "payments",
        "Payments",
        [
            option(
                "pay_credit_card",
                "Credit cards",
                [
                    1,
                    [[1, "Credit cards"]],
                    [1, "Credit cards", "Credit cards", "Accepts credit cards"],
                ],
            ),
            option(
                "pay_debit_card",
                "Debit cards",
                [1, [[1, "Debit cards"]], [1, "Debit cards", "Debit cards", "Accepts debit cards"]],
            ),
            option(
                "pay_credit_card_types_accepted",
                "Credit cards",
                [3, None, None, None, [None, [[cards, None, [1]]]]],
            ),
        ],
    ]


def _service_options(place: Place) -> list[Any] | None:
    if place.slug not in ("restaurant", "cafe", "bar"):
        return None
    options = [("has_seating_outdoors", "Outdoor seating"), ("has_takeout", "Takeout"),
               ("serves_dine_in", "Dine-in")]  # fmt: skip
    return [
        "service_options",
        "Service options",
        [
            [f"/geo/type/establishment_poi/{oid}", label,
             [1, [[1, label]], [1, label, label, f"Has {label.lower()}"]], None, [32], 0]
            for oid, label in options
        ],
    ]  # fmt: skip


def _order_online(place: Place) -> list[Any] | None:
    """ "Order online" providers for restaurants (and no one else)."""
    if place.slug != "restaurant":
        return None
    providers = _ORDER_PROVIDERS.get(place.business.country, _ORDER_PROVIDERS["US"])
    d = place.digest
    count = 1 + d[31] % len(providers)
    slug = re.sub(r"[^a-z0-9]+", "-", place.business.name.lower()).strip("-") or "store"
    entries: list[Any] = []
    for i, (source, name, template) in enumerate(providers[:count]):
        link = template.format(slug=slug, n=int.from_bytes(d[i : i + 3], "big"))
        logo = f"{MAPS_BASE}/logos/{source}.png"
        entries.append(
            [[source, None, [logo, name, [80, 80]], 20000000 + i],
             [None, None, [link, [link, None, None, None, ""]]]]
        )  # fmt: skip
    return [[[4, None, entries, None, 21634]]]


def place_array(place: Place, now: datetime | None = None, query: str | None = None) -> list[Any]:
    """The place array Google serves for `place` (search result or place page alike).

    `now` (aware; default: the current time) sets the week the hours rows are dated in and
    the open-now line, both in the place's own time zone.
    """
    b = place.business
    now = now or datetime.now(UTC)
    local_now = now.astimezone(ZoneInfo(place.timezone))
    arr: list[Any] = [None] * PLACE_ARRAY_LEN
    address = b.address
    data_id, place_id, cid = place.data_id, place.place_id, str(place.cid)
    lat, lng = b.latitude, b.longitude

    arr[0] = _ei(place.seed, b.entity_id)
    arr[1] = _ved(place, 1)
    arr[2] = [b.street, city_line(b)]
    reviews_link = (
        f"https://search.google.com/local/reviews?placeid={place_id}"
        f"&q={quote_name(b.name)}&authuser=0&hl=en"
    )
    price = price_text = None
    if place.slug in _PRICED_SLUGS:
        level = 1 + place.digest[28] % 3
        price = _CURRENCY.get(b.country, "$") * level
        price_text = _PRICE_TEXT[level - 1]
    reviews_label = f"{b.review_count:,} reviews" if b.review_count else None
    arr[4] = [None, None, price, [reviews_link, reviews_label, None, _ved(place, 4)], price,
              None, None, b.rating, b.review_count, None, price_text]  # fmt: skip
    if b.website:
        display = b.domain or b.website.split("//", 1)[-1].strip("/")
        arr[7] = [b.website, display, None, _ved(place, 7)]
    arr[9] = [None, None, lat, lng]
    arr[10] = data_id
    arr[11] = b.name
    arr[13] = list(b.categories)
    arr[18] = f"{b.name}, {address}"
    arr[30] = place.timezone

    status = status_line(b, local_now)
    if b.open_hours:
        page_rows, search_rows = _hours_rows(b.open_hours, local_now.date())
        today_row = page_rows[0] if page_rows else None
        arr[34] = [None, page_rows, None, None, [today_row, 1, 1, 0, status], None, today_row, 2]
        arr[203] = [
            search_rows,
            [search_rows[0] if search_rows else None, 0, 1, None, [status, []], [status, []]],
            6,
        ]
    elif status:
        arr[34] = [None, None, None, None, [None, 1, 1, 0, status]]
        arr[203] = [None, [None, 0, 1, None, [status, []]]]

    arr[39] = address
    arr[42] = (
        f"https://www.google.com/maps/preview/place/{quote_name(b.name)}/@{lat},{lng},17z/data=!4m2!3m1!1s{data_id}"
    )
    arr[57] = [None, f"{b.name} (Owner)", place.owner_id, None, None, None, None, None,
               place.owner_id]  # fmt: skip
    arr[72] = [[_photo(place, 86), _photo(place, 408)]]
    arr[75] = _order_online(place)
    arr[76] = [[place.slug]]
    arr[78] = place_id
    arr[82] = [None, b.street, b.street, b.city]
    arr[88] = [None, f"SearchResult.TYPE_{place.slug.upper()}",
               [f"SearchResult.TYPE_{place.slug.upper()}", b.country], b.name]  # fmt: skip
    arr[89] = place.kgmid
    groups = [g for g in (_service_options(place), _payments(place)) if g]
    arr[100] = [None, groups] if groups else None
    arr[110] = "en"
    arr[164] = [
        [8, f"{place.slug.replace('_', ' ')}s"],
        f"See nearby {place.slug.replace('_', ' ')}s",
    ]
    arr[166] = b.city
    histogram = reviews_per_rating(b.rating, b.review_count)
    if histogram is not None:
        arr[175] = [None, [None, 1, 0], 0, histogram]
    phones = phone_forms(b)
    if phones is not None:
        national, international, e164 = phones
        arr[178] = [[national, [[national, 1], [international, 2]], None, e164, None,
                     [f"tel:{e164}", None, None, _ved(place, 178)]]]  # fmt: skip
    plus = olc_encode(lat, lng)
    arr[183] = [
        [
            [7, [[b.name], [b.street], [city_line(b)], [COUNTRY_NAMES.get(b.country, b.country)]]],
            [2, [[f"{b.name}, {address}"]]],
            [1, [[address]]],
            [4, [[b.city]]],
        ],
        [None, b.street, b.street, b.city, b.postal_code, b.state, b.country],
        [_ved(place, 183), [plus], [f"{plus[4:]} {b.city}"], 2],
    ]
    arr[205] = 1
    arr[208] = [[None, None, lat, lng]]
    arr[214] = 1
    arr[227] = [[data_id, None, None, place.kgmid, place_id, cid, place.owner_id]]
    arr[243] = b.country
    if query:
        arr[209] = base64.urlsafe_b64encode(query.encode()).decode().rstrip("=")
    return arr


# --------------------------------------------------------------------------------------
# Payload envelopes
# --------------------------------------------------------------------------------------


def _tz_block(now: datetime, tz: str) -> list[Any]:
    offset = now.astimezone(ZoneInfo(tz)).utcoffset() or timedelta(0)
    return [str(int(now.timestamp() * 1000)), [[tz, [tz], int(offset.total_seconds() // 60)]]]


def _map_view(vp: Viewport) -> list[Any]:
    lat, lng = vp.center
    # [altitude (m), lng, lat], heading/tilt, window size, zoom: the camera Google returns.
    span = max(vp.north - vp.south, (vp.east - vp.west) * 0.75, 1e-6)
    zoom = max(1.0, min(21.0, math.log2(360.0 / span)))
    altitude = 35_200_000 / 2**zoom
    return [[altitude, lng, lat], [0, 0, 0], [1024, 768], round(zoom, 1)]


def search_payload(
    query: str,
    places: Sequence[Place],
    *,
    viewport: Viewport | None = None,
    now: datetime | None = None,
    seed: int = 0,
    offset: int = 0,
) -> list[Any]:
    """A search-results payload for one page of results (`places` in result order)."""
    now = now or datetime.now(UTC)
    ei = _ei(seed, f"{query}:{offset}")
    head: list[Any] = [None] * 12
    head[0] = query
    meta: list[Any] = [None] * 8 + [ei, f"0ahUKEwiSearch{offset}", [query, 0]]
    items: list[Any] = [meta]
    for i, place in enumerate(places):
        item: list[Any] = [None] * 15
        item[8] = ei
        item[9] = f"0ahUKEwiResult{offset + i}"
        item[14] = place_array(place, now, query)
        items.append(item)
    head[1] = items
    head[3] = 1
    tz = places[0].timezone if places else "UTC"
    head[5] = _tz_block(now, tz)
    payload: list[Any] = [None] * SEARCH_PAYLOAD_LEN
    payload[0] = head
    payload[1] = _map_view(viewport or WORLD)
    payload[7] = ei
    payload[38] = 0
    return payload


def place_page_payload(place: Place, now: datetime | None = None) -> list[Any]:
    """The place-page state of `place` (what `/maps/preview/place` and the page embed)."""
    now = now or datetime.now(UTC)
    b = place.business
    page: list[Any] = [None] * PLACE_PAGE_LEN
    page[1] = []
    page[4] = _map_view(viewport_at(b.latitude, b.longitude, 17))
    page[6] = place_array(place, now)
    page[12] = page[6][0]
    page[13] = _ved(place, 13)
    # Google's envelope repeats the ids (signed decimal feature id, decimal CID) here; the
    # parser reads the CID from it when the data id is missing.
    spot: list[Any] = [None] * 13 + [
        [[[str(place.feature), str(place.cid)], place.kgmid, None,
          [round(b.latitude * 1e7), round(b.longitude * 1e7)]], 0, 0]
    ]  # fmt: skip
    page[25] = [[[2, "spotlit"]], None, None, [spot]]
    page[29] = f"{MAPS_BASE}/maps/vt/icon?name=assets/icons/poi/tactile/pinlet/{place.slug}.png"
    page[31] = _tz_block(now, place.timezone)
    return page


def to_json(payload: Any) -> str:
    """Compact JSON as Google sends it (non-ASCII kept)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def wrap_json(payload: Any, **extra: Any) -> dict[str, Any]:
    """Google's XHR envelope: `{"c": 0, "d": ")]}'\\n<payload>"}` (+ sandbox extras)."""
    return {"c": 0, "d": XSSI + to_json(payload), **extra}


class _Cached:
    """Places by data id and CID (built once per directory)."""

    def __init__(self, places: Sequence[Place]) -> None:
        self.places = list(places)

    @cached_property
    def by_data_id(self) -> dict[str, Place]:
        return {p.data_id: p for p in self.places}

    @cached_property
    def by_cid(self) -> dict[str, Place]:
        return {str(p.cid): p for p in self.places}

    @cached_property
    def by_place_id(self) -> dict[str, Place]:
        return {p.place_id: p for p in self.places}


PlaceLookup = _Cached
