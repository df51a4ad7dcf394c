"""Generation with a template: prompts -> padded batches -> replies, and latency.

Prompts are rendered and tokenized by keras_ft exactly as in training (the
same special-token handling, `encode_prompt`), padded into batches and handed
to keras_ft's compiled loop (`decode.GenerateLoop`) with keras-hub's sampler as
token ids; replies are cut at the template's end of turn (`generate_replies`).
`measure_latency` times the same loop.
"""

from __future__ import annotations

import logging
import os
import re
import time
import weakref
from collections.abc import Sequence

os.environ.setdefault("KERAS_BACKEND", "jax")
import keras_hub
import numpy as np

from keras_ft.config import Config
from keras_ft.data.tokenizer import TextTokenizer, prompt_token_ids
from keras_ft.generation.decode import GenerateLoop
from keras_ft.templates import Message, Template, get_template

log = logging.getLogger(__name__)


# Prompts (the loop's prefill) round up to this, and so do buffers, less the
# reply's room: few compiled shapes, while decoding stops exactly. 16, not 32:
# the prefill length is a compiled shape, so a coarser buffer step alone saves
# no compiles; a finer one halves the padded prefill (tests/generation).
LENGTH_STEP = 16

# One loop per model (`generate_function`), keras_ft's own cache rather than an
# attribute set on keras-hub's object. Keyed weakly, and the loop holds its
# model weakly too: a model its caller drops is freed, and its loop with it.
_LOOPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def build_sampler(cfg: Config):
    """The keras-hub sampler named by `cfg.sampler`."""
    if cfg.sampler == "greedy":
        return keras_hub.samplers.GreedySampler()
    if cfg.sampler == "top_k":
        return keras_hub.samplers.TopKSampler(
            k=cfg.top_k, temperature=cfg.temperature, seed=cfg.seed
        )
    if cfg.sampler == "top_p":
        return keras_hub.samplers.TopPSampler(
            p=cfg.top_p, temperature=cfg.temperature, seed=cfg.seed
        )
    return keras_hub.samplers.RandomSampler(temperature=cfg.temperature, seed=cfg.seed)


def encode_prompt(
    prompt: str | Sequence[Message],
    template: Template,
    tokenizer: TextTokenizer,
    max_tokens: int | None = None,
) -> list[int]:
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
    return ids[:head] + ids[len(ids) - (max_tokens - head) :]


def generate(
    causal_lm, prompts: list[str], cfg: Config, tokenizer: TextTokenizer | None = None
) -> list[str]:
    """Generates one reply per prompt with `cfg`'s template and sampler.

    The prompts go in one batch, in their own order.

    Returns:
        The replies, without the prompt and cut at the first stop token.
    """
    return [r["text"] for r in generate_records(causal_lm, prompts, cfg, tokenizer)]


def generate_records(
    causal_lm, prompts: list[str], cfg: Config, tokenizer: TextTokenizer | None = None
) -> list[dict]:
    """`generate`, with each reply's {"text", "num_tokens", "stopped",
    "repeated_line"} (see `generate_replies`)."""
    template = get_template(cfg.template)
    tokenizer = tokenizer or TextTokenizer(causal_lm.preprocessor.tokenizer)
    encoded = [encode_prompt(p, template, tokenizer) for p in prompts]
    return generate_replies(
        generate_function(causal_lm, cfg), encoded, template, tokenizer, cfg.max_new_tokens
    )


def generate_replies(
    generate_fn,
    prompts: list[list[int]],
    template: Template,
    tokenizer: TextTokenizer,
    max_new_tokens: int,
    batch_size: int | None = None,
) -> list[dict]:
    """Pads prompts, generates, and cuts each reply at the template's end of turn.

    `generate_fn` is `generate_function(causal_lm, cfg)`. Prompts are batched
    by length, `batch_size` rows a batch (short batches repeat their first
    prompt; None: all prompts in one batch), each batch in the prompts' own
    order. A batch's buffer is its longest prompt rounded up to `LENGTH_STEP`
    (the loop's prefill length, a compiled shape) plus `max_new_tokens`, so
    XLA compiles one loop per batch size and LENGTH_STEP bucket of prompts;
    decoding stops at the longest prompt plus `max_new_tokens`.

    Returns:
        Per prompt {"text", "num_tokens", "stopped", "repeated_line"}
        (stopped: an end-of-turn came within `max_new_tokens`;
        repeated_line: `repeated_line(text)`).
    """
    if not prompts:  # e.g. sample_prompts=(): nothing to generate
        return []
    stop_ids = tuple(tokenizer.special_id(t) for t in template.stop_tokens)
    size = batch_size or len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    replies: list[dict] = [{}] * len(prompts)
    for start in range(0, len(order), size):
        rows = sorted(order[start : start + size])
        longest = max(len(prompts[i]) for i in rows)
        length = round_up(longest) + max_new_tokens
        token_ids = np.full((size, length), tokenizer.pad_id, np.int32)
        mask = np.zeros((size, length), bool)
        for row in range(size):
            ids = prompts[rows[min(row, len(rows) - 1)]]
            token_ids[row, : len(ids)], mask[row, : len(ids)] = ids, True
        out = generate_fn(
            {"token_ids": token_ids, "padding_mask": mask},
            stop_token_ids=stop_ids,
            max_length=longest + max_new_tokens,
        )
        out_ids = np.asarray(out["token_ids"])
        for row, index in enumerate(rows):
            new = out_ids[row, len(prompts[index]) :][:max_new_tokens]
            stops = [j for j, t in enumerate(new) if t in stop_ids]
            new = new[: stops[0]] if stops else new
            text = tokenizer.decode(new).strip()
            replies[index] = {
                "text": text,
                "num_tokens": len(new),
                "stopped": bool(stops),
                "repeated_line": repeated_line(text),
            }
    return replies


