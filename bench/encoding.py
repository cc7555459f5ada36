"""Encoding one clip: in-process libsndfile (`chorus_synth.audio.encode`) against the reference's path, pydub's
`AudioSegment.export`, which writes the samples to an ffmpeg child process (WAV excepted: pydub writes that itself).

Both start from the same float32 samples (a 12 s clip at 24 kHz, Bark's rate) and end with the encoded bytes; the
two are timed in turns, run after run, and each reported as its median.
"""

from __future__ import annotations

import io
import shutil
import statistics
import time
import warnings

import numpy as np

from chorus_synth import audio

RATE_HZ = 24_000
# (name, chorus encoding, pydub export arguments)
FORMATS = (
    ("mp3", audio.Encoding.MP3, {"format": "mp3"}),
    ("ogg_opus", audio.Encoding.OGG_OPUS, {"format": "ogg", "codec": "libopus"}),
    ("flac", audio.Encoding.FLAC, {"format": "flac"}),
    ("wav", audio.Encoding.WAV, {"format": "wav"}),
)


def pydub_with_ffmpeg():
    """pydub, with ffmpeg from PATH or else the static binary of the imageio-ffmpeg package."""
    try:
        with warnings.catch_warnings():  # pydub warns at import when no ffmpeg is on PATH; it is given one below
            warnings.simplefilter("ignore", RuntimeWarning)
            import pydub
    except ImportError:
        raise SystemExit("the encoding benchmark needs pydub: `.venv/bin/pip install pydub` "
                         "(make bench installs it)") from None
    found = shutil.which("ffmpeg")
    if not found:
        try:
            import imageio_ffmpeg
        except ImportError:
            raise SystemExit("the encoding benchmark needs ffmpeg for pydub: put ffmpeg on PATH or "
                             "`.venv/bin/pip install imageio-ffmpeg` (make bench installs it)") from None
        found = imageio_ffmpeg.get_ffmpeg_exe()
    pydub.AudioSegment.converter = found
    return pydub


def speech_like_clip(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced tone with a wandering pitch, syllable-rate loudness and a little noise: roughly what an encoder
    sees in speech, where pure noise would be its worst case and silence its best."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    pitch_hz = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch_hz) / RATE_HZ
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
    return (0.15 * envelope * voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def encode_pydub(pydub, samples: np.ndarray, export: dict) -> bytes:
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes()
    segment = pydub.AudioSegment(pcm, frame_rate=RATE_HZ, sample_width=2, channels=1)
    buffer = io.BytesIO()
    segment.export(buffer, **export)
    return buffer.getvalue()


def run(*, clip_seconds: float, runs: int) -> dict:
    pydub = pydub_with_ffmpeg()
    samples = speech_like_clip(clip_seconds)
    rows = []
    for name, encoding, export in FORMATS:
        encode = {"in_process": lambda: audio.encode(samples, RATE_HZ, encoding).data,
                  "pydub_ffmpeg": lambda: encode_pydub(pydub, samples, export)}
        times: dict[str, list[float]] = {path: [] for path in encode}
        sizes = {path: len(f()) for path, f in encode.items()}  # also a warm-up of each
        for _ in range(runs):
            for path, f in encode.items():
                started = time.perf_counter()
                f()
                times[path].append(time.perf_counter() - started)
        median = {path: statistics.median(t) for path, t in times.items()}
        rows.append({
            "format": name, "clip_seconds": clip_seconds, "runs": runs,
            "in_process_ms": 1000 * median["in_process"], "pydub_ffmpeg_ms": 1000 * median["pydub_ffmpeg"],
            "speedup": median["pydub_ffmpeg"] / median["in_process"],
            "in_process_bytes": sizes["in_process"], "pydub_ffmpeg_bytes": sizes["pydub_ffmpeg"],
        })
        print(f"encoding {name}: in-process {rows[-1]['in_process_ms']:.1f} ms, "
              f"pydub/ffmpeg {rows[-1]['pydub_ffmpeg_ms']:.1f} ms ({rows[-1]['speedup']:.1f}x)", flush=True)
    return {"benchmark": "encoding", "sample_rate_hz": RATE_HZ, "ffmpeg": pydub.AudioSegment.converter,
            "settings": {"clip_seconds": clip_seconds, "runs": runs}, "rows": rows}
