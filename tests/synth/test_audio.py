from __future__ import annotations

import io
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from chorus.synth.v1 import synth_pb2
from chorus_synth.audio import (
    SAMPLE_RATES_HZ,
    AudioFormatError,
    Clip,
    Encoding,
    allowed_sample_rates,
    check_format,
    decode,
    encode,
    suffix,
)

BARK_RATE_HZ = 24000
FORMATS = [(encoding, rate) for encoding in Encoding for rate in allowed_sample_rates(encoding)]


def speechlike(sample_count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(sample_count) / BARK_RATE_HZ
    pitch = 2 * np.pi * 160 * t * (1 + 0.2 * np.sin(3 * t))
    voiced = 0.4 * np.sin(pitch) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (voiced + 0.01 * rng.standard_normal(sample_count)).astype(np.float32)


def assert_exact_length(clip: Clip, source_count: int) -> None:
    """What a user checks: the file says, and decodes to, exactly the duration the clip reports."""
    expected = source_count * clip.sample_rate_hz / BARK_RATE_HZ
    assert abs(clip.sample_count - expected) <= 0.5
    samples, rate_hz = decode(clip.data, clip.encoding, clip.sample_rate_hz)
    assert rate_hz == clip.sample_rate_hz
    assert samples.dtype == np.float32 and samples.shape == (clip.sample_count,)
    if clip.encoding is Encoding.PCM_S16LE:
        assert len(clip.data) == 2 * clip.sample_count
        return
    info = soundfile.info(io.BytesIO(clip.data))
    assert (info.frames, info.samplerate, info.channels) == (clip.sample_count, clip.sample_rate_hz, 1)
    assert info.frames / info.samplerate == clip.duration_seconds
    assert len(soundfile.read(io.BytesIO(clip.data))[0]) == clip.sample_count


@pytest.mark.parametrize("source_count", [9600, 1234, 24000])
@pytest.mark.parametrize(("encoding", "rate_hz"), FORMATS, ids=lambda v: getattr(v, "name", str(v)))
def test_every_encoding_and_rate_round_trips_with_exact_length(encoding, rate_hz, source_count):
    clip = encode(speechlike(source_count), BARK_RATE_HZ, encoding, rate_hz)
    assert (clip.encoding, clip.sample_rate_hz) == (encoding, rate_hz)
    assert_exact_length(clip, source_count)


@pytest.mark.parametrize("encoding", list(Encoding), ids=lambda e: e.name)
def test_a_long_clip_at_the_native_rate_keeps_every_sample(encoding):
    clip = encode(speechlike(12 * BARK_RATE_HZ), BARK_RATE_HZ, encoding)
    assert clip.sample_count == 12 * BARK_RATE_HZ and clip.duration_seconds == 12.0
    assert_exact_length(clip, 12 * BARK_RATE_HZ)


@settings(max_examples=150, deadline=None)
@given(source_count=st.integers(min_value=3, max_value=30000), format_=st.sampled_from(FORMATS))
def test_any_length_round_trips_exactly(source_count, format_):
    encoding, rate_hz = format_
    assert_exact_length(encode(speechlike(source_count), BARK_RATE_HZ, encoding, rate_hz), source_count)


def test_lossless_encodings_keep_the_samples():
    samples = speechlike(5000)
    expected = np.round(samples * 32768) / 32768
    for encoding in (Encoding.WAV, Encoding.FLAC, Encoding.PCM_S16LE):
        decoded, _ = decode(encode(samples, BARK_RATE_HZ, encoding).data, encoding, BARK_RATE_HZ)
        np.testing.assert_allclose(decoded, expected, atol=1 / 32768)


def test_wav_is_16_bit_mono_pcm_and_pcm_is_its_data_chunk():
    samples = speechlike(4321)
    wav = encode(samples, BARK_RATE_HZ, Encoding.WAV, 16000)
    pcm = encode(samples, BARK_RATE_HZ, Encoding.PCM_S16LE, 16000)
    assert wav.data[:4] == b"RIFF" and wav.data[8:16] == b"WAVEfmt "
    format_tag, channels, rate_hz, _, _, bits = struct.unpack("<HHIIHH", wav.data[20:36])
    assert (format_tag, channels, rate_hz, bits) == (1, 1, 16000, 16)
    assert wav.data.endswith(pcm.data) and len(pcm.data) == 2 * wav.sample_count
    assert soundfile.info(io.BytesIO(wav.data)).subtype == "PCM_16"
    assert soundfile.info(io.BytesIO(encode(samples, BARK_RATE_HZ, Encoding.FLAC).data)).subtype == "PCM_16"


@pytest.mark.parametrize("encoding", list(Encoding), ids=lambda e: e.name)
def test_silence_nan_and_loud_input_are_encoded_clipped(encoding):
    samples = speechlike(6000) * 40
    samples[:1000] = 0.0
    samples[1000:1100] = np.nan
    samples[1100:1200] = np.inf
    samples[1200:1300] = -np.inf
    before = samples.copy()
    clip = encode(samples, BARK_RATE_HZ, encoding, 48000)
    np.testing.assert_array_equal(samples, before)
    decoded, _ = decode(clip.data, encoding, 48000)
    assert np.isfinite(decoded).all() and len(decoded) == clip.sample_count == 12000
    if encoding in (Encoding.WAV, Encoding.FLAC, Encoding.PCM_S16LE):
        assert np.abs(decoded).max() <= 1.0
        assert np.abs(decoded[:2000]).max() < 1e-3
        assert np.abs(decoded[2300:2500]).max() < 1e-3
    assert len(encode(np.zeros(777, np.float32), BARK_RATE_HZ, encoding).data) > 0


@pytest.mark.parametrize(
    ("encoding", "rate_hz"), [(Encoding.OGG_OPUS, 11025), (Encoding.OGG_OPUS, 44100), (Encoding.WAV, 96000)]
)
def test_an_unsupported_rate_names_the_allowed_ones(encoding, rate_hz):
    allowed = ", ".join(map(str, allowed_sample_rates(encoding)))
    message = f"{rate_hz} Hz is not supported for {encoding.name}; allowed: {allowed}$"
    with pytest.raises(AudioFormatError, match=message):
        encode(speechlike(100), BARK_RATE_HZ, encoding, rate_hz)
    with pytest.raises(ValueError):
        check_format(encoding, rate_hz)


def test_native_rate_of_a_model_opus_cannot_carry_is_refused():
    with pytest.raises(AudioFormatError, match="22050 Hz"):
        encode(speechlike(100), 22050, Encoding.OGG_OPUS)


def test_allowed_rates():
    assert allowed_sample_rates(Encoding.OGG_OPUS) == (8000, 12000, 16000, 24000, 48000)
    assert BARK_RATE_HZ in SAMPLE_RATES_HZ
    for encoding in Encoding:
        assert set(allowed_sample_rates(encoding)) <= set(SAMPLE_RATES_HZ)
        for rate_hz in allowed_sample_rates(encoding):
            check_format(encoding, rate_hz)


@pytest.mark.parametrize("rate_hz", [None, 0])
def test_no_rate_keeps_the_source_rate(rate_hz):
    samples = speechlike(2500)
    clip = encode(samples, BARK_RATE_HZ, Encoding.WAV, rate_hz)
    assert (clip.sample_rate_hz, clip.sample_count) == (BARK_RATE_HZ, 2500)


def test_unusable_input_is_a_value_error():
    with pytest.raises(ValueError, match="no samples"):
        encode(np.zeros(0, np.float32), BARK_RATE_HZ, Encoding.WAV)
    with pytest.raises(ValueError, match="1-D"):
        encode(np.zeros((100, 2), np.float32), BARK_RATE_HZ, Encoding.WAV)
    with pytest.raises(ValueError, match="no sample at 8000 Hz"):
        encode(np.zeros(1, np.float32), BARK_RATE_HZ, Encoding.WAV, 8000)
    with pytest.raises(ValueError, match="needs the sample rate"):
        decode(b"\0\0", Encoding.PCM_S16LE)
    with pytest.raises(ValueError, match="not mono MP3"):
        decode(encode(speechlike(100), BARK_RATE_HZ, Encoding.WAV).data, Encoding.MP3)
    with pytest.raises(ValueError, match="does not decode as FLAC"):
        decode(b"not audio at all" * 10, Encoding.FLAC)


def test_encoding_from_threads_matches_serial():
    jobs = [(speechlike(3000 + 997 * i, i), *format_) for i, format_ in enumerate(FORMATS)]
    serial = [encode(samples, BARK_RATE_HZ, encoding, rate_hz) for samples, encoding, rate_hz in jobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        threaded = list(pool.map(lambda job: encode(job[0], BARK_RATE_HZ, job[1], job[2]), jobs))
    for one, other in zip(serial, threaded, strict=True):
        assert one.sample_count == other.sample_count
        if one.encoding is Encoding.OGG_OPUS:
            # libsndfile picks a random Ogg stream serial number; the audio itself is deterministic.
            np.testing.assert_array_equal(
                decode(one.data, one.encoding)[0], decode(other.data, other.encoding)[0]
            )
        else:
            assert one == other


def test_suffixes_and_proto_values():
    assert [suffix(encoding) for encoding in Encoding] == [".wav", ".mp3", ".ogg", ".flac", ".pcm"]
    for encoding in Encoding:
        assert synth_pb2.AudioEncoding.Value(f"AUDIO_ENCODING_{encoding.name}") == encoding.value
