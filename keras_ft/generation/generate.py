"""Sampled generation with a template, through keras-hub's `generate`.

Prompts are rendered and tokenized by keras_ft exactly as in training (the
same special-token handling), then handed to keras-hub's compiled generation
loop and sampler as token ids; replies stop at the template's end-of-turn.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np

from keras_ft.config import Config
from keras_ft.data.tokenizer import TextTokenizer, prompt_token_ids
from keras_ft.templates import Message, Template, get_template

log = logging.getLogger(__name__)


LENGTH_STEP = 16  # buffers and prefills round up to this (few compiles); decoding stops exactly


def build_sampler(cfg: Config):
    """The keras-hub sampler named by `cfg.sampler`."""
    import keras_hub

    if cfg.sampler == "greedy":
        return keras_hub.samplers.GreedySampler()
    if cfg.sampler == "top_k":
        return keras_hub.samplers.TopKSampler(k=cfg.top_k, temperature=cfg.temperature,
                                              seed=cfg.seed)
    if cfg.sampler == "top_p":
        return keras_hub.samplers.TopPSampler(p=cfg.top_p, temperature=cfg.temperature,
                                              seed=cfg.seed)
    return keras_hub.samplers.RandomSampler(temperature=cfg.temperature, seed=cfg.seed)


def encode_prompt(prompt: str | Sequence[Message], template: Template,
                  tokenizer: TextTokenizer, max_tokens: int | None = None) -> list[int]:
    """Token ids of a prompt rendered for generation, as in training.

    Args:
        prompt: A user prompt, or a conversation ending on a user turn (a
            held-out example's messages before its last reply).
        max_tokens: Longer prompts keep the begin tokens and the end (the
            latest turns); None keeps every token.
    """
    messages = [Message("user", prompt)] if isinstance(prompt, str) else list(prompt)
    ids = prompt_token_ids(messages, template, tokenizer)
    if max_tokens is None or len(ids) <= max_tokens:
        return ids
    head = len(template.begin)
    return ids[:head] + ids[len(ids) - (max_tokens - head):]


def generate(causal_lm, prompts: list[str], cfg: Config,
             tokenizer: TextTokenizer | None = None) -> list[str]:
    """Generates one reply per prompt with `cfg`'s template and sampler.

    Returns:
        The replies, without the prompt and cut at the first stop token.
    """
    template = get_template(cfg.template)
    tokenizer = tokenizer or TextTokenizer(causal_lm.preprocessor.tokenizer)
    encoded = [encode_prompt(p, template, tokenizer) for p in prompts]
    stop_ids = tuple(tokenizer.special_id(t) for t in template.stop_tokens)
    longest = max(len(e) for e in encoded) + cfg.max_new_tokens
    length = round_up(longest)
    token_ids = np.full((len(prompts), length), tokenizer.pad_id, np.int32)
    padding_mask = np.zeros((len(prompts), length), bool)
    for row, ids in enumerate(encoded):
        token_ids[row, :len(ids)], padding_mask[row, :len(ids)] = ids, True
    generate_fn = generate_function(causal_lm, cfg)
    out = generate_fn({"token_ids": token_ids, "padding_mask": padding_mask},
                      stop_token_ids=stop_ids, max_length=longest)
    replies = []
    for row, ids in enumerate(encoded):
        new = np.asarray(out["token_ids"][row])[len(ids):]
        new = new[np.asarray(out["padding_mask"][row])[len(ids):]]
        new = new[: cfg.max_new_tokens]
        stops = [i for i, t in enumerate(new) if t in stop_ids]
        replies.append(tokenizer.decode(new[: stops[0]] if stops else new).strip())
    return replies


def round_up(n: int) -> int:
    """`n` rounded up to a multiple of LENGTH_STEP."""
    return -(-n // LENGTH_STEP) * LENGTH_STEP


def generate_function(causal_lm, cfg: Config):
    """The compiled generation loop for `cfg`'s sampler, made once per model.

    Called like keras-hub's `make_generate_function()` result, on token ids
    (the string front end would re-tokenize, and Gemma 3's drops text-only
    outputs), plus `max_length`: the loop stops there (default: the buffer's
    end), so buffers can be rounded up without decoding into the rounding.
    The loop reads the current weights at each call, so training in between
    is seen; it is rebuilt when the sampler settings or the model's variables
    (e.g. LoRA enabled since) change.
    """
    from keras_ft.generation.decode import GenerateLoop

    key = (cfg.sampler, cfg.top_k, cfg.top_p, cfg.temperature, cfg.seed,
           len(causal_lm.weights))
    cached = getattr(causal_lm, "_keras_ft_generate", None)
    if cached is None or cached[0] != key:
        cached = (key, GenerateLoop(causal_lm, build_sampler(cfg), LENGTH_STEP))
        causal_lm._keras_ft_generate = cached
    return cached[1]
