"""The raw business record every spider yields, whatever the source.

Field names follow the Google Maps parser's snake_case output so every source feeds
`tasks/normalize` the same shape. Values are as the source shows them: normalisation
(E.164 phones, domains, taxonomy slugs) happens in the pipeline, not in spiders.
"""

from __future__ import annotations

import scrapy

RAW_FIELDS: tuple[str, ...] = (
    "source",  # "directory", "google_maps", ...
    "source_id",  # the source's own id for the record (required)
    "url",  # page the record was read from
    "name",
    "category",  # main category as shown
    "categories",  # list of categories as shown
    "address",  # full address line as shown
    "street",
    "city",
    "postal_code",
    "state",
    "country",  # as shown: a name or an ISO code
    "phone",  # as shown
    "website",
    "emails",  # list of email strings shown on the page
    "rating",
    "review_count",
    "latitude",
    "longitude",
    "open_hours",  # {"Monday": ["9 AM-5 PM"], ...}
    "business_status",
    "place_id",
    "cid",
    "data_id",
    "parse_error",  # set instead of the fields when a page could not be parsed
)


class BusinessItem(scrapy.Item):
    """A business as one source shows it; see RAW_FIELDS for the meaning of each field."""

    source = scrapy.Field()
    source_id = scrapy.Field()
    url = scrapy.Field()
    name = scrapy.Field()
    category = scrapy.Field()
    categories = scrapy.Field()
    address = scrapy.Field()
    street = scrapy.Field()
    city = scrapy.Field()
    postal_code = scrapy.Field()
    state = scrapy.Field()
    country = scrapy.Field()
    phone = scrapy.Field()
    website = scrapy.Field()
    emails = scrapy.Field()
    rating = scrapy.Field()
    review_count = scrapy.Field()
    latitude = scrapy.Field()
    longitude = scrapy.Field()
    open_hours = scrapy.Field()
    business_status = scrapy.Field()
    place_id = scrapy.Field()
    cid = scrapy.Field()
    data_id = scrapy.Field()
    parse_error = scrapy.Field()
