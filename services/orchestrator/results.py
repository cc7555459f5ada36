"""Clip results in DynamoDB: one item per (document_id, section_index), written after the clip is stored.

Errors: every failure leaves this module as ``RecordError`` (``retryable`` True for throttling, 5xx and
connection failures that persisted through every attempt), the botocore error chained as ``__cause__``.

Attribute values are built by hand (S, N, BOOL, NULL, M, L): boto3's TypeSerializer would do, but boto3 is not
a dependency of the daemon (only moto, a test dependency, brings it in).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import botocore.exceptions

from chorus_orchestrator.retry import with_retries

logger = logging.getLogger(__name__)

T = TypeVar("T")

HASH_KEY = "document_id"
RANGE_KEY = "section_index"
_KEY_SCHEMA = [{"AttributeName": HASH_KEY, "KeyType": "HASH"},
               {"AttributeName": RANGE_KEY, "KeyType": "RANGE"}]

# Mirrors botocore's standard retry mode (botocore/retries/standard.py), which keeps its lists private.
_RETRYABLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
    "RequestLimitExceeded", "LimitExceededException", "RequestThrottled", "InternalServerError",
    "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
})


class RecordError(Exception):
    """A result could not be written or read; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class ClipRecord:
    document_id: str
    section_index: int
    text: str
    voice: str
    location: str
    audio_seconds: float
    words: int
    inference_seconds: float
    queue_seconds: float
    gpu_model: str
    device: str
    endpoint: str
    attempt: int
    receive_count: int
    recorded_at: str  # ISO-8601 UTC
    section_count: int | None = None
    sample_rate_hz: int | None = None
    encoding: str | None = None
    # The job's unknown fields and the document's metadata, kept as they came.
    extra: Mapping[str, object] = field(default_factory=dict)


_FIELDS = {f.name: f for f in dataclasses.fields(ClipRecord)}
_FLOAT_FIELDS = frozenset({"audio_seconds", "inference_seconds", "queue_seconds"})


def _to_attribute(value: object) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):  # before int: bool is an int
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"DynamoDB numbers must be finite, got {value!r}")
        # repr is the shortest string that round-trips (<= 17 digits); Decimal(value) would give the exact
        # binary expansion, past DynamoDB's 38 digits of precision.
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, Mapping):
        return {"M": {str(k): _to_attribute(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"L": [_to_attribute(v) for v in value]}
    raise TypeError(f"cannot store a {type(value).__name__} in DynamoDB")


def _from_attribute(attribute: Mapping[str, Any]) -> object:
    (kind, value), = attribute.items()
    if kind == "S" or kind == "BOOL":
        return value
    if kind == "N":
        return int(value) if value.lstrip("-").isdigit() else float(value)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: _from_attribute(v) for k, v in value.items()}
    if kind == "L":
        return [_from_attribute(v) for v in value]
    raise TypeError(f"unexpected DynamoDB attribute type {kind}")


def _to_item(record: ClipRecord) -> dict[str, Any]:
    # None fields are left out, not stored as NULL, so the item holds only what is known.
    values = {name: getattr(record, name) for name in _FIELDS}
    return {name: _to_attribute(value) for name, value in values.items() if value is not None}


def _from_item(item: Mapping[str, Any]) -> ClipRecord:
    values = {name: _from_attribute(attr) for name, attr in item.items() if name in _FIELDS}
    for name in _FLOAT_FIELDS & values.keys():
        values[name] = float(values[name])  # DynamoDB may normalise 2.0 to 2
    return ClipRecord(**values)


def _translate(what: str, exc: Exception) -> RecordError:
    """The single boundary where botocore failures become RecordError."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        retryable = code in _RETRYABLE_CODES or status >= 500
        return RecordError(f"{what}: {code} (HTTP {status})", retryable=retryable)
    transient = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError, TimeoutError)
    return RecordError(f"{what}: {type(exc).__name__}: {exc}", retryable=isinstance(exc, transient))


_TRANSLATED = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, TimeoutError)


class ResultTable:
    """Upserts one item per clip; reads are strongly consistent, so a just-recorded section is seen."""

    def __init__(self, dynamodb_client, table: str, *, max_attempts: int = 4, backoff_s: float = 0.2) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self._dynamodb = dynamodb_client
        self._table = table
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s

    async def record(self, record: ClipRecord) -> None:
        """Write the item; a redelivered job replaces it whole with the newer values."""
        what = f"record {self._table} {record.document_id}/{record.section_index}"
        try:
            item = _to_item(record)
        except (TypeError, ValueError) as exc:
            raise RecordError(f"{what}: {exc}", retryable=False) from exc
        await self._retrying(what, lambda: self._dynamodb.put_item(TableName=self._table, Item=item))

    async def get(self, document_id: str, section_index: int) -> ClipRecord | None:
        response = await self._retrying(
            f"get {self._table} {document_id}/{section_index}",
            lambda: self._dynamodb.get_item(TableName=self._table, Key=self._key(document_id, section_index),
                                            ConsistentRead=True))
        item = response.get("Item")
        return None if item is None else _from_item(item)

    async def sections_done(self, document_id: str) -> list[int]:
        """Indexes of the recorded sections of one document, ascending (the range key's order)."""
        indexes: list[int] = []
        start: dict[str, Any] | None = None
        while True:
            params: dict[str, Any] = {
                "TableName": self._table, "ConsistentRead": True, "ProjectionExpression": RANGE_KEY,
                "KeyConditionExpression": f"{HASH_KEY} = :d",
                "ExpressionAttributeValues": {":d": {"S": document_id}},
            }
            if start is not None:
                params["ExclusiveStartKey"] = start
            page = await self._retrying(f"query {self._table} {document_id}",
                                        lambda: self._dynamodb.query(**params))
            indexes.extend(int(item[RANGE_KEY]["N"]) for item in page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if start is None:
                return indexes

    @staticmethod
    def _key(document_id: str, section_index: int) -> dict[str, Any]:
        return {HASH_KEY: {"S": document_id}, RANGE_KEY: {"N": str(section_index)}}

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        return await with_retries(what, attempt, catch=_TRANSLATED, translate=_translate,
                                  max_attempts=self._max_attempts, backoff_s=self._backoff_s)


async def ensure_table(dynamodb_client, table: str, *, wait_delay_s: float = 2,
                       wait_max_attempts: int = 60) -> None:
    """Create ``table`` (on demand, keyed by document_id/section_index) if missing; wait until ACTIVE."""
    try:
        await dynamodb_client.create_table(
            TableName=table, BillingMode="PAY_PER_REQUEST", KeySchema=_KEY_SCHEMA,
            AttributeDefinitions=[{"AttributeName": HASH_KEY, "AttributeType": "S"},
                                  {"AttributeName": RANGE_KEY, "AttributeType": "N"}])
        logger.info("table %s: creating", table)
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise _translate(f"create table {table}", exc) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise _translate(f"create table {table}", exc) from exc
    try:
        # The waiter's default 20 s delay would stall start-up for a table that is ACTIVE a second later.
        await dynamodb_client.get_waiter("table_exists").wait(
            TableName=table, WaiterConfig={"Delay": wait_delay_s, "MaxAttempts": wait_max_attempts})
        described = await dynamodb_client.describe_table(TableName=table)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise _translate(f"wait for table {table}", exc) from exc
    if described["Table"]["KeySchema"] != _KEY_SCHEMA:
        raise RecordError(f"table {table} exists with key schema {described['Table']['KeySchema']}, "
                          f"expected {_KEY_SCHEMA}", retryable=False)
    logger.info("table %s: active", table)
