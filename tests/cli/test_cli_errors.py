"""Every command line reports known errors as one message (exit 1 or 2), no traceback.

In-process through click's CliRunner, on tiny presets: a missing or
mismatched adapter, an unknown or unsupported preset, corrupt preset, GGUF
and adapter files, bad flags; plus the file mode of an exported GGUF.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import click
import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from keras_ft.cli import convert, evaluate, export, generate, run
from keras_ft.cli import errors as cli_errors
from keras_ft.config import Config
from keras_ft.model.lora import ADAPTER_CONFIG_FILE, ADAPTER_FILE


def invoke(command, args, code=1):
    """Runs `command`; checks it failed cleanly with `code`; returns its output."""
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert isinstance(result.exception, SystemExit), (
        f"not a clean exit: {result.exception!r}\n{result.output}"
    )
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    return result.output


@pytest.fixture(scope="module")
def gemma_adapter(tiny_gemma, tmp_path_factory) -> Path:
    """A run directory holding an adapter trained (saved) on tiny Gemma."""
    import keras_hub

    from keras_ft.model.lora import enable_lora, save_adapter

    causal_lm = keras_hub.models.CausalLM.from_preset(str(tiny_gemma))
    cfg = Config(preset=str(tiny_gemma), lora_rank=4, lora_targets="query,value", template="gemma")
    enable_lora(causal_lm.backbone, cfg.lora_rank, targets=cfg.lora_targets)
    run_dir = tmp_path_factory.mktemp("gemma_run")
    save_adapter(causal_lm, run_dir, cfg)
    return run_dir


@pytest.fixture(scope="module")
def legacy_adapter(gemma_adapter, tmp_path_factory) -> Path:
    """The same adapter with an adapter_config.json as written before the model
    was recorded (rank, alpha, targets, preset, template only)."""
    run_dir = tmp_path_factory.mktemp("legacy_run")
    shutil.copy(gemma_adapter / ADAPTER_FILE, run_dir / ADAPTER_FILE)
    meta = json.loads((gemma_adapter / ADAPTER_CONFIG_FILE).read_text())
    for key in ("backbone", "backbone_config", "lora_variables"):
        meta.pop(key, None)  # absent before this change
    (run_dir / ADAPTER_CONFIG_FILE).write_text(json.dumps(meta))
    return run_dir


def test_save_adapter_records_the_model(gemma_adapter):
    meta = json.loads((gemma_adapter / ADAPTER_CONFIG_FILE).read_text())
    assert meta["backbone"] == "GemmaBackbone"
    assert meta["backbone_config"] == {
        "vocabulary_size": 160,
        "num_layers": 2,
        "hidden_dim": 16,
        "intermediate_dim": 32,
        "num_query_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 8,
    }
    assert meta["lora_variables"]["decoder_block_0/attention/query/lora_kernel_a"] == [2, 16, 4]
    assert meta["lora_variables"]["decoder_block_1/attention/value/lora_kernel_b"] == [4, 8]
    assert len(meta["lora_variables"]) == 8  # 2 blocks x (query, value) x (a, b)


@pytest.mark.parametrize(
    "other, cls", [("tiny_llama3", "Llama3Backbone"), ("tiny_gemma3", "Gemma3Backbone")]
)
def test_generate_refuses_an_adapter_of_another_model(
    request, gemma_adapter, tiny_gemma, other, cls
):
    preset = request.getfixturevalue(other)
    out = invoke(generate.main, ["--preset", preset, "--adapter", gemma_adapter, "hi"])
    assert (
        f"Adapter {gemma_adapter / ADAPTER_FILE} was trained on GemmaBackbone "
        f"({tiny_gemma}, rank 4, targets query,value) but the model is {cls} ("
    ) in out
    assert f"Apply it to the preset it was trained on (--preset {tiny_gemma})." in out


@pytest.mark.parametrize("other", ["tiny_llama3", "tiny_gemma3"])
def test_an_adapter_without_a_recorded_model_is_checked_by_its_weights(
    request, legacy_adapter, other
):
    preset = request.getfixturevalue(other)
    out = invoke(generate.main, ["--preset", preset, "--adapter", legacy_adapter, "hi"])
    assert f"Adapter {legacy_adapter / ADAPTER_FILE} was trained on another model" in out
    assert "its LoRA layers are not this model's" in out


def test_the_lora_shapes_of_the_file_are_checked(tiny_gemma, gemma_adapter, tmp_path):
    """Same class, same layers, other shapes (a record edited by hand, or a model
    that keras_ft does not record the shape fields of): named, not a shape dump."""
    import keras_hub

    from keras_ft.model.lora import AdapterMismatchError, load_adapter

    run_dir = tmp_path / "run"
    shutil.copytree(gemma_adapter, run_dir)
    meta = json.loads((run_dir / ADAPTER_CONFIG_FILE).read_text())
    meta.pop("backbone_config")
    meta["lora_targets"] = "query,key"  # the file holds query and value
    (run_dir / ADAPTER_CONFIG_FILE).write_text(json.dumps(meta))
    causal_lm = keras_hub.models.CausalLM.from_preset(str(tiny_gemma))
    with pytest.raises(AdapterMismatchError, match="its LoRA layers are not this model's"):
        load_adapter(causal_lm, run_dir)
    import h5py

    with h5py.File(run_dir / ADAPTER_FILE, "a") as file:  # value's A: (1, 16, 4) -> (1, 16, 3)
        del file["lora/8/vars/lora_kernel_a"]
        file["lora/8/vars/lora_kernel_a"] = np.zeros((1, 16, 3), np.float32)
    meta["lora_targets"] = "query,value"
    (run_dir / ADAPTER_CONFIG_FILE).write_text(json.dumps(meta))
    causal_lm = keras_hub.models.CausalLM.from_preset(str(tiny_gemma))
    with pytest.raises(
        AdapterMismatchError,
        match=r"layer decoder_block_0/attention/value "
        r"has LoRA weights .*\(1, 16, 3\).* in the adapter but "
        r".*\(1, 16, 4\).* in this model",
    ):
        load_adapter(causal_lm, run_dir)


def test_recorded_shapes_are_compared_before_the_model_changes(tiny_gemma, gemma_adapter, tmp_path):
    import keras_hub

    from keras_ft.model.lora import AdapterMismatchError, load_adapter

    shutil.copytree(gemma_adapter, tmp_path / "run")
    path = tmp_path / "run" / ADAPTER_CONFIG_FILE
    meta = json.loads(path.read_text())
    meta["backbone_config"]["hidden_dim"] = 640
    path.write_text(json.dumps(meta))
    causal_lm = keras_hub.models.CausalLM.from_preset(str(tiny_gemma))
    with pytest.raises(
        AdapterMismatchError, match="hidden_dim 640 in the adapter's model, 16 in this one"
    ):
        load_adapter(causal_lm, tmp_path / "run")
    assert not any("lora" in w.path for w in causal_lm.backbone.weights)  # untouched


def test_a_matching_adapter_still_loads(tiny_gemma, gemma_adapter):
    import keras_hub

    from keras_ft.model.lora import load_adapter

    causal_lm = keras_hub.models.CausalLM.from_preset(str(tiny_gemma))
    assert load_adapter(causal_lm, gemma_adapter)["backbone"] == "GemmaBackbone"
    assert len(causal_lm.backbone.trainable_weights) == 8


def test_export_refuses_an_adapter_of_another_model(gemma_adapter, tiny_gemma3, tmp_path):
    out = invoke(
        export.main,
        ["gguf", "--preset", tiny_gemma3, "--adapter", gemma_adapter, tmp_path / "m.gguf"],
    )
    assert "was trained on GemmaBackbone" in out and "the model is Gemma3Backbone" in out
    assert not list(tmp_path.iterdir())


def _heldout(tmp_path) -> Path:
    path = tmp_path / "heldout.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": f"q{i}?", "completion": f"a{i}."}) + "\n" for i in range(4))
    )
    return path


def test_evaluate_refuses_a_mismatched_adapter_before_scoring_the_base(
    gemma_adapter, tiny_gemma3, tmp_path, caplog
):
    """Tiny Gemma 3 has tiny Gemma's shapes: only the recorded class tells them apart."""
    caplog.set_level("INFO", logger="keras_ft")
    out = invoke(
        evaluate.main,
        [
            "--adapter",
            gemma_adapter,
            "--preset",
            tiny_gemma3,
            "--validation-data",
            _heldout(tmp_path),
            "--report-dir",
            tmp_path / "eval",
            "--num-generate",
            "1",
            "--no-latency",
        ],
    )
    assert "was trained on GemmaBackbone" in out
    assert (
        "the model is Gemma3Backbone (vocabulary_size 160, num_layers 2, hidden_dim 16, "
        "intermediate_dim 32, num_query_heads 2, num_key_value_heads 1, head_dim 8). "
        "Apply it"
    ) in out
    assert not any("Scoring the base model" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "eval").exists()


