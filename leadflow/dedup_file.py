"""`leadflow dedup INPUT.csv --out OUTPUT.csv`: the pipeline's dedup engine on a plain CSV.

Every input row comes out exactly once, in input order, with a `cluster_id` column added (rows
that are the same business share it). Rows go through the pipeline's own normalisation
(`tasks.normalize.normalize_record`) and matching (`tasks.dedup.cluster_leads`), so a file
scores the same as a run would. A row that cannot become a lead (no name, nothing that
identifies a business) is kept and gets a cluster of its own.

`evaluate_pairs` / `evaluate_file` score clusters against a ground truth (pairwise precision
and recall), in the sandbox generator's format: `ground_truth.json` maps the row id
(`listing_id`) to an entity id, or to null for a row that is not a lead.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leadflow.settings import get_settings

CLUSTER_COLUMN = "cluster_id"
SOURCE = "file"

# CSV header (case-insensitive) -> raw record field `normalize_record` reads.
_COLUMN_FIELDS: dict[str, str] = {
    "name": "name",
    "address": "address",
    "street": "street",
    "city": "city",
    "postal_code": "postal_code",
    "postcode": "postal_code",
    "zip": "postal_code",
    "state": "state",
    "country": "country",
    "phone": "phone",
    "category": "category",
    "website": "website",
    "place_id": "place_id",
    "cid": "cid",
}

# Country from the address when the file has no country column: the phone can only be read
# (E.164) in its country, and a directory export writes it the national way ("020 7946
# 0018"). Read in the wrong region, one listing's number would differ from its duplicate's.
_US_TAIL = re.compile(r",\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?\s*$")
_GB_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\s*$")
_GR_POSTCODE = re.compile(r"\b\d{3} \d{2}\b")
_GREEK = re.compile(r"[\u0370-\u03ff\u1f00-\u1fff]")
_DE_STREET = re.compile(
    r"(stra(ß|ss)e|str\.|allee|platz|damm|weg|gasse|ufer|chaussee)\b", re.IGNORECASE
)
_DE_POSTAL_CITY = re.compile(r",\s*\d{5}\s+\S")


def _guess_country(address: str, city: str) -> str | None:
    """ISO code suggested by the address format, or None to use the default region."""
    if _US_TAIL.search(address):
        return "US"
    if _GB_POSTCODE.search(address.upper()):
        return "GB"
    if _GREEK.search(address) or _GREEK.search(city) or _GR_POSTCODE.search(address):
        return "GR"
    if _DE_STREET.search(address) and _DE_POSTAL_CITY.search(address):
        return "DE"
    return None


@dataclass(frozen=True)
class DedupFileStats:
    rows: int
    leads: int  # rows normalised into leads (the others keep a cluster of their own)
    unparsed: int  # rows that could not become a lead: no name, or nothing identifying
    clusters: int  # businesses: distinct cluster ids
    duplicate_rows: int  # rows - clusters
    seconds: float


@dataclass(frozen=True)
class PairScores:
    precision: float
    recall: float
    f1: float
    true_pairs: int  # row pairs the truth says are one business
    predicted_pairs: int  # row pairs given one cluster id
    correct_pairs: int = 0
    items: int = 0  # rows scored (present in both)


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    # utf-8-sig: spreadsheet exports often start with a byte-order mark.
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        rows = [row for row in reader if row]
    return header, rows


def dedup_csv(
    input_path: Path,
    output_path: Path,
    *,
    threshold: float | None = None,
    default_region: str | None = None,
) -> DedupFileStats:
    """Write `input_path`'s rows plus `cluster_id` to `output_path`; return the counts."""
    # Imported here: the pipeline modules pull in Prefect, which `leadflow --help` need not pay.
    from models.lead import Lead
    from tasks.dedup import cluster_leads
    from tasks.normalize import normalize_record

    started = time.perf_counter()
    settings = get_settings()
    threshold = settings.dedup_match_threshold if threshold is None else threshold
    region = default_region or settings.default_region

    header, rows = _read_csv(Path(input_path))
    columns = {
        index: _COLUMN_FIELDS[name.strip().casefold()]
        for index, name in enumerate(header)
        if name.strip().casefold() in _COLUMN_FIELDS
    }
    has_country = "country" in columns.values()

    leads: list[Lead] = []
    lead_rows: list[int] = []
    for number, row in enumerate(rows):
        raw: dict[str, Any] = {"source": SOURCE, "source_id": f"row-{number + 1}"}
        for index, field_name in columns.items():
            value = row[index].strip() if index < len(row) else ""
            if value:
                raw[field_name] = value
        if not has_country:
            raw["country"] = _guess_country(raw.get("address", ""), raw.get("city", ""))
        outcome = normalize_record(raw, run_id=None, default_region=region)
        if isinstance(outcome, Lead):
            leads.append(outcome)
            lead_rows.append(number)

    # Cluster ids are numbered 1, 2, ... in the order their first row appears.
    lead_labels = cluster_leads(leads, threshold)
    label_of_row: dict[int, tuple[str, int]] = {
        row: ("lead", label) for row, label in zip(lead_rows, lead_labels, strict=True)
    }
    ids: dict[tuple[str, int], int] = {}
    cluster_ids: list[int] = []
    for number in range(len(rows)):
        key = label_of_row.get(number, ("row", number))  # unparsed rows: a cluster each
        cluster_ids.append(ids.setdefault(key, len(ids) + 1))

    out_header = list(header)
    if CLUSTER_COLUMN in out_header:
        position = out_header.index(CLUSTER_COLUMN)  # re-running on an output: replace it
    else:
        position = len(out_header)
        out_header.append(CLUSTER_COLUMN)
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with output_path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(out_header)
        for row, cluster in zip(rows, cluster_ids, strict=True):
            out = row + [""] * (len(header) - len(row))
            if position < len(out):
                out[position] = str(cluster)
            else:
                out.append(str(cluster))
            writer.writerow(out)

    return DedupFileStats(
        rows=len(rows),
        leads=len(leads),
        unparsed=len(rows) - len(leads),
        clusters=len(ids),
        duplicate_rows=len(rows) - len(ids),
        seconds=time.perf_counter() - started,
    )


