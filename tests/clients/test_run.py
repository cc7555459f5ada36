"""`chorus run` end to end on the shipped sample corpus: moto, a random:tiny synth process and the orchestrator."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile

SAMPLES = Path(__file__).resolve().parents[2] / "clients" / "samples"
DOCUMENTS = sorted(p.stem for p in SAMPLES.glob("*.txt"))
PAUSE_MS = 200


def chorus_run(out: Path, *extra: str, log_level: str = "WARNING") -> list[str]:
    return [sys.executable, "-m", "chorus_clients.cli", "--log-level", log_level, "run", str(SAMPLES),
            "--out", str(out), "--model", "random:tiny", "--devices", "cpu", "--max-clip-seconds", "0.3",
            "--pause-ms", str(PAUSE_MS), *extra]


def cached_records(out: Path) -> list[dict]:
    path = out / ".chorus" / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_sample_corpus_becomes_one_file_per_document_and_a_report(tmp_path):
    result = subprocess.run(chorus_run(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    records = cached_records(tmp_path)
    for document in DOCUMENTS:
        clips = sorted((int(r["section_index"]["N"]), float(r["audio_seconds"]["N"]))
                       for r in records if r["document_id"]["S"] == document)
        assert [index for index, _ in clips] == list(range(len(clips))) and len(clips) >= 2
        expected_s = sum(seconds for _, seconds in clips) + (len(clips) - 1) * PAUSE_MS / 1000
        info = soundfile.info(str(tmp_path / f"{document}.mp3"))
        assert info.duration == pytest.approx(expected_s, abs=1e-6), document
    assert "gpu model" in (tmp_path / "report.txt").read_text()
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")
    assert "cpu" in result.stdout

    again = subprocess.run(chorus_run(tmp_path), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"{len(DOCUMENTS)} already narrated" in again.stderr
    assert "starting the synth server" not in again.stderr


def test_interrupted_it_stops_cleanly_and_a_second_run_finishes_without_redoing_work(tmp_path):
    # One clip at a time, so that most sections are still to do when the interrupt comes.
    process = subprocess.Popen(chorus_run(tmp_path, "--max-batch", "1"), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while len(cached_records(tmp_path)) < 2:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "run the same command again" in stderr
    assert not list(tmp_path.glob("*.mp3"))
    done_before = {(r["document_id"]["S"], r["section_index"]["N"]) for r in cached_records(tmp_path)}
    assert 2 <= len(done_before) < 11

    result = subprocess.run(chorus_run(tmp_path, log_level="INFO"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"restored {len(done_before)} finished section(s)" in result.stderr
    # Each restored section is acknowledged by the orchestrator without being synthesized again.
    assert result.stderr.count("clip and record exist: acknowledging without work") == len(done_before)
    assert sorted(p.stem for p in tmp_path.glob("*.mp3")) == DOCUMENTS


def test_a_model_that_cannot_load_is_a_clear_failure(tmp_path):
    command = chorus_run(tmp_path)
    command[command.index("random:tiny")] = "random:nope"
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "could not start random:nope" in result.stderr and "random:tiny" in result.stderr
    assert not list(tmp_path.glob("*.mp3"))
