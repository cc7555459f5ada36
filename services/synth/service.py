"""The chorus.synth.v1.Synth servicer: the five RPCs, and the one place where failures become gRPC status codes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc
from chorus_synth import audio
from chorus_synth.engine import ClipRequest, DeviceOutOfMemory, EngineError
from chorus_synth.models import voice_language
from chorus_synth.requests import PROTO_ENCODINGS, OutputFormat, RequestError
from chorus_synth.scheduler import Overloaded
from chorus_synth.workers import WorkerDied

if TYPE_CHECKING:
    from chorus_synth.server import SynthServer

logger = logging.getLogger(__name__)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status a failed clip or RPC answers with."""
    if isinstance(exc, RequestError):
        return exc.code, exc.message
    if isinstance(exc, (Overloaded, DeviceOutOfMemory)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, WorkerDied):
        return grpc.StatusCode.UNAVAILABLE, f"{exc}; retry"
    if isinstance(exc, EngineError):
        return grpc.StatusCode.INTERNAL, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def item_error(exc: BaseException) -> pb.ItemError:
    code, message = status_of(exc)
    return pb.ItemError(code=code.value[0], code_name=code.name, message=message)


class SynthService(synth_pb2_grpc.SynthServicer):
    def __init__(self, server: SynthServer) -> None:
        self._server = server

    @contextlib.asynccontextmanager
    async def _rpc(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        metrics = self._server.metrics
        metrics.in_flight.inc()
        self._server.active_rpcs += 1
        code = grpc.StatusCode.OK
        try:
            yield
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code, message = status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                logger.exception("%s failed", method)
            await context.abort(code, message)
        finally:
            self._server.active_rpcs -= 1
            metrics.in_flight.dec()
            metrics.observe_request(method, code.name)

    def _require_ready(self) -> None:
        self._server.require_serving()

    def _served_by(self, scheduled) -> pb.ServedBy:
        output = scheduled.output
        return pb.ServedBy(
            model=self._server.settings.model,
            device=scheduled.device.name,
            gpu_model=scheduled.device.gpu_model,
            batch_size=output.batch_size,
            queue_seconds=scheduled.queue_seconds,
            inference_seconds=output.inference_seconds,
            hostname=self._server.hostname,
        )

    async def _clip(
        self, clip: ClipRequest, output: OutputFormat, *, wait_for_room: bool = False
    ) -> tuple[audio.Clip, pb.ServedBy]:
        """Generates and encodes one clip, counting it in the metrics either way."""
        metrics = self._server.metrics
        try:
            scheduled = await self._server.scheduler.run(clip, wait_for_room=wait_for_room)
            encoded = await asyncio.to_thread(
                audio.encode, scheduled.output.samples, scheduled.output.sample_rate_hz,
                output.encoding, output.sample_rate_hz,
            )
        except asyncio.CancelledError:
            metrics.observe_clip(grpc.StatusCode.CANCELLED.name)
            raise
        except Exception as exc:
            metrics.observe_clip(status_of(exc)[0].name)
            raise
        metrics.observe_clip(
            grpc.StatusCode.OK.name, device=scheduled.device, text=clip.text, audio_seconds=encoded.duration_seconds
        )
        return encoded, self._served_by(scheduled)

    async def _synthesize(self, request: pb.SynthesizeRequest, *, wait_for_room: bool) -> pb.SynthesizeResponse:
        clip, output = self._server.validator.clip(request)
        encoded, served_by = await self._clip(clip, output, wait_for_room=wait_for_room)
        return pb.SynthesizeResponse(
            request_id=request.request_id,
            audio=encoded.data,
            encoding=PROTO_ENCODINGS[encoded.encoding],
            sample_rate_hz=encoded.sample_rate_hz,
            sample_count=encoded.sample_count,
            duration_seconds=encoded.duration_seconds,
            served_by=served_by,
        )

    async def Synthesize(self, request, context):
        async with self._rpc("Synthesize", context):
            self._require_ready()
            return await self._synthesize(request, wait_for_room=False)

    async def StreamSynthesize(self, request, context):
        async with self._rpc("StreamSynthesize", context):
            self._require_ready()
            started = time.monotonic()
            # Sectioning a long text takes a while (~0.4 s for 100k characters): not on the event loop.
            job = await asyncio.to_thread(self._server.validator.stream, request)
            yield pb.StreamSynthesizeResponse(
                start=pb.StreamStart(
                    request_id=request.request_id,
                    encoding=PROTO_ENCODINGS[job.output.encoding],
                    sample_rate_hz=job.output.sample_rate_hz,
                    section_count=len(job.sections),
                    model=self._server.settings.model,
                    voice=job.voice,
                )
            )
            end = pb.StreamEnd(request_id=request.request_id, section_count=len(job.sections))
            # Enough sections in flight to keep every replica busy, and no more, so one long text neither
            # idles the devices nor fills the queue; they are sent in order as each one is ready.
            window = max(1, self._server.scheduler.capacity)
            running: collections.deque[asyncio.Task[pb.StreamSection]] = collections.deque()
            sections = iter(enumerate(job.sections))
            try:
                while True:
                    for index, text in sections:
                        clip = ClipRequest(text=text, voice=job.voice, params=job.params)
                        running.append(asyncio.create_task(self._section(index, clip, job.output)))
                        if len(running) >= window:
                            break
                    if not running:
                        break
                    section = await running.popleft()
                    if section.HasField("error"):
                        end.failed_count += 1
                    end.total_sample_count += section.sample_count
                    end.total_duration_seconds += section.duration_seconds
                    yield pb.StreamSynthesizeResponse(section=section)
            finally:
                for task in running:
                    task.cancel()
            end.wall_seconds = time.monotonic() - started
            yield pb.StreamSynthesizeResponse(end=end)

    async def _section(self, index: int, clip: ClipRequest, output: OutputFormat) -> pb.StreamSection:
        try:
            encoded, served_by = await self._clip(clip, output, wait_for_room=True)
        except Exception as exc:  # noqa: BLE001 - reported in the stream; the other sections go on
            logger.warning("section %d failed: %s", index, exc, exc_info=not isinstance(exc, RequestError))
            return pb.StreamSection(index=index, text=clip.text, error=item_error(exc))
        return pb.StreamSection(
            index=index,
            text=clip.text,
            audio=encoded.data,
            sample_count=encoded.sample_count,
            duration_seconds=encoded.duration_seconds,
            served_by=served_by,
        )

    async def SynthesizeBatch(self, request_iterator, context):
        async with self._rpc("SynthesizeBatch", context):
            self._require_ready()
            results: asyncio.Queue[pb.SynthesizeBatchResponse | None] = asyncio.Queue()
            # Reading stops while this many are in flight, so a fast sender is held back by gRPC flow control.
            slots = asyncio.Semaphore(max(1, self._server.scheduler.capacity))
            active_ids: set[str] = set()
            tasks: set[asyncio.Task[None]] = set()

            async def run_item(request: pb.SynthesizeRequest) -> None:
                try:
                    result = await self._synthesize(request, wait_for_room=True)
                    results.put_nowait(pb.SynthesizeBatchResponse(request_id=request.request_id, result=result))
                except Exception as exc:  # noqa: BLE001 - reported in the stream; the stream goes on
                    if not isinstance(exc, RequestError):
                        logger.warning("batch item %s failed", request.request_id, exc_info=True)
                    results.put_nowait(pb.SynthesizeBatchResponse(request_id=request.request_id, error=item_error(exc)))
                finally:
                    active_ids.discard(request.request_id)
                    slots.release()

            async def read() -> None:
                try:
                    async for request in request_iterator:
                        if not request.request_id or request.request_id in active_ids:
                            problem = "is missing" if not request.request_id else "is already in flight in this stream"
                            error = RequestError(
                                grpc.StatusCode.INVALID_ARGUMENT,
                                f"request_id {problem}; SynthesizeBatch needs a distinct request_id per request",
                            )
                            results.put_nowait(
                                pb.SynthesizeBatchResponse(request_id=request.request_id, error=item_error(error))
                            )
                            continue
                        await slots.acquire()
                        active_ids.add(request.request_id)
                        task = asyncio.create_task(run_item(request))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    while tasks:
                        await asyncio.wait(set(tasks))
                finally:
                    results.put_nowait(None)

            reader = asyncio.create_task(read())
            try:
                while (response := await results.get()) is not None:
                    yield response
                await reader  # raises what the reader raised
            finally:
                reader.cancel()
                for task in list(tasks):
                    task.cancel()

    async def ListVoices(self, request, context):
        async with self._rpc("ListVoices", context):
            self._require_ready()
            voices = self._server.voices
            return pb.ListVoicesResponse(voices=[pb.Voice(name=v, language=voice_language(v)) for v in voices])

    async def GetServerInfo(self, request, context):
        async with self._rpc("GetServerInfo", context):
            return self._server.info()
