"""Emails, phones, social profiles and contact-page links on a business's own web page.

Pure functions of (html, url): no Scrapy, no network, so they are tested with HTML snippets
and reused outside crawls. What counts as an email is deliberately strict, because a false
address costs more downstream (bounces, verifier credits, a spoiled sender reputation) than a
missed one that the next enrichment step can still find:

- sources, in page order: `mailto:` links, visible text (plus JSON-LD, which is structured
  data meant to be read), Cloudflare's `data-cfemail` / `/cdn-cgi/l/email-protection#...`
  and the common obfuscations `name [at] domain [dot] com`, `(at)/(dot)`, `{at}`, `<at>`,
  and `name at domain dot com` written out in words;
- dropped: file names that look like emails (`logo@2x.png`, `sprite@3x.webp`), placeholders
  (`you@example.com`, `email@domain.com`, `name@...`, reserved example domains), tracking
  ids (`<hex>@sentry...`) and anything malformed;
- never read: attributes other than href/data-cfemail (`placeholder=`, `srcset=`, CSS), and
  HTML comments, which is where most decoys live.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from html.parser import HTMLParser
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import tldextract

# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------


@dataclass
class PageContacts:
    """What one page shows; every list is de-duplicated and in page order."""

    emails: list[str] = field(default_factory=list)  # lower-case
    phones: list[str] = field(default_factory=list)  # as shown, whitespace collapsed
    socials: dict[str, str] = field(default_factory=dict)  # network -> profile URL (first)
    links: list[str] = field(default_factory=list)  # absolute http(s) links, no fragment


# --------------------------------------------------------------------------------------
# Sites
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _extractor() -> tldextract.TLDExtract:
    # The bundled Public Suffix List (no network). `.test` is a reserved TLD (RFC 2606) that
    # never exists publicly; the sandbox's business sites live under it, so it is treated as
    # a public suffix everywhere: `www.artsdeli.test` and `artsdeli.test` are one site.
    # Private suffixes count too: `a.github.io` and `b.github.io` are different sites.
    return tldextract.TLDExtract(
        suffix_list_urls=(), extra_suffixes=["test"], include_psl_private_domains=True
    )


@lru_cache(maxsize=65536)
def site_domain(url: str) -> str | None:
    """The registered domain of a URL's host (`www.shop.co.uk` -> `shop.co.uk`), or None."""
    host = urlsplit(url if "//" in url else f"//{url}").hostname
    if not host:
        return None
    host = host.rstrip(".").lower()
    # An IP address or a single-label host has no registered domain: the host is the site.
    return _extractor()(host).top_domain_under_public_suffix or host


