"""Google Maps payload parser: pure functions on the JSON Google serves, no Scrapy.

Google Maps ships places as positional JSON arrays (no field names). Three shapes are read:

- the place array itself (the "darray"), where each field sits at a fixed index path;
- a search-results payload (what a Maps search returns once the `)]}'` guard is cut): a list
  whose `[0][1]` holds the results, each result's place array at index 14 (the first entry is
  search metadata, not a place);
- a place-page state (the JSON behind one place page): a list whose element 6 is the place array.

The index paths follow those public scrapers document (gosom/google-maps-scraper's
`EntryFromJSON` / `ParseSearchResults`) and were checked one by one against the fixtures in
tests/fixtures/google_maps. Every read goes through `dig`, so a missing or oddly shaped part
yields None, never an exception; only a payload that is not Google's format at all raises
`NotGoogleMapsPayload`.

Values are kept as the payload shows them, in the searcher's language (Greek categories stay
Greek); the exceptions are the `open_hours` keys, which are always English weekday names, and
narrow/no-break spaces, which become plain spaces (Google puts U+202F before "AM"/"PM").

Each record has the keys of `spiders.items.RAW_FIELDS` first (so a spider can yield it as is),
then Google-specific extras (`FIELDS` lists them all).

Command line: `python -m spiders.google_maps.parse FILE...` prints one JSON object per place.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import unicodedata
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from openlocationcode import openlocationcode as olc

SOURCE = "google_maps"
WEEKDAYS: tuple[str, ...] = (
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
)  # fmt: skip

# Mirror of spiders.items.RAW_FIELDS: importing that module would import Scrapy, which this
# parser must not need. tests/test_google_maps_parse.py fails if the two drift apart.
_RAW_FIELDS: tuple[str, ...] = (
    "source", "source_id", "url", "name", "category", "categories", "address", "street",
    "city", "postal_code", "state", "country", "phone", "website", "emails", "rating",
    "review_count", "latitude", "longitude", "open_hours", "business_status", "place_id",
    "cid", "data_id", "parse_error",
)  # fmt: skip
EXTRA_FIELDS: tuple[str, ...] = (
    "borough",
    "plus_code",  # as shown, e.g. "M2CR+6X Λεμεσός"
    "plus_code_global",  # full 10-digit Open Location Code, e.g. "8G6MM2CR+6X"
    "phone_international",  # the "+357 25 101555" form when the payload has it
    "reviews_per_rating",  # {"1": n, ..., "5": n}
    "reviews_link",
    "timezone",
    "price_range",  # as shown: "€€", "$"
    "price_range_text",  # as shown: "Moderately expensive"
    "status",  # the open-now line as shown: "Open ⋅ Closes 8:30 PM"
    "thumbnail",
    "owner",  # {"id", "name", "link"}
    "order_online",  # [{"source", "name", "link"}]
    "credit_cards",  # card brands listed under Payments, e.g. ["MasterCard", "VISA"]
    "accepts_credit_cards",
)
FIELDS: tuple[str, ...] = _RAW_FIELDS + EXTRA_FIELDS

_DATA_ID = re.compile(r"^0x([0-9a-fA-F]+):0x([0-9a-fA-F]+)$")
_XSSI = ")]}'"
# Some payloads (raw2.json) carry strings JSON-escaped twice: "placeid\u003dChIJ..." arrives
# with a literal backslash-u after json.loads.
_ESCAPED_UNICODE = re.compile(r"\\u([0-9a-fA-F]{4})")
_ODD_SPACES = str.maketrans({"\u202f": " ", "\u00a0": " ", "\u2009": " ", "\u2007": " "})

# Weekday names as Google shows them in common UI languages. Used only when a day row has no
# date or numeric index (both language-independent); compared after _fold().
_WEEKDAY_NAMES: dict[str, tuple[str, ...]] = {
    "Monday": ("monday", "δευτέρα", "montag", "lundi", "lunes", "lunedì", "segunda-feira",
               "maandag"),
    "Tuesday": ("tuesday", "τρίτη", "dienstag", "mardi", "martes", "martedì", "terça-feira",
                "dinsdag"),
    "Wednesday": ("wednesday", "τετάρτη", "mittwoch", "mercredi", "miércoles", "mercoledì",
                  "quarta-feira", "woensdag"),
    "Thursday": ("thursday", "πέμπτη", "donnerstag", "jeudi", "jueves", "giovedì",
                 "quinta-feira", "donderdag"),
    "Friday": ("friday", "παρασκευή", "freitag", "vendredi", "viernes", "venerdì", "sexta-feira",
               "vrijdag"),
    "Saturday": ("saturday", "σάββατο", "samstag", "sonnabend", "samedi", "sábado", "sabato",
                 "zaterdag"),
    "Sunday": ("sunday", "κυριακή", "sonntag", "dimanche", "domingo", "domenica", "zondag"),
}  # fmt: skip

# Closure notices Google shows in the status line, per language (compared after _fold()).
_PERMANENTLY_CLOSED = (
    "permanently closed", "μόνιμα κλειστό", "οριστικά κλειστό", "dauerhaft geschlossen",
    "endgültig geschlossen", "définitivement fermé", "fermé définitivement",
    "cerrado permanentemente", "cerrado definitivamente", "chiuso definitivamente",
    "chiuso permanentemente", "permanentemente chiuso",
)  # fmt: skip
_TEMPORARILY_CLOSED = (
    "temporarily closed", "προσωρινά κλειστό", "vorübergehend geschlossen",
    "temporairement fermé", "fermé temporairement", "cerrado temporalmente",
    "chiuso temporaneamente", "temporaneamente chiuso",
)  # fmt: skip


class NotGoogleMapsPayload(ValueError):
    """The JSON is not one of the Google Maps shapes this module reads."""


# --- safe access -------------------------------------------------------------------------


def dig(node: Any, *path: int) -> Any:
    """`node[p0][p1]...`, or None as soon as a step is missing or not a list.

    Google's arrays are positional and vary between places, languages and rollouts, so every
    read must tolerate a shorter list, a null, or a scalar where a list was expected.
    """
    for index in path:
        if not isinstance(node, list) or not 0 <= index < len(node):
            return None
        node = node[index]
    return node


def _items(node: Any, *path: int) -> list[Any]:
    """The list at `path`, or [] when it is missing or not a list (safe to iterate)."""
    value = dig(node, *path)
    return value if isinstance(value, list) else []


def _clean(value: Any) -> str | None:
    """A string as shown, unescaped and with odd spaces made plain; None if not a string/empty."""
    if not isinstance(value, str):
        return None
    if "\\u" in value:
        value = _ESCAPED_UNICODE.sub(lambda m: chr(int(m.group(1), 16)), value)
        # A doubly-escaped emoji arrives as two surrogate halves: rejoin them.
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    value = value.translate(_ODD_SPACES).strip()
    return value or None


def _str(node: Any, *path: int) -> str | None:
    return _clean(dig(node, *path))


def _number(node: Any, *path: int) -> float | None:
    value = dig(node, *path)
    # bool is an int subclass; Google uses 0/1 flags next to real numbers.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too big for a float
        return None
    # json.loads accepts NaN/Infinity; neither is a coordinate, rating or count.
    return number if math.isfinite(number) else None


def _int(node: Any, *path: int) -> int | None:
    value = _number(node, *path)
    return int(value) if value is not None and value == int(value) else None


def _fold(text: str) -> str:
    """Case- and accent-insensitive form, so "ΔΕΥΤΕΡΑ" and "Δευτέρα" compare equal."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip()