def test_a_damaged_run_config_is_named(gemma_adapter, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(gemma_adapter, run_dir)
    (run_dir / "config.json").write_text('{"preset": ')
    out = invoke(evaluate.main, ["--adapter", run_dir, "--validation-data", _heldout(tmp_path)])
    assert f"{run_dir / 'config.json'} is not valid JSON" in out


def test_a_chat_template_that_is_not_utf8_is_named(tiny_gemma3, tmp_path):
    template = tmp_path / "chat.jinja"
    template.write_text("{{ messages }}", encoding="utf-16")
    out = invoke(
        export.main,
        ["gguf", "--preset", tiny_gemma3, "--chat-template", template, tmp_path / "m.gguf"],
        2,
    )
    assert f"--chat-template {template} is not UTF-8 text" in out


def test_a_missing_adapter_is_said_first(tiny_gemma, tmp_path):
    missing = tmp_path / "nowhere" / ADAPTER_FILE
    out = invoke(generate.main, ["--preset", tiny_gemma, "--adapter", missing, "hi"])
    assert f"No adapter at {missing}" in out
    # evaluate checks it before reading the data (which is missing too)
    config = tmp_path / "x.yaml"
    config.write_text(f"preset: {tiny_gemma}\n")
    out = invoke(
        evaluate.main,
        ["--adapter", missing, "--config", config, "--validation-data", tmp_path / "missing.jsonl"],
    )
    assert f"No adapter at {missing}" in out


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
def test_a_damaged_adapter_file_is_named(tiny_gemma, gemma_adapter, tmp_path, kind):
    good = (gemma_adapter / ADAPTER_FILE).read_bytes()
    content = {"truncated": good[: len(good) // 2], "garbage": os.urandom(2048), "empty": b""}[kind]
    bad = tmp_path / ADAPTER_FILE
    bad.write_bytes(content)
    out = invoke(generate.main, ["--preset", tiny_gemma, "--adapter", bad, "hi"])
    assert f"Adapter file {bad} cannot be read as a keras-hub LoRA file" in out
    assert "Train the adapter again" in out


def test_a_damaged_adapter_config_is_named(tiny_gemma, gemma_adapter, tmp_path):
    shutil.copytree(gemma_adapter, tmp_path / "run")
    (tmp_path / "run" / ADAPTER_CONFIG_FILE).write_text("{not json")
    out = invoke(generate.main, ["--preset", tiny_gemma, "--adapter", tmp_path / "run", "hi"])
    assert f"{tmp_path / 'run' / ADAPTER_CONFIG_FILE} is not valid JSON" in out


def test_an_adapter_config_that_disagrees_with_its_file(tiny_gemma, gemma_adapter, tmp_path):
    shutil.copytree(gemma_adapter, tmp_path / "run")
    path = tmp_path / "run" / ADAPTER_CONFIG_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), "lora_rank": 8}))
    out = invoke(generate.main, ["--preset", tiny_gemma, "--adapter", tmp_path / "run", "hi"])
    assert f"{path} records lora_rank 8 but" in out and "holds rank 4" in out


