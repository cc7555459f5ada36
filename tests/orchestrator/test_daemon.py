"""The orchestrator end to end: moto's server (SQS, S3, DynamoDB) on loopback, real random:tiny synth servers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import sys

from chorus_orchestrator.main import init, run
from chorus_orchestrator.metrics import OrchestratorMetrics
from chorus_orchestrator.results import ResultTable
from chorus_orchestrator.settings import Settings

from .support import job, queue_counts, records, run_until, send


async def test_jobs_become_clips_and_records_and_the_queue_ends_empty(world, sqs, s3, dynamodb):
    await send(sqs, world.queue_url, [job(537716, i, section_count=6, document={"title": "Pie"}) for i in range(6)])

    async def all_recorded():
        return len(await records(dynamodb, world.table)) == 6

    metrics = OrchestratorMetrics()
    await run_until(world, all_recorded, metrics=metrics)
    listing = await s3.list_objects_v2(Bucket=world.bucket, Prefix="clips/537716/")
    keys = sorted(o["Key"] for o in listing["Contents"])
    assert keys == [f"clips/537716/{i:05d}.mp3" for i in range(6)]
    head = await s3.head_object(Bucket=world.bucket, Key=keys[0])
    assert head["ContentType"] == "audio/mpeg" and head["ContentLength"] > 0
    record = await ResultTable(dynamodb, world.table).get("537716", 3)
    assert record.text == "Section 3 reads." and record.voice == "v2/en_speaker_0"
    assert record.location == f"s3://{world.bucket}/clips/537716/00003.mp3"
    assert record.gpu_model == "cpu" and record.device == "cpu" and record.audio_seconds > 0
    assert record.words == 3 and record.section_count == 6 and record.attempt == 1 and record.receive_count == 1
    assert record.extra["document"] == {"title": "Pie"}
    assert await queue_counts(sqs, world.queue_url) == (0, 0)
    assert metrics.clips.labels(gpu_model="cpu")._value.get() == 6
    assert metrics.deleted._value.get() == 6


async def test_reference_job_with_a_presigned_upload_url(world, sqs, s3, dynamodb):
    key = "uploads/recipe-42-00000.mp3"
    upload_url = await s3.generate_presigned_url(
        "put_object", Params={"Bucket": world.bucket, "Key": key, "ContentType": "audio/mpeg"}, ExpiresIn=600)
    # Exactly the reference's message: an int id, the presigned URL, nothing else.
    body = json.dumps({"id": 42, "voice": "v2/en_speaker_0", "script_section": "Mix well.", "section_index": 0,
                       "upload_url": upload_url})
    await send(sqs, world.queue_url, [body])

    async def recorded():
        return len(await records(dynamodb, world.table)) == 1

    await run_until(world, recorded)
    stored = await s3.get_object(Bucket=world.bucket, Key=key)
    assert len(await stored["Body"].read()) > 0
    record = await ResultTable(dynamodb, world.table).get("42", 0)
    assert record.location.startswith("http://127.0.0.1") and "?" not in record.location
    assert await queue_counts(sqs, world.queue_url) == (0, 0)


async def test_poison_messages_are_dead_lettered_with_a_reason_and_the_rest_go_on(world, sqs, dynamodb):
    poison = {
        "not json": "this is not json",
        "missing text": json.dumps({"id": 1, "voice": "v2/en_speaker_0", "section_index": 0}),
        "bad index": job(2, 0, section_index=-1),
        "text over the limit": job(3, 0, text="word " * 400),
        "unknown voice": job(4, 0, voice="v2/xx_speaker_9"),
    }
    await send(sqs, world.queue_url, [*poison.values(), job(5, 0), job(5, 1)])

    async def settled():
        done = len(await records(dynamodb, world.table)) == 2
        return done and await queue_counts(sqs, world.queue_url) == (0, 0)

    await run_until(world, settled)
    dead = []
    while len(dead) < len(poison):
        reply = await sqs.receive_message(QueueUrl=world.dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                          MessageAttributeNames=["All"])
        dead.extend(reply.get("Messages", []))
    reasons = {m["Body"]: m["MessageAttributes"]["chorus-reason"]["StringValue"] for m in dead}
    assert set(reasons) == set(poison.values())
    assert "not JSON" in reasons[poison["not json"]]
    assert "script_section" in reasons[poison["missing text"]]
    assert "section_index" in reasons[poison["bad index"]]
    assert "at most 1000" in reasons[poison["text over the limit"]]
    refused = reasons[poison["unknown voice"]]
    assert refused.startswith("synth_refused") and "unknown voice" in refused


async def test_a_job_longer_than_the_visibility_timeout_is_not_redelivered(world, sqs, dynamodb, synth):
    # 2 s of visibility, and a synth that takes longer than that per clip: the heartbeat must keep it invisible.
    settings = dataclasses.replace(world, visibility_timeout_s=2)
    engine = synth.scheduler._engines[0]
    real_run = engine._run

    def slow_run(batch):
        import time
        time.sleep(3.5)
        return real_run(batch)

    engine._run = slow_run
    try:
        await send(sqs, world.queue_url, [job(77, 0)])

        async def recorded():
            return len(await records(dynamodb, world.table)) == 1

        await run_until(settings, recorded)
    finally:
        engine._run = real_run
    record = await ResultTable(dynamodb, world.table).get("77", 0)
    assert record.receive_count == 1 and record.attempt == 1
    assert await queue_counts(sqs, world.queue_url) == (0, 0)


async def test_storage_and_record_failures_release_the_job_until_they_succeed(world, sqs, s3, dynamodb, unique):
    # Real faults from the real (moto) server: the bucket and the table do not exist yet.
    settings = dataclasses.replace(world, bucket=f"later-{unique}", table=f"later-{unique}")
    await send(sqs, world.queue_url, [job(88, 0)])
    metrics = OrchestratorMetrics()
    stop = asyncio.Event()
    daemon = asyncio.create_task(run(settings, metrics=metrics, stop=stop))
    try:
        async with asyncio.timeout(60):
            while metrics.failed.labels(reason="upload")._value.get() < 1:
                await asyncio.sleep(0.05)
            assert sum(await queue_counts(sqs, world.queue_url)) == 1
            await s3.create_bucket(Bucket=settings.bucket)
            while metrics.failed.labels(reason="record")._value.get() < 1:
                await asyncio.sleep(0.05)
            # The clip is stored, its record failed: the message must still be there.
            assert sum(await queue_counts(sqs, world.queue_url)) == 1
            await init(dataclasses.replace(settings, command="init"))
            while metrics.deleted._value.get() < 1:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 30)
    assert (await ResultTable(dynamodb, settings.table).get("88", 0)) is not None
    assert await queue_counts(sqs, world.queue_url) == (0, 0)


async def test_held_jobs_never_exceed_the_bound(world, sqs, dynamodb):
    settings = dataclasses.replace(world, max_held=3)
    await send(sqs, world.queue_url, [job(99, i) for i in range(12)])
    metrics = OrchestratorMetrics()
    high_water = 0

    async def all_recorded():
        nonlocal high_water
        high_water = max(high_water, metrics.held._value.get())
        return len(await records(dynamodb, world.table)) == 12

    await run_until(settings, all_recorded, metrics=metrics)
    assert 1 <= high_water <= 3


def _orchestrator_process_args(settings: Settings) -> list[str]:
    return [
        sys.executable, "-m", "chorus_orchestrator.main", "run", "--queue-url", settings.queue_url,
        "--dlq-url", settings.dlq_url, "--bucket", settings.bucket, "--table", settings.table,
        "--synth", ",".join(settings.synth), "--endpoint-url", settings.endpoint_url, "--region", settings.region,
        "--metrics-port", "0", "--metrics-host", "127.0.0.1",
        "--visibility-timeout-s", str(settings.visibility_timeout_s), "--drain-grace-s", str(settings.drain_grace_s),
    ]


async def _start(settings: Settings) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *_orchestrator_process_args(settings), stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"},
    )


async def _wait_for_log(process: asyncio.subprocess.Process, pattern: str, log: list[str], count: int = 1) -> None:
    seen = 0
    while seen < count:
        line = (await process.stderr.readline()).decode()
        assert line, "orchestrator exited early:\n" + "".join(log)
        log.append(line)
        if re.search(pattern, line):
            seen += 1


async def test_sigterm_with_jobs_in_flight_releases_them_and_exits_zero(world, sqs, dynamodb):
    await send(sqs, world.queue_url, [job(111, i) for i in range(20)])
    process = await _start(world)
    log: list[str] = []
    try:
        async with asyncio.timeout(90):
            await _wait_for_log(process, r"job 111/\d+: received", log, count=3)
            process.send_signal(signal.SIGTERM)
            rest = (await process.stderr.read()).decode()
            log.append(rest)
            assert await process.wait() == 0, "".join(log)
    finally:
        if process.returncode is None:
            process.kill()
    done = len(await records(dynamodb, world.table))
    visible, invisible = await queue_counts(sqs, world.queue_url)
    # Nothing left invisible (in-flight jobs finished or were released), nothing lost.
    assert invisible == 0, "".join(log)
    assert done + visible == 20
    assert done < 20


async def test_after_sigkill_a_second_orchestrator_finishes_every_job_exactly_once(world, sqs, dynamodb):
    settings = dataclasses.replace(world, visibility_timeout_s=3)
    await send(sqs, world.queue_url, [job(222, i) for i in range(16)])
    first = await _start(settings)
    log: list[str] = []
    try:
        async with asyncio.timeout(60):
            await _wait_for_log(first, r"job 222/\d+: (stored|received)", log, count=6)
        first.kill()  # SIGKILL: no drain, no release; held messages come back when their visibility runs out
        await first.wait()
    finally:
        if first.returncode is None:
            first.kill()

    async def all_recorded():
        return len(await records(dynamodb, world.table)) == 16 and await queue_counts(sqs, world.queue_url) == (0, 0)

    await run_until(settings, all_recorded, timeout_s=120)
    items = await records(dynamodb, world.table)
    assert sorted(int(i["section_index"]["N"]) for i in items) == list(range(16))
