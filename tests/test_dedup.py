# ruff: noqa: RUF001  (Greek names are the test data)
"""Stage dedup: blocking keys, the match decision, merging, and dedup against stored leads.

`synthetic_batch()` builds a large labelled batch (duplicates with realistic formatting
differences plus hard negatives: chain branches, businesses inside a hotel); run this module
directly to time dedup on 100,000 leads:

    .venv/bin/python tests/test_dedup.py [N]
"""

from __future__ import annotations

import random
import sys
import time
from datetime import UTC, datetime, timedelta
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

if __name__ == "__main__":  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.lead import Lead, Review, new_lead_id
from tasks.dedup import DedupResult, blocking_keys, cluster_leads, dedup_leads, match_probability

T0 = datetime(2024, 1, 1, tzinfo=UTC)
NOW = datetime(2024, 6, 1, tzinfo=UTC)


def lead(
    name: str,
    *,
    phone: str | None = None,
    street: str | None = None,
    city: str | None = "Austin",
    domain: str | None = None,
    source: str = "directory",
    source_id: str | None = None,
    place_id: str | None = None,
    cid: str | None = None,
    **fields: Any,
) -> Lead:
    """A lead as `normalize` would hand it over (E.164 phone, registered domain)."""
    return Lead.model_validate(
        {
            "name": name,
            "phone": phone,
            "phone_raw": phone,
            "address": {"street": street, "city": city, "full": street},
            "website": f"https://{domain}/" if domain else None,
            "domain": domain,
            "sources": [
                {
                    "source": source,
                    "source_id": source_id or f"{name}|{street}|{phone}",
                    "place_id": place_id,
                    "cid": cid,
                }
            ],
            **fields,
        }
    )


def stored_lead(base: Lead, *, days_ago: int, **fields: Any) -> Lead:
    """`base` as the store would return it: a lead_id, first_seen, keys and a run id."""
    return base.model_copy(
        update={
            "lead_id": new_lead_id(),
            "first_seen": NOW - timedelta(days=days_ago),
            "last_seen": NOW - timedelta(days=days_ago),
            "run_ids": [f"old-run-{days_ago}"],
            "blocking_keys": blocking_keys(base),
            **fields,
        }
    )


def dedup(batch: list[Lead], stored: list[Lead] = (), **kw: Any) -> DedupResult:  # type: ignore[assignment]
    return dedup_leads(batch, list(stored), run_id="run-2", threshold=0.8, now=NOW, **kw)


def same(labels: list[int], i: int, j: int) -> bool:
    return labels[i] == labels[j]


# --- the match decision --------------------------------------------------------------------


def test_same_business_formatted_differently_merges_in_one_batch() -> None:
    batch = [
        lead("Art's Deli", phone="+15125550100", street="100 Main Street", domain="artsdeli.com"),
        lead(
            "Art's Delicatessen", phone="+15125550100", street="100 Main St.", categories=["Deli"]
        ),
        lead("Smith & Sons Plumbing", phone="+15125550111", street="7 Oak Avenue"),
        lead("Smith and Sons Plumbing LLC", phone="+15125550111", street="7 Oak Ave"),
    ]
    result = dedup(batch)
    assert result.new == 2 and result.merged_in_batch == 2 and len(result.leads) == 2
    deli = result.leads[0]
    # The first occurrence is the base; the younger fills its gaps and adds its source.
    assert deli.name == "Art's Deli"
    assert deli.address.street == "100 Main Street"
    assert deli.categories == ["Deli"]
    assert deli.domain == "artsdeli.com"
    assert len(deli.sources) == 2
    assert deli.lead_id and deli.first_seen == NOW and deli.last_seen == NOW
    assert deli.run_ids == ["run-2"]
    assert {"ph:+15125550100", "dom:artsdeli.com"} <= set(deli.blocking_keys)


