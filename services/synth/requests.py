"""Checks a request and turns it into what the engine runs; every refusal names the problem and what is allowed."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection

import grpc

from chorus.synth.v1 import synth_pb2 as pb
from chorus_synth.audio import AudioFormatError, Encoding, check_format
from chorus_synth.engine import (
    DEFAULT_COARSE_TEMPERATURE,
    DEFAULT_FINE_TEMPERATURE,
    DEFAULT_SEMANTIC_TEMPERATURE,
    ClipRequest,
    GenerationParams,
)
from chorus_synth.models import voice_language
from chorus_synth.sections import split_sections

# Bark reads at most 256 text tokens per clip and silently drops the rest (max_input_semantic_length).
MAX_TEXT_TOKENS = 256
MAX_TEMPERATURE = 2.0
MAX_REQUEST_ID_CHARS = 200
MAX_SECTION_WORDS = 100

ENCODINGS = {
    pb.AUDIO_ENCODING_UNSPECIFIED: Encoding.WAV,
    pb.AUDIO_ENCODING_WAV: Encoding.WAV,
    pb.AUDIO_ENCODING_MP3: Encoding.MP3,
    pb.AUDIO_ENCODING_OGG_OPUS: Encoding.OGG_OPUS,
    pb.AUDIO_ENCODING_FLAC: Encoding.FLAC,
    pb.AUDIO_ENCODING_PCM_S16LE: Encoding.PCM_S16LE,
}
PROTO_ENCODINGS = {encoding: value for value, encoding in ENCODINGS.items() if value != pb.AUDIO_ENCODING_UNSPECIFIED}


class RequestError(Exception):
    """A request the server refuses as it is."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class OutputFormat:
    encoding: Encoding
    sample_rate_hz: int


@dataclasses.dataclass(frozen=True)
class StreamJob:
    sections: list[str]
    voice: str
    params: GenerationParams
    output: OutputFormat


@dataclasses.dataclass(frozen=True)
class Limits:
    max_text_chars: int
    max_stream_text_chars: int
    max_clip_seconds: float
    section_words: int
    default_voice: str


class RequestValidator:
    def __init__(
        self, limits: Limits, voices: Collection[str], native_rate_hz: int, token_count: Callable[[str], int]
    ) -> None:
        self._limits = limits
        self._voices = frozenset(voices)
        self._native_rate_hz = native_rate_hz
        self._token_count = token_count

    def clip(self, request: pb.SynthesizeRequest) -> tuple[ClipRequest, OutputFormat]:
        self._request_id(request.request_id)
        text = self._text(request.text, self._limits.max_text_chars, "Synthesize")
        self._tokens(text, "text")
        voice = self._voice(request.voice)
        clip = ClipRequest(text=text, voice=voice, params=self._params(request.settings))
        return clip, self._output(request.encoding, request.sample_rate_hz)

    def stream(self, request: pb.StreamSynthesizeRequest) -> StreamJob:
        self._request_id(request.request_id)
        text = self._text(request.text, self._limits.max_stream_text_chars, "StreamSynthesize")
        voice = self._voice(request.voice)
        params = self._params(request.settings)
        output = self._output(request.encoding, request.sample_rate_hz)
        max_words = request.max_section_words or self._limits.section_words
        if max_words > MAX_SECTION_WORDS:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"max_section_words is {max_words}; allowed: 1 to {MAX_SECTION_WORDS} (0 for the default, "
                f"{self._limits.section_words})",
            )
        sections = split_sections(text, max_words, language=voice_language(voice) or "en")
        for index, section in enumerate(sections):
            self._tokens(section, f"section {index}")
        return StreamJob(sections=sections, voice=voice, params=params, output=output)

    def _request_id(self, request_id: str) -> None:
        if len(request_id) > MAX_REQUEST_ID_CHARS:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request_id is {len(request_id)} characters; at most {MAX_REQUEST_ID_CHARS} are allowed",
            )

    def _text(self, text: str, limit: int, method: str) -> str:
        if not text.strip():
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT, f"text is empty or blank; {method} needs 1 to {limit} characters"
            )
        if len(text) > limit:
            hint = "; split it, or use StreamSynthesize for long texts" if method == "Synthesize" else ""
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"text is {len(text)} characters; {method} accepts at most {limit}{hint}",
            )
        return text.strip()

    def _tokens(self, text: str, what: str) -> None:
        tokens = self._token_count(text)
        if tokens > MAX_TEXT_TOKENS:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{what} is {tokens} tokens; Bark reads at most {MAX_TEXT_TOKENS} per clip (about 40 words); "
                "use StreamSynthesize, which splits a long text into sections",
            )

    def _voice(self, voice: str) -> str:
        voice = voice or self._limits.default_voice
        if voice not in self._voices:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"unknown voice {voice!r}; valid voices: {', '.join(sorted(self._voices))}",
            )
        return voice

    def _output(self, encoding_value: int, sample_rate_hz: int) -> OutputFormat:
        encoding = ENCODINGS.get(encoding_value)
        if encoding is None:
            names = ", ".join(pb.AudioEncoding.Name(v) for v in PROTO_ENCODINGS.values())
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT, f"unsupported encoding {encoding_value}; supported: {names}"
            )
        rate = sample_rate_hz or self._native_rate_hz
        try:
            check_format(encoding, rate)
        except AudioFormatError as exc:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        return OutputFormat(encoding, rate)

    def _params(self, settings: pb.GenerationSettings) -> GenerationParams:
        temperatures = {}
        defaults = {
            "semantic_temperature": DEFAULT_SEMANTIC_TEMPERATURE,
            "coarse_temperature": DEFAULT_COARSE_TEMPERATURE,
            "fine_temperature": DEFAULT_FINE_TEMPERATURE,
        }
        for name, default in defaults.items():
            value = getattr(settings, name) if settings.HasField(name) else default
            if not (math.isfinite(value) and 0 < value <= MAX_TEMPERATURE):
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"settings.{name} is {value}; allowed: greater than 0 and at most {MAX_TEMPERATURE}",
                )
            temperatures[name] = value
        cap = self._limits.max_clip_seconds
        max_seconds = settings.max_seconds if settings.HasField("max_seconds") else cap
        if not (math.isfinite(max_seconds) and 0 < max_seconds <= cap):
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"settings.max_seconds is {max_seconds}; allowed: greater than 0 and at most {cap}",
            )
        seed = settings.seed if settings.HasField("seed") else None
        return GenerationParams(max_seconds=max_seconds, seed=seed, **temperatures)
