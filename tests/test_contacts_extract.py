"""The pure contact extractors: each way an email is written, decoys, phones, socials, links."""

from __future__ import annotations

import pytest

from sandbox.directory.generate import cf_encode, generate
from sandbox.directory.site import render_website
from spiders.contacts.extract import (
    contact_links,
    decode_cfemail,
    extract_contacts,
    is_placeholder_email,
    same_site,
    site_domain,
    valid_email,
)

URL = "https://www.acme-plumbing.com/"


def emails(html: str, url: str = URL) -> list[str]:
    return extract_contacts(html, url).emails


def page(body: str) -> str:
    return f"<!DOCTYPE html><html><head><title>Acme</title></head><body>{body}</body></html>"


# --- emails --------------------------------------------------------------------------------


def test_mailto_links_with_query_encoding_and_case() -> None:
    html = page(
        '<a href="mailto:Info@Acme-Plumbing.com?subject=Hi">Write to us</a>'
        '<a href="MAILTO:sales%40acme-plumbing.com">Sales</a>'
        '<a href="mailto:a@acme-plumbing.com,b@acme-plumbing.com">Both</a>'
    )
    assert emails(html) == [
        "info@acme-plumbing.com",
        "sales@acme-plumbing.com",
        "a@acme-plumbing.com",
        "b@acme-plumbing.com",
    ]


def test_text_emails_in_page_order_deduplicated_and_lower_cased() -> None:
    html = page(
        "<p>Office: Office@acme-plumbing.com.</p>"
        "<p>Jobs (jobs@acme-plumbing.com) or office@acme-plumbing.com again</p>"
        '<a href="mailto:office@acme-plumbing.com">office@acme-plumbing.com</a>'
    )
    assert emails(html) == ["office@acme-plumbing.com", "jobs@acme-plumbing.com"]


def test_an_address_split_over_inline_tags_is_read_whole() -> None:
    assert emails(page("<p>info<span>@</span>acme-plumbing<b>.com</b></p>")) == [
        "info@acme-plumbing.com"
    ]


def test_block_elements_separate_words() -> None:
    # Without the break, "Contact" and the address would glue into contactinfo@...
    assert emails(page("<div>Contact</div><div>info@acme-plumbing.com</div>")) == [
        "info@acme-plumbing.com"
    ]


@pytest.mark.parametrize(
    "shown",
    [
        "info [at] acme-plumbing [dot] com",
        "info[at]acme-plumbing[dot]com",
        "info (at) acme-plumbing (dot) com",
        "info {at} acme-plumbing {dot} com",
        "info &lt;at&gt; acme-plumbing &lt;dot&gt; com",
        "info [AT] acme-plumbing [DOT] com",
        "info [at] acme-plumbing.com",
        "info [@] acme-plumbing [.] com",
        "info at acme-plumbing dot com",
        "info AT acme-plumbing DOT com",
    ],
)
def test_obfuscated_addresses(shown: str) -> None:
    assert emails(page(f"<p>Email: {shown}</p>")) == ["info@acme-plumbing.com"]


def test_obfuscated_dotted_local_part() -> None:
    html = page(
        "<p>john [dot] smith [at] acme-plumbing [dot] co [dot] uk</p>"
        "<p>mary dot jones at acme-plumbing dot com</p>"
    )
    assert emails(html) == ["john.smith@acme-plumbing.co.uk", "mary.jones@acme-plumbing.com"]


def test_prose_with_at_is_not_an_address() -> None:
    html = page(
        "<p>Find us at acme-plumbing.com or visit us at the Main Street dot com store.</p>"
        "<p>Open (at) 9 and closed (at) 5. We are at the corner.</p>"
    )
    assert emails(html) == []


def test_cloudflare_cfemail_attribute_and_protection_link() -> None:
    enc = cf_encode("bookings@acme-plumbing.com", 0x5A)
    enc2 = cf_encode("owner@acme-plumbing.com", 0xC3)
    html = page(
        f'<a href="/cdn-cgi/l/email-protection#{enc}"><span class="__cf_email__" '
        f'data-cfemail="{enc}">[email&#160;protected]</span></a>'
        f'<a href="/cdn-cgi/l/email-protection#{enc2}">Email the owner</a>'
    )
    assert emails(html) == ["bookings@acme-plumbing.com", "owner@acme-plumbing.com"]


@pytest.mark.parametrize("key", [1, 0x20, 0x7F, 0x80, 0xFF])
@pytest.mark.parametrize("email", ["a@b.co", "rosa.obrien@beancafe-austin.test", "ü@ex.de"])
def test_cfemail_round_trip(email: str, key: int) -> None:
    assert decode_cfemail(cf_encode(email, key)) == email


