"""The orchestrator's /metrics after real jobs: per-GPU-model series and promtool's approval."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chorus_orchestrator.metrics import OrchestratorMetrics

from .support import job, records, run_until, send


async def test_metrics_after_jobs_are_labelled_by_gpu_model_and_pass_promtool(world, sqs, dynamodb):
    await send(sqs, world.queue_url, [job(5150, i) for i in range(3)] + ["not json"])
    metrics = OrchestratorMetrics()

    async def settled():
        return len(await records(dynamodb, world.table)) == 3 and metrics.dead_lettered.labels(
            reason="invalid_job")._value.get() == 1

    await run_until(dataclasses.replace(world), settled, metrics=metrics)
    text = generate_latest(metrics.registry).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("chorus_orchestrator_clips_total", (("gpu_model", "cpu"),))] == 3
    assert samples[("chorus_orchestrator_audio_seconds_total", (("gpu_model", "cpu"),))] > 0
    assert samples[("chorus_orchestrator_inference_seconds_count", (("gpu_model", "cpu"),))] == 3
    assert samples[("chorus_orchestrator_messages_received_total", ())] == 4
    assert samples[("chorus_orchestrator_messages_deleted_total", ())] == 3
    endpoint = world.synth[0]
    assert samples[("chorus_orchestrator_endpoint_up", (("endpoint", endpoint), ("gpu_model", "cpu")))] == 1
    assert ("chorus_orchestrator_stage_seconds_count", (("stage", "synth"),)) in samples

    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus); CI installs it")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr
