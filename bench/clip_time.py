"""Time per clip through a real synth server: sequential requests at several clip lengths, and concurrency 4.

    python bench/clip_time.py [--model random:tiny] [--devices cpu] [--repeats 5]

Appends its figures to bench/results.json. Not part of `make bench` (bench/run.py), whose synth throughput at
concurrency 1 gives the time per clip; its 2026-11-21 figures are in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import grpc
import torch

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc
from chorus_synth.server import State, SynthServer
from chorus_synth.settings import Settings

HERE = Path(__file__).parent
TEXT = "The quick brown fox jumps over the lazy dog, and then it runs back home."


async def measure(stub, clip_seconds: float, repeats: int, concurrency: int) -> dict:
    settings = pb.GenerationSettings(max_seconds=clip_seconds)
    latencies, audio_seconds, batch_sizes = [], 0.0, []
    started = time.perf_counter()
    for _ in range(repeats):
        async def one():
            t0 = time.perf_counter()
            reply = await stub.Synthesize(pb.SynthesizeRequest(text=TEXT, voice="v2/en_speaker_6", settings=settings))
            latencies.append(time.perf_counter() - t0)
            batch_sizes.append(reply.served_by.batch_size)
            return reply.duration_seconds
        audio_seconds += sum(await asyncio.gather(*(one() for _ in range(concurrency))))
    wall = time.perf_counter() - started
    return {
        "clip_seconds": clip_seconds, "concurrency": concurrency, "clips": len(latencies),
        "mean_latency_s": statistics.mean(latencies), "p50_latency_s": statistics.median(latencies),
        "audio_seconds_per_second": audio_seconds / wall, "mean_batch_size": statistics.mean(batch_sizes),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:tiny")
    parser.add_argument("--devices", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    server = SynthServer(Settings(model=args.model, devices=args.devices, host="127.0.0.1", port=0,
                                  metrics_port=0, metrics_host="127.0.0.1", max_clip_seconds=14.0))
    await server.start()
    while server.state is State.STARTING:
        await asyncio.sleep(0.05)
    assert server.state is State.READY, server.state_message
    rows = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = synth_pb2_grpc.SynthStub(channel)
        for clip_seconds in (1.0, 4.0, 12.0):
            for concurrency in (1, 4):
                rows.append(await measure(stub, clip_seconds, args.repeats, concurrency))
                print(json.dumps(rows[-1]))
    await server.stop(grace_s=0)
    record = {
        "benchmark": "clip_time", "date": datetime.date.today().isoformat(), "model": args.model,
        "devices": args.devices, "gpu_model": server.devices[0].gpu_model, "machine": platform.machine(),
        "cpu_count": torch.get_num_threads(), "torch": torch.__version__, "rows": rows,
        "settings": dataclasses.asdict(server.settings),
    }
    results = HERE / "results.json"
    history = json.loads(results.read_text()) if results.exists() else []
    history.append(record)
    results.write_text(json.dumps(history, indent=2) + "\n")
    print(f"appended to {results}")


if __name__ == "__main__":
    asyncio.run(main())
