"""One worker process per device: two CPU workers; killing one mid-request loses no request, and both serve after."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc
import pytest

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc
from chorus_synth.server import State

from .conftest import request, start_server, wait_for_state


@pytest.fixture(scope="module")
async def two_workers():
    server = await start_server(workers="process", devices="cpu,cpu", max_batch=2, max_clip_seconds=1.0)
    await wait_for_state(server, State.READY, State.FAILED, timeout_s=120)
    assert server.state is State.READY, server.state_message
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield server, synth_pb2_grpc.SynthStub(channel)
    await server.stop(grace_s=5)
    assert all(not engine._process.is_alive() for engine in server._engines)


async def test_two_workers_each_in_its_own_process_serve_requests(two_workers):
    server, stub = two_workers
    pids = {engine.pid for engine in server._engines}
    assert len(pids) == 2 and os.getpid() not in pids
    info = await stub.GetServerInfo(pb.GetServerInfoRequest())
    assert [d.name for d in info.devices] == ["cpu", "cpu"] and info.capacity == 4
    replies = await asyncio.gather(*(stub.Synthesize(request(f"Hello {i}.", voice=f"v2/en_speaker_{i}"))
                                     for i in range(6)))
    assert all(r.sample_count > 0 for r in replies)


async def test_cpu_workers_start_with_a_short_openmp_spin(two_workers):
    """libgomp reads GOMP_SPINCOUNT when it loads: it must be in the environment a CPU worker starts with."""
    server, _ = two_workers
    expected = os.environ.get("GOMP_SPINCOUNT", "1000").encode()  # an operator's own value is kept
    for engine in server._engines:
        environment = Path(f"/proc/{engine.pid}/environ").read_bytes().split(b"\0")
        assert b"GOMP_SPINCOUNT=" + expected in environment


async def test_killing_a_worker_mid_request_loses_nothing_and_both_serve_after(two_workers):
    server, stub = two_workers
    engines = server._engines
    long_request = asyncio.ensure_future(
        stub.Synthesize(request("A longer one.", settings=pb.GenerationSettings(max_seconds=1.0))))
    async with asyncio.timeout(30):
        while not any(engine.busy for engine in engines):
            await asyncio.sleep(0.01)
    victim = next(engine for engine in engines if engine.busy)
    os.kill(victim.pid, signal.SIGKILL)
    reply = await long_request
    assert reply.sample_count > 0
    async with asyncio.timeout(120):
        while victim.restarts < 1 or victim.busy:
            await asyncio.sleep(0.05)
    before = [engine.batches for engine in engines]
    replies = await asyncio.gather(*(stub.Synthesize(request(f"After {i}.", voice=f"v2/de_speaker_{i}"))
                                     for i in range(8)))
    assert all(r.sample_count > 0 for r in replies)
    assert all(engine.batches > count for engine, count in zip(engines, before))
