import json

import pytest
from click.testing import CliRunner

from keras_ft import Config, finetune
from keras_ft.evaluate import compare_base_and_tuned, load_heldout, main

STEPS = [("How do I boil an egg?", "1. Fill a pot with water.\n2. Boil it."),
         ("How do I make tea?", "1. Boil water.\n2. Add the tea."),
         ("How do I fill a pot?", "1. Fill the pot.\n2. Stop."),
         ("How do I count?", "1. Say one.\n2. Say two."),
         ("How do I jump?", "1. Bend.\n2. Jump over the dog."),
         ("How do I write a haiku?", "1. Look at autumn.\n2. Write it."),
         ("How do I compile?", "1. Write source code.\n2. Run the compiler."),
         ("How do I find Paris?", "1. Go to France.\n2. Find the capital.")]
NEWS = [("The quick brown fox wins", "SPORTS"), ("Paris votes today", "POLITICS"),
        ("A compiler for the capital", "POLITICS"), ("Lazy dog jumps", "SPORTS"),
        ("Autumn leaves on the river", "WORLD NEWS"), ("Numbers 1 2 3", "POLITICS"),
        ("France and the fox", "WORLD NEWS"), ("Nine minutes of water", "SPORTS"),
        ("The capital of the dog", "POLITICS"), ("A river in France", "WORLD NEWS")]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def steps_run(tiny_gemma3, tmp_path_factory):
    root = tmp_path_factory.mktemp("steps_run")
    data = _write(root / "steps.jsonl", [{"prompt": p, "completion": c} for p, c in STEPS])
    cfg = Config(preset=str(tiny_gemma3), data=(str(data),), template="gemma",
                 validation_fraction=0.25, max_steps=3, learning_rate=1e-2,
                 output_dir=str(root / "run"), sample_prompts=("Hi",), max_new_tokens=2)
    finetune(cfg)
    return root / "run"


def test_cli_writes_markdown_html_and_json_reports(steps_run, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(main, [
        "--adapter", str(steps_run), "--checks", "steps,length", "--num-generate", "2",
        "--max-new-tokens", "3", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert {"report.md", "report.html", "results.json"} <= {p.name for p in out.iterdir()}
    results = json.loads((out / "results.json").read_text())
    # The validation split is recomputed exactly as training made it, so the
    # loss matches the one the run measured before and after training.
    summary = json.loads((steps_run / "summary.json").read_text())
    assert results["base"]["tokens"]["loss"] == pytest.approx(
        summary["metrics_before"]["loss"], rel=1e-4)
    assert results["tuned"]["tokens"]["loss"] == pytest.approx(
        summary["metrics_after"]["loss"], rel=1e-4)
    assert results["base"]["tokens"]["loss"] != results["tuned"]["tokens"]["loss"]
    assert results["setup"]["num_examples"] == 2 and results["setup"]["overlap_removed"] == 0
    # References are numbered lists without a preamble: adherence 1.
    assert results["reference"]["steps"]["adherence"] == 1.0
    for model in ("base", "tuned"):
        latency = results[model]["latency"]
        assert latency["ttft_s"] > 0 and latency["tokens_per_s"] > 0
        assert latency["compile_s"] >= 0 and latency["new_tokens"] == 3
        assert len(results[model]["generations"]) == 2
        assert set(results[model]["steps"]) >= {"adherence", "preamble"}
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # scores, lengths, latency
    assert "<script" not in html and 'src="http' not in html  # self-contained
    markdown = (out / "report.md").read_text()
    assert "| held-out loss (response tokens) |" in markdown
    assert "![scores](plots/scores.png)" in markdown and (out / "plots/scores.png").exists()
    assert "How do I" in markdown  # the side-by-side samples


def test_label_check_on_classification_data(tiny_gemma3, tmp_path):
    train = _write(tmp_path / "news.jsonl", [{"headline": h, "category": c}
                                             for h, c in NEWS[:8]])
    heldout_file = _write(tmp_path / "heldout.jsonl", [{"headline": h, "category": c}
                                                       for h, c in NEWS[4:]])
    cfg = Config(preset=str(tiny_gemma3), data=(str(train),), template="gemma",
                 fields="prompt=headline,label=category", validation_fraction=0.25,
                 shuffle=False,
                 max_steps=2, output_dir=str(tmp_path / "run"), sample_prompts=("Hi",),
                 max_new_tokens=2)
    finetune(cfg)
    heldout = load_heldout(cfg, str(heldout_file), run_cfg=cfg)
    # Unshuffled, NEWS[:6] train and NEWS[6:8] validate: NEWS[4:6] are removed.
    assert heldout.num_overlap_removed == 2 and len(heldout.examples) == 4
    assert heldout.labels == ["POLITICS", "SPORTS", "WORLD NEWS"]
    assert heldout.label_source == "run's data"
    results = compare_base_and_tuned(cfg, str(tmp_path / "run"), heldout,
                                     ("label",), num_generate=2, latency=False)
    for model in ("base", "tuned"):
        label = results[model]["label"]
        assert 0.0 <= label["accuracy"] <= label["valid"] <= 1.0
        assert sum(map(sum, label["matrix"]["counts"])) == 2
    assert "latency" not in results["base"]


def test_unknown_check_and_missing_data_fail_with_a_message(steps_run, tmp_path):
    result = CliRunner().invoke(main, ["--adapter", str(steps_run), "--checks", "fomat"])
    assert result.exit_code == 2 and "Unknown check(s) ['fomat']" in result.output
    lone = tmp_path / "x.lora.h5"
    lone.write_bytes(b"")
    result = CliRunner().invoke(main, ["--adapter", str(lone), "--preset",
                                       str(steps_run)])
    assert result.exit_code == 1 and "No held-out data" in result.output


def test_evaluate_tokens_compiles_each_shape_once_per_trainer(tiny_gemma3):
    import keras_hub

    from keras_ft.evaluate import evaluate_tokens
    from keras_ft.templates import Example, Message, get_template
    from keras_ft.tokens import TextTokenizer, tokenize_example
    from keras_ft.train import BatchSequence, CausalLMTrainer

    causal_lm = keras_hub.models.CausalLM.from_preset(str(tiny_gemma3))
    tokenizer = TextTokenizer(causal_lm.preprocessor.tokenizer)
    examples = [tokenize_example(Example((Message("user", p), Message("assistant", c))),
                                 get_template("gemma"), tokenizer, 64) for p, c in STEPS[:4]]
    trainer = CausalLMTrainer(causal_lm.backbone)
    dataset = BatchSequence(examples, 2, 64, tokenizer.pad_id, 0, shuffle=False)
    first = evaluate_tokens(trainer, dataset)
    compiled = trainer._keras_ft_eval_forward._cache_size()
    assert evaluate_tokens(trainer, dataset) == first  # periodic evaluation
    assert trainer._keras_ft_eval_forward._cache_size() == compiled
    assert first["num_tokens"] == sum(int(e.loss_mask.sum()) for e in examples)
