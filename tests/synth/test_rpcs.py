"""Every RPC of a real grpc.aio server on a loopback port, serving random:tiny on the CPU."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import soundfile

from chorus.synth.v1 import synth_pb2 as pb

from .conftest import request

LOSSLESS_FILE_ENCODINGS = [pb.AUDIO_ENCODING_WAV, pb.AUDIO_ENCODING_FLAC]
FILE_ENCODINGS = [*LOSSLESS_FILE_ENCODINGS, pb.AUDIO_ENCODING_MP3, pb.AUDIO_ENCODING_OGG_OPUS]


def decoded_frames(reply_audio: bytes) -> tuple[int, int]:
    info = soundfile.info(io.BytesIO(reply_audio))
    data, rate = soundfile.read(io.BytesIO(reply_audio), dtype="float32")
    assert len(data) == info.frames
    return info.frames, rate


@pytest.mark.parametrize("encoding", FILE_ENCODINGS, ids=pb.AudioEncoding.Name)
async def test_synthesize_every_encoding_decodes_to_its_duration(stub, encoding):
    reply = await stub.Synthesize(request(request_id="r-1", encoding=encoding))
    assert reply.request_id == "r-1"
    assert reply.encoding == encoding
    frames, rate = decoded_frames(reply.audio)
    assert rate == reply.sample_rate_hz == 24000
    assert frames == reply.sample_count > 0
    assert reply.duration_seconds == pytest.approx(frames / rate, abs=1e-12)


async def test_synthesize_raw_pcm_length_matches(stub):
    reply = await stub.Synthesize(request(encoding=pb.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16000))
    assert reply.sample_rate_hz == 16000
    assert len(reply.audio) == 2 * reply.sample_count
    assert reply.duration_seconds == pytest.approx(reply.sample_count / 16000, abs=1e-12)
    samples = np.frombuffer(reply.audio, dtype="<i2")
    assert np.abs(samples).max() > 0


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
async def test_synthesize_resamples(stub, rate):
    reply = await stub.Synthesize(request(sample_rate_hz=rate, encoding=pb.AUDIO_ENCODING_FLAC))
    frames, decoded_rate = decoded_frames(reply.audio)
    assert decoded_rate == rate
    assert frames == reply.sample_count
    # The clip is capped at 0.5 s of Bark audio (at most 26 semantic tokens).
    assert 0 < reply.duration_seconds <= 0.6


async def test_synthesize_reports_who_served_it(stub):
    reply = await stub.Synthesize(request())
    served = reply.served_by
    assert served.model == "random:tiny"
    assert served.device == "cpu"
    assert served.gpu_model == "cpu"
    assert served.batch_size >= 1
    assert served.inference_seconds > 0
    assert served.queue_seconds >= 0
    assert served.hostname


async def test_settings_cap_the_clip_and_seed_reproduces_it(stub):
    settings = pb.GenerationSettings(max_seconds=0.2, seed=1234, semantic_temperature=0.9)
    first = await stub.Synthesize(request(settings=settings, encoding=pb.AUDIO_ENCODING_PCM_S16LE))
    second = await stub.Synthesize(request(settings=settings, encoding=pb.AUDIO_ENCODING_PCM_S16LE))
    assert first.duration_seconds <= 0.25
    assert first.audio == second.audio


async def test_empty_voice_takes_the_default(stub):
    reply = await stub.Synthesize(pb.SynthesizeRequest(text="Hello."))
    assert reply.sample_count > 0


async def test_concurrent_requests_all_finish_and_share_batches(stub):
    replies = await asyncio.gather(*(stub.Synthesize(request(f"Sentence number {i}.", request_id=str(i)))
                                     for i in range(12)))
    assert sorted(r.request_id for r in replies) == sorted(str(i) for i in range(12))
    assert all(r.sample_count > 0 for r in replies)
    assert max(r.served_by.batch_size for r in replies) > 1


async def test_list_voices(stub):
    reply = await stub.ListVoices(pb.ListVoicesRequest())
    names = {v.name: v.language for v in reply.voices}
    assert names["v2/en_speaker_6"] == "en"
    assert names["v2/de_speaker_0"] == "de"
    assert len(names) == 260


async def test_server_info(stub):
    info = await stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.state == pb.SERVER_STATE_READY
    assert info.model == "random:tiny"
    assert [(d.name, d.gpu_model) for d in info.devices] == [("cpu", "cpu")]
    assert info.devices[0].memory_bytes > 0
    assert info.capacity == 4
    assert info.version
    assert info.native_sample_rate_hz == 24000
    assert set(info.encodings) == set(FILE_ENCODINGS) | {pb.AUDIO_ENCODING_PCM_S16LE}


TEXT = (
    "Preheat the oven to 350 degrees. Mr. Brown mixes the flour, the sugar, and 2.5 cups of milk in a bowl. "
    "Stir until smooth; then pour the batter into a greased pan, spreading it evenly with a spatula so that "
    "every corner is filled and the top is level, without pressing the air out of it. Bake for thirty minutes. "
    "Let it cool before serving."
)


async def test_stream_sections_in_order_and_join_back(stub):
    messages = [m async for m in stub.StreamSynthesize(pb.StreamSynthesizeRequest(
        request_id="doc-1", text=TEXT, voice="v2/en_speaker_1", max_section_words=12,
        encoding=pb.AUDIO_ENCODING_FLAC,
    ))]
    kinds = [m.WhichOneof("event") for m in messages]
    assert kinds[0] == "start" and kinds[-1] == "end" and set(kinds[1:-1]) == {"section"}
    start, end = messages[0].start, messages[-1].end
    sections = [m.section for m in messages[1:-1]]
    assert start.section_count == len(sections) == end.section_count > 3
    assert [s.index for s in sections] == list(range(len(sections)))
    assert " ".join(s.text for s in sections).split() == TEXT.split()
    assert all(len(s.text.split()) <= 12 for s in sections)
    for section in sections:
        assert not section.HasField("error")
        frames, rate = decoded_frames(section.audio)
        assert frames == section.sample_count
        assert section.duration_seconds == pytest.approx(frames / rate)
    assert end.failed_count == 0
    assert end.total_sample_count == sum(s.sample_count for s in sections)
    assert end.total_duration_seconds == pytest.approx(sum(s.duration_seconds for s in sections))


async def test_stream_reports_a_failed_section_and_keeps_the_others(synth_server, stub, monkeypatch):
    # A fault a real Bark cannot be made to produce on demand, injected at the engine seam.
    engine = synth_server.scheduler._engines[0]
    real_run = engine._run

    def failing_run(batch):
        if any("poisoned" in r.text for r in batch):
            raise RuntimeError("injected fault")
        return real_run(batch)

    monkeypatch.setattr(engine, "_run", failing_run)
    text = "First part is fine. The poisoned part fails here. Last part is fine too."
    messages = [m async for m in stub.StreamSynthesize(pb.StreamSynthesizeRequest(text=text, max_section_words=5))]
    sections = [m.section for m in messages if m.HasField("section")]
    failed = [s for s in sections if s.HasField("error")]
    assert [s.text for s in failed] == ["The poisoned part fails here."]
    assert failed[0].error.code_name == "INTERNAL" and "injected fault" in failed[0].error.message
    assert all(s.sample_count > 0 for s in sections if not s.HasField("error"))
    assert len(sections) == 3 and messages[-1].end.failed_count == 1
    assert " ".join(s.text for s in sections) == text


async def test_synthesize_batch_correlates_results_and_reports_bad_items(stub):
    async def requests():
        for i in range(6):
            yield request(f"Item {i}.", request_id=f"ok-{i}", encoding=pb.AUDIO_ENCODING_OGG_OPUS)
        yield request("Who?", request_id="bad-voice", voice="v2/xx_speaker_0")
        yield request("   ", request_id="blank")
        yield request("No id.")
        yield request("Fine too.", request_id="ok-last")

    replies = [r async for r in stub.SynthesizeBatch(requests())]
    by_id = {r.request_id: r for r in replies}
    assert len(replies) == 10
    for i in [*range(6), "last"]:
        reply = by_id[f"ok-{i}"]
        assert reply.WhichOneof("outcome") == "result"
        frames, _ = decoded_frames(reply.result.audio)
        assert frames == reply.result.sample_count
    assert by_id["bad-voice"].error.code_name == "NOT_FOUND"
    assert by_id["blank"].error.code_name == "INVALID_ARGUMENT"
    assert by_id[""].error.code_name == "INVALID_ARGUMENT" and "request_id" in by_id[""].error.message


async def test_synthesize_batch_empty_stream(stub):
    async def nothing():
        return
        yield

    assert [r async for r in stub.SynthesizeBatch(nothing())] == []