def _pair_count(sizes: Any) -> int:
    return sum(n * (n - 1) // 2 for n in sizes)


def evaluate_pairs(
    predicted: Mapping[str, int | str], truth: Mapping[str, str | None]
) -> PairScores:
    """Pairwise precision/recall over the items in both mappings.

    A pair is two items in one cluster. `None` truth is a row that is not a lead: an entity
    of its own, so it forms no true pair. With no predicted (or no true) pairs, precision
    (or recall) is 1.0: nothing was claimed (or there was nothing to find).
    """
    items = [key for key in predicted if key in truth]
    by_pred: Counter[str] = Counter()
    by_truth: Counter[str] = Counter()
    by_both: Counter[tuple[str, str]] = Counter()
    for key in items:
        cluster = str(predicted[key])
        entity = truth[key]
        by_pred[cluster] += 1
        if entity is not None:
            by_truth[str(entity)] += 1
            by_both[(cluster, str(entity))] += 1
    predicted_pairs = _pair_count(by_pred.values())
    true_pairs = _pair_count(by_truth.values())
    correct = _pair_count(by_both.values())
    precision = correct / predicted_pairs if predicted_pairs else 1.0
    recall = correct / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairScores(
        precision=precision,
        recall=recall,
        f1=f1,
        true_pairs=true_pairs,
        predicted_pairs=predicted_pairs,
        correct_pairs=correct,
        items=len(items),
    )


def evaluate_file(output_csv: Path, truth_json: Path, id_column: str = "listing_id") -> PairScores:
    """Score a `dedup_csv` output against `ground_truth.json` (row id -> entity id or null)."""
    header, rows = _read_csv(Path(output_csv))
    names = [h.strip() for h in header]
    if id_column not in names or CLUSTER_COLUMN not in names:
        raise ValueError(f"{output_csv} needs the columns {id_column!r} and {CLUSTER_COLUMN!r}")
    id_index, cluster_index = names.index(id_column), names.index(CLUSTER_COLUMN)
    predicted = {row[id_index]: row[cluster_index] for row in rows}
    truth_raw = json.loads(Path(truth_json).read_text(encoding="utf-8"))
    truth = {str(k): (None if v is None else str(v)) for k, v in truth_raw.items()}
    return evaluate_pairs(predicted, truth)
