"""Bark with a voice per item: with greedy decoding, each item of a mixed batch is exactly its batch of one, and a
batch of one is exactly transformers' own BarkModel.generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chorus_synth.bark_batch import TOP_K, BatchedBark, BatchItem, Sampling, sample_categorical
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


@pytest.mark.parametrize("long_pass_rows", [None, 1, 2])
def test_each_item_of_a_mixed_voice_batch_is_its_batch_of_one(loaded, long_pass_rows):
    bark = BatchedBark(loaded.model, long_pass_rows=long_pass_rows)
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


def test_the_first_two_stages_sample_from_transformers_default_top_k():
    from transformers.generation.configuration_utils import GenerationConfig

    assert GenerationConfig._get_default_generation_params()["top_k"] == TOP_K


def test_sample_categorical_draws_with_the_given_probabilities():
    torch.manual_seed(0)
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2], [0.0, 0.0, 0.0, 1.0]]).expand(20_000, 2, 4)
    draws = sample_categorical(probs)
    assert draws.shape == (20_000, 2)
    assert (draws[:, 1] == 3).all()
    frequencies = torch.bincount(draws[:, 0], minlength=4) / 20_000
    assert frequencies[1] == 0  # never an entry of probability zero
    np.testing.assert_allclose(frequencies.numpy(), [0.5, 0.0, 0.3, 0.2], atol=0.015)


def test_an_item_that_has_its_tokens_stops_costing_work(loaded):
    """A short item leaves the semantic batch when it has its tokens, and the coarse batch after its last window."""
    bark = BatchedBark(loaded.model)
    rows = {"semantic": [], "coarse_acoustics": []}
    hooks = [getattr(loaded.model, name).register_forward_pre_hook(
        lambda module, args, kwargs, name=name: rows[name].append(
            (kwargs.get("input_ids", kwargs.get("inputs_embeds")).shape[:2])), with_kwargs=True)
        for name in rows]
    try:
        short, long = item(loaded, "Hi.", "v2/en_speaker_1", 10), item(loaded, "Hello there.", "v2/de_speaker_3", 60)
        semantic = bark._semantic([short, long], GREEDY)
        bark._coarse(semantic, [bark._coarse_histories(i.history) for i in (short, long)], GREEDY)
    finally:
        for hook in hooks:
            hook.remove()
    assert [len(tokens) for tokens in semantic] == [10, 60]  # random weights never end speech by themselves
    # The prompt's pass and 9 steps with both items, then 50 steps with the long one alone.
    assert [batch for batch, _ in rows["semantic"]] == [2] * 10 + [1] * 50
    # Coarse: 10 semantic tokens make 30 coarse tokens (one window), 60 make 180 (three windows of 60).
    prompts = [batch for batch, length in rows["coarse_acoustics"] if length > 1]
    assert prompts == [2, 1, 1]
