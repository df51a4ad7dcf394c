import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from keras_ft import Config
from keras_ft.cli.compare import main
from keras_ft.evaluation.compare import launch, plan_runs

PAIRS = [
    ("How do I boil an egg?", "1. Fill a pot with water.\n2. Boil it."),
    ("How do I make tea?", "1. Boil water.\n2. Add the tea."),
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Explain what a compiler does.", "A compiler translates source code."),
    ("Write a haiku about autumn.", "Leaves falling on the quiet river."),
]


def test_plan_runs_gives_each_preset_the_same_config_and_its_own_directory(tmp_path):
    cfg = Config(lora_rank=8, max_steps=5, learning_rate=1e-3)
    runs = plan_runs(
        cfg, ["a_dir", "kaggle://x/y"], ["gemma", "llama3"], ("lora_rank", ["4", "16"]), tmp_path
    )
    assert [r.label for r in runs] == [
        "a_dir lora_rank=4",
        "a_dir lora_rank=16",
        "kaggle://x/y lora_rank=4",
        "kaggle://x/y lora_rank=16",
    ]
    assert [r.cfg.template for r in runs] == ["gemma", "gemma", "llama3", "llama3"]
    assert [r.cfg.lora_rank for r in runs] == [4, 16, 4, 16]
    assert {r.cfg.max_steps for r in runs} == {5} and not any(r.cfg.resume for r in runs)
    assert Path(runs[2].cfg.output_dir).name == "kaggle_x_y_lora_rank_4"
    with pytest.raises(ValueError, match="one template per preset"):
        plan_runs(cfg, ["a", "b"], ["gemma"], None, tmp_path)
    with pytest.raises(ValueError, match="names no config field"):
        plan_runs(cfg, ["a"], [], ("lora_rnk", ["4"]), tmp_path)


def test_compare_two_presets(tiny_gemma3, tiny_llama3, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in PAIRS))
    config = tmp_path / "x.yaml"
    # batch_size 3: the 3 training and 2 validation examples in one batch each,
    # so each worker compiles one training and one evaluation shape.
    config.write_text(
        f"data: [{data}]\nvalidation_fraction: 0.4\nmax_steps: 2\nbatch_size: 3\n"
        "sample_prompts: [Hi]\nmax_new_tokens: 3\n"
    )
    out = tmp_path / "compare"
    result = CliRunner().invoke(
        main,
        [
            "--config",
            str(config),
            "--presets",
            f"{tiny_gemma3},{tiny_llama3}",
            "--templates",
            "gemma,llama3",
            "--output-dir",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["template"] for r in runs] == ["gemma", "llama3"]
    for run in runs:
        assert "error" not in run, run
        assert [step for step, _ in run["loss_curve"]] == [1, 2]
        assert run["val_loss_before"] > 0 and run["val_loss_after"] > 0
        assert run["peak_rss_mb"] > 100  # a process with JAX loaded
        assert run["latency"]["ttft_s"] > 0 and run["latency"]["tokens_per_s"] > 0
        assert json.loads(Path(run["run_dir"], "config.json").read_text())["max_steps"] == 2
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1
    markdown = (out / "report.md").read_text()
    # local preset directories are labelled by their name
    assert tiny_gemma3.name in markdown and "| peak RSS MB |" in markdown


def test_presets_are_required(tmp_path):
    result = CliRunner().invoke(main, ["--preset", "x"])
    assert result.exit_code == 2 and "--presets a,b" in result.output


def test_a_failing_worker_becomes_an_error_row(tmp_path, monkeypatch):
    run = plan_runs(Config(), ["some_preset"], [], None, tmp_path)[0]
    # Any worker that exits non-zero; a real one would import JAX first.
    monkeypatch.setattr("keras_ft.evaluation.compare.sys.executable", "false")
    record = launch(run)
    assert record["label"] == "some_preset" and record["error"].startswith("exit 1")
    assert (tmp_path / "some_preset" / "requested_config.json").exists()
