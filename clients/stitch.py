"""`chorus stitch`: join each document's clips, in section order, into one audio file `DIR/<document_id>.<ext>`.

A document is stitched only when every section is there: its records carry `section_count`, and a document with
a missing section is reported (with the missing indexes) and gets no file, never a file with holes. A document
whose records carry no `section_count` is joined from the sections that are recorded, with a warning.

Skipping rule: an existing `DIR/<document_id>.<ext>` is taken as done and not looked at again; `--force` redoes
it. Files are written to a hidden temporary file in DIR and renamed, so an existing file is always whole.

Exit status: 0 when every document was stitched or skipped; 1 when at least one is incomplete or failed (a clip
missing from the bucket or not decodable): run again once the missing sections are done; 2 when nothing could be
done (the table cannot be read, DIR cannot be made).
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import logging
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import botocore.exceptions
import numpy as np
import soxr
from botocore.config import Config
from tqdm import tqdm

from chorus_clients.aws import add_aws_arguments, aws_client
from chorus_clients.cli import at_least
from chorus_clients.records import TableError, document_ids, document_sections
from chorus_orchestrator.storage import clip_key
from chorus_synth.audio import Encoding, allowed_sample_rates, decode, encode

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Output formats by the extension they are written with.
FORMATS: dict[str, Encoding] = {"mp3": Encoding.MP3, "wav": Encoding.WAV, "flac": Encoding.FLAC,
                                "ogg": Encoding.OGG_OPUS}
# A record's `encoding` is the job's encoding name (chorus_orchestrator.jobs.ENCODINGS).
_RECORD_ENCODINGS = {"mp3": Encoding.MP3, "wav": Encoding.WAV, "ogg_opus": Encoding.OGG_OPUS,
                     "flac": Encoding.FLAC, "pcm_s16le": Encoding.PCM_S16LE}
# For records without one: the clip key's extension.
_EXTENSION_ENCODINGS = {"mp3": Encoding.MP3, "wav": Encoding.WAV, "ogg": Encoding.OGG_OPUS, "opus": Encoding.OGG_OPUS,
                        "flac": Encoding.FLAC, "pcm": Encoding.PCM_S16LE}
_ENCODING_EXTENSIONS = {Encoding.MP3: "mp3", Encoding.WAV: "wav", Encoding.OGG_OPUS: "ogg", Encoding.FLAC: "flac",
                        Encoding.PCM_S16LE: "pcm"}
_RECORD_FIELDS = ("location", "encoding", "sample_rate_hz", "section_count")
# Clips of one document fetched at once; documents at once are `concurrency`.
FETCHES_PER_DOCUMENT = 8


class DocumentStatus(enum.Enum):
    STITCHED = "stitched"
    SKIPPED = "skipped"  # the output file already existed
    INCOMPLETE = "incomplete"  # sections missing from the table: no file written
    FAILED = "failed"  # a clip could not be fetched or decoded, or the file not written


@dataclass(frozen=True)
class DocumentResult:
    document_id: str
    status: DocumentStatus
    path: Path | None = None  # the output file (stitched or skipped)
    missing_sections: tuple[int, ...] = ()  # incomplete: the indexes not recorded
    section_count: int | None = None  # sections the document has; None: the records did not say
    sections: int = 0  # sections joined into the file
    sample_rate_hz: int | None = None
    sample_count: int | None = None  # of the file: every clip plus a pause between each two
    detail: str = ""  # why it is incomplete or failed

    @property
    def duration_seconds(self) -> float | None:
        if self.sample_count is None or not self.sample_rate_hz:
            return None
        return self.sample_count / self.sample_rate_hz


@dataclass(frozen=True)
class StitchReport:
    documents: tuple[DocumentResult, ...]

    def _with(self, status: DocumentStatus) -> list[DocumentResult]:
        return [result for result in self.documents if result.status is status]

    @property
    def stitched(self) -> list[DocumentResult]:
        return self._with(DocumentStatus.STITCHED)

    @property
    def skipped(self) -> list[DocumentResult]:
        return self._with(DocumentStatus.SKIPPED)

    @property
    def incomplete(self) -> list[DocumentResult]:
        return self._with(DocumentStatus.INCOMPLETE)

    @property
    def failed(self) -> list[DocumentResult]:
        return self._with(DocumentStatus.FAILED)

    @property
    def ok(self) -> bool:
        """Every document has its file."""
        return not self.incomplete and not self.failed


@dataclass(frozen=True)
class _Section:
    index: int
    bucket: str
    key: str
    encoding: Encoding
    sample_rate_hz: int | None  # needed to decode PCM_S16LE only

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class _ClipError(Exception):
    """One clip of a document could not be fetched or decoded; the document fails."""


async def _bounded_map(function: Callable[[T], Awaitable[R]], items: Sequence[T], limit: int) -> list[R]:
    """``function`` over ``items`` by at most ``limit`` worker tasks; results in the order of ``items``."""
    results: list[R] = [None] * len(items)  # type: ignore[list-item]
    queue: asyncio.Queue[tuple[int, T]] = asyncio.Queue()
    for number, item in enumerate(items):
        queue.put_nowait((number, item))

    async def worker() -> None:
        while not queue.empty():
            number, item = queue.get_nowait()
            results[number] = await function(item)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(limit, len(items))):
            group.create_task(worker())
    return results


def _locate(record: dict[str, object], *, bucket: str, prefix: str, document_id: str) -> _Section:
    index = int(record["section_index"])
    name = record.get("encoding")
    location = record.get("location")
    rate = record.get("sample_rate_hz")
    if isinstance(location, str) and location.startswith("s3://") and "/" in location[5:]:
        clip_bucket, key = location[5:].split("/", 1)
    else:
        # A presigned-URL upload, or no location: the deterministic key in the bucket.
        encoding = _RECORD_ENCODINGS.get(str(name).lower(), Encoding.MP3) if name else Encoding.MP3
        clip_bucket, key = bucket, clip_key(prefix, document_id, index, _ENCODING_EXTENSIONS[encoding])
    if name:
        encoding = _RECORD_ENCODINGS.get(str(name).lower())
    else:
        encoding = _EXTENSION_ENCODINGS.get(key.rsplit(".", 1)[-1].lower())
    if encoding is None:
        raise _ClipError(f"section {index}: unknown encoding {name!r} of s3://{clip_bucket}/{key}")
    return _Section(index, clip_bucket, key, encoding, rate if isinstance(rate, int) else None)


def _target_rate(rates: Sequence[int], encoding: Encoding) -> int:
    """The highest clip rate, or the nearest rate above it that ``encoding`` supports."""
    highest = max(rates)
    allowed = allowed_sample_rates(encoding)
    if highest in allowed:
        return highest
    above = [rate for rate in allowed if rate >= highest]
    return min(above) if above else max(allowed)


def _join(clips: Sequence[tuple[np.ndarray, int]], encoding: Encoding, pause_ms: int) -> tuple[np.ndarray, int]:
    rate = _target_rate([clip_rate for _, clip_rate in clips], encoding)
    parts = [samples if clip_rate == rate else soxr.resample(samples, clip_rate, rate).astype(np.float32)
             for samples, clip_rate in clips]
    pause = round(pause_ms * rate / 1000)
    joined = np.zeros(sum(part.size for part in parts) + pause * (len(parts) - 1), dtype=np.float32)
    position = 0
    for part in parts:
        joined[position:position + part.size] = part
        position += part.size + pause
    return joined, rate


# mkstemp makes its file private (0600); a finished document gets the mode any new file would (read once here:
# os.umask can only be read by setting it, which is not safe once threads run).
_UMASK = os.umask(0)
os.umask(_UMASK)


def _write_atomically(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _encode_and_write(clips: Sequence[tuple[np.ndarray, int]], encoding: Encoding, pause_ms: int,
                      path: Path) -> tuple[int, int]:
    """Join, encode and write the file; its (sample rate, sample count)."""
    joined, rate = _join(clips, encoding, pause_ms)
    clip = encode(joined, rate, encoding)
    _write_atomically(path, clip.data)
    return clip.sample_rate_hz, clip.sample_count


class _Stitcher:
    def __init__(self, s3, dynamodb, *, bucket: str, table: str, prefix: str, out_dir: Path, encoding: Encoding,
                 extension: str, pause_ms: int, force: bool) -> None:
        self._s3 = s3
        self._dynamodb = dynamodb
        self._bucket = bucket
        self._table = table
        self._prefix = prefix
        self._out_dir = out_dir
        self._encoding = encoding
        self._extension = extension
        self._pause_ms = pause_ms
        self._force = force

    async def document(self, document_id: str) -> DocumentResult:
        if not document_id or document_id.startswith(".") or Path(document_id).name != document_id:
            return DocumentResult(document_id, DocumentStatus.FAILED, detail="the id is not usable as a file name")
        path = self._out_dir / f"{document_id}.{self._extension}"
        if path.exists() and not self._force:
            logger.info("document %s: skipped, %s exists", document_id, path)
            return DocumentResult(document_id, DocumentStatus.SKIPPED, path=path)
        try:
            records = await document_sections(self._dynamodb, self._table, document_id, _RECORD_FIELDS)
        except TableError as exc:
            logger.warning("document %s: failed: %s", document_id, exc, exc_info=exc)
            return DocumentResult(document_id, DocumentStatus.FAILED, detail=str(exc))
        if not records:
            logger.warning("document %s: incomplete: no sections recorded", document_id)
            return DocumentResult(document_id, DocumentStatus.INCOMPLETE, detail="no sections recorded")

        counts = {record["section_count"] for record in records if isinstance(record.get("section_count"), int)}
        section_count = max(counts) if counts else None
        if len(counts) > 1:
            logger.warning("document %s: records disagree on section_count %s; taking %d", document_id,
                           sorted(counts), section_count)
        if section_count is None:
            logger.warning("document %s: no section_count recorded; joining the %d recorded sections as they are",
                           document_id, len(records))
        else:
            recorded = {int(record["section_index"]) for record in records}
            missing = tuple(index for index in range(section_count) if index not in recorded)
            if missing:
                logger.warning("document %s: incomplete: %d of %d sections missing", document_id, len(missing),
                               section_count)
                return DocumentResult(document_id, DocumentStatus.INCOMPLETE, missing_sections=missing,
                                      section_count=section_count,
                                      detail=f"missing sections {_ranges(missing)} of {section_count}")
            beyond = sorted(index for index in recorded if index >= section_count)
            if beyond:
                logger.warning("document %s: sections %s are past section_count %d; left out", document_id,
                               _ranges(beyond), section_count)
            records = [record for record in records if int(record["section_index"]) < section_count]
        records.sort(key=lambda record: int(record["section_index"]))

        errors: tuple[BaseException, ...] = ()
        try:
            sections = [_locate(record, bucket=self._bucket, prefix=self._prefix, document_id=document_id)
                        for record in records]
            clips = await _bounded_map(self._clip, sections, FETCHES_PER_DOCUMENT)
        except* _ClipError as group:
            errors = group.exceptions
        if errors:
            detail = "; ".join(str(error) for error in errors)
            logger.warning("document %s: failed: %s", document_id, detail, exc_info=errors[0])
            return DocumentResult(document_id, DocumentStatus.FAILED, section_count=section_count, detail=detail)
        try:
            rate, count = await asyncio.to_thread(_encode_and_write, clips, self._encoding, self._pause_ms, path)
        except (OSError, ValueError) as exc:
            logger.warning("document %s: failed: cannot write %s: %s", document_id, path, exc, exc_info=exc)
            return DocumentResult(document_id, DocumentStatus.FAILED, section_count=section_count,
                                  detail=f"cannot write {path}: {exc}")
        result = DocumentResult(document_id, DocumentStatus.STITCHED, path=path, section_count=section_count,
                                sections=len(clips), sample_rate_hz=rate, sample_count=count)
        logger.info("document %s: stitched %d sections, %.2f s, into %s", document_id, len(clips),
                    result.duration_seconds, path)
        return result

    async def _clip(self, section: _Section) -> tuple[np.ndarray, int]:
        try:
            response = await self._s3.get_object(Bucket=section.bucket, Key=section.key)
            async with response["Body"] as body:
                data = await body.read()
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise _ClipError(f"section {section.index}: cannot fetch {section.location}: {exc}") from exc
        try:
            return await asyncio.to_thread(decode, data, section.encoding, section.sample_rate_hz)
        except ValueError as exc:
            raise _ClipError(f"section {section.index}: {section.location}: {exc}") from exc


async def stitch_documents(s3, dynamodb, *, bucket: str, table: str, prefix: str,
                           document_ids: Sequence[str] | None, out_dir: Path | str, fmt: str, pause_ms: int,
                           concurrency: int, force: bool = False, progress: bool = True) -> StitchReport:
    """Stitch ``document_ids`` (None: every document in ``table``) into ``out_dir``, ``concurrency`` at a time.

    Raises `TableError` when the table cannot be listed (``document_ids`` None) and `OSError` when ``out_dir``
    cannot be made; every other failure is one document's, in the report.
    """
    encoding = FORMATS.get(fmt)
    if encoding is None:
        raise ValueError(f"format {fmt!r} is not supported; supported: {', '.join(FORMATS)}")
    if pause_ms < 0:
        raise ValueError(f"pause_ms must be >= 0, got {pause_ms}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if document_ids is None:
        document_ids = await _all_document_ids(dynamodb, table)
    ids = list(dict.fromkeys(document_ids))
    stitcher = _Stitcher(s3, dynamodb, bucket=bucket, table=table, prefix=prefix, out_dir=out_dir,
                         encoding=encoding, extension=fmt, pause_ms=pause_ms, force=force)
    # disable=None: no bar when stderr is not a terminal.
    with tqdm(total=len(ids), unit="doc", desc="stitching", file=sys.stderr, disable=None if progress else True,
              dynamic_ncols=True) as bar:
        async def one(document_id: str) -> DocumentResult:
            result = await stitcher.document(document_id)
            bar.update(1)
            return result

        results = await _bounded_map(one, ids, concurrency)
    return StitchReport(tuple(results))


async def _all_document_ids(dynamodb, table: str) -> list[str]:
    ids = await document_ids(dynamodb, table)
    logger.info("table %s: %d documents", table, len(ids))
    return ids


def _ranges(indexes: Sequence[int]) -> str:
    """3, 4, 5, 9 -> "3-5, 9": a long list of missing sections stays readable."""
    spans: list[str] = []
    start = previous = None
    for index in sorted(indexes):
        if start is not None and index == previous + 1:
            previous = index
            continue
        if start is not None:
            spans.append(f"{start}-{previous}" if previous != start else f"{start}")
        start = previous = index
    if start is not None:
        spans.append(f"{start}-{previous}" if previous != start else f"{start}")
    return ", ".join(spans)


def format_summary(report: StitchReport) -> str:
    lines = [f"stitched {len(report.stitched)}, skipped {len(report.skipped)}, "
             f"incomplete {len(report.incomplete)}, failed {len(report.failed)}"]
    for result in report.stitched:
        note = "" if result.section_count is not None else " (section count unknown: the recorded sections)"
        lines.append(f"  stitched    {result.document_id}: {result.path} "
                     f"({result.sections} sections, {result.duration_seconds:.2f} s){note}")
    for result in report.skipped:
        lines.append(f"  skipped     {result.document_id}: {result.path} exists (--force redoes it)")
    for result in report.incomplete:
        lines.append(f"  incomplete  {result.document_id}: {result.detail}")
    for result in report.failed:
        lines.append(f"  failed      {result.document_id}: {result.detail}")
    return "\n".join(lines)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "stitch", help="join each document's clips into one audio file",
        description="Join each document's clips, in section order with a short pause between them, into "
        "DIR/<document_id>.<format>. A document with a missing section gets no file and is reported. An "
        "existing file is skipped unless --force.",
        epilog="Exit status: 0 every document stitched or skipped; 1 some document incomplete or failed; "
        "2 nothing could be done (table unreadable, DIR not writable).")
    parser.add_argument("--bucket", required=True, help="bucket of the clips")
    parser.add_argument("--table", required=True, help="results table")
    parser.add_argument("--prefix", default="clips/", help="key prefix of the clips (default: %(default)s)")
    parser.add_argument("--documents", nargs="+", metavar="ID", help="documents to stitch (default: every "
                        "document in the table)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the stitched files")
    parser.add_argument("--format", choices=list(FORMATS), default="mp3", help="output format (default: %(default)s)")
    parser.add_argument("--pause-ms", type=at_least(0), default=300,
                        help="silence between two sections in milliseconds (default: %(default)s)")
    parser.add_argument("--concurrency", type=at_least(1), default=4,
                        help="documents stitched at once (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="stitch again documents whose file exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_aws_arguments(parser)
    parser.set_defaults(handler=stitch)




async def stitch(args: argparse.Namespace) -> int:
    # Enough pooled connections for every clip fetch in flight, or fetches queue for a connection.
    config = Config(max_pool_connections=max(10, args.concurrency * FETCHES_PER_DOCUMENT))
    try:
        async with aws_client(args, "s3", config=config) as s3, aws_client(args, "dynamodb") as dynamodb:
            report = await stitch_documents(
                s3, dynamodb, bucket=args.bucket, table=args.table, prefix=args.prefix, document_ids=args.documents,
                out_dir=args.out, fmt=args.format, pause_ms=args.pause_ms, concurrency=args.concurrency,
                force=args.force, progress=not args.no_progress)
    except TableError as exc:
        print(f"chorus stitch: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"chorus stitch: cannot use {args.out}: {exc}", file=sys.stderr)
        return 2
    print(format_summary(report))
    return 0 if report.ok else 1
