"""One process per device. Each replica's Bark runs in a process of its own, so that Python's GIL does not serialize
the decode loops of several GPUs; the server talks to it over a pipe. A worker that dies is started again."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading

from chorus_synth.devices import DeviceInfo
from chorus_synth.engine import ClipOutput, ClipRequest, EngineError

logger = logging.getLogger(__name__)

# CUDA cannot be used in a forked child, and the parent runs gRPC's threads: workers are spawned.
_CONTEXT = multiprocessing.get_context("spawn")
# torch's OpenMP threads (libgomp) spin for 300k rounds before they sleep: when other processes share the cores, a
# CPU worker's threads burn the time slices their peers need. bench/contention.py, 16 clips at once: with a busy
# neighbour 14-17 s with libgomp's default, 6.5-7.3 s with 1000; on quiet cores 2.8-3.0 s against 3.5 s. A CPU
# worker is what runs beside the orchestrator and moto in `chorus run` and in tests, so it starts with 1000. libgomp
# reads it when it loads, before the worker's code runs: it goes in the environment the worker is spawned with. A
# value the operator set is kept.
_CPU_WORKER_ENV = {"GOMP_SPINCOUNT": "1000"}


class WorkerDied(EngineError):
    """The worker process exited while it held a batch; the batch can be run again elsewhere."""


class WorkerFailed(EngineError):
    """A worker could not load its model; the message says why."""


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    model: str
    device: str
    warmup: bool = True
    # torch's intra-op threads; CPU workers share the machine's cores.
    threads: int | None = None


@dataclasses.dataclass(frozen=True)
class WorkerReady:
    voices: tuple[str, ...]
    sample_rate_hz: int
    attn_implementation: str


def _serve(connection: multiprocessing.connection.Connection, spec: WorkerSpec) -> None:
    """The worker process: load, warm up, say so, then answer one batch at a time until the pipe closes."""
    import torch

    from chorus_synth.devices import describe
    from chorus_synth.engine import BarkEngine
    from chorus_synth.models import load_bark

    if spec.threads:
        torch.set_num_threads(spec.threads)
    try:
        device = torch.device(spec.device)
        loaded = load_bark(spec.model, device)
        engine = BarkEngine(loaded, describe(device))
        if spec.warmup:
            engine.warm_up()
    except Exception as exc:  # noqa: BLE001 - reported to the server, which fails with it
        connection.send(("failed", str(exc)))
        return
    connection.send(("ready", WorkerReady(loaded.voices, loaded.sample_rate_hz, loaded.attn_implementation)))
    while True:
        try:
            batch = connection.recv()
        except EOFError:
            return
        connection.send(engine.generate(batch))


class ProcessEngine:
    """A replica in a worker process, used like a BarkEngine: `generate` blocks until the batch is done. Calls come
    from one thread at a time (the replica's own)."""

    def __init__(self, spec: WorkerSpec, device_info: DeviceInfo) -> None:
        self.spec = spec
        self.device_info = device_info
        self.ready: WorkerReady | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: multiprocessing.connection.Connection | None = None
        self._lock = threading.Lock()
        self.restarts = 0
        self.batches = 0  # batches answered
        self.busy = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> WorkerReady:
        """Starts the worker and waits until its model is loaded and warm; WorkerFailed if it cannot load."""
        if self.spec.device.startswith("cpu"):
            for name, value in _CPU_WORKER_ENV.items():
                os.environ.setdefault(name, value)
        parent, child = _CONTEXT.Pipe()
        process = _CONTEXT.Process(target=_serve, args=(child, self.spec), name=f"chorus-worker-{self.spec.device}",
                                   daemon=True)
        process.start()
        child.close()
        try:
            status, detail = parent.recv()
        except EOFError:
            process.join()
            raise WorkerFailed(f"worker on {self.spec.device} exited with status {process.exitcode} while loading")
        if status != "ready":
            process.join()
            raise WorkerFailed(detail)
        self._process, self._connection, self.ready = process, parent, detail
        logger.info("worker %d on %s ready", process.pid, self.spec.device)
        return detail

    def generate(self, batch: list[ClipRequest]) -> list[ClipOutput | EngineError]:
        with self._lock:
            self.busy = True
            try:
                self._connection.send(batch)
                outputs = self._connection.recv()
                self.batches += 1
                return outputs
            except (EOFError, OSError) as exc:
                died = self._process.pid
                self._process.join(timeout=5)
                logger.error("worker %d on %s died (exit status %s) with a batch of %d: restarting", died,
                             self.spec.device, self._process.exitcode, len(batch))
                self._restart()
                raise WorkerDied(f"the worker on {self.spec.device} died while generating") from exc
            finally:
                self.busy = False

    def _restart(self) -> None:
        self._connection.close()
        self.restarts += 1
        try:
            self.start()
        except WorkerFailed:
            logger.exception("worker on %s could not be restarted", self.spec.device)
            raise

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
            if self._process is not None:
                self._process.join(timeout=10)
                if self._process.is_alive():
                    self._process.kill()
                    self._process.join()


def cpu_threads(worker_count: int) -> int:
    """Cores each of several CPU workers gets, so that they do not oversubscribe the machine."""
    return max(1, (os.cpu_count() or 1) // worker_count)
