"""What the benchmarks share: a description of the machine, results.json, a synth server on loopback (in this
process or as a `chorus-synth` subprocess), percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import grpc
import numpy as np
import torch

from chorus.synth.v1 import synth_pb2 as pb
from chorus.synth.v1 import synth_pb2_grpc
from chorus_synth.server import State, SynthServer
from chorus_synth.settings import Settings

HERE = Path(__file__).parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict:
    """Where and when: every record of results.json starts with these."""
    return {
        "date": datetime.date.today().isoformat(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "gpu_model": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def load_average() -> float:
    """The 1-minute load average: on a shared machine, how much else was running."""
    return round(os.getloadavg()[0], 2)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def append_results(records: list[dict]) -> None:
    history = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else []
    RESULTS_JSON.write_text(json.dumps(history + records, indent=2) + "\n")


@contextlib.asynccontextmanager
async def synth_server(**settings) -> AsyncIterator[SynthServer]:
    """A fresh synth server on a loopback port, READY, stopped on the way out."""
    server = SynthServer(Settings(host="127.0.0.1", port=0, metrics_port=0, metrics_host="127.0.0.1", **settings))
    await server.start()
    try:
        while server.state is State.STARTING:
            await asyncio.sleep(0.05)
        if server.state is not State.READY:
            raise RuntimeError(f"synth server {server.state.name}: {server.state_message}")
        yield server
    finally:
        await server.stop(grace_s=0)


@contextlib.asynccontextmanager
async def synth_process(*flags: str, env: Mapping[str, str] | None = None) -> AsyncIterator[tuple]:
    """`chorus-synth FLAGS` as a subprocess on a loopback port (0: it picks one), READY: yields the process and a stub
    on it; stopped on the way out. Its log is kept, and shown if it exits before listening."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chorus_synth.server", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
        "--metrics-host", "127.0.0.1", "--log-level", "INFO", *flags, stderr=asyncio.subprocess.PIPE, env=env)
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
            yield process, stub
        process.terminate()
        await process.wait()
        await draining
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _port(stderr: asyncio.StreamReader, log: list[str]) -> int:
    while line := (await stderr.readline()).decode(errors="replace"):
        log.append(line)
        if match := re.search(r"listening on \S+:(\d+),", line):
            return int(match.group(1))
    raise RuntimeError("chorus-synth exited before listening:\n" + "".join(log[-20:]))


async def _drain(stderr: asyncio.StreamReader, log: list[str]) -> None:
    while line := await stderr.readline():
        log.append(line.decode(errors="replace"))
