"""Stage `dedup`: one lead per business, within the batch and against the stored leads.

How a pair becomes a match
--------------------------
1. Blocking. Every lead gets stable, kind-prefixed keys (`blocking_keys`): source ids
   (`pid:`, `cid:`, `src:`), E.164 phone (`ph:`), registered domain (`dom:`), and area +
   house number + a street word (`ad:`) or + a distinctive name token (`nm:`). The decision
   below never merges without a shared listing id, phone or domain, or the same house number
   in the same area, so these keys find every pair it could accept while keeping blocks tiny
   (and the store's `$in` lookup returns near-duplicates, not every "Smith" in town). The
   store finds candidates by the same keys, so a later run finds what it duplicates.
   Oversized blocks (a chain's domain, a switchboard phone) are skipped or split by name.
2. Decision. A shared place_id / cid / (source, source_id) is the same listing: definitive.
   Otherwise the evidence is summed as log-odds and compared with `logit(threshold)`:
   the name decides (a weighted token Dice with fuzzy/abbreviated tokens; a name that only
   shares part of another, like "Grand Hotel" vs "Grand Hotel Rooftop Bar", scores low),
   phone, address and domain corroborate. The corroborating evidence is capped because a
   hotel and the bar inside it share all three; a name match without at least one of them
   never merges (two "Starbucks" in one city are branches, not duplicates).
3. Clusters. Matches are joined with union-find; each cluster is merged field by field into
   its oldest member (a stored lead beats the batch, the first batch occurrence beats later).

Only the task wrapper at the bottom uses Prefect; the engine (`dedup_leads`, `cluster_leads`)
is plain Python, so the same code runs in the tests, the `leadflow dedup` file command and
the API.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from rapidfuzz import fuzz
from rapidfuzz.distance import Indel

from leadflow.settings import get_settings
from models.lead import Lead, Review, SourceRecord, new_lead_id, utcnow
from models.taxonomy import OTHER
from tasks.batching import paused_gc

DEFAULT_THRESHOLD = 0.80

# --- text normalisation --------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Periods and apostrophes glue ("L.L.C." -> "llc", "Art's" -> "arts"); & and + are "and";
# everything else that is not a letter or digit separates tokens.
_NON_WORD = re.compile(r"[\W_]+")
_HOUSE = re.compile(r"^\d+[a-z]?$")

# Legal forms say nothing about which business it is ("Smith & Sons Plumbing LLC").
_LEGAL = _words(
    "llc inc incorporated ltd limited gmbh mbh corp corporation co company plc llp pllc lp pc "
    "sa sas sarl srl bv nv ag kg ohg ug oy ae oe ee ike epe "
    # Greek company forms (AE, OE, EE, IKE, EPE, MEPE) as they read after folding.
    "αε οε εε ικε επε μεπε"
)
_NAME_STOP = _words("the and of at a an und και ο η το οι τα του της των")  # noqa: RUF001
_NAME_DROP = _LEGAL | _NAME_STOP
_NAME_ABBR = {
    "bros": "brothers",
    "intl": "international",
    "assoc": "associates",
    "assocs": "associates",
    "svc": "service",
    "svcs": "services",
    "mgmt": "management",
    "ctr": "center",
    "centre": "center",
    "saint": "st",
    "mount": "mt",
    "fort": "ft",
    "dds": "dentist",
    "dr": "doctor",
}
# Words that say what a business does, not which one it is: they weigh less in the name
# similarity and never make a name blocking key on their own (a key like `nm:austin|hotel`
# would return every hotel in the city as a candidate).
_GENERIC = _words(
    """
    restaurant restaurants cafe coffee bar pub grill kitchen pizza pizzeria sushi deli
    delicatessen bakery diner bistro taverna tavern trattoria steakhouse food foods eatery
    hotel motel inn hostel resort suites lodge spa rooftop lounge club
    dental dentist dentistry orthodontics clinic medical family care center health healthcare
    pharmacy drugstore doctor doctors physician physicians
    law office offices firm attorney attorneys lawyer lawyers legal group associates partners
    services service solutions plumbing plumber plumbers electric electrical electrician
    heating cooling hvac roofing construction contractor contractors builders
    auto repair automotive garage mechanic salon hair barber barbershop beauty nails nail
    studio fitness gym yoga pilates store shop market boutique school academy realty real
    estate properties property insurance agency accounting accountants tax cpa consulting
    software tech design veterinary animal hospital pet
    εστιατοριο ταβερνα καφε καφετερια ξενοδοχειο φαρμακειο ιατρειο οδοντιατρειο
    """
)
_GENERIC_WEIGHT = 0.6
_WEIGHT = dict.fromkeys(_GENERIC, _GENERIC_WEIGHT)
# Name similarity of a name and the same name with words added (a venue, a sister business).
_EXTENSION_SIM = 0.8

_ADDR_ABBR = {
    "street": "st",
    "str": "st",
    "avenue": "ave",
    "av": "ave",
    "road": "rd",
    "boulevard": "blvd",
    "drive": "dr",
    "lane": "ln",
    "court": "ct",
    "place": "pl",
    "square": "sq",
    "highway": "hwy",
    "parkway": "pkwy",
    "terrace": "ter",
    "circle": "cir",
    "trail": "trl",
    "suite": "ste",
    "apartment": "apt",
    "building": "bldg",
    "floor": "fl",
    "room": "rm",
    "north": "n",
    "south": "s",
    "east": "e",
    "west": "w",
    "northeast": "ne",
    "northwest": "nw",
    "southeast": "se",
    "southwest": "sw",
    "saint": "st",
    "mount": "mt",
    "οδος": "οδ",
    "λεωφορος": "λεωφ",
    "πλατεια": "πλ",
    "leoforos": "leof",
    "strasse": "str",
}
_UNIT = _words("ste apt unit bldg fl rm")
_STREET_NOISE = _words(
    "n s e w ne nw se sw st ave rd blvd dr ln ct pl sq hwy pkwy ter cir trl way οδ λεωφ πλ"
)

# Pages on shared platforms: the registered domain is the platform's, not the business's.
_SHARED_DOMAINS = _words(
    """
    facebook.com fb.com instagram.com twitter.com x.com linkedin.com youtube.com tiktok.com
    google.com goo.gl business.site yelp.com tripadvisor.com foursquare.com linktr.ee
    wixsite.com wix.com squarespace.com wordpress.com blogspot.com weebly.com
    godaddysites.com square.site toasttab.com doordash.com ubereats.com grubhub.com
    opentable.com booking.com airbnb.com yellowpages.com
    """
)

# NANP toll-free prefixes: a chain often shares one across branches, so agreeing on it is
# weaker evidence than agreeing on a local number.
_TOLL_FREE = ("+1800", "+1833", "+1844", "+1855", "+1866", "+1877", "+1888")


class _AccentFold(dict[int, str]):
    """`str.translate` table: each character once through NFKD minus combining marks, cached.

    Per-character NFKD over whole strings costs several microseconds per Greek name; a table
    lookup in C costs almost nothing and gives the same result for the scripts we meet.
    """

    def __missing__(self, code: int) -> str:
        decomposed = unicodedata.normalize("NFKD", chr(code))
        folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
        self[code] = folded
        return folded


_ACCENT_FOLD = _AccentFold()


def _fold(text: str) -> str:
    """Case- and accent-insensitive form (Greek tonos, diaeresis, Latin accents)."""
    text = text.casefold()
    if text.isascii():
        return text
    return text.translate(_ACCENT_FOLD)


def _translation() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for code in range(128):
        char = chr(code)
        if not char.isalnum():
            table[code] = " "
    for char in ".'`\u2019\u2018\u00b4":
        table[ord(char)] = None
    table[ord("&")] = table[ord("+")] = " and "
    table[ord("#")] = " ste "
    return table


# One C-level pass does what three regex substitutions would: this runs 300k times per 100k
# leads, and it is most of the feature cost.
_TRANSLATE = _translation()


def _tokens(text: str | None) -> list[str]:
    if not text:
        return []
    text = _fold(text).translate(_TRANSLATE)
    if text.isascii():
        return text.split()
    return _NON_WORD.sub(" ", text).split()  # non-ASCII punctuation (Greek ano teleia, ...)


def _name_tokens(name: str | None) -> list[str]:
    raw = [_NAME_ABBR.get(t, t) for t in _tokens(name)]
    kept = [t for t in raw if t not in _NAME_DROP]
    # "The Company" would vanish entirely: then the words themselves are the name.
    return kept or raw


def _street_tokens(street: str | None) -> list[str]:
    """Address tokens with street words abbreviated and unit designators (+ their value) dropped."""
    out: list[str] = []
    skip_next = False
    for token in _tokens(street):
        token = _ADDR_ABBR.get(token, token)
        if token.endswith("strasse"):  # German compounds: Friedrichstraße / Friedrichstr.
            token = token[:-7] + "str"
        if skip_next:
            skip_next = False
            continue
        if token in _UNIT:
            skip_next = True
            continue
        out.append(token)
    return out


@lru_cache(maxsize=65_536)
def _compact(text: str | None) -> str:
    # Cities and postal codes repeat across a batch: cached.
    return "".join(_tokens(text))


@lru_cache(maxsize=65_536)
def _postal_numbers(postal_code: str) -> tuple[str, ...]:
    return tuple(t for t in _tokens(postal_code) if not t.isalpha())


# --- features --------------------------------------------------------------------------------


class _Features:
    """Everything the matcher needs from one lead, computed once (no pydantic in hot loops)."""

    __slots__ = (
        "city",
        "digits",
        "domain",
        "house",
        "ids",
        "keys",
        "name_c",
        "numbers",
        "phone",
        "street",
        "tokens",
        "toll_free",
        "weights",
        "wsum",
    )

    def __init__(self, lead: Lead) -> None:
        tokens = _name_tokens(lead.name)
        self.tokens: tuple[str, ...] = tuple(dict.fromkeys(tokens))
        self.weights: tuple[float, ...] = tuple([_WEIGHT.get(t, 1.0) for t in self.tokens])
        self.wsum = sum(self.weights)
        self.name_c = "".join(tokens)
        self.digits = "" if self.name_c.isalpha() else "".join(filter(str.isdigit, self.name_c))

        self.phone: str | None = lead.phone or None
        self.toll_free = bool(self.phone and self.phone.startswith(_TOLL_FREE))
        domain = (lead.domain or "").casefold() or None
        self.domain: str | None = None if domain in _SHARED_DOMAINS else domain

        address = lead.address
        street_tokens = _street_tokens(address.street or address.full)
        house = None
        for token in street_tokens:
            if token[0].isdigit() and _HOUSE.match(token):
                house = token
                break
        self.house: str | None = house
        numbers = [t for t in street_tokens if not t.isalpha()]
        if address.postal_code and address.street:
            numbers += _postal_numbers(address.postal_code)
        self.numbers = frozenset(numbers)
        self.street: str | None = " ".join(street_tokens) if len(street_tokens) >= 2 else None
        self.city: str | None = _compact(address.city) or None
        area = self.city or _compact(address.postal_code)

        ids: list[str] = []
        for src in lead.sources:
            if src.place_id:
                ids.append(f"pid:{src.place_id}")
            if src.cid:
                ids.append(f"cid:{src.cid}")
            if src.source and src.source_id:
                ids.append(f"src:{src.source}:{src.source_id}")
        self.ids: frozenset[str] = frozenset(ids)

        keys = list(dict.fromkeys(ids))
        if self.phone:
            keys.append(f"ph:{self.phone}")
        if self.domain:
            keys.append(f"dom:{self.domain}")
        if house:
            # Address corroboration needs the same house number in the same area, so the
            # address and name keys are scoped to both: blocks stay tiny, and the store's
            # `$in` lookup returns near-duplicates only, not every "Smith" in the city.
            for token in street_tokens:
                if token != house and not token.isdigit() and token not in _STREET_NOISE:
                    keys.append(f"ad:{area}|{house}|{token}")
                    break
            # Name tokens catch what a street typo ("Mian St") hides: at most two distinctive
            # ones, or the whole name when it is only generic words ("Pizza Restaurant").
            distinct = [t for t in self.tokens if t not in _GENERIC and len(t) >= 2][:2]
            if not distinct and self.name_c:
                distinct = [self.name_c[:40]]
            keys.extend(f"nm:{area}|{house}|{t}" for t in distinct)
        self.keys: list[str] = list(dict.fromkeys(keys))


def blocking_keys(lead: Lead) -> list[str]:
    """The lead's dedup candidate keys, kind-prefixed and stable across runs and processes."""
    return list(_Features(lead).keys)


