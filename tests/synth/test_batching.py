"""Dynamic batching on a real server: any voices share a batch; a lone request never waits for company."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc
from chorus_synth.server import State

from .conftest import request, start_server, wait_for_state

MAX_WAIT_MS = 3000


@pytest.fixture(scope="module")
async def batching_stub():
    server = await start_server(max_batch=4, max_wait_ms=MAX_WAIT_MS, max_clip_seconds=0.3)
    await wait_for_state(server, State.READY, State.FAILED)
    assert server.state is State.READY, server.state_message
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield synth_pb2_grpc.SynthStub(channel)
    await server.stop(grace_s=0)


async def test_an_idle_server_answers_a_lone_request_without_waiting_for_company(batching_stub):
    reply = await batching_stub.Synthesize(request())
    assert reply.served_by.batch_size == 1
    assert reply.served_by.queue_seconds < MAX_WAIT_MS / 1000 / 10


async def test_requests_in_different_voices_share_batches(batching_stub):
    voices = [f"v2/en_speaker_{i}" for i in range(10)]
    replies = await asyncio.gather(*(
        batching_stub.Synthesize(request(f"Line {i}.", voice=voice, request_id=voice))
        for i, voice in enumerate(voices)))
    assert sorted(r.request_id for r in replies) == sorted(voices)
    assert max(r.served_by.batch_size for r in replies) > 1
    assert all(r.sample_count > 0 for r in replies)


async def test_a_seeded_request_is_reproducible_in_a_crowd(batching_stub):
    seeded = request("Same every time.", settings=pb.GenerationSettings(seed=7), encoding=pb.AUDIO_ENCODING_PCM_S16LE)
    alone = await batching_stub.Synthesize(seeded)
    crowd = await asyncio.gather(
        batching_stub.Synthesize(seeded),
        *(batching_stub.Synthesize(request(f"Other {i}.", voice=f"v2/en_speaker_{i}")) for i in range(5)))
    assert crowd[0].audio == alone.audio
    assert crowd[0].served_by.batch_size == 1