_DAY_BY_NAME: dict[str, str] = {
    _fold(name): day for day, names in _WEEKDAY_NAMES.items() for name in names
}


# --- field extractors ----------------------------------------------------------------------


def _cid(data_id: str | None, envelope: Any) -> str | None:
    """The decimal CID: the second half of the data id ("0x…:0x<cid in hex>").

    The place-page state also carries it as a string at [25][3][0][13][0][0][1]; that is the
    fallback when the data id is missing.
    """
    match = _DATA_ID.match(data_id or "")
    if match:
        return str(int(match.group(2), 16))
    fallback = _str(envelope, 25, 3, 0, 13, 0, 0, 1)
    return fallback if fallback and fallback.isdigit() else None


def _address(darray: list[Any], name: str | None) -> str | None:
    """Full address as shown, without the business name Google prefixes at index 18."""
    shown = _str(darray, 39)
    if shown:
        return shown
    with_name = _str(darray, 18)
    if with_name and name and with_name.startswith(name + ","):
        with_name = with_name[len(name) + 1 :].strip() or None
    if with_name:
        return with_name
    lines = [line for line in (_clean(x) for x in _items(darray, 2)) if line]
    return ", ".join(lines) or None


def _day_of(row: list[Any]) -> str | None:
    """English weekday of one opening-hours row, from the most language-proof evidence.

    Place rows ([34][1]) carry the row's date as "YYYY-MM-DD" at [4]; search rows ([203][0])
    carry [y, m, d] at [2] and an ISO day number (1 = Monday) at [1]. The shown day name is the
    last resort, since it is in the searcher's language.
    """
    iso = dig(row, 4)
    if isinstance(iso, str):
        try:
            return WEEKDAYS[date.fromisoformat(iso[:10]).weekday()]
        except ValueError:
            pass
    ymd = dig(row, 2)
    if isinstance(ymd, list) and len(ymd) >= 3 and all(isinstance(x, int) for x in ymd[:3]):
        try:
            return WEEKDAYS[date(ymd[0], ymd[1], ymd[2]).weekday()]
        except (ValueError, OverflowError):
            pass
    number = dig(row, 1)
    if isinstance(number, int) and not isinstance(number, bool) and 1 <= number <= 7:
        return WEEKDAYS[number - 1]
    name = _str(row, 0)
    if name:
        # Holiday rows may read "Monday (Labour Day)": the day is the first part.
        return _DAY_BY_NAME.get(_fold(name.split("(")[0]))
    return None


