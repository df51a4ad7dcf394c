"""Model cards: base, license, data counts, config and base-vs-tuned metrics
from a real run directory with a `keras-ft evaluate` report."""

import json

import pytest
from click.testing import CliRunner

from keras_ft import Config, finetune
from keras_ft.cli import evaluate
from keras_ft.export.card import CARD_FILE, license_of, model_card
from keras_ft.export.merged import export_preset_merged

ROWS = [
    ("How do I boil an egg?", "1. Fill a pot with water.\n2. Boil it."),
    ("How do I make tea?", "1. Boil water.\n2. Add the tea."),
    ("How do I count?", "1. Say one.\n2. Say two."),
    ("How do I jump?", "1. Bend.\n2. Jump over the dog."),
    ("How do I sit?", "1. Find a chair.\n2. Sit."),
    ("How do I read?", "1. Open the book.\n2. Read."),
]


@pytest.fixture(scope="module")
def evaluated_run(tiny_gemma, tmp_path_factory):
    """A 2-step keras_ft run on tiny Gemma, evaluated by `keras-ft evaluate`."""
    root = tmp_path_factory.mktemp("card_run")
    data = root / "steps.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in ROWS))
    cfg = Config(
        preset=str(tiny_gemma),
        data=(str(data),),
        template="gemma",
        validation_fraction=0.34,
        max_steps=2,
        learning_rate=1e-2,
        output_dir=str(root / "run"),
        sample_prompts=("Hi",),
        max_new_tokens=2,
    )
    finetune(cfg)
    run = root / "run"
    flags = ["--adapter", str(run), "--num-generate", "2", "--max-new-tokens", "2"]
    result = CliRunner().invoke(evaluate.main, [*flags, "--no-latency"])
    assert result.exit_code == 0, result.output
    return run


def test_the_card_of_a_run_names_base_license_data_config_and_metrics(evaluated_run, tmp_path):
    out = export_preset_merged(None, tmp_path / "merged", adapter=evaluated_run)
    card = (out / CARD_FILE).read_text()
    summary = json.loads((evaluated_run / "summary.json").read_text())
    results = json.loads((evaluated_run / "eval" / "results.json").read_text())
    base = json.loads((evaluated_run / "config.json").read_text())["preset"]
    assert f"base_model: {base}" in card
    assert "[Gemma Terms of Use](https://ai.google.dev/gemma/terms)" in card
    data = summary["data"]
    assert f"| {data['sources'] and next(iter(data['sources']))} |" in card
    assert f"- training examples: {data['num_train']}" in card
    assert f"- held-out examples: {data['num_validation']}" in card
    assert '"max_steps": 2' in card and '"learning_rate": 0.01' in card  # the full config
    assert "`keras-ft evaluate` (run/eval/results.json)" in card
    loss = (results["base"]["tokens"]["loss"], results["tuned"]["tokens"]["loss"])
    assert f"| tokens.loss | {loss[0]:.4g} | {loss[1]:.4g} |" in card
    assert "keras_hub.models.CausalLM.from_preset" in card  # how to load it
    assert "Tuned with the keras_ft template `gemma`" in card


def test_without_an_eval_report_the_card_takes_the_run_summary(evaluated_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "summary.json", "adapter_config.json", "adapter.lora.h5"):
        (run / name).write_bytes((evaluated_run / name).read_bytes())
    card = model_card("gguf", "gemma_2b_en", adapter=run, path="tuned.gguf")
    after = json.loads((run / "summary.json").read_text())["metrics_after"]
    assert "the held-out split during training (run/summary.json)" in card
    assert "| loss | " in card and f"{after['loss']:.4g} |" in card
    assert "llama-cli -m tuned.gguf" in card


def test_licenses_by_base():
    assert license_of("gemma3_instruct_1b")[0] == "Gemma Terms of Use"
    assert license_of("llama3_8b_en")[0] == "Llama 3 Community License"
    assert license_of("llama3.2_1b")[0] == "Llama 3.2 Community License"
    assert license_of("/models/tuned", "Llama3Backbone")[0] == "Llama 3 Community License"
    assert license_of("/models/tuned", "MistralBackbone") == ("see the base model", "")
    assert "license: see the base model." in model_card("hf", "/models/x")