# ------------------------------------------------------------------ presets


def test_unknown_preset_and_bad_flags(tiny_gemma, tmp_path):
    out = invoke(generate.main, ["--preset", "gemma_2b_enn", "hi"])
    assert "Unknown preset 'gemma_2b_enn'. Did you mean 'gemma_2b_en'" in out
    out = invoke(generate.main, ["--preset", tiny_gemma, "--template", "{bad", "hi"])
    assert "It is not a valid format string" in out and "Received: template='{bad'" in out
    bad = tmp_path / "x.yaml"
    bad.write_text("lora_rnak: 4\n")
    out = invoke(generate.main, ["--config", bad, "hi"], 2)
    assert f"Unknown config key in {bad}: 'lora_rnak'. Did you mean 'lora_rank'?" in out


def test_a_missing_gguf_file_is_not_an_unknown_preset(tmp_path):
    missing = tmp_path / "model.gguf"
    out = invoke(generate.main, ["--preset", missing, "hi"])
    assert f"The GGUF file {missing} does not exist" in out and "Unknown preset" not in out
    out = invoke(generate.main, ["--preset", tmp_path / "no_dir", "hi"])
    assert f"The preset directory {tmp_path / 'no_dir'} does not exist" in out


def test_a_directory_without_config_json_is_named_in_the_message(tmp_path):
    from keras_ft.model.presets import resolve_preset

    with pytest.raises(ValueError, match="no config.json") as e:
        resolve_preset(str(tmp_path))
    assert f"Received: preset={str(tmp_path)!r}" in str(e.value)
    assert "{preset!r}" not in str(e.value)