def _hours_texts(row: list[Any]) -> list[str] | None:
    texts = dig(row, 1)
    if isinstance(texts, list):
        shown = [t for t in (_clean(x) for x in texts) if t]
        if shown:
            return shown
    # Search-result rows: [3] is a list of [text, [open], [close]].
    periods = dig(row, 3)
    if isinstance(periods, list):
        shown = [t for t in (_str(p, 0) for p in periods) if t]
        if shown:
            return shown
    return None


def _open_hours(darray: list[Any]) -> dict[str, list[str]] | None:
    rows = dig(darray, 34, 1)
    if not isinstance(rows, list):
        rows = dig(darray, 203, 0)
    if not isinstance(rows, list):
        return None
    hours: dict[str, list[str]] = {}
    for row in rows:
        if not isinstance(row, list):
            continue
        day, texts = _day_of(row), _hours_texts(row)
        if day and texts and day not in hours:
            hours[day] = texts
    return {day: hours[day] for day in WEEKDAYS if day in hours} or None


def _status_texts(darray: list[Any]) -> list[str]:
    texts = [_str(darray, 34, 4, 4), _str(darray, 203, 1, 4, 0)]
    return [t for t in texts if t]


def _business_status(status_texts: list[str], has_hours: bool) -> str | None:
    """Places API-style code (the directory spider uses the same), read from the status line.

    The payload has no closure flag known to be stable, but Google replaces the open-now line
    with "Permanently closed" / "Temporarily closed" (in the UI language) for closed places.
    A place showing hours or an open-now line is taken as operating; nothing shown gives None.
    """
    folded = [_fold(t) for t in status_texts]
    if any(_fold(p) in t for t in folded for p in _PERMANENTLY_CLOSED):
        return "CLOSED_PERMANENTLY"
    if any(_fold(p) in t for t in folded for p in _TEMPORARILY_CLOSED):
        return "CLOSED_TEMPORARILY"
    return "OPERATIONAL" if status_texts or has_hours else None


def _reviews_per_rating(darray: list[Any]) -> dict[str, int] | None:
    for path in ((175, 3), (52, 3)):
        counts = dig(darray, *path)
        if isinstance(counts, list) and len(counts) == 5:
            values = [_int(counts, i) for i in range(5)]
            if all(v is not None for v in values):
                return {str(stars): v for stars, v in zip(range(1, 6), values, strict=True)}
    return None


