"""Seeded generator of the demo business directory and its ground truth.

Everything comes from one `random.Random(seed)` and is built in a fixed order, so one seed
always yields byte-identical output (no set iteration, no `hash()`, no clock). It is written
for speed (plain loops, a few random draws per business) because benchmarks build 100k
businesses.

The world: businesses (entities) with their own `.test` websites, and the directory's
listings of them, including the mess real directories have: duplicate listings with other
formatting, distinct businesses sharing a phone and address (venues inside a hotel), chain
branches sharing a domain, businesses that moved, missing fields, unparseable phones,
non-lead rows ("Advertise here") and malformed detail pages. `truth` maps each listing id to
its entity id (None for rows that are not leads).
"""

# ruff: noqa: RUF001, RUF003  (Greek script, en dashes and typographic marks are the data)

from __future__ import annotations

import argparse
import bisect
import csv
import json
import random
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Any

DIRECTORY_HOST = "directory.test"
DIRECTORY_BASE = f"http://{DIRECTORY_HOST}"
SOURCE = "directory"

# Mirrors spiders.items.RAW_FIELDS (a test keeps them equal): the sandbox must not import
# the Scrapy project.
RAW_FIELDS: tuple[str, ...] = (
    "source", "source_id", "url", "name", "category", "categories", "address", "street",
    "city", "postal_code", "state", "country", "phone", "website", "emails", "rating",
    "review_count", "latitude", "longitude", "open_hours", "business_status", "place_id",
    "cid", "data_id", "parse_error",
)  # fmt: skip

MALFORMED_ERROR = "malformed page"

# Rates of the mess, per business (or per listing for page-level faults).
RATE_CHAIN_GROUP = 0.012  # per draw; a group is 2-4 branches
RATE_HOTEL_VENUES = 0.35  # of hotels
RATE_WEBSITE = 0.8
RATE_DUPLICATE = 0.04
RATE_MOVED = 0.02
RATE_MISSING_PHONE = 0.03
RATE_MISSING_WEBSITE = 0.03
RATE_MISSING_RATING = 0.04
RATE_MISSING_HOURS = 0.05
RATE_BAD_PHONE = 0.015
RATE_NOT_LEAD = 0.015  # of listings
RATE_MALFORMED = 0.01  # of listings
RATE_JSONLD = 0.6
RATE_EMAILS = 0.65  # of websites
RATE_EMAIL_ON_LISTING = 0.15


# --------------------------------------------------------------------------------------
# The world's vocabulary
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class City:
    key: str
    name: str
    state: str | None
    country: str
    lat: float
    lng: float
    area: str  # phone area code (national significant digits)
    aliases: tuple[str, ...]  # accepted `location` filter values, folded


CITIES: tuple[City, ...] = (
    City("austin", "Austin", "TX", "US", 30.2672, -97.7431, "512",
         ("austin", "austin, tx", "austin, texas", "austin, us", "austin, usa",
          "austin, united states", "austin, tx, us", "austin, tx, usa")),
    City("seattle", "Seattle", "WA", "US", 47.6062, -122.3321, "206",
         ("seattle", "seattle, wa", "seattle, washington", "seattle, us", "seattle, usa",
          "seattle, united states", "seattle, wa, us", "seattle, wa, usa")),
    City("london", "London", None, "GB", 51.5074, -0.1278, "20",
         ("london", "london, gb", "london, uk", "london, united kingdom", "london, england")),
    City("berlin", "Berlin", None, "DE", 52.5200, 13.4050, "30",
         ("berlin", "berlin, de", "berlin, germany", "berlin, deutschland")),
    City("athens", "Athens", None, "GR", 37.9838, 23.7275, "210",
         ("athens", "athens, gr", "athens, greece", "αθηνα", "αθηνα, ελλαδα", "αθηνα, gr")),
)  # fmt: skip
CITY_BY_KEY = {c.key: c for c in CITIES}
_CITY_CUM = list(accumulate((0.25, 0.2, 0.2, 0.17, 0.18)))

CATEGORY_SLUGS: tuple[str, ...] = (
    "restaurant", "cafe", "bar", "dentist", "plumber", "lawyer", "hotel", "salon",
    "auto_repair", "accountant",
)  # fmt: skip
_CAT_CUM = list(accumulate((0.22, 0.12, 0.07, 0.1, 0.07, 0.08, 0.07, 0.1, 0.08, 0.09)))

# (main category, extra categories) as the directory shows them, per slug and language.
_CATS: dict[str, dict[str, tuple[tuple[str, tuple[str, ...]], ...]]] = {
    "dentist": {
        "en": (("Dentist", ("Cosmetic dentist",)), ("Dentist", ()), ("Dental clinic", ()),
               ("Orthodontist", ("Dentist",))),
        "de": (("Zahnarzt", ()), ("Zahnarzt", ("Kieferorthopäde",))),
        "el": (("Οδοντίατρος", ()), ("Οδοντιατρείο", ())),
    },
    "restaurant": {
        "en": (("Restaurant", ()), ("Italian restaurant", ("Pizza restaurant",)), ("Deli", ()),
               ("Sushi restaurant", ("Japanese restaurant",)), ("Steakhouse", ()),
               ("Pizzeria", ())),
        "de": (("Restaurant", ()), ("Gaststätte", ("Restaurant",)), ("Italienisches Restaurant", ())),
        "el": (("Ταβέρνα", ()), ("Εστιατόριο", ()), ("Ψητοπωλείο", ("Ταβέρνα",))),
    },
    "cafe": {
        "en": (("Cafe", ()), ("Coffee shop", ("Cafe",)), ("Bakery", ("Cafe",))),
        "de": (("Café", ()), ("Bäckerei", ("Café",))),
        "el": (("Καφέ", ("Καφετέρια",)), ("Αρτοποιείο", ())),
    },
    "bar": {
        "en": (("Bar", ()), ("Cocktail bar", ()), ("Pub", ("Bar",))),
        "de": (("Bar", ()), ("Kneipe", ("Bar",))),
        "el": (("Μπαρ", ()),),
    },
    "plumber": {
        "en": (("Plumber", ()), ("Plumber", ("Drainage service",))),
        "de": (("Klempner", ()),),
        "el": (("Υδραυλικός", ()),),
    },
    "lawyer": {
        "en": (("Lawyer", ()), ("Law firm", ()), ("Personal injury attorney", ("Lawyer",))),
        "de": (("Rechtsanwalt", ()), ("Anwaltskanzlei", ())),
        "el": (("Δικηγόρος", ()), ("Δικηγορικό γραφείο", ())),
    },
    "hotel": {
        "en": (("Hotel", ()), ("Boutique hotel", ("Hotel",))),
        "de": (("Hotel", ()),),
        "el": (("Ξενοδοχείο", ()),),
    },
    "salon": {
        "en": (("Hair salon", ()), ("Beauty salon", ()), ("Barber shop", ()), ("Nail salon", ())),
        "de": (("Friseursalon", ()), ("Friseur", ())),
        "el": (("Κομμωτήριο", ()),),
    },
    "auto_repair": {
        "en": (("Auto repair shop", ()), ("Mechanic", ("Auto repair shop",))),
        "de": (("Autowerkstatt", ()),),
        "el": (("Συνεργείο αυτοκινήτων", ()),),
    },
    "accountant": {
        "en": (("Accountant", ()), ("Tax preparation service", ("Accountant",)),
               ("Chartered accountant", ())),
        "de": (("Steuerberater", ()),),
        "el": (("Λογιστικό γραφείο", ()),),
    },
}  # fmt: skip