# --- the match decision ------------------------------------------------------------------------

# Log-odds contributions. Tuned on the cases the issue lists (see tests/test_dedup.py):
# same business reformatted, hotel and its bar, chain branches, a business that moved.
_PRIOR = -1.5
_NAME_SLOPE = 25.0  # log-odds per unit of name similarity around the pivot
_NAME_PIVOT = 0.87  # name similarity that is, on its own, neutral evidence
_NAME_MAX = 3.0
_NAME_MIN = -10.0
_PHONE_SAME = 2.5
_PHONE_SAME_TOLL_FREE = 1.0
_PHONE_DIFF = -1.5
_DOMAIN_SAME = 1.0
_DOMAIN_DIFF = -1.5
_ADDR_SAME = 1.5
_ADDR_DIFF = -1.5
# A hotel and the restaurant inside it share phone, address and website: the sum of
# agreeing contact fields is capped so it cannot outvote a name that differs.
_CONTACT_CAP = 3.0


def _logit(threshold: float) -> float:
    p = min(max(threshold, 0.01), 0.99)
    return math.log(p / (1.0 - p))


def _token_sim(a: str, b: str) -> float:
    """Similarity of two name tokens that are not equal: abbreviation or typo, else 0."""
    if not (a.isalpha() and b.isalpha()):
        return 0.0  # "Studio 54" vs "Studio 45": numbers must agree exactly
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    if len(short) >= 4 and long_.startswith(short):
        return 0.9  # "deli" / "delicatessen", "auto" / "automotive"
    if len(short) >= 4:
        sim = Indel.normalized_similarity(a, b)
        if sim >= 0.8:  # one transposition or a missing letter in a 5+ letter word
            return sim
    return 0.0


