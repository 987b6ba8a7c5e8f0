"""`leadflow dedup` on a CSV: every row once, cluster ids, and pairwise scoring."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from leadflow.dedup_file import (
    PairScores,
    _guess_country,
    dedup_csv,
    evaluate_file,
    evaluate_pairs,
)

HEADER = ["listing_id", "name", "address", "city", "phone", "category", "website", "note"]
ROWS = [
    # 1 and 2: one deli, formatted differently (name, street word, phone punctuation).
    ["1", "Art's Deli", "100 Main Street, Austin, TX 78701", "Austin", "(512) 555-0100", "Deli", "http://artsdeli.test/", "first"],
    ["2", "Art's Delicatessen", "100 Main St., Austin, TX 78701", "Austin", "512.555.0100", "Deli", "", "second"],
    # 3-5: a hotel and the venues inside it: same phone and address, distinct businesses.
    ["3", "Grand Hotel Austin", "500 Congress Avenue, Austin, TX 78701", "Austin", "(512) 555-0200", "Hotel", "http://grandhotel.test/", ""],
    ["4", "Grand Hotel Austin Rooftop Bar", "500 Congress Avenue, Austin, TX 78701", "Austin", "(512) 555-0200", "Bar", "http://grandhotel.test/", ""],
    ["5", "Sakura Sushi at Grand Hotel Austin", "500 Congress Avenue, Austin, TX 78701", "Austin", "(512) 555-0200", "Sushi", "", ""],
    # 6: an unparseable phone, 7: no name (not a lead), 8: an ad row with nothing else.
    ["6", "Blue Door Salon", "44 Pecan Street, Austin, TX 78702", "Austin", "call us", "Salon", "", "bad phone"],
    ["7", "", "12 Elm Street, Austin, TX 78703", "Austin", "(512) 555-0300", "Cafe", "", "no name"],
    ["8", "Advertise here", "", "", "", "", "", "ad"],
    # 9: the salon again, phone now missing: name + address still match it.
    ["9", "BLUE DOOR SALON", "44 Pecan St, Austin, TX 78702", "Austin", "", "Salon", "", ""],
    # 10 and 11: a chain's branches share the domain, nothing else.
    ["10", "Bright Dental", "1 Lamar Blvd, Austin, TX 78704", "Austin", "(512) 555-0401", "Dentist", "http://www.brightdental.test/", ""],
    ["11", "Bright Dental", "900 Burnet Road, Austin, TX 78756", "Austin", "(512) 555-0402", "Dentist", "http://brightdental.test/", ""],
    # 12 and 13: a London business written the national way and the international way.
    ["12", "The Happy Table", "161 Charlotte Road, London W1U 2HB", "London", "020 7946 0018", "Restaurant", "", ""],
    ["13", "Happy Table", "161 Charlotte Rd, London W1U 2HB", "London", "+44 20 7946 0018", "Restaurant", "", ""],
]  # fmt: skip
TRUTH: dict[str, str | None] = {
    "1": "deli", "2": "deli", "3": "hotel", "4": "bar", "5": "sushi", "6": "salon", "7": None,
    "8": None, "9": "salon", "10": "dental-1", "11": "dental-2", "12": "table", "13": "table",
}  # fmt: skip


def write_csv(path: Path, header: list[str], rows: list[list[str]], *, bom: bool = False) -> Path:
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


@pytest.fixture
def deduped(tmp_path: Path) -> tuple[list[str], list[list[str]], object]:
    source = write_csv(tmp_path / "in.csv", HEADER, ROWS, bom=True)
    stats = dedup_csv(source, tmp_path / "out.csv", threshold=0.8)
    header, rows = read_csv(tmp_path / "out.csv")
    return header, rows, stats


def test_every_row_once_in_order_with_columns_kept(deduped: tuple) -> None:
    header, rows, stats = deduped
    assert header == [*HEADER, "cluster_id"]
    assert [row[:-1] for row in rows] == ROWS  # values untouched, extra column kept
    assert stats.rows == len(ROWS)
    assert stats.unparsed == 2  # the nameless row and the ad row
    assert stats.clusters == len({row[-1] for row in rows})
    assert stats.duplicate_rows == 3


def test_cluster_ids_follow_the_businesses(deduped: tuple) -> None:
    _, rows, _ = deduped
    cluster = {row[0]: row[-1] for row in rows}
    assert cluster["1"] == cluster["2"]
    assert len({cluster["3"], cluster["4"], cluster["5"]}) == 3
    assert cluster["6"] == cluster["9"]  # the unparseable phone did not drop the row
    assert cluster["10"] != cluster["11"]
    assert cluster["12"] == cluster["13"]
    assert cluster["7"] not in {c for k, c in cluster.items() if k != "7"}
    assert cluster["8"] not in {c for k, c in cluster.items() if k != "8"}
    # Numbered by first appearance.
    assert [row[-1] for row in rows][:3] == ["1", "1", "2"]


def test_evaluate_file_reads_the_generator_format(tmp_path: Path, deduped: tuple) -> None:
    truth = tmp_path / "ground_truth.json"
    truth.write_text(json.dumps(TRUTH), encoding="utf-8")
    scores = evaluate_file(tmp_path / "out.csv", truth)
    assert scores == PairScores(
        precision=1.0,
        recall=1.0,
        f1=1.0,
        true_pairs=3,
        predicted_pairs=3,
        correct_pairs=3,
        items=13,
    )


def test_existing_cluster_column_is_replaced_and_short_rows_padded(tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        ["name", "cluster_id", "phone"],
        [
            ["Art's Deli", "old", "(512) 555-0100"],
            ["Art's Deli"],
            ["Joe's Diner", "x", "5125550999"],
        ],
    )
    stats = dedup_csv(source, tmp_path / "out.csv")
    header, rows = read_csv(tmp_path / "out.csv")
    assert header == ["name", "cluster_id", "phone"]
    assert rows == [
        ["Art's Deli", "1", "(512) 555-0100"],
        ["Art's Deli", "2", ""],  # no phone, no address: nothing corroborates the name
        ["Joe's Diner", "3", "5125550999"],
    ]
    assert stats.rows == 3


def test_evaluate_pairs_counts_pairs_and_ignores_missing_items() -> None:
    truth = {"a": "E1", "b": "E1", "c": "E1", "d": "E2", "e": None, "f": None}
    perfect = evaluate_pairs({"a": 1, "b": 1, "c": 1, "d": 2, "e": 3, "f": 4}, truth)
    assert (perfect.precision, perfect.recall, perfect.true_pairs) == (1.0, 1.0, 3)
    # Merging the two non-lead rows and splitting E1: 1 wrong pair, 2 missed pairs.
    scores = evaluate_pairs({"a": 1, "b": 1, "c": 2, "d": 3, "e": 4, "f": 4, "zz": 9}, truth)
    assert scores.predicted_pairs == 2 and scores.correct_pairs == 1 and scores.items == 6
    assert scores.precision == pytest.approx(0.5)
    assert scores.recall == pytest.approx(1 / 3)
    assert scores.f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    # Nothing claimed, nothing to find: both perfect by convention.
    empty = evaluate_pairs({"a": 1, "d": 2}, {"a": "E1", "d": "E2"})
    assert (empty.precision, empty.recall) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("address", "city", "country"),
    [
        ("100 Main Street, Austin, TX 78701", "Austin", "US"),
        ("161 Charlotte Road, London W1U 2HB", "London", "GB"),
        ("Friedrichstraße 12, 10115 Berlin", "Berlin", "DE"),
        ("Kastanienallee 5, 10435 Berlin", "Berlin", "DE"),
        ("Ερμού 25, 105 63 Αθήνα", "Αθήνα", "GR"),
        ("Ermou 25, 105 63 Athens", "Athens", "GR"),
        ("somewhere", "", None),
    ],
)
def test_country_guess_from_the_address(address: str, city: str, country: str | None) -> None:
    assert _guess_country(address, city) == country


def test_generated_directory_meets_the_accuracy_targets(tmp_path: Path) -> None:
    from sandbox.directory import generate

    out = generate.write_site_data(generate.generate(seed=5, n_businesses=3_000), tmp_path / "site")
    stats = dedup_csv(out / "export.csv", tmp_path / "deduped.csv")
    header, rows = read_csv(tmp_path / "deduped.csv")
    assert len(rows) == stats.rows and header[-1] == "cluster_id"
    scores = evaluate_file(tmp_path / "deduped.csv", out / "ground_truth.json")
    assert scores.precision >= 0.99, scores
    assert scores.recall >= 0.95, scores
