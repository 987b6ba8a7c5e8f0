"""Normalising crawl feeds: slices of whole lines, parallel workers, the same result as serial."""

from __future__ import annotations

import json
import os
from itertools import pairwise
from pathlib import Path

import pytest

import tasks.normalize as normalize
from sandbox.directory.generate import generate, raw_records
from tasks.normalize import NormalizeResult, normalize_feeds, normalize_records
from tasks.scrape import CrawlResult, feed_slices, iter_items

BAD_LINE = '{"source": "directory", "name": "Cut off by a ki'


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory crawl feed of ~1,500 records with one line that is not JSON in the middle."""
    records = raw_records(generate(seed=11, n_businesses=1400))
    path = tmp_path_factory.mktemp("feed") / "items.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    lines.insert(len(lines) // 2 + 7, BAD_LINE)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def crawl_of(path: Path) -> CrawlResult:
    return CrawlResult("directory", path, path.with_suffix(".stats"), path.with_suffix(".log"))


def signature(result: NormalizeResult) -> tuple[list[tuple], list[tuple]]:
    """What must not depend on how the work was split: every lead and quarantine, in order
    (timestamps aside, which differ by microseconds between runs)."""
    leads = [
        (lead.sources[0].source_id, lead.name, lead.phone, lead.domain, lead.address.full,
         tuple(lead.quality_flags))
        for lead in result.leads
    ]  # fmt: skip
    quarantined = [(q.payload.get("source_id"), tuple(q.reasons)) for q in result.quarantined]
    return leads, quarantined


def test_slices_cover_the_feed_in_whole_lines_with_their_line_numbers(feed: Path) -> None:
    slices = feed_slices(feed, "directory", 7)
    assert len(slices) == 7
    assert slices[0].start == 0 and slices[-1].end == feed.stat().st_size
    assert all(a.end == b.start for a, b in pairwise(slices))
    data = feed.read_bytes()
    for part in slices:
        assert part.start == 0 or data[part.start - 1 : part.start] == b"\n"
        assert part.first_line == data[: part.start].count(b"\n") + 1
    sliced = [r for part in slices for r in part.records()]
    assert sliced == list(iter_items(feed, "directory"))


def test_more_slices_than_lines_gives_each_line_once(tmp_path: Path) -> None:
    path = tmp_path / "tiny.jsonl"
    path.write_text('{"name": "A"}\n{"name": "B"}\n', encoding="utf-8")
    slices = feed_slices(path, "directory", 10)
    assert [r["name"] for part in slices for r in part.records()] == ["A", "B"]
    assert feed_slices(tmp_path / "missing.jsonl", "directory", 3) == []


def test_bad_line_is_reported_by_its_number_in_the_whole_feed(feed: Path) -> None:
    number = feed.read_text(encoding="utf-8").splitlines().index(BAD_LINE) + 1
    bad = [
        r
        for part in feed_slices(feed, "directory", 5)
        for r in part.records()
        if str(r["source_id"]).startswith("items.jsonl:")
    ]
    assert len(bad) == 1
    assert bad[0]["source_id"] == f"items.jsonl:{number}"
    assert bad[0]["parse_error"].startswith(f"line {number} of items.jsonl is not JSON")


def test_parallel_normalise_equals_serial(feed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(normalize, "_PARALLEL_MIN_BYTES", 0)
    serial = normalize_records(iter_items(feed, "directory"), run_id="r")
    parallel = normalize_feeds([crawl_of(feed)], run_id="r", workers=3)
    assert signature(parallel) == signature(serial)
    assert len(serial.quarantined) >= 1  # the bad line, among others
    assert {lead.run_ids[0] for lead in parallel.leads} == {"r"}


def _die(*args: object) -> None:
    os._exit(3)


def test_a_worker_that_dies_loses_nothing(feed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(normalize, "_PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(normalize, "_normalize_slices_to_files", _die)
    serial = normalize_records(iter_items(feed, "directory"), run_id="r")
    parallel = normalize_feeds([crawl_of(feed)], run_id="r", workers=2)
    assert signature(parallel) == signature(serial)


def test_small_feeds_and_one_worker_stay_in_process(
    feed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(normalize, "_normalize_slices_to_files", _die)  # would lose nothing anyway
    started = []
    monkeypatch.setattr(normalize, "get_context", lambda method: started.append(method))
    result = normalize_feeds([crawl_of(feed)], run_id="r", workers=4)  # feed is under 4 MB
    monkeypatch.setattr(normalize, "_PARALLEL_MIN_BYTES", 0)
    one = normalize_feeds([crawl_of(feed)], run_id="r", workers=1)
    assert started == []
    assert signature(result) == signature(one)
