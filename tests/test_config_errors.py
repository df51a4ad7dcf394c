"""Invalid configs fail with a message naming the field and the value, before
any model (or tokenizer) is loaded."""

import types

import pytest
from click.testing import CliRunner

from keras_ft.config import Config
from keras_ft.model import check_sequence_length
from keras_ft.run import main


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


def test_sequence_length_above_the_model_maximum_names_both():
    # Checked against the loaded backbone (keras-hub keeps the limit there, and
    # Gemma/Llama backbones record none); a stand-in backbone suffices here.
    causal_lm = types.SimpleNamespace(backbone=types.SimpleNamespace(max_sequence_length=512))
    check_sequence_length(causal_lm, 512)
    with pytest.raises(ValueError, match="at most the model's maximum of 512. "
                                         "Received: sequence_length=1024"):
        check_sequence_length(causal_lm, 1024)


def test_r64_alpha16_is_expressible():
    cfg = Config(lora_rank=64, lora_alpha=16)
    assert (cfg.lora_rank, cfg.lora_alpha) == (64, 16.0)
