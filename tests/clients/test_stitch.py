from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile

from chorus_clients import cli
from chorus_clients.stitch import DocumentStatus, stitch_documents
from chorus_orchestrator.results import ClipRecord, ResultTable, ensure_table
from chorus_orchestrator.storage import clip_key, ensure_bucket
from chorus_synth.audio import Encoding, encode

REGION = "us-east-1"  # the moto clients' region (conftest.py)
RATE = 24000
PAUSE_MS = 300
PAUSE = PAUSE_MS * RATE // 1000  # 7200 samples
# (seconds, record encoding name, rate): an MP3 and a WAV at 24 kHz, and a WAV at 16 kHz that must be resampled.
CLIPS = [(0.5, "mp3", 24000), (0.8, "wav", 24000), (0.5, "wav", 16000)]
# Samples at 24 kHz: 0.5 s, 0.8 s, and 8000 samples at 16 kHz resampled by 3/2.
CLIP_SAMPLES = [12000, 19200, 12000]
_ENCODINGS = {"mp3": (Encoding.MP3, "mp3"), "wav": (Encoding.WAV, "wav"), "flac": (Encoding.FLAC, "flac"),
              "ogg_opus": (Encoding.OGG_OPUS, "ogg")}


def tone(seconds: float, rate: int, frequency_hz: float = 440.0) -> np.ndarray:
    times = np.arange(round(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * frequency_hz * times)).astype(np.float32)


class World:
    def __init__(self, s3, dynamodb, bucket: str, table: str) -> None:
        self.s3 = s3
        self.dynamodb = dynamodb
        self.bucket = bucket
        self.table = table
        self.results = ResultTable(dynamodb, table)

    async def put_clip(self, document_id: str, index: int, seconds: float, encoding_name: str = "mp3",
                       rate: int = RATE, *, section_count: int | None = None, record: bool = True,
                       upload: bool = True) -> int:
        encoding, ext = _ENCODINGS[encoding_name]
        clip = encode(tone(seconds, rate, 220.0 + 110 * index), rate, encoding)
        key = clip_key("clips/", document_id, index, ext)
        if upload:
            await self.s3.put_object(Bucket=self.bucket, Key=key, Body=clip.data)
        if record:
            await self.results.record(ClipRecord(
                document_id=document_id, section_index=index, text="a few words here", voice="v2/en_speaker_6",
                location=f"s3://{self.bucket}/{key}", audio_seconds=clip.duration_seconds, words=4,
                inference_seconds=1.0, queue_seconds=0.1, gpu_model="NVIDIA GeForce RTX 4090", device="cuda:0",
                endpoint="127.0.0.1:50051", attempt=1, receive_count=1, recorded_at="2026-01-01T00:00:00+00:00",
                section_count=section_count, sample_rate_hz=clip.sample_rate_hz, encoding=encoding_name))
        return clip.sample_count

    async def put_document(self, document_id: str, clips=CLIPS, *, section_count: int | None = -1,
                           leave_out: frozenset[int] = frozenset()) -> None:
        count = len(clips) if section_count == -1 else section_count
        for index, (seconds, encoding_name, rate) in enumerate(clips):
            if index not in leave_out:
                await self.put_clip(document_id, index, seconds, encoding_name, rate, section_count=count)

    async def stitch(self, out_dir: Path, document_ids, **changes):
        options = dict(bucket=self.bucket, table=self.table, prefix="clips/", document_ids=document_ids,
                       out_dir=out_dir, fmt="wav", pause_ms=PAUSE_MS, concurrency=4, progress=False)
        options.update(changes)
        return await stitch_documents(self.s3, self.dynamodb, **options)


@pytest.fixture
async def world(s3, dynamodb, unique) -> World:
    bucket, table = f"clips-{unique}", f"results-{unique}"
    await ensure_bucket(s3, bucket, REGION)
    await ensure_table(dynamodb, table, wait_delay_s=0.1)
    return World(s3, dynamodb, bucket, table)


def only_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac", "ogg"])
async def test_stitched_file_is_every_clip_plus_pauses_exactly(world, tmp_path, fmt):
    await world.put_document("537716")

    report = await world.stitch(tmp_path, ["537716"], fmt=fmt)

    (result,) = report.documents
    assert result.status is DocumentStatus.STITCHED and report.ok
    assert result.path == tmp_path / f"537716.{fmt}"
    assert only_files(tmp_path) == [f"537716.{fmt}"]  # no temporary file left behind
    expected = sum(CLIP_SAMPLES) + 2 * PAUSE
    samples, rate = soundfile.read(result.path, dtype="float32")
    assert rate == RATE == result.sample_rate_hz
    assert samples.shape == (expected,)
    assert result.sample_count == expected
    assert result.duration_seconds == expected / RATE
    assert result.sections == 3 and result.section_count == 3
    if fmt in ("wav", "flac"):  # lossless: the pauses are silence and the clips are where they should be
        first_pause = samples[CLIP_SAMPLES[0]:CLIP_SAMPLES[0] + PAUSE]
        second_pause = samples[sum(CLIP_SAMPLES[:2]) + PAUSE:sum(CLIP_SAMPLES[:2]) + 2 * PAUSE]
        assert not first_pause.any() and not second_pause.any()
        assert np.abs(samples[:CLIP_SAMPLES[0]]).max() > 0.3
        assert np.abs(samples[-CLIP_SAMPLES[2]:]).max() > 0.3


