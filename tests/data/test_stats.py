"""`python -m keras_ft data stats`: counts, lengths, labels, duplicates, renders."""

import json

from click.testing import CliRunner

from keras_ft.cli.data import main
from keras_ft.data.records import LoadReport
from keras_ft.data.stats import compute_stats, format_stats, render_marked
from keras_ft.templates import Example, Message, get_template

NEWS = "news-category-huffpost/News_Category_Dataset_v3.first10000.jsonl"


def example(prompt, reply, label=None):
    return Example((Message("user", prompt), Message("assistant", reply)), label=label)


def test_compute_stats_without_a_tokenizer():
    examples = [
        example("How do I cook A?", "1. a", "x"),
        example("How do I cook A?", "1. a", "x"),
        example("How do I cook A?", "1. b", "y"),
        example("Why B?", "c", "x"),
    ]
    stats = compute_stats(examples, LoadReport(), get_template("instruction"), num_rendered=1)
    assert (stats.num_duplicates, stats.num_duplicate_prompts) == (1, 2)
    assert stats.labels == {"x": 3, "y": 1} and stats.topics == {"cook": 3, "b": 1}
    assert stats.token_lengths is None
    assert stats.rendered == ["<bos>Instruction:\nHow do I cook A?\n\nResponse:\n[[1. a]][[<eos>]]"]
    assert render_marked(examples[3], get_template("gemma")).endswith(
        "model\n[[c]][[<end_of_turn>]]\n"
    )
    text = format_stats(stats)
    assert "1 identical examples, 2 repeated prompts" in text and "Labels (2 distinct)" in text


def stats(*args):
    """`keras-ft data stats ARGS`, in-process."""
    return CliRunner().invoke(main, ["stats", *map(str, args)])


def test_stats_cli_with_tokenizer_plot_and_truncation(tmp_path, tiny_gemma):
    path = tmp_path / "d.jsonl"
    records = [{"prompt": "How do I boil an egg?", "completion": "1. Fill a pot with water."}] * 3
    records.append({"prompt": "Explain. " * 30, "completion": "A compiler translates."})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    plot = tmp_path / "stats.png"
    result = stats(
        "--data",
        path,
        "--preset",
        tiny_gemma,
        "--sequence-length",
        "40",
        "--plot",
        plot,
        "--show",
        "1",
    )
    out = result.stdout
    assert result.exit_code == 0, result.output
    assert "Read 4 records: kept 4" in out and "2 identical examples" in out
    assert (
        "Truncated at sequence_length=40: 1 (25.0 %); dropped (response cut off entirely): 1" in out
    )
    assert "Tokens per example: min" in out and "[[" in out  # rendered loss marks
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stats_cli_on_real_news_with_labels(shared_data, tmp_path):
    result = stats(
        "--data",
        shared_data / NEWS,
        "--no-tokens",
        "--fields",
        "prompt=headline+short_description,label=category",
        "--num-examples",
        "2000",
        "--plot",
        tmp_path / "n.png",
    )
    out = result.stdout
    assert result.exit_code == 0
    assert "Read 2000 records: kept 2000" in out and "POLITICS" in out
    assert "record shapes: {'classification': 2000}" in out


def test_stats_cli_reports_bad_data_without_a_traceback(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "P", "completion": 3}\n')
    result = stats("--data", path, "--no-tokens", "--plot", "")
    assert result.exit_code == 2
    assert f"Error: {path}:1: field `completion` must be a string" in result.stderr
    assert "Traceback" not in result.output
