"""The orchestrator's jobs per second and CPU per job: moto's server on loopback, a random:tiny synth server.

The orchestrator runs as its own process (`chorus-orchestrator run`), so its CPU time is its own: read from
/proc/<pid>/stat when every job is recorded, before it is stopped, and counted from its first recorded job so that
start-up (imports, connections) is left out. Moto and the synth server share the same cores, so jobs per second here
is bounded by them; CPU per job is the orchestrator's figure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path

from aiobotocore.session import get_session
from common import load_average, synth_server
from moto.server import ThreadedMotoServer

from chorus_orchestrator.main import init
from chorus_orchestrator.settings import Settings

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


async def enqueue(sqs, queue_url: str, jobs: int) -> None:
    for start in range(0, jobs, 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps({
            "id": f"doc{i // 20}", "voice": f"v2/en_speaker_{i % 10}", "script_section": f"Sentence {i}.",
            "section_index": i % 20})} for i in range(start, min(start + 10, jobs))]
        await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


async def run(*, jobs: int, clip_seconds: float, max_batch: int) -> dict:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        async with synth_server(model="random:tiny", devices="cpu", max_clip_seconds=clip_seconds,
                                max_batch=max_batch, max_queued=256) as synth:
            row = await _measure(moto, f"127.0.0.1:{synth.port}", jobs)
    finally:
        moto.stop()
    row["clip_seconds"] = clip_seconds
    print(f"orchestrator: {row['cpu_ms_per_job']:.1f} ms CPU per job, {row['jobs_per_second']:.2f} jobs/s",
          flush=True)
    return {"benchmark": "orchestrator_throughput", "model": "random:tiny", "synth_devices": "cpu", "rows": [row],
            "settings": {"max_batch": max_batch, "jobs": jobs, "clip_seconds": clip_seconds}}


async def _measure(moto: ThreadedMotoServer, synth: str, jobs: int) -> dict:
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    name = uuid.uuid4().hex[:8]
    settings = Settings(command="init", queue_url=f"{endpoint}/123456789012/bench-{name}",
                        dlq_url=f"{endpoint}/123456789012/bench-{name}-dlq", bucket=f"bench-{name}",
                        table=f"bench-{name}", synth=(synth,), endpoint_url=endpoint)
    await init(settings)
    session = get_session()
    async with session.create_client("sqs", region_name="us-east-1", endpoint_url=endpoint) as sqs, \
            session.create_client("dynamodb", region_name="us-east-1", endpoint_url=endpoint) as dynamodb:
        await enqueue(sqs, settings.queue_url, jobs)
        load_before = load_average()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chorus_orchestrator.main", "run", "--queue-url", settings.queue_url,
            "--dlq-url", settings.dlq_url, "--bucket", settings.bucket, "--table", settings.table,
            "--synth", synth, "--endpoint-url", endpoint, "--metrics-port", "0",
            "--metrics-host", "127.0.0.1", "--log-level", "WARNING",
        )
        try:
            started = time.perf_counter()
            first = None  # (time, cpu seconds, jobs done) when the first job is recorded: start-up is over
            while True:
                count = (await dynamodb.scan(TableName=settings.table, Select="COUNT"))["Count"]
                if first is None and count:
                    first = (time.perf_counter(), cpu_seconds(process.pid), count)
                if count >= jobs:
                    break
                await asyncio.sleep(0.1)
            wall_s = time.perf_counter() - started
            total_cpu_s = cpu_seconds(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            await process.wait()
    steady_jobs = jobs - first[2]
    return {
        "jobs": jobs, "wall_s": wall_s, "jobs_per_second": jobs / wall_s,
        "steady_jobs_per_second": steady_jobs / (started + wall_s - first[0]),
        "orchestrator_cpu_s": total_cpu_s, "startup_cpu_s": first[1],
        "cpu_ms_per_job": 1000 * (total_cpu_s - first[1]) / steady_jobs,
        "load_average_before": load_before, "load_average_after": load_average(),
    }
