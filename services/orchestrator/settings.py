"""The orchestrator's settings: flags, with environment variables as their defaults, read here only.

Each flag --x-y reads CHORUS_X_Y; the reference's names work too: QUEUE_URL, and botocore's AWS_REGION /
AWS_DEFAULT_REGION and AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Settings:
    command: str = "run"
    queue_url: str = ""
    dlq_url: str = ""
    bucket: str = ""
    prefix: str = "clips/"
    table: str = ""
    # Synth endpoints: host:port entries, or a name that resolves to every endpoint (a headless Service).
    synth: tuple[str, ...] = ()
    region: str = "us-east-1"
    # One URL for SQS, S3 and DynamoDB stand-ins (moto, LocalStack); empty for AWS itself.
    endpoint_url: str = ""
    # Set for S3-compatible stores (R2, MinIO): path-style addressing and checksums only when required.
    s3_compatible: bool = False
    metrics_port: int = 9200
    metrics_host: str = "::"
    # Jobs held at once; 0 means twice the fleet's capacity.
    max_held: int = 0
    visibility_timeout_s: int = 120
    call_timeout_s: float = 120.0
    max_attempts: int = 3
    # First backoff of a job released after a transient failure; doubles with each receive, up to the cap.
    release_backoff_s: int = 10
    max_release_backoff_s: int = 600
    drain_grace_s: float = 60.0
    # Hosts a job's presigned upload_url may point at; anything else is refused.
    upload_hosts: tuple[str, ...] = ()
    encoding: str = "mp3"
    max_text_chars: int = 1000
    max_receive_count: int = 5
    log_level: str = "INFO"

    def problems(self) -> list[str]:
        problems = []
        if not self.queue_url:
            problems.append("--queue-url (or QUEUE_URL) is required")
        if self.command == "run":
            if not self.synth:
                problems.append("--synth is required: host:port[,host:port...] or a name resolving to every endpoint")
            if not self.dlq_url:
                problems.append("--dlq-url is required: poison jobs go there with their reason")
        if not self.table:
            problems.append("--table is required: every clip is recorded there")
        for name in ("visibility_timeout_s", "max_attempts", "max_text_chars", "max_receive_count"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 <= self.visibility_timeout_s <= 43_200:
            problems.append("--visibility-timeout-s must be at most 43200 (SQS's limit)")
        return problems


_ALIASES = {"queue_url": ("QUEUE_URL",), "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
            "endpoint_url": ("AWS_ENDPOINT_URL",)}

_HELP = {
    "queue_url": "SQS queue of jobs",
    "dlq_url": "dead-letter queue for jobs that can never succeed (init: default <queue>-dlq)",
    "bucket": "S3 bucket for clips (jobs with an upload_url go there instead)",
    "prefix": "key prefix of clips: {prefix}{id}/{section_index:05d}.{ext}",
    "table": "DynamoDB table of results, keyed by document_id and section_index",
    "synth": "synth endpoints, comma-separated host:port, or one name resolving to several addresses",
    "region": "AWS region",
    "endpoint_url": "one URL for SQS, S3 and DynamoDB stand-ins (moto, LocalStack)",
    "s3_compatible": "the bucket is on an S3-compatible store (R2, MinIO)",
    "metrics_port": "Prometheus /metrics port (0 picks a free one)",
    "metrics_host": "address of the metrics endpoint",
    "max_held": "jobs held at once (0: twice the fleet's capacity)",
    "visibility_timeout_s": "SQS visibility timeout of held jobs; a heartbeat extends it",
    "call_timeout_s": "deadline of one synth call",
    "max_attempts": "synth attempts per job (on different endpoints) before it is released for later",
    "release_backoff_s": "first visibility delay of a job released after a transient failure",
    "max_release_backoff_s": "longest such delay",
    "drain_grace_s": "seconds in-flight jobs get to finish after SIGTERM",
    "upload_hosts": "comma-separated hosts a job's upload_url may point at",
    "encoding": "clip encoding when a job names none: mp3, wav, ogg_opus, flac",
    "max_text_chars": "longest script_section accepted",
    "max_receive_count": "init: receives before SQS moves a job to the dead-letter queue",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
}


def _env(env: Mapping[str, str], field: dataclasses.Field) -> str | None:
    for name in (f"CHORUS_{field.name.upper()}", *_ALIASES.get(field.name, ())):
        if name in env:
            return env[name]
    return None


def _convert(field: dataclasses.Field, raw: str) -> object:
    if field.type == "bool":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if field.type == "tuple[str, ...]":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return {"int": int, "float": float}.get(field.type, str)(raw)


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="chorus-orchestrator",
        description="Pull jobs from SQS, synthesize them on the synth fleet, store clips in S3, record them in "
        "DynamoDB. Every flag --x-y can also be set as CHORUS_X_Y.",
    )
    parser.add_argument("command", choices=("run", "init"), nargs="?", default="run",
                        help="run: the daemon (default); init: create the queue, dead-letter queue, bucket and table")
    values = {}
    for field in dataclasses.fields(Settings):
        if field.name == "command":
            continue
        raw = _env(env, field)
        try:
            values[field.name] = field.default if raw is None else _convert(field, raw)
        except ValueError:
            parser.error(f"environment: {raw!r} is not a valid value for --{field.name.replace('_', '-')}")
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=_HELP[field.name])
        else:
            parser.add_argument(flag, type=lambda raw, f=field: _convert(f, raw),
                                help=f"{_HELP[field.name]} (default: {values[field.name]!r})")
    args = vars(parser.parse_args(argv))
    for name, value in args.items():
        if value is not None:
            values[name] = value
    settings = Settings(**values)
    problems = settings.problems()
    if problems:
        parser.error("; ".join(problems))
    return settings