async def test_document_with_a_missing_section_is_reported_and_gets_no_file(world, tmp_path):
    await world.put_document("holes", clips=CLIPS + [(0.5, "mp3", RATE)] * 3, leave_out=frozenset({1, 4, 5}))

    report = await world.stitch(tmp_path, ["holes"])

    (result,) = report.documents
    assert result.status is DocumentStatus.INCOMPLETE and not report.ok
    assert result.missing_sections == (1, 4, 5)
    assert result.section_count == 6
    assert "1, 4-5 of 6" in result.detail
    assert result.path is None
    assert only_files(tmp_path) == []


async def test_document_with_no_records_is_incomplete(world, tmp_path):
    report = await world.stitch(tmp_path, ["nothing-here"])

    assert [(r.status, r.detail) for r in report.documents] == [(DocumentStatus.INCOMPLETE, "no sections recorded")]
    assert only_files(tmp_path) == []


async def test_without_section_count_the_recorded_sections_are_joined_with_a_warning(world, tmp_path, caplog):
    await world.put_document("uncounted", section_count=None, leave_out=frozenset({1}))

    with caplog.at_level(logging.WARNING, logger="chorus_clients.stitch"):
        report = await world.stitch(tmp_path, ["uncounted"])

    (result,) = report.documents
    assert result.status is DocumentStatus.STITCHED
    assert result.section_count is None and result.sections == 2
    assert soundfile.info(result.path).frames == CLIP_SAMPLES[0] + CLIP_SAMPLES[2] + PAUSE == result.sample_count
    assert any("no section_count" in message for message in caplog.messages)


async def test_a_clip_missing_from_the_bucket_fails_the_document(world, tmp_path):
    await world.put_clip("lost", 0, 0.5, section_count=2)
    await world.put_clip("lost", 1, 0.5, section_count=2, upload=False)

    report = await world.stitch(tmp_path, ["lost"])

    (result,) = report.documents
    assert result.status is DocumentStatus.FAILED and not report.ok
    assert "section 1" in result.detail and "NoSuchKey" in result.detail
    assert only_files(tmp_path) == []


async def test_existing_file_is_skipped_and_force_redoes_it(world, tmp_path):
    await world.put_document("again")
    first = await world.stitch(tmp_path, ["again"])
    path = first.documents[0].path
    path.write_bytes(b"stands for an older stitch")

    skipped = await world.stitch(tmp_path, ["again"])

    assert [r.status for r in skipped.documents] == [DocumentStatus.SKIPPED]
    assert skipped.documents[0].path == path and skipped.ok
    assert path.read_bytes() == b"stands for an older stitch"

    forced = await world.stitch(tmp_path, ["again"], force=True)

    assert [r.status for r in forced.documents] == [DocumentStatus.STITCHED]
    assert soundfile.info(path).frames == sum(CLIP_SAMPLES) + 2 * PAUSE


async def test_every_document_of_the_table_concurrently(world, tmp_path):
    lengths = {f"doc-{number}": [0.25 + 0.05 * number] * (1 + number % 3) for number in range(7)}
    for document_id, seconds in lengths.items():
        await world.put_document(document_id, clips=[(s, "mp3", RATE) for s in seconds])
    await world.put_document("doc-holes", clips=[(0.25, "mp3", RATE)] * 2, leave_out=frozenset({0}))

    report = await world.stitch(tmp_path, None, concurrency=3, fmt="mp3", pause_ms=100)

    assert [r.document_id for r in report.documents] == sorted([*lengths, "doc-holes"])
    assert [r.document_id for r in report.incomplete] == ["doc-holes"]
    assert report.incomplete[0].missing_sections == (0,)
    assert len(report.stitched) == 7
    for result in report.stitched:
        seconds = lengths[result.document_id]
        expected = sum(round(s * RATE) for s in seconds) + (len(seconds) - 1) * 2400
        assert soundfile.info(result.path).frames == expected == result.sample_count
    assert only_files(tmp_path) == sorted(f"{document_id}.mp3" for document_id in lengths)


async def test_cli_stitches_reports_and_exits_by_completeness(world, tmp_path, moto_endpoint, capsys):
    await world.put_document("whole")
    await world.put_document("partial", leave_out=frozenset({2}))
    out = tmp_path / "out"
    common = ["stitch", "--bucket", world.bucket, "--table", world.table, "--out", str(out),
              "--endpoint-url", moto_endpoint, "--region", REGION, "--no-progress"]

    # cli.main runs its own event loop (asyncio.run), so it runs in a thread of its own here.
    status = await asyncio.to_thread(cli.main, [*common, "--format", "flac", "--pause-ms", "0"])

    printed = capsys.readouterr().out
    assert status == 1
    assert "stitched 1, skipped 0, incomplete 1, failed 0" in printed
    assert "partial: missing sections 2 of 3" in printed
    assert soundfile.info(out / "whole.flac").frames == sum(CLIP_SAMPLES)
    assert not (out / "partial.flac").exists()

    status = await asyncio.to_thread(cli.main, [*common, "--format", "flac", "--documents", "whole"])

    assert status == 0
    assert "stitched 0, skipped 1, incomplete 0, failed 0" in capsys.readouterr().out

    status = await asyncio.to_thread(cli.main, [*common, "--format", "flac", "--documents", "whole", "--force"])

    assert status == 0
    assert soundfile.info(out / "whole.flac").frames == sum(CLIP_SAMPLES) + 2 * PAUSE


async def test_cli_exits_2_when_the_table_cannot_be_read(world, tmp_path, moto_endpoint, capsys):

    status = await asyncio.to_thread(cli.main, [
        "stitch", "--bucket", world.bucket, "--table", f"{world.table}-missing", "--out", str(tmp_path),
        "--endpoint-url", moto_endpoint, "--region", REGION])

    assert status == 2
    assert "ResourceNotFoundException" in capsys.readouterr().err
