import numpy as np
import pytest
from click.testing import CliRunner

import keras_ft.generation.generate as generate_module
from keras_ft.cli.generate import main
from keras_ft.config import Config
from keras_ft.data.tokenizer import TextTokenizer
from keras_ft.generation.generate import (
    LENGTH_STEP,
    encode_prompt,
    generate,
    generate_function,
    generate_replies,
    repeated_line,
    round_up,
)
from keras_ft.model.causal_lm import build_model
from keras_ft.model.lora import save_adapter
from keras_ft.templates import get_template


def test_prompt_is_encoded_like_training_prompts(tiny_gemma3):
    tokenizer = TextTokenizer.from_preset(str(tiny_gemma3))
    ids = encode_prompt("Hi", get_template("gemma"), tokenizer)
    assert ids[0] == tokenizer.special_id("<bos>")
    assert ids[1] == tokenizer.special_id("<start_of_turn>")
    tail = tokenizer.encode("model\n")
    assert ids[-len(tail) :] == tail
    assert ids.count(tokenizer.special_id("<start_of_turn>")) == 2


def test_a_long_conversation_keeps_its_begin_tokens_and_latest_turns(tiny_gemma3):
    # The one prompt encoder: a string is a user turn; a conversation ending on
    # a user turn is cut to max_tokens from the front, after the begin tokens.
    from keras_ft.templates import Message

    tokenizer = TextTokenizer.from_preset(str(tiny_gemma3))
    template = get_template("gemma")
    assert encode_prompt([Message("user", "Hi")], template, tokenizer) == encode_prompt(
        "Hi", template, tokenizer
    )
    turns = [
        Message("user", "one two three"),
        Message("assistant", "four five"),
        Message("user", "six seven eight nine"),
    ]
    whole = encode_prompt(turns, template, tokenizer)
    assert encode_prompt(turns, template, tokenizer, len(whole)) == whole
    cut = encode_prompt(turns, template, tokenizer, 12)
    assert len(cut) == 12 and len(whole) > 12
    assert cut == whole[:1] + whole[-11:]  # <bos>, then the latest 11 tokens


def test_replies_stop_at_the_template_end_of_turn(tiny_gemma3, monkeypatch):
    cfg = Config(preset=str(tiny_gemma3), template="gemma", sampler="greedy", max_new_tokens=6)
    causal_lm = build_model(cfg)
    tokenizer = TextTokenizer(causal_lm.preprocessor.tokenizer)
    end = tokenizer.special_id("<end_of_turn>")
    word = tokenizer.encode("fox")
    seen = {}

    def fake_generate_function(causal_lm, cfg):
        def run(inputs, stop_token_ids=None, max_length=None):
            seen["stop"] = stop_token_ids
            ids = np.array(inputs["token_ids"])
            mask = np.array(inputs["padding_mask"])
            for row in range(len(ids)):
                n = int(mask[row].sum())
                ids[row, n : n + len(word) + 2] = word + [end, word[0]]
                mask[row, n : n + len(word) + 1] = True
            return {"token_ids": ids, "padding_mask": mask}

        return run

    monkeypatch.setattr(generate_module, "generate_function", fake_generate_function)
    replies = generate(causal_lm, ["Hi", "A longer prompt here"], cfg, tokenizer)
    assert replies == ["fox", "fox"]
    assert end in seen["stop"] and tokenizer.special_id("<eos>") in seen["stop"]


def test_a_repeated_line_is_found_through_list_numbers_case_and_spacing():
    looping = "Artega is German.\nIt is a small car.\nIt is sold in the US.\nit is a  SMALL car."
    assert repeated_line(looping) == "it is a  SMALL car."
    assert repeated_line("1. Boil water.\n2. Add tea.\n3. boil water.") == "3. boil water."
    assert repeated_line("- Stir well\n* stir well") == "* stir well"
    steps = "1. Fill the kettle.\n2. Boil it.\n3. Pour the water.\n4. Boil it again."
    assert repeated_line(steps) is None  # similar lines are not the same line
    assert repeated_line("Step\nStep\n1. Go.") is None  # one-word lines do not count
    assert repeated_line("") is None