def _phone_international(darray: list[Any]) -> str | None:
    # [178][0][1] lists the shown variants as [text, kind]; kind 2 is the international form.
    for variant in _items(darray, 178, 0, 1):
        if dig(variant, 1) == 2:
            return _str(variant, 0)
    return None


def _owner(darray: list[Any]) -> dict[str, str | None] | None:
    owner_id, name = _str(darray, 57, 2), _str(darray, 57, 1)
    if not owner_id and not name:
        return None
    link = f"https://www.google.com/maps/contrib/{owner_id}" if owner_id else None
    return {"id": owner_id, "name": name, "link": link}


def _order_online(darray: list[Any]) -> list[dict[str, str | None]] | None:
    """Providers behind the "Order online" button.

    [75][0][k][2] lists one [[source, _, [logo, name]], [_, _, [link]]] per provider; scrapers
    have seen both k = 0 and k = 1 in use, so both are read (links deduplicated).
    """
    found: list[dict[str, str | None]] = []
    seen: set[str] = set()
    for k in (0, 1):
        for provider in _items(darray, 75, 0, k, 2):
            link = _str(provider, 1, 2, 0)
            if link and link not in seen:
                seen.add(link)
                found.append(
                    {"source": _str(provider, 0, 0), "name": _str(provider, 0, 2, 1), "link": link}
                )
    return found or None


def _payments(darray: list[Any]) -> tuple[list[str] | None, bool | None]:
    """(card brands, accepts credit cards) from the "payments" group of the About tab.

    The group and option ids ("payments", ".../pay_credit_card") are English in every UI
    language; labels are not. Card brands sit under pay_credit_card_types_accepted in
    [2][4][1] as groups of [[[id, _, brand, brand], ...], _, [flag]].
    """
    payments = next((g for g in _items(darray, 100, 1) if dig(g, 0) == "payments"), None)
    if payments is None:
        return None, None
    cards: list[str] = []
    accepts: bool | None = None
    for option in _items(payments, 2):
        option_id = dig(option, 0)
        if not isinstance(option_id, str):
            continue
        if option_id.endswith("/pay_credit_card_types_accepted"):
            for group in _items(option, 2, 4, 1):
                if dig(group, 2, 0) not in (None, 1):  # a group flagged other than "yes"
                    continue
                for card in _items(group, 0):
                    brand = _str(card, 2) or _str(card, 3)
                    if brand and brand not in cards:
                        cards.append(brand)
        elif option_id.endswith("/pay_credit_card"):
            flag = dig(option, 2, 1, 0, 0)
            if not isinstance(flag, int):
                flag = dig(option, 2, 0)
            if isinstance(flag, int) and not isinstance(flag, bool):
                accepts = flag == 1
    if cards and accepts is None:
        accepts = True
    return cards, accepts


def _thumbnail(darray: list[Any]) -> str | None:
    # [72][0] lists the header photos, each with its URL at [6][0]; the second is the larger.
    for path in ((72, 0, 1, 6, 0), (72, 0, 0, 6, 0)):
        url = _str(darray, *path)
        if url and url.startswith("http"):
            return url
    return None


def olc_encode(latitude: float, longitude: float) -> str:
    """The 10-digit Open Location Code ("plus code") of a point, e.g. "8G6MM2CR+22"."""
    return olc.encode(latitude, longitude)


def _place_url(cid: str | None, place_id: str | None, darray: list[Any]) -> str | None:
    # The CID link is stable and language-independent, so the same place gets the same URL
    # from a search payload and from its page; Google's own link ([27]) is the fallback.
    if cid:
        return f"https://maps.google.com/?cid={cid}"
    if place_id:
        return f"https://www.google.com/maps/place/?q=place_id:{place_id}"
    link = _str(darray, 27)
    return link if link and link.startswith("http") else None


