"""Jobs from SQS: receive, hold (heartbeat), delete in batches, release, dead-letter.

`QueueError` is the one error raised for SQS failures that retrying will not fix; botocore errors are
translated here. A stale receipt handle (the message went to another worker) is not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

logger = logging.getLogger(__name__)

_MAX_BATCH = 10  # SQS limit for every *Batch call and for one ReceiveMessage
_MAX_VISIBILITY_S = 43_200
_DELETE_LINGER_S = 0.03
# Real SQS answers a receipt from an earlier receive with InvalidParameterValue ("The receipt handle has
# expired"), a handle it never issued with ReceiptHandleIsInvalid, a message no longer in flight with
# MessageNotInflight. In a batch entry we control Id and VisibilityTimeout, so InvalidParameterValue there is
# about the receipt (or the 12 h total visibility cap, which also means the lease is gone).
_STALE_RECEIPT_CODES = frozenset({"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"})
_TRANSIENT_CODES = frozenset({"RequestThrottled", "ThrottlingException", "Throttling", "InternalError",
                              "InternalFailure", "ServiceUnavailable", "KmsThrottled"})
_MISSING_QUEUE_CODES = frozenset({"NonExistentQueue", "QueueDoesNotExist"})


class QueueError(Exception):
    """SQS refused a request for a reason that retrying will not fix, or kept failing after retries."""


@dataclass(frozen=True)
class Message:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


@dataclass(frozen=True)
class _PendingDelete:
    message: Message
    future: asyncio.Future[bool]
    attempts: int = 0


def _codes(exc: ClientError) -> set[str]:
    """SQS speaks JSON but botocore reports the legacy query code ("AWS.SimpleQueueService.NonExistentQueue")
    and keeps the JSON one in QueryErrorCode: match either, without the prefix."""
    error = exc.response.get("Error", {})
    return {_bare(code) for code in (error.get("Code"), error.get("QueryErrorCode")) if code}


def _bare(code: object) -> str:
    return str(code).removeprefix("AWS.SimpleQueueService.")


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return bool(_codes(exc) & _TRANSIENT_CODES) or status >= 500
    return isinstance(exc, (HTTPClientError, BotoConnectionError))


def _backoff_s(attempt: int, *, base_s: float = 0.1, cap_s: float = 5.0) -> float:
    return min(cap_s, base_s * 2**attempt) * random.uniform(0.5, 1.0)


class JobQueue:
    """One SQS queue as one daemon sees it: a received message is *held* until deleted, released or
    dead-lettered, and meanwhile the heartbeat keeps extending its visibility."""

    def __init__(self, client: Any, queue_url: str, *, dlq_url: str | None, visibility_timeout_s: int = 120,
                 heartbeat_every_s: float | None = None, max_delete_attempts: int = 5) -> None:
        heartbeat_every_s = visibility_timeout_s / 3 if heartbeat_every_s is None else heartbeat_every_s
        if not (1 <= visibility_timeout_s <= _MAX_VISIBILITY_S and max_delete_attempts >= 1
                and 0 < heartbeat_every_s < visibility_timeout_s):
            raise ValueError("need 1 <= visibility_timeout_s <= 43200, 0 < heartbeat_every_s < "
                             "visibility_timeout_s and max_delete_attempts >= 1")
        self._client = client
        self._queue_url = queue_url
        self._dlq_url = dlq_url
        self._visibility_timeout_s = visibility_timeout_s
        self._heartbeat_every_s = heartbeat_every_s
        self._max_delete_attempts = max_delete_attempts
        self._held: dict[str, Message] = {}  # by receipt handle: one per receive, even of the same message
        self._lost: set[str] = set()
        # Taken for every visibility change, so a release is never overtaken by a heartbeat batch that was
        # already in flight with the long timeout.
        self._visibility_lock = asyncio.Lock()
        self._pending: list[_PendingDelete] = []
        self._delete_futures: set[asyncio.Future[bool]] = set()
        self._wakeup = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._receive_failures = 0
        self._closing = False
        self._deletes_stopped = False
        self._close_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._tasks or self._closing:
            return
        self._tasks = [asyncio.create_task(self._heartbeat(), name="sqs-heartbeat"),
                       asyncio.create_task(self._delete_batcher(), name="sqs-delete-batcher")]
        logger.info("queue %s started visibility_timeout_s=%d heartbeat_every_s=%.1f",
                    self._queue_url, self._visibility_timeout_s, self._heartbeat_every_s)

    @property
    def held(self) -> int:
        return len(self._held)

    def lease_lost(self, message: Message) -> bool:
        return message.receipt_handle in self._lost

    def _forget(self, message: Message) -> None:
        self._held.pop(message.receipt_handle, None)
        self._lost.discard(message.receipt_handle)

    async def receive(self, max_messages: int, *, wait_s: int = 20) -> list[Message]:
        """Long-poll for 1..10 messages; a transient failure is logged, backed off and returns [].
        Cancelling aborts the HTTP request at once. A long poll answers as soon as a message arrives, so only
        messages already on the wire when the cancel lands are lost: they reappear after visibility_timeout_s.
        Short polls in a loop would not shrink that window, only multiply requests."""
        if not 1 <= max_messages <= _MAX_BATCH:
            raise ValueError(f"max_messages must be in 1..{_MAX_BATCH}, got {max_messages}")
        if self._closing:
            raise QueueError(f"queue {self._queue_url} is closed")
        try:
            response = await self._client.receive_message(
                QueueUrl=self._queue_url, MaxNumberOfMessages=max_messages, WaitTimeSeconds=wait_s,
                VisibilityTimeout=self._visibility_timeout_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount"])
        except (ClientError, BotoCoreError) as exc:
            if not _is_transient(exc):
                raise QueueError(f"receive from {self._queue_url} failed") from exc
            self._receive_failures += 1
            delay_s = _backoff_s(self._receive_failures, base_s=0.5, cap_s=20.0)
            logger.warning("queue %s receive failed, retry in %.1fs", self._queue_url, delay_s, exc_info=True)
            await asyncio.sleep(delay_s)
            return []
        self._receive_failures = 0
        # No await from here on: every message in the response is held before anything can cancel us.
        messages = [Message(raw["MessageId"], raw["ReceiptHandle"], raw["Body"],
                            int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1")))
                    for raw in response.get("Messages", [])]
        for message in messages:
            self._held[message.receipt_handle] = message
            logger.debug("message %s received receive_count=%d", message.message_id, message.receive_count)
        return messages

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_every_s)
            try:
                await self._change_visibility(list(self._held.values()), self._visibility_timeout_s)
            except Exception:  # the heartbeat must outlive any one bad beat
                logger.exception("queue %s heartbeat failed, retrying next beat", self._queue_url)

    async def _change_visibility(self, messages: list[Message], timeout_s: int) -> None:
        """ChangeMessageVisibilityBatch, 10 per call, of those still held. A stale entry marks the lease lost;
        any other failure is logged (the heartbeat tries again next beat)."""
        for start in range(0, len(messages), _MAX_BATCH):
            async with self._visibility_lock:  # what was released while we waited is skipped
                chunk = [m for m in messages[start:start + _MAX_BATCH] if m.receipt_handle in self._held]
                if not chunk:
                    continue
                entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": timeout_s}
                           for i, m in enumerate(chunk)]
                try:
                    response = await self._client.change_message_visibility_batch(
                        QueueUrl=self._queue_url, Entries=entries)
                except (ClientError, BotoCoreError):
                    logger.exception("queue %s visibility change to %ds failed for %d messages",
                                     self._queue_url, timeout_s, len(chunk))
                    continue
            for failed in response.get("Failed", []):
                message = chunk[int(failed["Id"])]
                if _bare(failed.get("Code")) not in _STALE_RECEIPT_CODES:
                    logger.warning("message %s visibility change failed code=%s message=%s",
                                   message.message_id, failed.get("Code"), failed.get("Message"))
                elif self._held.pop(message.receipt_handle, None) is not None:
                    self._lost.add(message.receipt_handle)
                    logger.warning("message %s lease lost code=%s", message.message_id, failed.get("Code"))

    async def delete(self, message: Message) -> bool:
        """Delete through the batcher: True when deleted, False when the receipt was stale (the message is
        someone else's now). QueueError when SQS refuses, or still fails after max_delete_attempts. Either way
        the message is no longer held. Shielded: cancelling the caller does not stop the delete."""
        if not self._tasks or self._deletes_stopped:
            raise QueueError(f"queue {self._queue_url} is not running (start() not called, or closed)")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._delete_futures.add(future)
        future.add_done_callback(self._delete_futures.discard)
        self._enqueue(_PendingDelete(message, future))
        return await asyncio.shield(future)

    def _enqueue(self, item: _PendingDelete) -> None:
        self._pending.append(item)
        self._wakeup.set()
        if len(self._pending) >= _MAX_BATCH:
            self._batch_full.set()

    async def _delete_batcher(self) -> None:
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            if len(self._pending) < _MAX_BATCH:  # linger briefly for a fuller batch
                self._batch_full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_DELETE_LINGER_S):
                        await self._batch_full.wait()
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            try:
                await self._send_delete_batch(batch)
            except Exception as exc:  # never leave a caller waiting on a future nobody will resolve
                for item in batch:
                    self._fail_delete(item, QueueError("delete failed unexpectedly"), exc)

    async def _send_delete_batch(self, batch: list[_PendingDelete]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": it.message.receipt_handle} for i, it in enumerate(batch)]
        try:
            response = await self._client.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            if not _is_transient(exc):
                for item in batch:
                    self._fail_delete(item, QueueError(f"delete from {self._queue_url} refused"), exc)
                return
            logger.warning("queue %s DeleteMessageBatch of %d failed, retrying", self._queue_url, len(batch),
                           exc_info=True)
            for item in batch:
                self._retry_delete(item, exc)
            return
        for ok in response.get("Successful", []):
            self._finish_delete(batch[int(ok["Id"])], True)
        for failed in response.get("Failed", []):
            item, code = batch[int(failed["Id"])], failed.get("Code")
            if _bare(code) in _STALE_RECEIPT_CODES:
                logger.warning("message %s not deleted: stale receipt, redelivered elsewhere code=%s",
                               item.message.message_id, code)
                self._finish_delete(item, False)
            else:
                logger.warning("message %s delete failed code=%s message=%s attempt=%d",
                               item.message.message_id, code, failed.get("Message"), item.attempts + 1)
                self._retry_delete(item, None)

    def _finish_delete(self, item: _PendingDelete, deleted: bool) -> None:
        self._forget(item.message)
        if deleted:
            logger.debug("message %s deleted", item.message.message_id)
        if not item.future.done():
            item.future.set_result(deleted)

    def _retry_delete(self, item: _PendingDelete, cause: Exception | None) -> None:
        attempts = item.attempts + 1
        if attempts >= self._max_delete_attempts:
            error = QueueError(f"message {item.message.message_id} not deleted after {attempts} attempts")
            self._fail_delete(item, error, cause)
        else:
            retry = replace(item, attempts=attempts)
            asyncio.get_running_loop().call_later(_backoff_s(attempts), self._enqueue, retry)

    def _fail_delete(self, item: _PendingDelete, error: QueueError, cause: Exception | None) -> None:
        # No longer held: without a delete the message reappears when its lease runs out.
        self._forget(item.message)
        logger.error("message %s delete failed: %s", item.message.message_id, error, exc_info=cause)
        error.__cause__ = cause
        if not item.future.done():
            item.future.set_exception(error)

    async def release(self, message: Message, *, delay_s: int = 0) -> None:
        """Make the message visible again after delay_s (the retry backoff). A stale receipt is logged and
        ignored. QueueError if SQS refuses; the message then reappears when its lease runs out."""
        if not 0 <= delay_s <= _MAX_VISIBILITY_S:
            raise ValueError(f"delay_s must be in 0..{_MAX_VISIBILITY_S}, got {delay_s}")
        self._forget(message)  # before taking the lock: no later heartbeat batch includes it
        await asyncio.shield(self._release(message, delay_s))

    async def _release(self, message: Message, delay_s: int) -> None:
        try:
            async with self._visibility_lock:
                await self._client.change_message_visibility(
                    QueueUrl=self._queue_url, ReceiptHandle=message.receipt_handle, VisibilityTimeout=delay_s)
        except (ClientError, BotoCoreError) as exc:
            if not (isinstance(exc, ClientError) and _codes(exc) & _STALE_RECEIPT_CODES):
                raise QueueError(f"release of message {message.message_id} failed") from exc
            logger.warning("message %s not released: stale receipt, redelivered elsewhere",
                           message.message_id, exc_info=True)
            return
        logger.info("message %s released delay_s=%d", message.message_id, delay_s)

    async def dead_letter(self, message: Message, reason: str) -> None:
        """Copy the job to the DLQ with the reason, *then* delete it here: a crash in between leaves it in
        both queues, never in neither."""
        if self._dlq_url is None:
            raise QueueError(f"queue {self._queue_url} has no dead-letter queue")
        await asyncio.shield(self._dead_letter(message, reason, self._dlq_url))

    async def _dead_letter(self, message: Message, reason: str, dlq_url: str) -> None:
        fifo: dict[str, str] = {}
        if dlq_url.endswith(".fifo"):  # each dead job its own group; the source id dedups a repeated copy
            fifo = {"MessageGroupId": message.message_id, "MessageDeduplicationId": message.message_id}
        attributes = {"chorus-reason": ("String", reason or "unspecified"),
                      "chorus-source-message-id": ("String", message.message_id),
                      "chorus-receive-count": ("Number", str(message.receive_count))}
        try:
            await self._client.send_message(
                QueueUrl=dlq_url, MessageBody=message.body, **fifo,
                MessageAttributes={k: {"DataType": t, "StringValue": v} for k, (t, v) in attributes.items()})
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"message {message.message_id} could not be sent to {dlq_url}") from exc
        logger.info("message %s dead-lettered reason=%s", message.message_id, reason)
        if not await self.delete(message):
            logger.warning("message %s in the DLQ but redelivered before its delete", message.message_id)

    async def close(self, *, release_held: bool = True) -> None:
        """Stop the heartbeat, flush pending deletes, (release_held) make held messages visible at once.
        Cancel any receive first: messages it returns after this are never released, only time out."""
        self._closing = True
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._close(release_held), name="sqs-close")
        await asyncio.shield(self._close_task)

    async def _close(self, release_held: bool) -> None:
        heartbeat, batcher = self._tasks or (None, None)
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        while self._delete_futures:  # retries re-enqueue themselves: wait until every delete has its answer
            await asyncio.wait(list(self._delete_futures))
        self._deletes_stopped = True
        if batcher is not None:
            batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await batcher
        held = list(self._held.values())
        if release_held and held:  # a chunk that fails is logged; its messages reappear when their lease ends
            await self._change_visibility(held, 0)
        self._held.clear()
        logger.info("queue %s closed held=%d released=%s", self._queue_url, len(held), release_held)


async def ensure_queues(client: Any, name: str, *, dlq_name: str | None = None, max_receive_count: int = 5,
                        visibility_timeout_s: int = 120) -> tuple[str, str]:
    """Create what is missing of the queue and its dead-letter queue; return (queue_url, dlq_url).
    Existing queues keep their attributes, except that a missing RedrivePolicy is set."""
    fifo = name.endswith(".fifo")
    if dlq_name is None:
        dlq_name = f"{name.removesuffix('.fifo')}-dlq.fifo" if fifo else f"{name}-dlq"
    if dlq_name.endswith(".fifo") != fifo:
        raise ValueError(f"{name!r} and its dead-letter queue {dlq_name!r} must both be FIFO, or neither")
    fifo_attrs = {"FifoQueue": "true"} if fifo else {}
    try:
        # Dead jobs wait for a person: keep them as long as SQS allows (14 days).
        dlq_url = await _get_or_create(client, dlq_name, {**fifo_attrs, "MessageRetentionPeriod": "1209600"})
        dlq_attrs = await client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
        redrive = json.dumps({"deadLetterTargetArn": dlq_attrs["Attributes"]["QueueArn"],
                              "maxReceiveCount": str(max_receive_count)})
        queue_url = await _get_or_create(client, name, {
            **fifo_attrs, "VisibilityTimeout": str(visibility_timeout_s), "RedrivePolicy": redrive})
        attrs = await client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
        if "RedrivePolicy" not in attrs.get("Attributes", {}):
            await client.set_queue_attributes(QueueUrl=queue_url, Attributes={"RedrivePolicy": redrive})
            logger.info("queue %s redrive policy set dlq=%s max_receive_count=%d",
                        name, dlq_name, max_receive_count)
    except (ClientError, BotoCoreError) as exc:
        raise QueueError(f"could not ensure queues {name!r} and {dlq_name!r}") from exc
    return queue_url, dlq_url


async def _get_or_create(client: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        return (await client.get_queue_url(QueueName=name))["QueueUrl"]
    except ClientError as exc:
        if not _codes(exc) & _MISSING_QUEUE_CODES:
            raise
    # Two daemons racing here is fine: CreateQueue with identical attributes returns the existing queue.
    url = (await client.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
    logger.info("queue %s created url=%s", name, url)
    return url
