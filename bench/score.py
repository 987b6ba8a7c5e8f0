"""Benchmark: scoring throughput (rows/second) for 10,000 and 100,000 leads.

    .venv/bin/python bench/score.py                  # 10,000 and 100,000 leads, median of 3
    .venv/bin/python bench/score.py --sizes 10000 --repeat 5

Leads come from the sandbox directory generator through `normalize_records`, as a crawl gives
them; a third then carry a verified email and a quarter company facts, as after enrichment.
Three figures per size, each including everything `score_leads` does (features, scores,
reasons, the `Score` block on every lead):
- features: `lead_features` alone;
- heuristic: scoring with no promoted model (heuristic-1);
- model: scoring with a promoted "leads" model, trained first on 2,000 other leads with
  synthetic outcomes; its reasons cost one extra prediction per reason group.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from models.lead import CompanyFacts, Email, Enrichment, Lead  # noqa: E402
from models.scoring import (  # noqa: E402
    HEURISTIC_VERSION,
    ModelRegistry,
    lead_features,
    score_leads,
    train_lead_model,
)

TRAINING_LEADS = 2_000


def generated_leads(size: int, seed: int) -> list[Lead]:
    from sandbox.directory.generate import generate, raw_records
    from tasks.normalize import normalize_records

    # The generator lists some businesses more than once and some records are quarantined:
    # ask for more than needed, then cut.
    directory = generate(seed=seed, n_businesses=int(size * 1.1) + 10)
    leads = normalize_records(raw_records(directory), run_id="bench").leads[:size]
    for index, lead in enumerate(leads):
        if index % 3 == 0 and lead.domain:
            email = f"info@{lead.domain}"
            lead.emails = [Email(value=email, source="hunter", status="valid", confidence=90)]
            lead.best_email = email
        if index % 4 == 0:
            facts = CompanyFacts(provider="bench", employees=5 + (index * 37) % 400)
            lead.enrichment = Enrichment(status="done", company="done", company_facts=facts)
    return leads


def synthetic_outcomes(leads: list[Lead], seed: int) -> list[int]:
    """Outcomes that depend on the features (email, reviews, trade) plus noise."""
    features = lead_features(leads)
    signal = (
        1.5 * features["has_email"]
        + 0.4 * features["log_review_count"].fillna(0)
        + 1.0 * (features["category"] == "dentist")
        - 3.0
    )
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.random(len(leads)) < 1 / (1 + np.exp(-signal.to_numpy()))]


def median_seconds(action: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated lead counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; median printed")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as tmp:
        empty = ModelRegistry(Path(tmp) / "empty")
        trained = ModelRegistry(Path(tmp) / "trained")
        training = generated_leads(TRAINING_LEADS, seed=args.seed + 1000)
        result = train_lead_model(training, synthetic_outcomes(training, args.seed), trained)
        if not result.promoted:
            raise SystemExit(f"the bench model was not promoted: {result.decision}")
        print(
            f"model {result.info.version}: trained on {TRAINING_LEADS:,} generated leads, "
            f"CV ROC AUC {result.metrics.roc_auc:.3f}; median of {args.repeat} runs per figure"
        )
        print(f"{'leads':>8} {'stage':<10} {'seconds':>8} {'rows/s':>9}")
        for size in (int(s) for s in args.sizes.split(",")):
            leads = generated_leads(size, args.seed)
            figures = {
                "features": median_seconds(partial(lead_features, leads), args.repeat),
                "heuristic": median_seconds(partial(score_leads, leads, empty), args.repeat),
                "model": median_seconds(partial(score_leads, leads, trained), args.repeat),
            }
            assert leads[0].score and leads[0].score.model_version == result.info.version
            assert score_leads(leads[:1], empty) == HEURISTIC_VERSION
            for stage, seconds in figures.items():
                print(f"{len(leads):>8} {stage:<10} {seconds:>8.2f} {len(leads) / seconds:>9,.0f}")


if __name__ == "__main__":
    main()
