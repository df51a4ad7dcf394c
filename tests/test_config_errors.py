"""Invalid configs fail with a message naming the field and the value, before
any model (or tokenizer) is loaded."""

import dataclasses
import math
import typing

import pytest
from click.testing import CliRunner

from keras_ft.cli.run import main
from keras_ft.config import Config
from keras_ft.testing import make_tiny_preset


@pytest.fixture()
def no_model_loading(monkeypatch):
    import keras_hub

    def refuse(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the config failed")

    monkeypatch.setattr(keras_hub.models.CausalLM, "from_preset", refuse)
    monkeypatch.setattr(keras_hub.tokenizers.Tokenizer, "from_preset", refuse)


@pytest.mark.parametrize(
    "flags, message",
    [
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
    ],
)
def test_cli_rejects_invalid_values_before_loading(no_model_loading, flags, message):
    result = CliRunner().invoke(main, flags)
    assert result.exit_code == 2, result.output  # a usage error, not a traceback
    assert message in " ".join(result.output.split()), result.output


def test_unknown_preset_suggests_close_names_before_loading(no_model_loading, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    result = CliRunner().invoke(
        main,
        [
            "--preset",
            "gemma2_instruct_2b_enn",
            "--data",
            str(data),
            "--output-dir",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Unknown preset 'gemma2_instruct_2b_enn'" in result.output
    assert "Did you mean 'gemma2_instruct_2b_en'" in result.output


def test_sequence_length_above_the_context_length_fails_before_the_weights_load(
    tmp_path, monkeypatch
):
    preset = make_tiny_preset(tmp_path / "preset", "gemma3", context_length=32)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(f'{{"prompt": "q{i}", "completion": "a{i}"}}\n' for i in range(20)))
    import keras_hub

    def refuse(*args, **kwargs):
        raise AssertionError("the weights were loaded before sequence_length was checked")

    monkeypatch.setattr(keras_hub.models.CausalLM, "from_preset", refuse)
    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", refuse)
    result = CliRunner().invoke(
        main,
        [
            "--preset",
            str(preset),
            "--data",
            str(data),
            "--sequence-length",
            "64",
            "--tokenized-cache-dir",
            "",
            "--output-dir",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    message = " ".join(result.output.split())
    assert (
        "at most the model's context length of 32 (metadata.json context_length "
        f"of preset {preset}). Received: sequence_length=64"
    ) in message


def test_a_qwen2_gguf_is_refused_naming_its_architecture(tmp_path, monkeypatch):
    import gguf

    # An architecture keras_ft does not convert (it converts gemma, gemma2,
    # gemma3 and llama).
    path = tmp_path / "qwen2.gguf"
    writer = gguf.GGUFWriter(path, arch="qwen2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    from keras_ft.cli import convert

    result = CliRunner().invoke(convert.main, ["gguf", str(path), str(tmp_path / "out")])
    assert result.exit_code == 1 and result.exception.__class__ is SystemExit, result.output
    message = " ".join(result.output.split())
    assert f"{path}: GGUF architecture 'qwen2' cannot be converted" in message
    assert "converts only" in message and "gemma3" in message
    assert not (tmp_path / "out").exists()
    # The same file as --preset: a usage error, not a traceback.
    monkeypatch.setenv("KERAS_FT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    result = CliRunner().invoke(
        main, ["--preset", str(path), "--data", str(data), "--output-dir", str(tmp_path / "run")]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "GGUF architecture 'qwen2' cannot be converted" in result.output


def test_r64_alpha16_is_expressible():
    cfg = Config(lora_rank=64, lora_alpha=16)
    assert (cfg.lora_rank, cfg.lora_alpha) == (64, 16.0)


# Issue 13: non-finite and out-of-range numbers, every numeric field.


def _numeric_fields():
    hints = typing.get_type_hints(Config)
    for field in dataclasses.fields(Config):
        tp = hints[field.name]
        if tp in (int, float) or (
            typing.get_origin(tp) is tuple and typing.get_args(tp)[0] in (int, float)
        ):
            yield field.name, tp


NUMERIC_FIELDS = list(_numeric_fields())
FLOAT_FIELDS = [name for name, tp in NUMERIC_FIELDS if tp is not int]


def _valid(name, tp, number):
    return (number,) if typing.get_origin(tp) is tuple else number


def test_the_numeric_fields_are_found_by_type():
    from keras_ft.config import INTERVAL_FIELDS, POSITIVE_FIELDS

    names = [name for name, _ in NUMERIC_FIELDS]
    assert {
        "temperature",
        "learning_rate",
        "top_p",
        "validation_fraction",
        "seed",
        "lora_rank",
        "data_weights",
        "clip_norm",
    } <= set(names)
    assert set(POSITIVE_FIELDS) | set(INTERVAL_FIELDS) <= set(names)


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_every_float_field_refuses_non_finite_values(name, bad):
    tp = typing.get_type_hints(Config)[name]
    value = _valid(name, tp, bad)
    with pytest.raises(ValueError, match="finite") as info:
        Config(**{name: value})
    assert f"Received: {name}={value!r}" in str(info.value)


@pytest.mark.parametrize("name, tp", NUMERIC_FIELDS)
def test_every_numeric_field_refuses_a_negative_value(name, tp):
    value = _valid(name, tp, tp(-1) if tp in (int, float) else -1.0)
    with pytest.raises(ValueError) as info:
        Config(**{name: value})
    assert f"`{name}` must" in str(info.value)
    assert f"Received: {name}={value!r}" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"top_p": 0.0}, "`top_p` must be in (0, 1]. Received: top_p=0.0"),
        ({"top_p": 1.5}, "Received: top_p=1.5"),
        (
            {"validation_fraction": 1.0},
            "`validation_fraction` must be in [0, 1). Received: validation_fraction=1.0",
        ),
        ({"seed": 2**32}, "`seed` must be in [0, 4294967295]. Received: seed=4294967296"),
        (
            {"data": ("a", "b"), "data_weights": (1.0, 0.0)},
            "`data_weights` must all be positive. Received: data_weights=(1.0, 0.0)",
        ),
        (
            {"data": ("a", "b"), "data_weights": (1.0, math.nan)},
            "`data_weights` must all be finite numbers. Received: data_weights=(1.0, nan)",
        ),
        ({"temperature": 0.0}, "`temperature` must be positive. Received: temperature=0.0"),
        (
            {"repetition_penalty": 0.0},
            "`repetition_penalty` must be positive. Received: repetition_penalty=0.0",
        ),
        (
            {"no_repeat_ngram_size": -1},
            "`no_repeat_ngram_size` must be non-negative. Received: no_repeat_ngram_size=-1",
        ),
    ],
)
def test_out_of_range_values_name_the_field(kwargs, message):
    with pytest.raises(ValueError) as info:
        Config(**kwargs)
    assert message in str(info.value)


def test_boundary_values_are_accepted():
    cfg = Config(
        top_p=1.0, validation_fraction=0.0, seed=2**32 - 1, lora_alpha=0, clip_norm=0, max_steps=0
    )
    assert (cfg.top_p, cfg.validation_fraction, cfg.seed) == (1.0, 0.0, 2**32 - 1)


def test_a_new_numeric_field_is_checked_without_being_listed():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Extended(Config):
        new_scale: float = 1.0
        new_count: int = 1

    assert Extended(new_scale=2.5).new_scale == 2.5
    with pytest.raises(ValueError, match=r"Received: new_scale=nan"):
        Extended(new_scale=math.nan)
    with pytest.raises(ValueError, match=r"`new_count` must be non-negative"):
        Extended(new_count=-3)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--temperature", "nan"],
            "`temperature` must be a finite number. Received: temperature=nan",
        ),
        (["--learning-rate", "inf"], "Received: learning_rate=inf"),
        (["--top-p", "-inf"], "Received: top_p=-inf"),
        (["--lora-alpha", "nan"], "Received: lora_alpha=nan"),
        (["--weight-decay", "NaN"], "Received: weight_decay=nan"),
        (
            ["--data", "a", "--data", "b", "--data-weights", "1", "--data-weights", "inf"],
            "Received: data_weights=(1.0, inf)",
        ),
        (["--seed", "-1"], "Received: seed=-1"),
        (["--validation-fraction", "1"], "Received: validation_fraction=1.0"),
        (["--top-p", "1.01"], "Received: top_p=1.01"),
        (["--max-steps", "-5"], "Received: max_steps=-5"),
    ],
)
def test_cli_refuses_non_finite_and_out_of_range_flags(no_model_loading, flags, message):
    result = CliRunner().invoke(main, flags)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_yaml_nan_is_refused_naming_the_file_key(no_model_loading, tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("temperature: .nan\nclip_norm: .inf\n")
    result = CliRunner().invoke(main, ["--config", str(path)])
    assert result.exit_code == 2, result.output
    assert "Received: clip_norm=inf" in " ".join(result.output.split())


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe\x00\x01garbage", "is not UTF-8 text"),
        ("lora_rank: 4\n".encode("utf-16"), "is not UTF-8 text"),
        (None, "is a directory; pass a YAML file"),
    ],
)
def test_unreadable_experiment_files_are_named(tmp_path, content, message):
    from keras_ft.config import load_config

    path = tmp_path / "exp.yaml"
    path.mkdir() if content is None else path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert f"Experiment file {path} {message}" in str(info.value)


def test_an_experiment_path_with_a_nul_byte_is_named():
    from keras_ft.config import load_config

    with pytest.raises(ValueError) as info:
        load_config("exp\0.yaml")
    assert str(info.value) == (
        "Experiment file 'exp\\x00.yaml' is not a valid path: it holds a NUL character."
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--repetition-penalty", "0"], "Received: repetition_penalty=0.0"),
        (["--repetition-penalty", "nan"], "Received: repetition_penalty=nan"),
        (["--no-repeat-ngram-size", "-2"], "Received: no_repeat_ngram_size=-2"),
    ],
)
def test_generate_refuses_bad_penalties_before_loading(no_model_loading, flags, message):
    from keras_ft.cli.generate import main as generate_main

    result = CliRunner().invoke(generate_main, [*flags, "Hi"])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
