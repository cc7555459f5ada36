"""The daemon's loop: bounded intake from SQS, one task per held job, drain on stop.

A job is deleted only after its clip is stored and its result recorded. Anything else releases it (SQS redelivers
it later, and the queue's redrive policy dead-letters it after too many receives) or, for a job that can never
succeed, dead-letters it with the reason. A job cut short by shutdown is released at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time

from chorus.synth.v1 import synth_pb2 as pb
from chorus_orchestrator.endpoints import EndpointPool, PermanentSynthError, SynthError
from chorus_orchestrator.jobs import Job, PoisonJob, parse_job
from chorus_orchestrator.metrics import OrchestratorMetrics
from chorus_orchestrator.results import ClipRecord, RecordError, ResultTable
from chorus_orchestrator.settings import Settings
from chorus_orchestrator.sqs import JobQueue, Message
from chorus_orchestrator.storage import ClipStore, StorageError, UploadNotAllowed, clip_key

logger = logging.getLogger(__name__)

# How often the held-jobs limit is rechecked while the fleet has no capacity.
_NO_CAPACITY_POLL_S = 1.0
_QUEUE_DEPTH_EVERY_S = 15.0


class Orchestrator:
    def __init__(
        self, settings: Settings, *, queue: JobQueue, pool: EndpointPool, store: ClipStore, table: ResultTable,
        metrics: OrchestratorMetrics, sqs_client=None,
    ) -> None:
        self._settings = settings
        self._queue = queue
        self._pool = pool
        self._store = store
        self._table = table
        self._metrics = metrics
        self._sqs = sqs_client
        self._jobs: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()
        self._stop = asyncio.Event()

    def held_limit(self) -> int:
        if self._settings.max_held:
            return self._settings.max_held
        # About twice the fleet's capacity: every slot busy and as many ready to start. Nothing when the fleet is down.
        return 2 * self._pool.capacity

    def request_stop(self) -> None:
        if not self._stop.is_set():
            logger.info("stop requested: no more receives, %d job(s) in flight", len(self._jobs))
            self._stop.set()

    async def run(self) -> None:
        intake = asyncio.create_task(self._intake(), name="intake")
        depth = asyncio.create_task(self._watch_queue_depth(), name="queue-depth") if self._sqs else None
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({intake, stop}, return_when=asyncio.FIRST_COMPLETED)
        # Do not wait out a parked 20 s long poll: cancel it; a message it was about to return stays invisible only
        # until its visibility timeout, as after a crash.
        intake.cancel()
        stop.cancel()
        for task in (intake, depth):
            if task is not None:
                task.cancel()
        await asyncio.gather(intake, *(t for t in (depth,) if t), return_exceptions=True)
        if intake.done() and not intake.cancelled() and intake.exception():
            logger.error("intake failed", exc_info=intake.exception())
        await self._drain()

    async def _drain(self) -> None:
        if self._jobs:
            logger.info("draining %d job(s), %.0f s grace", len(self._jobs), self._settings.drain_grace_s)
            _, pending = await asyncio.wait(set(self._jobs), timeout=self._settings.drain_grace_s)
            for task in pending:
                task.cancel()
            if pending:
                logger.info("grace over: releasing %d unfinished job(s)", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)

    async def _intake(self) -> None:
        while not self._stop.is_set():
            limit = self.held_limit()
            self._metrics.max_held.set(limit)
            room = limit - len(self._jobs)
            if room <= 0:
                self._room.clear()
                try:
                    await asyncio.wait_for(self._room.wait(), timeout=_NO_CAPACITY_POLL_S)
                except TimeoutError:
                    pass
                continue
            started = time.monotonic()
            messages = await self._queue.receive(min(10, room), wait_s=20)
            if messages:
                self._metrics.stage_seconds.labels(stage="receive").observe(time.monotonic() - started)
            for message in messages:
                self._metrics.received.inc()
                task = asyncio.create_task(self._handle(message), name=f"job-{message.message_id}")
                self._jobs.add(task)
                self._metrics.held.set(len(self._jobs))
                task.add_done_callback(self._job_finished)

    def _job_finished(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        self._metrics.held.set(len(self._jobs))
        self._room.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("job task crashed", exc_info=task.exception())

    async def _watch_queue_depth(self) -> None:
        while True:
            try:
                reply = await self._sqs.get_queue_attributes(
                    QueueUrl=self._settings.queue_url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )
                attributes = reply["Attributes"]
                self._metrics.queue_messages.labels(state="visible").set(int(attributes["ApproximateNumberOfMessages"]))
                self._metrics.queue_messages.labels(state="in_flight").set(
                    int(attributes["ApproximateNumberOfMessagesNotVisible"]))
            except Exception:  # noqa: BLE001 - a gauge going stale must not stop the daemon
                logger.warning("could not read the queue's depth", exc_info=True)
            await asyncio.sleep(_QUEUE_DEPTH_EVERY_S)

    async def _handle(self, message: Message) -> None:
        started = time.monotonic()
        try:
            job = parse_job(message.body, max_text_chars=self._settings.max_text_chars,
                            default_encoding=self._settings.encoding)
        except PoisonJob as exc:
            logger.warning("message %s: poison (%s): dead-lettering", message.message_id, exc.reason)
            await asyncio.shield(self._dead_letter(message, "invalid_job", exc.reason))
            return
        logger.info("job %s: received (receive %d)", job.name, message.receive_count)
        try:
            await self._process(job, message, started)
        except asyncio.CancelledError:
            logger.info("job %s: interrupted by shutdown: releasing", job.name)
            await asyncio.shield(self._release(message, "shutdown", delay_s=0))
            raise
        except PermanentSynthError as exc:
            logger.warning("job %s: refused by synth (%s): dead-lettering", job.name, exc)
            await asyncio.shield(self._dead_letter(message, "synth_refused", str(exc)))
        except UploadNotAllowed as exc:
            logger.warning("job %s: upload refused (%s): dead-lettering", job.name, exc)
            await asyncio.shield(self._dead_letter(message, "upload_not_allowed", str(exc)))
        except Exception as exc:  # noqa: BLE001 - whatever failed, the message must not stay held
            reason = _stage_of(exc)
            delay_s = self._backoff_s(message.receive_count)
            logger.warning("job %s: %s failed (%s): releasing for %d s", job.name, reason, exc, delay_s,
                           exc_info=reason == "error")
            self._metrics.failed.labels(reason=reason).inc()
            await asyncio.shield(self._release(message, reason, delay_s=delay_s))

    def _backoff_s(self, receive_count: int) -> int:
        backoff = self._settings.release_backoff_s * 2 ** max(0, receive_count - 1)
        return int(min(backoff, self._settings.max_release_backoff_s))

    def _location_key(self, job: Job) -> str | None:
        if job.upload_url:
            return None
        return job.output_key or clip_key(self._settings.prefix, job.document_id, job.section_index, job.encoding.ext)

    async def _process(self, job: Job, message: Message, started: float) -> None:
        key = self._location_key(job)
        if key is None and job.upload_url is None:
            raise StorageError("no upload_url in the job and no --bucket configured", retryable=True)
        if await self._already_done(job, key):
            logger.info("job %s: clip and record exist: acknowledging without work", job.name)
            self._metrics.skipped.inc()
            await asyncio.shield(self._delete(message))
            return

        stage = time.monotonic()
        result = await self._pool.synthesize(pb.SynthesizeRequest(
            request_id=job.name, text=job.text, voice=job.voice, encoding=job.encoding.proto))
        self._metrics.stage_seconds.labels(stage="synth").observe(time.monotonic() - stage)
        if result.attempts > 1:
            self._metrics.retries.inc(result.attempts - 1)
        reply = result.response
        served = reply.served_by
        logger.info("job %s: synthesized %.2f s on %s (%s) in %.2f s", job.name, reply.duration_seconds,
                    result.endpoint, served.gpu_model, served.inference_seconds)

        stage = time.monotonic()
        stored = await self._store.put(
            reply.audio, content_type=job.encoding.content_type, key=key, upload_url=job.upload_url,
            metadata={"document-id": job.document_id, "section-index": str(job.section_index)},
        )
        self._metrics.stage_seconds.labels(stage="upload").observe(time.monotonic() - stage)
        logger.info("job %s: stored at %s", job.name, stored.location)

        if self._queue.lease_lost(message):
            # Another worker holds the message now; it will record and delete. The clip it writes is the same key.
            logger.warning("job %s: lease lost: leaving the record and delete to the new holder", job.name)
            self._metrics.failed.labels(reason="lease_lost").inc()
            return

        stage = time.monotonic()
        await self._table.record(ClipRecord(
            document_id=job.document_id,
            section_index=job.section_index,
            text=job.text,
            voice=job.voice,
            location=stored.location,
            audio_seconds=reply.duration_seconds,
            words=len(job.text.split()),
            inference_seconds=served.inference_seconds,
            queue_seconds=served.queue_seconds,
            gpu_model=served.gpu_model,
            device=served.device,
            endpoint=result.endpoint,
            attempt=result.attempts,
            receive_count=message.receive_count,
            recorded_at=datetime.datetime.now(datetime.UTC).isoformat(),
            section_count=job.section_count,
            sample_rate_hz=reply.sample_rate_hz,
            encoding=job.encoding.name,
            extra={**job.extra, **({"document": job.document} if job.document else {})},
        ))
        self._metrics.stage_seconds.labels(stage="record").observe(time.monotonic() - stage)

        stage = time.monotonic()
        deleted = await asyncio.shield(self._delete(message))
        self._metrics.stage_seconds.labels(stage="delete").observe(time.monotonic() - stage)
        self._metrics.stage_seconds.labels(stage="total").observe(time.monotonic() - started)
        gpu_model = served.gpu_model or "unknown"
        self._metrics.clips.labels(gpu_model=gpu_model).inc()
        self._metrics.audio_seconds.labels(gpu_model=gpu_model).inc(reply.duration_seconds)
        self._metrics.words.labels(gpu_model=gpu_model).inc(len(job.text.split()))
        self._metrics.inference_seconds.labels(gpu_model=gpu_model).observe(served.inference_seconds)
        logger.info("job %s: done%s", job.name, "" if deleted else " (its message was already redelivered)")

    async def _already_done(self, job: Job, key: str | None) -> bool:
        """Whether a redelivered job's clip and record both exist. Only a shortcut: when it cannot be told, the job
        is done again (same key, same record), and a store or table that is really down fails it further on."""
        try:
            record = await self._table.get(job.document_id, job.section_index)
            if record is None:
                return False
            # A presigned URL cannot be checked; its record is only written after the upload succeeded.
            return key is None or await self._store.exists(key)
        except (RecordError, StorageError):
            logger.warning("job %s: could not check for an earlier result: doing it", job.name, exc_info=True)
            return False

    async def _delete(self, message: Message) -> bool:
        deleted = await self._queue.delete(message)
        if deleted:
            self._metrics.deleted.inc()
        return deleted

    async def _release(self, message: Message, reason: str, *, delay_s: int) -> None:
        await self._queue.release(message, delay_s=delay_s)
        self._metrics.released.labels(reason=reason).inc()

    async def _dead_letter(self, message: Message, reason: str, detail: str) -> None:
        await self._queue.dead_letter(message, f"{reason}: {detail}")
        self._metrics.dead_lettered.labels(reason=reason).inc()


def _stage_of(exc: Exception) -> str:
    """The failure reason of a job that is released to be tried again later."""
    if isinstance(exc, SynthError):
        return "synth"
    if isinstance(exc, StorageError):
        return "upload"
    if isinstance(exc, RecordError):
        return "record"
    return "error"