def test_hotel_and_the_businesses_inside_it_stay_apart() -> None:
    shared = {"phone": "+15125550200", "street": "500 Congress Avenue", "domain": "grandhotel.com"}
    batch = [
        lead("Grand Hotel", **shared),
        lead("Grand Hotel Rooftop Bar", **shared),
        lead("Sakura Sushi at Grand Hotel", **shared),
        lead("Grand Hotel Spa", **shared),
    ]
    assert cluster_leads(batch, 0.8) == [0, 1, 2, 3]
    assert match_probability(batch[0], batch[1]) < 0.5


def test_chain_branches_share_a_domain_but_stay_apart() -> None:
    batch = [
        lead("Starbucks", phone="+15125550301", street="1 Lamar Blvd", domain="starbucks.com"),
        lead("Starbucks", phone="+15125550302", street="900 Guadalupe St", domain="starbucks.com"),
        # A branch listed without a phone: the address still tells them apart.
        lead("Starbucks", street="45 Riverside Dr", domain="starbucks.com"),
    ]
    assert len(set(cluster_leads(batch, 0.8))) == 3


def test_shared_phone_or_domain_alone_does_not_merge() -> None:
    batch = [
        lead("Law Office of Ann Lee", phone="+15125550400", street="10 Elm St"),
        lead("Bob Park Accounting", phone="+15125550400", street="10 Elm St"),
        lead("Ann Lee Consulting", domain="annlee.com", street="3 Pine St"),
        lead("Ann Lee Photography", domain="annlee.com", street="3 Pine St"),
    ]
    assert len(set(cluster_leads(batch, 0.8))) == 4


def test_business_that_moved_merges() -> None:
    old = lead("Joe's Diner", phone="+15125550500", street="12 First Street")
    moved = lead("Joe's Diner", phone="+15125550500", street="800 Airport Blvd")
    assert cluster_leads([old, moved], 0.8) == [0, 0]


def test_shared_place_id_or_cid_is_definitive() -> None:
    a = lead("Cafe Olé", source="google_maps", source_id="p1", place_id="ChIJ123")
    b = lead(
        "Olé Coffee House",
        street="9 Side St",
        source="google_maps",
        source_id="p2",
        place_id="ChIJ123",
    )
    c = lead("Totally Different", source="google_maps", source_id="c1", cid="777")
    d = lead("Renamed Place", phone="+15125550600", source="google_maps", source_id="c2", cid="777")
    assert cluster_leads([a, b, c, d], 0.8) == [0, 0, 1, 1]
    assert match_probability(a, b) == 1.0


def test_greek_names_match_without_accents_or_case() -> None:
    a = lead("Ταβέρνα Ο Γιάννης", phone="+302103221111", street="Ερμού 25", city="Αθήνα")
    b = lead("ΤΑΒΕΡΝΑ Ο ΓΙΑΝΝΗΣ Ο.Ε.", phone="+302103221111", street="Ερμου 25", city="ΑΘΗΝΑ")
    c = lead("Ταβέρνα Η Μαρία", phone="+302103221111", street="Ερμού 25", city="Αθήνα")
    assert cluster_leads([a, b, c], 0.8) == [0, 0, 1]
    assert "nm:αθηνα|25|γιαννησ" in blocking_keys(a)


def test_missing_or_unparseable_phones_neither_crash_nor_merge_strangers() -> None:
    no_phone = lead("Blue Door Salon", street="44 Pecan St")
    bad_phone = lead("Blue Door Salon", street="44 Pecan Street", phone_raw="call us!")
    stranger = lead("Red Door Salon", street="46 Pecan St")
    nameless_twin = lead("Blue Door Salon", city=None)  # no phone, no address, no city
    labels = cluster_leads([no_phone, bad_phone, stranger, nameless_twin], 0.8)
    assert same(labels, 0, 1)  # name + address are enough
    assert not same(labels, 0, 2)
    assert not same(labels, 0, 3)  # a name alone never merges
    assert not any(k.startswith("ph:") for k in blocking_keys(bad_phone))


