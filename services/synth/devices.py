"""Which devices to run replicas on, and what they are."""

from __future__ import annotations

import dataclasses
import os

import torch


class DeviceError(ValueError):
    """A --devices value that names no usable device; the message says what is available."""


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    name: str
    # "NVIDIA GeForce RTX 4090"; "cpu" on CPU.
    gpu_model: str
    memory_bytes: int


def parse_devices(spec: str) -> list[torch.device]:
    """`auto`: every CUDA device, else the CPU. Otherwise a comma-separated list; a device may repeat."""
    spec = spec.strip().lower()
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec in ("", "auto"):
        return [torch.device("cuda", i) for i in range(cuda_count)] or [torch.device("cpu")]
    devices = []
    for part in (p.strip() for p in spec.split(",")):
        try:
            device = torch.device(part)
        except RuntimeError as exc:
            raise DeviceError(f"--devices: {part!r} is not a device; use auto, cpu or cuda:N") from exc
        if device.type == "cuda":
            index = 0 if device.index is None else device.index
            if index >= cuda_count:
                raise DeviceError(
                    f"--devices: {part} is not present; this machine has {cuda_count} CUDA device(s)"
                )
            device = torch.device("cuda", index)
        elif device.type != "cpu":
            raise DeviceError(f"--devices: {part!r} is not supported; use cpu or cuda:N")
        devices.append(device)
    return devices


def describe(device: torch.device) -> DeviceInfo:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return DeviceInfo(name=str(device), gpu_model=props.name, memory_bytes=props.total_memory)
    memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return DeviceInfo(name=str(device), gpu_model="cpu", memory_bytes=memory_bytes)
