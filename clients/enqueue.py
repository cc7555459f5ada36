"""`chorus enqueue`: turn documents into jobs, one SQS message per section, in the orchestrator's JSON form.

    {"id": "137739", "voice": "v2/en_speaker_3", "script_section": "...", "section_index": 0,
     "section_count": 4, "encoding": "mp3", "document": {"title": "...", ...}}

A document reads in one voice: the one given, or one of Bark's English presets drawn from the seed and the
document id, so the same corpus and seed give the same voices whatever the order or the --limit.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import os
import random
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from tqdm import tqdm

from chorus_clients.aws import add_aws_arguments, aws_client
from chorus_clients.cli import at_least
from chorus_clients.corpus import DEFAULT_MIN_RATING, DOCUMENT_ID, CorpusError, Document, read_corpus
from chorus_synth.sections import DEFAULT_MAX_WORDS, split_sections

__all__ = ["ENCODINGS", "ENGLISH_VOICES", "EnqueueError", "EnqueueStats", "MAX_SECTION_CHARS", "choose_voice",
           "document_jobs", "enqueue_documents", "job_body", "register"]

logger = logging.getLogger(__name__)

ENGLISH_VOICES = tuple(f"v2/en_speaker_{i}" for i in range(10))
ENCODINGS = ("mp3", "wav", "ogg_opus", "flac")  # the orchestrator's chorus_orchestrator.jobs.ENCODINGS
MAX_SECTION_CHARS = 1000  # the orchestrator's default max_text_chars: a longer job goes to the dead-letter queue

_MAX_BATCH_ENTRIES = 10  # SendMessageBatch takes at most 10 entries ...
_MAX_BATCH_BYTES = 262_144  # ... and 256 KiB of bodies, which is also the most one message may be
_MAX_FIFO_ID_CHARS = 128  # MessageGroupId and MessageDeduplicationId
_TRANSIENT_CODES = frozenset({"RequestThrottled", "ThrottlingException", "Throttling", "InternalError",
                              "InternalFailure", "ServiceUnavailable", "KmsThrottled"})


class EnqueueError(Exception):
    """A document that cannot become jobs (the message names it), or SQS refusing or failing to take jobs."""


@dataclasses.dataclass(frozen=True)
class EnqueueStats:
    documents: int = 0
    empty_documents: int = 0  # no words: no jobs
    sections: int = 0  # jobs made
    jobs_sent: int = 0  # jobs SQS accepted (0 on a dry run)

    def summary(self, *, dry_run: bool = False) -> str:
        empty = f" ({self.empty_documents} without text)" if self.empty_documents else ""
        jobs = f"{self.sections} jobs printed (dry run)" if dry_run else f"{self.jobs_sent} jobs sent"
        return f"{self.documents} documents{empty}, {self.sections} sections, {jobs}"


# --- jobs ------------------------------------------------------------------------------------------------------


def choose_voice(document_id: str, *, voice: str | None = None, seed: int = 0) -> str:
    """``voice`` when given, else an English preset drawn from ``seed`` and the document id alone."""
    if voice:
        return voice
    digest = hashlib.sha256(f"{seed}:{document_id}".encode()).digest()
    return ENGLISH_VOICES[int.from_bytes(digest[:8], "big") % len(ENGLISH_VOICES)]


def document_jobs(document: Document, *, max_words: int = DEFAULT_MAX_WORDS, voice: str | None = None,
                  seed: int = 0, encoding: str = "mp3") -> list[dict[str, Any]]:
    """The jobs of one document, in section order; [] for a document without words.

    EnqueueError names the document when it cannot be read aloud as it is: an id the orchestrator would refuse,
    or a single "word" longer than MAX_SECTION_CHARS. A section of several words that is too long (long words)
    is split again with fewer words rather than refused.
    """
    if not DOCUMENT_ID.fullmatch(document.id):
        raise EnqueueError(f"document {document.id[:50]!r}: id is not 1-200 of A-Z a-z 0-9 . _ - "
                           "(starting with a letter or digit)")
    if encoding not in ENCODINGS:
        raise EnqueueError(f"encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
    sections = [piece for section in split_sections(document.text, max_words)
                for piece in _fit(document, section)]
    voice = choose_voice(document.id, voice=voice, seed=seed)
    meta = {"title": document.title, **document.metadata} if document.title is not None else dict(document.metadata)
    jobs = [{"id": document.id, "voice": voice, "script_section": section, "section_index": index,
             "section_count": len(sections), "encoding": encoding, "document": meta}
            for index, section in enumerate(sections)]
    return jobs


def _fit(document: Document, section: str) -> list[str]:
    if len(section) <= MAX_SECTION_CHARS:
        return [section]
    words = len(section.split())
    if words == 1:
        raise EnqueueError(f"document {document.id!r}: a single word of {len(section)} characters "
                           f"({section[:40]!r}...); a job holds at most {MAX_SECTION_CHARS}")
    return [piece for part in split_sections(section, words // 2) for piece in _fit(document, part)]


def job_body(job: dict[str, Any]) -> str:
    """The message body. ASCII-only JSON: SQS refuses some characters (U+FFFE, lone surrogates) outright."""
    return json.dumps(job, ensure_ascii=True, separators=(",", ":"))


# --- sending ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Job:
    name: str  # "document/section" in logs and errors
    group_id: str
    body: str


@dataclasses.dataclass(frozen=True)
class _Batch:
    jobs: tuple[_Job, ...]
    done: asyncio.Future[None]
    after: asyncio.Future[None] | None  # FIFO: the batch before, when it holds sections of the same document


@dataclasses.dataclass
class _Counts:
    documents: int = 0
    empty_documents: int = 0
    sections: int = 0
    jobs_sent: int = 0

    def stats(self) -> EnqueueStats:
        return EnqueueStats(self.documents, self.empty_documents, self.sections, self.jobs_sent)


async def enqueue_documents(sqs: Any, queue_url: str, documents: Iterable[Document], *,
                            max_words: int = DEFAULT_MAX_WORDS, voice: str | None = None, seed: int = 0,
                            encoding: str = "mp3", progress: bool = True, total_documents: int | None = None,
                            batches_in_flight: int = 4, max_attempts: int = 6,
                            retry_base_s: float = 0.2) -> EnqueueStats:
    """Send every document's jobs to the queue, 10 to a SendMessageBatch, ``batches_in_flight`` at a time.

    Entries SQS reports as Failed through no fault of ours, and whole batches that fail transiently, are sent
    again with backoff, ``max_attempts`` times in all. On a FIFO queue (the URL ends in ".fifo") a document's
    jobs share a message group and go out in order (only an entry retried after SQS reported it Failed can land
    behind later sections of its document; section_index keeps the true order); the deduplication id is
    "<id>-<section_index>", so sending a corpus twice within SQS's 5-minute window queues it once.

    Documents are read and sectioned in a worker thread. EnqueueError when a document cannot become jobs or SQS
    refuses them; CorpusError from a reader; either way a note on the exception says what was sent before.
    """
    if batches_in_flight < 1 or max_attempts < 1:
        raise ValueError("batches_in_flight and max_attempts must be at least 1")
    fifo = queue_url.endswith(".fifo")
    counts = _Counts()
    batches: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=batches_in_flight)
    sender = _Sender(sqs, queue_url, fifo=fifo, counts=counts, max_attempts=max_attempts, retry_base_s=retry_base_s)
    bar = tqdm(desc="documents", unit="doc", total=total_documents, file=sys.stderr, disable=not progress)
    try:
        async with asyncio.TaskGroup() as tasks:
            for i in range(batches_in_flight):
                tasks.create_task(sender.work(batches), name=f"enqueue-sender-{i}")
            options = {"max_words": max_words, "voice": voice, "seed": seed, "encoding": encoding}
            await _produce(iter(documents), batches, options, fifo=fifo, counts=counts, bar=bar)
            for _ in range(batches_in_flight):
                await batches.put(None)
    except BaseExceptionGroup as group:
        error = _first_error(group)
        error.add_note(f"before the error: {counts.stats().summary()} to {queue_url}")
        raise error from error.__cause__  # the group only wrapped it
    finally:
        bar.close()
    stats = counts.stats()
    logger.info("queue %s enqueued %s", queue_url, stats.summary())
    return stats


async def _produce(documents: Iterator[Document], batches: asyncio.Queue[_Batch | None], options: dict[str, Any],
                   *, fifo: bool, counts: _Counts, bar: tqdm) -> None:
    loop = asyncio.get_running_loop()
    pending: list[_Job] = []
    pending_bytes = 0
    previous: _Batch | None = None

    async def flush() -> None:
        nonlocal pending, pending_bytes, previous
        after = None
        if fifo and previous is not None and {j.group_id for j in previous.jobs} & {j.group_id for j in pending}:
            after = previous.done
        previous = _Batch(tuple(pending), loop.create_future(), after)
        pending, pending_bytes = [], 0
        await batches.put(previous)

    while True:
        # Reading (CSV, JSON) and sectioning (pysbd) are CPU work: off the event loop, one document at a time.
        item = await asyncio.to_thread(_next_jobs, documents, options)
        if item is None:
            break
        document, jobs = item
        counts.documents += 1
        counts.sections += len(jobs)
        if not jobs:
            counts.empty_documents += 1
            logger.warning("document %s has no words: no jobs", document.id)
        for job in jobs:
            size = len(job.body)  # ASCII: characters are bytes
            if size > _MAX_BATCH_BYTES:
                raise EnqueueError(f"document {document.id!r}: job {job.name} is {size} bytes; SQS takes at most "
                                   f"{_MAX_BATCH_BYTES} (is the document's metadata very large?)")
            if len(pending) == _MAX_BATCH_ENTRIES or pending_bytes + size > _MAX_BATCH_BYTES:
                await flush()
            pending.append(job)
            pending_bytes += size
        bar.update(1)
    if pending:
        await flush()


def _next_jobs(documents: Iterator[Document], options: dict[str, Any]) -> tuple[Document, list[_Job]] | None:
    document = next(documents, None)
    if document is None:
        return None
    group_id = _fifo_id(document.id)
    jobs = [_Job(f"{document.id}/{job['section_index']}", group_id, job_body(job))
            for job in document_jobs(document, **options)]
    return document, jobs


def _fifo_id(value: str) -> str:
    """SQS allows 128 characters in a group or deduplication id; document ids may have 200."""
    if len(value) <= _MAX_FIFO_ID_CHARS:
        return value
    return f"{value[:_MAX_FIFO_ID_CHARS - 17]}-{hashlib.sha256(value.encode()).hexdigest()[:16]}"


class _Sender:
    def __init__(self, sqs: Any, queue_url: str, *, fifo: bool, counts: _Counts, max_attempts: int,
                 retry_base_s: float) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._fifo = fifo
        self._counts = counts
        self._max_attempts = max_attempts
        self._retry_base_s = retry_base_s

    async def work(self, batches: asyncio.Queue[_Batch | None]) -> None:
        while (batch := await batches.get()) is not None:
            try:
                if batch.after is not None:
                    await batch.after
                await self._send(batch.jobs)
            finally:
                if not batch.done.done():
                    batch.done.set_result(None)

    def _entry(self, index: int, job: _Job) -> dict[str, str]:
        entry = {"Id": str(index), "MessageBody": job.body}
        if self._fifo:
            entry["MessageGroupId"] = job.group_id
            entry["MessageDeduplicationId"] = _fifo_id(job.name.replace("/", "-"))
        return entry

    async def _send(self, jobs: tuple[_Job, ...]) -> None:
        # Entry ids stay those of the first attempt, so a retry's Failed entries still point at their jobs.
        entries = {str(i): self._entry(i, job) for i, job in enumerate(jobs)}
        names = {str(i): job.name for i, job in enumerate(jobs)}
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = await self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=list(entries.values()))
            except (ClientError, BotoCoreError) as exc:
                if not _is_transient(exc):
                    raise EnqueueError(f"SQS refused jobs {names['0']}..{list(names.values())[-1]} "
                                       f"for {self._queue_url}") from exc
                if attempt == self._max_attempts:
                    raise EnqueueError(f"{len(entries)} jobs from {next(iter(names.values()))} not sent after "
                                       f"{attempt} attempts") from exc
                delay_s = _backoff_s(attempt, self._retry_base_s)
                logger.warning("queue %s SendMessageBatch of %d jobs failed, attempt %d, retry in %.2fs",
                               self._queue_url, len(entries), attempt, delay_s, exc_info=True)
                await asyncio.sleep(delay_s)
                continue
            for ok in response.get("Successful", []):
                if entries.pop(ok["Id"], None) is not None:
                    self._counts.jobs_sent += 1
                    logger.debug("job %s sent message_id=%s", names[ok["Id"]], ok.get("MessageId"))
            failed = response.get("Failed", [])
            refused = [f for f in failed if f.get("SenderFault")]
            if refused:
                details = "; ".join(f"{names.get(f['Id'], f['Id'])}: {f.get('Code')} {f.get('Message', '')}"
                                    for f in refused)
                raise EnqueueError(f"SQS refused {len(refused)} jobs: {details}")
            if not entries:
                return
            if attempt == self._max_attempts:
                break
            delay_s = _backoff_s(attempt, self._retry_base_s)
            for f in failed:
                logger.warning("job %s not sent code=%s message=%s attempt=%d, retry in %.2fs",
                               names.get(f["Id"], f["Id"]), f.get("Code"), f.get("Message"), attempt, delay_s)
            await asyncio.sleep(delay_s)
        raise EnqueueError(f"jobs {', '.join(names[i] for i in entries)} not sent after {self._max_attempts} "
                           "attempts (SQS kept reporting them Failed)")


def _codes(exc: ClientError) -> set[str]:
    """botocore reports SQS's legacy query code ("AWS.SimpleQueueService.NonExistentQueue") and keeps the JSON
    one in QueryErrorCode: either may be the one to match."""
    error = exc.response.get("Error", {})
    return {str(c).removeprefix("AWS.SimpleQueueService.") for c in (error.get("Code"), error.get("QueryErrorCode"))
            if c}


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return bool(_codes(exc) & _TRANSIENT_CODES) or status >= 500
    return isinstance(exc, (HTTPClientError, BotoConnectionError))


def _backoff_s(attempt: int, base_s: float, cap_s: float = 10.0) -> float:
    return min(cap_s, base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error that stopped the run, not the cancellations it caused."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            leaves.append(error)
    for error in leaves:
        if not isinstance(error, asyncio.CancelledError):
            return error
    return leaves[0] if leaves else group


# --- dry run ---------------------------------------------------------------------------------------------------


def print_jobs(documents: Iterable[Document], out: TextIO, *, max_words: int = DEFAULT_MAX_WORDS,
               voice: str | None = None, seed: int = 0, encoding: str = "mp3", progress: bool = True,
               total_documents: int | None = None) -> EnqueueStats:
    """Write each job's message body, one per line, exactly as `enqueue_documents` would send it."""
    counts = _Counts()
    with tqdm(desc="documents", unit="doc", total=total_documents, file=sys.stderr, disable=not progress) as bar:
        for document in documents:
            jobs = document_jobs(document, max_words=max_words, voice=voice, seed=seed, encoding=encoding)
            counts.documents += 1
            counts.sections += len(jobs)
            counts.empty_documents += not jobs
            for job in jobs:
                out.write(job_body(job) + "\n")
            bar.update(1)
    return counts.stats()


