"""`python -m keras_ft export gguf --adapter RUN` for a QLoRA run.

The adapter was trained on an int8 base; GGUF holds float weights, so the
export merges it into the FLOAT base. Checked end to end: train a QLoRA run on
a tiny Gemma 3 (the architecture GGUF export supports), export it through the
CLI with only --adapter, convert the GGUF back to keras and compare logits
with the float base + LoRA merged in memory.
"""

import json

import keras
import keras_hub
import numpy as np
import pytest
from click.testing import CliRunner

from keras_ft import Config, finetune
from keras_ft.cli import export
from keras_ft.export.source import export_preset
from keras_ft.gguf import convert
from keras_ft.model.lora import ADAPTER_CONFIG_FILE, load_adapter
from keras_ft.testing import GEMMA_SPECIALS, TINY_BACKBONE, TINY_CORPUS

TOKEN_IDS = np.array([[2, 4, 300, 301, 340, 341, 350, 5, 360, 61]], np.int32)  # < 400
ROWS = [
    ("How do I boil an egg?", "1. Fill a pot with water.\n2. Boil it."),
    ("How do I make tea?", "1. Boil water.\n2. Add the tea."),
    ("How do I count?", "1. Say one.\n2. Say two."),
    ("How do I jump?", "1. Bend.\n2. Jump over the dog."),
]


def logits(causal_lm) -> np.ndarray:
    inputs = {"token_ids": TOKEN_IDS, "padding_mask": np.ones_like(TOKEN_IDS, bool)}
    return np.asarray(causal_lm(inputs))


def byte_fallback_sentencepiece(vocab_size: int = 400) -> bytes:
    """A tiny Gemma-layout vocabulary with the 256 byte pieces GGUF's (and
    `keras_ft.convert`'s) Gemma tokenizer assumes."""
    import io

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TINY_CORPUS * 4),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="BPE",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=GEMMA_SPECIALS + ["<mask>", "\n"],
        add_dummy_prefix=False,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        split_digits=True,
        minloglevel=2,
    )
    return model.getvalue()


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory):
    """A tiny Gemma 3 llama.cpp can run (post norms on), tuned with int8 QLoRA."""
    root = tmp_path_factory.mktemp("qlora_export")
    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.models.Gemma3Tokenizer(
        proto=byte_fallback_sentencepiece(), has_vision_tokens=False
    )
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        image_size=896,
        use_sliding_window_attention=True,
        sliding_window_size=16,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        **TINY_BACKBONE,
    )
    preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(
        tokenizer=tokenizer, sequence_length=64
    )
    keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=preprocessor).save_to_preset(
        str(root / "base")
    )
    data = root / "steps.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in ROWS))
    cfg = Config(
        preset=str(root / "base"),
        data=(str(data),),
        template="gemma",
        quantize="int8",
        lora_rank=2,
        lora_alpha=8.0,
        validation_fraction=0.0,
        max_steps=3,
        learning_rate=5e-2,
        output_dir=str(root / "run"),
        sample_prompts=("Hi",),
        max_new_tokens=2,
    )
    finetune(cfg)
    return root


def test_qlora_run_exports_merged_into_the_float_base(qlora_run, tmp_path):
    run = qlora_run / "run"
    meta = json.loads((run / ADAPTER_CONFIG_FILE).read_text())
    assert meta["quantize"] == "int8"
    out = tmp_path / "tuned.gguf"
    result = CliRunner().invoke(
        export.main, ["gguf", "--adapter", str(run), str(out), "--outtype", "f32"]
    )
    assert result.exit_code == 0, result.output
    assert "quantized int8" in result.stderr and "FLOAT base" in result.stderr
    assert result.stdout.strip() == str(out)

    convert.convert_gguf(out, tmp_path / "back")
    reloaded = keras_hub.models.Gemma3CausalLM.from_preset(str(tmp_path / "back"))
    float_base = keras_hub.models.CausalLM.from_preset(str(qlora_run / "base"))
    expected_base = logits(float_base)
    load_adapter(float_base, run, quantize=False)
    assert {w.dtype for w in float_base.backbone.weights} == {"float32"}  # no int8 kernels
    expected = logits(float_base)
    np.testing.assert_allclose(logits(reloaded), expected, atol=1e-5)
    assert np.abs(expected - expected_base).max() > 1e-3  # the adapter is in there


def test_export_without_a_preset_needs_one_recorded(tmp_path):
    lone = tmp_path / "x.lora.h5"
    lone.write_bytes(b"")
    result = CliRunner().invoke(
        export.main, ["gguf", "--adapter", str(lone), str(tmp_path / "x.gguf")]
    )
    assert result.exit_code == 2
    assert f"Pass --preset: {tmp_path / ADAPTER_CONFIG_FILE} records none" in result.output
    result = CliRunner().invoke(export.main, ["gguf", str(tmp_path / "x.gguf")])
    assert result.exit_code == 2 and "Pass --preset: no --adapter given" in result.output
    assert not (tmp_path / "x.gguf").exists()


def test_the_export_preset_is_library_code_that_raises_value_errors(tmp_path):
    # The CLI maps these to usage errors (exit 2, above); the library raises
    # plain ValueErrors, no click error.
    lone = tmp_path / "x.lora.h5"
    lone.write_bytes(b"")
    with pytest.raises(ValueError, match="records none"):
        export_preset(None, lone)
    with pytest.raises(ValueError, match="no --adapter given"):
        export_preset(None, None)
    with pytest.raises(ValueError, match=f"--adapter {tmp_path}: No adapter at"):
        export_preset(None, tmp_path)
    assert export_preset("gemma3_270m", None) == ("gemma3_270m", "")
    (tmp_path / ADAPTER_CONFIG_FILE).write_text(json.dumps({"preset": "base", "quantize": "int4"}))
    preset, note = export_preset(None, lone)
    assert preset == "base" and "quantized int4" in note and "FLOAT base" in note
