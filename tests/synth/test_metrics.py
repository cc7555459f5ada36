"""/metrics of a live server: the series a dashboard needs, each with model and gpu_model, and promtool's approval."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import request


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


async def test_metrics_count_requests_clips_audio_and_devices(synth_server, stub):
    await stub.Synthesize(request("Counting words here."))
    text = await asyncio.to_thread(scrape, synth_server.metrics_port)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("chorus_synth_"):
                assert sample.labels["model"] == "random:tiny", sample
                assert sample.labels["gpu_model"] == "cpu", sample
                samples.setdefault(sample.name, []).append(sample)
    for name in (
        "chorus_synth_requests_total", "chorus_synth_clips_total", "chorus_synth_inference_seconds_bucket",
        "chorus_synth_queue_seconds_bucket", "chorus_synth_audio_seconds_total", "chorus_synth_characters_total",
        "chorus_synth_words_total", "chorus_synth_batch_size_bucket", "chorus_synth_in_flight_requests",
        "chorus_synth_model_ready", "chorus_synth_device_info", "chorus_synth_device_memory_bytes",
    ):
        assert name in samples, f"{name} missing from /metrics"
    ok = [s for s in samples["chorus_synth_requests_total"]
          if s.labels["method"] == "Synthesize" and s.labels["code"] == "OK"]
    assert ok and ok[0].value >= 1
    assert samples["chorus_synth_model_ready"][0].value == 1
    assert samples["chorus_synth_words_total"][0].value >= 3
    assert sum(s.value for s in samples["chorus_synth_audio_seconds_total"]) > 0
    assert samples["chorus_synth_device_info"][0].labels["device"] == "cpu"


async def test_promtool_finds_nothing_wrong_with_the_metrics(synth_server, stub):
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus); CI installs it")
    await stub.Synthesize(request())
    text = await asyncio.to_thread(scrape, synth_server.metrics_port)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr)