def test_unsupported_schemes_are_named(tmp_path):
    from keras_ft.data.sources import parse_spec

    out = invoke(generate.main, ["--preset", "s3://bucket/x", "hi"])
    assert "Unsupported scheme s3:// in preset 's3://bucket/x'" in out
    assert "kaggle://, hf://" in out
    with pytest.raises(
        ValueError,
        match=r"^s3://bucket/x: unsupported scheme s3://; "
        r"supported: local paths .*tfds:.*kaggle:",
    ):
        parse_spec("s3://bucket/x")
    out = invoke(
        run.main,
        ["--data", "s3://bucket/x", "--preset", "s3://bucket/y", "--output-dir", tmp_path / "out"],
    )
    assert "s3://" in out and "does not exist" not in out


def _corrupt(tiny_gemma, tmp_path, kind) -> tuple[Path, Path]:
    preset = tmp_path / kind
    shutil.copytree(tiny_gemma, preset)
    weights, config = preset / "model.weights.h5", preset / "config.json"
    if kind == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
        return preset, weights
    if kind == "garbage_weights":
        weights.write_bytes(os.urandom(4096))
        return preset, weights
    if kind == "no_weights":
        weights.unlink()
        return preset, preset
    if kind == "config_not_json":
        config.write_text('{"module": "keras_hub.src.models", "class_na')
        return preset, config
    if kind == "config_empty":
        config.write_text("")
        return preset, config
    assert kind == "config_foreign_class"
    values = json.loads(config.read_text())
    values.update({"module": "os", "class_name": "system", "registered_name": "os>system"})
    config.write_text(json.dumps(values))
    return preset, config


@pytest.mark.parametrize(
    "kind",
    [
        "truncated_weights",
        "garbage_weights",
        "no_weights",
        "config_not_json",
        "config_empty",
        "config_foreign_class",
    ],
)
def test_a_corrupt_preset_names_its_file(tiny_gemma, tmp_path, kind):
    preset, culprit = _corrupt(tiny_gemma, tmp_path, kind)
    out = invoke(generate.main, ["--preset", preset, "hi"])
    assert str(culprit) in out
    assert "Download the preset again" in out
    if kind == "config_foreign_class":
        assert "'os>system' (module 'os')" in out


def test_run_reports_a_corrupt_preset_as_such_not_as_a_disk_problem(tiny_gemma, tmp_path):
    preset, weights = _corrupt(tiny_gemma, tmp_path, "truncated_weights")
    data = _heldout(tmp_path)
    out = invoke(
        run.main,
        ["--preset", preset, "--data", data, "--output-dir", tmp_path / "out", "--max-steps", "1"],
    )
    assert f"{weights} cannot be read" in out and "truncated" in out
    assert "Check the disk" not in out


def _small_gguf(path: Path) -> bytes:
    writer = gguf.GGUFWriter(str(path), arch="gemma3")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.mark.parametrize("kind", ["truncated", "header_only", "empty", "not_gguf"])
