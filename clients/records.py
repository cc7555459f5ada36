"""Reading the results table from the client side: a paginated scan or one document's query, projected.

The orchestrator's `ResultTable` writes whole `ClipRecord`s and reads one key at a time; `chorus stitch` and
`chorus report` read many items but only a few attributes of each (never the text), so they ask DynamoDB for just
those and get plain dicts back.

Errors: every failure leaves this module as `TableError`, the botocore error chained as ``__cause__``. botocore's
own retries (the client's retry mode) have already been spent on throttling and 5xx answers by then.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import botocore.exceptions

from chorus_orchestrator.results import HASH_KEY, RANGE_KEY


class TableError(Exception):
    """The results table could not be read: missing, unreachable, or access denied."""


def _value(attribute: Mapping[str, Any]) -> object:
    # Only the scalar types a ClipRecord's top-level fields are stored as (see chorus_orchestrator.results).
    (kind, value), = attribute.items()
    if kind == "N":
        return int(value) if value.lstrip("-").isdigit() else float(value)
    if kind == "NULL":
        return None
    return value  # S, BOOL


def _projection(attributes: Sequence[str]) -> dict[str, Any]:
    # Placeholders for every name: several field names (location, words, ...) may be DynamoDB reserved words.
    names = {f"#a{number}": name for number, name in enumerate(attributes)}
    return {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}


async def _pages(call, what: str, params: dict[str, Any]) -> AsyncIterator[list[dict[str, object]]]:
    start: dict[str, Any] | None = None
    while True:
        if start is not None:
            params["ExclusiveStartKey"] = start
        try:
            page = await call(**params)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise TableError(f"{what}: {exc}") from exc
        yield [{name: _value(attribute) for name, attribute in item.items()} for item in page.get("Items", [])]
        start = page.get("LastEvaluatedKey")
        if start is None:
            return


async def scan(dynamodb, table: str, attributes: Sequence[str], *,
               page_size: int | None = None) -> AsyncIterator[dict[str, object]]:
    """Every item of ``table``, one page (1 MB, or ``page_size`` items) at a time, with only ``attributes``."""
    params: dict[str, Any] = {"TableName": table, **_projection(attributes)}
    if page_size is not None:
        params["Limit"] = page_size
    async for page in _pages(dynamodb.scan, f"scan {table}", params):
        for item in page:
            yield item


async def document_ids(dynamodb, table: str) -> list[str]:
    """The ids of every document with at least one recorded section, sorted."""
    ids: set[str] = set()
    async for item in scan(dynamodb, table, [HASH_KEY]):
        ids.add(str(item[HASH_KEY]))
    return sorted(ids)


async def document_sections(dynamodb, table: str, document_id: str,
                            attributes: Sequence[str]) -> list[dict[str, object]]:
    """The recorded sections of one document in section order, each with ``section_index`` and ``attributes``."""
    wanted = [RANGE_KEY, *(name for name in attributes if name != RANGE_KEY)]
    params = {
        "TableName": table, "ConsistentRead": True, "KeyConditionExpression": "#key = :d",
        "ExpressionAttributeValues": {":d": {"S": document_id}}, **_projection(wanted),
    }
    params["ExpressionAttributeNames"]["#key"] = HASH_KEY
    sections: list[dict[str, object]] = []
    async for page in _pages(dynamodb.query, f"query {table} {document_id}", params):
        sections.extend(page)
    return sections
