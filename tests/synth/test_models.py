from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import huggingface_hub.constants
import pytest
import torch
from transformers import EncodecConfig

from chorus_synth.models import (
    RANDOM_MODELS,
    LoadedBark,
    ModelLoadError,
    load_bark,
    random_config,
    save_random_model,
    voice_language,
)

CPU = torch.device("cpu")
LANGUAGES = ("en", "de", "es", "fr", "hi", "it", "ja", "ko", "pl", "pt", "ru", "tr", "zh")


@pytest.fixture(scope="module")
def tiny() -> LoadedBark:
    return load_bark("random:tiny", CPU)


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the environment once, at import: patch what it read, and point it at an empty
    # cache so that a model cached on this machine cannot make the test pass or fail.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def generate(bark: LoadedBark, texts: list[str], voice: str, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    torch.manual_seed(seed)
    return bark.model.generate(
        **bark.tokenize(texts),
        history_prompt=bark.voice_prompt(voice),
        do_sample=True,
        semantic_max_new_tokens=10,
        return_output_lengths=True,
    )


def test_random_tiny_loads_with_all_bark_voices(tiny):
    expected = {
        f"{prefix}{language}_speaker_{n}"
        for prefix in ("v2/", "")
        for language in LANGUAGES
        for n in range(10)
    }
    assert len(tiny.voices) == 260
    assert set(tiny.voices) == expected
    assert list(tiny.voices) == sorted(tiny.voices)
    assert tiny.sample_rate_hz == 24_000
    assert tiny.attn_implementation == "eager"
    assert tiny.device == CPU
    assert tiny.model.dtype == torch.float32
    assert not tiny.model.training
    assert sum(p.numel() for p in tiny.model.parameters()) < 10_000_000


def test_voice_prompt_has_bark_shapes(tiny):
    prompt = tiny.voice_prompt("v2/en_speaker_6")

    assert set(prompt) == {"semantic_prompt", "coarse_prompt", "fine_prompt"}
    semantic, coarse, fine = prompt["semantic_prompt"], prompt["coarse_prompt"], prompt["fine_prompt"]
    assert semantic.ndim == 1 and not semantic.is_floating_point()
    assert coarse.shape[0] == 2 and fine.shape[0] == 8
    assert coarse.shape[1] == fine.shape[1] > 0
    assert 0 <= int(semantic.min()) and int(semantic.max()) < 10_000
    assert 0 <= int(fine.min()) and int(fine.max()) < 1_024
    assert all(t.device == CPU for t in prompt.values())


def test_voice_prompt_is_loaded_once_even_from_many_threads():
    bark = load_bark("random:tiny", CPU)

    with ThreadPoolExecutor(max_workers=8) as pool:
        prompts = list(pool.map(bark.voice_prompt, ["de_speaker_3"] * 16))

    first = prompts[0]["semantic_prompt"]
    assert all(p["semantic_prompt"] is first for p in prompts)
    assert bark.voice_prompt("de_speaker_3")["fine_prompt"] is prompts[0]["fine_prompt"]


@pytest.mark.parametrize("voice", ["../../etc/passwd", "/etc/passwd", "repo_or_path", "en_speaker_10", ""])
def test_voice_prompt_refuses_unknown_names(tiny, voice):
    with pytest.raises(KeyError):
        tiny.voice_prompt(voice)


def test_generate_gives_audio_of_the_returned_lengths(tiny):
    audio, lengths = generate(tiny, ["Hello there.", "A second, longer sentence."], "v2/en_speaker_6")

    assert audio.shape[0] == 2
    assert audio.shape[1] == max(lengths)
    assert all(length > 0 for length in lengths)
    assert torch.isfinite(audio).all()
    for row, length in zip(audio, lengths):
        assert not row[length:].any()


def test_two_loads_give_identical_weights_and_leave_the_global_seed_alone(tiny):
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)

    again = load_bark("random:tiny", CPU)

    assert torch.equal(torch.rand(3), expected_draw)
    first, second = tiny.model.state_dict(), again.model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert torch.equal(
        tiny.voice_prompt("fr_speaker_2")["coarse_prompt"],
        again.voice_prompt("fr_speaker_2")["coarse_prompt"],
    )


@pytest.mark.parametrize(
    ("name", "hidden_size", "num_layers", "num_heads"),
    [("random:bark-small", 768, 12, 12), ("random:bark", 1024, 24, 16)],
)
def test_random_configs_have_the_real_shapes(name, hidden_size, num_layers, num_heads):
    config = random_config(name)

    for sub in (config.semantic_config, config.coarse_acoustics_config, config.fine_acoustics_config):
        assert (sub.hidden_size, sub.num_layers, sub.num_heads, sub.block_size) == (
            hidden_size,
            num_layers,
            num_heads,
            1024,
        )
    assert (config.semantic_config.input_vocab_size, config.semantic_config.output_vocab_size) == (
        129_600,
        10_048,
    )
    assert (
        config.coarse_acoustics_config.input_vocab_size
        == config.coarse_acoustics_config.output_vocab_size
        == 12_096
    )
    assert (
        config.fine_acoustics_config.input_vocab_size
        == config.fine_acoustics_config.output_vocab_size
        == 1_056
    )
    assert (config.fine_acoustics_config.n_codes_total, config.fine_acoustics_config.n_codes_given) == (8, 1)
    assert config.codec_config.to_dict() == EncodecConfig().to_dict()  # facebook/encodec_24khz
    assert config.codec_config.sampling_rate == 24_000


