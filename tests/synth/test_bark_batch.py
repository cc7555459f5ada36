"""Bark with a voice per item: with greedy decoding, each item of a mixed batch is exactly its batch of one, and a
batch of one is exactly transformers' own BarkModel.generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chorus_synth.bark_batch import BatchedBark, BatchItem, Sampling
from chorus_synth.devices import describe
from chorus_synth.engine import BarkEngine, ClipOutput, ClipRequest, GenerationParams
from chorus_synth.models import LoadedBark, load_bark

GREEDY = Sampling(do_sample=False, semantic_temperature=1.0, coarse_temperature=1.0, fine_temperature=1.0)
CLIPS = [  # text, voice, semantic token cap
    ("Hello there.", "v2/en_speaker_1", 25),
    ("A much longer sentence about bread and butter.", "v2/de_speaker_3", 30),
    ("Rain.", "en_speaker_9", 12),
]


@pytest.fixture(scope="module")
def loaded():
    return load_bark("random:tiny", torch.device("cpu"))


def item(loaded, text: str, voice: str, cap: int, history=None) -> BatchItem:
    encoded = loaded.tokenize([text])
    return BatchItem(encoded["input_ids"][0], encoded["attention_mask"][0], history or loaded.voice_prompt(voice), cap)


def test_a_batch_of_one_is_transformers_own_generate(loaded):
    bark = BatchedBark(loaded.model)
    for text, voice, cap in CLIPS:
        encoded = loaded.tokenize([text])
        with torch.inference_mode():
            audio, lengths = loaded.model.generate(
                input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                history_prompt=loaded.voice_prompt(voice), do_sample=False, semantic_max_new_tokens=cap,
                return_output_lengths=True)
        [ours] = bark.generate([item(loaded, text, voice, cap)], GREEDY)
        np.testing.assert_array_equal(ours, audio[0, : lengths[0]].numpy())


def test_each_item_of_a_mixed_voice_batch_is_its_batch_of_one(loaded):
    bark = BatchedBark(loaded.model)
    alone = [bark.generate([item(loaded, *clip)], GREEDY)[0] for clip in CLIPS]
    together = bark.generate([item(loaded, *clip) for clip in CLIPS], GREEDY)
    assert len({len(a) for a in alone}) > 1  # different lengths: padding is exercised
    for solo, batched in zip(alone, together):
        np.testing.assert_array_equal(batched, solo)


def test_histories_of_another_shape_cannot_share_a_batch(loaded):
    bark = BatchedBark(loaded.model)
    short = {key: value[..., :40] for key, value in loaded.voice_prompt("v2/en_speaker_2").items()}
    assert bark.history_shape(short) != bark.history_shape(loaded.voice_prompt("v2/en_speaker_1"))
    with pytest.raises(ValueError, match="one shape"):
        bark.generate([item(loaded, *CLIPS[0]), item(loaded, "Hi.", "v2/en_speaker_2", 10, history=short)], GREEDY)


def test_the_engine_puts_voices_of_another_history_shape_in_their_own_batch(loaded, monkeypatch):
    engine = BarkEngine(loaded, describe(torch.device("cpu")))
    real_prompt = LoadedBark.voice_prompt

    def prompt(self, voice):
        history = real_prompt(self, voice)
        return {k: v[..., :40] for k, v in history.items()} if voice == "v2/fr_speaker_0" else history

    monkeypatch.setattr(LoadedBark, "voice_prompt", prompt)
    params = GenerationParams(max_seconds=0.2)
    outputs = engine.generate([ClipRequest("One.", "v2/en_speaker_1", params),
                               ClipRequest("Two.", "v2/fr_speaker_0", params),
                               ClipRequest("Three.", "v2/en_speaker_4", params)])
    assert all(isinstance(o, ClipOutput) for o in outputs)
    assert [o.batch_size for o in outputs] == [2, 1, 2]
