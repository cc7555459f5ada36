"""Fixtures shared by the clients' tests: one moto server (SQS, S3, DynamoDB) on loopback for the whole run, and
aiobotocore clients for it. Tests make their own queues, buckets and tables with `unique` in the name."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer

# moto accepts any credentials; these keep botocore from looking for real ones.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
REGION = "us-east-1"
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
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