def _record(darray: list[Any], envelope: Any = None) -> dict[str, Any]:
    """The record for one place array; `envelope` is the place-page state around it, if any."""
    name = _str(darray, 11)
    categories = [c for c in (_clean(x) for x in _items(darray, 13)) if c]
    data_id = _str(darray, 10) or _str(darray, 227, 0, 0)
    place_id = _str(darray, 78) or _str(darray, 227, 0, 4)
    cid = _cid(data_id, envelope)
    latitude = _number(darray, 9, 2)
    longitude = _number(darray, 9, 3)
    if latitude is None or longitude is None:
        latitude, longitude = _number(darray, 208, 0, 2), _number(darray, 208, 0, 3)
    country = _str(darray, 183, 1, 6) or _str(darray, 243)
    open_hours = _open_hours(darray)
    status_texts = _status_texts(darray)
    credit_cards, accepts_cards = _payments(darray)
    plus_code_global = _str(darray, 183, 2, 1, 0)
    if plus_code_global is None and latitude is not None and longitude is not None:
        plus_code_global = olc_encode(latitude, longitude)
    values: dict[str, Any] = {
        "source": SOURCE,
        "source_id": place_id or cid or data_id,
        "url": _place_url(cid, place_id, darray),
        "name": name,
        "category": categories[0] if categories else None,
        "categories": categories,
        "address": _address(darray, name),
        "street": _str(darray, 183, 1, 1) or _str(darray, 82, 1),
        "city": _str(darray, 183, 1, 3) or _str(darray, 82, 3),
        "postal_code": _str(darray, 183, 1, 4),
        "state": _str(darray, 183, 1, 5),
        "country": country,
        "phone": _str(darray, 178, 0, 0),
        "website": _str(darray, 7, 0),
        "emails": [],
        "rating": _number(darray, 4, 7),
        "review_count": _int(darray, 4, 8),
        "latitude": latitude,
        "longitude": longitude,
        "open_hours": open_hours,
        "business_status": _business_status(status_texts, open_hours is not None),
        "place_id": place_id,
        "cid": cid,
        "data_id": data_id,
        "parse_error": None,
        "borough": _str(darray, 183, 1, 0),
        "plus_code": _str(darray, 183, 2, 2, 0),
        "plus_code_global": plus_code_global,
        "phone_international": _phone_international(darray),
        "reviews_per_rating": _reviews_per_rating(darray),
        "reviews_link": _str(darray, 4, 3, 0),
        "timezone": _str(darray, 30),
        "price_range": _str(darray, 4, 2),
        "price_range_text": _str(darray, 4, 10),
        "status": status_texts[0] if status_texts else None,
        "thumbnail": _thumbnail(darray),
        "owner": _owner(darray),
        "order_online": _order_online(darray),
        "credit_cards": credit_cards,
        "accepts_credit_cards": accepts_cards,
    }
    return {key: values[key] for key in FIELDS}


# --- payload shapes -------------------------------------------------------------------------


def _is_place(node: Any) -> bool:
    """A place array: a data id "0x…:0x…" at [10], or a name at [11] with a place id at [78]."""
    if not isinstance(node, list) or len(node) <= 11:
        return False
    if isinstance(node[10], str) and _DATA_ID.match(node[10]):
        return True
    return isinstance(node[11], str) and isinstance(dig(node, 78), str)


def _is_place_page(payload: Any) -> bool:
    return isinstance(payload, list) and _is_place(dig(payload, 6))


def _search_items(payload: Any) -> list[Any] | None:
    """The results list of a search payload ([0] = [query, results, ...]), or None."""
    head = dig(payload, 0)
    if not isinstance(head, list) or not isinstance(dig(head, 0), str | None):
        return None
    items = dig(head, 1)
    if items is None and len(head) >= 2:
        return []  # a search that found nothing
    if not isinstance(items, list) or not all(isinstance(i, list | None) for i in items):
        return None
    places = [i for i in items if _is_place(dig(i, 14))]
    # The first entry is search metadata; more entries with no place among them is a shape
    # this parser does not know.
    if not places and len(items) > 1:
        return None
    return items


def _describe(payload: Any) -> str:
    if isinstance(payload, dict):
        keys = list(payload)[:5]
        return f"a JSON object with keys {keys}{'…' if len(payload) > 5 else ''}"
    if isinstance(payload, list):
        kinds = sorted({type(x).__name__ for x in payload[:20]})
        return f"a JSON list of {len(payload)} item(s) ({', '.join(kinds) or 'empty'})"
    return f"a JSON {type(payload).__name__}"


