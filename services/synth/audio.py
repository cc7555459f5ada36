"""Encoding of clips: float samples from the model to bytes in the encoding a caller asked for.

Everything is done in-process by libsndfile (through soundfile) and soxr; no state is shared between
calls, so `encode` may run in several threads at once.

Errors: `AudioFormatError` for an encoding/sample-rate combination that is not supported; a plain
`ValueError` for input that cannot be used (no samples, bytes that do not decode).

Lengths are exact for every encoding. MP3: libsndfile writes a LAME/Xing header with the encoder
delay and padding, and its mpg123 decoder trims both. Ogg/Opus: the final granule position ends the
stream on the last real sample and the decoder honours pre-skip. So `sample_count` is the number of
frames that `soundfile.info` reports and `soundfile.read` returns. An MP3 decoder that ignores the
LAME header plays the delay and padding as tens of milliseconds of extra silence.
"""

from __future__ import annotations

import enum
import io
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr


class Encoding(enum.Enum):
    """The values are those of `chorus.synth.v1.AudioEncoding`."""

    WAV = 1  # RIFF, 16-bit signed PCM, mono
    MP3 = 2
    OGG_OPUS = 3
    FLAC = 4  # 16-bit, mono
    PCM_S16LE = 5  # raw little-endian 16-bit signed PCM, mono, no header


class AudioFormatError(ValueError):
    """An encoding/sample-rate combination that is not supported; the message names what is allowed."""


# Every rate MPEG audio defines. Higher rates add nothing to a 24 kHz model but bytes.
SAMPLE_RATES_HZ: tuple[int, ...] = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

# Opus runs internally at 48 kHz and libsndfile only accepts the rates that divide it evenly.
_OPUS_SAMPLE_RATES_HZ: tuple[int, ...] = (8000, 12000, 16000, 24000, 48000)

# (format, subtype, endian) as soundfile names them.
_SOUNDFILE_FORMATS: dict[Encoding, tuple[str, str, str]] = {
    Encoding.WAV: ("WAV", "PCM_16", "FILE"),
    Encoding.MP3: ("MP3", "MPEG_LAYER_III", "FILE"),
    Encoding.OGG_OPUS: ("OGG", "OPUS", "FILE"),
    Encoding.FLAC: ("FLAC", "PCM_16", "FILE"),
    Encoding.PCM_S16LE: ("RAW", "PCM_16", "LITTLE"),
}

_SUFFIXES: dict[Encoding, str] = {
    Encoding.WAV: ".wav",
    Encoding.MP3: ".mp3",
    Encoding.OGG_OPUS: ".ogg",
    Encoding.FLAC: ".flac",
    Encoding.PCM_S16LE: ".pcm",
}


@dataclass(frozen=True)
class Clip:
    """An encoded clip."""

    data: bytes
    encoding: Encoding
    sample_rate_hz: int
    sample_count: int  # samples of the audio as encoded, after resampling

    @property
    def duration_seconds(self) -> float:
        return self.sample_count / self.sample_rate_hz


def allowed_sample_rates(encoding: Encoding) -> tuple[int, ...]:
    if encoding is Encoding.OGG_OPUS:
        return _OPUS_SAMPLE_RATES_HZ
    return SAMPLE_RATES_HZ


def check_format(encoding: Encoding, sample_rate_hz: int) -> None:
    allowed = allowed_sample_rates(encoding)
    if sample_rate_hz not in allowed:
        raise AudioFormatError(
            f"sample rate {sample_rate_hz} Hz is not supported for {encoding.name}; "
            f"allowed: {', '.join(str(rate) for rate in allowed)}"
        )


def suffix(encoding: Encoding) -> str:
    return _SUFFIXES[encoding]


def encode(
    samples: np.ndarray, source_rate_hz: int, encoding: Encoding, sample_rate_hz: int | None = None
) -> Clip:
    """Encode mono float samples at `source_rate_hz`, resampled to `sample_rate_hz` (None or 0: no change).

    Samples are clipped to [-1, 1] and NaN/inf become 0: a model with random weights produces anything.
    """
    if source_rate_hz <= 0:
        raise ValueError(f"source rate must be positive, got {source_rate_hz} Hz")
    rate_hz = sample_rate_hz or source_rate_hz
    check_format(encoding, rate_hz)
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"samples must be a 1-D (mono) array, got shape {audio.shape}")
    if audio.size == 0:
        raise ValueError("cannot encode a clip with no samples")
    source_count = audio.size
    audio = _sanitized(audio)
    if rate_hz != source_rate_hz:
        # Length is n * rate_hz / source_rate_hz rounded to the nearest integer (a tie can go either way).
        audio = soxr.resample(audio, source_rate_hz, rate_hz)
        if audio.size == 0:
            raise ValueError(f"{source_count} samples at {source_rate_hz} Hz make no sample at {rate_hz} Hz")
        # The filter's ringing takes samples next to full-scale peaks past full scale.
        np.clip(audio, -1.0, 1.0, out=audio)
    format_, subtype, endian = _SOUNDFILE_FORMATS[encoding]
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate_hz, format=format_, subtype=subtype, endian=endian)
    return Clip(data=buffer.getvalue(), encoding=encoding, sample_rate_hz=rate_hz, sample_count=audio.size)


def decode(data: bytes, encoding: Encoding, sample_rate_hz: int | None = None) -> tuple[np.ndarray, int]:
    """Float32 samples and their rate. `sample_rate_hz` is used for PCM_S16LE only: it has no header."""
    format_, subtype, endian = _SOUNDFILE_FORMATS[encoding]
    if encoding is Encoding.PCM_S16LE:
        if not sample_rate_hz:
            raise ValueError("decoding PCM_S16LE needs the sample rate: the data has no header")
        if len(data) % 2:
            raise ValueError(f"PCM_S16LE data must be whole 16-bit samples, got {len(data)} bytes")
        raw = dict(samplerate=sample_rate_hz, channels=1, format=format_, subtype=subtype, endian=endian)
    else:
        raw = {}
    try:
        with soundfile.SoundFile(io.BytesIO(data), **raw) as file:
            if (file.format, file.subtype, file.channels) != (format_, subtype, 1):
                raise ValueError(
                    f"data is {file.format}/{file.subtype} with {file.channels} channel(s), "
                    f"not mono {encoding.name}"
                )
            return file.read(dtype="float32"), file.samplerate
    except soundfile.LibsndfileError as exc:
        raise ValueError(f"data does not decode as {encoding.name}: {exc.error_string}") from exc


def _sanitized(audio: np.ndarray) -> np.ndarray:
    audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(audio, -1.0, 1.0, out=audio)
    return audio