def _name_similarity(a: _Features, b: _Features) -> float:
    """Weighted token Dice: shared tokens over all tokens, so extra words lower the score.

    A name that is another name plus more words ("Grand Hotel Austin" / "Grand Hotel Austin
    Spa", "Sakura Sushi at Grand Hotel") is a venue inside it or a sister business, not a
    reformatted listing: capped at `_EXTENSION_SIM` however long the shared part is.
    """
    if a.name_c == b.name_c:
        return 1.0 if a.name_c else 0.0
    if not a.tokens or not b.tokens:
        return 0.0
    weight_b = dict(zip(b.tokens, b.weights, strict=True))
    matched = 0.0
    rest_a: list[tuple[str, float]] = []
    for token, weight in zip(a.tokens, a.weights, strict=True):
        if token in weight_b:
            matched += weight
            del weight_b[token]
        else:
            rest_a.append((token, weight))
    unmatched_a = 0
    for token, weight in rest_a:
        best, best_sim = None, 0.0
        for other in weight_b:
            sim = _token_sim(token, other)
            if sim > best_sim:
                best, best_sim = other, sim
        if best is None:
            unmatched_a += 1
        else:
            matched += best_sim * (weight + weight_b.pop(best)) / 2.0
    dice = 2.0 * matched / (a.wsum + b.wsum)
    if (unmatched_a == 0) != (not weight_b):
        return min(dice, _EXTENSION_SIM)  # one side has words the other lacks entirely
    if dice < 0.9 and abs(len(a.name_c) - len(b.name_c)) <= 2 and a.digits == b.digits:
        # A typo or a spacing difference ("Smtih Plumbing", "Smithand Sons") costs a token
        # but only a character or two. The length guard keeps "Grand Hotel Spa" (3 more
        # letters) out, the digit guard "Studio 54" / "Studio 45".
        chars = fuzz.ratio(a.name_c, b.name_c) / 100.0
        if chars >= 0.9:
            return max(dice, chars)
    return dice


