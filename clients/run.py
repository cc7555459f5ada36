"""`chorus run`: the whole job on one machine, with the fleet's code paths.

moto's server on a loopback port is the queue, bucket and table; a synth server runs as its own process on the local
devices; the orchestrator's daemon runs here. Finished clips and their records are mirrored to DIR/.chorus/ as they
come, because moto keeps everything in memory: a run interrupted with Ctrl-C and started again puts them back, and
the orchestrator acknowledges those sections without redoing them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moto.server import ThreadedMotoServer
from tqdm import tqdm

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc
from chorus_clients.aws import aws_client
from chorus_clients.corpus import read_corpus
from chorus_clients.enqueue import document_jobs, enqueue_documents
from chorus_clients.report import build_report, format_report, load_prices, plot_report
from chorus_clients.stitch import format_summary, stitch_documents
from chorus_orchestrator import main as orchestrator
from chorus_orchestrator.settings import Settings as OrchestratorSettings
from chorus_synth.sections import DEFAULT_MAX_WORDS

logger = logging.getLogger(__name__)

ACCOUNT = "123456789012"
REGION = "us-east-1"
_POLL_S = 0.5


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="the whole job on this machine: corpus in, narrated documents out",
        description="Start a local queue, bucket and table (moto), a synth server on the local devices and the "
        "orchestrator; enqueue INPUT; wait until every section is done; stitch DIR/<document>.mp3 and write a "
        "report. Ctrl-C stops cleanly; run again to finish the rest without redoing done work.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help=".txt files or folders of them, .jsonl, or the Food.com RAW_recipes.csv")
    parser.add_argument("--out", type=Path, required=True, help="folder for the narrated documents and the report")
    parser.add_argument("--model", default="suno/bark-small",
                        help="as chorus-synth --model: a hub id, a local directory, or random:tiny (no network)")
    parser.add_argument("--devices", default="auto", help="as chorus-synth --devices (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, help="as chorus-synth --max-batch: most clips generated together")
    parser.add_argument("--max-clip-seconds", type=float, default=14.0,
                        help="cap of every clip; random weights never stop talking (default: %(default)s)")
    parser.add_argument("--max-words", type=int, default=DEFAULT_MAX_WORDS,
                        help="most words per section (default: %(default)s)")
    parser.add_argument("--voice", help="one voice for every document (default: a seeded random English voice each)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the voice choice (default: %(default)s)")
    parser.add_argument("--limit", type=int, help="at most this many documents")
    parser.add_argument("--min-rating", type=float, default=4.5, help="recipes: lowest average rating kept")
    parser.add_argument("--pause-ms", type=int, default=300, help="silence between sections (default: %(default)s)")
    parser.add_argument("--prices", type=Path, help="GPU prices (JSON or CSV) for the report's words per dollar")
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    # Ctrl-C (or SIGTERM) stops the run cleanly: the orchestrator drains and releases, finished work is kept on
    # disk. The handler stays for the whole run, so a second Ctrl-C cannot break the clean-up half way.
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        if interrupted.is_set():
            print("\nstill stopping cleanly...", file=sys.stderr)
        interrupted.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    try:
        return await _run(args, interrupted)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _run(args: argparse.Namespace, interrupted: asyncio.Event) -> int:
    try:
        documents = list(read_corpus([str(p) for p in args.inputs], min_rating=args.min_rating))
    except ValueError as exc:
        print(f"chorus run: {exc}", file=sys.stderr)
        return 2
    documents = documents[: args.limit] if args.limit is not None else documents
    try:
        prices = load_prices(args.prices) if args.prices else None
    except (OSError, ValueError) as exc:
        print(f"chorus run: {exc}", file=sys.stderr)
        return 2
    out_dir: Path = args.out
    cache = _Cache(out_dir / ".chorus")
    todo = [d for d in documents if not (out_dir / f"{d.id}.mp3").exists()]
    print(f"{len(documents)} document(s), {len(documents) - len(todo)} already narrated in {out_dir}", file=sys.stderr)

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "chorus-local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "chorus-local")
    # werkzeug sets its own logger to INFO when nobody has: moto's server would log every request.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    synth = None
    try:
        host, port = moto.get_host_and_port()
        args.region, args.endpoint_url = REGION, f"http://{host}:{port}"
        names = f"chorus-{uuid.uuid4().hex[:8]}"
        settings = OrchestratorSettings(
            queue_url=f"{args.endpoint_url}/{ACCOUNT}/{names}", dlq_url=f"{args.endpoint_url}/{ACCOUNT}/{names}-dlq",
            bucket=names, prefix="clips/", table=names, region=REGION, endpoint_url=args.endpoint_url,
            metrics_port=0, visibility_timeout_s=60, call_timeout_s=900, drain_grace_s=5, release_backoff_s=1,
            max_release_backoff_s=5)
        await orchestrator.init(dataclasses.replace(settings, command="init"))
        restored = await cache.restore(args, settings)
        if restored:
            print(f"restored {restored} finished section(s) from {cache.root}", file=sys.stderr)
        sections = [(job["id"], str(job["section_index"])) for document in todo
                    for job in document_jobs(document, max_words=args.max_words, voice=args.voice, seed=args.seed)]
        if any(section not in cache.known for section in sections):
            try:
                synth = await _SynthProcess.start(args)
            except SynthFailed as exc:
                print(f"chorus run: the synth server could not start {args.model}: {exc}", file=sys.stderr)
                return 1
            settings = dataclasses.replace(settings, synth=(synth.address,))
            if not await _narrate(args, settings, todo, set(sections), cache, interrupted):
                print("\ninterrupted: run the same command again to finish the rest", file=sys.stderr)
                return 130
        async with aws_client(args, "s3") as s3, aws_client(args, "dynamodb") as dynamodb:
            stitched = await stitch_documents(
                s3, dynamodb, bucket=settings.bucket, table=settings.table, prefix=settings.prefix,
                document_ids=[d.id for d in todo], out_dir=out_dir, fmt="mp3", pause_ms=args.pause_ms,
                concurrency=4)
            report = await build_report(dynamodb, settings.table)
        text = format_report(report, prices)
        (out_dir / "report.txt").write_text(text + "\n")
        plot_report(report, out_dir / "report.png")
        print(text)
        print(format_summary(stitched), file=sys.stderr)
        print(f"narrated documents and report.png in {out_dir}", file=sys.stderr)
        return 0 if stitched.ok else 1
    finally:
        if synth is not None:
            await synth.stop()
        moto.stop()


async def _narrate(args, settings: OrchestratorSettings, documents, sections: set[tuple[str, str]], cache: _Cache,
                   interrupted: asyncio.Event) -> bool:
    """Enqueues the documents and runs the orchestrator until every section is done or dead-lettered; False when
    interrupted."""
    async with aws_client(args, "sqs") as sqs, aws_client(args, "s3") as s3, \
            aws_client(args, "dynamodb") as dynamodb:
        await enqueue_documents(sqs, settings.queue_url, documents, max_words=args.max_words,
                                        voice=args.voice, seed=args.seed, encoding="mp3", progress=False)
        total = len(sections)
        stop = asyncio.Event()
        daemon = asyncio.create_task(orchestrator.run(settings, stop=stop))
        failed = 0
        try:
            with tqdm(total=total, unit="section", desc="narrating", file=sys.stderr) as bar:
                while True:
                    await cache.sync(s3, dynamodb, settings)
                    done = len(sections & cache.known)
                    failed = await _dead_lettered(sqs, settings.dlq_url)
                    bar.n = min(done, total)
                    bar.set_postfix(failed=failed)
                    bar.refresh()
                    # Done when every job is consumed: restored sections are acknowledged without work, the rest
                    # recorded or dead-lettered.
                    if done + failed >= total and await _queue_empty(sqs, settings.queue_url):
                        break
                    if daemon.done():
                        daemon.result()  # raises what stopped it
                        raise RuntimeError("the orchestrator stopped early")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(interrupted.wait(), _POLL_S)
                    if interrupted.is_set():
                        return False
        finally:
            stop.set()
            await asyncio.wait_for(daemon, 60)
            await cache.sync(s3, dynamodb, settings)
    if failed:
        print(f"{failed} section(s) could not be narrated: see the dead-letter queue's reasons above", file=sys.stderr)
    return True


async def _queue_empty(sqs, queue_url: str) -> bool:
    reply = await sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return not any(int(value) for value in reply["Attributes"].values())


async def _dead_lettered(sqs, dlq_url: str) -> int:
    reply = await sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(reply["Attributes"]["ApproximateNumberOfMessages"])


class _Cache:
    """Finished clips and their records on disk: DIR/.chorus/records.jsonl (DynamoDB items as stored) and the clips
    under DIR/.chorus/clips/ by their keys."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._records = root / "records.jsonl"
        # (document id, section index) of the sections on disk.
        self.known: set[tuple[str, str]] = set()

    def _items(self) -> list[dict]:
        if not self._records.exists():
            return []
        return [json.loads(line) for line in self._records.read_text().splitlines() if line.strip()]

    async def restore(self, args, settings: OrchestratorSettings) -> int:
        items = self._items()
        async with aws_client(args, "s3") as s3, aws_client(args, "dynamodb") as dynamodb:
            for item in items:
                key = item["location"]["S"].removeprefix("s3://").split("/", 1)[1]
                clip = self.root / "clips" / key
                if not clip.exists():
                    continue
                await s3.put_object(Bucket=settings.bucket, Key=key, Body=clip.read_bytes())
                item["location"] = {"S": f"s3://{settings.bucket}/{key}"}
                await dynamodb.put_item(TableName=settings.table, Item=item)
                self.known.add((item["document_id"]["S"], item["section_index"]["N"]))
        return len(self.known)

    async def sync(self, s3, dynamodb, settings: OrchestratorSettings) -> None:
        """Copies records (and their clips) not yet on disk."""
        self.root.mkdir(parents=True, exist_ok=True)
        pages = dynamodb.get_paginator("scan").paginate(TableName=settings.table, ConsistentRead=True)
        async for page in pages:
            for item in page["Items"]:
                ident = (item["document_id"]["S"], item["section_index"]["N"])
                if ident in self.known:
                    continue
                key = item["location"]["S"].removeprefix("s3://").split("/", 1)[1]
                body = await (await s3.get_object(Bucket=settings.bucket, Key=key))["Body"].read()
                clip = self.root / "clips" / key
                clip.parent.mkdir(parents=True, exist_ok=True)
                clip.write_bytes(body)
                with self._records.open("a") as records:
                    records.write(json.dumps(item) + "\n")
                self.known.add(ident)