_POOLS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "first": ("Art", "Maria", "James", "Linda", "Robert", "Susan", "Michael", "Karen",
                  "David", "Nancy", "Joe", "Tony", "Rosa", "Sam", "Grace", "Henry", "Olivia",
                  "Ethan", "Chloe", "Marcus", "Priya", "Omar", "Hannah", "Leo"),
        "last": ("Smith", "Johnson", "Williams", "Brown", "Garcia", "Miller", "Davis",
                 "Martinez", "Wilson", "Anderson", "Taylor", "Thomas", "Moore", "Jackson",
                 "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Walker",
                 "Hall", "Young", "King", "Wright", "Lopez", "Hill", "Green", "Baker",
                 "Nguyen", "Patel", "Kim", "Murphy", "O'Brien", "Evans", "Hughes", "Bennett"),
        "adj": ("Blue", "Golden", "Happy", "Bright", "Urban", "Green", "Silver", "Lucky",
                "Royal", "Little", "Old Town", "Red", "Sunny", "Copper", "Northside",
                "Eastside", "Hilltop", "Riverside", "Lakeside", "Capital", "Evergreen",
                "Emerald", "Union", "Maple"),
        "noun": ("Oak", "Fox", "Lantern", "Anchor", "Bean", "Sparrow", "Harbor", "Bridge",
                 "Crown", "Garden", "Table", "Kettle", "Orchard", "Mill", "Pine", "Owl",
                 "Compass", "Stone", "Rose", "Bell"),
        "ital": ("Luigi", "Bella", "Roma", "Napoli", "Toscana", "Mamma Mia", "Sorrento",
                 "Vesuvio"),
    },
    "de": {
        "first": ("Anna", "Lukas", "Jonas", "Lea", "Felix", "Marie", "Paul", "Sophie", "Max",
                  "Laura", "Thomas", "Sabine"),
        "last": ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner",
                 "Becker", "Schulz", "Hoffmann", "Koch", "Richter", "Klein", "Wolf",
                 "Schröder", "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger"),
        "noun": ("Linde", "Spree", "Sonne", "Mond", "Eiche", "Stern", "Brücke", "Kiez",
                 "Berg", "Hafen", "Adler"),
        "place": ("Kollwitzplatz", "Hackeschen Markt", "Alexanderplatz", "Boxhagener Platz",
                  "Savignyplatz", "Mehringdamm"),
        "zum": ("Goldenen Hirsch", "Alten Fritz", "Schwarzen Adler", "Grünen Baum",
                "Roten Ochsen"),
        "ital": ("Luigi", "Bella", "Roma", "Napoli", "Toscana"),
    },
    "el": {
        "first": ("Γιώργος", "Μαρία", "Νίκος", "Ελένη", "Κώστας", "Δημήτρης", "Σοφία",
                  "Γιάννης", "Αικατερίνη", "Παναγιώτης"),
        "last": ("Παπαδόπουλος", "Οικονόμου", "Γεωργίου", "Νικολάου", "Βασιλείου", "Αντωνίου",
                 "Ιωάννου", "Καραγιάννης", "Μακρής", "Δημητρίου"),
        "noun": ("Ακρόπολη", "Πλάκα", "Θάλασσα", "Ελιά", "Ήλιος", "Αθηνά", "Λυκαβηττός",
                 "Ορίζων", "Αγορά", "Κυκλάδες"),
    },
    "el_latn": {
        "first": ("Giorgos", "Maria", "Nikos", "Eleni", "Kostas", "Dimitris", "Sofia",
                  "Yannis"),
        "last": ("Papadopoulos", "Oikonomou", "Georgiou", "Nikolaou", "Vasileiou", "Antoniou",
                 "Ioannou", "Karagiannis"),
        "noun": ("Acropolis", "Plaka", "Thalassa", "Elia", "Helios", "Athena", "Lycabettus",
                 "Orizon", "Agora", "Cyclades"),
    },
}  # fmt: skip