def test_typo_in_the_name_still_merges_with_the_same_phone() -> None:
    a = lead("Smith Plumbing", phone="+15125550700", street="5 Bell Rd")
    b = lead("Smtih Plumbing", phone="+15125550700")
    assert cluster_leads([a, b], 0.8) == [0, 0]
    # ...but a different number in the name is a different business.
    c = lead("Studio 54", phone="+15125550701")
    d = lead("Studio 45", phone="+15125550701")
    assert cluster_leads([c, d], 0.8) == [0, 1]


def test_blocking_keys_are_stable_and_prefixed() -> None:
    a = lead("Art's Deli", phone="+15125550100", street="100 Main Street", domain="artsdeli.com")
    b = lead("ART'S DELI", phone="+15125550100", street="100 Main St", domain="artsdeli.com")
    assert blocking_keys(a) == blocking_keys(a.model_copy(deep=True))
    assert set(blocking_keys(a)) - {k for k in blocking_keys(a) if k.startswith("src:")} == set(
        blocking_keys(b)
    ) - {k for k in blocking_keys(b) if k.startswith("src:")}
    kinds = {k.split(":", 1)[0] for k in blocking_keys(a)}
    assert kinds == {"src", "ph", "dom", "ad", "nm"}
    # Platform pages are not the business's own domain.
    assert not any(k.startswith("dom:") for k in blocking_keys(lead("X", domain="facebook.com")))


# --- against stored leads ------------------------------------------------------------------


def test_batch_lead_merges_into_the_stored_lead() -> None:
    stored = stored_lead(
        lead("Art's Deli", phone="+15125550100", street="100 Main Street", source_id="L1"),
        days_ago=30,
    )
    incoming = lead(
        "Art's Delicatessen",
        phone="+15125550100",
        street="100 Main St",
        domain="artsdeli.com",
        source="google_maps",
        source_id="g1",
        place_id="ChIJart",
    )
    result = dedup([incoming], [stored])
    assert (result.new, result.matched_stored, result.stored_merged) == (0, 1, 0)
    [out] = result.leads
    assert out.lead_id == stored.lead_id
    assert out.first_seen == stored.first_seen
    assert out.last_seen == NOW
    assert out.name == "Art's Deli"  # the older lead's name is kept
    assert out.domain == "artsdeli.com"  # ...and its gaps are filled
    assert {(s.source, s.source_id) for s in out.sources} == {
        ("directory", "L1"),
        ("google_maps", "g1"),
    }
    assert out.run_ids == ["old-run-30", "run-2"]
    assert "pid:ChIJart" in out.blocking_keys
    assert stored.domain is None and len(stored.sources) == 1  # inputs are not modified


def test_same_listing_seen_again_keeps_one_source_record() -> None:
    first = lead("Blue Door Salon", street="44 Pecan St", source_id="L9")
    stored = stored_lead(first, days_ago=5)
    again = lead("Blue Door Salon", street="44 Pecan St", source_id="L9", phone="+15125550900")
    [out] = dedup([again], [stored]).leads
    assert out.lead_id == stored.lead_id
    assert len(out.sources) == 1
    assert out.phone == "+15125550900"


def test_record_matching_two_stored_leads_merges_them() -> None:
    older = stored_lead(
        lead("Smith Plumbing", phone="+15125550800", source_id="A"),
        days_ago=90,
        review=Review(status="qualified", tags=["hot"], notes="called once"),
    )
    younger = stored_lead(
        lead("Smith Plumbing", street="5 Bell Road", source_id="B"),
        days_ago=10,
        review=Review(tags=["plumbing", "hot"], notes="owner is Ann", owner="ann"),
    )
    bridge = lead("Smith Plumbing", phone="+15125550800", street="5 Bell Rd", source_id="C")
    result = dedup([bridge], [younger, older])
    assert (result.new, result.matched_stored, result.stored_merged) == (0, 1, 1)
    [survivor] = result.leads
    [tomb] = result.tombstones
    assert survivor.lead_id == older.lead_id and survivor.first_seen == older.first_seen
    assert tomb.lead_id == younger.lead_id and tomb.merged_into == older.lead_id
    assert survivor.review is not None
    assert survivor.review.status == "qualified"
    assert survivor.review.tags == ["hot", "plumbing"]
    assert "called once" in survivor.review.notes and "owner is Ann" in survivor.review.notes
    assert survivor.review.owner == "ann"
    assert {s.source_id for s in survivor.sources} == {"A", "B", "C"}
    assert result.carried_review == [older.lead_id]


