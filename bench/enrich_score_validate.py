"""Benchmark: scoring and validation throughput (rows/second) of 10,000 and 100,000 leads.

    .venv/bin/python bench/enrich_score_validate.py            # both, 10k and 100k, median of 3
    .venv/bin/python bench/enrich_score_validate.py --sizes 10000 --repeat 1

Runs `bench/score.py` (lead features, the heuristic prior and a trained model) and then
`bench/validate.py` (the Great Expectations suite, with and without Data Docs) with the same
sizes, repeat count and seed; each prints its own table. Enrichment is bounded by the
providers' rate limits (Hunter: 10-15 calls/s), not by this code, so its figure is the run
summary's paid calls and cache hits rather than a rows/second.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated lead counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; median printed")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    common = ["--sizes", args.sizes, "--repeat", str(args.repeat), "--seed", str(args.seed)]
    for script in ("score.py", "validate.py"):
        print(f"== {script} ==", flush=True)
        done = subprocess.run([sys.executable, str(BENCH / script), *common], check=False)
        if done.returncode:
            return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
