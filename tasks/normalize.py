"""Stage `normalize`: raw spider records -> `Lead`s, or quarantine with the reasons.

A record is quarantined only when it cannot be a lead: the page could not be parsed, it has no
name, or nothing identifies the business (no address, phone or website). Everything else
survives, with `quality_flags` noting what could not be cleaned (e.g. an unparseable phone,
which keeps its raw form).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from sys import intern
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import phonenumbers
import pycountry
import tldextract
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.mongo import shared_store
from leadflow.settings import get_settings
from models.lead import EMAIL_PATTERN, WEEKDAYS, Lead, Quarantined, utcnow
from models.taxonomy import category_slug
from tasks.batching import paused_gc
from tasks.scrape import CrawlResult, FeedSlice

STAGE = "normalize"

# Names people write that pycountry does not know (local-language names, common short forms).
_COUNTRY_ALIASES = {
    "usa": "US",
    "u.s.a.": "US",
    "u.s.": "US",
    "united states of america": "US",
    "uk": "GB",
    "u.k.": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "great britain": "GB",
    "deutschland": "DE",
    "ελλάδα": "GR",
    "ελλαδα": "GR",
    "hellas": "GR",
    "españa": "ES",
    "italia": "IT",
    "österreich": "AT",
    "schweiz": "CH",
}
_US_STATES = frozenset(
    [
        "AL",
        "AK",
        "AZ",
        "AR",
        "CA",
        "CO",
        "CT",
        "DE",
        "DC",
        "FL",
        "GA",
        "HI",
        "ID",
        "IL",
        "IN",
        "IA",
        "KS",
        "KY",
        "LA",
        "ME",
        "MD",
        "MA",
        "MI",
        "MN",
        "MS",
        "MO",
        "MT",
        "NE",
        "NV",
        "NH",
        "NJ",
        "NM",
        "NY",
        "NC",
        "ND",
        "OH",
        "OK",
        "OR",
        "PA",
        "RI",
        "SC",
        "SD",
        "TN",
        "TX",
        "UT",
        "VT",
        "VA",
        "WA",
        "WV",
        "WI",
        "WY",
    ]
)
# Source extras kept as shown under `Lead.details` (Google Maps gives all of them).
DETAIL_FIELDS = (
    "plus_code", "plus_code_global", "timezone", "price_range", "price_range_text",
    "reviews_per_rating", "reviews_link", "thumbnail", "owner", "order_online",
    "credit_cards", "accepts_credit_cards", "phone_international", "borough",
)  # fmt: skip
# Below this a feed is normalised in-process: forking costs more than it saves.
_PARALLEL_MIN_BYTES = 4 * 1024 * 1024
_SLICES_PER_WORKER = 8
_EMAIL_RE = re.compile(rf"^{EMAIL_PATTERN}$")


@dataclass
class NormalizeResult:
    leads: list[Lead] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {"normalized": len(self.leads), "quarantined": len(self.quarantined)}


def clean_text(value: Any) -> str | None:
    """Collapse runs of whitespace; empty becomes None."""
    if value is None:
        return None
    return " ".join(str(value).split()) or None


@lru_cache(maxsize=4096)
def country_code(value: str | None) -> str | None:
    """ISO 3166-1 alpha-2 code for a country name or code as shown; None if unknown."""
    if not value:
        return None
    key = value.strip().casefold()
    if key in _COUNTRY_ALIASES:
        return _COUNTRY_ALIASES[key]
    try:
        return pycountry.countries.lookup(key).alpha_2
    except LookupError:
        return None


@lru_cache(maxsize=200_000)
def parse_phone(raw: str, region: str) -> str | None:
    """E.164 for a phone as shown, read in the lead's region; None when it is not a valid number."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=4)
def _domain_extractor(extra_suffixes: tuple[str, ...]) -> tldextract.TLDExtract:
    # The bundled Public Suffix List snapshot: no network at run time (the machine may have none).
    return tldextract.TLDExtract(suffix_list_urls=(), extra_suffixes=list(extra_suffixes))


