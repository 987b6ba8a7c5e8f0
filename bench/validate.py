"""Benchmark: throughput of the validation gate (the lead expectation suite, Great Expectations).

    .venv/bin/python bench/validate.py                      # 10,000 and 100,000 leads
    .venv/bin/python bench/validate.py --sizes 10000 --repeat 5 --broken 0.05

Leads come from the sandbox directory generator through the real normalise and dedup stages,
so they carry lead ids as they do at the gate. A share of them (`--broken`) is then given a
phone that is not E.164, so the run also maps failing rows to quarantine records. Each timed
run is `validate_leads` as the task calls it: flatten the batch, run the suite in a fresh
ephemeral GX context, turn failing rows into quarantine records, and (first column) write
Data Docs to a run folder. GX's import (~3 s, once per process) is outside the timing; one
untimed run per size warms up GX's caches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.lead import Lead

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

BROKEN_PHONE = "+1 555"


def generated_leads(size: int, seed: int, broken_share: float) -> list[Lead]:
    """About `size` deduplicated leads; every (1/broken_share)-th one with a broken phone."""
    from sandbox.directory.generate import generate, raw_records
    from tasks.dedup import dedup_leads
    from tasks.normalize import normalize_records

    # Dedup merges duplicate listings and normalise drops non-leads: ask for more listings.
    directory = generate(seed=seed, n_businesses=int(size * 1.1))
    normalized = normalize_records(raw_records(directory), run_id="bench").leads
    leads = dedup_leads(normalized, [], run_id="bench", threshold=0.8).leads[:size]
    if broken_share > 0:
        for lead in leads[:: max(1, round(1 / broken_share))]:
            lead.phone = BROKEN_PHONE
    return leads


def timed(leads: list[Lead], docs: bool) -> tuple[float, int]:
    """Seconds for one `validate_leads` call, and how many leads it quarantined."""
    from tasks.validate import validate_leads

    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as tmp:
        started = time.perf_counter()
        result = validate_leads(
            leads,
            run_id="bench",
            max_failing_share=1.0,
            docs_dir=Path(tmp) / "data_docs" if docs else None,
        )
        return time.perf_counter() - started, len(result.quarantined)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated lead counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; median printed")
    parser.add_argument("--broken", type=float, default=0.01, help="share given a bad phone")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    print(
        f"validate_leads on generated leads (seed {args.seed}, {args.broken:.0%} with a broken "
        f"phone); median of {args.repeat} runs each, with and without Data Docs"
    )
    print(
        f"{'leads':>8} {'quarantined':>11} {'s (docs)':>9} {'rows/s (docs)':>14} "
        f"{'s (no docs)':>12} {'rows/s (no docs)':>17}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        leads = generated_leads(size, args.seed, args.broken)
        timed(leads, docs=True)  # warm-up, untimed
        with_docs = [timed(leads, docs=True) for _ in range(args.repeat)]
        without_docs = [timed(leads, docs=False) for _ in range(args.repeat)]
        docs_s = statistics.median(s for s, _ in with_docs)
        bare_s = statistics.median(s for s, _ in without_docs)
        print(
            f"{len(leads):>8} {with_docs[0][1]:>11} {docs_s:>9.2f} {len(leads) / docs_s:>14,.0f} "
            f"{bare_s:>12.2f} {len(leads) / bare_s:>17,.0f}"
        )


if __name__ == "__main__":
    main()