def _address_similarity(a: _Features, b: _Features) -> float | None:
    """0-1 when both addresses can be compared, None when either is unknown."""
    if a.city and b.city and a.city != b.city:
        return 0.0
    if not (a.street and b.street and a.house and b.house):
        return None
    if a.house != b.house:
        return 0.0
    # Every number one address has (house, postal code, "N1 7GU") must be in the other, or
    # "Ermou 69, 112 88" and "Ermou 69, 113 88" would be one place. A missing postal code
    # (street only vs full line) is fine: subset, not equality.
    small, large = (
        (a.numbers, b.numbers) if len(a.numbers) <= len(b.numbers) else (b.numbers, a.numbers)
    )
    if not small <= large:
        return 0.0
    # token_set_ratio: "123 main st" is a subset of "123 main st austin tx 78701".
    return fuzz.token_set_ratio(a.street, b.street) / 100.0


def _pair_log_odds(a: _Features, b: _Features, cut: float) -> float:
    """Log-odds that two leads are one business; -inf when evidence can never reach `cut`."""
    if a.ids and not a.ids.isdisjoint(b.ids):
        return math.inf  # the same listing id: definitive
    # Contact evidence first: it is cheap, and without any agreement the pair cannot match
    # (a name alone, plus a city, never merges: a chain's branches share names).
    contact = 0.0
    against = 0.0
    if a.phone and b.phone:
        if a.phone == b.phone:
            contact += _PHONE_SAME_TOLL_FREE if a.toll_free else _PHONE_SAME
        else:
            against += _PHONE_DIFF
    if a.domain and b.domain:
        if a.domain == b.domain:
            contact += _DOMAIN_SAME
        else:
            against += _DOMAIN_DIFF
    address = _address_similarity(a, b)
    if address is not None:
        if address >= 0.9:
            contact += _ADDR_SAME
        elif address < 0.75:
            against += _ADDR_DIFF  # another house number, street or city
    if contact == 0.0:
        return -math.inf
    base = _PRIOR + min(contact, _CONTACT_CAP) + against
    if base + _NAME_MAX < cut:
        return -math.inf  # even identical names would not be enough
    name_sim = _name_similarity(a, b)
    return base + min(_NAME_MAX, max(_NAME_MIN, _NAME_SLOPE * (name_sim - _NAME_PIVOT)))


