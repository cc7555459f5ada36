"""JobQueue and ensure_queues against moto's SQS server.

moto accepts a receipt handle from an earlier receive (real SQS answers InvalidParameterValue), so stale and
failing delete entries are injected with a before-call hook on the client: a handler that returns
(http_response, parsed) short-circuits the request; aiobotocore awaits async handlers.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiobotocore.session import get_session
from botocore.awsrequest import AWSResponse

from chorus_orchestrator.sqs import JobQueue, Message, QueueError, ensure_queues

from .conftest import REGION


@pytest.fixture
async def other_sqs(moto_endpoint):
    """A second worker's client."""
    async with get_session().create_client("sqs", region_name=REGION, endpoint_url=moto_endpoint) as client:
        yield client


@pytest.fixture
async def queues(sqs, unique):
    return await ensure_queues(sqs, f"jobs-{unique}", visibility_timeout_s=2)


@pytest.fixture
async def job_queue(sqs, queues):
    queue_url, dlq_url = queues
    job_queue = JobQueue(sqs, queue_url, dlq_url=dlq_url, visibility_timeout_s=2)
    await job_queue.start()
    yield job_queue
    await job_queue.close()


async def send(sqs, queue_url: str, count: int) -> None:
    for start in range(0, count, 10):
        ids = range(start, min(count, start + 10))
        entries = [{"Id": str(i), "MessageBody": f"section-{i}"} for i in ids]
        await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


async def receive_all(job_queue: JobQueue, count: int) -> list[Message]:
    messages: list[Message] = []
    while len(messages) < count:
        messages += await job_queue.receive(min(10, count - len(messages)), wait_s=1)
    return messages


