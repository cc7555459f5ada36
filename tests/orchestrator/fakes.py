"""Fault-injecting fake synth servers: a real grpc.aio server on loopback whose answers a test sets.

Only for faults a real synth server cannot be made to produce (UNAVAILABLE on demand, a hang past the deadline,
a fixed service time, a chosen capacity, a kill mid-call). The happy path is tested against the real server.
"""

from __future__ import annotations

import asyncio
import enum

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Synth"].full_name
SAMPLE_RATE_HZ = 24000
SAMPLE_COUNT = 240  # 10 ms of silence


class Mode(enum.Enum):
    ANSWER = "answer"  # sleep delay_s, then a small valid clip
    UNAVAILABLE = "unavailable"  # abort with UNAVAILABLE
    HANG = "hang"  # never answer: the caller's deadline ends it
    INVALID_ARGUMENT = "invalid_argument"  # the request itself is refused


class _Servicer(synth_pb2_grpc.SynthServicer):
    def __init__(self, fake: FakeSynth) -> None:
        self._fake = fake

    async def Synthesize(self, request, context):
        fake = self._fake
        fake.calls += 1
        fake.in_flight += 1
        fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        fake.call_started.set()
        try:
            if fake.mode is Mode.UNAVAILABLE:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "fake: unavailable")
            if fake.mode is Mode.INVALID_ARGUMENT:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "fake: text must not be empty")
            if fake.mode is Mode.HANG:
                await asyncio.Event().wait()
            await asyncio.sleep(fake.delay_s)
            fake.answered += 1
            return pb.SynthesizeResponse(
                request_id=request.request_id,
                audio=b"\0\0" * SAMPLE_COUNT,
                encoding=pb.AUDIO_ENCODING_PCM_S16LE,
                sample_rate_hz=SAMPLE_RATE_HZ,
                sample_count=SAMPLE_COUNT,
                duration_seconds=SAMPLE_COUNT / SAMPLE_RATE_HZ,
                served_by=pb.ServedBy(model="fake", device="cuda:0", gpu_model=fake.gpu_model, batch_size=1),
            )
        finally:
            fake.in_flight -= 1

    async def GetServerInfo(self, request, context):
        fake = self._fake
        return pb.ServerInfo(
            state=fake.state,
            model="fake",
            devices=[pb.Device(name="cuda:0", gpu_model=fake.gpu_model, memory_bytes=1 << 30)],
            capacity=fake.capacity,
        )


class FakeSynth:
    """One fake synth server. Set `mode`, `delay_s`, `capacity`, `state` at any time; `set_serving` for health."""

    def __init__(self, *, mode: Mode = Mode.ANSWER, delay_s: float = 0.0, capacity: int = 2,
                 serving: bool = True, gpu_model: str = "Fake GPU") -> None:
        self.mode = mode
        self.delay_s = delay_s
        self.capacity = capacity
        self.state = pb.SERVER_STATE_READY
        self.gpu_model = gpu_model
        self.calls = 0
        self.answered = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.call_started = asyncio.Event()
        self.port = 0
        self.host = ""
        self._serving = serving
        self._health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakeSynth:
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        synth_pb2_grpc.add_SynthServicer_to_server(_Servicer(self), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        await self.set_serving(self._serving)
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = self._server.add_insecure_port(bind)
        if self.port == 0:
            raise OSError(f"could not listen on {bind}")
        self.host = host
        await self._server.start()
        return self

    async def set_serving(self, serving: bool) -> None:
        self._serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self._health.set(service, status)

    async def stop(self, grace_s: float | None = 0) -> None:
        """`stop(0)` mid-call is how a test kills an endpoint: in-flight RPCs are cut off."""
        if self._server is not None:
            await self._server.stop(grace_s)