_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "dentist": ("{last} Family Dentistry", "{adj} Smile Dental", "{city} Dental Studio",
                    "{last} Dental Care", "{last} & {last2} Dental Practice", "{noun} Dental",
                    "{last} Orthodontics"),
        "restaurant": ("{first}'s Deli", "{last}'s Kitchen", "The {adj} {noun}",
                       "{ital} Trattoria", "{noun} & {noun2}", "{last}'s Steakhouse",
                       "{ital} Pizzeria", "{adj} Dragon Noodle House"),
        "cafe": ("{adj} Bean Coffee", "{noun} Cafe", "{first}'s Bakery", "Cafe {noun}",
                 "{adj} Cup Coffee House"),
        "bar": ("The {adj} {noun}", "{noun} Tavern", "{last}'s Pub", "{adj} Room Cocktail Bar"),
        "plumber": ("{last} & Sons Plumbing", "{adj} Plumbing Co.", "{city} Rooter & Drain",
                    "{first}'s Plumbing Services"),
        "lawyer": ("{last} & {last2} LLP", "{last} Law Group", "Law Office of {first} {last}",
                   "{last}, {last2} & Partners"),
        "hotel": ("The {adj} Hotel", "{noun} Inn", "Hotel {noun}", "Grand Hotel {city}",
                  "{city} {noun} Suites"),
        "salon": ("{adj} Hair Studio", "{first}'s Salon", "{noun} Barbershop",
                  "{adj} Nails & Spa"),
        "auto_repair": ("{last} Auto Repair", "{adj} Auto Care", "{city} Transmission & Brake",
                        "{first}'s Garage"),
        "accountant": ("{last} & Associates", "{last} Accountants", "{adj} Tax & Bookkeeping",
                       "{last} {last2} Accounting"),
    },
    "de": {
        "dentist": ("Zahnarztpraxis Dr. {last}", "Zahnärzte am {place}", "Dr. {last} Zahnarzt"),
        "restaurant": ("Restaurant {noun}", "Gasthaus {last}", "{ital} Trattoria", "Zum {zum}"),
        "cafe": ("Café {noun}", "Bäckerei {last}", "{noun} Kaffeehaus"),
        "bar": ("{noun} Bar", "Kneipe {noun}", "Zum {zum}"),
        "plumber": ("{last} Sanitär", "Klempnerei {last}", "{last} Haustechnik"),
        "lawyer": ("Kanzlei {last} & {last2}", "Rechtsanwalt {first} {last}",
                   "{last} Rechtsanwälte"),
        "hotel": ("Hotel {noun}", "Hotel am {place}", "{noun} Hotel Berlin"),
        "salon": ("Friseur {first}", "Salon {noun}", "Haarwerk {last}"),
        "auto_repair": ("Autowerkstatt {last}", "Kfz-Service {last}", "{last} Autoservice"),
        "accountant": ("Steuerberatung {last}", "Steuerkanzlei {last} & {last2}"),
    },
    "el": {
        "dentist": ("Οδοντιατρείο {last}", "Οδοντίατρος {first} {last}"),
        "restaurant": ("Ταβέρνα {noun}", "Ψητοπωλείο {first}", "Εστιατόριο {noun}"),
        "cafe": ("Καφέ {noun}", "Αρτοποιείο {last}"),
        "bar": ("Μπαρ {noun}",),
        "plumber": ("Υδραυλικός {first} {last}", "Υδραυλικές Εργασίες {last}"),
        "lawyer": ("Δικηγορικό Γραφείο {last}", "Δικηγόρος {first} {last}"),
        "hotel": ("Ξενοδοχείο {noun}",),
        "salon": ("Κομμωτήριο {first}", "Κομμωτήριο {noun}"),
        "auto_repair": ("Συνεργείο {last}", "Συνεργείο Αυτοκινήτων {first}"),
        "accountant": ("Λογιστικό Γραφείο {last}",),
    },
    "el_latn": {
        "dentist": ("Dr. {last} Dental Clinic", "{noun} Dental Care"),
        "restaurant": ("Taverna {noun}", "{noun} Restaurant", "Souvlaki {first}"),
        "cafe": ("{noun} Cafe", "Cafe {noun}"),
        "bar": ("{noun} Bar", "{noun} Rooftop Bar"),
        "plumber": ("{last} Plumbing",),
        "lawyer": ("{last} Law Firm", "{last} & {last2} Law Office"),
        "hotel": ("{noun} View Hotel", "Hotel {noun}"),
        "salon": ("{first} Hair Salon",),
        "auto_repair": ("{last} Car Service",),
        "accountant": ("{last} Accounting",),
    },
}  # fmt: skip

_LEGAL_SUFFIX = {"US": ("LLC", "Inc."), "GB": ("Ltd",), "DE": ("GmbH",), "GR": ()}
_LEGAL_SLUGS = frozenset({"plumber", "lawyer", "auto_repair", "accountant", "contractor"})

_CHAIN_BRANDS: dict[str, tuple[str, ...]] = {
    "dentist": ("{adj} Smile Dental", "Bright Dental", "{noun} Dental Group"),
    "cafe": ("{adj} Bean Coffee", "{noun} Coffee Co.", "Daily Grind Coffee"),
    "auto_repair": ("{adj} Auto Care", "QuickFix Auto", "{noun} Tire & Auto"),
    "salon": ("{adj} Cuts", "Shear Genius Salon", "{noun} Hair Bar"),
    "restaurant": ("{noun} Burger Co.", "{ital} Pizza Kitchen", "{adj} Taco Shop"),
    "hotel": ("{noun} Suites", "{adj} Stay Hotels"),
}
_CHAIN_SLUGS = tuple(_CHAIN_BRANDS)

# Venues inside a hotel: distinct businesses sharing its phone and address.
_VENUES: tuple[tuple[str, str, str], ...] = (
    ("{hotel} Rooftop Bar", "bar", "Cocktail bar"),
    ("Sakura Sushi at {hotel}", "restaurant", "Sushi restaurant"),
    ("{hotel} Spa", "salon", "Day spa"),
    ("The Lobby Cafe at {hotel}", "cafe", "Cafe"),
    ("{hotel} Steakhouse", "restaurant", "Steakhouse"),
)

_STREETS: dict[str, tuple[str, ...]] = {
    "austin": ("Congress", "Lamar", "Guadalupe", "Burnet", "Oltorf", "Riverside",
               "Cesar Chavez", "Airport", "Manor", "Barton Springs", "Red River", "Anderson",
               "Koenig", "William Cannon", "Slaughter", "South 1st", "East 6th", "West 5th"),
    "seattle": ("Pike", "Pine", "Madison", "Rainier", "Aurora", "Broadway", "Jackson",
                "Union", "Denny", "Mercer", "Eastlake", "Fremont", "Leary", "Market",
                "Roosevelt", "Holman", "East Olive", "West Dravus"),
    "london": ("Baker", "Oxford", "Camden High", "Brick", "Portobello", "Old Kent",
               "Holloway", "Fulham", "Kingsland", "Essex", "Upper", "Charlotte", "Goodge",
               "Exmouth", "Brixton", "Lordship"),
    "berlin": ("Friedrichstraße", "Oranienstraße", "Kastanienallee", "Karl-Marx-Allee",
               "Kurfürstendamm", "Schönhauser Allee", "Bergmannstraße", "Torstraße",
               "Sonnenallee", "Warschauer Straße", "Kantstraße", "Wilmersdorfer Straße"),
    "athens_el": ("Ερμού", "Σταδίου", "Πανεπιστημίου", "Ακαδημίας", "Σόλωνος", "Αθηνάς",
                  "Μητροπόλεως", "Πατησίων", "Λεωφόρος Αλεξάνδρας", "Λεωφόρος Συγγρού",
                  "Λεωφόρος Βασιλίσσης Σοφίας", "Αδριανού", "Καλλιδρομίου", "Σκουφά"),
    "athens_latn": ("Ermou", "Stadiou", "Panepistimiou", "Akadimias", "Solonos", "Athinas",
                    "Mitropoleos", "Patision", "Leoforos Alexandras", "Leoforos Syngrou",
                    "Leoforos Vasilissis Sofias", "Adrianou", "Kallidromiou", "Skoufa"),
}  # fmt: skip
_US_TYPES = ("Street", "Avenue", "Boulevard", "Road", "Drive", "Lane")
_GB_TYPES = ("Street", "Road", "Lane", "Avenue", "Place")
_LONDON_OUT = ("W1U", "W1D", "EC1A", "EC2M", "SE1", "N1", "E1", "NW1", "SW1A", "WC2H", "E2",
               "SW3", "N7", "SE15", "E8")  # fmt: skip
