"""Spreads clip requests over the replicas: one pending queue, one worker per replica pulling batches from it."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import time

from chorus_synth.devices import DeviceInfo
from chorus_synth.engine import BarkEngine, ClipOutput, ClipRequest, EngineError
from chorus_synth.metrics import SynthMetrics
from chorus_synth.workers import ProcessEngine, WorkerDied

logger = logging.getLogger(__name__)


class Overloaded(Exception):
    """More requests than the server accepts are waiting."""


@dataclasses.dataclass(frozen=True)
class ScheduledClip:
    output: ClipOutput
    device: DeviceInfo
    queue_seconds: float


@dataclasses.dataclass(eq=False)
class _Pending:
    request: ClipRequest
    future: asyncio.Future[tuple[ClipOutput, DeviceInfo, float]]
    admitted_at: float
    # Batches it was in whose worker process died.
    deaths: int = 0


# A request whose batch killed this many workers is failed (UNAVAILABLE) rather than tried again.
MAX_WORKER_DEATHS = 2


def _expected_length(request: ClipRequest) -> float:
    """How long a clip will run, in semantic tokens: about 20 a word (49.9 a second, 2 to 3 words a second), up to the
    clip's cap."""
    return min(20.0 * len(request.text.split()), request.params.max_semantic_tokens)


class Scheduler:
    def __init__(
        self, engines: list[BarkEngine | ProcessEngine], *, max_batch: int, max_queued: int, metrics: SynthMetrics,
        max_wait_ms: float = 0.0,
    ) -> None:
        self._engines = engines
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000
        self._max_queued = max_queued
        self._metrics = metrics
        self._pending: collections.deque[_Pending] = collections.deque()
        self._has_work = asyncio.Event()
        self._arrived = asyncio.Event()
        self._room = asyncio.Condition()
        self._admitted = 0
        self._workers: list[asyncio.Task[None]] = []
        self._executors = [
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"replica-{e.device_info.name}")
            for e in engines
        ]

    @property
    def capacity(self) -> int:
        """Clips generated at once when every replica runs a full batch."""
        return len(self._engines) * self._max_batch

    @property
    def admitted(self) -> int:
        """Clips waiting or running."""
        return self._admitted

    def start(self) -> None:
        for engine, executor in zip(self._engines, self._executors):
            self._workers.append(asyncio.create_task(self._work(engine, executor), name=engine.device_info.name))

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for pending in self._pending:
            pending.future.cancel()
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, request: ClipRequest, *, wait_for_room: bool = False) -> ScheduledClip:
        """Generates one clip. Raises Overloaded when the queue is full, unless asked to wait for room."""
        limit = self.capacity + self._max_queued
        if self._admitted >= limit:
            if not wait_for_room:
                raise Overloaded(
                    f"{self._admitted} clips are already waiting or running, the most this server takes; "
                    f"retry later or keep at most {self.capacity} requests in flight"
                )
            async with self._room:
                await self._room.wait_for(lambda: self._admitted < limit)
        self._admitted += 1
        self._metrics.admitted.inc()
        pending = _Pending(request, asyncio.get_running_loop().create_future(), time.monotonic())
        self._pending.append(pending)
        self._has_work.set()
        self._arrived.set()
        try:
            output, device, queue_seconds = await pending.future
        finally:
            self._admitted -= 1
            self._metrics.admitted.dec()
            async with self._room:
                self._room.notify()
        return ScheduledClip(output, device, queue_seconds)

    def _take_batch(self) -> list[_Pending]:
        """The oldest live request and up to max_batch - 1 others that can share its batch, in arrival order."""
        while self._pending and self._pending[0].future.done():
            self._pending.popleft()  # cancelled while waiting
        if not self._pending:
            return []
        first = self._pending.popleft()
        return [first, *self._take_compatible(first.request, self._max_batch - 1)]

    def _take_compatible(self, first: ClipRequest, most: int) -> list[_Pending]:
        """Up to `most` waiting requests that can share `first`'s batch, the closest to it in length first: a batch
        runs as long as its longest item. The oldest request always leads a batch, so none waits forever."""
        key, length = first.batch_key, _expected_length(first)
        live = [p for p in self._pending if not p.future.done()]
        compatible = [p for p in live if p.request.batch_key == key]
        taken = sorted(compatible, key=lambda p: abs(_expected_length(p.request) - length))[:most]
        chosen = set(map(id, taken))
        self._pending = collections.deque(p for p in live if id(p) not in chosen)
        return sorted(taken, key=lambda p: p.admitted_at)

    def _requeue(self, batch: list[_Pending], death: WorkerDied) -> None:
        """A worker died with this batch: its requests go back to the front of the queue, for any replica."""
        for pending in reversed(batch):
            if pending.future.done():
                continue
            pending.deaths += 1
            if pending.deaths >= MAX_WORKER_DEATHS:
                pending.future.set_exception(death)
            else:
                self._pending.appendleft(pending)
        self._has_work.set()
        self._arrived.set()

    async def _fill(self, batch: list[_Pending]) -> None:
        """Waits up to max_wait_ms for company for a batch that already has some: requests are arriving together.
        A lone request on an idle device does not wait."""
        if not self._max_wait_s or not 1 < len(batch) < self._max_batch:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait_s
        while len(batch) < self._max_batch and (remaining := deadline - loop.time()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
            batch.extend(self._take_compatible(batch[0].request, self._max_batch - len(batch)))

    async def _work(self, engine: BarkEngine, executor: concurrent.futures.Executor) -> None:
        loop = asyncio.get_running_loop()
        device = engine.device_info
        while True:
            await self._has_work.wait()
            batch = self._take_batch()
            await self._fill(batch)
            if not self._pending:
                self._has_work.clear()
            if not batch:
                continue
            started = time.monotonic()
            for pending in batch:
                self._metrics.queue_seconds.observe(started - pending.admitted_at)
            try:
                outputs = await loop.run_in_executor(executor, engine.generate, [p.request for p in batch])
            except WorkerDied as exc:
                self._requeue(batch, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - the engine reports per-item errors; this is a bug path
                logger.exception("replica %s failed a batch of %d", device.name, len(batch))
                outputs = [EngineError(f"replica {device.name} failed: {exc}")] * len(batch)
            self._metrics.observe_batch(device, len(batch), time.monotonic() - started)
            for pending, output in zip(batch, outputs):
                if pending.future.done():
                    continue
                if isinstance(output, Exception):
                    pending.future.set_exception(output)
                else:
                    pending.future.set_result((output, device, started - pending.admitted_at))
