"""Every benchmark of Chorus, one after the other: synth throughput, orchestrator CPU per job, encoding, memory.

    python bench/run.py                                            # CPU, random:tiny: `make bench`
    python bench/run.py --model random:bark --devices cuda:0       # a GPU: 12 s clips, random:bark's real shapes
    python bench/run.py --only synth --concurrency 1,4 --dry-run   # a quick look, nothing written

Each benchmark appends a record (machine, date, torch, settings, raw rows) to bench/results.json; then the tables in
bench/RESULTS.md are rewritten from the latest record of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import encoding
import memory
import orchestrator_throughput
import report
import synth_throughput
from common import RESULTS_JSON, append_results, machine

BENCHMARKS = ("synth", "orchestrator", "encoding", "memory")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:tiny", help="synth model (default: %(default)s)")
    parser.add_argument("--devices", default="cpu", help="synth devices, e.g. cuda:0 (default: %(default)s)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset of: %(default)s")
    parser.add_argument("--clip-seconds", type=float,
                        help="clip length of the synth and memory benchmarks (default: 1 on CPU, 12 on a GPU)")
    parser.add_argument("--concurrency", default="1,4,16,64", help="synth concurrencies (default: %(default)s)")
    parser.add_argument("--rounds", type=int,
                        help="a synth cell is rounds x concurrency requests, at least --min-requests and at most "
                             "--max-requests (default: 2 on CPU, 1 on a GPU)")
    parser.add_argument("--min-requests", type=int, help="(default: 8 on CPU, 4 on a GPU)")
    parser.add_argument("--max-requests", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--repeats", type=int,
                        help="turns of every synth cell, in alternating order, pooled (default: 2 on CPU, 1 on a GPU)")
    parser.add_argument("--max-batch", type=int, default=16, help="batching on (default: %(default)s)")
    parser.add_argument("--max-wait-ms", type=float, default=20.0, help="batching on (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=200, help="orchestrator jobs (default: %(default)s)")
    parser.add_argument("--encode-seconds", type=float, default=12.0, help="encoded clip (default: %(default)s)")
    parser.add_argument("--encode-runs", type=int, default=9, help="runs per format and path (default: %(default)s)")
    parser.add_argument("--memory-models",
                        help="MODEL@REQUESTS,... of the memory benchmark: each model's server takes REQUESTS at once "
                             "(default: random:tiny@16,random:bark-small@1 on CPU, where bark-small's fine stage takes "
                             "most of a minute per clip; MODEL@MAX_BATCH on a GPU)")
    parser.add_argument("--dry-run", action="store_true", help="print the figures, write nothing")
    args = parser.parse_args()
    gpu = args.devices != "cpu"
    args.only = args.only.split(",")
    if unknown := set(args.only) - set(BENCHMARKS):
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.clip_seconds = args.clip_seconds or (12.0 if gpu else 1.0)
    args.rounds = args.rounds or (1 if gpu else 2)
    args.min_requests = args.min_requests or (4 if gpu else 8)
    args.repeats = args.repeats or (1 if gpu else 2)
    memory_models = args.memory_models or (f"{args.model}@{args.max_batch}" if gpu else
                                           "random:tiny@16,random:bark-small@1")
    args.memory_models = [(m, int(n)) for m, n in (entry.split("@") for entry in memory_models.split(","))]
    return args


async def main() -> None:
    args = parse_args()
    started = time.monotonic()
    records = []
    if "synth" in args.only:
        records.append(await synth_throughput.run(synth_throughput.Plan(
            model=args.model, devices=args.devices, clip_seconds=args.clip_seconds,
            concurrency=tuple(args.concurrency), rounds=args.rounds, min_requests=args.min_requests,
            max_requests=args.max_requests, repeats=args.repeats, max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms)))
    if "orchestrator" in args.only:
        records.append(await orchestrator_throughput.run(jobs=args.jobs, clip_seconds=0.1, max_batch=8))
    if "encoding" in args.only:
        records.append(encoding.run(clip_seconds=args.encode_seconds, runs=args.encode_runs))
    if "memory" in args.only:
        records.append(await memory.run(models=args.memory_models, devices=args.devices,
                                        clip_seconds=args.clip_seconds, max_batch=args.max_batch))
    records = [{"benchmark": r["benchmark"], **machine(), **r} for r in records]
    print(f"all done in {time.monotonic() - started:.0f} s")
    if args.dry_run:
        print(json.dumps(records, indent=2))
        return
    append_results(records)
    report.write(json.loads(RESULTS_JSON.read_text()))
    print(f"appended to {RESULTS_JSON}; tables rewritten in {report.RESULTS_MD}")


if __name__ == "__main__":
    asyncio.run(main())