_POSTCODE_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"
_ATHENS_PC = ("104", "105", "106", "111", "112", "113", "114", "115", "116", "117")

# Street abbreviations a second listing of the same place may use.
_ABBREV: dict[str, tuple[tuple[str, str], ...]] = {
    "US": (("Street", "St."), ("Avenue", "Ave"), ("Boulevard", "Blvd"), ("Road", "Rd"),
           ("Drive", "Dr"), ("Lane", "Ln"), ("Suite", "Ste"), ("South ", "S "),
           ("East ", "E "), ("West ", "W ")),
    "GB": (("Street", "St"), ("Road", "Rd"), ("Lane", "Ln"), ("Avenue", "Ave"),
           ("Place", "Pl")),
    "DE": (("straße", "str."), ("Straße", "Str."), ("Allee", "Allee")),
    "GR": (("Λεωφόρος", "Λεωφ."), ("Leoforos", "Leof.")),
}  # fmt: skip

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _h(week: str | list[str], sat: str | list[str], sun: str | list[str]) -> dict[str, list[str]]:
    def as_list(v: str | list[str]) -> list[str]:
        return [v] if isinstance(v, str) else list(v)

    out = {d: as_list(week) for d in WEEKDAYS[:5]}
    out["Saturday"] = as_list(sat)
    out["Sunday"] = as_list(sun)
    return out


def _every_day(v: str | list[str]) -> dict[str, list[str]]:
    return _h(v, v, v)


def _closed_monday(v: str | list[str]) -> dict[str, list[str]]:
    out = _every_day(v)
    out["Monday"] = ["Closed"]
    return out


_HOURS: dict[str, tuple[dict[str, list[str]], ...]] = {
    "office": (_h("9 AM–5 PM", "Closed", "Closed"), _h("8 AM–6 PM", "9 AM–1 PM", "Closed"),
               _h("8:30 AM–5:30 PM", "Closed", "Closed")),
    "restaurant": (_every_day("11 AM–10 PM"), _closed_monday(["11:30 AM–2:30 PM", "5–10 PM"]),
                   _h("11 AM–11 PM", "10 AM–11 PM", "10 AM–9 PM")),
    "cafe": (_every_day("7 AM–6 PM"), _h("6:30 AM–7 PM", "8 AM–5 PM", "8 AM–3 PM")),
    "bar": (_every_day("4 PM–2 AM"), _h("5 PM–12 AM", "2 PM–2 AM", "2 PM–12 AM")),
    "hotel": (_every_day("Open 24 hours"),),
    "plumber": (_every_day("Open 24 hours"), _h("7 AM–6 PM", "8 AM–2 PM", "Closed")),
    "salon": (_closed_monday("10 AM–7 PM") | {"Sunday": ["Closed"]},
              _h("9 AM–8 PM", "9 AM–6 PM", "Closed")),
    "auto": (_h("8 AM–6 PM", "8 AM–12 PM", "Closed"), _h("7:30 AM–5:30 PM", "Closed", "Closed")),
}  # fmt: skip
_HOURS_KIND = {
    "dentist": "office", "lawyer": "office", "accountant": "office", "restaurant": "restaurant",
    "cafe": "cafe", "bar": "bar", "hotel": "hotel", "plumber": "plumber", "salon": "salon",
    "auto_repair": "auto",
}  # fmt: skip

_AD_NAMES = ("Advertise here", "Your business here", "Sponsored listing", "Claim this listing",
             "Featured spot available")  # fmt: skip
_BAD_PHONES = ("call us", "555-01", "Call for appointment", "TBA", "see website")
_EMAIL_STYLES = ("mailto", "text", "brackets", "parens", "cfemail")
_EMAIL_STYLE_CUM = list(accumulate((0.35, 0.2, 0.15, 0.1, 0.2)))

_GREEK_LATIN = {
    "α": "a", "β": "v", "γ": "g", "δ": "d", "ε": "e", "ζ": "z", "η": "i", "θ": "th", "ι": "i",
    "κ": "k", "λ": "l", "μ": "m", "ν": "n", "ξ": "x", "ο": "o", "π": "p", "ρ": "r", "σ": "s",
    "ς": "s", "τ": "t", "υ": "y", "φ": "f", "χ": "ch", "ψ": "ps", "ω": "o", "ß": "ss",
}  # fmt: skip


# --------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Business:
    """One real-world business (an entity of the ground truth)."""

    entity_id: str
    name: str
    category_slug: str
    category: str
    categories: list[str]
    street: str
    city: str  # as shown (Αθήνα for Greek-script businesses)
    city_key: str
    state: str | None
    postal_code: str
    country: str
    phone: str  # national format, as locals write it
    phone_nsn: str  # national significant number, digits only
    website: str | None
    domain: str | None
    latitude: float
    longitude: float
    rating: float | None
    review_count: int | None
    open_hours: dict[str, list[str]] | None
    business_status: str
    lang: str
    chain: str | None = None  # brand domain shared by the chain's branches
    venue_of: str | None = None  # entity id of the hotel this venue is inside

    @property
    def address(self) -> str:
        return address_line(self.country, self.street, self.city, self.state, self.postal_code)


@dataclass(slots=True)
class Listing:
    """One row of the directory: what its listing and detail pages show."""

    listing_id: str
    entity_id: str | None
    kind: str  # primary | duplicate | moved | not_lead
    city_key: str
    category_slug: str
    name: str | None
    category: str | None
    categories: list[str]
    street: str | None
    city: str | None
    postal_code: str | None
    state: str | None
    country: str | None
    phone: str | None
    website: str | None
    emails: list[str]
    rating: float | None
    review_count: int | None
    latitude: float | None
    longitude: float | None
    open_hours: dict[str, list[str]] | None
    business_status: str | None
    flags: list[str] = field(default_factory=list)  # the mess this row carries
    malformed: str | None = None  # truncated | missing_block: the detail page is broken
    jsonld: bool = False  # the detail page also carries JSON-LD

    @property
    def address(self) -> str | None:
        if self.street is None or self.country is None or self.city is None:
            return None
        return address_line(self.country, self.street, self.city, self.state, self.postal_code)

    @property
    def url(self) -> str:
        return detail_url(self.listing_id)


