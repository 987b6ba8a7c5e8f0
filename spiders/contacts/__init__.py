"""Contact details on a business's own website: pure parsers, no Scrapy (see `extract`)."""

from spiders.contacts.extract import (
    PageContacts,
    contact_links,
    decode_cfemail,
    extract_contacts,
    is_placeholder_email,
    same_site,
    site_domain,
    site_key,
    valid_email,
)

__all__ = [
    "PageContacts",
    "contact_links",
    "decode_cfemail",
    "extract_contacts",
    "is_placeholder_email",
    "same_site",
    "site_domain",
    "site_key",
    "valid_email",
]
