from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc
from chorus_synth.server import State, SynthServer
from chorus_synth.settings import Settings

# Random weights never choose to stop talking: every test clip is capped well under a second.
TEST_SETTINGS = Settings(
    model="random:tiny", devices="cpu", host="127.0.0.1", port=0, metrics_port=0, metrics_host="127.0.0.1",
    max_clip_seconds=0.5, max_batch=4, max_queued=32, drain_grace_s=5.0,
    # In-process replicas, so that tests can inject faults at the engine; test_workers.py covers worker processes.
    workers="thread",
)


async def start_server(**overrides) -> SynthServer:
    server = SynthServer(dataclasses.replace(TEST_SETTINGS, **overrides))
    await server.start()
    return server


async def wait_for_state(server: SynthServer, *states: State, timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while server.state not in states:
            await asyncio.sleep(0.02)


@pytest.fixture(scope="session")
async def synth_server():
    server = await start_server()
    await wait_for_state(server, State.READY, State.FAILED)
    assert server.state is State.READY, server.state_message
    yield server
    await server.stop(grace_s=1.0)


@pytest.fixture(scope="session")
async def channel(synth_server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{synth_server.port}") as channel:
        yield channel


@pytest.fixture(scope="session")
def stub(channel) -> synth_pb2_grpc.SynthStub:
    return synth_pb2_grpc.SynthStub(channel)


def request(text: str = "Hello there.", **fields) -> pb.SynthesizeRequest:
    fields.setdefault("voice", "v2/en_speaker_6")
    return pb.SynthesizeRequest(text=text, **fields)