def test_stored_leads_are_not_merged_with_each_other_without_a_batch_record() -> None:
    a = stored_lead(lead("Twin Cafe", phone="+15125551000", source_id="A"), days_ago=9)
    b = stored_lead(lead("Twin Cafe", phone="+15125551000", source_id="B"), days_ago=8)
    other = lead("Unrelated Bakery", phone="+15125551001")
    result = dedup([other], [a, b])
    assert result.tombstones == [] and result.new == 1


def test_tombstones_are_never_candidates() -> None:
    survivor = stored_lead(lead("Art's Deli", phone="+15125550100", source_id="A"), days_ago=9)
    tomb = stored_lead(
        lead("Art's Deli", phone="+15125550100", source_id="B"),
        days_ago=20,
        merged_into=survivor.lead_id,
    )
    result = dedup([lead("Art's Deli", phone="+15125550100", source_id="C")], [tomb, survivor])
    assert [out.lead_id for out in result.leads] == [survivor.lead_id]
    assert result.tombstones == []


def test_redup_of_the_same_batch_against_the_store_is_idempotent() -> None:
    batch = [
        lead("Art's Deli", phone="+15125550100", street="100 Main Street", source_id="1"),
        lead("Art's Delicatessen", phone="+15125550100", street="100 Main St", source_id="2"),
        lead("Blue Door Salon", street="44 Pecan St", source_id="3"),
        lead("Grand Hotel", phone="+15125550200", street="500 Congress Ave", source_id="4"),
        lead(
            "Grand Hotel Rooftop Bar",
            phone="+15125550200",
            street="500 Congress Ave",
            source_id="5",
        ),
        lead(
            "Ταβέρνα Ο Γιάννης",
            phone="+302103221111",
            street="Ερμού 25",
            city="Αθήνα",
            source_id="6",
        ),
    ]
    first = dedup(batch)
    assert first.new == 5 and first.merged_in_batch == 1
    store = {out.lead_id: out for out in first.leads}
    # The store finds candidates by key: every stored lead sharing any key with the batch.
    keys = {k for item in batch for k in blocking_keys(item)}
    candidates = [s for s in store.values() if keys & set(s.blocking_keys)]
    assert len(candidates) == 5
    second = dedup_leads(
        batch, candidates, run_id="run-3", threshold=0.8, now=NOW + timedelta(days=1)
    )
    assert second.new == 0 and second.matched_stored == len(batch) and second.tombstones == []
    assert {out.lead_id for out in second.leads} == set(store)
    for out in second.leads:
        before = store[out.lead_id]
        assert out.first_seen == before.first_seen
        assert len(out.sources) == len(before.sources)  # no duplicate source records
        assert out.run_ids == ["run-2", "run-3"]


def test_counts_add_up() -> None:
    batch, _ = synthetic_batch(2_000, seed=3)
    result = dedup(batch)
    assert result.input == result.new + result.merged_in_batch + result.matched_stored
    assert len(result.leads) == result.new
    assert len({out.lead_id for out in result.leads}) == len(result.leads)


# --- accuracy on a labelled synthetic batch -------------------------------------------------


def _split(text: str, sep: str | None = None) -> list[str]:
    return text.split(sep)


