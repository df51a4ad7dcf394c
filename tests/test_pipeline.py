import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from keras_ft import Config, finetune
from keras_ft.cli.run import main as run_main
from keras_ft.model.causal_lm import load_causal_lm

PAIRS = [
    ("How do I boil an egg?", "1. Fill a pot with water.\n2. Boil it."),
    ("How do I make tea?", "1. Boil water.\n2. Add the tea."),
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Explain what a compiler does.", "A compiler translates source code."),
    ("Write a haiku about autumn.", "Leaves falling on the quiet river."),
    ("How do I fill a pot?", "1. Fill the pot with water."),
    ("Name a fox.", "The quick brown fox."),
    ("Count to three.", "1 2 3"),
    ("What jumps over the dog?", "The quick brown fox jumps over the lazy dog."),
    ("And the numbers?", "0 1 2 3 4 5 6 7 8 9"),
]


@pytest.fixture()
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in PAIRS))
    return path


def test_overfitting_eight_examples_lowers_the_loss(tiny_gemma, pairs_file, tmp_path):
    cfg = Config(
        preset=str(tiny_gemma),
        data=(str(pairs_file),),
        num_examples=8,
        validation_fraction=0.0,
        epochs=40,
        batch_size=8,
        learning_rate=2e-2,
        lora_targets="all",
        lora_rank=8,
        output_dir=str(tmp_path / "run"),
        sample_prompts=("Hi",),
        max_new_tokens=4,
        shuffle=False,
    )
    result = finetune(cfg)
    losses = result.history["loss"]
    assert len(losses) == 40
    # full-batch steps on a random 2-layer model: ~5.2 -> ~4.2 when LoRA learns
    assert losses[-1] < 0.88 * losses[0] and losses[-1] < min(losses[:10]), losses
    steps = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").open()]
    assert sum("epoch" not in s for s in steps) == 40  # one line per step
    # The result's model in memory is the tuned one the run saved.
    saved = load_causal_lm(str(tiny_gemma), adapter=result.run_dir).backbone.trainable_weights
    kept = result.causal_lm.backbone.trainable_weights
    assert len(kept) == len(saved) > 0
    for mine, theirs in zip(kept, saved):
        np.testing.assert_array_equal(np.asarray(mine.value), np.asarray(theirs.value))


def test_cli_run_writes_the_run_directory(tiny_gemma3, pairs_file, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="keras_ft")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        run_main,
        [
            "--preset",
            str(tiny_gemma3),
            "--data",
            str(pairs_file),
            "--max-steps",
            "2",
            "--template",
            "gemma",
            "--output-dir",
            str(out),
            "--sample-prompts",
            "Hi there",
            "--max-new-tokens",
            "3",
            "--validation-fraction",
            "0.2",
            "--batch-size",
            "8",  # 8 training, 2 validation examples: one batch, one shape each to compile
        ],
    )
    assert result.exit_code == 0, result.output
    assert {
        "config.json",
        "metrics.jsonl",
        "samples.json",
        "summary.json",
        "adapter.lora.h5",
        "adapter_config.json",
    } <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["template"] == "gemma" and config["max_steps"] == 2
    steps = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [s["step"] for s in steps if "epoch" not in s] == [1, 2]
    samples = json.loads((out / "samples.json").read_text())
    assert samples[0]["prompt"] == "Hi there" and {"before", "after"} <= set(samples[0])
    sample = samples[0]
    assert sample["after_stopped"] in (True, False)  # whether the reply ended by itself
    ended = [int(sample[f"{w}_stopped"]) for w in ("before", "after")]
    looped = [int(bool(sample[f"{w}_repeated_line"])) for w in ("before", "after")]
    assert (
        f"replies that ended by themselves: base {ended[0]}/1 -> tuned {ended[1]}/1; "
        f"repeating one of their lines: base {looped[0]}/1 -> tuned {looped[1]}/1"
    ) in caplog.text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics_before"]["num_tokens"] > 0
    assert summary["data"]["num_validation"] == 2


def test_show_examples_prints_the_marked_mask_and_does_not_train(
    tiny_gemma, pairs_file, tmp_path, capsys
):
    cfg = Config(
        preset=str(tiny_gemma),
        data=(str(pairs_file),),
        show_examples=2,
        output_dir=str(tmp_path / "run"),
        shuffle=False,
    )
    result = finetune(cfg)
    printed = capsys.readouterr().out
    assert printed.count("--- example") == 2
    assert "Instruction:\nHow do I boil an egg?" in printed and "[[<eos>]]" in printed
    assert result.adapter_path is None