_LIST_MARK = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")


def repeated_line(text: str) -> str | None:
    """The first line of `text` that says again what an earlier line said, or None.

    Lines are compared without their list marker ("3.", "-", "*"), case or
    spacing, so "1. Boil water." then "4. boil water." is a repeat: the loop
    a base model falls into ("It is a small car... It is a small car...").
    Lines of one word (a lone "Step", a label) do not count.
    """
    seen = set()
    for line in text.splitlines():
        said = " ".join(_LIST_MARK.sub("", line).lower().split())
        if len(said.split()) < 2:
            continue
        if said in seen:
            return line.strip()
        seen.add(said)
    return None


def round_up(n: int) -> int:
    """`n` rounded up to a multiple of LENGTH_STEP."""
    return -(-n // LENGTH_STEP) * LENGTH_STEP


def measure_latency(
    generate_fn, prompt: list[int], max_new_tokens: int, pad_id: int, repeats: int = 3
) -> dict[str, float]:
    """Generation latency of one prompt, with compile time kept apart.

    `generate_fn` is `generate_function(causal_lm, cfg)`. Each shape is run
    once to compile, then `repeats` times; the median is the steady state.
    Time to first token is a generation of one new token (the prompt's
    prefill alone); tokens/s is `max_new_tokens` generated with no stop
    token, divided by the steady-state time. compile_s is what the first
    calls took beyond the steady state.
    """

    def timed(num_new: int) -> float:
        length = len(prompt) + num_new
        inputs = {
            "token_ids": np.full((1, length), pad_id, np.int32),
            "padding_mask": np.zeros((1, length), bool),
        }
        inputs["token_ids"][0, : len(prompt)] = prompt
        inputs["padding_mask"][0, : len(prompt)] = True
        start = time.perf_counter()
        np.asarray(generate_fn(inputs, stop_token_ids=None)["token_ids"])
        return time.perf_counter() - start

    first_short, short = timed(1), float(np.median([timed(1) for _ in range(repeats)]))
    first_long = timed(max_new_tokens)
    long = float(np.median([timed(max_new_tokens) for _ in range(repeats)]))
    return {
        "ttft_s": short,
        "tokens_per_s": max_new_tokens / long,
        "generate_s": long,
        "compile_s": max(first_short - short, 0.0) + max(first_long - long, 0.0),
        "prompt_tokens": len(prompt),
        "new_tokens": max_new_tokens,
    }


def generate_function(causal_lm, cfg: Config):
    """The compiled generation loop for `cfg`'s sampler, made once per model.

    Called like keras-hub's `make_generate_function()` result, on token ids
    (the string front end would re-tokenize, and Gemma 3's drops text-only
    outputs), plus `max_length`: the loop stops there (default: the buffer's
    end), so buffers can be rounded up without decoding into the rounding.
    The loop reads the current weights at each call, so training in between
    is seen; it is rebuilt when the sampler settings or the model's variables
    (e.g. LoRA enabled since) change. `cfg.repetition_penalty` and
    `cfg.no_repeat_ngram_size` are compiled into the loop, so they are part of
    its key too: changing them builds a new loop rather than reusing one.
    """
    penalties = (cfg.repetition_penalty, cfg.no_repeat_ngram_size)
    key = (cfg.sampler, cfg.top_k, cfg.top_p, cfg.temperature, cfg.seed, *penalties)
    key += (len(causal_lm.weights),)
    cached = _LOOPS.get(causal_lm)
    if cached is None or cached[0] != key:
        loop = GenerateLoop(causal_lm, build_sampler(cfg), LENGTH_STEP, *penalties)
        cached = _LOOPS[causal_lm] = (key, loop)
    return cached[1]
