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
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc

TEXT = "The quick brown fox jumps over the lazy dog."
NEIGHBOUR = "import torch\na = torch.randn(1500, 1500)\nwhile True:\n    a @ a\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def burst(port: int, clips: int) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 120
        while True:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the synth server did not become ready in 120 s")
            await asyncio.sleep(0.5)
        stub = synth_pb2_grpc.SynthStub(channel)

        def request(i: int) -> pb.SynthesizeRequest:
            return pb.SynthesizeRequest(text=TEXT, voice=f"v2/en_speaker_{i % 10}", encoding=pb.AUDIO_ENCODING_WAV,
                                        settings=pb.GenerationSettings(max_seconds=1.0))

        await stub.Synthesize(request(0))
        started = time.perf_counter()
        await asyncio.gather(*(stub.Synthesize(request(i)) for i in range(clips)))
        return time.perf_counter() - started


def run_one(workers: str, spincount: str, neighbour: bool, clips: int) -> float:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "chorus_synth.server", "--model", "random:tiny", "--devices", "cpu", "--port",
         str(port), "--metrics-port", "0", "--workers", workers, "--max-batch", "16"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "GOMP_SPINCOUNT": spincount})
    busy = subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) if neighbour else None
    try:
        return asyncio.run(burst(port, clips))
    finally:
        for process in (server, busy):
            if process is not None:
                process.terminate()
                process.wait()


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
                    elapsed = run_one(workers, spincount, neighbour, args.burst)
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
