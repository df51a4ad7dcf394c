"""Every experiment file loads; every offline variant trains 2 steps."""

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

from keras_ft import finetune
from keras_ft.config import EMBEDDED_PRESET, load_config

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))
OFFLINE = [p for p in EXPERIMENTS if p.name.startswith("gemma3_270m_")]
SEED_RECIPES = (
    "gemma_2b_en_lora_dolly",
    "gemma_instruct_2b_en_qlora_bitext_steps",
    "llama3.2_1b_lora_sharegpt",
    "gemma_2b_en_lora_news_category",
    "gemma_vs_llama3_lora_dolly",
)


def header_commands(path: Path) -> list[list[str]]:
    """The `python -m keras_ft...` (`keras_ft.run` or `keras_ft <command>`) commands in the file's header comment."""
    return [
        shlex.split(text)
        for text in header_lines(path)
        if text.startswith(("python -m keras_ft.", "python -m keras_ft "))
    ]


def header_lines(path: Path) -> list[str]:
    """The header comment's lines, without their leading `# `."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    return lines


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_loads_and_its_header_gives_the_command(path):
    cfg = load_config(path)
    commands = header_commands(path)
    assert commands, f"{path.name}: the header comment must give the exact command"
    config_args = [c[c.index("--config") + 1] for c in commands if "--config" in c]
    assert f"experiments/{path.name}" in config_args
    for spec in cfg.data:
        if spec.startswith("../shared/data/"):  # relative to the repo root
            assert (path.parents[1] / spec).exists(), spec


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_header_says_how_long_it_takes_and_what_it_reached(path):
    text = " ".join(header_lines(path))
    if path in OFFLINE:  # runs here: measured
        assert re.search(r"Takes [^.]*\d+ min[^.]* on a (fresh )?2-core", text), path.name
        assert "Reached" in text, path.name
    else:  # needs Kaggle: says it was not measured, and why
        assert "Not run on this project's CPU" in text and "Kaggle" in text, path.name


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_header_commands_parse_with_todays_flags(path):
    """A renamed or removed flag in a header comment fails here (click parses
    each command as `keras-ft` would, running nothing)."""
    from keras_ft.cli import main as cli

    for command in header_commands(path):
        module = command[2]  # python -m keras_ft.run ... | python -m keras_ft <cmd> ...
        args = (["run"] if module == "keras_ft.run" else []) + command[3:]
        name, sub, rest = cli.resolve_command(
            cli.make_context("keras-ft", list(args), resilient_parsing=True), args
        )
        sub.make_context(f"keras-ft {name}", rest)  # raises click.UsageError on a bad flag


def test_every_seed_recipe_has_an_offline_variant():
    names = {p.stem for p in EXPERIMENTS}
    assert set(SEED_RECIPES) <= names
    assert len(OFFLINE) >= len(SEED_RECIPES)
    for path in OFFLINE:
        assert load_config(path).preset == EMBEDDED_PRESET


@pytest.mark.parametrize("path", OFFLINE, ids=lambda p: p.name)
def test_offline_variant_trains_two_steps_on_a_tiny_preset(path, tiny_gemma3, tmp_path):
    cfg = load_config(path)
    cfg = dataclasses.replace(
        cfg,
        preset=str(tiny_gemma3),
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        num_examples=40,
        validation_fraction=0.1,
        # The tiny vocabulary (160 pieces) spells a text in about 3x the
        # tokens: 128 left no News headline with its description.
        sequence_length=256,
        eval_every_steps=min(cfg.eval_every_steps, 1),
        checkpoint_every_steps=min(cfg.checkpoint_every_steps, 1),
        sample_prompts=cfg.sample_prompts[:1],
        max_new_tokens=2,
        quantize="",
    )
    result = finetune(cfg)
    assert result.adapter_path.exists()
    assert result.data_report["num_validation"] == 4
    assert result.metrics_after["num_tokens"] > 0
    steps = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").open()]
    assert max(s["step"] for s in steps) == 2