def _extra_suffixes() -> tuple[str, ...]:
    # The sandbox's business sites live under the reserved `.test` TLD; treat it as a public
    # suffix there so `artsdeli.test` is a registered domain, as `artsdeli.com` would be.
    return ("test",) if get_settings().sandbox else ()


def normalize_website(raw: str | None) -> str | None:
    text = clean_text(raw)
    if not text or " " in text or "." not in text:
        return None
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    path = parts.path if parts.path not in ("", "/") else ""
    return urlunsplit((parts.scheme, parts.netloc.lower(), path, parts.query, ""))


@lru_cache(maxsize=200_000)
def registered_domain(url: str, extra_suffixes: tuple[str, ...] = ()) -> str | None:
    host = urlsplit(url).hostname
    if not host:
        return None
    result = _domain_extractor(extra_suffixes)(host)
    return result.top_domain_under_public_suffix or None


def _as_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(str(value).replace(",", "."))
    except ValueError:
        return None


def _as_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(float(str(value).replace(",", "")))
    except ValueError:
        return None


def _categories(raw: dict[str, Any]) -> list[str]:
    shown = raw.get("categories") or []
    if isinstance(shown, str):
        shown = [part for part in shown.split(",")]
    values = [clean_text(c) for c in (*shown, raw.get("category"))]
    return list(dict.fromkeys(v for v in values if v))


def _open_hours(value: Any) -> dict[str, list[str]] | None:
    if not isinstance(value, dict):
        return None
    # The same few strings ("9 AM-5 PM", "Closed") recur on most leads: one copy each.
    hours = {
        day: [
            intern(str(v)) for v in (value[day] if isinstance(value[day], list) else [value[day]])
        ]
        for day in WEEKDAYS
        if value.get(day) is not None
    }
    return hours or None


def _shared(value: Any) -> str | None:
    """`clean_text` for values that repeat across a batch (city, state, status): interned."""
    text = clean_text(value)
    return intern(text) if text else None


def _source_id(raw: dict[str, Any]) -> str:
    for key in ("source_id", "place_id", "cid", "url"):
        if raw.get(key):
            return str(raw[key])
    # Nothing the source calls an id: a content hash keeps re-runs stable.
    payload = json.dumps(raw, sort_keys=True, default=str).encode()
    return "sha1:" + hashlib.sha1(payload).hexdigest()


