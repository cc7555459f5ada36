"""Helpers of the orchestrator's end-to-end tests."""

from __future__ import annotations

import asyncio
import json

from chorus_orchestrator.main import run
from chorus_orchestrator.metrics import OrchestratorMetrics
from chorus_orchestrator.settings import Settings


def job(document_id, index: int, text: str | None = None, **extra) -> str:
    body = {"id": document_id, "voice": "v2/en_speaker_0", "script_section": text or f"Section {index} reads.",
            "section_index": index, **extra}
    return json.dumps(body)


async def send(sqs, queue_url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start:start + 10])]
        reply = await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        assert not reply.get("Failed")


async def queue_counts(sqs, queue_url: str) -> tuple[int, int]:
    attributes = (await sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]))["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


async def records(dynamodb, table: str) -> list[dict]:
    items, start = [], {}
    while True:
        page = await dynamodb.scan(TableName=table, **start)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


async def run_until(settings: Settings, done, *, timeout_s: float = 90.0, metrics: OrchestratorMetrics | None = None):
    """Runs the daemon in-process until `done()` is true, then stops it the way SIGTERM does."""
    stop = asyncio.Event()
    daemon = asyncio.create_task(run(settings, metrics=metrics, stop=stop))
    try:
        async with asyncio.timeout(timeout_s):
            while not await done():
                assert not daemon.done(), daemon.exception()
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 30)