class _SynthProcess:
    """`chorus-synth` as its own process on a loopback port, as in a fleet."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: asyncio.Task[None]) -> None:
        self._process = process
        self._log = log
        self.address = f"127.0.0.1:{port}"

    @classmethod
    async def start(cls, args: argparse.Namespace) -> _SynthProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chorus_synth.server", "--model", args.model, "--devices", args.devices,
            "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--metrics-host", "127.0.0.1",
            "--max-clip-seconds", str(args.max_clip_seconds), "--drain-grace-s", "5",
            *(["--max-batch", str(args.max_batch)] if args.max_batch else []),
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
        port = None
        while port is None:
            line = (await process.stderr.readline()).decode()
            if not line:
                raise RuntimeError(f"the synth server exited with status {await process.wait()}")
            if match := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
        synth = cls(process, port, asyncio.create_task(cls._forward(process.stderr)))
        await synth._wait_ready()
        return synth

    @staticmethod
    async def _forward(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            logger.info("synth: %s", line.decode().rstrip())

    async def _wait_ready(self) -> None:
        print(f"starting the synth server ({self.address})...", file=sys.stderr)
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = synth_pb2_grpc.SynthStub(channel)
            while True:
                info = await stub.GetServerInfo(pb.GetServerInfoRequest())
                if info.state == pb.SERVER_STATE_FAILED:
                    await self.stop()
                    raise SynthFailed(info.state_message)
                reply = await health.Check(health_pb2.HealthCheckRequest())
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    devices = ", ".join(f"{d.name} ({d.gpu_model})" for d in info.devices)
                    print(f"synth server ready: {info.model} on {devices}", file=sys.stderr)
                    return
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._process.wait(), 30)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        self._log.cancel()


class SynthFailed(Exception):
    """The synth server could not load its model; the message says why."""
