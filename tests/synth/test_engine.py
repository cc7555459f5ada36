"""The engine on random:tiny: batches share a voice; out of memory splits a batch; a failed batch goes one by one."""

from __future__ import annotations

import pytest
import torch

from chorus_synth.devices import describe
from chorus_synth.engine import BarkEngine, ClipOutput, ClipRequest, DeviceOutOfMemory, GenerationParams
from chorus_synth.models import load_bark

PARAMS = GenerationParams(max_seconds=0.3)


@pytest.fixture(scope="module")
def engine() -> BarkEngine:
    device = torch.device("cpu")
    return BarkEngine(load_bark("random:tiny", device), describe(device))


def clips(n: int, voice: str = "v2/en_speaker_1") -> list[ClipRequest]:
    return [ClipRequest(f"Clip number {i}.", voice, PARAMS) for i in range(n)]


def test_batch_generates_one_clip_per_request(engine):
    outputs = engine.generate(clips(3))
    assert all(isinstance(o, ClipOutput) and o.batch_size == 3 and o.samples.size > 0 for o in outputs)
    assert all(o.samples.size <= 0.35 * 24000 for o in outputs)


def test_any_voices_share_a_batch_but_not_other_settings(engine):
    outputs = engine.generate([*clips(2, "v2/en_speaker_1"), *clips(2, "v2/de_speaker_2")])
    assert [o.batch_size for o in outputs] == [4, 4, 4, 4]
    hotter = ClipRequest("Hot.", "v2/en_speaker_1", GenerationParams(max_seconds=0.3, semantic_temperature=1.2))
    with pytest.raises(ValueError, match="one set of settings"):
        engine.generate([*clips(1), hotter])


def test_out_of_memory_splits_the_batch_until_it_fits(engine, monkeypatch):
    # CPU tensors never run out of memory the CUDA way: the fault is injected at the engine's seam.
    real_run, sizes = engine._run, []

    def run(batch):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_run(batch)

    monkeypatch.setattr(engine, "_run", run)
    outputs = engine.generate(clips(4))
    assert sizes == [4, 2, 1, 1, 2, 1, 1]
    assert all(isinstance(o, ClipOutput) and o.batch_size == 1 for o in outputs)


def test_out_of_memory_on_one_clip_is_an_error_not_a_crash(engine, monkeypatch):
    def run(batch):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(engine, "_run", run)
    [output] = engine.generate(clips(1))
    assert isinstance(output, DeviceOutOfMemory)


def test_a_failed_batch_is_retried_one_by_one(engine, monkeypatch):
    real_run = engine._run

    def run(batch):
        if len(batch) > 1 or "1" in batch[0].text:
            raise RuntimeError("injected")
        return real_run(batch)

    monkeypatch.setattr(engine, "_run", run)
    outputs = engine.generate(clips(3))
    assert [type(o).__name__ for o in outputs] == ["ClipOutput", "EngineError", "ClipOutput"]


def test_seed_makes_a_clip_reproducible(engine):
    params = GenerationParams(max_seconds=0.3, seed=99)
    request = ClipRequest("Same words.", "v2/en_speaker_3", params)
    [first], [second] = engine.generate([request]), engine.generate([request])
    assert (first.samples == second.samples).all()