def test_llama3_preset_trains_with_its_template(tiny_llama3, pairs_file, tmp_path):
    cfg = Config(
        preset=str(tiny_llama3),
        data=(str(pairs_file),),
        template="llama3",
        max_steps=1,  # one step of one shape: the template trains
        output_dir=str(tmp_path / "run"),
        sample_prompts=(),  # its samples are not checked: no generation compiled
    )
    result = finetune(cfg)
    assert result.adapter_path.exists() and len(result.history["loss"]) == 1


def test_cli_packing_trains_on_rows_of_several_examples(tiny_gemma3, pairs_file, tmp_path):
    out = tmp_path / "run"
    no_samples = tmp_path / "no_samples.yaml"  # its samples are not checked: none generated
    no_samples.write_text("sample_prompts: []\n")
    result = CliRunner().invoke(
        run_main,
        [
            "--preset",
            str(tiny_gemma3),
            "--data",
            str(pairs_file),
            "--packing",
            "--sequence-length",
            "64",
            "--epochs",
            "2",
            "--template",
            "gemma",
            "--validation-fraction",
            "0.2",
            "--output-dir",
            str(out),
            "--config",
            str(no_samples),
        ],
    )
    assert result.exit_code == 0, result.output
    steps = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    steps = [s for s in steps if "epoch" not in s]
    # 8 training examples of ~20-40 tokens share a few 64-token rows: fewer
    # steps than examples, and every example is trained once per epoch.
    per_epoch = len(steps) // 2
    assert 1 <= per_epoch < 8 and len(steps) == 2 * per_epoch
    for epoch in range(2):
        seen = sum((s["examples"] for s in steps[epoch * per_epoch : (epoch + 1) * per_epoch]), [])
        assert sorted(seen) == list(range(8))
    assert json.loads((out / "config.json").read_text())["packing"] is True


# Ten examples of one length (one token per digit): one shape to compile for
# training, one for evaluation, so 8 steps of batch 1 cost one compilation.
COUNTS = [(f"Say the digit {n}.", f"{n}") for n in range(10)]


@pytest.fixture(scope="module")
def logged_run(tiny_gemma, tmp_path_factory):
    """One run (8 steps of batch 1) watched as two tests need: its stdout and
    log lines as a non-TTY shows them, and every `resolve_preset` call and
    keras-hub tokenizer made during it."""
    # Resolving may probe the network: finetune does it once and hands it down.
    import keras_hub

    import keras_ft.model.causal_lm as causal_lm_module
    import keras_ft.pipeline as pipeline

    tmp = tmp_path_factory.mktemp("logged_run")
    data = tmp / "counts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in COUNTS))
    calls, tokenizers = [], []
    # A StringIO is not a TTY (as under nohup, tee, CI). Log lines go to the
    # same stream as Keras' epoch line, so their order is visible.
    stdout = io.StringIO()
    handler = logging.StreamHandler(stdout)
    logger = logging.getLogger("keras_ft")
    level = logger.level
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(stdout):
        real = pipeline.resolve_preset
        monkeypatch.setattr(pipeline, "resolve_preset", lambda p: calls.append(p) or real(p))
        monkeypatch.setattr(
            causal_lm_module, "resolve_preset", lambda p: calls.append(p) or real(p)
        )
        init = keras_hub.tokenizers.Tokenizer.__init__
        monkeypatch.setattr(
            keras_hub.tokenizers.Tokenizer,
            "__init__",
            lambda self, *a, **k: tokenizers.append(self) or init(self, *a, **k),
        )
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            result = finetune(
                Config(
                    preset=str(tiny_gemma),
                    data=(str(data),),
                    batch_size=1,
                    validation_fraction=0.2,
                    sequence_length=64,
                    shuffle=False,
                    sample_prompts=("Hi",),
                    max_new_tokens=2,
                    output_dir=str(tmp / "run"),
                    tokenized_cache_dir=str(tmp / "tokens"),
                )
            )
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
    return {
        "preset": str(tiny_gemma),
        "result": result,
        "out": stdout.getvalue(),
        "calls": calls,
        "tokenizers": tokenizers,
    }


