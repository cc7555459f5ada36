from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import botocore.exceptions
import pytest
from aiohttp import web
from botocore.awsrequest import AWSResponse

from chorus_orchestrator.storage import (
    ClipStore,
    StorageError,
    StoredClip,
    UploadNotAllowed,
    clip_key,
    ensure_bucket,
    s3_client_config,
)

REGION = "us-east-1"


@pytest.fixture
async def bucket(s3, unique) -> str:
    name = f"clips-{unique}"
    await ensure_bucket(s3, name, REGION)
    return name


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


class UploadServer:
    """A presigned-URL target on loopback answering scripted statuses: faults moto cannot produce."""

    def __init__(self) -> None:
        self.statuses: list[int] = []  # answered in order; 200 once they run out
        self.requests: list[tuple[str, bytes]] = []  # (content type, body) of each PUT
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.content_type, await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
async def upload_server() -> AsyncIterator[UploadServer]:
    server = UploadServer()
    app = web.Application()
    app.router.add_put("/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}/clips/1/00000.mp3?X-Amz-Signature=abc%2Fdef"
    yield server
    await runner.cleanup()


async def body_of(s3, bucket: str, key: str) -> tuple[str, bytes]:
    obj = await s3.get_object(Bucket=bucket, Key=key)
    async with obj["Body"] as stream:
        return obj["ContentType"], await stream.read()


def test_clip_key_is_zero_padded_and_deterministic():
    assert clip_key("clips/", "537716", 3, "mp3") == "clips/537716/00003.mp3"
    assert clip_key("", "doc", 12345, "wav") == "doc/12345.wav"


def test_s3_compatible_config_limits_checksums_and_uses_path_style():
    config = s3_client_config(s3_compatible=True)
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.s3 == {"addressing_style": "path"}
    assert config.retries["mode"] == "standard"
    plain = s3_client_config(s3_compatible=False)
    assert plain.retries["mode"] == "standard"
    assert plain.request_checksum_calculation != "when_required"


async def test_s3_compatible_config_sends_path_style_requests_without_crc(moto_endpoint, bucket):
    from aiobotocore.session import get_session

    sent: list[tuple[str, dict[str, str]]] = []

    def capture(request, **_):
        sent.append((request.url, {k.lower(): v for k, v in request.headers.items()}))

    endpoint = moto_endpoint
    config = s3_client_config(s3_compatible=True)
    async with get_session().create_client("s3", region_name=REGION, endpoint_url=endpoint,
                                           config=config) as client, aiohttp.ClientSession() as session:
        client.meta.events.register("before-send.s3.PutObject", capture)
        store = ClipStore(client, session, bucket=bucket)
        await store.put(b"ID3", content_type="audio/mpeg", key="a/00000.mp3")
        assert await body_of(client, bucket, "a/00000.mp3") == ("audio/mpeg", b"ID3")
    (url, headers), = sent
    assert url.startswith(f"{endpoint}/{bucket}/a/00000.mp3")
    assert not any("checksum" in name for name in headers)


async def test_put_to_bucket_stores_bytes_content_type_and_metadata(s3, http, bucket):
    store = ClipStore(s3, http, bucket=bucket)
    key = clip_key("clips/", "537716", 3, "mp3")
    clip = await store.put(b"\xff\xfbaudio", content_type="audio/mpeg", key=key,
                           metadata={"voice": "v2/en_6"})
    assert clip == StoredClip(f"s3://{bucket}/clips/537716/00003.mp3")
    assert await body_of(s3, bucket, key) == ("audio/mpeg", b"\xff\xfbaudio")
    head = await s3.head_object(Bucket=bucket, Key=key)
    assert head["Metadata"] == {"voice": "v2/en_6"}


async def test_redelivered_put_overwrites_the_same_object(s3, http, bucket):
    store = ClipStore(s3, http, bucket=bucket)
    await store.put(b"first", content_type="audio/wav", key="d/00001.wav")
    await store.put(b"second", content_type="audio/wav", key="d/00001.wav")
    assert await body_of(s3, bucket, "d/00001.wav") == ("audio/wav", b"second")
    listed = await s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["d/00001.wav"]


async def test_exists(s3, http, bucket):
    store = ClipStore(s3, http, bucket=bucket)
    assert not await store.exists("d/00000.mp3")
    await store.put(b"x", content_type="audio/mpeg", key="d/00000.mp3")
    assert await store.exists("d/00000.mp3")


async def test_exists_raises_on_errors_other_than_not_found(s3, http, bucket):
    # HEAD answers have no body, so S3 (and moto) give only "403"/"404"; a missing bucket reads as a
    # missing key, so only an error other than 404 can be shown here.
    def forbidden(params, **_):
        error = {"Error": {"Code": "403", "Message": "Forbidden"},
                 "ResponseMetadata": {"HTTPStatusCode": 403}}
        return AWSResponse(params["url"], 403, {}, None), error

    s3.meta.events.register("before-call.s3.HeadObject", forbidden)
    store = ClipStore(s3, http, bucket=bucket, backoff_s=0.001)
    with pytest.raises(StorageError) as info:
        await store.exists("d/00000.mp3")
    assert not info.value.retryable


async def test_put_needs_exactly_one_destination(s3, http, bucket):
    store = ClipStore(s3, http, bucket=bucket)
    with pytest.raises(ValueError):
        await store.put(b"x", content_type="audio/mpeg")
    with pytest.raises(ValueError):
        await store.put(b"x", content_type="audio/mpeg", key="k", upload_url="http://127.0.0.1/k")


async def test_put_through_presigned_url_on_an_allowed_host(s3, http, bucket):
    url = await s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "p/00002.mp3"})
    store = ClipStore(s3, http, bucket=None, upload_hosts=["127.0.0.1"])
    clip = await store.put(b"presigned", content_type="audio/mpeg", upload_url=url)
    assert clip.location == url.split("?")[0]
    assert "?" not in clip.location
    assert await body_of(s3, bucket, "p/00002.mp3") == ("audio/mpeg", b"presigned")