_EXPECTED_PLACE = (
    "a Google Maps place array (a JSON list with the name at index 11 and a data id "
    "like '0x14e732fd76f0d90d:0xe5415928d6702b47' at index 10)"
)
_EXPECTED_PAGE = "a Google Maps place-page state (a JSON list whose element 6 is the place array)"
_EXPECTED_SEARCH = (
    "a Google Maps search-results payload (a JSON list whose [0] is [query, results], "
    "each result holding the place array at index 14)"
)


def parse_place(payload: Any) -> dict[str, Any]:
    """One place array (the "darray") -> record. Raises NotGoogleMapsPayload if it is not one."""
    if not _is_place(payload):
        raise NotGoogleMapsPayload(f"expected {_EXPECTED_PLACE}; got {_describe(payload)}")
    return _record(payload)


def parse_place_page(payload: Any) -> dict[str, Any]:
    """A place-page state -> the record of its place."""
    if not _is_place_page(payload):
        raise NotGoogleMapsPayload(f"expected {_EXPECTED_PAGE}; got {_describe(payload)}")
    return _record(payload[6], envelope=payload)


def parse_search_results(payload: Any) -> list[dict[str, Any]]:
    """A search-results payload -> one record per place, in result order."""
    items = _search_items(payload)
    if items is None:
        raise NotGoogleMapsPayload(f"expected {_EXPECTED_SEARCH}; got {_describe(payload)}")
    return [_record(item[14]) for item in items if _is_place(dig(item, 14))]


def _strip_xssi(text: str) -> str:
    # Google prefixes JSON responses with )]}' (anti-XSSI guard) and a newline.
    text = text.lstrip("\ufeff").lstrip()
    return text[len(_XSSI) :].lstrip() if text.startswith(_XSSI) else text


def parse_payload(payload: Any) -> list[dict[str, Any]]:
    """Any supported payload (already JSON-decoded) -> records; detects which shape it is."""
    # The raw search response is {"c": 0, "d": ")]}'\n[...]"}: the payload is the string in "d".
    if isinstance(payload, dict) and isinstance(payload.get("d"), str):
        try:
            payload = json.loads(_strip_xssi(payload["d"]))
        except json.JSONDecodeError as exc:
            raise NotGoogleMapsPayload(f"the 'd' string is not JSON: {exc}") from None
    if _is_place_page(payload):
        return [parse_place_page(payload)]
    if _search_items(payload) is not None:
        return parse_search_results(payload)
    if _is_place(payload):
        return [parse_place(payload)]
    raise NotGoogleMapsPayload(
        f"not a Google Maps payload: expected {_EXPECTED_SEARCH}, {_EXPECTED_PAGE}, or "
        f"{_EXPECTED_PLACE}; got {_describe(payload)}"
    )


def parse_file(path: str | Path) -> list[dict[str, Any]]:
    """A saved payload file -> records. Raises NotGoogleMapsPayload naming the file."""
    path = Path(path)
    try:
        payload = json.loads(_strip_xssi(path.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotGoogleMapsPayload(f"{path}: not a Google Maps payload (not JSON: {exc})") from None
    except RecursionError:
        raise NotGoogleMapsPayload(f"{path}: not a Google Maps payload (nested too deep)") from None
    try:
        return parse_payload(payload)
    except NotGoogleMapsPayload as exc:
        raise NotGoogleMapsPayload(f"{path}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spiders.google_maps.parse",
        description="Print one JSON object per place found in Google Maps payload files.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", type=Path)
    args = parser.parse_args(argv)
    # Non-ASCII as is when the terminal takes UTF-8; \u escapes (still valid JSON) otherwise.
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    ensure_ascii = encoding != "utf8"
    status = 0
    for file in args.files:
        try:
            records = parse_file(file)
        except (NotGoogleMapsPayload, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
            continue
        for record in records:
            print(json.dumps(record, ensure_ascii=ensure_ascii))
    return status


if __name__ == "__main__":
    sys.exit(main())