def test_generate_cli_loads_a_preset_and_an_adapter(tiny_gemma, tmp_path):
    # The CLI's whole output is the reply of the model that was saved: the
    # adapter's own (non-zero) LoRA weights and its recorded template.
    import keras_hub

    cfg = Config(
        preset=str(tiny_gemma), lora_rank=2, template="gemma", sampler="greedy", max_new_tokens=8
    )
    tuned = build_model(cfg)
    rng = np.random.default_rng(3)
    for weight in tuned.backbone.trainable_weights:  # LoRA B is 0 at start: no change
        weight.assign(rng.normal(0, 0.5, weight.shape))
    save_adapter(tuned, tmp_path, cfg)
    prompt = "How do I?"
    expected = generate(tuned, [prompt], cfg)
    base = generate(keras_hub.models.CausalLM.from_preset(str(tiny_gemma)), [prompt], cfg)
    assert expected != base and expected[0]  # the adapter changes the reply
    result = CliRunner().invoke(
        main,
        [
            "--preset",
            str(tiny_gemma),
            "--adapter",
            str(tmp_path),
            "--sampler",
            "greedy",
            "--max-new-tokens",
            "8",
            "How",
            "do",
            "I?",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == expected[0] + "\n"


def test_generation_compiles_once_and_sees_new_weights(tiny_gemma3):
    # Sampling every N steps during training must not recompile the loop, yet
    # must use the weights as they are now; another sampler gets its own loop.
    import jax
    from test_compilations import CompileLog, capture_jax_log

    cfg = Config(preset=str(tiny_gemma3), template="gemma", sampler="greedy", max_new_tokens=5)
    causal_lm = build_model(cfg)
    log = CompileLog()
    with capture_jax_log(log), jax.log_compiles(True):
        first = generate(causal_lm, ["Hi there"], cfg)
        assert generate(causal_lm, ["Hi there"], cfg) == first
        for weight in causal_lm.backbone.trainable_weights:  # LoRA B: 0 at start
            weight.assign(np.random.default_rng(1).normal(0, 0.5, weight.shape))
        changed = generate(causal_lm, ["Hi there"], cfg)
        compiles = log.count("compiled_generate_function")
        generate(causal_lm, ["Hi there"], Config(**{**cfg.__dict__, "sampler": "top_k"}))
    assert compiles == 1 and log.count("compiled_generate_function") == 2
    assert changed != first


def test_batched_replies_compile_once_per_length_bucket(tiny_gemma3):
    # Held-out prompts of many lengths, in batches of 2 sorted by length: the
    # loop compiles once per LENGTH_STEP bucket of a batch's longest prompt
    # (its prefill); the buffer adds exactly max_new_tokens, no second shape.
    import jax
    import keras_hub
    from test_compilations import CompileLog, capture_jax_log

    causal_lm = keras_hub.models.CausalLM.from_preset(str(tiny_gemma3))
    cfg = Config(preset=str(tiny_gemma3), template="gemma", sampler="greedy")
    tokenizer = TextTokenizer(causal_lm.preprocessor.tokenizer)
    rng = np.random.default_rng(0)
    lengths = (40, 3, 17, 9, 33, 5, 14, 20)
    prompts = [[2] + list(rng.integers(5, 100, n - 1)) for n in lengths]
    loop = generate_function(causal_lm, cfg)
    log = CompileLog()
    with capture_jax_log(log), jax.log_compiles(True):
        replies = generate_replies(
            loop, prompts, get_template("gemma"), tokenizer, max_new_tokens=3, batch_size=2
        )
    ordered = sorted(lengths)
    buckets = {round_up(max(ordered[i : i + 2])) for i in range(0, len(ordered), 2)}
    assert log.count("compiled_generate_function") == len(buckets) == 3
    assert all(0 < r["num_tokens"] <= 3 for r in replies) and len(replies) == len(prompts)
    alone = generate_replies(loop, prompts[:1], get_template("gemma"), tokenizer, 3)
    assert alone[0] == replies[0]  # a prompt's reply does not depend on its batch
    assert generate_replies(loop, [], get_template("gemma"), tokenizer, 3) == []  # no prompts


def _buffer(prompts, length, pad_id=0):
    token_ids = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), bool)
    for row, ids in enumerate(prompts):
        token_ids[row, : len(ids)], mask[row, : len(ids)] = ids, True
    return {"token_ids": token_ids, "padding_mask": mask}