def test_a_corrupt_gguf_names_its_file(tmp_path, kind, monkeypatch):
    good = _small_gguf(tmp_path / "good.gguf")
    content = {
        "truncated": good[: len(good) // 2],
        "header_only": good[:8],
        "empty": b"",
        "not_gguf": b"hello, I am text\n",
    }[kind]
    bad = tmp_path / f"{kind}.gguf"
    bad.write_bytes(content)
    out = invoke(convert.main, ["gguf", bad, tmp_path / "out"])
    assert f"{bad} is not a readable GGUF file ({len(content)} bytes" in out
    assert "Download it again" in out
    assert not (tmp_path / "out").exists()
    if kind == "truncated":  # the same through --preset (converted on first use)
        monkeypatch.setenv("KERAS_FT_CACHE", str(tmp_path / "cache"))
        out = invoke(generate.main, ["--preset", bad, "hi"])
        assert f"{bad} is not a readable GGUF file" in out


def test_a_gguf_missing_a_field_is_named(tmp_path):
    bare = tmp_path / "bare.gguf"
    _small_gguf(bare)
    out = invoke(convert.main, ["gguf", bare, tmp_path / "out"])
    assert f"{bare}: The GGUF file lacks the `gemma3." in out


def test_convert_onto_an_existing_directory_is_a_usage_error(tmp_path):
    good = tmp_path / "good.gguf"
    _small_gguf(good)
    (tmp_path / "out").mkdir()
    out = invoke(convert.main, ["gguf", good, tmp_path / "out"], 2)
    assert f"OUT_DIR {tmp_path / 'out'} exists; pass --replace" in out


def test_compare_reports_a_missing_request_and_no_presets(tmp_path):
    from keras_ft.cli import compare

    missing = tmp_path / "requested_config.json"
    out = invoke(compare.main, ["--worker", missing])
    assert f"No such file or directory: {missing}" in out
    out = invoke(compare.main, ["--presets", ",", "--output-dir", tmp_path / "out"], 2)
    assert "Pass the presets as --presets a,b" in out and not (tmp_path / "out").exists()
    for bad in ("-inf", "nan", "0"):
        out = invoke(
            compare.main,
            ["--presets", "a,b", "--timeout", bad, "--output-dir", tmp_path / "out"],
            2,
        )
        assert "--timeout must be a positive number of seconds. Received: --timeout" in out
    assert not (tmp_path / "out").exists()


def test_run_names_a_config_path_holding_a_nul(tmp_path):
    out = invoke(run.main, ["--config", "a\0b.yaml"], 2)
    assert "Experiment file 'a\\x00b.yaml' is not a valid path" in out


# -------------------------------------------------------------- the helper


def test_reported_turns_known_errors_into_messages_and_keeps_bugs_loud():
    from keras_ft.model.presets import PresetUnavailableError

    def command_raising(error):
        @click.command()
        @cli_errors.reported
        def main():
            raise error

        return main

    out = invoke(command_raising(PresetUnavailableError("no network for x")), [])
    assert "Error: no network for x" in out
    out = invoke(command_raising(FileNotFoundError(2, "No such file or directory", "/x/y")), [])
    assert "Error: No such file or directory: /x/y" in out and "Errno" not in out
    out = invoke(command_raising(click.UsageError("bad flag")), [], 2)
    result = CliRunner().invoke(command_raising(KeyError("a bug")), [])
    assert isinstance(result.exception, KeyError)  # a bug keeps its traceback


def test_exported_gguf_gets_a_normal_file_mode(tmp_path):
    import keras_hub

    from keras_ft.export.gguf import export_gguf
    from keras_ft.testing import TINY_BACKBONE, train_tiny_sentencepiece

    tokenizer = keras_hub.models.Gemma3Tokenizer(
        proto=train_tiny_sentencepiece(), has_vision_tokens=False
    )
    backbone = keras_hub.models.Gemma3Backbone(  # what llama.cpp's gemma3 runs
        vocabulary_size=tokenizer.vocabulary_size(),
        image_size=None,
        use_sliding_window_attention=True,
        sliding_window_size=16,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        **TINY_BACKBONE,
    )
    causal_lm = keras_hub.models.Gemma3CausalLM(
        backbone=backbone, preprocessor=keras_hub.models.Gemma3CausalLMPreprocessor(tokenizer)
    )
    old = os.umask(0o027)
    try:
        out = export_gguf(causal_lm, tmp_path / "m.gguf", dtype="f32")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]