async def test_presigned_url_on_a_host_not_allowed_uploads_nothing(s3, http, bucket):
    url = await s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "p/00003.mp3"})
    for hosts in ([], ["localhost"], ["127.0.0.10"]):
        store = ClipStore(s3, http, bucket=bucket, upload_hosts=hosts)
        with pytest.raises(UploadNotAllowed) as info:
            await store.put(b"nope", content_type="audio/mpeg", upload_url=url)
        assert not info.value.retryable
        assert isinstance(info.value, StorageError)
    assert not await ClipStore(s3, http, bucket=bucket).exists("p/00003.mp3")


@pytest.mark.parametrize("url", [
    "ftp://127.0.0.1/clip.mp3",
    "file://127.0.0.1/etc/passwd",
    "//127.0.0.1/clip.mp3",
    "http://127.0.0.1@evil.example/clip.mp3",  # userinfo: the host is evil.example
    "http://[::1/clip.mp3",
])
async def test_upload_url_refused_before_any_request(s3, http, url, upload_server):
    store = ClipStore(s3, http, bucket=None, upload_hosts=["127.0.0.1"])
    with pytest.raises(UploadNotAllowed):
        await store.put(b"x", content_type="audio/mpeg", upload_url=url)
    assert upload_server.requests == []


async def test_presigned_put_retries_503_then_succeeds(s3, http, upload_server):
    upload_server.statuses = [503, 503]
    store = ClipStore(s3, http, bucket=None, upload_hosts=["127.0.0.1"], backoff_s=0.001)
    clip = await store.put(b"clip", content_type="audio/ogg", upload_url=upload_server.url)
    assert clip.location == upload_server.url.split("?")[0]
    assert upload_server.requests == [("audio/ogg", b"clip")] * 3


async def test_presigned_put_gives_up_after_max_attempts_as_retryable(s3, http, upload_server):
    upload_server.statuses = [500, 502, 429, 503, 200]
    store = ClipStore(s3, http, bucket=None, upload_hosts=["127.0.0.1"], max_attempts=4, backoff_s=0.001)
    with pytest.raises(StorageError) as info:
        await store.put(b"clip", content_type="audio/mpeg", upload_url=upload_server.url)
    assert info.value.retryable
    assert len(upload_server.requests) == 4


