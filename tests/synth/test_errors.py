"""Bad input, overload and a server that is not ready: each refused with a clear status, and the server goes on."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc
from chorus_synth.server import State

from .conftest import request, start_server, wait_for_state

INVALID = grpc.StatusCode.INVALID_ARGUMENT
BAD_REQUESTS = {
    "empty text": (request(""), INVALID, "text is empty"),
    "blank text": (request(" \n\t "), INVALID, "text is empty"),
    "text over the limit": (request("word " * 300), INVALID, "at most 1000"),
    "too many tokens": (request("ab " * 300), INVALID, "Bark reads at most 256"),
    "unknown voice": (request(voice="v2/en_speaker_99"), grpc.StatusCode.NOT_FOUND, "v2/en_speaker_6"),
    "path as voice": (request(voice="../../etc/passwd"), grpc.StatusCode.NOT_FOUND, "unknown voice"),
    "unknown encoding": (request(encoding=42), INVALID, "AUDIO_ENCODING_MP3"),
    "unsupported rate": (request(sample_rate_hz=12345), INVALID, "12345"),
    "rate not for opus": (request(sample_rate_hz=44100, encoding=pb.AUDIO_ENCODING_OGG_OPUS), INVALID, "48000"),
    "zero temperature": (
        request(settings=pb.GenerationSettings(semantic_temperature=0)), INVALID, "semantic_temperature"),
    "nan temperature": (
        request(settings=pb.GenerationSettings(fine_temperature=float("nan"))), INVALID, "fine_temperature"),
    "clip over the cap": (request(settings=pb.GenerationSettings(max_seconds=60)), INVALID, "max_seconds"),
    "negative clip": (request(settings=pb.GenerationSettings(max_seconds=-1)), INVALID, "max_seconds"),
    "long request id": (request(request_id="x" * 500), INVALID, "request_id"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
async def test_bad_request_is_refused_and_the_server_keeps_serving(stub, name):
    bad, code, fragment = BAD_REQUESTS[name]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Synthesize(bad)
    assert caught.value.code() == code
    assert fragment in caught.value.details()
    reply = await stub.Synthesize(request())
    assert reply.sample_count > 0


@pytest.mark.parametrize("bad", [
    pb.StreamSynthesizeRequest(text=""),
    pb.StreamSynthesizeRequest(text="Hello.", max_section_words=1000),
    pb.StreamSynthesizeRequest(text="Hello.", voice="nobody"),
    pb.StreamSynthesizeRequest(text="Hello.", sample_rate_hz=7),
    pb.StreamSynthesizeRequest(text="x" * 200_000),
])
async def test_bad_stream_request_is_refused_before_any_audio(stub, bad):
    call = stub.StreamSynthesize(bad)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pytest.fail("no message is sent for a refused request")
    assert caught.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


async def test_overload_is_resource_exhausted_and_the_rest_finish():
    server = await start_server(max_batch=1, max_queued=1)
    try:
        await wait_for_state(server, State.READY)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = synth_pb2_grpc.SynthStub(channel)
            calls = [stub.Synthesize(request(f"Number {i}.")) for i in range(6)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
            served = [r for r in results if isinstance(r, pb.SynthesizeResponse)]
            assert refused and all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
            assert "retry later" in refused[0].details()
            assert len(served) >= 2 and all(r.sample_count > 0 for r in served)
            assert (await stub.Synthesize(request())).sample_count > 0
    finally:
        await server.stop(grace_s=1.0)


async def test_a_model_that_cannot_load_fails_the_server_with_a_reason():
    server = await start_server(model="random:nope")
    try:
        await wait_for_state(server, State.READY, State.FAILED)
        assert server.state is State.FAILED
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = synth_pb2_grpc.SynthStub(channel)
            info = await stub.GetServerInfo(pb.GetServerInfoRequest())
            assert info.state == pb.SERVER_STATE_FAILED
            assert "random:nope" in info.state_message and "random:tiny" in info.state_message
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Synthesize(request())
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "FAILED" in caught.value.details() and "random:nope" in caught.value.details()
    finally:
        await server.stop(grace_s=0)


async def test_hub_model_without_network_fails_and_is_not_replaced():
    server = await start_server(model="suno/bark-small")
    try:
        await wait_for_state(server, State.READY, State.FAILED)
        assert server.state is State.FAILED
        assert "suno/bark-small" in server.state_message
        assert server.scheduler is None
    finally:
        await server.stop(grace_s=0)


async def test_unknown_device_fails_the_server():
    server = await start_server(devices="cuda:3")
    try:
        assert server.state is State.FAILED
        assert "cuda:3" in server.state_message
    finally:
        await server.stop(grace_s=0)