def site_key(url: str) -> str:
    """One key per website whatever the scheme, `www.` or trailing slash of its URL."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().removeprefix("www.")
    return f"{host}{parts.path.rstrip('/')}"


def same_site(url: str, other: str) -> bool:
    """Whether two URLs are on the same registered domain (subdomains included)."""
    a, b = site_domain(url), site_domain(other)
    return a is not None and a == b


# --------------------------------------------------------------------------------------
# Emails
# --------------------------------------------------------------------------------------

_EMAIL_IN_TEXT = re.compile(
    r"(?<![\w.%+-])[a-z0-9][a-z0-9._%+-]{0,63}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"[a-z]{2,24}(?![a-z0-9-])",
    re.IGNORECASE,
)
_EMAIL_FULL = re.compile(
    r"[a-z0-9](?:[a-z0-9._%+-]{0,62}[a-z0-9_%+-])?@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"[a-z]{2,24}"
)

# Bracketed "at"/"dot" are unambiguous: nobody writes "[at]" in prose.
_OPEN, _CLOSE = r"[\[({<]", r"[\])}>]"
_AT_BRACKETED = re.compile(rf"\s*{_OPEN}\s*(?:at|@)\s*{_CLOSE}\s*", re.IGNORECASE)
_DOT_BRACKETED = re.compile(rf"\s*{_OPEN}\s*(?:dot|\.)\s*{_CLOSE}\s*", re.IGNORECASE)
# Words only ("info at acme dot com"): the domain must contain a spelled-out " dot ", so
# prose like "visit us at acme.com" is not turned into us@acme.com.
_DOT_WORD = re.compile(r"\s+dot\s+", re.IGNORECASE)
_PLAIN_AT = re.compile(
    r"(?<![\w.%+-])([a-z0-9][a-z0-9_%+-]*(?:(?:\s+dot\s+|\.)[a-z0-9_%+-]+)*)"
    r"\s+at\s+"
    r"([a-z0-9-]+(?:(?:\s+dot\s+|\.)[a-z0-9-]+)+)(?![\w-])",
    re.IGNORECASE,
)
# Words that precede " at " in prose ("find us at ...") and are never a mailbox.
_PROSE_WORDS = frozenset(
    [
        "us",
        "me",
        "we",
        "you",
        "them",
        "him",
        "her",
        "it",
        "look",
        "find",
        "visit",
        "meet",
        "online",
        "here",
        "there",
        "open",
    ]
)

# A "domain" ending in a file extension is a file name (logo@2x.png), not an address.
_FILE_EXTENSIONS = frozenset(
    [
        "png",
        "jpg",
        "jpeg",
        "jpe",
        "jfif",
        "gif",
        "svg",
        "svgz",
        "webp",
        "bmp",
        "ico",
        "tif",
        "tiff",
        "avif",
        "heic",
        "heif",
        "apng",
        "css",
        "js",
        "mjs",
        "json",
        "map",
        "xml",
        "woff",
        "woff2",
        "ttf",
        "otf",
        "eot",
        "mp4",
        "webm",
        "mov",
        "mp3",
        "wav",
        "ogg",
        "pdf",
        "zip",
    ]
)
_RETINA = re.compile(r"\d+(?:\.\d+)?x")  # the "2x" in logo@2x.png
_PLACEHOLDER_LOCALS = frozenset(
    [
        "you",
        "your",
        "yourname",
        "your.name",
        "your-name",
        "your_name",
        "youremail",
        "your.email",
        "yourmail",
        "name",
        "firstname",
        "lastname",
        "first.last",
        "firstname.lastname",
        "first_last",
        "vorname.nachname",
        "max.mustermann",
        "mustermann",
        "john.doe",
        "jane.doe",
        "johndoe",
        "janedoe",
        "someone",
        "somebody",
        "user",
        "username",
    ]
)
# Labels that make a domain a placeholder wherever they appear (example.com, example.co.uk,
# mail.example.org), and reserved TLDs that never receive mail.
_PLACEHOLDER_LABELS = frozenset(
    [
        "example",
        "domain",
        "yourdomain",
        "your-domain",
        "mydomain",
        "yoursite",
        "your-site",
        "mysite",
        "yourwebsite",
        "yourcompany",
        "companyname",
        "yourbusiness",
    ]
)
_PLACEHOLDER_TLDS = frozenset({"example", "invalid", "localhost", "local"})
# Error-tracking and site-builder addresses embedded in every page of some platforms.
_TRACKING_DOMAINS = ("sentry.io", "wixpress.com", "sentry-next.wixpress.com")
_HEX_ID = re.compile(r"[0-9a-f]{24,}")


def valid_email(email: str) -> bool:
    """Syntactically a plausible mailbox (lower-case input): no file names or junk."""
    if len(email) > 254 or email.count("@") != 1:
        return False
    local, domain = email.split("@")
    if len(local) > 64 or ".." in email or not _EMAIL_FULL.fullmatch(email):
        return False
    labels = domain.split(".")
    if labels[-1] in _FILE_EXTENSIONS:
        return False
    return not any(_RETINA.fullmatch(label) for label in labels)


def is_placeholder_email(email: str) -> bool:
    """A form placeholder, documentation example or tracking id, not a business's address."""
    local, _, domain = email.lower().partition("@")
    labels = domain.split(".")
    return (
        local in _PLACEHOLDER_LOCALS
        or labels[-1] in _PLACEHOLDER_TLDS
        or any(label in _PLACEHOLDER_LABELS for label in labels[:-1])
        or any(domain == d or domain.endswith("." + d) for d in _TRACKING_DOMAINS)
        or bool(_HEX_ID.fullmatch(local))
    )


def clean_email(raw: str) -> str | None:
    """The lower-cased address if it is a real-looking email, else None."""
    email = unquote(raw).strip().strip(".,;:'\"").lower()
    if not valid_email(email) or is_placeholder_email(email):
        return None
    return email


