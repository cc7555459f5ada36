"""Where a batch's time goes: the batched Bark engine, stage by stage, for a batch of one and a batch of N.

    python bench/profile_batch.py [--model random:tiny] [--device cpu] [--batch 16] [--clip-seconds 1] [--ops]

Runs `BatchedBark` directly (no server, no queue), with a random voice per item and the engine's settings for the
device. Per stage (semantic, coarse, fine, codec) it prints the seconds per item alone and in the batch, so the
stages that batching does not make cheaper stand out; `--ops` adds torch.profiler's table of the batch's operators.
Not part of `make bench`; its figures of 2026-11-21 are in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from torch.profiler import ProfilerActivity, profile

from chorus_synth.bark_batch import BatchedBark, BatchItem, Sampling
from chorus_synth.engine import (
    DEFAULT_COARSE_TEMPERATURE,
    DEFAULT_FINE_TEMPERATURE,
    DEFAULT_SEMANTIC_TEMPERATURE,
    GenerationParams,
)
from chorus_synth.models import load_bark

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs back home."
STAGES = ("semantic", "coarse", "fine", "codec")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--clip-seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="turns, alternating batch of one and batch of N")
    parser.add_argument("--ops", action="store_true", help="also print torch.profiler's operator table")
    return parser.parse_args()


def run_stages(bark: BatchedBark, items: list[BatchItem], sampling: Sampling) -> dict[str, float]:
    seconds = {}
    with torch.inference_mode():
        started = time.perf_counter()
        semantic = bark._semantic(items, sampling)
        seconds["semantic"] = time.perf_counter() - started
        started = time.perf_counter()
        coarse = bark._coarse(semantic, [bark._coarse_histories(item.history) for item in items], sampling)
        seconds["coarse"] = time.perf_counter() - started
        started = time.perf_counter()
        fine = bark._fine(coarse, items, sampling)
        seconds["fine"] = time.perf_counter() - started
        started = time.perf_counter()
        for codes in fine:
            bark.model.codec_decode(codes[None])
        seconds["codec"] = time.perf_counter() - started
    if bark.model.device.type == "cuda":
        torch.cuda.synchronize()
    return seconds


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    loaded = load_bark(args.model, device)
    bark = BatchedBark(loaded.model, long_pass_rows=1 if device.type == "cpu" else None)  # as BarkEngine does
    cap = GenerationParams(max_seconds=args.clip_seconds).max_semantic_tokens
    sampling = Sampling(True, DEFAULT_SEMANTIC_TEMPERATURE, DEFAULT_COARSE_TEMPERATURE, DEFAULT_FINE_TEMPERATURE)
    voices = random.Random(0).choices(loaded.voices, k=args.batch)
    encoded = loaded.tokenize([TEXT] * args.batch)
    items = [BatchItem(encoded["input_ids"][i], encoded["attention_mask"][i], loaded.voice_prompt(voices[i]), cap)
             for i in range(args.batch)]
    run_stages(bark, items[:2], sampling)  # warm-up
    # Per item: the least of the turns (other work on a shared machine only adds time).
    alone = {stage: float("inf") for stage in STAGES}
    batched = dict(alone)
    for _ in range(args.repeats):
        for stage, seconds in run_stages(bark, items[:1], sampling).items():
            alone[stage] = min(alone[stage], seconds)
        for stage, seconds in run_stages(bark, items, sampling).items():
            batched[stage] = min(batched[stage], seconds / args.batch)
    print(f"{args.model} on {device}, {args.clip_seconds:g} s clips, {torch.get_num_threads()} threads; "
          f"seconds per item, least of {args.repeats} turns")
    print(f"| stage | alone | in a batch of {args.batch} | gain |")
    print("|---|---:|---:|---:|")
    for stage in (*STAGES, "total"):
        one = sum(alone.values()) if stage == "total" else alone[stage]
        many = sum(batched.values()) if stage == "total" else batched[stage]
        print(f"| {stage} | {one:.3f} | {many:.3f} | {one / many:.2f}x |")
    if args.ops:
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            run_stages(bark, items, sampling)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
