"""Held-out prompts -> greedy replies, and generation latency."""

from __future__ import annotations

import logging
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np

from keras_ft.data.tokenizer import TextTokenizer
from keras_ft.templates import Template

log = logging.getLogger(__name__)


PROMPT_STEP = 32  # prompt lengths are padded up to this: fewer XLA compiles


def generate_replies(generate_fn, prompts: list[list[int]], template: Template,
                     tokenizer: TextTokenizer, max_new_tokens: int,
                     batch_size: int = 8) -> list[dict]:
    """Generates a reply per prompt with a compiled generation loop.

    `generate_fn` is `generate.generate_function(causal_lm, cfg)`. Batches
    have a fixed size and prompt lengths padded to `PROMPT_STEP`, so
    XLA compiles few shapes. Returns per prompt {"text", "num_tokens",
    "stopped"} (stopped: an end-of-turn came within `max_new_tokens`).
    """
    stop_ids = tuple(tokenizer.special_id(t) for t in template.stop_tokens)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    replies: list[dict] = [{}] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        longest = max(len(prompts[i]) for i in rows)
        length = -(-longest // PROMPT_STEP) * PROMPT_STEP + max_new_tokens
        token_ids = np.full((batch_size, length), tokenizer.pad_id, np.int32)
        mask = np.zeros((batch_size, length), bool)
        for row in range(batch_size):  # short batches repeat their first prompt
            ids = prompts[rows[min(row, len(rows) - 1)]]
            token_ids[row, :len(ids)], mask[row, :len(ids)] = ids, True
        out = generate_fn({"token_ids": token_ids, "padding_mask": mask},
                          stop_token_ids=stop_ids)
        out_ids = np.asarray(out["token_ids"])
        for row, index in enumerate(rows):
            new = out_ids[row, len(prompts[index]):][:max_new_tokens]
            stops = [j for j, t in enumerate(new) if t in stop_ids]
            new = new[: stops[0]] if stops else new
            replies[index] = {"text": tokenizer.decode(new).strip(),
                              "num_tokens": len(new), "stopped": bool(stops)}
    return replies


def measure_latency(generate_fn, prompt: list[int], max_new_tokens: int,
                    pad_id: int, repeats: int = 3) -> dict[str, float]:
    """Generation latency of one prompt, with compile time kept apart.

    `generate_fn` is `generate.generate_function(causal_lm, cfg)`. Each
    shape is run once to compile, then `repeats` times; the median is
    the steady state. Time to first token is a generation of one new token
    (the prompt's prefill alone); tokens/s is `max_new_tokens` generated with no
    stop token, divided by the steady-state time. compile_s is what the
    first calls took beyond the steady state.
    """
    def timed(num_new: int) -> float:
        length = len(prompt) + num_new
        inputs = {"token_ids": np.full((1, length), pad_id, np.int32),
                  "padding_mask": np.zeros((1, length), bool)}
        inputs["token_ids"][0, :len(prompt)] = prompt
        inputs["padding_mask"][0, :len(prompt)] = True
        start = time.perf_counter()
        np.asarray(generate_fn(inputs, stop_token_ids=None)["token_ids"])
        return time.perf_counter() - start

    first_short, short = timed(1), float(np.median([timed(1) for _ in range(repeats)]))
    first_long = timed(max_new_tokens)
    long = float(np.median([timed(max_new_tokens) for _ in range(repeats)]))
    return {"ttft_s": short, "tokens_per_s": max_new_tokens / long,
            "generate_s": long, "compile_s": max(first_short - short, 0.0)
            + max(first_long - long, 0.0), "prompt_tokens": len(prompt),
            "new_tokens": max_new_tokens}