@pytest.mark.parametrize("architecture", ["gemma3", "gemma", "llama3"])
def test_greedy_tokens_equal_keras_hubs_generate(architecture, request):
    # Same weights, same greedy tokens as keras-hub's compiled loop, for a
    # batch of prompts of different lengths, with and without stop tokens.
    import keras_hub

    preset = request.getfixturevalue(f"tiny_{architecture}")
    causal_lm = keras_hub.models.CausalLM.from_preset(str(preset))
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(5, 100, n)) for n in (5, 19, 3)]
    inputs = _buffer(prompts, 32)
    causal_lm.compile(sampler="greedy")
    ours = generate_function(causal_lm, Config(preset=str(preset), sampler="greedy"))
    for stop in (None, (int(rng.integers(5, 100)), 1)):
        want = causal_lm.make_generate_function()(inputs, stop_token_ids=stop)
        got = ours(inputs, stop_token_ids=stop)
        want_mask, got_mask = np.asarray(want["padding_mask"]), np.asarray(got["padding_mask"])
        np.testing.assert_array_equal(got_mask, want_mask)
        np.testing.assert_array_equal(
            np.asarray(got["token_ids"])[got_mask], np.asarray(want["token_ids"])[want_mask]
        )


def test_decoding_stops_at_max_length_in_a_rounded_buffer(tiny_gemma3, monkeypatch):
    # One prefill, then max_new_tokens - 1 one-token decode steps: none for
    # the buffer's rounding, none re-running the prompt's last token.
    import jax
    import keras_hub

    causal_lm = keras_hub.models.CausalLM.from_preset(str(tiny_gemma3))
    steps = []
    call_with_cache = causal_lm.call_with_cache

    def counted(token_ids, *args, **kwargs):
        jax.debug.callback(lambda: steps.append(token_ids.shape[1]))
        return call_with_cache(token_ids, *args, **kwargs)

    monkeypatch.setattr(causal_lm, "call_with_cache", counted)
    loop = generate_function(causal_lm, Config(preset=str(tiny_gemma3), sampler="greedy"))
    prompt = list(range(5, 12))
    inputs = _buffer([prompt], 2 * LENGTH_STEP)
    for new in (1, 5, 2 * LENGTH_STEP - len(prompt)):
        steps.clear()
        out = loop(inputs, max_length=len(prompt) + new)
        jax.effects_barrier()
        assert steps == [LENGTH_STEP] + [1] * (new - 1)  # prefill: the prompt, rounded
        mask = np.asarray(out["padding_mask"][0])
        assert mask.sum() == len(prompt) + new and mask[: len(prompt) + new].all()
        assert (np.asarray(out["token_ids"][0])[len(prompt) + new :] == 0).all()


def test_the_loop_cache_is_keras_fts_own_and_lets_a_dropped_model_go(tiny_gemma3):
    # The same model gets its cached loop back (no second compile); nothing is
    # set on keras-hub's object; a model the caller drops is freed, loop or not.
    import gc
    import weakref

    import jax
    import keras_hub
    from test_compilations import CompileLog, capture_jax_log

    causal_lm = keras_hub.models.CausalLM.from_preset(str(tiny_gemma3))
    cfg = Config(preset=str(tiny_gemma3), sampler="greedy")
    inputs = _buffer([[2, 5, 6, 7]], LENGTH_STEP + 4)
    log = CompileLog()
    with capture_jax_log(log), jax.log_compiles(True):
        loop = generate_function(causal_lm, cfg)
        first = np.asarray(loop(inputs)["token_ids"])
        again = generate_function(causal_lm, cfg)
        np.testing.assert_array_equal(np.asarray(again(inputs)["token_ids"]), first)
    assert again is loop and log.count("compiled_generate_function") == 1
    assert not any("keras_ft" in name for name in vars(causal_lm))
    model = weakref.ref(causal_lm)
    del causal_lm, again
    gc.collect()
    assert model() is None
    with pytest.raises(RuntimeError, match="causal LM was deleted"):
        loop(inputs)