def match_probability(a: Lead, b: Lead) -> float:
    """Probability-like score (0-1) that two leads are the same business; 1.0 for shared ids."""
    log_odds = _pair_log_odds(_Features(a), _Features(b), -math.inf)
    if log_odds == math.inf:
        return 1.0
    if log_odds == -math.inf:
        return 0.0
    return 1.0 / (1.0 + math.exp(-log_odds))


# --- blocking and clustering ---------------------------------------------------------------------

# Largest block compared pairwise. A phone or address shared by more leads than this is split
# by the first name token; a domain shared by more is a chain and its domain proves nothing.
_BLOCK_CAP = 50
_DEFINITIVE = ("pid:", "cid:", "src:")


class _UnionFind:
    __slots__ = ("parent",)

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:  # path compression
            parent[i], i = root, parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            # The smaller index (the older lead) stays the root: deterministic clusters.
            if ri < rj:
                self.parent[rj] = ri
            else:
                self.parent[ri] = rj


def _cluster(feats: Sequence[_Features], first_new: int, threshold: float) -> _UnionFind:
    """Union-find over `feats`; indices below `first_new` are stored leads, never paired alone."""
    n = len(feats)
    uf = _UnionFind(n)
    cut = _logit(threshold)
    seen: set[int] = set()

    def compare(i: int, j: int) -> None:
        if i == j or (i < first_new and j < first_new):
            return  # stored leads are merged only through a batch lead that matches both
        if i > j:
            i, j = j, i
        pair = i * n + j
        if pair in seen:
            return
        seen.add(pair)
        if uf.find(i) == uf.find(j):
            return
        if _pair_log_odds(feats[i], feats[j], cut) >= cut:
            uf.union(i, j)

    blocks: dict[str, list[int]] = defaultdict(list)
    for idx, feat in enumerate(feats):
        for key in feat.keys:
            blocks[key].append(idx)

    scored: list[tuple[str, list[int]]] = []
    for key, members in blocks.items():
        if len(members) < 2 or members[-1] < first_new:
            continue  # singletons and all-stored blocks hold no new pair
        if key.startswith(_DEFINITIVE):
            # A shared listing id is definitive: everyone in the block is one business.
            # Done first, so a re-seen listing is not scored again against its stored twin.
            for other in members[1:]:
                uf.union(members[0], other)
        else:
            scored.append((key, members))

    for key, members in scored:
        if len(members) > _BLOCK_CAP:
            if key.startswith("dom:"):
                continue  # a chain: its branches are found (or not) by phone and address
            # A switchboard number or a mall's address: only similar names can match.
            groups: dict[str, list[int]] = defaultdict(list)
            for idx in members:
                groups[feats[idx].tokens[0] if feats[idx].tokens else ""].append(idx)
            parts = [g for g in groups.values() if 1 < len(g) <= _BLOCK_CAP]
        else:
            parts = [members]
        for part in parts:
            for x, i in enumerate(part):
                for j in part[x + 1 :]:
                    compare(i, j)
    return uf