def decode_cfemail(encoded: str) -> str | None:
    """Cloudflare's email obfuscation: hex pairs; the first byte is the XOR key of the rest."""
    encoded = encoded.strip()
    if len(encoded) < 4 or len(encoded) % 2 or not re.fullmatch(r"[0-9a-fA-F]+", encoded):
        return None
    data = bytes.fromhex(encoded)
    try:
        return bytes(b ^ data[0] for b in data[1:]).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _words_to_email(match: re.Match[str]) -> str:
    local, domain = match.group(1), match.group(2)
    if local.lower() in _PROSE_WORDS or not _DOT_WORD.search(domain):
        return match.group(0)
    return f"{_DOT_WORD.sub('.', local)}@{_DOT_WORD.sub('.', domain)}"


def deobfuscate(text: str) -> str:
    """Rewrite "name [at] domain [dot] com" and friends into plain addresses."""
    if not re.search(r"\bat\b|@", text, re.IGNORECASE):
        return text  # the common case: nothing to rewrite, skip the regexes
    text = _AT_BRACKETED.sub("@", text)
    text = _DOT_BRACKETED.sub(".", text)
    return _PLAIN_AT.sub(_words_to_email, text)


# --------------------------------------------------------------------------------------
# Phones
# --------------------------------------------------------------------------------------

# Digits with the separators people use; no newlines, so two numbers on two lines stay two.
_PHONE_IN_TEXT = re.compile(r"(?<![\w+/.-])\+?\(?\+?\d[\d \t\xa0().\-/]{5,24}\d(?![\w/-])")
_PHONE_LABEL = re.compile(
    r"\b(?:tel|tél|telefon|telephone|téléphone|phone|call|fon|mobil|mobile|mob|cell|handy|"
    r"whatsapp|τηλ|τηλέφωνο|κιν|κινητό)\b",
    re.IGNORECASE,
)
_DATE_LIKE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}")
_YEAR_RANGE = re.compile(r"\(?(?:19|20)\d\d ?[-/] ?(?:19|20)\d\d\)?")  # "(2019-2024)"
_LABEL_WINDOW = 30  # characters before a number that may hold its label


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _text_phones(text: str) -> list[str]:
    """Numbers in text that are phones beyond reasonable doubt: international (+...), with
    an area code in parentheses, or labelled (Tel:, Phone, Τηλ.) and not as a fax."""
    out = []
    for match in _PHONE_IN_TEXT.finditer(text):
        shown = " ".join(match.group().split())
        if not 7 <= len(_digits(shown)) <= 15:
            continue
        if _DATE_LIKE.fullmatch(shown) or _YEAR_RANGE.fullmatch(shown):
            continue
        if not shown.startswith(("+", "(")):
            window = text[max(0, match.start() - _LABEL_WINDOW) : match.start()].lower()
            labels = [m.end() for m in _PHONE_LABEL.finditer(window)]
            if not labels or window.rfind("fax") > labels[-1]:
                continue
        out.append(shown)
    return out


# --------------------------------------------------------------------------------------
# Social profiles
# --------------------------------------------------------------------------------------

_SOCIAL_HOSTS: tuple[tuple[str, str], ...] = (
    ("facebook.com", "facebook"),
    ("fb.com", "facebook"),
    ("instagram.com", "instagram"),
    ("linkedin.com", "linkedin"),
    ("twitter.com", "twitter"),
    ("x.com", "twitter"),
    ("youtube.com", "youtube"),
    ("tiktok.com", "tiktok"),
)
# First path segments that are features of the network, not somebody's profile.
_NOT_PROFILES: dict[str, frozenset[str]] = {
    "facebook": frozenset(
        [
            "sharer",
            "sharer.php",
            "share",
            "share.php",
            "dialog",
            "plugins",
            "tr",
            "login",
            "help",
            "policies",
            "privacy",
            "legal",
            "events",
            "watch",
            "groups",
            "hashtag",
            "search",
        ]
    ),
    "instagram": frozenset(
        ["p", "reel", "reels", "explore", "stories", "accounts", "about", "legal"]
    ),
    "twitter": frozenset(
        ["intent", "share", "home", "hashtag", "search", "i", "login", "explore", "tos", "privacy"]
    ),
    "youtube": frozenset(["watch", "embed", "results", "playlist", "shorts", "redirect", "feed"]),
}
_LINKEDIN_PROFILES = frozenset({"company", "in", "school", "showcase"})
_YOUTUBE_PROFILES = frozenset({"channel", "c", "user"})


