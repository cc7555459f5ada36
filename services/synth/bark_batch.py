"""Bark's three stages and its codec for a batch whose items each have their own voice.

transformers' `BarkModel.generate` conditions a whole batch on one speaker prompt, so grouping requests by voice
leaves batches of one or two when every document has its own voice. Here each item carries its own history prompt,
and the decoding loops are this module's own, so that a batch costs only what its unfinished items need:

- semantic: the text and the voice's semantic history are both padded to 256 tokens, so every item's prompt has the
  same length and the batch decodes as one. An item that reaches its end of speech or its own length cap leaves the
  batch (its rows of the KV cache are dropped) and costs nothing more.
- coarse: the sliding-window loop of `BarkCoarseModel.generate`, with each item's semantic and coarse histories. They
  are cut to at most 209 and 630 tokens; every real Bark preset is longer than that, so all items' windows have the
  same length. Items whose histories are shorter (so of another length) are put in batches of their own. An item
  leaves as soon as it has its coarse tokens.
- fine: the model is not causal, so items are never padded against each other: each item's windows are exactly the
  1024-frame windows it would have alone, and the windows of all items at one step of the loop run as one batch.
- codec: per item, each at its own length.

Sampling follows transformers' Bark (its generation configs plus `GenerationConfig`'s default top-k of 50 for the
first two stages), drawing by inverse transform: one uniform number per token instead of `torch.multinomial`'s one
per vocabulary entry, which on a CPU cost more than the models themselves. Same distributions, other draws; with
greedy decoding an item gets the same tokens as transformers' own `BarkModel.generate` gives it alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BarkModel, DynamicCache
from transformers.models.bark.generation_configuration_bark import (
    BarkCoarseGenerationConfig,
    BarkFineGenerationConfig,
    BarkSemanticGenerationConfig,
)

# `GenerationMixin.generate` samples from the 50 likeliest tokens when a config leaves top_k unset, as Bark's do.
TOP_K = 50


@dataclasses.dataclass(frozen=True)
class BatchItem:
    input_ids: torch.Tensor  # (256,), as BarkProcessor pads them
    attention_mask: torch.Tensor  # (256,)
    history: dict[str, torch.Tensor]  # the voice's semantic_prompt, coarse_prompt, fine_prompt
    max_semantic_tokens: int


@dataclasses.dataclass(frozen=True)
class _FineJob:
    """One item in the fine stage: its fine input (frames x 8 codebooks: history, its own frames, padding), filled in
    place window by window."""

    index: int  # in the batch
    frames: torch.Tensor
    history: int  # frames of the voice's history at the start
    padding: int  # frames of padding at the end
    windows: int


@dataclasses.dataclass(frozen=True)
class Sampling:
    do_sample: bool
    semantic_temperature: float
    coarse_temperature: float
    # Bark's fine stage takes the argmax when its temperature is 1.0 (or None), and samples otherwise.
    fine_temperature: float


def sample_categorical(probs: torch.Tensor) -> torch.Tensor:
    """One index per row of `probs` (..., n), drawn with the row's probabilities: by inverse transform, one uniform
    number per row. An entry of probability zero is never drawn."""
    cdf = probs.cumsum(-1)
    threshold = torch.rand(cdf.shape[:-1] + (1,), dtype=cdf.dtype, device=cdf.device) * cdf[..., -1:]
    return torch.searchsorted(cdf, threshold, right=True).clamp_(max=probs.shape[-1] - 1).squeeze(-1)


@contextlib.contextmanager
def _last_position_logits(model: torch.nn.Module):
    """While decoding, only the last position's logits are used: the prompt's other positions skip the LM head (for
    the coarse model's 887-token prompts that is most of a window's compute and memory)."""
    handle = model.lm_head.register_forward_pre_hook(lambda module, args: (args[0][:, -1:],))
    try:
        yield
    finally:
        handle.remove()


class BatchedBark:
    def __init__(self, model: BarkModel, long_pass_rows: int | None = None) -> None:
        """`long_pass_rows` caps the rows of a pass over a long sequence (a prompt, a fine window); decoding steps
        always run the whole batch. Bark's eager attention materializes heads x length x length scores per row: on a
        CPU a batch of those outgrows the caches, and one row at a time is faster (measured: a fine window pass for
        16 windows 0.17 s one at a time, 0.35 s together; a coarse prompt 0.24 s vs 0.39 s). On a GPU leave it None."""
        self.model = model
        self.long_pass_rows = long_pass_rows
        configs = model.generation_config
        self.semantic_config = BarkSemanticGenerationConfig(**configs.semantic_config)
        self.coarse_config = BarkCoarseGenerationConfig(**configs.coarse_acoustics_config)
        self.fine_config = BarkFineGenerationConfig(**configs.fine_acoustics_config)
        self.codebook_size = configs.codebook_size
        if self.semantic_config.semantic_vocab_size != self.semantic_config.semantic_pad_token:
            raise ValueError("Bark's semantic end-of-speech token must follow its semantic vocabulary")
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
        histories = [self._coarse_histories(item.history) for item in items]
        shapes = {(semantic.shape[-1], coarse.shape[-1]) for semantic, coarse in histories}
        if len(shapes) != 1:
            raise ValueError(f"items of one batch need histories of one shape, got {sorted(shapes)}")
        semantic = self._semantic(items, sampling)
        coarse = self._coarse(semantic, histories, sampling)
        fine = self._fine(coarse, items, sampling)
        audio = []
        for codes in fine:
            if codes is None:  # the semantic stage ended before any speech
                audio.append(np.zeros(0, dtype=np.float32))
                continue
            waveform = self.model.codec_decode(codes[None])
            audio.append(waveform.reshape(-1).float().cpu().numpy())
        return audio

    def _decode(self, model, first_input: dict, budgets: list[int], allowed, temperature: float,
                do_sample: bool, eos: int | None = None) -> list[torch.Tensor]:
        """Decodes each row of a prompt batch for up to its budget of tokens, or until it draws `eos` (kept as its
        last token). `allowed(step)` is the slice of the vocabulary that step may draw from. A finished row leaves the
        batch, its KV cache rows with it. Returns each row's tokens."""
        device = model.device
        rows = list(range(len(budgets)))  # the original index of each row still decoding
        remaining = list(budgets)
        steps: list[tuple[list[int], torch.Tensor]] = []  # the rows of each step and what they drew
        with _last_position_logits(model):
            logits, cache = self._prefill(model, first_input)
            while True:
                vocabulary = allowed(len(steps))
                scores = logits[:, vocabulary].float()
                if do_sample:
                    top, indexes = scores.div_(temperature).topk(min(TOP_K, scores.shape[-1]), dim=-1)
                    chosen = indexes.gather(-1, sample_categorical(top.softmax(-1))[:, None]).squeeze(-1)
                else:
                    chosen = scores.argmax(-1)
                chosen += vocabulary.start
                steps.append((rows, chosen))
                remaining = [budget - 1 for budget in remaining]
                done = [budget == 0 for budget in remaining]
                if eos is not None:
                    done = [d or hit for d, hit in zip(done, (chosen == eos).tolist())]
                if any(done):
                    keep = [i for i, d in enumerate(done) if not d]
                    rows, remaining = [rows[i] for i in keep], [remaining[i] for i in keep]
                    keep_index = torch.tensor(keep, dtype=torch.long, device=device)
                    chosen = chosen[keep_index]
                    cache.batch_select_indices(keep_index)
                if not rows:
                    break
                logits = model(input_ids=chosen[:, None], past_key_values=cache, use_cache=True).logits[:, -1]
        tokens: list[list[int]] = [[] for _ in budgets]
        for step_rows, step_chosen in steps:
            for row, token in zip(step_rows, step_chosen.tolist()):
                tokens[row].append(token)
        return [torch.tensor(row, dtype=torch.long, device=device) for row in tokens]

    def _prefill(self, model, first_input: dict) -> tuple[torch.Tensor, DynamicCache]:
        """The prompt's pass: the last position's logits and the KV cache, in passes of at most `long_pass_rows`."""
        rows = len(next(iter(first_input.values())))
        chunk = self.long_pass_rows or rows
        logits, caches = [], []
        for start in range(0, rows, chunk):
            cache = DynamicCache(config=model.config)
            part = {key: value[start : start + chunk] for key, value in first_input.items()}
            logits.append(model(**part, past_key_values=cache, use_cache=True).logits[:, -1])
            caches.append(cache)
        if len(caches) == 1:
            return logits[0], caches[0]
        cache = DynamicCache(config=model.config)
        for index in range(len(caches[0].layers)):
            cache.update(torch.cat([c.layers[index].keys for c in caches]),
                         torch.cat([c.layers[index].values for c in caches]), index)
        return torch.cat(logits), cache

    def _semantic(self, items: list[BatchItem], sampling: Sampling) -> list[torch.Tensor]:
        """Each item's semantic tokens, without its end-of-speech token."""
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
        # Semantic tokens and the end of speech (transformers suppresses everything else).
        vocabulary = slice(0, config.semantic_pad_token + 1)
        tokens = self._decode(self.model.semantic, {"inputs_embeds": inputs_embeds},
                              [item.max_semantic_tokens for item in items], lambda step: vocabulary,
                              sampling.semantic_temperature, sampling.do_sample, eos=config.eos_token_id)
        return [row[:-1] if len(row) and row[-1] == config.eos_token_id else row for row in tokens]

    def _coarse_histories(self, history: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.coarse_acoustics.preprocess_histories(
            history_prompt=history,
            max_coarse_history=self.coarse_config.max_coarse_history,
            semantic_to_coarse_ratio=self.semantic_to_coarse_ratio,
            batch_size=1,
            semantic_generation_config=self.semantic_config,
            codebook_size=self.codebook_size,
        )

    def _coarse(self, semantic: list[torch.Tensor], histories: list[tuple[torch.Tensor, torch.Tensor]],
                sampling: Sampling) -> list[torch.Tensor]:
        """Each item's coarse tokens, two per frame (Bark's two coarse codebooks alternate), from its semantic
        tokens and its semantic and coarse histories (`_coarse_histories`)."""
        config = self.coarse_config
        ratio = self.semantic_to_coarse_ratio
        device = self.model.device
        n_codebooks = config.n_coarse_codebooks
        max_semantic_history = int(np.floor(config.max_coarse_history / ratio))
        lengths = [int(math.floor(len(row) * ratio / n_codebooks)) * n_codebooks for row in semantic]
        base_semantic_index = histories[0][0].shape[1]
        longest = max(len(row) for row in semantic)
        semantic = torch.hstack([
            torch.cat([h[0] for h in histories]).to(device),
            torch.stack([F.pad(row, (0, longest - len(row)), value=config.coarse_semantic_pad_token)
                         for row in semantic]),
        ])
        coarse = [h[1][0].to(device) for h in histories]
        history_length = coarse[0].shape[-1]
        # Even steps draw the first codebook's tokens, odd steps the second's (as AlternatingCodebooksLogitsProcessor).
        first = self.semantic_config.semantic_vocab_size
        codebooks = (slice(first, first + self.codebook_size),
                     slice(first + self.codebook_size, self.model.coarse_acoustics.config.output_vocab_size))
        generated = 0
        while active := [i for i, length in enumerate(lengths) if length > generated]:
            semantic_index = base_semantic_index + int(round(generated / ratio))
            start = max(0, semantic_index - max_semantic_history)
            window = semantic[active, start : start + config.max_coarse_input_length]
            window = F.pad(window, (0, config.max_coarse_input_length - window.shape[-1]),
                           value=config.coarse_semantic_pad_token)
            infer = torch.full((len(active), 1), config.coarse_infer_token, device=device, dtype=window.dtype)
            recent = torch.stack([coarse[i][-config.max_coarse_history :] for i in active]).to(window.dtype)
            prompt = torch.hstack([window, infer, recent])
            budgets = [min(config.sliding_window_len, lengths[i] - generated) for i in active]
            new = self._decode(self.model.coarse_acoustics, {"input_ids": prompt}, budgets,
                               lambda step: codebooks[step % 2], sampling.coarse_temperature, sampling.do_sample)
            for i, tokens in zip(active, new):
                coarse[i] = torch.cat([coarse[i], tokens.to(coarse[i].dtype)])
            generated += config.sliding_window_len
        return [row[history_length:] for row in coarse]

    def _fine(self, coarse: list[torch.Tensor], items: list[BatchItem],
              sampling: Sampling) -> list[torch.Tensor | None]:
        """Each item's eight codebooks (8, frames), as `BarkFineModel.generate` makes them for the item alone; None
        for an item without frames. The windows of all items at one step of the loop run as one batch."""
        config = self.fine_config
        n_coarse = self.coarse_config.n_coarse_codebooks
        window_length, step_length = config.max_fine_input_length, config.max_fine_history_length
        temperature = sampling.fine_temperature
        greedy = temperature is None or temperature == 1.0
        jobs: list[_FineJob] = []
        for i, (codes, item) in enumerate(zip(coarse, items)):
            if len(codes) == 0:
                continue
            codes = torch.remainder(codes.view(-1, n_coarse) - self.semantic_config.semantic_vocab_size,
                                    self.codebook_size)
            fine_input = F.pad(codes, (0, config.n_fine_codebooks - n_coarse), value=self.codebook_size)
            history = item.history["fine_prompt"].T[-step_length:].to(fine_input.device, fine_input.dtype)
            fine_input = torch.cat([history, fine_input])
            padding = max(0, window_length - len(fine_input))
            fine_input = F.pad(fine_input, (0, 0, 0, padding), value=self.codebook_size)
            windows = max(0, math.ceil((len(codes) - (window_length - len(history))) / step_length)) + 1
            jobs.append(_FineJob(i, fine_input, len(history), padding, windows))
        for n_outer in range(max((job.windows for job in jobs), default=0)):
            batch = [job for job in jobs if job.windows > n_outer]
            chunk = self.long_pass_rows or len(batch)
            # Where each item's window starts in its fine input, and where in the window its new frames start.
            starts = [min(n_outer * step_length, len(job.frames) - window_length) for job in batch]
            offsets = [min(job.history + n_outer * step_length, len(job.frames) - step_length) - start
                       for job, start in zip(batch, starts)]
            buffer = torch.stack([job.frames[start : start + window_length] for job, start in zip(batch, starts)])
            for n_inner in range(n_coarse, config.n_fine_codebooks):
                for first in range(0, len(batch), chunk):
                    rows = buffer[first : first + chunk]  # a view: predictions are written into `buffer`
                    logits = self.model.fine_acoustics(n_inner, rows).logits[..., : self.codebook_size]
                    if greedy:
                        predicted = logits.argmax(-1)
                    else:
                        predicted = sample_categorical(F.softmax(logits.float() / temperature, dim=-1))
                    for row, offset in enumerate(offsets[first : first + chunk]):
                        rows[row, offset:, n_inner] = predicted[row, offset:].to(rows.dtype)
            for row, (job, start, offset) in enumerate(zip(batch, starts, offsets)):
                job.frames[start + offset : start + window_length, n_coarse:] = buffer[row, offset:, n_coarse:]
        fine: list[torch.Tensor | None] = [None] * len(items)
        for job in jobs:
            fine[job.index] = job.frames[job.history : len(job.frames) - job.padding].T
        return fine