def cluster_leads(leads: Sequence[Lead], threshold: float = DEFAULT_THRESHOLD) -> list[int]:
    """Cluster labels, one per lead (same label = same business), numbered by first appearance."""
    feats = [_Features(lead) for lead in leads]
    uf = _cluster(feats, 0, threshold)
    labels: dict[int, int] = {}
    return [labels.setdefault(uf.find(i), len(labels)) for i in range(len(leads))]


# --- merging ----------------------------------------------------------------------------------

_FILL_FIELDS = (
    "location",
    "best_email",
    "rating",
    "review_count",
    "open_hours",
    "business_status",
)
_ADDRESS_FIELDS = ("full", "street", "city", "postal_code", "state", "country")


def _union(first: Iterable[Any], second: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys([*first, *second]))


def _merge_review(base: Review | None, other: Review | None) -> Review | None:
    if other is None:
        return base
    if base is None:
        return other.model_copy(deep=True)
    notes = [n for n in (base.notes, other.notes) if n]
    return Review(
        # An analyst's decision beats the default status of the survivor.
        status=base.status if base.status != "new" else other.status,
        tags=_union(base.tags, other.tags),
        notes="\n\n".join(dict.fromkeys(notes)),
        owner=base.owner or other.owner,
    )


def _merge_sources(base: list[SourceRecord], other: list[SourceRecord]) -> list[SourceRecord]:
    by_key = {(s.source, s.source_id): s for s in base}
    merged = list(base)
    for record in other:
        existing = by_key.get((record.source, record.source_id))
        if existing is None:
            copy = record.model_copy()
            by_key[(record.source, record.source_id)] = copy
            merged.append(copy)
            continue
        for name in ("place_id", "cid", "data_id", "url", "run_id"):
            if getattr(existing, name) is None and getattr(record, name) is not None:
                setattr(existing, name, getattr(record, name))
    return merged


def _owned_copy(lead: Lead) -> Lead:
    """A copy `_merge_into` may mutate without touching the input (cheaper than a deep copy)."""
    return lead.model_copy(
        update={
            "address": lead.address.model_copy(),
            "categories": list(lead.categories),
            "emails": list(lead.emails),
            "sources": [s.model_copy() for s in lead.sources],
            "run_ids": list(lead.run_ids),
            "quality_flags": list(lead.quality_flags),
        }
    )


