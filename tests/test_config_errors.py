"""Invalid configs fail with a message naming the field and the value, before
any model (or tokenizer) is loaded."""

import pytest
from click.testing import CliRunner

from keras_ft.config import Config
from keras_ft.run import main
from keras_ft.testing import make_tiny_preset


@pytest.fixture()
def no_model_loading(monkeypatch):
    import keras_hub

    def refuse(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the config failed")

    monkeypatch.setattr(keras_hub.models.CausalLM, "from_preset", refuse)
    monkeypatch.setattr(keras_hub.tokenizers.Tokenizer, "from_preset", refuse)


@pytest.mark.parametrize("flags, message", [
    (["--lora-rank", "0"], "`lora_rank` must be positive. Received: lora_rank=0"),
    (["--learning-rate", "-0.001"], "learning_rate=-0.001"),
    (["--batch-size", "0"], "batch_size=0"),
    (["--template", "gema"], "Did you mean 'gemma'? Received: template='gema'"),
    (["--lr-schedule", "cosin"], "Did you mean 'cosine'? Received: lr_schedule='cosin'"),
    (["--quantize", "int3"], "`quantize` must be one of ['', 'int8', 'int4']"),
    (["--gradient-accumulation-steps", "0"], "gradient_accumulation_steps=0"),
    (["--keep-checkpoints", "0"], "keep_checkpoints=0"),
    (["--warmup-steps", "-1"], "warmup_steps=-1"),
    (["--clip-norm", "-1"], "clip_norm=-1.0"),
    (["--early-stopping-patience", "3"], "set `eval_every_steps` > 0"),
    (["--dtype", "float16"], "`dtype` float16 is not supported for training"),
    (["--dtype", "mixed_float16"], "without loss scaling"),
])
def test_cli_rejects_invalid_values_before_loading(no_model_loading, flags, message):
    result = CliRunner().invoke(main, flags)
    assert result.exit_code == 2, result.output  # a usage error, not a traceback
    assert message in " ".join(result.output.split()), result.output


def test_unknown_preset_suggests_close_names_before_loading(no_model_loading, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    result = CliRunner().invoke(main, ["--preset", "gemma2_instruct_2b_enn", "--data",
                                       str(data), "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Unknown preset 'gemma2_instruct_2b_enn'" in result.output
    assert "Did you mean 'gemma2_instruct_2b_en'" in result.output


def test_sequence_length_above_the_context_length_fails_before_the_weights_load(
        tmp_path, monkeypatch):
    preset = make_tiny_preset(tmp_path / "preset", "gemma3", context_length=32)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"prompt": "q{i}", "completion": "a{i}"}}\n' for i in range(20)))
    import keras_hub

    def refuse(*args, **kwargs):
        raise AssertionError("the weights were loaded before sequence_length was checked")

    monkeypatch.setattr(keras_hub.models.CausalLM, "from_preset", refuse)
    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", refuse)
    result = CliRunner().invoke(main, ["--preset", str(preset), "--data", str(data),
                                       "--sequence-length", "64",
                                       "--tokenized-cache-dir", "",
                                       "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    message = " ".join(result.output.split())
    assert ("at most the model's context length of 32 (metadata.json context_length "
            f"of preset {preset}). Received: sequence_length=64") in message


def test_a_llama_gguf_is_refused_naming_its_architecture(tmp_path, monkeypatch):
    import gguf

    path = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    from keras_ft import convert

    result = CliRunner().invoke(convert.main, ["gguf", str(path), str(tmp_path / "out")])
    assert result.exit_code == 1 and result.exception.__class__ is SystemExit, result.output
    message = " ".join(result.output.split())
    assert f"{path}: GGUF architecture 'llama' cannot be converted" in message
    assert "converts only gemma3" in message
    assert not (tmp_path / "out").exists()
    # The same file as --preset: a usage error, not a traceback.
    monkeypatch.setenv("KERAS_FT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    result = CliRunner().invoke(main, ["--preset", str(path), "--data", str(data),
                                       "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "GGUF architecture 'llama' cannot be converted" in result.output


def test_r64_alpha16_is_expressible():
    cfg = Config(lora_rank=64, lora_alpha=16)
    assert (cfg.lora_rank, cfg.lora_alpha) == (64, 16.0)
