"""Synth throughput: audio seconds per wall second and latency at several concurrencies, batching off and on, one
voice or a random voice per request.

Each (batching, voices) configuration has its own fresh server; all four are started first and then take turns, cell
by cell (one concurrency at a time; each cell's four in one order on one turn and in the reverse order on the next),
so that a burst of other work on a shared machine falls on all of them rather than on one. A cell is a closed loop:
`concurrency` callers, each sending its next `Synthesize` as soon as its last reply is in, until the cell's requests
are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time

import grpc
from common import load_average, percentile, synth_server

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc

# What `chorus enqueue` picks a document's voice from.
VOICES = tuple(f"v2/en_speaker_{i}" for i in range(10))
TEXTS = (
    "The quick brown fox jumps over the lazy dog, and then it runs back home across the fields.",
    "Preheat the oven, butter a deep dish and scatter the onions over the bottom before the potatoes.",
    "She had never seen the sea before that summer, and she could not stop talking about it.",
    "Stir the sauce slowly until it thickens, then take it off the heat and let it rest for a minute.",
)


@dataclasses.dataclass(frozen=True)
class Config:
    max_batch: int
    voices: str  # "one" or "random"

    @property
    def batching(self) -> str:
        return "off" if self.max_batch == 1 else "on"


@dataclasses.dataclass
class Samples:
    """Every reply of one configuration at one concurrency, over all turns."""

    latencies_s: list[float] = dataclasses.field(default_factory=list)
    batch_sizes: list[int] = dataclasses.field(default_factory=list)
    queue_s: list[float] = dataclasses.field(default_factory=list)
    audio_seconds: float = 0.0
    wall_s: float = 0.0


async def run_cell(stub, config: Config, concurrency: int, requests: int, clip_seconds: float,
                   rng: random.Random, samples: Samples) -> dict:
    settings = pb.GenerationSettings(max_seconds=clip_seconds)
    todo = iter(range(requests))  # shared by the callers: each request is sent once
    cell = Samples()

    async def caller() -> None:
        for index in todo:
            voice = VOICES[0] if config.voices == "one" else rng.choice(VOICES)
            request = pb.SynthesizeRequest(text=TEXTS[index % len(TEXTS)], voice=voice,
                                           encoding=pb.AUDIO_ENCODING_WAV, settings=settings)
            started = time.perf_counter()
            reply = await stub.Synthesize(request)
            cell.latencies_s.append(time.perf_counter() - started)
            cell.batch_sizes.append(reply.served_by.batch_size)
            cell.queue_s.append(reply.served_by.queue_seconds)
            cell.audio_seconds += reply.duration_seconds

    load_before = load_average()
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))  # a fixed pool of callers
    cell.wall_s = time.perf_counter() - started
    for field in ("latencies_s", "batch_sizes", "queue_s"):
        getattr(samples, field).extend(getattr(cell, field))
    samples.audio_seconds += cell.audio_seconds
    samples.wall_s += cell.wall_s
    return {**summarize(cell), "load_average_before": load_before, "load_average_after": load_average()}


def summarize(samples: Samples) -> dict:
    return {
        "requests": len(samples.latencies_s),
        "wall_s": round(samples.wall_s, 3),
        "audio_seconds": round(samples.audio_seconds, 3),
        "audio_seconds_per_second": samples.audio_seconds / samples.wall_s,
        "p50_latency_s": percentile(samples.latencies_s, 50),
        "p95_latency_s": percentile(samples.latencies_s, 95),
        "mean_batch_size": sum(samples.batch_sizes) / len(samples.batch_sizes),
        "mean_queue_s": sum(samples.queue_s) / len(samples.queue_s),
    }


@dataclasses.dataclass(frozen=True)
class Plan:
    model: str
    devices: str
    clip_seconds: float
    concurrency: tuple[int, ...]
    # A cell is rounds x concurrency requests per turn, within [min_requests, max_requests].
    rounds: int
    min_requests: int
    max_requests: int
    repeats: int  # turns of every cell
    max_batch: int  # of batching on
    max_wait_ms: float
    seed: int = 0

    def requests(self, concurrency: int) -> int:
        return min(self.max_requests, max(self.min_requests, self.rounds * concurrency))


async def run(plan: Plan) -> dict:
    configs = [Config(b, v) for b in (1, plan.max_batch) for v in ("one", "random")]
    rng = random.Random(plan.seed)
    rows, samples = [], {(c, n): Samples() for c in configs for n in plan.concurrency}
    async with contextlib.AsyncExitStack() as stack:
        stubs = {}
        for config in configs:
            server = await stack.enter_async_context(synth_server(
                model=plan.model, devices=plan.devices, max_batch=config.max_batch, max_wait_ms=plan.max_wait_ms,
                max_clip_seconds=plan.clip_seconds, max_queued=max(plan.concurrency)))
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{server.port}"))
            stubs[config] = synth_pb2_grpc.SynthStub(channel)
        for repeat in range(plan.repeats):
            for index, concurrency in enumerate(plan.concurrency):
                # Each cell's configurations in one order on one turn, the other on the next.
                for config in configs[::-1] if (repeat + index) % 2 else configs:
                    row = await run_cell(stubs[config], config, concurrency, plan.requests(concurrency),
                                         plan.clip_seconds, rng, samples[config, concurrency])
                    rows.append({"repeat": repeat, "batching": config.batching, "max_batch": config.max_batch,
                                 "voices": config.voices, "concurrency": concurrency, **row})
                    print(f"synth {config.batching:>3} {config.voices:>6} c={concurrency:<3} "
                          f"{row['audio_seconds_per_second']:.2f} audio s/s, p95 {row['p95_latency_s']:.2f} s, "
                          f"batch {row['mean_batch_size']:.1f}", flush=True)
    summary = [{"batching": c.batching, "max_batch": c.max_batch, "voices": c.voices, "concurrency": n,
                **summarize(s)} for (c, n), s in samples.items()]
    return {"benchmark": "synth_throughput", "model": plan.model, "devices": plan.devices,
            "settings": {**dataclasses.asdict(plan), "encoding": "wav"}, "rows": rows, "summary": summary}
