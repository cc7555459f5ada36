"""A CPU synth server on shared cores: a burst of clips with and without a busy neighbour, for several OpenMP spin
counts of its worker (`GOMP_SPINCOUNT`; libgomp's own default is 300000, the synth's CPU workers start with 1000).

    python bench/contention.py [--spincounts 300000,1000] [--workers process] [--burst 16] [--repeats 2]

The neighbour is another process multiplying matrices with torch on every core, as a second service or a test run
on the same machine would. Each setting gets its own `chorus-synth` (random:tiny, CPU); settings take turns, repeat
after repeat. Prints the seconds of each burst. Not part of `make bench`; its figures are in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

from common import synth_process

from chorus.synth.v1 import synth_pb2 as pb

TEXT = "The quick brown fox jumps over the lazy dog."
NEIGHBOUR = "import torch\na = torch.randn(1500, 1500)\nwhile True:\n    a @ a\n"


def request(i: int) -> pb.SynthesizeRequest:
    return pb.SynthesizeRequest(text=TEXT, voice=f"v2/en_speaker_{i % 10}", encoding=pb.AUDIO_ENCODING_WAV,
                                settings=pb.GenerationSettings(max_seconds=1.0))


async def run_one(workers: str, spincount: str, neighbour: bool, clips: int) -> float:
    """Seconds for a burst of `clips` at once on a fresh server, after one clip alone."""
    async with synth_process("--model", "random:tiny", "--devices", "cpu", "--workers", workers, "--max-batch", "16",
                             env={**os.environ, "GOMP_SPINCOUNT": spincount}) as (_, stub):
        busy = subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) if neighbour else None
        try:
            await stub.Synthesize(request(0))
            started = time.perf_counter()
            await asyncio.gather(*(stub.Synthesize(request(i)) for i in range(clips)))
            return time.perf_counter() - started
        finally:
            if busy is not None:
                busy.terminate()
                busy.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spincounts", default="300000,1000")
    parser.add_argument("--workers", default="process", help="process or thread, or both: process,thread")
    parser.add_argument("--burst", type=int, default=16, help="clips sent at once (1 s each)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    seconds: dict[tuple, list[float]] = {}
    for _ in range(args.repeats):
        for workers in args.workers.split(","):
            for spincount in args.spincounts.split(","):
                for neighbour in (False, True):
                    elapsed = asyncio.run(run_one(workers, spincount, neighbour, args.burst))
                    seconds.setdefault((workers, spincount, neighbour), []).append(elapsed)
                    print(f"workers={workers} GOMP_SPINCOUNT={spincount} {'busy neighbour' if neighbour else 'quiet'}: "
                          f"{elapsed:.2f} s", flush=True)
    print("| workers | GOMP_SPINCOUNT | quiet | busy neighbour |")
    print("|---|---:|---:|---:|")
    for workers in args.workers.split(","):
        for spincount in args.spincounts.split(","):
            quiet, busy = (", ".join(f"{s:.1f} s" for s in seconds[workers, spincount, n]) for n in (False, True))
            print(f"| {workers} | {spincount} | {quiet} | {busy} |")


if __name__ == "__main__":
    main()
