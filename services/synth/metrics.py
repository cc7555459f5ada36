"""Prometheus metrics of one synth server. Every series carries `model` and `gpu_model`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chorus_synth.devices import DeviceInfo

INFERENCE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
QUEUE_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class SynthMetrics:
    def __init__(self, model: str, devices: list[DeviceInfo], registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # Server-wide series name the server's GPU models together (one, on a homogeneous node).
        self.model = model
        self.gpu_model = "+".join(sorted({d.gpu_model for d in devices})) or "none"
        server = ("model", "gpu_model")
        per_device = ("model", "gpu_model", "device")
        r = self.registry
        self._requests = Counter(
            "chorus_synth_requests", "RPCs finished, by method and gRPC status code.",
            ("method", "code", *server), registry=r,
        )
        self._clips = Counter(
            "chorus_synth_clips", "Clips finished (one per Synthesize, batch item or section), by gRPC status code.",
            ("code", *server), registry=r,
        )
        self._inference = Histogram(
            "chorus_synth_inference_seconds", "Seconds each batch spent in Bark.", per_device,
            buckets=INFERENCE_BUCKETS_S, registry=r,
        )
        self._batch_size = Histogram(
            "chorus_synth_batch_size", "Clips per batch.", per_device, buckets=BATCH_BUCKETS, registry=r,
        )
        self._audio = Counter(
            "chorus_synth_audio_seconds", "Seconds of audio generated.", per_device, registry=r,
        )
        self._queue = Histogram(
            "chorus_synth_queue_seconds", "Seconds a clip waited between admission and the start of its batch.",
            server, buckets=QUEUE_BUCKETS_S, registry=r,
        )
        self._characters = Counter(
            "chorus_synth_characters", "Characters of text turned into audio.", server, registry=r,
        )
        self._words = Counter("chorus_synth_words", "Words of text turned into audio.", server, registry=r)
        self._in_flight = Gauge(
            "chorus_synth_in_flight_requests", "RPCs being handled.", server, registry=r,
        )
        self._admitted = Gauge(
            "chorus_synth_admitted_clips", "Clips waiting for or running on a replica.", server, registry=r,
        )
        self._ready = Gauge(
            "chorus_synth_model_ready", "1 when the model is loaded and warmed up and the server is serving.",
            server, registry=r,
        )
        self._device_info = Gauge(
            "chorus_synth_device_info", "One series per replica's device; the value is always 1.",
            per_device, registry=r,
        )
        self._device_memory = Gauge(
            "chorus_synth_device_memory_bytes", "Total memory of each replica's device.", per_device, registry=r,
        )
        labels = {"model": model, "gpu_model": self.gpu_model}
        self.queue_seconds = self._queue.labels(**labels)
        self.in_flight = self._in_flight.labels(**labels)
        self.admitted = self._admitted.labels(**labels)
        self.ready = self._ready.labels(**labels)
        self.ready.set(0)
        for device in devices:
            device_labels = self._device_labels(device)
            self._device_info.labels(**device_labels).set(1)
            self._device_memory.labels(**device_labels).set(device.memory_bytes)
            # Present from the start, so that rates over them are defined before the first clip.
            self._audio.labels(**device_labels)
            self._inference.labels(**device_labels)
            self._batch_size.labels(**device_labels)
        self._characters.labels(**labels)
        self._words.labels(**labels)

    def _device_labels(self, device: DeviceInfo) -> dict[str, str]:
        return {"model": self.model, "gpu_model": device.gpu_model, "device": device.name}

    def observe_request(self, method: str, code: str) -> None:
        self._requests.labels(method=method, code=code, model=self.model, gpu_model=self.gpu_model).inc()

    def observe_batch(self, device: DeviceInfo, batch_size: int, inference_seconds: float) -> None:
        labels = self._device_labels(device)
        self._batch_size.labels(**labels).observe(batch_size)
        self._inference.labels(**labels).observe(inference_seconds)

    def observe_clip(self, code: str, *, device: DeviceInfo | None = None, text: str = "",
                     audio_seconds: float = 0.0) -> None:
        self._clips.labels(code=code, model=self.model, gpu_model=self.gpu_model).inc()
        if device is not None:
            self._audio.labels(**self._device_labels(device)).inc(audio_seconds)
            self._characters.labels(model=self.model, gpu_model=self.gpu_model).inc(len(text))
            self._words.labels(model=self.model, gpu_model=self.gpu_model).inc(len(text.split()))
