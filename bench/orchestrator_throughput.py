"""The orchestrator's jobs per second and CPU per job: moto's server on loopback, a random:tiny synth server.

    python bench/orchestrator_throughput.py [--jobs 200] [--clip-seconds 0.1]

The orchestrator runs as its own process (`chorus-orchestrator run`), so its CPU time is its own: read from
/proc/<pid>/stat when every job is recorded, before it is stopped. Moto and the synth server share the same cores,
so jobs per second here is bounded by them; CPU per job is the orchestrator's figure. Appends to bench/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import signal
import sys
import time
import uuid
from pathlib import Path

from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer

from chorus_orchestrator.main import init
from chorus_orchestrator.settings import Settings
from chorus_synth.server import State, SynthServer
from chorus_synth.settings import Settings as SynthSettings

HERE = Path(__file__).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clip-seconds", type=float, default=0.1)
    parser.add_argument("--max-batch", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    synth = SynthServer(SynthSettings(model="random:tiny", devices="cpu", host="127.0.0.1", port=0, metrics_port=0,
                                      metrics_host="127.0.0.1", max_clip_seconds=args.clip_seconds,
                                      max_batch=args.max_batch, max_queued=256))
    await synth.start()
    while synth.state is State.STARTING:
        await asyncio.sleep(0.05)
    name = uuid.uuid4().hex[:8]
    settings = Settings(command="init", queue_url=f"{endpoint}/123456789012/bench-{name}",
                        dlq_url=f"{endpoint}/123456789012/bench-{name}-dlq", bucket=f"bench-{name}",
                        table=f"bench-{name}", synth=(f"127.0.0.1:{synth.port}",), endpoint_url=endpoint)
    await init(settings)
    session = get_session()
    async with session.create_client("sqs", region_name="us-east-1", endpoint_url=endpoint) as sqs, \
            session.create_client("dynamodb", region_name="us-east-1", endpoint_url=endpoint) as dynamodb:
        for start in range(0, args.jobs, 10):
            entries = [{"Id": str(i), "MessageBody": json.dumps({
                "id": f"doc{i // 20}", "voice": f"v2/en_speaker_{i % 10}", "script_section": f"Sentence {i}.",
                "section_index": i % 20})} for i in range(start, min(start + 10, args.jobs))]
            await sqs.send_message_batch(QueueUrl=settings.queue_url, Entries=entries)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chorus_orchestrator.main", "run", "--queue-url", settings.queue_url,
            "--dlq-url", settings.dlq_url, "--bucket", settings.bucket, "--table", settings.table,
            "--synth", settings.synth[0], "--endpoint-url", endpoint, "--metrics-port", "0",
            "--metrics-host", "127.0.0.1", "--log-level", "WARNING",
        )
        started = time.perf_counter()
        first = None  # (seconds, cpu seconds, jobs done) when the first job is recorded: start-up is over
        while True:
            count = (await dynamodb.scan(TableName=settings.table, Select="COUNT"))["Count"]
            if first is None and count:
                first = (time.perf_counter(), cpu_seconds(process.pid), count)
            if count >= args.jobs:
                break
            await asyncio.sleep(0.1)
        wall_s = time.perf_counter() - started
        total_cpu_s = cpu_seconds(process.pid)
        steady_jobs = args.jobs - first[2]
        steady_wall_s = time.perf_counter() - first[0]
        process.send_signal(signal.SIGTERM)
        await process.wait()
    await synth.stop(grace_s=0)
    moto.stop()
    row = {
        "jobs": args.jobs, "clip_seconds": args.clip_seconds, "wall_s": wall_s, "jobs_per_second": args.jobs / wall_s,
        "steady_jobs_per_second": steady_jobs / steady_wall_s, "orchestrator_cpu_s": total_cpu_s,
        "startup_cpu_s": first[1], "cpu_ms_per_job": 1000 * (total_cpu_s - first[1]) / steady_jobs,
    }
    print(json.dumps(row))
    record = {"benchmark": "orchestrator_throughput", "date": datetime.date.today().isoformat(),
              "machine": platform.machine(), "cpu_count": os.cpu_count(), "model": "random:tiny",
              "synth_devices": "cpu", "rows": [row], "settings": {"max_batch": args.max_batch}}
    results = HERE / "results.json"
    history = json.loads(results.read_text()) if results.exists() else []
    history.append(record)
    results.write_text(json.dumps(history, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