@pytest.mark.parametrize("junk", ["", "zz", "5a", "5a4", "not-hex!", "5aff"])
def test_cfemail_junk_is_none(junk: str) -> None:
    assert decode_cfemail(junk) is None


def test_image_names_placeholders_and_other_decoys_are_ignored() -> None:
    html = (
        "<html><head><style>.icons{background-image:url(/img/sprite@3x.webp)}</style>"
        "<script>var x = 'tracker@analytics.com';</script></head><body>"
        '<img src="/img/logo.png" srcset="/img/logo@2x.png 2x" alt="logo">'
        "<p>logo@2x.png icon@3x.jpg banner@1.5x.gif hero@2x.webp a@b.svg photo@home.jpeg</p>"
        '<input type="email" placeholder="you@example.com">'
        "<p>you@example.com email@domain.com name@acme-plumbing.com user@yourdomain.com</p>"
        "<p>someone@example.org test@mail.example bob@site.invalid</p>"
        "<p>0a1b2c3d4e5f60718293a4b5c6d7e8f9@sentry.io x@o123.ingest.sentry.io</p>"
        "<p>broken@ nope@nope no@.com two@@acme.com</p>"
        "<!-- hidden@acme-plumbing.com -->"
        '<template><p>tpl@acme-plumbing.com</p><a href="mailto:tpl2@acme-plumbing.com">x</a>'
        "</template>"
        "<p>real@acme-plumbing.com</p></body></html>"
    )
    assert emails(html) == ["real@acme-plumbing.com"]


def test_json_ld_email_is_read() -> None:
    html = page(
        '<script type="application/ld+json">{"@type": "LocalBusiness", '
        '"email": "hello@acme-plumbing.com"}</script>'
    )
    assert emails(html) == ["hello@acme-plumbing.com"]


@pytest.mark.parametrize(
    ("email", "valid", "placeholder"),
    [
        ("info@acme.com", True, False),
        ("first.last+tag@mail.acme.co.uk", True, False),
        ("logo@2x.png", False, False),
        ("x@y.webp", False, False),
        ("a..b@acme.com", False, False),
        (".a@acme.com", False, False),
        ("you@example.com", True, True),
        ("email@domain.com", True, True),
        ("name@acme.com", True, True),
        ("info@example.co.uk", True, True),
        ("info@acme.test", True, False),  # the sandbox's reserved TLD is a real site there
    ],
)
def test_validity_and_placeholders(email: str, valid: bool, placeholder: bool) -> None:
    assert valid_email(email) is valid
    assert is_placeholder_email(email) is placeholder


# --- phones --------------------------------------------------------------------------------


def test_phones_from_tel_links_and_labelled_or_international_text() -> None:
    html = page(
        '<p>Tel: <a href="tel:(512) 555-0194">(512) 555-0194</a></p>'
        '<a href="tel:+1-206-555-0100">Call</a>'
        "<p>Phone: 020 7946 0958</p>"
        "<p>Τηλ. 210 123 4567</p>"
        "<p>Reach us on +49 30 1234567</p>"
        "<p>Fax: 030 7654321</p>"
        "<p>Order 12345678 shipped 2024-01-15; 10435 Berlin, Kollwitzplatz 12</p>"
        "<p>© (2019-2024) Acme. Phone lines open 2019-2024</p>"
        "<p>Tel: (512) 555-0194</p>"
    )
    assert extract_contacts(html, URL).phones == [
        "(512) 555-0194",
        "+1-206-555-0100",
        "020 7946 0958",
        "210 123 4567",
        "+49 30 1234567",
    ]


def test_numbers_on_separate_lines_stay_separate() -> None:
    html = page("<p>Tel: (512) 555-0194<br>(512) 555-0195</p>")
    assert extract_contacts(html, URL).phones == ["(512) 555-0194", "(512) 555-0195"]


# --- socials and links ---------------------------------------------------------------------


