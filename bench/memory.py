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
import shutil
import subprocess
from pathlib import Path

from common import synth_process
from synth_throughput import Config, Samples, run_cell


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


async def measure(*, model: str, devices: str, clip_seconds: float, max_batch: int, requests: int) -> dict:
    async with synth_process("--model", model, "--devices", devices, "--max-batch", str(max_batch),
                             "--max-clip-seconds", str(clip_seconds)) as (process, stub):
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
