"""The suppression list's pure parts: hashing, kinds, membership, scrubbing text and files."""

from __future__ import annotations

from pathlib import Path

from models.suppression import (
    FORGOTTEN,
    Suppressions,
    guess_kind,
    scrub_file,
    scrub_text,
    scrub_value,
    suppression_hash,
)


def test_hash_is_of_the_normalised_value_and_kind() -> None:
    assert suppression_hash("email", " Ana@Example.COM ") == suppression_hash(
        "email", "ana@example.com"
    )
    assert suppression_hash("email", "mailto:ana@example.com") == suppression_hash(
        "email", "ana@example.com"
    )
    assert suppression_hash("domain", "WWW.Example.com") == suppression_hash(
        "domain", "example.com"
    )
    assert suppression_hash("domain", "example.com") != suppression_hash("email", "example.com")
    assert "ana" not in suppression_hash("email", "ana@example.com")


def test_kind_is_guessed_from_the_value() -> None:
    assert guess_kind("ana@example.com") == "email"
    assert guess_kind("01KMZ3Y8Q6W6ZJ8X9C2V4B7N1D") == "lead_id"
    assert guess_kind("example.com") == "domain"


def test_membership_by_email_and_by_the_emails_domain() -> None:
    suppressed = Suppressions.of(
        [suppression_hash("email", "ana@example.com"), suppression_hash("domain", "gone.test")]
    )
    assert suppressed.email("ANA@example.com")
    assert not suppressed.email("bob@example.com")
    assert suppressed.email("anyone@gone.test") and suppressed.domain("gone.test")
    assert not suppressed.lead_id("01KMZ3Y8Q6W6ZJ8X9C2V4B7N1D")
    assert not Suppressions().email("ana@example.com") and not Suppressions()


def test_scrubbing_replaces_only_suppressed_addresses(tmp_path: Path) -> None:
    suppressed = Suppressions.of([suppression_hash("email", "ana@example.com")])
    text = "write to Ana@Example.com or bob@example.com"
    assert scrub_text(text, suppressed) == f"write to {FORGOTTEN} or bob@example.com"
    payload = {"emails": ["ana@example.com"], "nested": [{"note": "ana@example.com!"}], "n": 3}
    assert scrub_value(payload, suppressed) == {
        "emails": [FORGOTTEN], "nested": [{"note": f"{FORGOTTEN}!"}], "n": 3,
    }  # fmt: skip
    feed = tmp_path / "feed.jsonl"
    feed.write_text('{"emails": ["ana@example.com"]}\n{"emails": []}\n', encoding="utf-8")
    assert scrub_file(feed, suppressed)
    assert "ana@" not in feed.read_text(encoding="utf-8")
    assert not scrub_file(feed, suppressed)  # nothing left to change
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00ana@example.com\x80")
    assert scrub_file(binary, suppressed)
    assert binary.read_bytes() == b"\xff\xfe\x00" + FORGOTTEN.encode() + b"\x80"
