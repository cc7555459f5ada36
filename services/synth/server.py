"""The synth server: lifecycle (STARTING, READY, DRAINING, FAILED), health, reflection, metrics, SIGTERM drain."""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import importlib.metadata
import logging
import signal
import socket
import sys
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc
from chorus_synth import audio
from chorus_synth.devices import DeviceInfo, describe, parse_devices
from chorus_synth.engine import BarkEngine
from chorus_synth.metrics import SynthMetrics
from chorus_synth.models import TokenCounter, load_bark
from chorus_synth.requests import PROTO_ENCODINGS, Limits, RequestError, RequestValidator
from chorus_synth.scheduler import Scheduler
from chorus_synth.service import SynthService
from chorus_synth.settings import Settings, parse_settings
from chorus_synth.workers import ProcessEngine, WorkerReady, WorkerSpec, cpu_threads

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Synth"].full_name
# Both ends keep gRPC's default 4 MiB message limit: one clip is at most ~1.5 MB (15.4 s of 16-bit WAV at 48 kHz).
GRPC_OPTIONS = [
    # Another server already on the port must be an error, not a silent second listener.
    ("grpc.so_reuseport", 0),
]


class State(enum.Enum):
    STARTING = pb.SERVER_STATE_STARTING
    READY = pb.SERVER_STATE_READY
    DRAINING = pb.SERVER_STATE_DRAINING
    FAILED = pb.SERVER_STATE_FAILED