async def messages_in_queue(sqs, queue_url: str) -> int:
    """Visible plus in flight: 0 only when every message is really deleted."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = (await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names))["Attributes"]
    return sum(int(attrs[name]) for name in names)


async def receive_now(client, queue_url: str, *, wait_s: int = 0) -> list[dict]:
    response = await client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                            WaitTimeSeconds=wait_s, MessageAttributeNames=["All"])
    return response.get("Messages", [])


def inject(client, operation: str, answer):
    """Answer `operation` with answer(entries) -> parsed dict, or pass it to moto when answer returns None.
    Returns the list of entry lists the client sent, one per call."""
    calls: list[list[dict]] = []

    async def handler(params, **_):
        entries = json.loads(params["body"])["Entries"]
        calls.append(entries)
        parsed = answer(entries)
        if parsed is None:
            return None
        parsed["ResponseMetadata"] = {"HTTPStatusCode": 200}
        return AWSResponse(params["url"], 200, {}, None), parsed

    client.meta.events.register(f"before-call.sqs.{operation}", handler)
    return calls


def all_failed(code: str, *, sender_fault: bool = True):
    def answer(entries):
        failed = [{"Id": e["Id"], "SenderFault": sender_fault, "Code": code, "Message": "injected"}
                  for e in entries]
        return {"Successful": [], "Failed": failed}
    return answer


async def test_receive_hold_and_delete(sqs, queues, job_queue):
    queue_url, _ = queues
    await send(sqs, queue_url, 3)
    messages = await receive_all(job_queue, 3)
    assert sorted(m.body for m in messages) == ["section-0", "section-1", "section-2"]
    assert all(m.receive_count == 1 for m in messages)
    assert job_queue.held == 3

    assert await job_queue.delete(messages[0]) is True
    assert job_queue.held == 2
    assert await messages_in_queue(sqs, queue_url) == 2


async def test_receive_count_grows_on_redelivery(sqs, queues, job_queue):
    queue_url, _ = queues
    await send(sqs, queue_url, 1)
    [first] = await receive_all(job_queue, 1)
    await job_queue.release(first)
    [second] = await receive_all(job_queue, 1)
    assert (second.message_id, second.receive_count) == (first.message_id, 2)
    assert not job_queue.lease_lost(second)


async def test_deletes_are_batched(sqs, queues, job_queue):
    queue_url, _ = queues
    await send(sqs, queue_url, 25)
    messages = await receive_all(job_queue, 25)
    calls = inject(sqs, "DeleteMessageBatch", lambda entries: None)

    results = await asyncio.gather(*(job_queue.delete(m) for m in messages))

    assert results == [True] * 25
    assert 3 <= len(calls) <= 4 and all(len(entries) <= 10 for entries in calls)
    assert job_queue.held == 0
    assert await messages_in_queue(sqs, queue_url) == 0


async def test_heartbeat_keeps_message_from_other_workers(sqs, other_sqs, queues, job_queue):
    queue_url, _ = queues
    await send(sqs, queue_url, 1)
    [message] = await receive_all(job_queue, 1)

    deadline = time.monotonic() + 5  # 2.5 visibility timeouts
    while time.monotonic() < deadline:
        assert await receive_now(other_sqs, queue_url) == []
        await asyncio.sleep(0.25)
    assert job_queue.held == 1 and not job_queue.lease_lost(message)

    await job_queue.release(message)
    assert [m["MessageId"] for m in await receive_now(other_sqs, queue_url)] == [message.message_id]


async def test_release_with_delay(sqs, other_sqs, queues, job_queue):
    queue_url, _ = queues
    await send(sqs, queue_url, 1)
    [message] = await receive_all(job_queue, 1)
    released_at = time.monotonic()
    await job_queue.release(message, delay_s=2)
    assert job_queue.held == 0

    while not (seen := await receive_now(other_sqs, queue_url)):
        await asyncio.sleep(0.1)
    assert seen[0]["MessageId"] == message.message_id
    assert 1.5 <= time.monotonic() - released_at < 4


async def test_dead_letter(sqs, queues, job_queue):
    queue_url, dlq_url = queues
    await send(sqs, queue_url, 1)
    [message] = await receive_all(job_queue, 1)

    await job_queue.dead_letter(message, "synth rejected the section: too long")

    [dead] = await receive_now(sqs, dlq_url)
    assert dead["Body"] == message.body
    attrs = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert attrs == {"chorus-reason": "synth rejected the section: too long",
                     "chorus-source-message-id": message.message_id, "chorus-receive-count": "1"}
    assert await messages_in_queue(sqs, queue_url) == 0
    assert job_queue.held == 0


async def test_dead_letter_without_dlq(sqs, queues):
    job_queue = JobQueue(sqs, queues[0], dlq_url=None, visibility_timeout_s=2)
    with pytest.raises(QueueError):
        await job_queue.dead_letter(Message("m", "r", "b", 1), "why")


async def test_failed_delete_entry_is_retried(sqs, queues, job_queue):
    queue_url, _ = queues
    await send(sqs, queue_url, 1)
    [message] = await receive_all(job_queue, 1)
    failing = all_failed("InternalError", sender_fault=False)
    calls = inject(sqs, "DeleteMessageBatch", lambda entries: failing(entries) if len(calls) == 1 else None)

    assert await job_queue.delete(message) is True
    assert len(calls) == 2
    assert await messages_in_queue(sqs, queue_url) == 0


async def test_transient_delete_call_failure_is_retried(sqs, queues, job_queue):
    queue_url, _ = queues
    await send(sqs, queue_url, 1)
    [message] = await receive_all(job_queue, 1)
    calls: list[int] = []

    def throttled_once(params, **_):  # a sync handler works too
        calls.append(1)
        if len(calls) > 1:
            return None
        error = {"Error": {"Code": "RequestThrottled", "Message": "injected"},
                 "ResponseMetadata": {"HTTPStatusCode": 400}}
        return AWSResponse(params["url"], 400, {}, None), error

    sqs.meta.events.register("before-call.sqs.DeleteMessageBatch", throttled_once)
    assert await job_queue.delete(message) is True
    assert len(calls) == 2
    assert await messages_in_queue(sqs, queue_url) == 0


async def test_missing_queue_is_a_queue_error(sqs, moto_endpoint, unique):
    job_queue = JobQueue(sqs, f"{moto_endpoint}/123456789012/gone-{unique}", dlq_url=None, visibility_timeout_s=2)
    await job_queue.start()
    with pytest.raises(QueueError):
        await job_queue.receive(1, wait_s=0)
    with pytest.raises(QueueError):
        await job_queue.delete(Message("m-1", "receipt", "body", 1))
    await job_queue.close()


async def test_delete_gives_up_after_max_attempts(sqs, queues):
    queue_url, dlq_url = queues
    await send(sqs, queue_url, 1)
    job_queue = JobQueue(sqs, queue_url, dlq_url=dlq_url, visibility_timeout_s=2, max_delete_attempts=2)
    await job_queue.start()
    [message] = await receive_all(job_queue, 1)
    calls = inject(sqs, "DeleteMessageBatch", all_failed("InternalError", sender_fault=False))
    with pytest.raises(QueueError):
        await job_queue.delete(message)
    assert len(calls) == 2 and job_queue.held == 0
    await job_queue.close()


async def test_stale_receipt_on_delete_returns_false(sqs, queues, job_queue):
    queue_url, _ = queues
    await send(sqs, queue_url, 1)
    [message] = await receive_all(job_queue, 1)
    # What real SQS answers for a receipt from an earlier receive of a message since redelivered.
    inject(sqs, "DeleteMessageBatch", all_failed("InvalidParameterValue"))

    assert await job_queue.delete(message) is False
    assert job_queue.held == 0


async def test_unknown_receipt_is_stale_on_moto_too(job_queue):
    never_issued = Message("m-1", "not-a-receipt-handle", "body", 1)
    assert await job_queue.delete(never_issued) is False
    await job_queue.release(never_issued)  # ReceiptHandleIsInvalid from moto: logged, not raised


async def test_heartbeat_marks_stale_lease_lost(sqs, queues, job_queue):
    queue_url, _ = queues
    await send(sqs, queue_url, 1)
    [message] = await receive_all(job_queue, 1)
    inject(sqs, "ChangeMessageVisibilityBatch", all_failed("AWS.SimpleQueueService.MessageNotInflight"))

    while not job_queue.lease_lost(message):
        await asyncio.sleep(0.1)
    assert job_queue.held == 0


async def test_close_releases_held_and_flushes_deletes(sqs, other_sqs, queues):
    queue_url, dlq_url = queues
    await send(sqs, queue_url, 4)
    job_queue = JobQueue(sqs, queue_url, dlq_url=dlq_url, visibility_timeout_s=3)
    await job_queue.start()
    messages = await receive_all(job_queue, 4)
    delete = asyncio.create_task(job_queue.delete(messages[0]))
    await asyncio.sleep(0)  # queued, not sent yet

    await job_queue.close(release_held=True)
    await job_queue.close()  # idempotent

    assert delete.done() and delete.result() is True
    assert job_queue.held == 0
    seen = await receive_now(other_sqs, queue_url)
    assert sorted(m["MessageId"] for m in seen) == sorted(m.message_id for m in messages[1:])
    with pytest.raises(QueueError):
        await job_queue.receive(1)


async def test_cancelled_receive_returns_promptly(job_queue):
    receive = asyncio.create_task(job_queue.receive(10, wait_s=20))
    await asyncio.sleep(0.3)
    cancelled_at = time.monotonic()
    receive.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receive
    assert time.monotonic() - cancelled_at < 1
    assert job_queue.held == 0


async def test_cancelled_delete_still_deletes(sqs, queues, job_queue):
    queue_url, _ = queues
    await send(sqs, queue_url, 1)
    [message] = await receive_all(job_queue, 1)
    delete = asyncio.create_task(job_queue.delete(message))
    await asyncio.sleep(0)
    delete.cancel()
    while job_queue.held:
        await asyncio.sleep(0.01)
    assert await messages_in_queue(sqs, queue_url) == 0


async def redrive_policy(sqs, queue_url: str) -> dict:
    attrs = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    return json.loads(attrs["Attributes"]["RedrivePolicy"])


async def queue_arn(sqs, queue_url: str) -> str:
    attrs = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return attrs["Attributes"]["QueueArn"]


async def test_ensure_queues_creates_queue_and_dlq(sqs, unique):
    name = f"book-{unique}"
    queue_url, dlq_url = await ensure_queues(sqs, name, max_receive_count=3, visibility_timeout_s=60)
    assert queue_url.endswith(f"/book-{unique}") and dlq_url.endswith(f"/book-{unique}-dlq")
    policy = await redrive_policy(sqs, queue_url)
    assert policy["deadLetterTargetArn"] == await queue_arn(sqs, dlq_url)
    assert int(policy["maxReceiveCount"]) == 3
    attrs = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "60"

    again = await ensure_queues(sqs, name, max_receive_count=3, visibility_timeout_s=60)
    assert again == (queue_url, dlq_url)


async def test_ensure_queues_sets_missing_redrive_policy(sqs, unique):
    existing = (await sqs.create_queue(QueueName=f"old-{unique}"))["QueueUrl"]
    queue_url, dlq_url = await ensure_queues(sqs, f"old-{unique}")
    assert queue_url == existing
    assert (await redrive_policy(sqs, queue_url))["deadLetterTargetArn"] == await queue_arn(sqs, dlq_url)


async def test_ensure_queues_fifo(sqs, unique):
    queue_url, dlq_url = await ensure_queues(sqs, f"ordered-{unique}.fifo")
    assert dlq_url.endswith(f"/ordered-{unique}-dlq.fifo")
    for url in (queue_url, dlq_url):
        attrs = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["FifoQueue"]))["Attributes"]
        assert attrs["FifoQueue"] == "true"
    assert (await redrive_policy(sqs, queue_url))["deadLetterTargetArn"] == await queue_arn(sqs, dlq_url)
    assert await ensure_queues(sqs, f"ordered-{unique}.fifo") == (queue_url, dlq_url)


async def test_dead_letter_to_fifo_dlq(sqs, unique):
    queue_url, dlq_url = await ensure_queues(sqs, f"ordered-{unique}.fifo", visibility_timeout_s=2)
    await sqs.send_message(QueueUrl=queue_url, MessageBody="section-0", MessageGroupId="doc-1",
                           MessageDeduplicationId="section-0")
    job_queue = JobQueue(sqs, queue_url, dlq_url=dlq_url, visibility_timeout_s=2)
    await job_queue.start()
    [message] = await receive_all(job_queue, 1)
    await job_queue.dead_letter(message, "bad section")
    await job_queue.close()
    [dead] = await receive_now(sqs, dlq_url)
    assert dead["Body"] == "section-0"
    assert await messages_in_queue(sqs, queue_url) == 0
