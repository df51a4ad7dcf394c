"""Repetition penalty and no-repeat n-grams in keras_ft's decode loop."""

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

from keras_ft.config import Config
from keras_ft.data.tokenizer import TextTokenizer
from keras_ft.generation import decode
from keras_ft.generation.decode import penalize_logits
from keras_ft.generation.generate import encode_prompt, generate, generate_function, round_up
from keras_ft.templates import get_template

PROMPT = "How do I fix a squeaky door hinge?"  # the issue's
NEW = 16


@pytest.mark.parametrize("penalty", [1.3, 0.7])
@pytest.mark.parametrize("ngram", [0, 1, 2, 3])
def test_the_logit_transform_is_transformers_processors(penalty, ngram):
    # The same numbers as transformers' RepetitionPenaltyLogitsProcessor, then
    # NoRepeatNGramLogitsProcessor (HF applies them in this order), on rows
    # with repeats; positions from `index` on (padding, the rest of a longer
    # prompt) count for nothing: HF is given the ids before `index` only.
    import torch
    from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    rng = np.random.default_rng(ngram)
    vocab, length = 40, 14
    logits = rng.normal(0, 3, (3, vocab)).astype(np.float32)
    ids = rng.integers(0, 6, (3, length)).astype(np.int32)  # 6 ids: many repeats
    for index in (length, 9, 1):
        want = torch.from_numpy(logits.copy())
        seen = torch.from_numpy(ids[:, :index].astype(np.int64))
        want = RepetitionPenaltyLogitsProcessor(penalty)(seen, want)
        if ngram:
            want = NoRepeatNGramLogitsProcessor(ngram)(seen, want)
        got = np.asarray(penalize_logits(logits, ids, np.int32(index), penalty, ngram))
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)
        if ngram and index == length:
            assert np.isinf(got).any()  # some tokens were banned


@pytest.fixture(scope="module")
def gemma3_lm(tiny_gemma3):
    import keras_hub

    return keras_hub.models.CausalLM.from_preset(str(tiny_gemma3))


@pytest.fixture(scope="module")
def batch(gemma3_lm):
    """The issue's prompt and a short one, padded into one buffer."""
    tokenizer = TextTokenizer(gemma3_lm.preprocessor.tokenizer)
    prompts = [encode_prompt(p, get_template("gemma"), tokenizer) for p in (PROMPT, "Hi")]
    length = round_up(max(map(len, prompts))) + NEW
    token_ids = np.zeros((len(prompts), length), np.int32)
    mask = np.zeros((len(prompts), length), bool)
    for row, ids in enumerate(prompts):
        token_ids[row, : len(ids)], mask[row, : len(ids)] = ids, True
    return prompts, {"token_ids": token_ids, "padding_mask": mask}


def _rows(causal_lm, cfg, batch):
    """Each row's prompt + reply ids, from the loop `generate_function` gives."""
    prompts, inputs = batch
    out = generate_function(causal_lm, cfg)(inputs, max_length=max(map(len, prompts)) + NEW)
    ids, mask = np.asarray(out["token_ids"]), np.asarray(out["padding_mask"])
    return [list(ids[row][mask[row]]) for row in range(len(prompts))]


def _repeats(row, start):
    """How many tokens from `start` on occurred before them in the row."""
    return sum(row[t] in row[:t] for t in range(start, len(row)))


def _repeated_bigrams(row, start):
    """The bigrams ending at `start` or later that occurred before in the row."""
    return [
        (row[t - 1], row[t])
        for t in range(start, len(row))
        if (row[t - 1], row[t]) in zip(row[: t - 1], row[1:t])
    ]


