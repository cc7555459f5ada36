from __future__ import annotations

import dataclasses

import botocore.exceptions
import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.awsrequest import AWSResponse

from chorus_orchestrator.results import ClipRecord, RecordError, ResultTable, ensure_table


@pytest.fixture
async def table(dynamodb, unique) -> str:
    name = f"clips-{unique}"
    await ensure_table(dynamodb, name)
    return name


def make_record(section_index: int = 3, **changes: object) -> ClipRecord:
    record = ClipRecord(
        document_id="537716", section_index=section_index, text="It was a bright cold day in April.",
        voice="v2/en_speaker_6", location=f"s3://clips/537716/{section_index:05d}.mp3",
        audio_seconds=4.123456789012345, words=8, inference_seconds=0.1 + 0.2, queue_seconds=1e-7,
        gpu_model="NVIDIA H100 80GB HBM3", device="cuda:0", endpoint="10.0.0.7:50051", attempt=1,
        receive_count=2, recorded_at="2026-11-21T12:00:00.123456+00:00", section_count=40,
        sample_rate_hz=24000, encoding="mp3",
        extra={"title": "Nineteen Eighty-Four", "year": 1949, "rating": 4.5, "public_domain": False,
               "translator": None, "tags": ["novel", "dystopia", 3, 2.5], "source": {"shelf": {"row": 7}}},
    )
    return dataclasses.replace(record, **changes)


def error_response(code: str, status: int) -> tuple[AWSResponse, dict]:
    # A before-call handler's non-None return short-circuits the HTTP request: (http_response, parsed).
    parsed = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return AWSResponse("http://127.0.0.1/", status, {}, None), parsed


async def test_ensure_table_twice_is_fine(dynamodb, unique):
    name = f"clips-{unique}"
    await ensure_table(dynamodb, name)
    await ensure_table(dynamodb, name)
    described = (await dynamodb.describe_table(TableName=name))["Table"]
    assert described["TableStatus"] == "ACTIVE"
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert described["KeySchema"] == [{"AttributeName": "document_id", "KeyType": "HASH"},
                                      {"AttributeName": "section_index", "KeyType": "RANGE"}]


async def test_ensure_table_refuses_a_table_with_another_key(dynamodb, unique):
    name = f"other-{unique}"
    await dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    with pytest.raises(RecordError) as info:
        await ensure_table(dynamodb, name)
    assert not info.value.retryable


async def test_record_then_get_round_trips_every_field(dynamodb, table):
    results = ResultTable(dynamodb, table)
    record = make_record()
    await results.record(record)
    assert await results.get("537716", 3) == record


async def test_optional_fields_left_out_come_back_as_none(dynamodb, table):
    results = ResultTable(dynamodb, table)
    record = make_record(section_count=None, sample_rate_hz=None, encoding=None, extra={}, audio_seconds=2.0)
    await results.record(record)
    got = await results.get("537716", 3)
    assert got == record
    assert isinstance(got.audio_seconds, float)
    item = (await dynamodb.get_item(TableName=table, Key={"document_id": {"S": "537716"},
                                                          "section_index": {"N": "3"}}))["Item"]
    assert "encoding" not in item and "section_count" not in item


async def test_stored_item_is_plain_dynamodb_values(dynamodb, table):
    """What another client (boto3's resource layer, the console) would read from the item."""
    await ResultTable(dynamodb, table).record(make_record())
    item = (await dynamodb.get_item(TableName=table, Key={"document_id": {"S": "537716"},
                                                          "section_index": {"N": "3"}}))["Item"]
    plain = {name: TypeDeserializer().deserialize(value) for name, value in item.items()}
    assert plain["section_index"] == 3
    assert str(plain["inference_seconds"]) == "0.30000000000000004"
    assert plain["extra"]["source"] == {"shelf": {"row": 7}}
    assert item["extra"]["M"]["public_domain"] == {"BOOL": False}
    assert item["extra"]["M"]["translator"] == {"NULL": True}


async def test_get_missing_is_none(dynamodb, table):
    assert await ResultTable(dynamodb, table).get("nothing", 0) is None


async def test_recording_the_same_key_twice_keeps_one_item_with_newer_values(dynamodb, table):
    results = ResultTable(dynamodb, table)
    await results.record(make_record(attempt=1, receive_count=1, encoding="wav"))
    newer = make_record(attempt=2, receive_count=3, encoding=None, audio_seconds=5.5,
                        recorded_at="2026-11-21T12:05:00+00:00")
    await results.record(newer)
    assert await results.get("537716", 3) == newer
    scanned = await dynamodb.scan(TableName=table)
    assert scanned["Count"] == 1


async def test_sections_done_lists_indexes_in_order(dynamodb, table):
    results = ResultTable(dynamodb, table)
    for index in (10, 2, 0, 7):
        await results.record(make_record(section_index=index))
    await results.record(make_record(section_index=1, document_id="other"))
    assert await results.sections_done("537716") == [0, 2, 7, 10]
    assert await results.sections_done("other") == [1]
    assert await results.sections_done("none") == []


async def test_transient_failure_is_retried(dynamodb, table):
    calls = 0

    def throttle_twice(**_):
        nonlocal calls
        calls += 1
        if calls == 1:
            return error_response("ProvisionedThroughputExceededException", 400)
        if calls == 2:
            return error_response("InternalServerError", 500)
        return None

    dynamodb.meta.events.register("before-call.dynamodb.PutItem", throttle_twice)
    results = ResultTable(dynamodb, table, backoff_s=0.001)
    await results.record(make_record())
    assert calls == 3
    assert await results.get("537716", 3) == make_record()


async def test_persistent_throttling_gives_up_as_retryable(dynamodb, table):
    calls = 0

    def always_throttled(**_):
        nonlocal calls
        calls += 1
        return error_response("ThrottlingException", 400)

    dynamodb.meta.events.register("before-call.dynamodb.PutItem", always_throttled)
    with pytest.raises(RecordError) as info:
        await ResultTable(dynamodb, table, max_attempts=3, backoff_s=0.001).record(make_record())
    assert info.value.retryable
    assert calls == 3


async def test_connection_error_is_retried(dynamodb, table):
    calls = 0

    def unreachable_once(**_):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    dynamodb.meta.events.register("before-call.dynamodb.PutItem", unreachable_once)
    await ResultTable(dynamodb, table, backoff_s=0.001).record(make_record())
    assert calls == 2


async def test_missing_table_is_not_retried(dynamodb, unique):
    calls = 0

    def count(**_):
        nonlocal calls
        calls += 1

    dynamodb.meta.events.register("before-call.dynamodb.PutItem", count)
    with pytest.raises(RecordError) as info:
        await ResultTable(dynamodb, f"missing-{unique}", backoff_s=0.001).record(make_record())
    assert not info.value.retryable
    assert calls == 1
    assert isinstance(info.value.__cause__, botocore.exceptions.ClientError)


@pytest.mark.parametrize("extra", [{"nan": float("nan")}, {"blob": b"\x00"}, {"when": object()}])
async def test_values_dynamodb_cannot_hold_are_refused_before_writing(dynamodb, table, extra):
    with pytest.raises(RecordError) as info:
        await ResultTable(dynamodb, table).record(make_record(extra=extra))
    assert not info.value.retryable
    assert await ResultTable(dynamodb, table).get("537716", 3) is None