async def test_presigned_put_403_is_not_retried(s3, http, upload_server):
    upload_server.statuses = [403]
    store = ClipStore(s3, http, bucket=None, upload_hosts=["127.0.0.1"], backoff_s=0.001)
    with pytest.raises(StorageError) as info:
        await store.put(b"clip", content_type="audio/mpeg", upload_url=upload_server.url)
    assert not info.value.retryable
    assert len(upload_server.requests) == 1


async def test_presigned_put_connection_refused_is_retryable(s3, http):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = ClipStore(s3, http, bucket=None, upload_hosts=["127.0.0.1"], max_attempts=2, backoff_s=0.001)
    with pytest.raises(StorageError) as info:
        await store.put(b"clip", content_type="audio/mpeg", upload_url=f"http://127.0.0.1:{port}/k")
    assert info.value.retryable
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectionError)


async def test_put_object_retries_throttling(s3, http, bucket):
    calls: list[str] = []

    def slow_down_once(params, **_):
        # A before-call handler's non-None return short-circuits the HTTP request: (http_response, parsed).
        calls.append(params["url_path"])
        if len(calls) == 1:
            error = {"Error": {"Code": "SlowDown", "Message": "Reduce your request rate."},
                     "ResponseMetadata": {"HTTPStatusCode": 503}}
            return AWSResponse(params["url"], 503, {}, None), error
        return None

    s3.meta.events.register("before-call.s3.PutObject", slow_down_once)
    store = ClipStore(s3, http, bucket=bucket, backoff_s=0.001)
    await store.put(b"after retry", content_type="audio/mpeg", key="r/00000.mp3")
    assert len(calls) == 2
    assert await body_of(s3, bucket, "r/00000.mp3") == ("audio/mpeg", b"after retry")


async def test_put_object_retries_connection_errors_then_gives_up(s3, http, bucket):
    calls = 0

    def unreachable(**_):
        nonlocal calls
        calls += 1
        raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    s3.meta.events.register("before-call.s3.PutObject", unreachable)
    store = ClipStore(s3, http, bucket=bucket, max_attempts=3, backoff_s=0.001)
    with pytest.raises(StorageError) as info:
        await store.put(b"x", content_type="audio/mpeg", key="r/00001.mp3")
    assert info.value.retryable
    assert calls == 3


async def test_put_object_access_denied_is_not_retried(s3, http, bucket):
    calls = 0

    def denied(params, **_):
        nonlocal calls
        calls += 1
        error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                 "ResponseMetadata": {"HTTPStatusCode": 403}}
        return AWSResponse(params["url"], 403, {}, None), error

    s3.meta.events.register("before-call.s3.PutObject", denied)
    store = ClipStore(s3, http, bucket=bucket, backoff_s=0.001)
    with pytest.raises(StorageError) as info:
        await store.put(b"x", content_type="audio/mpeg", key="r/00002.mp3")
    assert not info.value.retryable
    assert calls == 1
    assert isinstance(info.value.__cause__, botocore.exceptions.ClientError)


async def test_put_to_a_missing_bucket_is_permanent(s3, http, unique):
    store = ClipStore(s3, http, bucket=f"missing-{unique}", backoff_s=0.001)
    with pytest.raises(StorageError) as info:
        await store.put(b"x", content_type="audio/mpeg", key="k.mp3")
    assert not info.value.retryable


async def test_ensure_bucket_twice_keeps_the_bucket_and_its_objects(s3, http, bucket):
    await ClipStore(s3, http, bucket=bucket).put(b"kept", content_type="audio/mpeg", key="k.mp3")
    await ensure_bucket(s3, bucket, REGION)
    assert await body_of(s3, bucket, "k.mp3") == ("audio/mpeg", b"kept")


async def test_ensure_bucket_outside_us_east_1(moto_endpoint, unique):
    from aiobotocore.session import get_session

    session = get_session()
    async with session.create_client("s3", region_name="eu-west-1", endpoint_url=moto_endpoint) as client:
        name = f"clips-eu-{unique}"
        await ensure_bucket(client, name, "eu-west-1")
        await ensure_bucket(client, name, "eu-west-1")
        location = await client.get_bucket_location(Bucket=name)
        assert location["LocationConstraint"] == "eu-west-1"
