"""How the scheduler forms batches: one key per batch, lengths grouped, the oldest request first."""

from __future__ import annotations

import asyncio

import numpy as np

from chorus_synth.devices import DeviceInfo
from chorus_synth.engine import ClipOutput, ClipRequest, GenerationParams
from chorus_synth.metrics import SynthMetrics
from chorus_synth.scheduler import Scheduler

DEVICE = DeviceInfo(name="cpu", gpu_model="cpu", memory_bytes=1)


class RecordingEngine:
    """Stands in for Bark at the engine seam: only the batches the scheduler forms matter here."""

    device_info = DEVICE

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def generate(self, batch: list[ClipRequest]) -> list[ClipOutput]:
        self.batches.append([r.text for r in batch])
        return [ClipOutput(np.zeros(10, np.float32), 24000, len(batch), 0.0) for _ in batch]


def words(n: int, tag: str) -> str:
    return " ".join([tag] * n)


async def test_a_batch_takes_the_requests_closest_in_length_to_the_oldest():
    engine = RecordingEngine()
    scheduler = Scheduler([engine], max_batch=2, max_queued=10, metrics=SynthMetrics("m", [DEVICE]))
    params = GenerationParams(max_seconds=14.0)
    texts = [words(20, "long1"), words(2, "short1"), words(2, "short2"), words(18, "long2")]
    runs = [asyncio.create_task(scheduler.run(ClipRequest(t, "v", params))) for t in texts]
    await asyncio.sleep(0)  # every request is queued before the replica starts pulling
    scheduler.start()
    await asyncio.gather(*runs)
    await scheduler.close()
    assert engine.batches == [[texts[0], texts[3]], [texts[1], texts[2]]]


async def test_requests_with_other_settings_never_share_a_batch():
    engine = RecordingEngine()
    scheduler = Scheduler([engine], max_batch=4, max_queued=10, metrics=SynthMetrics("m", [DEVICE]))
    cool, hot = GenerationParams(semantic_temperature=0.5), GenerationParams(semantic_temperature=1.0)
    runs = [asyncio.create_task(scheduler.run(ClipRequest(f"t{i}", "v", cool if i % 2 else hot))) for i in range(4)]
    await asyncio.sleep(0)
    scheduler.start()
    await asyncio.gather(*runs)
    await scheduler.close()
    assert sorted(map(sorted, engine.batches)) == [["t0", "t2"], ["t1", "t3"]]
