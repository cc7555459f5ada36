"""One Bark replica on one device: a batch of clip requests in, float32 samples out. Blocking; run it in a thread."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time

import numpy as np
import torch

from chorus_synth.bark_batch import BatchedBark, BatchItem, Sampling
from chorus_synth.devices import DeviceInfo
from chorus_synth.models import LoadedBark

logger = logging.getLogger(__name__)


class _BarkInternalWarnings(logging.Filter):
    """BarkModel.generate calls its sub-models' generate with both a generation config and keyword arguments, and
    the coarse stage without an attention mask (its inputs are padded on purpose): transformers warns about each
    on every call, about Bark's own code rather than anything a request did."""

    NOISE = (
        "Passing `generation_config` together with generation-related",
        "The attention mask and the pad token id were not set",
        "The attention mask is not set with a batched input",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(message.startswith(noise) for noise in self.NOISE)


logging.getLogger("transformers.generation.utils").addFilter(_BarkInternalWarnings())

# Bark's semantic tokens come at 49.9 per second of audio (BarkSemanticGenerationConfig.semantic_rate_hz).
SEMANTIC_RATE_HZ = 49.9
# Bark's original defaults (text_temp, waveform_temp, and the fine stage's 0.5).
DEFAULT_SEMANTIC_TEMPERATURE = 0.7
DEFAULT_COARSE_TEMPERATURE = 0.7
DEFAULT_FINE_TEMPERATURE = 0.5


class EngineError(Exception):
    """Generation failed for a reason other than the request itself."""


class DeviceOutOfMemory(EngineError):
    """Even a batch of one did not fit in the device's memory."""


@dataclasses.dataclass(frozen=True)
class GenerationParams:
    """Settings that every clip of one batch shares."""

    semantic_temperature: float = DEFAULT_SEMANTIC_TEMPERATURE
    coarse_temperature: float = DEFAULT_COARSE_TEMPERATURE
    fine_temperature: float = DEFAULT_FINE_TEMPERATURE
    max_seconds: float = 14.0
    # A seeded request is reproducible only alone in its batch: the key below keeps it apart.
    seed: int | None = None

    @property
    def max_semantic_tokens(self) -> int:
        return max(1, math.ceil(self.max_seconds * SEMANTIC_RATE_HZ))


@dataclasses.dataclass(frozen=True)
class ClipRequest:
    text: str
    voice: str
    params: GenerationParams

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys can share a batch: any voices and clip lengths, one set of temperatures. A seeded
        request runs alone, since a batch shares one random stream."""
        p = self.params
        temperatures = (p.semantic_temperature, p.coarse_temperature, p.fine_temperature)
        return temperatures if p.seed is None else (*temperatures, "seeded", id(self))


@dataclasses.dataclass(frozen=True)
class ClipOutput:
    samples: np.ndarray
    sample_rate_hz: int
    batch_size: int
    inference_seconds: float


class BarkEngine:
    def __init__(self, loaded: LoadedBark, device_info: DeviceInfo) -> None:
        self.loaded = loaded
        self.device_info = device_info
        # On a CPU, passes over long sequences run row by row (see BatchedBark); decoding steps still run batched.
        self._bark = BatchedBark(loaded.model, long_pass_rows=1 if loaded.device.type == "cpu" else None)
        self._lock = threading.Lock()

    @property
    def sample_rate_hz(self) -> int:
        return self.loaded.sample_rate_hz

    def warm_up(self) -> None:
        params = GenerationParams(max_seconds=0.5)
        self.generate([ClipRequest("Warming up.", self.loaded.voices[0], params)])

    def generate(self, batch: list[ClipRequest]) -> list[ClipOutput | EngineError]:
        """Generates every clip of a batch of one key, any voices. A batch that runs out of memory is split and
        retried; any other failure of a batch is retried item by item, so one bad clip does not sink the rest."""
        if len({r.batch_key for r in batch}) != 1:
            raise ValueError("a batch must share one set of settings")
        with self._lock:
            # Voices whose prompts are shorter than the stages' histories cannot share a batch with the others.
            groups: dict[tuple[int, int], list[int]] = {}
            for index, request in enumerate(batch):
                shape = self._bark.history_shape(self.loaded.voice_prompt(request.voice))
                groups.setdefault(shape, []).append(index)
            outputs: list[ClipOutput | EngineError | None] = [None] * len(batch)
            for indexes in groups.values():
                for index, output in zip(indexes, self._generate_splitting([batch[i] for i in indexes])):
                    outputs[index] = output
            return outputs

    def _generate_splitting(self, batch: list[ClipRequest]) -> list[ClipOutput | EngineError]:
        try:
            return list(self._run(batch))
        except torch.OutOfMemoryError:
            out_of_memory = True
        except Exception as exc:  # noqa: BLE001 - becomes per-item errors
            if len(batch) == 1:
                logger.exception("generation failed on %s", self.device_info.name)
                return [EngineError(f"generation failed on {self.device_info.name}: {exc}")]
            logger.warning("batch of %d failed on %s: retrying one by one", len(batch), self.device_info.name,
                           exc_info=True)
            out_of_memory = False
        # Retried outside the except block: the exception's traceback holds the failed batch's tensors.
        if not out_of_memory:
            return [out for item in batch for out in self._generate_splitting([item])]
        self._release_memory()
        if len(batch) == 1:
            logger.warning("out of memory on %s with a batch of one", self.device_info.name)
            return [DeviceOutOfMemory(f"out of memory on {self.device_info.name} for a single clip")]
        half = len(batch) // 2
        logger.warning("out of memory on %s with a batch of %d: splitting", self.device_info.name, len(batch))
        return self._generate_splitting(batch[:half]) + self._generate_splitting(batch[half:])

    def _release_memory(self) -> None:
        if self.loaded.device.type == "cuda":
            torch.cuda.empty_cache()

    def _run(self, batch: list[ClipRequest]) -> list[ClipOutput | EngineError]:
        params = batch[0].params
        encoded = self.loaded.tokenize([r.text for r in batch])
        items = [
            BatchItem(encoded["input_ids"][i], encoded["attention_mask"][i], self.loaded.voice_prompt(r.voice),
                      r.params.max_semantic_tokens)
            for i, r in enumerate(batch)
        ]
        sampling = Sampling(do_sample=True, semantic_temperature=params.semantic_temperature,
                            coarse_temperature=params.coarse_temperature, fine_temperature=params.fine_temperature)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        started = time.perf_counter()
        clips = self._bark.generate(items, sampling)
        inference_seconds = time.perf_counter() - started
        outputs: list[ClipOutput | EngineError] = []
        for clip in clips:
            if clip.size == 0:
                # Bark may sample its end-of-speech token first; there is then no audio to return.
                outputs.append(EngineError("Bark produced no audio for this text; retry, or rephrase it"))
                continue
            outputs.append(ClipOutput(clip, self.sample_rate_hz, len(batch), inference_seconds))
        return outputs