def _version() -> str:
    try:
        return importlib.metadata.version("chorus-tts")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class SynthServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hostname = socket.gethostname()
        self.state = State.STARTING
        self.state_message = "loading the model"
        self.devices: list[DeviceInfo] = []
        self.voices: tuple[str, ...] = ()
        self.native_rate_hz = 0
        self.scheduler: Scheduler | None = None
        self._engines: list[BarkEngine | ProcessEngine] = []
        self.validator: RequestValidator | None = None
        self.port = 0
        self.metrics_port = 0
        self._health = health.aio.HealthServicer()
        self._grpc = grpc.aio.server(options=GRPC_OPTIONS)
        self._metrics_http = None
        self._loading: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        # RPCs being handled; the drain waits for it to reach zero.
        self.active_rpcs = 0

    async def start(self) -> None:
        torch_devices = []
        try:
            torch_devices = parse_devices(self.settings.devices)
            self.devices = [describe(d) for d in torch_devices]
        except ValueError as exc:
            self._fail(str(exc))
        self.metrics = SynthMetrics(self.settings.model, self.devices)
        self._metrics_http, _ = start_http_server(
            self.settings.metrics_port, addr=self.settings.metrics_host, registry=self.metrics.registry
        )
        self.metrics_port = self._metrics_http.server_port

        synth_pb2_grpc.add_SynthServicer_to_server(SynthService(self), self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._grpc,
        )
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{self.settings.host}:{self.settings.port}"
        self.port = self._grpc.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"could not listen on {address}")
        await self._grpc.start()
        logger.info("listening on %s:%d, metrics on %s:%d", self.settings.host, self.port,
                    self.settings.metrics_host, self.metrics_port)
        if self.state is State.STARTING:
            self._loading = asyncio.create_task(self._load(torch_devices))

    async def _load(self, torch_devices) -> None:
        started = time.monotonic()
        logger.info("loading %s on %s", self.settings.model, ", ".join(d.name for d in self.devices))
        load = self._start_workers if self.settings.workers == "process" else self._load_replicas
        try:
            engines, replica, token_count = await asyncio.to_thread(load, torch_devices)
        except Exception as exc:  # noqa: BLE001 - any load failure is a FAILED server, never another model
            logger.exception("could not load %s", self.settings.model)
            self._fail(str(exc))
            return
        self._engines = engines
        self.voices = replica.voices
        self.native_rate_hz = replica.sample_rate_hz
        if self.settings.default_voice not in self.voices:
            self._fail(f"--default-voice {self.settings.default_voice!r} is not a voice of {self.settings.model}")
            return
        limits = Limits(
            max_text_chars=self.settings.max_text_chars,
            max_stream_text_chars=self.settings.max_stream_text_chars,
            max_clip_seconds=self.settings.max_clip_seconds,
            section_words=self.settings.section_words,
            default_voice=self.settings.default_voice,
        )
        self.validator = RequestValidator(limits, self.voices, self.native_rate_hz, token_count)
        self.scheduler = Scheduler(
            engines, max_batch=self.settings.max_batch, max_queued=self.settings.max_queued, metrics=self.metrics,
            max_wait_ms=self.settings.max_wait_ms,
        )
        self.scheduler.start()
        if self.state is not State.STARTING:  # SIGTERM came while loading
            return
        self.state, self.state_message = State.READY, ""
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.metrics.ready.set(1)
        logger.info("ready: %s on %d replica(s) in %.1f s, capacity %d", self.settings.model, len(engines),
                    time.monotonic() - started, self.scheduler.capacity)

    def _load_replicas(self, torch_devices):
        """--workers thread: every replica in this process, each driven by a thread of its own."""
        engines = []
        for device, info in zip(torch_devices, self.devices):
            loaded = load_bark(self.settings.model, device)
            logger.info("replica on %s (%s): attention %s", info.name, info.gpu_model, loaded.attn_implementation)
            engine = BarkEngine(loaded, info)
            if self.settings.warmup:
                engine.warm_up()
            engines.append(engine)
        first = engines[0].loaded
        return engines, WorkerReady(first.voices, first.sample_rate_hz, first.attn_implementation), first.token_count

    def _start_workers(self, torch_devices):
        """--workers process: a worker process per replica, started together; this process keeps only a tokenizer."""
        cpu_workers = sum(device.type == "cpu" for device in torch_devices)
        engines = [
            ProcessEngine(WorkerSpec(self.settings.model, str(device), warmup=self.settings.warmup,
                                     threads=cpu_threads(cpu_workers) if device.type == "cpu" else None), info)
            for device, info in zip(torch_devices, self.devices)
        ]
        with concurrent.futures.ThreadPoolExecutor(len(engines)) as starting:
            started = [starting.submit(engine.start) for engine in engines]
            try:
                ready = [future.result() for future in started]
            except Exception:
                concurrent.futures.wait(started)
                for engine in engines:
                    engine.close()
                raise
        for engine, replica in zip(engines, ready):
            logger.info("replica on %s (%s) in worker %d: attention %s", engine.device_info.name,
                        engine.device_info.gpu_model, engine.pid, replica.attn_implementation)
        return engines, ready[0], TokenCounter(self.settings.model)

    def _fail(self, message: str) -> None:
        self.state, self.state_message = State.FAILED, message
        logger.error("server FAILED: %s", message)

    async def _set_health(self, status) -> None:
        for service in ("", SERVICE_NAME):
            await self._health.set(service, status)

    def require_serving(self) -> None:
        if self.state is not State.READY:
            detail = f": {self.state_message}" if self.state_message else ""
            raise RequestError(grpc.StatusCode.UNAVAILABLE, f"server is {self.state.name}{detail}")

    def info(self) -> pb.ServerInfo:
        capacity = self.scheduler.capacity if self.scheduler else 0
        return pb.ServerInfo(
            state=self.state.value,
            state_message=self.state_message,
            model=self.settings.model,
            devices=[pb.Device(name=d.name, gpu_model=d.gpu_model, memory_bytes=d.memory_bytes) for d in self.devices],
            capacity=capacity,
            max_queued=self.settings.max_queued,
            version=_version(),
            native_sample_rate_hz=self.native_rate_hz,
            sample_rates_hz=audio.SAMPLE_RATES_HZ,
            encodings=list(PROTO_ENCODINGS.values()),
            max_text_chars=self.settings.max_text_chars,
            max_stream_text_chars=self.settings.max_stream_text_chars,
            max_clip_seconds=self.settings.max_clip_seconds,
            hostname=self.hostname,
        )

    def begin_drain(self, grace_s: float | None = None) -> asyncio.Task[None]:
        """Stops taking requests and lets those in flight finish within the grace period; idempotent."""
        if self._stopping is None:
            grace = self.settings.drain_grace_s if grace_s is None else grace_s
            self._stopping = asyncio.create_task(self._drain(grace))
        return self._stopping

    async def stop(self, grace_s: float | None = None) -> None:
        await self.begin_drain(grace_s)

    async def _drain(self, grace_s: float) -> None:
        logger.info("draining: %d RPC(s) in flight, %.0f s grace", self.active_rpcs, grace_s)
        if self.state is not State.FAILED:
            self.state, self.state_message = State.DRAINING, "shutting down"
        self.metrics.ready.set(0)
        await self._health.enter_graceful_shutdown()
        deadline = time.monotonic() + grace_s
        while self.active_rpcs and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self._grpc.stop(max(0.0, deadline - time.monotonic()))
        if self._loading is not None:
            self._loading.cancel()
        if self.scheduler is not None:
            await self.scheduler.close()
        for engine in self._engines:
            if isinstance(engine, ProcessEngine):
                await asyncio.to_thread(engine.close)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        logger.info("stopped")

    async def wait_for_termination(self) -> None:
        await self._grpc.wait_for_termination()
        if self._stopping is not None:
            await self._stopping


async def serve(settings: Settings) -> None:
    server = SynthServer(settings)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.begin_drain)
    await server.wait_for_termination()


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
