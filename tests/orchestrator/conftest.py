from __future__ import annotations

import asyncio
import dataclasses

import pytest

from chorus_orchestrator.main import init
from chorus_orchestrator.settings import Settings
from chorus_synth.server import State, SynthServer
from chorus_synth.settings import Settings as SynthSettings

from ..conftest import REGION


@pytest.fixture(scope="session")
async def synth():
    # Every clip capped at 0.3 s: random weights never stop talking.
    server = SynthServer(SynthSettings(
        model="random:tiny", devices="cpu", host="127.0.0.1", port=0, metrics_port=0, metrics_host="127.0.0.1",
        max_clip_seconds=0.3, max_batch=4, max_queued=64, workers="thread",
    ))
    await server.start()
    async with asyncio.timeout(60):
        while server.state is State.STARTING:
            await asyncio.sleep(0.02)
    assert server.state is State.READY, server.state_message
    yield server
    await server.stop(grace_s=0)


@pytest.fixture
async def world(moto_endpoint, synth, unique, sqs):
    """A queue, dead-letter queue, bucket and table made by `chorus-orchestrator init`, and settings to run on them."""
    account_url = f"{moto_endpoint}/123456789012"
    settings = Settings(
        command="run", queue_url=f"{account_url}/jobs-{unique}", dlq_url=f"{account_url}/jobs-{unique}-dlq",
        bucket=f"clips-{unique}", prefix="clips/", table=f"results-{unique}", synth=(f"127.0.0.1:{synth.port}",),
        region=REGION, endpoint_url=moto_endpoint, metrics_port=0, visibility_timeout_s=30, call_timeout_s=30,
        release_backoff_s=1, max_release_backoff_s=2, drain_grace_s=10, upload_hosts=("127.0.0.1",),
    )
    await init(dataclasses.replace(settings, command="init"))
    urls = (await sqs.get_queue_url(QueueName=f"jobs-{unique}"))["QueueUrl"]
    return dataclasses.replace(settings, queue_url=urls)
