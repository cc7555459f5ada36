"""Turn a model source string into a Bark model, its processor and its voices on one torch device.

A source is a Hugging Face hub id (``suno/bark-small``), a local directory holding what
``save_pretrained`` wrote (weights baked into an image), or one of ``RANDOM_MODELS``: Bark's real
architecture with seeded random weights, a locally built tokenizer and seeded voice presets, built
without any download so the whole pipeline (processor, presets, generate, codec) runs in tests.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import (
    AutoModel,
    AutoTokenizer,
    BarkCoarseConfig,
    BarkConfig,
    BarkFineConfig,
    BarkModel,
    BarkProcessor,
    BarkSemanticConfig,
    BertTokenizerFast,
    EncodecConfig,
    GenerationConfig,
)
from transformers.models.bark.generation_configuration_bark import (
    BarkCoarseGenerationConfig,
    BarkFineGenerationConfig,
    BarkGenerationConfig,
    BarkSemanticGenerationConfig,
)
from transformers.utils import is_flash_attn_2_available

RANDOM_MODELS: tuple[str, ...] = ("random:tiny", "random:bark-small", "random:bark")

# (hidden_size, num_layers, num_heads) of the semantic, coarse and fine sub-models.
_RANDOM_SHAPES = {
    "random:tiny": (32, 2, 2),
    "random:bark-small": (768, 12, 12),
    "random:bark": (1024, 24, 16),
}
_RANDOM_SEED = 0
_VOICE_LANGUAGES = ("en", "de", "es", "fr", "hi", "it", "ja", "ko", "pl", "pt", "ru", "tr", "zh")
_PROMPT_KEYS = ("semantic_prompt", "coarse_prompt", "fine_prompt")
_VOICE_NAME = re.compile(r"(?:v2/)?([a-z]{2})_speaker_\d+")
_SPEAKER_EMBEDDINGS_DIR = "speaker_embeddings"


class ModelLoadError(Exception):
    """The model source could not be loaded; str() says why and what to do."""


@dataclass(frozen=True, eq=False)
class LoadedBark:
    source: str
    model: BarkModel = field(repr=False)
    processor: BarkProcessor = field(repr=False)
    device: torch.device
    sample_rate_hz: int
    voices: tuple[str, ...] = field(repr=False)
    attn_implementation: str
    # Random models read their presets from files in this directory; it lives as long as the model.
    _voice_dir: tempfile.TemporaryDirectory | None = field(default=None, repr=False, compare=False)
    _prompts: dict[str, dict[str, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _prompts_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    # A fast tokenizer sets its padding and truncation state on every call: a count in one thread and a padded
    # batch in another would otherwise mix, and the batch reaches Bark unpadded.
    _tokenizer_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def voice_prompt(self, voice: str) -> dict[str, torch.Tensor]:
        # BarkProcessor treats a name it does not know as a path to np.load: only known names reach it.
        if voice not in self.voices:
            raise KeyError(voice)
        with self._prompts_lock:
            prompt = self._prompts.get(voice)
            if prompt is None:
                try:
                    history = self.processor("", voice_preset=voice)["history_prompt"]
                except Exception as exc:
                    raise ModelLoadError(
                        f"voice {voice!r} of Bark model {self.source!r} could not be loaded: {exc}"
                    ) from exc
                prompt = {key: history[key].to(self.device) for key in _PROMPT_KEYS}
                self._prompts[voice] = prompt
        return dict(prompt)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        with self._tokenizer_lock:
            encoded = self.processor(texts)
        return {key: encoded[key].to(self.device) for key in ("input_ids", "attention_mask")}

    def token_count(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])


class TokenCounter:
    """Counts a text's tokens with a model's tokenizer and nothing else: the server's front end checks requests with it
    while the weights live in the worker processes."""

    def __init__(self, source: str) -> None:
        try:
            if source.startswith("random:"):
                random_config(source)  # refuses an unknown name
                self._tokenizer = _random_tokenizer()
            else:
                path = os.path.expanduser(source)
                self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=os.path.isdir(path))
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"could not load the tokenizer of {source!r}: {type(exc).__name__}: {exc}") from exc
        self._lock = threading.Lock()

    def __call__(self, text: str) -> int:
        with self._lock:
            return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])


def voice_language(voice: str) -> str:
    match = _VOICE_NAME.fullmatch(voice)
    return match.group(1) if match else ""


def load_bark(
    source: str,
    device: torch.device,
    *,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
) -> LoadedBark:
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    if attn_implementation is None:
        # Bark has no SDPA path: flash attention or eager.
        use_flash = device.type == "cuda" and is_flash_attn_2_available()
        attn_implementation = "flash_attention_2" if use_flash else "eager"

    voice_dir = None
    try:
        if source.startswith("random:"):
            model = _random_model(source, attn_implementation)
            voice_dir = tempfile.TemporaryDirectory(prefix="chorus-voices-")
            processor = _random_processor(source, voice_dir.name)
        else:
            model, processor = _pretrained(source, dtype, attn_implementation)
        model = model.to(device=device, dtype=dtype).eval()
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"could not load Bark model {source!r}: {type(exc).__name__}: {exc}") from exc

    sample_rate_hz = getattr(model.generation_config, "sample_rate", None)
    return LoadedBark(
        source=source,
        model=model,
        processor=processor,
        device=device,
        sample_rate_hz=int(sample_rate_hz or model.config.codec_config.sampling_rate),
        voices=tuple(sorted(processor.available_voice_presets)),
        attn_implementation=attn_implementation,
        _voice_dir=voice_dir,
    )


def random_config(name: str) -> BarkConfig:
    if name not in _RANDOM_SHAPES:
        raise ModelLoadError(
            f"could not load Bark model {name!r}: unknown random model; valid names: {', '.join(RANDOM_MODELS)}"
        )
    hidden_size, num_layers, num_heads = _RANDOM_SHAPES[name]
    # Like suno/bark and suno/bark-small, which have no biases in their linear and layer-norm layers.
    shape = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads, "bias": False}
    semantic = BarkSemanticConfig(input_vocab_size=129_600, output_vocab_size=10_048, **shape)
    coarse = BarkCoarseConfig(input_vocab_size=12_096, output_vocab_size=12_096, **shape)
    fine = BarkFineConfig(
        input_vocab_size=1_056, output_vocab_size=1_056, n_codes_total=8, n_codes_given=1, **shape
    )
    if name == "random:tiny":
        codec = EncodecConfig(num_filters=4, hidden_size=16, codebook_dim=16, num_lstm_layers=1)
    else:
        codec = EncodecConfig()  # its defaults are facebook/encodec_24khz, the codec Bark uses
    return BarkConfig(
        semantic_config=semantic.to_dict(),
        coarse_acoustics_config=coarse.to_dict(),
        fine_acoustics_config=fine.to_dict(),
        codec_config=codec.to_dict(),
    )


def save_random_model(name: str, directory: str) -> None:
    model = _random_model(name, "eager")
    with tempfile.TemporaryDirectory(prefix="chorus-voices-") as voice_dir:
        processor = _random_processor(name, voice_dir)
        model.save_pretrained(directory)
        processor.save_pretrained(directory)


def _pretrained(source: str, dtype: torch.dtype, attn_implementation: str) -> tuple[BarkModel, BarkProcessor]:
    path = os.path.expanduser(source)
    local = os.path.isdir(path)
    if not local and source.startswith(("/", ".", "~")):
        raise ModelLoadError(f"could not load Bark model {source!r}: no such directory")
    where = "directory" if local else "Hugging Face hub"
    try:
        model = BarkModel.from_pretrained(
            path, dtype=dtype, attn_implementation=attn_implementation, local_files_only=local
        )
        processor = BarkProcessor.from_pretrained(path, local_files_only=local)
    except Exception as exc:
        hint = (
            "check that it holds what BarkModel/BarkProcessor.save_pretrained wrote"
            if local
            else "check the id and access to huggingface.co, or bake the weights into a directory and pass its path"
        )
        raise ModelLoadError(
            f"could not load Bark model {source!r} from the {where}: {type(exc).__name__}: {exc}; {hint}"
        ) from exc
    return model, processor


def _random_model(name: str, attn_implementation: str) -> BarkModel:
    config = random_config(name)
    # Seeded in float32 whatever the final dtype, so every load and every device starts from the same weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_SEED)
        model = AutoModel.from_config(config, attn_implementation=attn_implementation, dtype=torch.float32)
    # BarkModel.generate does BarkSemanticGenerationConfig(**generation_config.semantic_config): it needs the
    # plain GenerationConfig holding dicts that from_pretrained reads from generation_config.json.
    bark_generation = BarkGenerationConfig(
        semantic_config=BarkSemanticGenerationConfig().to_dict(),
        coarse_acoustics_config=BarkCoarseGenerationConfig().to_dict(),
        fine_acoustics_config=BarkFineGenerationConfig().to_dict(),
    )
    model.generation_config = GenerationConfig.from_dict(bark_generation.to_dict())
    return model


def _random_processor(name: str, voice_dir: str) -> BarkProcessor:
    speaker_embeddings: dict = {"repo_or_path": voice_dir}
    for voice in _voice_names():
        speaker_embeddings[voice] = _write_voice(voice_dir, voice, short=name == "random:tiny")
    return BarkProcessor(tokenizer=_random_tokenizer(), speaker_embeddings=speaker_embeddings)


def _random_tokenizer() -> BertTokenizerFast:
    # Bark adds 10048 to text ids inside a 129600-entry embedding, so ids must stay below 119552 (the real
    # tokenizer, bert-base-multilingual-cased, has 119547). One token per character (and "##" continuation)
    # of Latin, Greek, Cyrillic, Devanagari, kana, CJK and Hangul keeps this at ~87k and tokenizes Bark's languages.
    characters = [
        chr(code)
        for low, high in ((0x21, 0x2FFF), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3))
        for code in range(low, high + 1)
        if chr(code).isprintable() and not chr(code).isspace()
    ]
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, *("##" + c for c in characters)]
    # In transformers 5 the vocabulary is passed as a dict; vocab_file= turns everything into [UNK].
    return BertTokenizerFast(vocab={word: i for i, word in enumerate(words)}, do_lower_case=False)


def _voice_names() -> list[str]:
    return [
        f"{prefix}{language}_speaker_{speaker}"
        for prefix in ("v2/", "")
        for language in _VOICE_LANGUAGES
        for speaker in range(10)
    ]


def _write_voice(voice_dir: str, voice: str, *, short: bool) -> dict[str, str]:
    rng = np.random.default_rng(zlib.crc32(voice.encode()))
    # Every voice's history must have one shape to share a batch. Bark's real presets are longer than what the coarse
    # (209 semantic, 630 coarse tokens) and fine (512 frames) stages keep, and so are those of the real-shape random
    # models; random:tiny's are all one shorter length, which keeps the tests fast.
    semantic_length = 150 if short else int(rng.integers(350, 450))
    # Coarse and fine codes run at 75 Hz, semantic tokens at 49.9 Hz: a prompt covers the same audio in each.
    codec_length = round(semantic_length * 75 / 49.9)
    arrays = {
        "semantic_prompt": rng.integers(0, 10_000, size=semantic_length, dtype=np.int64),
        "coarse_prompt": rng.integers(0, 1_024, size=(2, codec_length), dtype=np.int64),
    }
    # A fine prompt's first two codebooks are the coarse prompt, as in Bark's real presets.
    arrays["fine_prompt"] = np.concatenate(
        [arrays["coarse_prompt"], rng.integers(0, 1_024, size=(6, codec_length), dtype=np.int64)]
    )
    paths = {}
    for key, array in arrays.items():
        relative = os.path.join(_SPEAKER_EMBEDDINGS_DIR, f"{voice}_{key}.npy")
        os.makedirs(os.path.dirname(os.path.join(voice_dir, relative)), exist_ok=True)
        np.save(os.path.join(voice_dir, relative), array, allow_pickle=False)
        paths[key] = relative
    return paths
