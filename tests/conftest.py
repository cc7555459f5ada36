import os
import tempfile
import uuid

import pytest
from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer

# Tests never touch the network: the hub is off, and every model is random:tiny or a local directory.
# huggingface_hub reads these once, when it is imported: they are set here, before any test imports it.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="chorus-test-hf-")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

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