@dataclass(slots=True)
class Website:
    """A business's own site; chain branches and hotel venues share one."""

    domain: str
    url: str
    name: str
    entity_ids: list[str]
    emails: list[str]  # plain values of every email planted on the site
    email_styles: list[str]  # how each email is written: mailto|text|brackets|parens|cfemail
    email_pages: list[str]  # where each email is: home|contact
    cf_key: int
    has_about: bool
    decoys: list[str]  # logo|sprite|placeholder: strings that look like emails but are not
    socials: list[str]


@dataclass(slots=True)
class Directory:
    seed: int
    businesses: list[Business]
    listings: list[Listing]
    truth: dict[str, str | None]
    websites: dict[str, Website]
    _listing_by_id: dict[str, Listing] = field(default_factory=dict, repr=False)
    _business_by_id: dict[str, Business] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._listing_by_id = {lst.listing_id: lst for lst in self.listings}
        self._business_by_id = {b.entity_id: b for b in self.businesses}

    def listing(self, listing_id: str) -> Listing | None:
        return self._listing_by_id.get(listing_id)

    def business(self, entity_id: str) -> Business | None:
        return self._business_by_id.get(entity_id)

    def website(self, host: str) -> Website | None:
        host = host.lower().removeprefix("www.")
        return self.websites.get(host)


# --------------------------------------------------------------------------------------
# Formatting helpers (shared with the HTML renderer)
# --------------------------------------------------------------------------------------


def detail_url(listing_id: str, base: str = DIRECTORY_BASE) -> str:
    return f"{base}/biz/{listing_id}"


def address_line(
    country: str, street: str, city: str, state: str | None, postal_code: str | None
) -> str:
    """The full address as the country writes it."""
    pc = postal_code or ""
    if country == "US":
        return f"{street}, {city}, {state} {pc}".rstrip()
    if country == "GB":
        return f"{street}, {city} {pc}".rstrip()
    return f"{street}, {pc} {city}".replace(",  ", ", ")


def phone_display(country: str, nsn: str) -> str:
    if country == "US":
        return f"({nsn[:3]}) {nsn[3:6]}-{nsn[6:]}"
    if country == "GB":
        return f"0{nsn[:2]} {nsn[2:6]} {nsn[6:]}"
    if country == "DE":
        return f"0{nsn[:2]} {nsn[2:]}"
    return f"{nsn[:3]} {nsn[3:6]} {nsn[6:]}"


def phone_variants(country: str, nsn: str) -> tuple[str, ...]:
    """Other ways the same number is written (all parse to the same E.164)."""
    if country == "US":
        a, b, c = nsn[:3], nsn[3:6], nsn[6:]
        return (f"{a}.{b}.{c}", f"+1 {a}-{b}-{c}", f"{a}-{b}-{c}", f"1-{a}-{b}-{c}",
                f"+1 ({a}) {b}-{c}")  # fmt: skip
    if country == "GB":
        x, y = nsn[2:6], nsn[6:]
        return (f"+44 20 {x} {y}", f"(020) {x} {y}", f"020{x}{y}", f"+44 (0)20 {x} {y}")
    if country == "DE":
        r = nsn[2:]
        return (f"+49 30 {r}", f"030/{r}", f"(030) {r}", f"+49 (0)30 {r}")
    return (f"+30 {nsn}", f"+30 210 {nsn[3:]}", nsn, f"210-{nsn[3:]}")


@lru_cache(maxsize=8192)
def ascii_slug(text: str) -> str:
    """Lower-case letters and digits only; Greek transliterated, accents dropped."""
    out: list[str] = []
    # Greek "ου" is one sound, written "ou" in Latin script.
    folded = "".join(
        ch for ch in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(ch)
    ).replace("ου", "ou")
    for ch in folded:
        if ch.isascii():
            if ch.isalnum():
                out.append(ch)
        elif ch in _GREEK_LATIN:
            out.append(_GREEK_LATIN[ch])
    return "".join(out)


def cf_encode(email: str, key: int) -> str:
    """Cloudflare's `data-cfemail`: hex key byte, then each byte XOR the key."""
    return f"{key:02x}" + "".join(f"{b ^ key:02x}" for b in email.encode("utf-8"))


def cf_decode(encoded: str) -> str:
    key = int(encoded[:2], 16)
    return bytes(int(encoded[i : i + 2], 16) ^ key for i in range(2, len(encoded), 2)).decode()


# --------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------


class _Fill(dict[str, str]):
    """Template slots drawn lazily, so a template only costs the draws it uses."""

    def __init__(self, rng: random.Random, pools: dict[str, tuple[str, ...]], **fixed: str):
        super().__init__(fixed)
        self._rng = rng
        self._pools = pools

    def __missing__(self, key: str) -> str:
        pool = self._pools.get(key.rstrip("2")) or _POOLS["en"][key.rstrip("2")]
        value = self._rng.choice(pool)
        self[key] = value
        return value


def _pick(rng: random.Random, items: Sequence[Any], cum: list[float]) -> Any:
    return items[bisect.bisect(cum, rng.random() * cum[-1])]