def social_profile(url: str) -> tuple[str, str] | None:
    """(network, profile URL) when `url` is a profile on a known network, else None."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    network = next(
        (name for suffix, name in _SOCIAL_HOSTS if host == suffix or host.endswith("." + suffix)),
        None,
    )
    if network is None:
        return None
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        return None
    first = segments[0].lower()
    if network == "linkedin":
        ok = first in _LINKEDIN_PROFILES and len(segments) > 1
    elif network == "tiktok":
        ok = first.startswith("@") and len(first) > 1
    elif network == "youtube":
        ok = first.startswith("@") or (first in _YOUTUBE_PROFILES and len(segments) > 1)
    else:
        ok = first not in _NOT_PROFILES.get(network, frozenset())
    if not ok:
        return None
    # Tracking parameters go; a numeric Facebook profile is identified by its query.
    query = parts.query if network == "facebook" and first == "profile.php" else ""
    path = parts.path.rstrip("/")
    return network, urlunsplit(("https", host, path, query, ""))


# --------------------------------------------------------------------------------------
# HTML walk
# --------------------------------------------------------------------------------------

# Elements whose boundaries separate words; inline ones (span, a, b) do not, so an address
# split over inline tags ("info<span>@</span>acme.com") is read whole.
_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "title",
        "tr",
        "ul",
        "option",
        "button",
        "label",
        "select",
        "textarea",
    ]
)
_HIDDEN_TAGS = frozenset({"script", "style", "template", "noembed", "iframe", "object"})
_CF_PROTECTION = "/cdn-cgi/l/email-protection"


@dataclass
class _Anchor:
    href: str
    text: list[str] = field(default_factory=list)


class _PageParser(HTMLParser):
    """One pass over the page: visible text (with found addresses spliced in) and anchors."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.anchors: list[_Anchor] = []
        self.base_href: str | None = None
        self._hidden: list[str] = []  # open hidden elements (template may nest)
        self._anchor: _Anchor | None = None

    def _emit(self, text: str) -> None:
        self.parts.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._hidden:  # inside a script/template: neither text nor links are shown
            if tag in _HIDDEN_TAGS:
                self._hidden.append(tag)
            return
        attr = {k: v or "" for k, v in attrs}
        if tag in _BLOCK_TAGS:
            self._emit("\n")
        if tag == "script" and attr.get("type", "").lower() == "application/ld+json":
            return  # structured data the site publishes for machines: read it
        if tag in _HIDDEN_TAGS:
            self._hidden.append(tag)
            return
        if tag == "base" and attr.get("href") and self.base_href is None:
            self.base_href = attr["href"]
        if cf := attr.get("data-cfemail"):
            self._splice(decode_cfemail(cf))
        if tag == "a":
            href = attr.get("href", "").strip()
            self._anchor = _Anchor(
                href=href, text=[attr.get("title", ""), attr.get("aria-label", "")]
            )
            self.anchors.append(self._anchor)
            self._href_contacts(href)

    def handle_endtag(self, tag: str) -> None:
        if self._hidden:
            if tag == self._hidden[-1]:
                self._hidden.pop()
            return
        if tag == "a":
            self._anchor = None
        if tag in _BLOCK_TAGS:
            self._emit("\n")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        self._emit(data)
        if self._anchor is not None:
            self._anchor.text.append(data)

    def _splice(self, value: str | None, label: str = "") -> None:
        # On lines of their own, so they neither glue to nor swallow the text around them.
        if value:
            self._emit(f"\n{label}{value}\n")

    def _href_contacts(self, href: str) -> None:
        lowered = href.lower()
        if lowered.startswith("mailto:"):
            target = unquote(href[7:]).split("?", 1)[0]
            for address in re.split(r"[,;]", target):
                self._splice(address.strip())
        elif lowered.startswith(("tel:", "callto:")):
            self._splice(" ".join(unquote(href.split(":", 1)[1]).split()), label="Tel: ")
        elif _CF_PROTECTION in lowered and "#" in href:
            self._splice(decode_cfemail(href.rsplit("#", 1)[1]))


def _parse(html: str) -> _PageParser:
    parser = _PageParser()
    try:
        parser.feed(html)
        parser.close()
    except (AssertionError, ValueError):  # html.parser on badly broken markup: keep the rest
        pass
    return parser


