"""Benchmark: normalise+dedup throughput, dedup quality and memory; MongoDB load round trips.

    .venv/bin/python bench/pipeline.py                 # 10,000 and 100,000 leads + load of 10,000
    .venv/bin/python bench/pipeline.py --sizes 10000 --load 2000

Leads come from the sandbox directory generator (realistic duplicates, with ground truth),
written as the JSONL feed a crawl leaves in its run folder; normalise streams it (JSON
decoding is inside the timed normalise, as in the pipeline). Each size runs in a fresh subprocess so its peak RSS is its
own. The load runs against a private embedded MongoDB-wire server (nx-27017) on a free port;
that emulator is slow, so the figure that carries over to MongoDB is round trips per batch.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))


def _generated(size: int, seed: int) -> tuple[list[dict], dict[str, str | None]]:
    from sandbox.directory.generate import generate, raw_records

    # The generator lists some businesses more than once: ask for enough businesses that the
    # listings come to about `size` records, then cut.
    directory = generate(seed=seed, n_businesses=max(10, int(size / 1.08)))
    records = raw_records(directory)[:size]
    return records, {r["source_id"]: directory.truth[r["source_id"]] for r in records}


def write_dataset(size: int, seed: int, folder: Path) -> Path:
    """The records as a crawl feed (JSONL) plus the ground truth, as the pipeline reads them."""
    records, truth = _generated(size, seed)
    feed = folder / f"records-{size}.jsonl"
    with feed.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    feed.with_suffix(".truth.json").write_text(json.dumps(truth), encoding="utf-8")
    return feed


def read_truth(feed: Path) -> dict[str, str | None]:
    return json.loads(feed.with_suffix(".truth.json").read_text(encoding="utf-8"))


def pair_scores(leads: list, truth: dict[str, str | None]) -> tuple[float, float]:
    """Pairwise precision/recall of the leads' source records against the ground truth."""
    from leadflow.dedup_file import evaluate_pairs

    predicted = {s.source_id: index for index, lead in enumerate(leads) for s in lead.sources}
    scores = evaluate_pairs(predicted, {k: v for k, v in truth.items() if k in predicted})
    return scores.precision, scores.recall


def measure_normalize_dedup(feed: Path) -> dict[str, float]:
    from tasks.dedup import dedup_leads
    from tasks.normalize import normalize_feeds
    from tasks.scrape import CrawlResult, count_items

    truth = read_truth(feed)
    count = count_items(feed)
    crawl = CrawlResult("directory", feed, feed.with_suffix(".stats"), feed.with_suffix(".log"))
    started = time.perf_counter()
    # As in the pipeline: normalise reads the crawl feed (JSON decoding included), in
    # parallel slices when it is large (LEADFLOW_NORMALIZE_WORKERS).
    normalized = normalize_feeds([crawl], run_id="bench")
    middle = time.perf_counter()
    result = dedup_leads(normalized.leads, [], run_id="bench", threshold=0.80)
    quarantined = len(normalized.quarantined)
    del normalized
    finished = time.perf_counter()
    precision, recall = pair_scores(result.leads, truth)
    return {
        "records": count,
        "leads_out": len(result.leads),
        "quarantined": quarantined,
        "normalize_s": middle - started,
        "dedup_s": finished - middle,
        "wall_s": finished - started,
        "leads_per_s": count / (finished - started),
        "precision": precision,
        "recall": recall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure_load(size: int, seed: int, batch_size: int) -> dict[str, float]:
    from pymongo import MongoClient

    from connectors.mongo import CommandCounter, LeadStore
    from tasks.dedup import dedup_leads
    from tasks.normalize import normalize_records

    records, _ = _generated(size, seed)
    leads = dedup_leads(
        normalize_records(records, run_id="bench").leads, [], run_id="bench", threshold=0.8
    ).leads
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as tmp:
        port = _free_port()
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "nx-27017"), "--host", "127.0.0.1", "-p", str(port),
             "--data-dir", tmp, "--pid-file", f"{tmp}/pid", "--log-file", f"{tmp}/log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            counter = CommandCounter()
            client: MongoClient = MongoClient(
                f"mongodb://127.0.0.1:{port}/", event_listeners=[counter]
            )
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.admin.command("ping")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            store = LeadStore(client, "bench", batch_size=batch_size)
            store.create_indexes()
            counter.reset()
            started = time.perf_counter()
            counts = store.upsert_leads(leads)
            elapsed = time.perf_counter() - started
            batches = -(-len(leads) // batch_size)
            figures = {
                "leads": len(leads),
                "batch_size": batch_size,
                "batches": batches,
                "round_trips": counter.round_trips,
                "commands": dict(counter.commands),
                "round_trips_per_batch": counter.round_trips / batches,
                "inserted": counts.inserted,
                "wall_s": elapsed,
                "leads_per_s": len(leads) / elapsed,
            }
            client.close()  # after counting: closing sends endSessions, not part of the load
            return figures
        finally:
            server.terminate()
            server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated lead counts")
    parser.add_argument(
        "--load", type=int, default=10_000, help="leads to load into MongoDB (0 = skip)"
    )
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs per size; the median is printed"
    )
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: one feed, JSON out
    args = parser.parse_args()

    if args.one:
        print(json.dumps(measure_normalize_dedup(args.one)))
        return

    print(
        f"normalise+dedup of a crawl feed (JSONL) from the sandbox generator, seed {args.seed}; "
        f"median of {args.repeat} fresh processes each; peak RSS is the largest of them"
    )
    print(
        f"{'leads':>8} {'wall s':>8} {'norm s':>7} {'dedup s':>8} {'leads/s':>9} {'precision':>9} {'recall':>7} {'peak RSS MiB':>12}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        runs = []
        with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as tmp:
            feed = write_dataset(size, args.seed, Path(tmp))
            for _ in range(args.repeat):
                out = subprocess.run(
                    [sys.executable, __file__, "--one", str(feed)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        runs.sort(key=lambda r: r["wall_s"])
        m = runs[len(runs) // 2]
        print(
            f"{m['records']:>8} {m['wall_s']:>8.2f} {m['normalize_s']:>7.2f} {m['dedup_s']:>8.2f} "
            f"{m['leads_per_s']:>9.0f} {m['precision']:>9.4f} {m['recall']:>7.4f} {max(r['peak_rss_mib'] for r in runs):>12.0f}"
        )
    if args.load:
        m = measure_load(args.load, args.seed, args.batch_size)
        print(
            f"\nload into the embedded MongoDB-wire server: {m['leads']} leads in {m['wall_s']:.2f} s "
            f"({m['leads_per_s']:.0f} leads/s), batch {m['batch_size']}: {m['round_trips']} round trips "
            f"for {m['batches']} batches = {m['round_trips_per_batch']:.2f} per batch {m['commands']}; "
            f"inserted {m['inserted']}"
        )


if __name__ == "__main__":
    main()
