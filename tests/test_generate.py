import numpy as np
from click.testing import CliRunner

from keras_ft.config import Config
from keras_ft.generate import encode_prompt, generate, main
from keras_ft.model import build_model, save_adapter
from keras_ft.templates import get_template
from keras_ft.tokens import TextTokenizer


def test_prompt_is_encoded_like_training_prompts(tiny_gemma3):
    tokenizer = TextTokenizer.from_preset(str(tiny_gemma3))
    ids = encode_prompt("Hi", get_template("gemma"), tokenizer)
    assert ids[0] == tokenizer.special_id("<bos>")
    assert ids[1] == tokenizer.special_id("<start_of_turn>")
    tail = tokenizer.encode("model\n")
    assert ids[-len(tail):] == tail
    assert ids.count(tokenizer.special_id("<start_of_turn>")) == 2


def test_replies_stop_at_the_template_end_of_turn(tiny_gemma3, monkeypatch):
    cfg = Config(preset=str(tiny_gemma3), template="gemma", sampler="greedy",
                 max_new_tokens=6)
    causal_lm = build_model(cfg)
    tokenizer = TextTokenizer(causal_lm.preprocessor.tokenizer)
    end = tokenizer.special_id("<end_of_turn>")
    word = tokenizer.encode("fox")
    seen = {}

    def fake_generate_function():
        def run(inputs, stop_token_ids=None):
            seen["stop"] = stop_token_ids
            ids = np.array(inputs["token_ids"])
            mask = np.array(inputs["padding_mask"])
            for row in range(len(ids)):
                n = int(mask[row].sum())
                ids[row, n:n + len(word) + 2] = word + [end, word[0]]
                mask[row, n:n + len(word) + 1] = True
            return {"token_ids": ids, "padding_mask": mask}
        return run

    monkeypatch.setattr(causal_lm, "make_generate_function", fake_generate_function)
    replies = generate(causal_lm, ["Hi", "A longer prompt here"], cfg, tokenizer)
    assert replies == ["fox", "fox"]
    assert end in seen["stop"] and tokenizer.special_id("<eos>") in seen["stop"]


def test_generate_cli_loads_a_preset_and_an_adapter(tiny_gemma, tmp_path):
    cfg = Config(preset=str(tiny_gemma), lora_rank=2)
    save_adapter(build_model(cfg), tmp_path, cfg)
    result = CliRunner().invoke(main, ["--preset", str(tiny_gemma), "--adapter",
                                       str(tmp_path), "--sampler", "greedy",
                                       "--max-new-tokens", "3", "How", "do", "I?"])
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) >= 1


def test_generation_compiles_once_and_sees_new_weights(tiny_gemma3):
    # Sampling every N steps during training must not recompile the loop, yet
    # must use the weights as they are now; another sampler gets its own loop.
    import jax

    from test_compilations import CompileLog, capture_jax_log

    cfg = Config(preset=str(tiny_gemma3), template="gemma", sampler="greedy",
                 max_new_tokens=5)
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
