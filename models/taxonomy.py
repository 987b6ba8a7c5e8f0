"""The category taxonomy: every lead's `category` is one of these slugs.

Raw categories are kept as shown (`Lead.categories`); `category_slug` maps them onto the
taxonomy by keyword, first raw category first, and anything it does not recognise becomes
`other`. Keywords are lower-case substrings, in the languages our sources answer in.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

# slug -> keywords. Order matters: the first slug whose keyword occurs wins, so the more
# specific slugs (dentist) come before the broader ones (health).
TAXONOMY: dict[str, tuple[str, ...]] = {
    "dentist": ("dentist", "dental", "orthodont", "οδοντ", "zahnarzt", "dentista"),
    "doctor": ("doctor", "physician", "clinic", "medical", "γιατρ", "ιατρ", "arzt", "médico"),
    "pharmacy": ("pharmac", "drugstore", "φαρμακ", "apotheke", "farmacia"),
    "veterinarian": ("veterinar", "animal hospital", "κτηνιατρ", "tierarzt"),
    "restaurant": (
        "restaurant",
        "deli",
        "delicatessen",
        "diner",
        "bistro",
        "pizzeria",
        "pizza",
        "steakhouse",
        "sushi",
        "taverna",
        "εστιατόρ",
        "ταβέρν",
        "ψητοπωλ",
        "σουβλατζ",
        "trattoria",
        "gaststätte",
    ),
    "cafe": ("cafe", "café", "coffee", "bakery", "καφε", "καφέ", "αρτοποι", "bäckerei"),
    "bar": ("bar", "pub", "brewery", "μπαρ", "kneipe"),
    "hotel": ("hotel", "motel", "inn", "hostel", "ξενοδοχ", "resort", "guest house"),
    "lawyer": ("lawyer", "attorney", "law firm", "legal", "δικηγορ", "anwalt", "abogado"),
    "accountant": ("accountant", "accounting", "bookkeep", "tax", "λογιστ", "steuerberater"),
    "plumber": ("plumb", "υδραυλ", "klempner", "fontaner"),
    "electrician": ("electrician", "electrical", "ηλεκτρολ", "elektriker"),
    "contractor": ("contractor", "construction", "roofing", "builder", "κατασκευ", "bauunternehm"),
    "auto_repair": (
        "auto repair",
        "mechanic",
        "car repair",
        "garage",
        "συνεργείο",
        "autowerkstatt",
    ),
    "real_estate": ("real estate", "realtor", "property", "μεσιτ", "ακίνητ", "immobili"),
    "salon": ("salon", "hair", "barber", "beauty", "nail", "κομμωτ", "friseur", "spa"),
    "fitness": ("gym", "fitness", "yoga", "pilates", "γυμναστ", "crossfit"),
    "retail": ("store", "shop", "boutique", "market", "κατάστημα", "geschäft", "tienda"),
    "education": ("school", "tutor", "academy", "σχολ", "φροντιστ", "schule"),
    "software": ("software", "it services", "web design", "computer", "λογισμικ"),
}

OTHER = "other"
CATEGORY_SLUGS: tuple[str, ...] = (*TAXONOMY.keys(), OTHER)


def _fold(text: str) -> str:
    # Greek and accented text: compare without case and without accents.
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


_FOLDED: dict[str, tuple[str, ...]] = {
    slug: tuple(_fold(k) for k in keys) for slug, keys in TAXONOMY.items()
}


def _matches(keyword: str, folded: str) -> bool:
    # Short keywords ("bar", "inn", "tax") must be whole words, or "barber" would be a bar.
    if len(keyword) <= 4:
        return keyword in folded.replace("-", " ").replace("/", " ").split()
    return keyword in folded


def category_slug(categories: list[str] | tuple[str, ...] | str | None) -> str:
    """Map raw categories (as shown by the source) onto one taxonomy slug."""
    if not categories:
        return OTHER
    if isinstance(categories, str):
        return _slug((categories,))
    return _slug(tuple(categories))


@lru_cache(maxsize=65_536)
def _slug(categories: tuple[str, ...]) -> str:
    for raw in categories:
        if not raw:
            continue
        folded = _fold(raw)
        if folded.replace(" ", "_") in _FOLDED:
            return folded.replace(" ", "_")
        for slug, keywords in _FOLDED.items():
            if any(_matches(k, folded) for k in keywords):
                return slug
    return OTHER
