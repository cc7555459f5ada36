"""`chorus say`: text to an audio file through one synth endpoint; unary for a short text, streaming for a long one."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import grpc
import numpy as np

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc
from chorus_synth import audio
from chorus_synth.sections import DEFAULT_MAX_WORDS

FORMATS = {".wav": audio.Encoding.WAV, ".mp3": audio.Encoding.MP3, ".ogg": audio.Encoding.OGG_OPUS,
           ".flac": audio.Encoding.FLAC}


class SectionsFailed(Exception):
    """Some sections of a streamed text failed: no file with holes is written."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "say", help="synthesize a text into an audio file",
        description="Synthesize TEXT (or --file, or standard input) through a synth endpoint into --out. A text of "
        "at most --max-words words is one clip (Synthesize); a longer one is split into sections by the server "
        "and streamed (StreamSynthesize), then joined.")
    parser.add_argument("text", nargs="?", help="the text; omit it to read --file or standard input")
    parser.add_argument("--file", type=Path, help="read the text from this file ('-' for standard input)")
    parser.add_argument("--synth", default="localhost:50051", help="synth endpoint host:port (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="output file: .wav, .mp3, .ogg (Opus) or .flac")
    parser.add_argument("--voice", default="", help="voice preset, e.g. v2/en_speaker_6 (default: the server's)")
    parser.add_argument("--sample-rate", type=int, default=0, help="output sample rate in Hz (default: the model's)")
    parser.add_argument("--seed", type=int, help="make the output reproducible")
    parser.add_argument("--max-seconds", type=float, help="cap each clip's length in seconds")
    parser.add_argument("--max-words", type=int, default=DEFAULT_MAX_WORDS,
                        help="longest text sent as one clip, and the most words per streamed section "
                        "(default: %(default)s)")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="deadline of the call (default: %(default)s)")
    parser.set_defaults(handler=say)


def _text(args: argparse.Namespace) -> str:
    if args.text is not None:
        return args.text
    if args.file is None or str(args.file) == "-":
        return sys.stdin.read()
    return args.file.read_text(encoding="utf-8")


async def say(args: argparse.Namespace) -> int:
    encoding = FORMATS.get(args.out.suffix.lower())
    if encoding is None:
        print(f"chorus say: --out must end in one of {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    try:
        text = _text(args)
    except OSError as exc:
        print(f"chorus say: cannot read the text: {exc}", file=sys.stderr)
        return 2
    if not text.strip():
        print("chorus say: the text is empty", file=sys.stderr)
        return 2
    settings = pb.GenerationSettings()
    if args.seed is not None:
        settings.seed = args.seed
    if args.max_seconds is not None:
        settings.max_seconds = args.max_seconds
    started = time.monotonic()
    try:
        async with grpc.aio.insecure_channel(args.synth) as channel:
            stub = synth_pb2_grpc.SynthStub(channel)
            if len(text.split()) <= args.max_words:
                data, duration_s, inference_s, gpu_models = await _unary(stub, text, encoding, settings, args)
            else:
                data, duration_s, inference_s, gpu_models = await _stream(stub, text, encoding, settings, args)
    except grpc.aio.AioRpcError as exc:
        print(f"chorus say: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except SectionsFailed as exc:
        print(f"chorus say: no file written, sections failed: {exc}", file=sys.stderr)
        return 1
    wall_s = time.monotonic() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    rtf = duration_s / inference_s if inference_s else float("nan")
    print(f"{args.out}: {duration_s:.2f} s of audio on {', '.join(sorted(gpu_models))}; real-time factor {rtf:.2f} "
          f"(audio seconds per inference second), {duration_s / wall_s:.2f} per wall second")
    return 0


async def _unary(stub, text, encoding, settings, args):
    reply = await stub.Synthesize(pb.SynthesizeRequest(
        text=text, voice=args.voice, encoding=encoding.value, sample_rate_hz=args.sample_rate, settings=settings),
        timeout=args.timeout_s)
    return reply.audio, reply.duration_seconds, reply.served_by.inference_seconds, {reply.served_by.gpu_model}


async def _stream(stub, text, encoding, settings, args):
    # Sections come as raw PCM and are joined here, then encoded once into the file's format.
    request = pb.StreamSynthesizeRequest(
        text=text, voice=args.voice, encoding=pb.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=args.sample_rate,
        settings=settings, max_section_words=args.max_words)
    pieces, rate, inference_s, gpu_models, failed = [], 0, 0.0, set(), []
    async for message in stub.StreamSynthesize(request, timeout=args.timeout_s):
        kind = message.WhichOneof("event")
        if kind == "start":
            rate = message.start.sample_rate_hz
            print(f"{message.start.section_count} sections", file=sys.stderr)
        elif kind == "section":
            section = message.section
            if section.HasField("error"):
                failed.append(f"section {section.index}: {section.error.code_name}: {section.error.message}")
                continue
            pieces.append(np.frombuffer(section.audio, dtype="<i2").astype(np.float32) / 32768.0)
            inference_s += section.served_by.inference_seconds
            gpu_models.add(section.served_by.gpu_model)
    if failed:
        raise SectionsFailed("; ".join(failed))
    clip = await asyncio.to_thread(audio.encode, np.concatenate(pieces), rate, encoding)
    return clip.data, clip.duration_seconds, inference_s, gpu_models