class _Generator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.phones: set[str] = set()
        self.domains: dict[str, int] = {}  # base -> how many businesses claimed it
        self.businesses: list[Business] = []
        self.websites: dict[str, Website] = {}

    # --- pieces ---------------------------------------------------------------------

    def _lang(self, city: City) -> str:
        if city.country == "DE":
            return "de"
        if city.country == "GR":
            return "el" if self.rng.random() < 0.6 else "el_latn"
        return "en"

    def _name(self, lang: str, slug: str, city: City) -> str:
        rng = self.rng
        template = rng.choice(_NAMES[lang][slug])
        name = template.format_map(_Fill(rng, _POOLS[lang], city=city.name))
        suffixes = _LEGAL_SUFFIX[city.country]
        if suffixes and slug in _LEGAL_SLUGS and rng.random() < 0.2 and "LLP" not in name:
            name = f"{name} {rng.choice(suffixes)}"
        return name

    def _categories(self, lang: str, slug: str) -> tuple[str, list[str]]:
        main, extra = self.rng.choice(_CATS[slug]["el" if lang == "el" else lang[:2]])
        return main, [main, *extra]

    def _street(self, city: City, lang: str) -> str:
        rng = self.rng
        if city.country == "US":
            street = (
                f"{rng.randint(100, 9999)} {rng.choice(_STREETS[city.key])} {rng.choice(_US_TYPES)}"
            )
            if rng.random() < 0.1:
                street += f" Suite {rng.randint(1, 9) * 100 + rng.randint(0, 20)}"
            return street
        if city.country == "GB":
            return f"{rng.randint(1, 350)} {rng.choice(_STREETS['london'])} {rng.choice(_GB_TYPES)}"
        if city.country == "DE":
            return f"{rng.choice(_STREETS['berlin'])} {rng.randint(1, 200)}"
        key = "athens_el" if lang == "el" else "athens_latn"
        return f"{rng.choice(_STREETS[key])} {rng.randint(1, 180)}"

    def _postal(self, city: City) -> str:
        rng = self.rng
        if city.key == "austin":
            return f"787{rng.randint(1, 59):02d}"
        if city.key == "seattle":
            return f"981{rng.randint(1, 99):02d}"
        if city.key == "london":
            letters = rng.choice(_POSTCODE_LETTERS) + rng.choice(_POSTCODE_LETTERS)
            return f"{rng.choice(_LONDON_OUT)} {rng.randint(1, 9)}{letters}"
        if city.key == "berlin":
            return str(rng.randint(10115, 14199))
        return f"{rng.choice(_ATHENS_PC)} {rng.randint(10, 99)}"

    def _phone(self, city: City) -> str:
        """A fresh national significant number no other business uses."""
        rng = self.rng
        while True:
            if city.country == "US":
                if rng.random() < 0.2:
                    exch, sub = 555, 100 + rng.randint(0, 99)  # the fictional 555-01xx range
                else:
                    exch = rng.randint(200, 999)
                    if exch % 100 == 11 or exch == 555:
                        continue
                    sub = rng.randint(0, 9999)
                nsn = f"{city.area}{exch:03d}{sub:04d}"
            elif city.country == "GB":
                nsn = f"20{rng.choice('378')}{rng.randint(100, 999)}{rng.randint(0, 9999):04d}"
            elif city.country == "DE":
                nsn = f"30{rng.randint(2, 9)}{rng.randint(0, 9999999):07d}"
            else:
                nsn = f"210{rng.randint(2, 9)}{rng.randint(0, 999999):06d}"
            if nsn not in self.phones:
                self.phones.add(nsn)
                return nsn

    def _domain(self, base: str) -> str:
        base = base[:40] or "business"
        n = self.domains.get(base, 0) + 1
        self.domains[base] = n
        # Bases never end in "-<digits>" (slugs are alphanumeric), so numbered ones stay unique.
        return f"{base}.test" if n == 1 else f"{base}-{n}.test"

    def _rating(self) -> tuple[float | None, int | None]:
        rng = self.rng
        if rng.random() < 0.08:
            return None, None
        rating = round(min(5.0, max(1.0, rng.gauss(4.3, 0.5))), 1)
        return rating, int(rng.expovariate(1 / 120)) + 1

    def _status(self) -> str:
        r = self.rng.random()
        if r < 0.93:
            return "OPERATIONAL"
        return "CLOSED_TEMPORARILY" if r < 0.98 else "CLOSED_PERMANENTLY"

    def _latlng(self, city: City) -> tuple[float, float]:
        rng = self.rng
        return (
            round(city.lat + rng.uniform(-0.08, 0.08), 6),
            round(city.lng + rng.uniform(-0.11, 0.11), 6),
        )

    def _business(
        self,
        city: City,
        slug: str,
        *,
        name: str | None = None,
        lang: str | None = None,
        domain: str | None = None,
        website: str | None = None,
        chain: str | None = None,
    ) -> Business:
        rng = self.rng
        lang = lang or self._lang(city)
        name = name or self._name(lang, slug, city)
        category, categories = self._categories(lang, slug)
        nsn = self._phone(city)
        lat, lng = self._latlng(city)
        rating, reviews = self._rating()
        if domain is None and chain is None and rng.random() < RATE_WEBSITE:
            domain = self._domain(f"{ascii_slug(name)[:28]}-{city.key}")
            website = f"http://{'www.' if rng.random() < 0.3 else ''}{domain}/"
        b = Business(
            entity_id=f"E{len(self.businesses) + 1:06d}",
            name=name,
            category_slug=slug,
            category=category,
            categories=categories,
            street=self._street(city, lang),
            city="Αθήνα" if lang == "el" else city.name,
            city_key=city.key,
            state=city.state,
            postal_code=self._postal(city),
            country=city.country,
            phone=phone_display(city.country, nsn),
            phone_nsn=nsn,
            website=website,
            domain=domain,
            latitude=lat,
            longitude=lng,
            rating=rating,
            review_count=reviews,
            open_hours=rng.choice(_HOURS[_HOURS_KIND[slug]]),
            business_status=self._status(),
            lang=lang,
            chain=chain,
        )
        self.businesses.append(b)
        return b

    def _chain(self, size: int) -> None:
        rng = self.rng
        slug = rng.choice(_CHAIN_SLUGS)
        brand = rng.choice(_CHAIN_BRANDS[slug]).format_map(_Fill(rng, _POOLS["en"]))
        domain = self._domain(ascii_slug(brand))
        website = f"http://www.{domain}/"
        for _ in range(size):
            city = _pick(rng, CITIES, _CITY_CUM)
            lang = (
                "en"
                if city.country in ("US", "GB")
                else ("de" if city.country == "DE" else "el_latn")
            )
            self._business(
                city, slug, name=brand, lang=lang, domain=domain, website=website, chain=domain
            )

    def _venues(self, hotel: Business, count: int) -> None:
        rng = self.rng
        templates = list(_VENUES)
        rng.shuffle(templates)
        for template, slug, main in templates[:count]:
            shares_site = hotel.website is not None and rng.random() < 0.6
            rating, reviews = self._rating()
            cat_lang = "el" if hotel.lang == "el" else hotel.lang[:2]
            local_main = main if cat_lang == "en" else _CATS[slug][cat_lang][0][0]
            v = Business(
                entity_id=f"E{len(self.businesses) + 1:06d}",
                name=template.format(hotel=hotel.name),
                category_slug=slug,
                category=local_main,
                categories=[local_main],
                street=hotel.street,
                city=hotel.city,
                city_key=hotel.city_key,
                state=hotel.state,
                postal_code=hotel.postal_code,
                country=hotel.country,
                phone=hotel.phone,
                phone_nsn=hotel.phone_nsn,
                website=hotel.website if shares_site else None,
                domain=hotel.domain if shares_site else None,
                latitude=hotel.latitude,
                longitude=hotel.longitude,
                rating=rating,
                review_count=reviews,
                open_hours=rng.choice(_HOURS[_HOURS_KIND[slug]]),
                business_status=self._status(),
                lang=hotel.lang,
                venue_of=hotel.entity_id,
            )
            self.businesses.append(v)

    def build_businesses(self, n: int) -> None:
        rng = self.rng
        while len(self.businesses) < n:
            remaining = n - len(self.businesses)
            if remaining >= 2 and rng.random() < RATE_CHAIN_GROUP:
                self._chain(min(rng.randint(2, 4), remaining))
                continue
            city = _pick(rng, CITIES, _CITY_CUM)
            slug = _pick(rng, CATEGORY_SLUGS, _CAT_CUM)
            b = self._business(city, slug)
            if slug == "hotel" and remaining > 1 and rng.random() < RATE_HOTEL_VENUES:
                self._venues(b, min(rng.randint(1, 3), remaining - 1))

    def build_websites(self) -> None:
        rng = self.rng
        for b in self.businesses:
            if b.domain is None:
                continue
            site = self.websites.get(b.domain)
            if site is not None:
                site.entity_ids.append(b.entity_id)
                continue
            assert b.website is not None
            emails: list[str] = []
            if rng.random() < RATE_EMAILS:
                locals_ = ["info", "contact", "hello", "office"]
                if b.category_slug in ("hotel", "restaurant"):
                    locals_ += ["bookings", "reservations"]
                if b.category_slug in ("dentist", "salon"):
                    locals_.append("appointments")
                first = ascii_slug(rng.choice(_POOLS["en"]["first"]))
                last = ascii_slug(rng.choice(_POOLS["en"]["last"]))
                locals_.append(f"{first}.{last}")
                for local in rng.sample(locals_, 1 if rng.random() < 0.8 else 2):
                    emails.append(f"{local}@{b.domain}")
            decoys = ["logo"]
            if rng.random() < 0.4:
                decoys.append("sprite")
            if rng.random() < 0.5:
                decoys.append("placeholder")
            handle = b.domain.removesuffix(".test").replace("-", "")
            socials = []
            if rng.random() < 0.5:
                socials.append(f"https://www.facebook.com/{handle}")
            if rng.random() < 0.3:
                socials.append(f"https://www.instagram.com/{handle}")
            self.websites[b.domain] = Website(
                domain=b.domain,
                url=b.website,
                name=b.name,
                entity_ids=[b.entity_id],
                emails=emails,
                email_styles=[_pick(rng, _EMAIL_STYLES, _EMAIL_STYLE_CUM) for _ in emails],
                email_pages=["home" if rng.random() < 0.4 else "contact" for _ in emails],
                cf_key=rng.randint(1, 255),
                has_about=rng.random() < 0.5,
                decoys=decoys,
                socials=socials,
            )

    # --- listings -------------------------------------------------------------------

    def _listing(self, b: Business, kind: str) -> Listing:
        return Listing(
            listing_id="",
            entity_id=b.entity_id,
            kind=kind,
            city_key=b.city_key,
            category_slug=b.category_slug,
            name=b.name,
            category=b.category,
            categories=list(b.categories),
            street=b.street,
            city=b.city,
            postal_code=b.postal_code,
            state=b.state,
            country=b.country,
            phone=b.phone,
            website=b.website,
            emails=[],
            rating=b.rating,
            review_count=b.review_count,
            latitude=b.latitude,
            longitude=b.longitude,
            open_hours=b.open_hours,
            business_status=b.business_status,
        )

    def _name_variant(self, name: str, country: str) -> str:
        rng = self.rng
        options: list[str] = []
        if " & " in name:
            options.append(name.replace(" & ", " and "))
        if " and " in name:
            options.append(name.replace(" and ", " & "))
        if "'s " in name:
            options.append(name.replace("'s ", "s ", 1))
        if "Deli" in name and "Delicatessen" not in name:
            options.append(name.replace("Deli", "Delicatessen"))
        if " Co." in name:
            options.append(name.replace(" Co.", " Company"))
        if name.startswith("Dr. "):
            options.append("Doctor " + name[4:])
        if name.startswith("The "):
            options.append(name[4:])
        suffixes = _LEGAL_SUFFIX[country]
        stripped = name
        for s in suffixes:
            stripped = stripped.removesuffix(f" {s}")
        if stripped != name:
            options.append(stripped)
        elif suffixes:
            options.append(f"{name} {rng.choice(suffixes)}")
        options.append(name.upper())
        options.append(name.replace("-", " ") if "-" in name else f"{name}.")
        return rng.choice(options)

    def _street_variant(self, street: str, country: str) -> str:
        for long, short in _ABBREV[country]:
            if long in street and long != short:
                return street.replace(long, short)
        return street

    def build_listings(self) -> list[Listing]:
        rng = self.rng
        out: list[Listing] = []
        for b in self.businesses:
            site = self.websites.get(b.domain) if b.domain else None
            primary = self._listing(b, "primary")
            if rng.random() < RATE_MISSING_PHONE:
                primary.phone = None
                primary.flags.append("missing_phone")
            elif rng.random() < RATE_BAD_PHONE:
                primary.phone = rng.choice(_BAD_PHONES)
                primary.flags.append("bad_phone")
            if primary.website and rng.random() < RATE_MISSING_WEBSITE:
                primary.website = None
                primary.flags.append("missing_website")
            if primary.rating is not None and rng.random() < RATE_MISSING_RATING:
                primary.rating = primary.review_count = None
                primary.flags.append("missing_rating")
            if rng.random() < RATE_MISSING_HOURS:
                primary.open_hours = None
                primary.flags.append("missing_hours")
            if primary.website and site and site.emails and rng.random() < RATE_EMAIL_ON_LISTING:
                primary.emails = [site.emails[0]]
            out.append(primary)

            r = rng.random()
            if r < RATE_DUPLICATE:
                out.append(self._duplicate(b))
            elif r < RATE_DUPLICATE + RATE_MOVED:
                out.append(self._moved(b))
        self._not_leads(out)
        for lst in out:
            if rng.random() < RATE_MALFORMED:
                lst.malformed = "truncated" if rng.random() < 0.5 else "missing_block"
            lst.jsonld = rng.random() < RATE_JSONLD
        return out

    def _duplicate(self, b: Business) -> Listing:
        rng = self.rng
        dup = self._listing(b, "duplicate")
        changes = rng.sample(("name", "phone", "street", "drop"), rng.randint(1, 3))
        if "name" in changes:
            dup.name = self._name_variant(b.name, b.country)
            dup.flags.append("name_variant")
        if "phone" in changes:
            dup.phone = rng.choice(phone_variants(b.country, b.phone_nsn))
            dup.flags.append("phone_format")
        if "street" in changes:
            variant = self._street_variant(b.street, b.country)
            if variant != b.street:
                dup.street = variant
                dup.flags.append("street_abbrev")
        if "drop" in changes:
            # Drop the phone only when it was not just reformatted: flags must stay true.
            if dup.website and ("phone" in changes or rng.random() < 0.6):
                dup.website = None
                dup.flags.append("missing_website")
            elif "phone" not in changes:
                dup.phone = None
                dup.flags.append("missing_phone")
        if not dup.flags:
            dup.phone = rng.choice(phone_variants(b.country, b.phone_nsn))
            dup.flags.append("phone_format")
        # A second listing is an older copy: its review figures lag behind.
        if dup.review_count:
            dup.review_count = max(1, dup.review_count - rng.randint(0, 20))
        return dup

    def _moved(self, b: Business) -> Listing:
        """The listing at the old address; the business's record has the new one."""
        city = CITY_BY_KEY[b.city_key]
        old = self._listing(b, "moved")
        old.street = self._street(city, b.lang)
        old.postal_code = self._postal(city)
        old.latitude, old.longitude = self._latlng(city)
        old.flags.append("moved_old_address")
        return old

    def _not_leads(self, out: list[Listing]) -> None:
        rng = self.rng
        for _ in range(max(1, round(len(out) * RATE_NOT_LEAD))):
            city = _pick(rng, CITIES, _CITY_CUM)
            slug = _pick(rng, CATEGORY_SLUGS, _CAT_CUM)
            lang = self._lang(city)
            category, categories = self._categories(lang, slug)
            row = Listing(
                listing_id="", entity_id=None, kind="not_lead", city_key=city.key,
                category_slug=slug, name=None, category=category, categories=categories,
                street=None, city=None, postal_code=None, state=None, country=None, phone=None,
                website=None, emails=[], rating=None, review_count=None, latitude=None,
                longitude=None, open_hours=None, business_status=None,
            )  # fmt: skip
            if rng.random() < 0.5:
                row.name = rng.choice(_AD_NAMES)
                row.flags.append("ad_row")
            else:
                # A row with a place but no name: nobody to call it, not a lead.
                row.street = self._street(city, lang)
                row.city = "Αθήνα" if lang == "el" else city.name
                row.state, row.country = city.state, city.country
                row.postal_code = self._postal(city)
                row.phone = phone_display(city.country, self._phone(city))
                row.latitude, row.longitude = self._latlng(city)
                row.flags.append("no_name")
            out.append(row)