def _absolute(href: str, base: str) -> str | None:
    if not href or href.startswith("#"):
        return None
    try:
        url = urljoin(base, href)
        parts = urlsplit(url)
    except ValueError:  # e.g. an invalid IPv6 literal
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return urlunsplit((parts.scheme, parts.netloc.lower(), parts.path or "/", parts.query, ""))


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def extract_contacts(html: str, url: str) -> PageContacts:
    """Emails, phones, social profiles and links shown on one page (see the module doc)."""
    page = _parse(html)
    base = urljoin(url, page.base_href) if page.base_href else url
    text = deobfuscate("".join(page.parts))
    result = PageContacts()

    for match in _EMAIL_IN_TEXT.finditer(text):
        email = clean_email(match.group())
        if email and email not in result.emails:
            result.emails.append(email)

    seen_digits: set[str] = set()
    for phone in _text_phones(text):
        if (digits := _digits(phone)) not in seen_digits:
            seen_digits.add(digits)
            result.phones.append(phone)

    seen_links: set[str] = set()
    for anchor in page.anchors:
        link = _absolute(anchor.href, base)
        if link is None or link in seen_links:
            continue
        seen_links.add(link)
        result.links.append(link)
        profile = social_profile(link)
        if profile and profile[0] not in result.socials:
            result.socials[profile[0]] = profile[1]
    return result


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


# Keyword -> weight, matched as substrings of the folded path and link text. Contact pages
# and German/Austrian "Impressum" pages (which must show an email by law) rank first.
_CONTACT_KEYWORDS: tuple[tuple[str, int], ...] = (
    ("contact", 3), ("kontakt", 3), ("contacto", 3), ("contatti", 3), ("contato", 3),
    ("impressum", 3), ("imprint", 3), ("legal-notice", 3), ("mentions-legales", 3),
    ("επικοινωνια", 3), ("get-in-touch", 3), ("get in touch", 3),
    ("about", 2), ("ueber-uns", 2), ("uber-uns", 2), ("uber uns", 2), ("team", 2),
    ("who-we-are", 2), ("who we are", 2), ("chi-siamo", 2), ("quienes-somos", 2),
    ("a-propos", 2), ("staff", 2), ("σχετικα", 2), ("ποιοι ειμαστε", 2), ("ομαδα", 2),
    ("location", 1), ("find-us", 1), ("find us", 1), ("standort", 1), ("anfahrt", 1),
    ("datenschutz", 1), ("privacy", 1),
)  # fmt: skip
_NON_PAGE_EXTENSIONS = _FILE_EXTENSIONS | {"doc", "docx", "xls", "xlsx", "rss", "txt"}


def _keyword_score(text: str) -> int:
    return max((weight for word, weight in _CONTACT_KEYWORDS if word in text), default=0)


def _page_key(url: str) -> str:
    """Same page whatever the scheme, `www.` or trailing slash."""
    parts = urlsplit(url)
    host = (parts.hostname or "").removeprefix("www.")
    return f"{host}{parts.path.rstrip('/')}?{parts.query}"


def contact_links(html: str, url: str) -> list[str]:
    """Same-site links whose path or text looks like contact/about/impressum/team, best first.

    Ranked by the stronger keyword of path and link text, then by whether the other agrees
    (a `/contact` link saying "Contact" beats one saying "Shop"), then by shorter path (the
    section page before its sub-pages), then page order. The page itself and the home page
    are left out: the spider has them already.
    """
    page = _parse(html)
    base = urljoin(url, page.base_href) if page.base_href else url
    skip = {_page_key(url), _page_key(urljoin(url, "/"))}
    ranked: list[tuple[int, int, int, int, str]] = []
    for order, anchor in enumerate(page.anchors):
        link = _absolute(anchor.href, base)
        if link is None or not same_site(link, url):
            continue
        key = _page_key(link)
        if key in skip:
            continue
        path = _fold(unquote(urlsplit(link).path))
        if path.rsplit(".", 1)[-1] in _NON_PAGE_EXTENSIONS and "." in path.rsplit("/", 1)[-1]:
            continue
        scores = sorted((_keyword_score(path), _keyword_score(_fold(" ".join(anchor.text)))))
        if scores[1] == 0:
            continue
        skip.add(key)
        ranked.append((-scores[1], -scores[0], len(path), order, link))
    return [link for *_, link in sorted(ranked)]


__all__ = [
    "PageContacts",
    "clean_email",
    "contact_links",
    "decode_cfemail",
    "deobfuscate",
    "extract_contacts",
    "is_placeholder_email",
    "same_site",
    "site_domain",
    "site_key",
    "social_profile",
    "valid_email",
]