# --- command ---------------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "enqueue", help="send documents to the job queue, one job per section",
        description="Split documents into sections and send one job per section to the SQS queue. INPUT is a .txt "
        "file, a directory of .txt files, a .jsonl file ({\"id\", \"text\", \"title\"} per line) or Food.com's "
        "RAW_recipes.csv (with RAW_interactions.csv beside it or given too).")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="documents to read")
    parser.add_argument("--queue-url", help="the job queue (required unless --dry-run)")
    parser.add_argument("--max-words", type=at_least(1), default=DEFAULT_MAX_WORDS,
                        help="most words in one section (default: %(default)s)")
    voices = parser.add_mutually_exclusive_group()
    voices.add_argument("--voice", help="one voice preset for every document, e.g. v2/en_speaker_6")
    voices.add_argument("--seed", type=int, default=0,
                        help="draws each document's English voice from this and its id (default: %(default)s)")
    parser.add_argument("--limit", type=at_least(1), help="read at most this many documents")
    parser.add_argument("--min-rating", type=float, default=DEFAULT_MIN_RATING,
                        help="recipes: the lowest average rating kept (default: %(default)s)")
    parser.add_argument("--encoding", choices=ENCODINGS, default="mp3", help="clip format (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the jobs, one JSON object per line, instead of sending them")
    add_aws_arguments(parser)
    parser.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    if not args.dry_run and not args.queue_url:
        print("chorus enqueue: error: --queue-url is required (or --dry-run)", file=sys.stderr)
        return 2
    try:
        documents: Iterator[Document] = read_corpus(args.inputs, min_rating=args.min_rating)
    except CorpusError as exc:
        print(f"chorus enqueue: error: {exc}", file=sys.stderr)
        return 2
    if args.limit is not None:
        documents = itertools.islice(documents, args.limit)
    options = {"max_words": args.max_words, "voice": args.voice, "seed": args.seed, "encoding": args.encoding,
               "total_documents": args.limit}
    try:
        if args.dry_run:
            try:
                stats = await asyncio.to_thread(print_jobs, documents, sys.stdout, **options)
            except BrokenPipeError:  # `chorus enqueue --dry-run ... | head`: the reader has seen enough
                _silence_stdout()
                return 0
            print(f"chorus enqueue: {stats.summary(dry_run=True)}", file=sys.stderr)
            return 0
        async with aws_client(args, "sqs") as sqs:
            stats = await enqueue_documents(sqs, args.queue_url, documents, **options)
    except (CorpusError, EnqueueError) as exc:
        logger.debug("enqueue failed", exc_info=True)
        notes = "".join(f"\n{note}" for note in getattr(exc, "__notes__", ()))
        print(f"chorus enqueue: error: {exc}{notes}", file=sys.stderr)
        return 2 if isinstance(exc, CorpusError) else 1
    print(f"chorus enqueue: {stats.summary()} to {args.queue_url}", file=sys.stderr)
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        logger.debug("stdout left as it is", exc_info=True)