def _merge_into(base: Lead, other: Lead) -> None:
    """Fold `other` (younger) into `base` (older, owned by us): keep base, fill its gaps."""
    for name in _FILL_FIELDS:
        if getattr(base, name) is None and getattr(other, name) is not None:
            setattr(base, name, getattr(other, name))
    if not base.name and other.name:
        base.name = other.name
    address = base.address
    for name in _ADDRESS_FIELDS:
        if getattr(address, name) is None and getattr(other.address, name) is not None:
            setattr(address, name, getattr(other.address, name))
    if base.phone is None and other.phone is not None:
        # The parsed number and its raw form travel together.
        base.phone, base.phone_raw = other.phone, other.phone_raw
    elif base.phone_raw is None:
        base.phone_raw = other.phone_raw
    if base.website is None and other.website is not None:
        base.website, base.domain = other.website, other.domain
    elif base.domain is None:
        base.domain = other.domain
    base.categories = _union(base.categories, other.categories)
    if base.category == OTHER and other.category != OTHER:
        base.category = other.category
    known = {e.value.casefold() for e in base.emails}
    for email in other.emails:
        if email.value.casefold() not in known:
            known.add(email.value.casefold())
            base.emails.append(email.model_copy())
    base.sources = _merge_sources(base.sources, other.sources)
    if other.first_seen is not None and (
        base.first_seen is None or other.first_seen < base.first_seen
    ):
        base.first_seen = other.first_seen
    base.run_ids = _union(base.run_ids, other.run_ids)
    base.quality_flags = _union(base.quality_flags, other.quality_flags)
    if other.details:
        base.details = {**other.details, **(base.details or {})}
    # Stage-owned blocks: the survivor's own, else the other's (later stages redo them).
    if base.enrichment is None and other.enrichment is not None:
        base.enrichment = other.enrichment.model_copy(deep=True)
    if base.score is None and other.score is not None:
        base.score = other.score.model_copy(deep=True)
    base.review = _merge_review(base.review, other.review)


# --- the stage --------------------------------------------------------------------------------


@dataclass
class DedupResult:
    """What dedup hands to `load`.

    Counts: every batch lead is exactly one of `new` (a new business; one output lead per
    in-batch cluster), `merged_in_batch` (a later duplicate within the batch of a new lead) or
    `matched_stored` (folded into a stored lead), so `input == new + merged_in_batch +
    matched_stored`. `stored_merged` stored leads became tombstones.
    """

    leads: list[Lead] = field(default_factory=list)
    tombstones: list[Lead] = field(default_factory=list)
    input: int = 0
    new: int = 0
    merged_in_batch: int = 0
    matched_stored: int = 0
    stored_merged: int = 0
    # Survivors whose analyst `review` now includes a tombstone's: only for these does `load`
    # write the review block.
    carried_review: list[str] = field(default_factory=list)
    # Output leads a later stage (validate) sent to quarantine instead of load.
    rejected: int = 0

    def keep(self, passing: Sequence[Lead]) -> None:
        """Only `passing` go on to load; a stored lead merged into a rejected survivor stays as
        it is rather than become a tombstone pointing at a lead that was never stored."""
        kept = {lead.lead_id for lead in passing}
        self.rejected += len(self.leads) - len(passing)
        self.leads = list(passing)
        self.tombstones = [t for t in self.tombstones if t.merged_into in kept]
        self.carried_review = [lead_id for lead_id in self.carried_review if lead_id in kept]

    @property
    def counts(self) -> dict[str, int]:
        return {
            "input": self.input,
            "new": self.new,
            "merged_in_batch": self.merged_in_batch,
            "matched_stored": self.matched_stored,
            "stored_merged": self.stored_merged,
            "tombstones": len(self.tombstones),
        }


def _first_seen_key(lead: Lead) -> tuple[float, str]:
    # Older first: earlier first_seen, then the smaller ULID (ULIDs sort by creation time).
    seen = lead.first_seen
    return (seen.timestamp() if seen is not None else math.inf, lead.lead_id or "")


def dedup_leads(
    batch: Sequence[Lead],
    stored: Sequence[Lead] = (),
    *,
    run_id: str | None,
    threshold: float = DEFAULT_THRESHOLD,
    now: datetime | None = None,
) -> DedupResult:
    """De-duplicate `batch` within itself and against `stored` (the store's candidates).

    The batch is handed over: a batch lead that matches nothing is completed in place and
    returned; merged leads are copies. Stored leads are never modified. Output leads carry
    `last_seen=now`, the run id and freshly computed `blocking_keys`; new ones get a ULID and
    `first_seen`.
    """
    now = now or utcnow()
    with paused_gc():  # ~100k feature objects: the cyclic GC would walk the heap repeatedly
        return _dedup(batch, stored, run_id=run_id, threshold=threshold, now=now)