def normalize_record(
    raw: dict[str, Any], *, run_id: str | None, default_region: str | None = None
) -> Lead | Quarantined:
    """One raw record -> a Lead, or a Quarantined record with every reason it cannot be one."""
    source = _shared(raw.get("source")) or "unknown"
    if raw.get("parse_error"):
        return Quarantined(
            run_id=run_id,
            stage=STAGE,
            source=source,
            payload=raw,
            reasons=[f"page could not be parsed: {raw['parse_error']}"],
        )

    flags: list[str] = []
    name = clean_text(raw.get("name"))
    state = _shared(raw.get("state"))
    country = country_code(clean_text(raw.get("country")))
    if raw.get("country") and country is None:
        flags.append(f"unknown country: {raw['country']!r}")
    if country is None and state and state.upper() in _US_STATES:
        country = "US"
    address = {
        "full": clean_text(raw.get("address")),
        "street": clean_text(raw.get("street")),
        "city": _shared(raw.get("city")),
        "postal_code": clean_text(raw.get("postal_code")),
        "state": state,
        "country": country,
    }
    if address["full"] is None and address["street"]:
        parts = ("street", "city", "postal_code", "state")
        address["full"] = ", ".join(address[p] for p in parts if address[p])

    phone_raw = clean_text(raw.get("phone"))
    region = country or default_region or get_settings().default_region
    phone = parse_phone(phone_raw, region) if phone_raw else None
    if phone_raw and phone is None:
        flags.append(f"unparseable phone: {phone_raw!r}")

    website = normalize_website(raw.get("website"))
    if raw.get("website") and website is None:
        flags.append(f"unusable website: {raw['website']!r}")
    domain = registered_domain(website, _extra_suffixes()) if website else None

    reasons = []
    if not name:
        reasons.append("missing name")
    if not (address["full"] or phone_raw or website):
        reasons.append("nothing identifies the business: no address, phone or website")
    if reasons:
        return Quarantined(run_id=run_id, stage=STAGE, source=source, payload=raw, reasons=reasons)
    assert name is not None  # for the type checker: guarded by the reasons above

    location = None
    lat, lng = _as_float(raw.get("latitude")), _as_float(raw.get("longitude"))
    if lat is not None and lng is not None:
        if -90 <= lat <= 90 and -180 <= lng <= 180:
            location = {"type": "Point", "coordinates": (lng, lat)}
        else:
            flags.append(f"coordinates out of range: {lat}, {lng}")

    rating = _as_float(raw.get("rating"))
    if rating is not None and not 0 <= rating <= 5:
        flags.append(f"rating out of range: {rating}")
        rating = None
    review_count = _as_int(raw.get("review_count"))
    if review_count is not None and review_count < 0:
        flags.append(f"negative review count: {review_count}")
        review_count = None

    emails: list[str] = []
    for value in raw.get("emails") or []:
        text = (clean_text(value) or "").lower().removeprefix("mailto:")
        if _EMAIL_RE.match(text):
            if text not in emails:
                emails.append(text)
        elif text:
            flags.append(f"malformed email: {text!r}")

    categories = _categories(raw)
    now = utcnow()
    # One validation of a plain dict: several times faster than building each sub-model.
    return Lead.model_validate(
        {
            "name": name,
            "categories": categories,
            "category": category_slug(tuple(categories)),
            "address": address,
            "location": location,
            "phone": phone,
            "phone_raw": phone_raw,
            "website": website,
            "domain": domain,
            "emails": [{"value": e, "source": source} for e in emails],
            "best_email": emails[0] if emails else None,
            "rating": rating,
            "review_count": review_count,
            "open_hours": _open_hours(raw.get("open_hours")),
            "business_status": _shared(raw.get("business_status")),
            "details": {k: raw[k] for k in DETAIL_FIELDS if raw.get(k) not in (None, "", [], {})}
            or None,
            "sources": [
                {
                    "source": source,
                    "source_id": _source_id(raw),
                    "place_id": clean_text(raw.get("place_id")),
                    "cid": clean_text(raw.get("cid")),
                    "data_id": clean_text(raw.get("data_id")),
                    "url": clean_text(raw.get("url")),
                    "seen_at": now,
                    "run_id": run_id,
                }
            ],
            "last_seen": now,
            "run_ids": [run_id] if run_id else [],
            "quality_flags": flags,
        }
    )


def normalize_records(
    records: Iterable[Any], *, run_id: str | None, default_region: str | None = None
) -> NormalizeResult:
    """A whole batch: every record ends up either a lead or a quarantined record."""
    result = NormalizeResult()
    region = default_region or get_settings().default_region
    with paused_gc():
        for raw in records:
            outcome = (
                normalize_record(raw, run_id=run_id, default_region=region)
                if isinstance(raw, dict)
                else Quarantined(
                    run_id=run_id,
                    stage=STAGE,
                    payload={"value": repr(raw)},
                    reasons=[f"record is a {type(raw).__name__}, not an object"],
                )
            )
            if isinstance(outcome, Lead):
                result.leads.append(outcome)
            else:
                result.quarantined.append(outcome)
    return result


def _normalize_slice(part: FeedSlice, run_id: str | None, region: str) -> NormalizeResult:
    return normalize_records(part.records(), run_id=run_id, default_region=region)


def _take(counter: Synchronized) -> int:
    with counter.get_lock():
        index = int(counter.value)
        counter.value += 1
    return index


def _slice_file(folder: str, index: int) -> Path:
    return Path(folder) / f"slice-{index}.pickle"


def _normalize_slices_to_files(
    parts: Sequence[FeedSlice], counter: Synchronized, run_id: str | None, region: str, folder: str
) -> None:
    """A worker: takes slices until none are left, pickling each result to its own file.

    Files, not a pipe: a pipe is drained by the flow-run process between its own records,
    which stalls a worker for seconds on megabytes. Pickled with the collector paused, which
    halves the time for thousands of fresh leads; renamed into place once complete.
    """
    while (index := _take(counter)) < len(parts):
        result = _normalize_slice(parts[index], run_id, region)
        target = _slice_file(folder, index)
        with paused_gc(), target.with_suffix(".partial").open("wb") as out:
            pickle.dump(result, out, protocol=pickle.HIGHEST_PROTOCOL)
        target.with_suffix(".partial").rename(target)


