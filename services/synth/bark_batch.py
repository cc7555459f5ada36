"""Bark's three stages and its codec for a batch whose items each have their own voice.

transformers' `BarkModel.generate` conditions a whole batch on one speaker prompt, so grouping requests by voice
leaves batches of one or two when every document has its own voice. Here each item carries its own history prompt:

- semantic: the text and the voice's semantic history are both padded to 256 tokens, so every item's prompt has the
  same length and the batch runs as one `generate`; each item stops at its own end of speech and its own length cap.
- coarse: the sliding-window loop of `BarkCoarseModel.generate`, with each item's semantic and coarse histories. They
  are cut to at most 209 and 630 tokens; every real Bark preset is longer than that, so all items' windows have the
  same length. Items whose histories are shorter (so of another length) are put in batches of their own.
- fine and codec: per item. The fine model is not causal: in a padded batch, a short item would attend to its
  neighbour's extra frames. Run alone, it sees exactly what it would see in a batch of one; the fine stage is a
  handful of forward passes, against hundreds of decoding steps in the first two.

With greedy decoding an item gets the same tokens as in a batch of one. Parameters follow `BarkModel.generate`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BarkModel
from transformers.generation import GenerationMixin
from transformers.generation.logits_process import AlternatingCodebooksLogitsProcessor, SuppressTokensLogitsProcessor
from transformers.models.bark.generation_configuration_bark import (
    BarkCoarseGenerationConfig,
    BarkFineGenerationConfig,
    BarkSemanticGenerationConfig,
)
from transformers.models.bark.modeling_bark import BarkEosPrioritizerLogitsProcessor


@dataclasses.dataclass(frozen=True)
class BatchItem:
    input_ids: torch.Tensor  # (256,), as BarkProcessor pads them
    attention_mask: torch.Tensor  # (256,)
    history: dict[str, torch.Tensor]  # the voice's semantic_prompt, coarse_prompt, fine_prompt
    max_semantic_tokens: int


@dataclasses.dataclass(frozen=True)
class Sampling:
    do_sample: bool
    semantic_temperature: float
    coarse_temperature: float
    # Bark's fine stage takes the argmax when its temperature is 1.0 (or None), and samples otherwise.
    fine_temperature: float


class BatchedBark:
    def __init__(self, model: BarkModel) -> None:
        self.model = model
        configs = model.generation_config
        self.semantic_config = BarkSemanticGenerationConfig(**configs.semantic_config)
        self.coarse_config = BarkCoarseGenerationConfig(**configs.coarse_acoustics_config)
        self.fine_config = BarkFineGenerationConfig(**configs.fine_acoustics_config)
        self.codebook_size = configs.codebook_size
        self.semantic_to_coarse_ratio = (
            self.coarse_config.coarse_rate_hz / self.semantic_config.semantic_rate_hz
            * self.coarse_config.n_coarse_codebooks
        )

    def history_shape(self, history: dict[str, torch.Tensor]) -> tuple[int, int]:
        """The lengths of the semantic and coarse histories the coarse stage uses: items share a batch only when
        these are equal."""
        semantic, coarse = self._coarse_histories(history)
        return semantic.shape[-1], coarse.shape[-1]

    @torch.inference_mode()
    def generate(self, items: list[BatchItem], sampling: Sampling) -> list[np.ndarray]:
        shapes = {self.history_shape(item.history) for item in items}
        if len(shapes) != 1:
            raise ValueError(f"items of one batch need histories of one shape, got {sorted(shapes)}")
        semantic = self._semantic(items, sampling)
        coarse, lengths = self._coarse(semantic, items, sampling)
        audio = []
        for i, item in enumerate(items):
            if int(lengths[i]) == 0:  # the semantic stage ended before any speech
                audio.append(np.zeros(0, dtype=np.float32))
                continue
            # Bark's coarse tokens alternate between its two codebooks: a frame is two tokens.
            codes = coarse[i : i + 1, : 2 * int(lengths[i])]
            fine = self.model.fine_acoustics.generate(
                codes,
                history_prompt=item.history,
                semantic_generation_config=self.semantic_config,
                coarse_generation_config=self.coarse_config,
                fine_generation_config=self.fine_config,
                codebook_size=self.codebook_size,
                temperature=sampling.fine_temperature,
            )
            waveform = self.model.codec_decode(fine)
            audio.append(waveform.reshape(-1).float().cpu().numpy())
        return audio

    def _semantic(self, items: list[BatchItem], sampling: Sampling) -> torch.Tensor:
        config = self.semantic_config
        device = self.model.device
        length = config.max_input_semantic_length
        input_ids = torch.stack([item.input_ids for item in items]).to(device) + config.text_encoding_offset
        attention_mask = torch.stack([item.attention_mask for item in items]).to(device)
        input_ids = input_ids.masked_fill((1 - attention_mask).bool(), config.text_pad_token)
        histories = torch.stack([
            F.pad(item.history["semantic_prompt"][-length:].to(device),
                  (0, length - min(length, item.history["semantic_prompt"].shape[-1])),
                  value=config.semantic_pad_token)
            for item in items
        ])
        embed = self.model.semantic.input_embeds_layer
        infer = torch.full((len(items), 1), config.semantic_infer_token, dtype=torch.int, device=device)
        inputs_embeds = torch.cat([embed(input_ids[:, :length]) + embed(histories[:, : length + 1]), embed(infer)], 1)
        suppress = list(range(config.semantic_vocab_size, config.semantic_pad_token))
        suppress += list(range(config.semantic_pad_token + 1, self.model.semantic.config.output_vocab_size))
        max_new_tokens = max(item.max_semantic_tokens for item in items)
        output = GenerationMixin.generate(
            self.model.semantic,
            torch.ones((len(items), length + 1), dtype=torch.int, device=device),
            inputs_embeds=inputs_embeds,
            logits_processor=[
                SuppressTokensLogitsProcessor(suppress, device=device),
                BarkEosPrioritizerLogitsProcessor(eos_token_id=config.eos_token_id, min_eos_p=None, device=device),
            ],
            generation_config=config,
            do_sample=sampling.do_sample,
            temperature=sampling.semantic_temperature,
            max_new_tokens=max_new_tokens,
        )[:, length + 1 :]
        # Each item's own cap: what a batch of one with that cap would have produced.
        for i, item in enumerate(items):
            output[i, item.max_semantic_tokens :] = config.semantic_pad_token
        return output

    def _coarse_histories(self, history: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.coarse_acoustics.preprocess_histories(
            history_prompt=history,
            max_coarse_history=self.coarse_config.max_coarse_history,
            semantic_to_coarse_ratio=self.semantic_to_coarse_ratio,
            batch_size=1,
            semantic_generation_config=self.semantic_config,
            codebook_size=self.codebook_size,
        )

    def _coarse(self, semantic: torch.Tensor, items: list[BatchItem], sampling: Sampling):
        config = self.coarse_config
        ratio = self.semantic_to_coarse_ratio
        device = self.model.device
        semantic = semantic.masked_fill(semantic == self.semantic_config.semantic_pad_token,
                                        config.coarse_semantic_pad_token)
        max_semantic_history = int(np.floor(config.max_coarse_history / ratio))
        frames = torch.floor((semantic != config.coarse_semantic_pad_token).sum(1) * ratio / config.n_coarse_codebooks)
        lengths = torch.round(frames * config.n_coarse_codebooks).int()  # coarse tokens per item
        max_generated = int(lengths.max().item())
        histories = [self._coarse_histories(item.history) for item in items]
        semantic_history = torch.cat([h[0] for h in histories]).to(device)
        coarse = torch.cat([h[1] for h in histories]).to(device)
        base_semantic_index = semantic_history.shape[1]
        semantic = torch.hstack([semantic_history, semantic])
        coarse_history_length = coarse.shape[1]
        generated = 0
        for _ in range(math.ceil(max_generated / config.sliding_window_len)):
            semantic_index = base_semantic_index + int(round(generated / ratio))
            window = semantic[:, max(0, semantic_index - max_semantic_history):][:, : config.max_coarse_input_length]
            window = F.pad(window, (0, config.max_coarse_input_length - window.shape[-1]),
                           value=config.coarse_semantic_pad_token)
            infer = torch.full((len(items), 1), config.coarse_infer_token, device=device, dtype=window.dtype)
            prompt = torch.hstack([window, infer, coarse[:, -config.max_coarse_history :]])
            output = GenerationMixin.generate(
                self.model.coarse_acoustics,
                prompt,
                logits_processor=[AlternatingCodebooksLogitsProcessor(
                    prompt.shape[1], self.semantic_config.semantic_vocab_size, self.codebook_size)],
                max_new_tokens=min(config.sliding_window_len, max_generated - generated),
                generation_config=config,
                do_sample=sampling.do_sample,
                temperature=sampling.coarse_temperature,
            )
            coarse = torch.hstack([coarse, output[:, prompt.shape[1] :]])
            generated = coarse.shape[1] - coarse_history_length
        return coarse[:, coarse_history_length:], lengths // config.n_coarse_codebooks
