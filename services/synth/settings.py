"""The synth server's settings: flags, with `CHORUS_*` environment variables as their defaults, read here only."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence

DEFAULT_MODEL = "suno/bark-small"
DEFAULT_VOICE = "v2/en_speaker_6"


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str = DEFAULT_MODEL
    devices: str = "auto"
    host: str = "[::]"
    port: int = 50051
    metrics_port: int = 9100
    metrics_host: str = "::"
    # How many clips one replica generates together, and how long a batch that has company waits for more.
    max_batch: int = 8
    max_wait_ms: float = 20.0
    # Requests that may wait beyond those running before new ones get RESOURCE_EXHAUSTED.
    max_queued: int = 64
    max_text_chars: int = 1000
    max_stream_text_chars: int = 100_000
    # Random weights never choose to stop talking: every clip is capped (Bark's own limit is ~15.4 s).
    max_clip_seconds: float = 14.0
    section_words: int = 30
    default_voice: str = DEFAULT_VOICE
    # Seconds in-flight requests get to finish after SIGTERM.
    drain_grace_s: float = 30.0
    warmup: bool = True
    # "process": each replica in a worker process of its own; "thread": all in this process.
    workers: str = "process"
    log_level: str = "INFO"

    def problems(self) -> list[str]:
        problems = []
        for name in ("max_batch", "max_text_chars", "max_stream_text_chars", "section_words"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        if self.workers not in ("process", "thread"):
            problems.append(f"--workers is {self.workers!r}; use process or thread")
        if self.max_wait_ms < 0:
            problems.append("--max-wait-ms must be 0 or more")
        if self.max_queued < 0:
            problems.append("--max-queued must be 0 or more")
        if not 0 < self.max_clip_seconds <= 15.0:
            problems.append("--max-clip-seconds must be in (0, 15]: Bark generates at most ~15.4 s per clip")
        for name in ("port", "metrics_port"):
            if not 0 <= getattr(self, name) <= 65535:
                problems.append(f"--{name.replace('_', '-')} must be a port number (0 picks a free one)")
        return problems


def _env_default(env: Mapping[str, str], field: dataclasses.Field) -> object:
    raw = env.get(f"CHORUS_{field.name.upper()}")
    if raw is None:
        return field.default
    if field.type == "bool":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    try:
        return {"int": int, "float": float}.get(field.type, str)(raw)
    except ValueError as exc:
        raise ValueError(f"CHORUS_{field.name.upper()}={raw!r} is not a valid {field.type}") from exc


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="chorus-synth",
        description="Serve Bark text-to-speech over gRPC. Every flag can also be set as CHORUS_<FLAG> "
        "(e.g. CHORUS_MODEL, CHORUS_METRICS_PORT).",
    )
    helps = {
        "model": "hub id (suno/bark, suno/bark-small), a local directory, or random:tiny|random:bark-small|"
        "random:bark (random weights, no download)",
        "devices": "auto (every GPU, else the CPU), cpu, or a list such as cuda:0,cuda:1; one replica each",
        "host": "address to listen on; [::] takes IPv6 and IPv4",
        "port": "gRPC port (0 picks a free one)",
        "metrics_port": "Prometheus /metrics port (0 picks a free one)",
        "metrics_host": "address of the metrics endpoint",
        "max_batch": "most clips one replica generates together (1: no batching)",
        "max_wait_ms": "how long a batch that already has company waits for more; a lone request never waits",
        "max_queued": "requests that may wait beyond those running before RESOURCE_EXHAUSTED",
        "max_text_chars": "longest text Synthesize accepts",
        "max_stream_text_chars": "longest text StreamSynthesize accepts",
        "max_clip_seconds": "longest clip generated, in seconds",
        "section_words": "default most words per section in StreamSynthesize",
        "default_voice": "voice used when a request names none",
        "drain_grace_s": "seconds in-flight requests get to finish after SIGTERM",
        "warmup": "run a warm-up generation on each replica before serving",
        "workers": "process: each replica in its own worker process (a dead one is restarted); thread: all in the "
        "server's process",
        "log_level": "DEBUG, INFO, WARNING or ERROR",
    }
    for field in dataclasses.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        try:
            default = _env_default(env, field)
        except ValueError as exc:
            parser.error(str(exc))
        if field.type == "bool":
            parser.add_argument(flag, default=default, action=argparse.BooleanOptionalAction, help=helps[field.name])
        else:
            kind = {"int": int, "float": float}.get(field.type, str)
            parser.add_argument(flag, default=default, type=kind, help=f"{helps[field.name]} (default: %(default)s)")
    args = parser.parse_args(argv)
    settings = Settings(**vars(args))
    problems = settings.problems()
    if problems:
        parser.error("; ".join(problems))
    return settings

