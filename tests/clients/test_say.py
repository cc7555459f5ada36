"""`chorus say` against a real random:tiny synth server on loopback."""

from __future__ import annotations

import asyncio

import pytest
import soundfile

from chorus_clients import cli
from chorus_synth.server import State, SynthServer
from chorus_synth.settings import Settings


@pytest.fixture(scope="module")
async def synth_address():
    server = SynthServer(Settings(model="random:tiny", devices="cpu", host="127.0.0.1", port=0, metrics_port=0,
                                  metrics_host="127.0.0.1", max_clip_seconds=0.3, max_batch=4,
                                  workers="thread"))
    await server.start()
    async with asyncio.timeout(60):
        while server.state is State.STARTING:
            await asyncio.sleep(0.02)
    assert server.state is State.READY, server.state_message
    yield f"127.0.0.1:{server.port}"
    await server.stop(grace_s=0)


async def say(*argv: str) -> int:
    # cli.main runs its own event loop; the server lives on this one, so the command runs in a thread.
    return await asyncio.to_thread(cli.main, ["say", *argv])


async def test_a_short_text_is_one_clip(synth_address, tmp_path, capsys):
    out = tmp_path / "hello.wav"
    assert await say("Hello there.", "--synth", synth_address, "--out", str(out), "--voice", "v2/en_speaker_3") == 0
    info = soundfile.info(str(out))
    assert info.format == "WAV" and 0 < info.duration <= 0.35
    printed = capsys.readouterr().out
    assert "real-time factor" in printed and "cpu" in printed and f"{info.duration:.2f} s" in printed


async def test_a_long_text_from_a_file_is_streamed_and_joined(synth_address, tmp_path, capsys):
    text = " ".join(f"Sentence number {i} is here." for i in range(12))  # 60 words: several sections
    source = tmp_path / "long.txt"
    source.write_text(text)
    out = tmp_path / "long.mp3"
    assert await say("--file", str(source), "--synth", synth_address, "--out", str(out), "--max-words", "10") == 0
    info = soundfile.info(str(out))
    assert info.format == "MP3"
    # Six or more sections of at most 0.3 s each, joined with nothing between them.
    assert 6 * 0.1 < info.duration <= 6 * 0.31 + 0.5
    assert "sections" in capsys.readouterr().err


async def test_errors_are_named(synth_address, tmp_path, capsys):
    assert await say("Hi.", "--synth", synth_address, "--out", str(tmp_path / "x.aiff")) == 2
    assert "--out must end in" in capsys.readouterr().err
    assert await say("Hi.", "--synth", synth_address, "--out", str(tmp_path / "x.wav"), "--voice", "nobody") == 1
    err = capsys.readouterr().err
    assert "NOT_FOUND" in err and "unknown voice" in err
    assert not (tmp_path / "x.wav").exists()