def test_penalties_stop_a_looping_reply(gemma3_lm, tiny_gemma3, batch):
    # The tiny random model loops, as the tuned 270M did; both settings
    # break the loop, per row of a batch of prompts of different lengths.
    prompts, _ = batch
    cfg = Config(preset=str(tiny_gemma3), sampler="greedy")
    plain = _rows(gemma3_lm, cfg, batch)
    assert _repeated_bigrams(plain[0], len(prompts[0]))  # greedy repeats itself

    no_repeat = _rows(gemma3_lm, dataclasses.replace(cfg, no_repeat_ngram_size=2), batch)
    for row, prompt in zip(no_repeat, prompts):
        assert len(row) == len(prompts[0]) + NEW  # decoded to the end: nothing banned all
        assert not _repeated_bigrams(row, len(prompt))  # no bigram occurs twice

    penalized = _rows(gemma3_lm, dataclasses.replace(cfg, repetition_penalty=1.5), batch)
    for row, before, prompt in zip(penalized, plain, prompts):
        assert row[: len(prompt)] == prompt and row != before
        assert _repeats(row, len(prompt)) < _repeats(before, len(prompt))


def test_with_both_off_the_compiled_loop_has_no_extra_op(gemma3_lm, monkeypatch, batch):
    # Off is a compile-time switch: the loop's program is the one without a
    # penalty step at all (penalize_logits replaced by nothing), so greedy
    # outputs stay keras-hub's (test_generate's comparison runs with them off).
    import jax
    import keras_hub

    prompts, inputs = batch

    def program(**penalties):
        loop = decode.GenerateLoop(gemma3_lm, keras_hub.samplers.GreedySampler(), 16, **penalties)
        state = ([v.value for v in loop.sampler.variables], loop._weights())
        args = (state, inputs["token_ids"], inputs["padding_mask"], np.int32(40), 32, None)
        return str(jax.make_jaxpr(loop.compiled_generate_function, static_argnums=(4, 5))(*args))

    off = program(repetition_penalty=1.0, no_repeat_ngram_size=0)
    assert program(repetition_penalty=1.2) != off and program(no_repeat_ngram_size=3) != off
    monkeypatch.setattr(decode, "penalize_logits", lambda logits, *args: logits)
    assert program() == off


def test_the_settings_are_part_of_the_loops_key(gemma3_lm, tiny_gemma3):
    # Changing a setting builds a loop with it, never the stale one.
    cfg = Config(preset=str(tiny_gemma3), sampler="greedy")
    loop = generate_function(gemma3_lm, cfg)
    assert (loop.repetition_penalty, loop.no_repeat_ngram_size) == (1.0, 0)
    other = generate_function(gemma3_lm, dataclasses.replace(cfg, no_repeat_ngram_size=2))
    assert other is not loop and other.no_repeat_ngram_size == 2
    again = generate_function(gemma3_lm, dataclasses.replace(cfg, repetition_penalty=1.5))
    assert again is not other and (again.repetition_penalty, again.no_repeat_ngram_size) == (1.5, 0)
    assert generate_function(gemma3_lm, dataclasses.replace(cfg, repetition_penalty=1.5)) is again


def test_generate_and_evaluate_take_the_flags(tiny_gemma):
    # `keras-ft generate --no-repeat-ngram-size 2` prints generate()'s reply
    # with the setting, which differs from the reply without it.
    import keras_hub

    from keras_ft.cli.evaluate import main as evaluate_main
    from keras_ft.cli.generate import main as generate_main

    cfg = Config(preset=str(tiny_gemma), template="gemma", sampler="greedy", max_new_tokens=10)
    causal_lm = keras_hub.models.CausalLM.from_preset(str(tiny_gemma))
    plain = generate(causal_lm, [PROMPT], cfg)[0]
    want = generate(causal_lm, [PROMPT], dataclasses.replace(cfg, no_repeat_ngram_size=2))[0]
    assert want != plain
    flags = ["--preset", str(tiny_gemma), "--template", "gemma", "--sampler", "greedy"]
    flags += ["--max-new-tokens", "10", "--no-repeat-ngram-size", "2", PROMPT]
    result = CliRunner().invoke(generate_main, flags)
    assert result.exit_code == 0, result.output
    assert result.stdout == want + "\n"
    help_text = CliRunner().invoke(evaluate_main, ["--help"]).output
    assert "--repetition-penalty" in help_text and "--no-repeat-ngram-size" in help_text