def generate(seed: int = 42, n_businesses: int = 500) -> Directory:
    """Build the directory world for `seed`; the same seed always gives the same world."""
    if n_businesses < 1:
        raise ValueError("n_businesses must be at least 1")
    rng = random.Random(seed)
    gen = _Generator(rng)
    gen.build_businesses(n_businesses)
    gen.build_websites()
    listings = gen.build_listings()
    rng.shuffle(listings)
    for i, lst in enumerate(listings, 1):
        lst.listing_id = str(i)
    truth = {lst.listing_id: lst.entity_id for lst in listings}
    return Directory(
        seed=seed, businesses=gen.businesses, listings=listings, truth=truth, websites=gen.websites
    )


# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------


def raw_record(listing: Listing) -> dict[str, Any]:
    """The raw record the `directory` spider yields for this listing's detail page."""
    record: dict[str, Any] = dict.fromkeys(RAW_FIELDS)
    record.update(source=SOURCE, source_id=listing.listing_id, url=listing.url)
    if listing.malformed:
        record["parse_error"] = MALFORMED_ERROR
        return record
    record.update(
        name=listing.name,
        category=listing.category,
        categories=list(listing.categories),
        address=listing.address,
        street=listing.street,
        city=listing.city,
        postal_code=listing.postal_code,
        state=listing.state,
        country=listing.country,
        phone=listing.phone,
        website=listing.website,
        emails=list(listing.emails),
        rating=listing.rating,
        review_count=listing.review_count,
        latitude=listing.latitude,
        longitude=listing.longitude,
        open_hours={k: list(v) for k, v in listing.open_hours.items()}
        if listing.open_hours
        else None,
        business_status=listing.business_status,
    )
    return record