_FIRST = _split(
    "Art Bella Blue Bright Capital Cedar Central Coastal Copper Crescent Desert Eagle Elm Empire "
    "Evergreen Falcon Golden Granite Harbor Heritage Highland Iron Jade Lakeside Liberty Lone "
    "Maple Meadow Metro Mission Modern Noble North Oak Olive Pacific Peak Pine Pioneer Prime "
    "Quality Red River Rock Royal Sage Silver Smith Star Summit Sun Texas Trinity Union Valley "
    "Victory Vista West Willow"
)
_SURNAMES = _split(
    "Smith Johnson Garcia Miller Davis Rodriguez Martinez Lopez Wilson Anderson Thomas Moore "
    "Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson Walker "
    "Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall "
    "Rivera Campbell Mitchell Carter Roberts Papadopoulos Georgiou Schmidt Weber Rossi Kowalski"
)
_TRADES = _split(
    "Plumbing|Dental|Deli|Auto Repair|Bakery|Law Office|Salon|Fitness|Realty|Cafe|Pizza|"
    "Electric|Roofing|Pharmacy|Accounting|Veterinary Clinic|Barber Shop|Yoga Studio|Grill|"
    "Insurance Agency|Florist|Hardware|Books|Tailor|Cleaners|Pet Grooming|Sushi|Taqueria",
    "|",
)
_STREETS = _split(
    "Main Oak Pine Maple Cedar Elm Lake Hill Park Washington Lincoln Jefferson Congress Lamar "
    "Guadalupe Burnet Riverside Airport Cameron Manor"
)
_TYPES = [
    ("Street", "St"),
    ("Avenue", "Ave"),
    ("Road", "Rd"),
    ("Boulevard", "Blvd"),
    ("Drive", "Dr"),
]
_CITIES = [f"City{i:02d}" for i in range(40)]


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 5:
        return word
    i = rng.randrange(1, len(word) - 2)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _variant(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The same business as another listing shows it."""
    rec = {**record}
    name = rec["name"]
    roll = rng.random()
    if roll < 0.2:
        name = name + rng.choice([" LLC", " Inc.", ", Inc", " Co."])
    elif roll < 0.35:
        name = name.upper()
    elif roll < 0.45:
        words = name.split()
        words[0] = _typo(words[0], rng)
        name = " ".join(words)
    elif roll < 0.55:
        name = name.replace(" and ", " & ") if " and " in name else name.replace(" & ", " and ")
    rec["name"] = name
    street = rec["street"]
    for long_, short in _TYPES:
        if rng.random() < 0.5:
            street = (
                street.replace(f" {long_}", f" {short}.")
                if f" {long_}" in street
                else street.replace(f" {short}", f" {long_}")
            )
    rec["street"] = street
    roll = rng.random()
    if roll < 0.15:
        rec["phone"] = None
    elif roll < 0.2:
        rec["street"] = f"{rng.randint(1, 9999)} {rng.choice(_STREETS)} Street"  # moved
    if rng.random() < 0.3:
        rec["domain"] = None
    return rec


def synthetic_batch(
    n: int, *, dup_rate: float = 0.07, seed: int = 0
) -> tuple[list[Lead], list[int]]:
    """`n` leads with truth entity ids: ~dup_rate of them are variants of another business.

    Hard negatives included: chains (same name and domain, other phone and address) and
    businesses inside a hotel (same phone, address and domain, a longer name).
    """
    rng = random.Random(seed)
    businesses: list[dict[str, Any]] = []
    phones = rng.sample(range(2_000_000, 9_999_999), n)
    while len(businesses) < n:
        city = rng.choice(_CITIES)
        if rng.random() < 0.5:
            name = f"{rng.choice(_FIRST)} {rng.choice(_TRADES)}"
        else:
            name = (
                f"{rng.choice(_SURNAMES)} {rng.choice(['&', 'and'])} Sons {rng.choice(_TRADES)}"
                if rng.random() < 0.2
                else f"{rng.choice(_SURNAMES)}'s {rng.choice(_TRADES)}"
            )
        long_, _ = rng.choice(_TYPES)
        record = {
            "name": name,
            "phone": f"+1512{phones[len(businesses)]:07d}",
            "street": f"{rng.randint(1, 9999)} {rng.choice(_STREETS)} {long_}",
            "city": city,
            "domain": f"{name.lower().replace(' ', '').replace('&', '').replace(chr(39), '')}{len(businesses)}.com"
            if rng.random() < 0.7
            else None,
        }
        businesses.append(record)
        roll = rng.random()
        if roll < 0.01 and len(businesses) < n - 3:  # a chain: 3 branches
            for _ in range(3):
                branch = {**record, "phone": f"+1737{rng.randrange(10**7):07d}",
                          "street": f"{rng.randint(1, 9999)} {rng.choice(_STREETS)} Street",
                          "city": rng.choice(_CITIES)}  # fmt: skip
                businesses.append(branch)
        elif roll < 0.015 and len(businesses) < n - 2:  # a hotel with a bar and a restaurant
            record["name"] = f"{rng.choice(_FIRST)} Hotel"
            for suffix in ("Rooftop Bar", "Steakhouse"):
                businesses.append({**record, "name": f"{record['name']} {suffix}"})
    records: list[tuple[dict[str, Any], int]] = []
    n_unique = int(n * (1 - dup_rate))
    for entity, business in enumerate(businesses[:n_unique]):
        records.append((business, entity))
    while len(records) < n:
        entity = rng.randrange(n_unique)
        records.append((_variant(businesses[entity], rng), entity))
    rng.shuffle(records)
    leads = [
        Lead.model_validate(
            {
                "name": rec["name"],
                "phone": rec["phone"],
                "address": {"street": rec["street"], "city": rec["city"]},
                "domain": rec["domain"],
                "website": f"https://{rec['domain']}/" if rec["domain"] else None,
                "sources": [{"source": "synthetic", "source_id": str(i)}],
            }
        )
        for i, (rec, _) in enumerate(records)
    ]
    return leads, [entity for _, entity in records]


def pair_scores(labels: list[int], truth: list[int]) -> tuple[float, float]:
    predicted = {p for p in _pairs(labels)}
    true = {p for p in _pairs(truth)}
    tp = len(predicted & true)
    return (tp / len(predicted) if predicted else 1.0, tp / len(true) if true else 1.0)


def _pairs(labels: list[int]) -> set[tuple[int, int]]:
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    return {pair for members in groups.values() for pair in combinations(members, 2)}


def test_accuracy_on_synthetic_batch() -> None:
    leads, truth = synthetic_batch(6_000, seed=11)
    precision, recall = pair_scores(cluster_leads(leads, 0.8), truth)
    assert precision >= 0.99, precision
    assert recall >= 0.90, recall


@pytest.mark.parametrize("threshold", [0.5, 0.95])
def test_threshold_moves_the_decision(threshold: float) -> None:
    a = lead(
        "Grand Hotel", phone="+15125550200", street="500 Congress Ave", domain="grandhotel.com"
    )
    b = lead(
        "Grand Hotel Spa", phone="+15125550200", street="500 Congress Ave", domain="grandhotel.com"
    )
    merged = cluster_leads([a, b], threshold) == [0, 0]
    assert merged is (match_probability(a, b) >= threshold)


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    built = time.perf_counter()
    leads, truth = synthetic_batch(size, seed=1)
    print(f"built {size} synthetic leads in {time.perf_counter() - built:.1f}s")
    started = time.perf_counter()
    result = dedup_leads(leads, [], run_id="bench", threshold=0.8)
    elapsed = time.perf_counter() - started
    print(f"dedup_leads: {elapsed:.2f}s ({size / elapsed:,.0f} leads/s) counts={result.counts}")
    started = time.perf_counter()
    labels = cluster_leads(leads, 0.8)
    print(f"cluster_leads: {time.perf_counter() - started:.2f}s")
    precision, recall = pair_scores(labels, truth)
    print(f"pairwise precision={precision:.4f} recall={recall:.4f}")