def test_saved_random_model_round_trips_offline(tiny, tmp_path, offline_hub):
    save_random_model("random:tiny", str(tmp_path / "bark"))

    loaded = load_bark(str(tmp_path / "bark"), CPU)

    assert loaded.source == str(tmp_path / "bark")
    assert loaded.voices == tiny.voices
    assert loaded.sample_rate_hz == 24_000
    for key, tensor in tiny.voice_prompt("v2/ja_speaker_1").items():
        assert torch.equal(loaded.voice_prompt("v2/ja_speaker_1")[key], tensor)
    assert torch.equal(
        loaded.tokenize(["Grüß Gott!"])["input_ids"], tiny.tokenize(["Grüß Gott!"])["input_ids"]
    )
    expected_audio, expected_lengths = generate(tiny, ["Same seed, same tokens."], "v2/ja_speaker_1", seed=7)
    audio, lengths = generate(loaded, ["Same seed, same tokens."], "v2/ja_speaker_1", seed=7)
    assert lengths == expected_lengths
    assert torch.equal(audio, expected_audio)


def test_hub_id_without_network_is_a_load_error(offline_hub):
    with pytest.raises(ModelLoadError, match="suno/bark-small") as caught:
        load_bark("suno/bark-small", CPU)

    assert caught.value.__cause__ is not None


@pytest.mark.parametrize("source", ["/nonexistent/chorus/bark-small", "./no-such-model", "~/no-such-model"])
def test_missing_directory_is_a_load_error(source):
    with pytest.raises(ModelLoadError, match="no such directory") as caught:
        load_bark(source, CPU)

    assert source in str(caught.value)


def test_directory_without_a_model_is_a_load_error(tmp_path, offline_hub):
    with pytest.raises(ModelLoadError, match="directory") as caught:
        load_bark(str(tmp_path), CPU)

    assert str(tmp_path) in str(caught.value)
    assert caught.value.__cause__ is not None


def test_unknown_random_model_lists_the_valid_names():
    with pytest.raises(ModelLoadError, match="random:nope") as caught:
        load_bark("random:nope", CPU)

    assert all(name in str(caught.value) for name in RANDOM_MODELS)


def test_tokenize_matches_the_processor_and_token_count(tiny):
    texts = ["Hello there.", "Привет, мир! こんにちは"]

    encoded = tiny.tokenize(texts)

    expected = tiny.processor(texts)
    assert set(encoded) == {"input_ids", "attention_mask"}
    assert encoded["input_ids"].shape == (2, 256)
    assert torch.equal(encoded["input_ids"], expected["input_ids"])
    assert torch.equal(encoded["attention_mask"], expected["attention_mask"])
    assert [int(n) for n in encoded["attention_mask"].sum(dim=1)] == [tiny.token_count(t) for t in texts]
    assert int(encoded["input_ids"].max()) < 129_600 - 10_048
    assert tiny.processor.tokenizer.unk_token_id not in encoded["input_ids"][encoded["attention_mask"].bool()]


def test_token_count_reports_texts_longer_than_bark_reads(tiny):
    assert tiny.token_count("") == 0
    assert tiny.token_count("Short text.") < 256
    assert tiny.token_count("A long sentence that goes on. " * 40) > 256


@pytest.mark.parametrize(
    ("voice", "language"),
    [
        ("v2/en_speaker_6", "en"),
        ("de_speaker_1", "de"),
        ("v2/zh_speaker_9", "zh"),
        ("announcer", ""),
        ("../en_speaker_1", ""),
    ],
)
def test_voice_language(voice, language):
    assert voice_language(voice) == language


def test_counting_tokens_while_another_thread_tokenizes_a_batch_keeps_the_batch_padded():
    # The server counts tokens (validation) while a replica's thread tokenizes a batch: the fast tokenizer's
    # per-call padding state must not leak from one into the other.
    loaded = load_bark("random:tiny", torch.device("cpu"))
    shapes: list[tuple[int, ...]] = []
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            loaded.token_count("Hi.")

    # Switching threads as often as possible makes an unguarded tokenizer fail here within a few hundred calls.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    counter = threading.Thread(target=count)
    counter.start()
    try:
        for _ in range(1500):
            shapes.append(tuple(loaded.tokenize(["Hi.", "Hello there."])["input_ids"].shape))
    finally:
        stop.set()
        counter.join()
        sys.setswitchinterval(interval)
    assert set(shapes) == {(2, 256)}