def _dedup(
    batch: Sequence[Lead],
    stored: Sequence[Lead],
    *,
    run_id: str | None,
    threshold: float,
    now: datetime,
) -> DedupResult:
    live = sorted((s for s in stored if s.merged_into is None), key=_first_seen_key)
    # Stored leads first, oldest first, then the batch in order: a lower index is older, so
    # union-find roots and merge order both follow age.
    everyone: list[Lead] = [*live, *batch]
    first_new = len(live)
    feats = [_Features(lead) for lead in everyone]
    uf = _cluster(feats, first_new, threshold)

    clusters: dict[int, list[int]] = defaultdict(list)
    for idx in range(len(everyone)):
        clusters[uf.find(idx)].append(idx)

    result = DedupResult(input=len(batch))
    emitted: set[int] = set()
    # Output in batch order; stored leads that no batch lead matched are not written.
    for first in range(first_new, len(everyone)):
        root = uf.find(first)
        if root in emitted:
            continue
        emitted.add(root)
        members = clusters[root]  # ascending: the oldest first
        if len(members) == 1:
            # The common case, a new unique lead. The batch is handed over to dedup, so the
            # lead is completed in place: a copy of each of 100k leads would cost ~2 KB apiece.
            lead = everyone[first]
            lead.lead_id = lead.lead_id or new_lead_id()
            lead.first_seen = lead.first_seen or now
            lead.last_seen = now
            if run_id and run_id not in lead.run_ids:
                lead.run_ids = [*lead.run_ids, run_id]
            lead.blocking_keys = list(feats[first].keys)
            result.new += 1
            result.leads.append(lead)
            continue

        lead = _owned_copy(everyone[members[0]])
        for idx in members[1:]:
            _merge_into(lead, everyone[idx])
        stored_members = [i for i in members if i < first_new]
        batch_count = len(members) - len(stored_members)
        if stored_members:
            result.matched_stored += batch_count
            carried = False
            for idx in stored_members[1:]:
                tomb = everyone[idx].model_copy(
                    update={"merged_into": lead.lead_id, "last_seen": now}, deep=True
                )
                result.tombstones.append(tomb)
                result.stored_merged += 1
                carried = carried or tomb.review is not None
            if carried and lead.lead_id:
                result.carried_review.append(lead.lead_id)
        else:
            result.new += 1
            result.merged_in_batch += batch_count - 1
            lead.lead_id = lead.lead_id or new_lead_id()
            lead.first_seen = lead.first_seen or now
        lead.last_seen = now
        if run_id and run_id not in lead.run_ids:
            lead.run_ids.append(run_id)
        # Every member's keys, computed now from its own fields: the merged lead's fields all
        # come from members, and a later record carrying the younger member's phone or old
        # address still finds this lead.
        keys: list[str] = []
        for idx in members:
            keys.extend(feats[idx].keys)
        lead.blocking_keys = list(dict.fromkeys(keys))
        result.leads.append(lead)
    return result


# --- Prefect task --------------------------------------------------------------------------


STAGE = "dedup"


@task(
    name="dedup",
    retries=get_settings().task_retries,
    retry_delay_seconds=get_settings().task_retry_delay,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def dedup_task(batch: list[Lead], run_id: str) -> DedupResult:
    """Dedup the batch against itself and the stored leads sharing any of its blocking keys."""
    from connectors.mongo import shared_store  # the store needs pymongo: only the task does

    settings = get_settings()
    store = shared_store(settings)
    keys = {key for lead in batch for key in blocking_keys(lead)}
    stored = store.find_candidates(sorted(keys))
    result = dedup_leads(batch, stored, run_id=run_id, threshold=settings.dedup_match_threshold)
    store.record_stage(run_id, STAGE, result.counts)
    get_run_logger().info("dedup: %s (%d stored candidates)", result.counts, len(stored))
    return result