def test_social_profiles_and_not_share_buttons() -> None:
    html = page(
        '<a href="https://www.facebook.com/sharer/sharer.php?u=x">Share</a>'
        '<a href="https://twitter.com/intent/tweet?text=x">Tweet</a>'
        '<a href="https://www.facebook.com/acmeplumbing/?ref=footer">Facebook</a>'
        '<a href="https://www.facebook.com/other">Second facebook</a>'
        '<a href="https://instagram.com/acme.plumbing">Instagram</a>'
        '<a href="https://www.linkedin.com/company/acme-plumbing/">LinkedIn</a>'
        '<a href="https://www.linkedin.com/shareArticle?url=x">Share</a>'
        '<a href="https://x.com/acmeplumbing">X</a>'
        '<a href="https://www.youtube.com/watch?v=abc">A video</a>'
        '<a href="https://www.youtube.com/@acmeplumbing">YouTube</a>'
        '<a href="https://www.tiktok.com/@acmeplumbing">TikTok</a>'
    )
    assert extract_contacts(html, URL).socials == {
        "facebook": "https://www.facebook.com/acmeplumbing",
        "twitter": "https://x.com/acmeplumbing",
        "instagram": "https://instagram.com/acme.plumbing",
        "linkedin": "https://www.linkedin.com/company/acme-plumbing",
        "youtube": "https://www.youtube.com/@acmeplumbing",
        "tiktok": "https://www.tiktok.com/@acmeplumbing",
    }


def test_links_are_absolute_without_fragments() -> None:
    html = page(
        '<a href="/contact#form">C</a><a href="about">A</a><a href="#top">Top</a>'
        '<a href="javascript:void(0)">J</a><a href="mailto:x@acme-plumbing.com">M</a>'
        '<a href="https://other.org/x">O</a><a href="/contact">again</a>'
    )
    assert extract_contacts(html, "https://www.acme-plumbing.com/services/").links == [
        "https://www.acme-plumbing.com/contact",
        "https://www.acme-plumbing.com/services/about",
        "https://other.org/x",
    ]


def test_contact_links_same_site_ranked() -> None:
    html = page(
        '<a href="/">Home</a>'
        '<a href="/services">Services</a>'
        '<a href="/team">Our team</a>'
        '<a href="/privacy">Privacy</a>'
        '<a href="/about-us">About</a>'
        '<a href="https://shop.acme-plumbing.com/kontakt">Shop</a>'
        '<a href="/p/42">Contact us</a>'
        '<a href="/contact/">Contact</a>'
        '<a href="/contact">Contact again</a>'
        '<a href="https://other.com/contact">Partner contact</a>'
        '<a href="/files/contact.pdf">Contact sheet (PDF)</a>'
        '<a href="/%CE%B5%CF%80%CE%B9%CE%BA%CE%BF%CE%B9%CE%BD%CF%89%CE%BD%CE%AF%CE%B1">Greek</a>'
        '<a href="/de/impressum">Impressum</a>'
    )
    links = contact_links(html, URL)
    assert links[:2] == [
        "https://www.acme-plumbing.com/contact/",  # keyword in path and text
        "https://www.acme-plumbing.com/de/impressum",
    ]
    # Contact-like by path or by text only: shorter paths first.
    assert links[2:5] == [
        "https://www.acme-plumbing.com/p/42",
        "https://shop.acme-plumbing.com/kontakt",  # a subdomain is the same site
        "https://www.acme-plumbing.com/%CE%B5%CF%80%CE%B9%CE%BA%CE%BF%CE%B9%CE%BD%CF%89%CE%BD%CE%AF%CE%B1",
    ]
    assert links[5:] == [
        "https://www.acme-plumbing.com/team",
        "https://www.acme-plumbing.com/about-us",
        "https://www.acme-plumbing.com/privacy",
    ]


def test_site_domain_and_same_site() -> None:
    assert site_domain("http://www.shop.co.uk/x") == "shop.co.uk"
    assert site_domain("http://www.artsdeli-austin.test/") == "artsdeli-austin.test"
    assert site_domain("http://127.0.0.1:8800/") == "127.0.0.1"
    assert same_site("http://www.a.test/", "https://a.test/contact")
    assert not same_site("http://a.test/", "http://b.test/")
    assert not same_site("http://a.github.io/", "http://b.github.io/")


# --- the sandbox's websites ----------------------------------------------------------------


def test_every_planted_email_on_the_sandbox_sites_and_nothing_else() -> None:
    world = generate(42, 150)
    styles = set()
    for site in world.websites.values():
        found: list[str] = []
        socials: dict[str, str] = {}
        for path in ("/", "/contact", "/about"):
            html = render_website(world, site, path)
            if html is None:
                continue
            page_contacts = extract_contacts(html, site.url.rstrip("/") + path)
            found += [e for e in page_contacts.emails if e not in found]
            socials.update(page_contacts.socials)
        assert sorted(found) == sorted(site.emails), (site.domain, site.email_styles)
        assert sorted(socials.values()) == sorted(site.socials)
        home = render_website(world, site, "/")
        assert home is not None
        expected = [site.url + "contact"] + ([site.url + "about"] if site.has_about else [])
        assert contact_links(home, site.url) == expected
        styles.update(site.email_styles)
    assert styles == {"mailto", "text", "brackets", "parens", "cfemail"}
