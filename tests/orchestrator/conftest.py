from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid

import pytest
from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer

from chorus_orchestrator.main import init
from chorus_orchestrator.settings import Settings
from chorus_synth.server import State, SynthServer
from chorus_synth.settings import Settings as SynthSettings

# moto accepts any credentials; these keep botocore from looking for real ones.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """One moto server (SQS, S3, DynamoDB) on a loopback port for the whole run; tests use unique names."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
async def sqs(moto_endpoint):
    async with get_session().create_client("sqs", region_name=REGION, endpoint_url=moto_endpoint) as client:
        yield client


@pytest.fixture
async def s3(moto_endpoint):
    async with get_session().create_client("s3", region_name=REGION, endpoint_url=moto_endpoint) as client:
        yield client


@pytest.fixture
async def dynamodb(moto_endpoint):
    async with get_session().create_client("dynamodb", region_name=REGION, endpoint_url=moto_endpoint) as client:
        yield client


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
