import json
import math
import re

import keras_hub
import numpy as np
import pytest
from click.testing import CliRunner

from keras_ft import Config, finetune
from keras_ft.cli.evaluate import command_line, main
from keras_ft.data.tokenizer import TextTokenizer, tokenize_example
from keras_ft.evaluation.heldout import load_heldout
from keras_ft.evaluation.runs import load_run_config
from keras_ft.evaluation.scoring import compare_base_and_tuned, score_generations
from keras_ft.model.lora import load_adapter
from keras_ft.templates import get_template

STEPS = [
    ("How do I boil an egg?", "1. Fill a pot with water.\n2. Boil it."),
    ("How do I make tea?", "1. Boil water.\n2. Add the tea."),
    ("How do I fill a pot?", "1. Fill the pot.\n2. Stop."),
    ("How do I count?", "1. Say one.\n2. Say two."),
    ("How do I jump?", "1. Bend.\n2. Jump over the dog."),
    ("How do I write a haiku?", "1. Look at autumn.\n2. Write it."),
    ("How do I compile?", "1. Write source code.\n2. Run the compiler."),
    ("How do I find Paris?", "1. Go to France.\n2. Find the capital."),
]
NEWS = [
    ("The quick brown fox wins", "SPORTS"),
    ("Paris votes today", "POLITICS"),
    ("A compiler for the capital", "POLITICS"),
    ("Lazy dog jumps", "SPORTS"),
    ("Autumn leaves on the river", "WORLD NEWS"),
    ("Numbers 1 2 3", "POLITICS"),
    ("France and the fox", "WORLD NEWS"),
    ("Nine minutes of water", "SPORTS"),
    ("The capital of the dog", "POLITICS"),
    ("A river in France", "WORLD NEWS"),
]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def response_token_metrics(causal_lm, examples, cfg) -> dict:
    """Loss, perplexity and accuracy over response tokens, from the model's
    logits with numpy: one example at a time, no padding, no chunked loss."""
    template, tokenizer = (
        get_template(cfg.template),
        TextTokenizer(causal_lm.preprocessor.tokenizer),
    )
    nll, hits, count = 0.0, 0, 0
    for example in examples:
        tokens = tokenize_example(example, template, tokenizer, cfg.sequence_length, True)
        ids = tokens.token_ids[None, :]
        logits = np.asarray(
            causal_lm({"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}), np.float64
        )[0, :-1]
        targets, scored = tokens.token_ids[1:], tokens.loss_mask[1:]
        log_probs = logits - logits.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        nll -= log_probs[np.arange(len(targets)), targets][scored].sum()
        hits += int((logits.argmax(-1) == targets)[scored].sum())
        count += int(scored.sum())
    return {
        "loss": nll / count,
        "perplexity": math.exp(nll / count),
        "accuracy": hits / count,
        "num_tokens": count,
    }


def markdown_rows(markdown: str) -> dict[str, list[str]]:
    """{first cell: the other cells} of every Markdown table row."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip()[1:-1].split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def assert_cell(cell: str, value: float) -> None:
    """`cell` shows `value` rounded to the digits it has."""
    digits = len(cell.split(".")[1]) if "." in cell else 0
    assert abs(float(cell.replace(",", "")) - value) <= 0.5 * 10**-digits + 1e-12, (cell, value)


@pytest.fixture(scope="module")
def steps_run(tiny_gemma3, tmp_path_factory):
    root = tmp_path_factory.mktemp("steps_run")
    data = _write(root / "steps.jsonl", [{"prompt": p, "completion": c} for p, c in STEPS])
    cfg = Config(
        preset=str(tiny_gemma3),
        data=(str(data),),
        template="gemma",
        validation_fraction=0.25,
        max_steps=1,  # one step at 1e-2 moves the loss: fewer train-step shapes
        learning_rate=1e-2,
        output_dir=str(root / "run"),
        sample_prompts=(),  # its samples are not checked: no generation compiled
        batch_size=2,  # the 2 validation examples in one batch: one shape to compile
        max_new_tokens=2,
    )
    finetune(cfg)
    return root / "run"


def test_cli_writes_markdown_html_and_json_reports(steps_run, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        [
            "--adapter",
            str(steps_run),
            "--checks",
            "steps,length",
            "--num-generate",
            "2",
            "--max-new-tokens",
            "3",
            "--report-dir",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert {"report.md", "report.html", "results.json"} <= {p.name for p in out.iterdir()}
    results = json.loads((out / "results.json").read_text())
    # The scores equal a numpy computation from the models' logits: the float
    # base, then the base with the adapter.
    cfg = load_run_config(steps_run / "config.json")
    examples = load_heldout(cfg, run_cfg=cfg).examples
    causal_lm = keras_hub.models.CausalLM.from_preset(cfg.preset)
    expected = {"base": response_token_metrics(causal_lm, examples, cfg)}
    load_adapter(causal_lm, steps_run)
    expected["tuned"] = response_token_metrics(causal_lm, examples, cfg)
    markdown = (out / "report.md").read_text()
    cells = markdown_rows(markdown)
    html = (out / "report.html").read_text()
    for column, model in enumerate(("base", "tuned")):
        tokens, want = results[model]["tokens"], expected[model]
        assert tokens["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert tokens["perplexity"] == pytest.approx(math.exp(tokens["loss"]), rel=1e-12)
        assert tokens["perplexity"] == pytest.approx(want["perplexity"], rel=1e-5)
        assert tokens["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9)
        assert tokens["num_tokens"] == want["num_tokens"]
        for metric, key in (
            ("held-out loss (response tokens)", "loss"),
            ("perplexity", "perplexity"),
            ("next-token accuracy", "accuracy"),
        ):
            assert_cell(cells[metric][column], want[key])
    assert_cell(
        cells["held-out loss (response tokens)"][2],
        expected["tuned"]["loss"] - expected["base"]["loss"],
    )
    loss_row = re.search(
        r"<tr><td>held-out loss \(response tokens\)</td>"
        r"<td>([^<]*)</td><td>([^<]*)</td>",
        html,
    )
    assert loss_row.groups() == tuple(cells["held-out loss (response tokens)"][:2])
    assert cells["base"] == [f"{cfg.preset} (float, as trained)"]
    # The validation split is recomputed exactly as training made it, so the
    # loss matches the one the run measured before and after training.
    summary = json.loads((steps_run / "summary.json").read_text())
    assert results["base"]["tokens"]["loss"] == pytest.approx(
        summary["metrics_before"]["loss"], rel=1e-4
    )
    assert results["tuned"]["tokens"]["loss"] == pytest.approx(
        summary["metrics_after"]["loss"], rel=1e-4
    )
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
    assert html.count("data:image/png;base64,") == 3  # scores, lengths, latency
    assert "<script" not in html and 'src="http' not in html  # self-contained
    assert "![scores](plots/scores.png)" in markdown and (out / "plots/scores.png").exists()
    assert "How do I" in markdown  # the side-by-side samples


def test_label_check_on_classification_data(tiny_gemma3, tmp_path):
    train = _write(tmp_path / "news.jsonl", [{"headline": h, "category": c} for h, c in NEWS[:8]])
    heldout_file = _write(
        tmp_path / "heldout.jsonl", [{"headline": h, "category": c} for h, c in NEWS[4:]]
    )
    cfg = Config(
        preset=str(tiny_gemma3),
        data=(str(train),),
        template="gemma",
        fields="prompt=headline,label=category",
        validation_fraction=0.25,
        shuffle=False,
        max_steps=1,
        output_dir=str(tmp_path / "run"),
        sample_prompts=(),  # its samples are not checked: no generation compiled
        batch_size=2,  # the 2 validation examples in one batch: one shape to compile
        max_new_tokens=2,
    )
    finetune(cfg)
    heldout = load_heldout(cfg, str(heldout_file), run_cfg=cfg)
    # Unshuffled, NEWS[:6] train and NEWS[6:8] validate: NEWS[4:6] are removed.
    assert heldout.num_overlap_removed == 2 and len(heldout.examples) == 4
    assert heldout.labels == ["POLITICS", "SPORTS", "WORLD NEWS"]
    assert heldout.label_source == "run's data"
    # The run read SPORTS and POLITICS 3 times each: the tie goes to the name first.
    assert heldout.majority_label == "POLITICS"
    results = compare_base_and_tuned(
        cfg, str(tmp_path / "run"), heldout, ("label",), num_generate=3, latency=False
    )
    references = [e.messages[-1].content for e in heldout.examples[:3]]
    # WORLD NEWS, SPORTS, POLITICS: always answering POLITICS gets 1 of 3.
    assert results["reference"]["label"]["majority_accuracy"] == 1 / 3
    assert results["setup"]["majority_label"] == "POLITICS"
    for model in ("base", "tuned"):  # each model's own generations, scored by hand
        assert results[model]["label"] == expected_label_scores(
            results[model]["generations"], references, heldout.labels
        )
    assert "latency" not in results["base"]


def expected_label_scores(predictions, references, labels):
    """label_scores' contract, computed plainly (few labels: all are frequent)."""

    def norm(text):  # lowercase, whitespace collapsed, one trailing "." dropped
        text = " ".join(text.split()).lower()
        return text[:-1].rstrip() if text.endswith(".") else text

    by_norm = {norm(label): label for label in labels}
    named = [by_norm.get(norm(p)) for p in predictions]
    pairs = list(zip(references, named))
    frequent = sorted(set(references), key=lambda x: (-references.count(x), references.index(x)))
    axis = frequent + ["(other)", "(invalid)"]
    counts = np.zeros((len(axis), len(axis)), int)
    for true, got in pairs:
        column = "(invalid)" if got is None else got if got in frequent else "(other)"
        counts[axis.index(true), axis.index(column)] += 1
    errors = {}
    for true, got in pairs:
        if true != got:
            errors[(true, got or "(invalid)")] = errors.get((true, got or "(invalid)"), 0) + 1
    per_label = {}
    for label in frequent:
        support = sum(t == label for t in references)
        predicted = sum(g == label for g in named)
        hits = sum(t == g == label for t, g in pairs)
        per_label[label] = {
            "support": support,
            "recall": hits / support,
            "precision": hits / predicted if predicted else 0.0,
        }
    return {
        "accuracy": sum(t == g for t, g in pairs) / len(pairs),
        "valid": sum(g is not None for g in named) / len(pairs),
        "num_labels": len(labels),
        "confusions": [[t, g, c] for (t, g), c in sorted(errors.items(), key=lambda kv: -kv[1])],
        "per_label": per_label,
        "matrix": {"labels": axis, "counts": counts.tolist()},
    }


def test_the_report_names_the_command_once():
    module = ["/x/keras_ft/__main__.py", "evaluate", "--adapter", "runs/my run", "--no-latency"]
    script = ["/venv/bin/keras-ft", "evaluate", "--adapter", "runs/my run", "--no-latency"]
    expected = "python -m keras_ft evaluate --adapter 'runs/my run' --no-latency"
    assert command_line(module) == command_line(script) == expected


def test_majority_label_of_held_out_data_without_a_run(tmp_path):
    rows = [{"headline": h, "category": c} for h, c in NEWS]
    cfg = Config(
        data=(str(tmp_path / "a.jsonl"),), template="gemma", fields="prompt=headline,label=category"
    )

    def majority(name, part):
        heldout = load_heldout(cfg, str(_write(tmp_path / name, part)))
        assert heldout.label_source == "held-out data"
        return heldout.majority_label

    assert majority("a.jsonl", rows[1:]) == "POLITICS"  # 4 of 9
    assert majority("b.jsonl", rows[2:5] + rows[7:8]) == "SPORTS"  # 2 of 4
    # SPORTS, WORLD NEWS, POLITICS once each: the tie goes to the name first
    assert majority("c.jsonl", rows[3:6]) == "POLITICS"


def test_label_scores_on_known_predictions():
    labels = ["POLITICS", "SPORTS", "WORLD NEWS"]
    references = ["SPORTS", "POLITICS", "SPORTS", "WORLD NEWS", "POLITICS", "SPORTS"]
    predictions = [" sports", "Politics\n", "POLITICS", "world   news", "the weather", "SPORTS."]
    label = score_generations(predictions, references, ("label",), labels)["label"]
    assert label == expected_label_scores(predictions, references, labels)
    # 4 of 6 right (a trailing period and case/space do not count); "the
    # weather" names no label; one SPORTS was called POLITICS.
    assert (label["accuracy"], label["valid"]) == (4 / 6, 5 / 6)
    assert label["per_label"]["SPORTS"] == {"support": 3, "recall": 2 / 3, "precision": 1.0}
    assert label["per_label"]["POLITICS"] == {"support": 2, "recall": 1 / 2, "precision": 1 / 2}
    assert label["confusions"] == [["SPORTS", "POLITICS", 1], ["POLITICS", "(invalid)", 1]]


def test_unknown_check_and_missing_data_fail_with_a_message(steps_run, tmp_path):
    result = CliRunner().invoke(main, ["--adapter", str(steps_run), "--checks", "fomat"])
    assert result.exit_code == 2 and "Unknown check(s) ['fomat']" in result.output
    lone = tmp_path / "x.lora.h5"
    lone.write_bytes(b"")
    result = CliRunner().invoke(main, ["--adapter", str(lone), "--preset", str(steps_run)])
    assert result.exit_code == 1 and "No held-out data" in result.output


def test_evaluate_tokens_compiles_each_shape_once_per_trainer(tiny_gemma3):
    import keras_hub

    from keras_ft.data.batches import BatchSequence
    from keras_ft.data.tokenizer import TextTokenizer, tokenize_example
    from keras_ft.templates import Example, Message, get_template
    from keras_ft.train.trainer import CausalLMTrainer, evaluate_tokens

    causal_lm = keras_hub.models.CausalLM.from_preset(str(tiny_gemma3))
    tokenizer = TextTokenizer(causal_lm.preprocessor.tokenizer)
    examples = [
        tokenize_example(
            Example((Message("user", p), Message("assistant", c))),
            get_template("gemma"),
            tokenizer,
            64,
        )
        for p, c in STEPS[:4]
    ]
    trainer = CausalLMTrainer(causal_lm.backbone)
    dataset = BatchSequence(examples, 2, 64, tokenizer.pad_id, 0, shuffle=False)
    first = evaluate_tokens(trainer, dataset)
    compiled = trainer.eval_forward()._cache_size()
    assert evaluate_tokens(trainer, dataset) == first  # periodic evaluation
    assert trainer.eval_forward()._cache_size() == compiled
    assert first["num_tokens"] == sum(int(e.loss_mask.sum()) for e in examples)


def test_qlora_base_is_scored_quantized_as_trained(tiny_gemma3, tmp_path):
    data = _write(tmp_path / "steps.jsonl", [{"prompt": p, "completion": c} for p, c in STEPS])
    cfg = Config(
        preset=str(tiny_gemma3),
        data=(str(data),),
        template="gemma",
        quantize="int8",
        validation_fraction=0.25,
        max_steps=1,
        learning_rate=1e-2,
        output_dir=str(tmp_path / "run"),
        sample_prompts=(),  # its samples are not checked: no generation compiled
        batch_size=2,  # the 2 validation examples in one batch: one shape to compile
        max_new_tokens=2,
    )
    finetune(cfg)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        [
            "--adapter",
            str(tmp_path / "run"),
            "--num-generate",
            "1",
            "--max-new-tokens",
            "2",
            "--no-latency",
            "--report-dir",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())

    examples = load_heldout(cfg, run_cfg=cfg).examples
    float_base = keras_hub.models.CausalLM.from_preset(str(tiny_gemma3))
    float_scores = response_token_metrics(float_base, examples, cfg)
    embedding = float_base.backbone.token_embedding  # QLoRA keeps the head float
    float_base.backbone.quantize("int8", filters=lambda layer: layer is not embedding)
    quantized = response_token_metrics(float_base, examples, cfg)
    base = results["base"]["tokens"]
    assert base["loss"] == pytest.approx(quantized["loss"], rel=1e-5)
    assert base["accuracy"] == pytest.approx(quantized["accuracy"], abs=1e-9)
    assert abs(quantized["loss"] - float_scores["loss"]) > 1e-4 * quantized["loss"]
    assert base["loss"] != pytest.approx(float_scores["loss"], rel=1e-5)
    # Before training the LoRA product is 0: the run measured the same base.
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert base["loss"] == pytest.approx(summary["metrics_before"]["loss"], rel=1e-5)
    assert results["tuned"]["tokens"]["loss"] == pytest.approx(
        summary["metrics_after"]["loss"], rel=1e-5
    )
    said = f"{tiny_gemma3} quantized int8, as trained"
    assert results["setup"]["base"] == said and results["setup"]["quantize"] == "int8"
    assert markdown_rows((out / "report.md").read_text())["base"] == [said]
    assert f"The base column scores {said}" in (out / "report.html").read_text()