def normalize_feeds(
    crawls: Sequence[CrawlResult],
    *,
    run_id: str | None,
    default_region: str | None = None,
    workers: int | None = None,
) -> NormalizeResult:
    """Normalise the crawls' feeds; a large feed is cut into slices normalised in parallel.

    The result is the same, in the same order, as normalising the feeds record by record.
    The flow-run process and forked workers take the next slice from one shared counter until
    none are left, which balances by itself the workers' extra cost (pickling their leads:
    ~30 us each, against ~85 us to normalise one) and the flow-run process's (unpickling
    them: ~17 us). A slice a worker did not deliver (it died) is normalised here.
    """
    region = default_region or get_settings().default_region
    workers = workers or get_settings().normalize_workers or os.cpu_count() or 1
    feed_bytes = sum(c.items_path.stat().st_size for c in crawls if c.items_path.exists())
    if workers < 2 or feed_bytes < _PARALLEL_MIN_BYTES or "fork" not in get_all_start_methods():
        records = (record for crawl in crawls for record in crawl.records())
        return normalize_records(records, run_id=run_id, default_region=region)

    # Several slices per process, in proportion to each feed's size.
    share = _SLICES_PER_WORKER * workers / feed_bytes
    parts = [
        part
        for crawl in crawls
        if crawl.items_path.exists()
        for part in crawl.slices(max(1, round(share * crawl.items_path.stat().st_size)))
    ]
    # Fork: the workers start in milliseconds with everything imported and the settings read
    # (and inherit the shared counter), and run only the pure functions above.
    context = get_context("fork")
    counter = context.Value("i", 0)
    done: dict[int, NormalizeResult] = {}
    with tempfile.TemporaryDirectory(prefix="leadflow-normalize-") as folder:
        helpers = [
            context.Process(
                target=_normalize_slices_to_files,
                args=(parts, counter, run_id, region, folder),
                name=f"leadflow-normalize-{number}",
                daemon=True,
            )
            for number in range(1, workers)
        ]
        for helper in helpers:
            helper.start()
        with paused_gc():
            while (index := _take(counter)) < len(parts):
                done[index] = _normalize_slice(parts[index], run_id, region)
                # Unpickle what the workers finished meanwhile, so this process's share of
                # the work stays in the balance and little is left to load at the end.
                done.update(_load_finished(folder, done))
            for helper in helpers:
                helper.join()
            done.update(_load_finished(folder, done))
            result = NormalizeResult()
            for index, part in enumerate(parts):
                # A slice no worker delivered (one died): normalised here, nothing lost.
                part_result = done.pop(index, None) or _normalize_slice(part, run_id, region)
                result.leads.extend(part_result.leads)
                result.quarantined.extend(part_result.quarantined)
    return result


def _load_finished(folder: str, done: dict[int, NormalizeResult]) -> dict[int, NormalizeResult]:
    loaded: dict[int, NormalizeResult] = {}
    for path in Path(folder).glob("slice-*.pickle"):
        index = int(path.stem.removeprefix("slice-"))
        if index not in done:
            with path.open("rb") as handle:
                loaded[index] = pickle.load(handle)
            path.unlink()
    return loaded


@task(name="normalize", cache_policy=NO_CACHE, persist_result=False)
def normalize_task(crawls: list[CrawlResult], run_id: str) -> list[Lead]:
    """Normalise every crawl's feed, streamed from the run folder; records that cannot be
    leads go to quarantine with reasons."""
    result = normalize_feeds(crawls, run_id=run_id)
    store = shared_store()
    store.quarantine(result.quarantined)
    store.record_stage(run_id, STAGE, result.counts)
    if result.quarantined:
        get_run_logger().warning(
            "%d of %d records quarantined (see GET /runs/%s/quarantine)",
            len(result.quarantined), len(result.leads) + len(result.quarantined), run_id,
        )  # fmt: skip
    return result.leads