def raw_records(directory: Directory) -> list[dict[str, Any]]:
    """Every listing as the raw record a spider yields (keys exactly `RAW_FIELDS`)."""
    return [raw_record(lst) for lst in directory.listings]


_LISTING_FIELDS = [f.name for f in fields(Listing)]
_BUSINESS_FIELDS = [f.name for f in fields(Business)]


def listing_dict(listing: Listing) -> dict[str, Any]:
    d = {name: getattr(listing, name) for name in _LISTING_FIELDS}
    d["address"] = listing.address
    d["url"] = listing.url
    return d


def write_site_data(directory: Directory, out_dir: str | Path) -> Path:
    """Write listings.jsonl, businesses.jsonl, ground_truth.json, export.csv, emails.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dumps = json.dumps
    with (out / "listings.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(
            dumps(listing_dict(lst), ensure_ascii=False) + "\n" for lst in directory.listings
        )
    with (out / "businesses.jsonl").open("w", encoding="utf-8") as fh:
        for b in directory.businesses:
            d = {name: getattr(b, name) for name in _BUSINESS_FIELDS}
            d["address"] = b.address
            fh.write(dumps(d, ensure_ascii=False) + "\n")
    (out / "ground_truth.json").write_text(
        dumps(directory.truth, ensure_ascii=False), encoding="utf-8"
    )
    with (out / "export.csv").open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["listing_id", "name", "address", "city", "phone", "category", "website"])
        for lst in directory.listings:
            writer.writerow(
                [lst.listing_id, lst.name or "", lst.address or "", lst.city or "",
                 lst.phone or "", lst.category or "", lst.website or ""]
            )  # fmt: skip
    emails = {domain: list(site.emails) for domain, site in directory.websites.items()}
    # Compact JSON: an indent switches json to its pure-Python encoder, 10x slower at 100k.
    (out / "emails.json").write_text(dumps(emails, ensure_ascii=False), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the sandbox business directory.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--businesses", type=int, default=500)
    parser.add_argument("--out", type=Path, required=True, help="Directory for the site data.")
    args = parser.parse_args(argv)
    directory = generate(args.seed, args.businesses)
    write_site_data(directory, args.out)
    print(
        f"{len(directory.businesses)} businesses, {len(directory.listings)} listings, "
        f"{len(directory.websites)} websites -> {args.out}"
    )


if __name__ == "__main__":
    main()