def test_a_run_resolves_its_preset_and_loads_its_tokenizer_once(logged_run):
    assert logged_run["calls"] == [logged_run["preset"]]
    tokenizers = logged_run["tokenizers"]
    assert len(tokenizers) == 1, tokenizers  # the data's tokenizer is the model's
    result = logged_run["result"]
    assert result.samples and result.samples[0]["after"] is not None
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["tokens_per_s"] > 0


def test_non_tty_output_shows_progress_during_the_epoch_and_each_phase(logged_run):
    out = logged_run["out"]
    lines = out.splitlines()
    epoch_end = next(i for i, line in enumerate(lines) if line.startswith("8/8 "))
    progress = [i for i, line in enumerate(lines) if line.startswith("step ") and "/8 (" in line]
    assert len(progress) >= 4, out
    # Lines during the epoch, before Keras' one line at its end (verbose=2).
    assert progress[-2] < epoch_end, out
    middle = lines[progress[2]]
    assert re.fullmatch(
        r"step 3/8 \(37%\): loss \d+\.\d{4}, \d+ tokens/s, "
        r"elapsed \d:\d\d:\d\d, ETA \d:\d\d:\d\d",
        middle,
    ), middle
    phases = [
        "Loading the model",
        "Evaluating the base model on 2 validation examples",
        "Generating 1 sample from the base model",
        "Training: 8 optimizer steps of batch 1 (1 epoch of 8 training examples)",
        "Evaluating the tuned model",
        "Generating 1 sample from the tuned model",
        "Saving the adapter",
    ]
    at = [next(i for i, line in enumerate(lines) if line.startswith(p)) for p in phases]
    assert at == sorted(at) and at[3] < progress[0] and epoch_end < at[4], out


TF_STARTUP_NOISE = (
    "absl::InitializeLog",
    "oneDNN custom operations",
    "cudart_stub",
    "cpu_feature_guard",
    "cuInit",
    "Unable to initialize backend",
)


def test_filtered_stderr_drops_only_the_known_startup_noise(capfd):
    from keras_ft.native_logs import filtered_stderr

    noise = (
        "WARNING: All log messages before absl::InitializeLog() is called are "
        "written to STDERR\n"
        "I0000 00:00:1.5  42 port.cc:153] oneDNN custom operations are on. You may "
        "see slightly different numerical results\n"
        "E0000 00:00:1.6  42 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n"
    )
    with pytest.raises(RuntimeError):
        with filtered_stderr():
            os.write(2, noise.encode() + b"E0000 a real native error\n")
            sys.stderr.write("a Python warning\n")
            raise RuntimeError("the body failed")
    err = capfd.readouterr().err
    # Held lines come after the body; pytest's sys.stderr may bypass descriptor 2.
    assert sorted(err.splitlines()) == ["E0000 a real native error", "a Python warning"], err


def test_startup_prints_no_tensorflow_noise_and_still_shows_errors(tiny_gemma):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_FT_NATIVE_LOGS")
    }
    # Importing keras-hub loads TensorFlow; a tokenizer runs its first TF ops.
    load = (
        "import keras_ft\nfrom keras_ft.data.tokenizer import TextTokenizer\n"
        f"TextTokenizer.from_preset({str(tiny_gemma)!r})\nprint('loaded')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and done.stdout == "loaded\n", done.stderr
    assert not [n for n in TF_STARTUP_NOISE if n in done.stderr], done.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "keras_ft.run", "--no-such-flag"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "No such option '--no-such-flag'" in bad.stderr, bad.stderr


def test_keras_ft_lines_show_on_stdout_when_logging_is_unconfigured(monkeypatch, capsys):
    from keras_ft.pipeline import ensure_log_output

    package = logging.getLogger("keras_ft")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as in a fresh notebook
    monkeypatch.setattr(package, "handlers", [])
    monkeypatch.setattr(package, "level", logging.NOTSET)
    ensure_log_output()
    ensure_log_output()  # once only: no doubled lines
    logging.getLogger("keras_ft.train").info("step 3/8 (37%%): loss %.4f", 1.5)
    logging.getLogger("jax").info("not ours")
    assert capsys.readouterr().out == "step 3/8 (37%): loss 1.5000\n"
