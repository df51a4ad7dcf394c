import dataclasses
import json

import pytest
from click.testing import CliRunner

from keras_ft.cli.flags import overrides_from_flags
from keras_ft.cli.run import main
from keras_ft.config import Config, load_config, save_config


def _flags_of(command):
    return {opt.name: opt for opt in command.params}


def test_every_field_has_a_flag():
    flags = _flags_of(main)
    for field in dataclasses.fields(Config):
        assert field.name in flags, field.name
        assert f"--{field.name.replace('_', '-')}" in flags[field.name].opts


def test_flags_reach_the_config():
    ctx = main.make_context(
        "keras-ft",
        [
            "--lora-rank",
            "8",
            "--learning-rate",
            "0.001",
            "--data",
            "a.jsonl",
            "--data",
            "b.jsonl",
            "--no-completion-only-loss",
        ],
    )
    flags = dict(ctx.params)
    flags.pop("config_path")
    cfg = load_config(None, overrides_from_flags(flags))
    assert cfg.lora_rank == 8 and cfg.learning_rate == 0.001
    assert cfg.data == ("a.jsonl", "b.jsonl") and cfg.completion_only_loss is False
    assert cfg.batch_size == Config().batch_size  # untouched flags stay default


def test_precedence_defaults_file_flags(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("lora_rank: 16\nlearning_rate: 2.0e-4\ndata: [one.jsonl]\n")
    cfg = load_config(path, {"lora_rank": 32})
    assert cfg.lora_rank == 32  # flag beats file
    assert cfg.learning_rate == 2e-4 and cfg.data == ("one.jsonl",)  # file beats default
    assert cfg.sequence_length == 256  # default


def test_design_card_defaults():
    cfg = Config()
    assert (
        cfg.lora_rank,
        cfg.learning_rate,
        cfg.weight_decay,
        cfg.sequence_length,
        cfg.batch_size,
        cfg.epochs,
        cfg.sampler,
    ) == (4, 5e-5, 0.01, 256, 1, 1, "top_k")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lora_rank": 0}, "lora_rank=0"),
        ({"learning_rate": -1.0}, "learning_rate=-1.0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"validation_fraction": 1.5}, "validation_fraction=1.5"),
        ({"sampler": "top-k"}, "Did you mean 'top_k'"),
        ({"template": "gema"}, "Did you mean 'gemma'"),
        ({"lora_rank": "four"}, "lora_rank='four'"),
    ],
)
def test_invalid_values_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_unknown_yaml_key_is_refused(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("lora_rnak: 8\n")
    with pytest.raises(ValueError, match="Unknown config key .*'lora_rnak'.*'lora_rank'"):
        load_config(path)


def test_cli_fails_on_invalid_config_before_loading_a_model():
    result = CliRunner().invoke(main, ["--lora-rank", "0"])
    assert result.exit_code == 2
    assert "lora_rank=0" in result.output


def test_config_json_round_trip(tmp_path):
    cfg = Config(lora_rank=8, data=("x.jsonl",))
    save_config(cfg, tmp_path / "config.json")
    loaded = json.loads((tmp_path / "config.json").read_text())
    assert load_config(None, loaded) == cfg


def test_exponent_floats_load_from_yaml_and_a_run_config(tmp_path):
    # PyYAML reads `5e-5` (no dot) as a string; a run's config.json holds 5e-05.
    (tmp_path / "exp.yaml").write_text("learning_rate: 5e-5\nweight_decay: 1e-6\n")
    assert load_config(tmp_path / "exp.yaml").learning_rate == 5e-5
    cfg = Config(learning_rate=5e-5, weight_decay=1e-6, data=("x.jsonl",))
    save_config(cfg, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == cfg
    (tmp_path / "bad.yaml").write_text("learning_rate: fast\n")
    with pytest.raises(ValueError, match="`learning_rate` must be of type float"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("dtype", ["float16", "mixed_float16"])
def test_float16_is_refused_with_the_reason_and_the_alternatives(dtype):
    # keras_ft applies no loss scaling, without which float16 gradients underflow.
    with pytest.raises(ValueError) as error:
        Config(dtype=dtype)
    message = str(error.value)
    assert f"`dtype` {dtype} is not supported" in message and "loss scaling" in message
    assert "mixed_bfloat16" in message and message.endswith(f"Received: dtype={dtype!r}")
    for supported in ("float32", "bfloat16", "mixed_bfloat16"):
        assert Config(dtype=supported).dtype == supported


@pytest.mark.parametrize(
    "targets", ["token_embedding", "query,value", "query, value ,", "default", "attention", "all"]
)
def test_lora_targets_accept_a_set_or_layer_names_even_a_single_one(targets):
    assert Config(lora_targets=targets).lora_targets == targets


@pytest.mark.parametrize("targets", ["", ",", "query;value", "query value", "1query"])
def test_lora_targets_of_no_layer_name_form_are_refused(targets):
    with pytest.raises(
        ValueError,
        match=r"`lora_targets` must be one of .*Received: "
        r"lora_targets=",
    ):
        Config(lora_targets=targets)


# Issue 15: the distribution fields.


def test_distribution_defaults_are_one_process_and_an_auto_mesh():
    cfg = Config()
    assert (cfg.mesh, cfg.coordinator_address, cfg.num_processes, cfg.process_id) == (
        "auto",
        "",
        0,
        0,
    )


def test_distribution_flags_reach_the_config():
    ctx = main.make_context(
        "keras-ft",
        [
            "--mesh",
            "2x4",
            "--coordinator-address",
            "10.0.0.1:1234",
            "--num-processes",
            "2",
            "--process-id",
            "1",
        ],
    )
    flags = dict(ctx.params)
    flags.pop("config_path")
    cfg = load_config(None, overrides_from_flags(flags))
    assert (cfg.mesh, cfg.coordinator_address, cfg.num_processes, cfg.process_id) == (
        "2x4",
        "10.0.0.1:1234",
        2,
        1,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"mesh": "8"},
            ("`mesh` must be 'auto' or DxM: devices along the data axis x along the model axis"),
        ),
        ({"mesh": "0x8"}, "Received: mesh='0x8'"),
        ({"mesh": "Auto"}, "(e.g. 1x1 one device, 8x1 data-parallel, 1x8 or 2x4 model-parallel)"),
        (
            {"process_id": 1},
            (
                "`process_id` must be below `num_processes` (0 to 0; set "
                "`num_processes` for a multi-host run). Received: process_id=1, "
                "num_processes=0"
            ),
        ),
        ({"num_processes": 2, "process_id": 2}, "(0 to 1;"),
        ({"num_processes": -1}, "`num_processes` must be non-negative"),
        (
            {"coordinator_address": "localhost", "num_processes": 2},
            "`coordinator_address` must be host:port of process 0",
        ),
        (
            {"coordinator_address": "a:1,b:2", "num_processes": 2},
            "Received: coordinator_address='a:1,b:2'",
        ),
    ],
)
def test_distribution_fields_are_checked(kwargs, message):
    with pytest.raises(ValueError) as error:
        Config(**kwargs)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "address", ["localhost:12355", "10.0.0.1:1234", "[::1]:8476", "tpu-host-0.internal:8476"]
)
def test_coordinator_addresses_are_accepted(address):
    assert Config(coordinator_address=address, num_processes=2).coordinator_address == address
