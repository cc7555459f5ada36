"""Peak memory of a synth server: `chorus-synth` as a subprocess, loaded, then under a short load.

Resident memory is the kernel's high-water mark (VmHWM in /proc/<pid>/status) of the server process and of every
process under it (a replica may run in a worker process of its own), summed: at most the true peak of the whole.
GPU memory is what nvidia-smi reports for those processes, sampled during the load; the server does not expose
torch's own peak (`torch.cuda.max_memory_allocated`), so this is the caching allocator's reservation, which is at
least that.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
from synth_throughput import Config, Samples, run_cell

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                pids += process_tree(int(child))
    return pids


def status_kib(pid: int, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def role(pid: int) -> str:
    with contextlib.suppress(OSError):
        command = Path(f"/proc/{pid}/cmdline").read_text()
        if "resource_tracker" in command:
            return "resource_tracker"  # multiprocessing's helper beside spawned workers
        if "spawn_main" in command:
            return "worker"
    return "server"


def resident_mib(pid: int, field: str) -> dict[str, float]:
    """`field` of /proc/<pid>/status, summed by role over the server and every process under it, in MiB."""
    by_role: dict[str, float] = {"server": 0.0}
    for p in process_tree(pid):
        by_role[role(p)] = by_role.get(role(p), 0.0) + status_kib(p, field) / 1024
    return by_role


def gpu_mib(pids: list[int]) -> float | None:
    """What nvidia-smi says these processes hold on the GPUs, or None without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=False).stdout
    used = [line.split(",") for line in out.splitlines() if "," in line]
    return float(sum(int(mib) for pid, mib in used if int(pid) in pids))


async def _port(stderr: asyncio.StreamReader, log: list[str]) -> int:
    while line := (await stderr.readline()).decode(errors="replace"):
        log.append(line)
        if match := re.search(r"listening on \S+:(\d+),", line):
            return int(match.group(1))
    raise RuntimeError("chorus-synth exited before listening:\n" + "".join(log[-20:]))


async def _drain(stderr: asyncio.StreamReader, log: list[str]) -> None:
    while line := await stderr.readline():
        log.append(line.decode(errors="replace"))


async def measure(*, model: str, devices: str, clip_seconds: float, max_batch: int, requests: int) -> dict:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chorus_synth.server", "--model", model, "--devices", devices, "--host", "127.0.0.1",
        "--port", "0", "--metrics-port", "0", "--metrics-host", "127.0.0.1", "--max-batch", str(max_batch),
        "--max-clip-seconds", str(clip_seconds), "--log-level", "INFO", stderr=asyncio.subprocess.PIPE)
    log: list[str] = []
    try:
        port = await _port(process.stderr, log)
        draining = asyncio.create_task(_drain(process.stderr, log))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = synth_pb2_grpc.SynthStub(channel)
            while (info := await stub.GetServerInfo(pb.GetServerInfoRequest())).state == pb.SERVER_STATE_STARTING:
                await asyncio.sleep(0.2)
            if info.state != pb.SERVER_STATE_READY:
                raise RuntimeError(f"chorus-synth is not ready: {info.state_message}")
            ready_rss = resident_mib(process.pid, "VmRSS")
            gpu_samples = [gpu_mib(process_tree(process.pid))]

            async def sample_gpu() -> None:
                while True:
                    await asyncio.sleep(0.5)
                    gpu_samples.append(gpu_mib(process_tree(process.pid)))

            sampling = asyncio.create_task(sample_gpu())
            row = await run_cell(stub, Config(max_batch, "random"), requests, requests, clip_seconds,
                                 random.Random(0), Samples())
            sampling.cancel()
            peak_rss = resident_mib(process.pid, "VmHWM")
            processes = len(process_tree(process.pid))
        process.terminate()
        await process.wait()
        await draining
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    gpu = [g for g in gpu_samples if g is not None]
    result = {
        "model": model, "devices": devices, "requests": requests, "clip_seconds": clip_seconds,
        "max_batch": max_batch, "mean_batch_size": row["mean_batch_size"], "load_wall_s": row["wall_s"],
        "ready_rss_mib": sum(ready_rss.values()), "peak_rss_mib": sum(peak_rss.values()),
        "peak_rss_mib_by_role": peak_rss, "processes": processes, "peak_gpu_mib": max(gpu) if gpu else None,
    }
    print(f"memory {model}: ready {result['ready_rss_mib']:.0f} MiB, peak {result['peak_rss_mib']:.0f} MiB RSS, "
          f"GPU {result['peak_gpu_mib']}", flush=True)
    return result


async def run(*, models: list[tuple[str, int]], devices: str, clip_seconds: float, max_batch: int) -> dict:
    """models: (model, requests sent at once) pairs."""
    rows = [await measure(model=m, devices=devices, clip_seconds=clip_seconds, max_batch=max_batch,
                          requests=requests) for m, requests in models]
    return {"benchmark": "memory", "devices": devices, "rows": rows,
            "settings": {"clip_seconds": clip_seconds, "max_batch": max_batch}}
