"""`chorus-orchestrator run` (the daemon) and `chorus-orchestrator init` (create the queue, DLQ, bucket, table)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from urllib.parse import urlparse

import aiohttp
from aiobotocore.session import get_session
from prometheus_client import start_http_server

from chorus_orchestrator.daemon import Orchestrator
from chorus_orchestrator.endpoints import EndpointPool
from chorus_orchestrator.metrics import OrchestratorMetrics
from chorus_orchestrator.results import ResultTable, ensure_table
from chorus_orchestrator.settings import Settings, parse_settings
from chorus_orchestrator.sqs import JobQueue, ensure_queues
from chorus_orchestrator.storage import ClipStore, ensure_bucket, s3_client_config

logger = logging.getLogger(__name__)

# How long `run` waits for a first synth endpoint to be up before it starts anyway (and keeps probing).
_STARTUP_WAIT_S = 30.0


def _queue_name(url: str) -> str:
    return urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]


async def _clients(settings: Settings, stack: contextlib.AsyncExitStack):
    session = get_session()
    common = {"region_name": settings.region, "endpoint_url": settings.endpoint_url or None}
    sqs = await stack.enter_async_context(session.create_client("sqs", **common))
    s3 = await stack.enter_async_context(
        session.create_client("s3", config=s3_client_config(s3_compatible=settings.s3_compatible), **common))
    dynamodb = await stack.enter_async_context(session.create_client("dynamodb", **common))
    return sqs, s3, dynamodb


async def init(settings: Settings) -> None:
    async with contextlib.AsyncExitStack() as stack:
        sqs, s3, dynamodb = await _clients(settings, stack)
        queue_url, dlq_url = await ensure_queues(
            sqs, _queue_name(settings.queue_url),
            dlq_name=_queue_name(settings.dlq_url) if settings.dlq_url else None,
            max_receive_count=settings.max_receive_count, visibility_timeout_s=settings.visibility_timeout_s,
        )
        print(f"queue {queue_url}")
        print(f"dead-letter queue {dlq_url}")
        if settings.bucket:
            await ensure_bucket(s3, settings.bucket, settings.region)
            print(f"bucket {settings.bucket}")
        await ensure_table(dynamodb, settings.table)
        print(f"table {settings.table}")


async def run(
    settings: Settings, *, metrics: OrchestratorMetrics | None = None, stop: asyncio.Event | None = None
) -> None:
    """The daemon, until SIGTERM/SIGINT, or until `stop` is set when one is given (tests run it in-process)."""
    metrics = metrics or OrchestratorMetrics()
    if stop is None:
        # From the very start: a SIGTERM while waiting for the fleet must stop the daemon cleanly too.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        sqs, s3, dynamodb = await _clients(settings, stack)
        http = await stack.enter_async_context(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)))
        pool = EndpointPool(settings.synth, call_timeout_s=settings.call_timeout_s,
                            max_attempts=settings.max_attempts)
        await pool.start()
        stack.push_async_callback(pool.close)
        metrics.watch_endpoints(lambda: pool.endpoints)
        capacity = asyncio.ensure_future(pool.wait_until_capacity(_STARTUP_WAIT_S))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({capacity, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            capacity.cancel()
            logger.info("stopped before the fleet was up")
            return
        stopped.cancel()
        logger.info("synth fleet: %d endpoint(s), capacity %d", len(pool.endpoints), capacity.result())
        queue = JobQueue(sqs, settings.queue_url, dlq_url=settings.dlq_url or None,
                         visibility_timeout_s=settings.visibility_timeout_s)
        await queue.start()
        orchestrator = Orchestrator(
            settings, queue=queue, pool=pool, metrics=metrics, sqs_client=sqs,
            store=ClipStore(s3, http, bucket=settings.bucket or None, upload_hosts=settings.upload_hosts),
            table=ResultTable(dynamodb, settings.table),
        )
        stopper = asyncio.create_task(_stop_when_set(stop, orchestrator))
        try:
            await orchestrator.run()
        finally:
            stopper.cancel()
            await asyncio.shield(queue.close(release_held=True))
    logger.info("stopped")


async def _stop_when_set(stop: asyncio.Event, orchestrator: Orchestrator) -> None:
    await stop.wait()
    orchestrator.request_stop()


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.command == "init":
        asyncio.run(init(settings))
        return 0
    metrics = OrchestratorMetrics()
    server, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=metrics.registry)
    logger.info("metrics on %s:%d", settings.metrics_host, server.server_port)
    asyncio.run(run(settings, metrics=metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
