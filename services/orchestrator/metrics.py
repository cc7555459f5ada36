"""Prometheus metrics of the orchestrator. Clip series carry `gpu_model`, taken from each synth reply."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from chorus_orchestrator.endpoints import EndpointState

INFERENCE_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
STAGE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
STAGES = ("receive", "synth", "upload", "record", "delete", "total")
# The reasons daemon.py counts. Their series exist from the start at 0, so that rate() and increase() see the first
# event (a counter that appears at 1 has no increase to show).
RELEASE_REASONS = ("shutdown", "synth", "upload", "record", "error")
FAILURE_REASONS = ("synth", "upload", "record", "error", "lease_lost")
DEAD_LETTER_REASONS = ("invalid_job", "synth_refused", "upload_not_allowed")


class _EndpointCollector(Collector):
    """Reads the endpoint pool's state at scrape time."""

    def __init__(self, endpoints: Callable[[], Iterable[EndpointState]]) -> None:
        self._endpoints = endpoints

    def collect(self):
        up = GaugeMetricFamily("chorus_orchestrator_endpoint_up",
                               "1 while a synth endpoint takes work, 0 while it is set aside.",
                               labels=("endpoint", "gpu_model"))
        in_flight = GaugeMetricFamily("chorus_orchestrator_endpoint_in_flight",
                                      "Synth calls in flight per endpoint.", labels=("endpoint", "gpu_model"))
        capacity = GaugeMetricFamily("chorus_orchestrator_endpoint_capacity",
                                     "Calls an endpoint runs at once, as it reports.", labels=("endpoint", "gpu_model"))
        for state in self._endpoints():
            labels = (state.address, state.gpu_model or "unknown")
            up.add_metric(labels, 1.0 if state.up else 0.0)
            in_flight.add_metric(labels, state.in_flight)
            capacity.add_metric(labels, state.capacity)
        return [up, in_flight, capacity]

    def describe(self):
        return []


class OrchestratorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.clips = Counter("chorus_orchestrator_clips", "Jobs done: clip stored, recorded and deleted.",
                             ("gpu_model",), registry=r)
        self.audio_seconds = Counter("chorus_orchestrator_audio_seconds", "Seconds of audio stored.",
                                     ("gpu_model",), registry=r)
        self.words = Counter("chorus_orchestrator_words", "Words read aloud.", ("gpu_model",), registry=r)
        self.inference_seconds = Histogram(
            "chorus_orchestrator_inference_seconds",
            "Synth inference seconds per clip, as the synth server reports them; audio_seconds_total over this "
            "histogram's sum is the real-time factor.",
            ("gpu_model",), buckets=INFERENCE_BUCKETS_S, registry=r)
        self.received = Counter("chorus_orchestrator_messages_received", "SQS messages received.", registry=r)
        self.deleted = Counter("chorus_orchestrator_messages_deleted", "SQS messages deleted.", registry=r)
        self.released = Counter("chorus_orchestrator_messages_released",
                                "SQS messages released for redelivery, by reason.", ("reason",), registry=r)
        self.dead_lettered = Counter("chorus_orchestrator_messages_dead_lettered",
                                     "Jobs sent to the dead-letter queue, by reason.", ("reason",), registry=r)
        self.skipped = Counter("chorus_orchestrator_jobs_skipped",
                               "Jobs acknowledged without work: their clip and record already existed.", registry=r)
        self.retries = Counter("chorus_orchestrator_synth_retries",
                               "Synth attempts beyond the first, on another endpoint.", registry=r)
        self.failed = Counter("chorus_orchestrator_jobs_failed", "Jobs that did not finish, by reason.",
                              ("reason",), registry=r)
        self.held = Gauge("chorus_orchestrator_jobs_held", "Jobs received and not yet deleted or released.",
                          registry=r)
        self.max_held = Gauge("chorus_orchestrator_jobs_held_limit", "The most jobs held at once.", registry=r)
        self.stage_seconds = Histogram("chorus_orchestrator_stage_seconds", "Seconds per stage of a job.",
                                       ("stage",), buckets=STAGE_BUCKETS_S, registry=r)
        self.queue_messages = Gauge("chorus_orchestrator_queue_messages",
                                    "Messages in the job queue as SQS reports them (approximate).", ("state",),
                                    registry=r)
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        for counter, reasons in ((self.released, RELEASE_REASONS), (self.failed, FAILURE_REASONS),
                                 (self.dead_lettered, DEAD_LETTER_REASONS)):
            for reason in reasons:
                counter.labels(reason=reason)

    def watch_endpoints(self, endpoints: Callable[[], Iterable[EndpointState]]) -> None:
        self.registry.register(_EndpointCollector(endpoints))
