import json
import math
import re
import sys

import keras
import numpy as np
import pytest
from helpers import synthetic_examples

from keras_ft.config import Config
from keras_ft.data.batches import BatchSequence
from keras_ft.model.causal_lm import build_model
from keras_ft.train.callbacks import Throughput
from keras_ft.train.loop import NonFiniteLossError, epoch_spans, steps_plan, train
from keras_ft.train.optimizer import WarmupDecay
from keras_ft.train.trainer import build_trainer, evaluate_tokens


def run_training(preset, tmp_path, examples, **overrides):
    cfg = Config(preset=str(preset), output_dir=str(tmp_path), **overrides)
    keras.utils.set_random_seed(cfg.seed)  # the same LoRA initialisation every time
    backbone = build_model(cfg).backbone
    data = BatchSequence(examples, cfg.batch_size, 16, 0, cfg.seed, cfg.shuffle)
    trainer = build_trainer(cfg, backbone, steps_plan(cfg, len(data))[1])
    history = train(cfg, trainer, data, None, tmp_path)
    return trainer, history


def lora_weights(trainer):
    return [np.asarray(w.value) for w in trainer.backbone.trainable_weights]


def read_jsonl(path):
    return [json.loads(line) for line in path.open()]


def test_warmup_then_decay_in_optimizer_steps():
    cosine = WarmupDecay(1.0, warmup_steps=2, total_steps=6, decay="cosine")
    values = [float(cosine(i)) for i in range(7)]
    np.testing.assert_allclose(values[:3], [0.5, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(values[3], 0.5 * (1 + math.cos(math.pi / 4)), rtol=1e-6)
    assert values[5] > 0 and values[6] == pytest.approx(0.0, abs=1e-7)
    linear = WarmupDecay(1.0, warmup_steps=0, total_steps=4, decay="linear")
    np.testing.assert_allclose([float(linear(i)) for i in range(4)], [1, 0.75, 0.5, 0.25])
    # Keras counts every accumulated batch; the schedule counts optimizer steps.
    accumulated = WarmupDecay(1.0, 2, 6, "cosine", accumulation=3)
    assert [float(accumulated(i)) for i in (0, 2, 3, 5)] == [0.5, 0.5, 1.0, 1.0]


def test_epoch_spans_and_plan():
    assert epoch_spans(0, 7, 3) == [(0, 0, 3), (1, 0, 3), (2, 0, 1)]
    assert epoch_spans(4, 7, 3) == [(1, 1, 3), (2, 0, 1)]
    cfg = Config(max_steps=5, gradient_accumulation_steps=2)
    assert steps_plan(cfg, 4) == (3, 5)  # 10 batches over 4-batch epochs


def test_gradient_accumulation_matches_the_larger_batch(tiny_gemma, tmp_path):
    examples = synthetic_examples(12)
    common = dict(
        max_steps=3,
        learning_rate=1e-2,
        lr_schedule="cosine",
        warmup_steps=1,
        clip_norm=0.05,
        lora_targets="all",
        weight_decay=0.01,
    )
    big, _ = run_training(tiny_gemma, tmp_path / "big", examples, batch_size=4, **common)
    accumulated, _ = run_training(
        tiny_gemma,
        tmp_path / "acc",
        examples,
        batch_size=2,
        gradient_accumulation_steps=2,
        **common,
    )
    for a, b in zip(lora_weights(big), lora_weights(accumulated)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(accumulated.optimizer.iterations) == 3  # optimizer steps, not batches
    big_steps = [r for r in read_jsonl(tmp_path / "big/metrics.jsonl") if "epoch" not in r]
    acc_steps = [r for r in read_jsonl(tmp_path / "acc/metrics.jsonl") if "epoch" not in r]
    assert [r["examples"] for r in big_steps] == [r["examples"] for r in acc_steps]
    assert [r["lr"] for r in big_steps] == pytest.approx([r["lr"] for r in acc_steps])
    # Equal token counts: the mean of the two half-batch losses is the big batch's.
    assert [r["step_loss"] for r in big_steps] == pytest.approx(
        [r["step_loss"] for r in acc_steps], rel=1e-5
    )


@pytest.mark.parametrize("dtype", ["bfloat16", "mixed_bfloat16"])
def test_bfloat16_policies_train(tiny_gemma, tmp_path, dtype):
    trainer, history = run_training(
        tiny_gemma,
        tmp_path,
        synthetic_examples(4),
        dtype=dtype,
        max_steps=2,
        batch_size=2,
        learning_rate=1e-2,
    )
    assert trainer.backbone.compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in trainer.backbone.trainable_weights)
    assert np.isfinite(history.history["loss"]).all()
    assert any(np.abs(w).max() > 0 for w in lora_weights(trainer)[1::2])  # B moved


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_gemma, tmp_path):
    with pytest.raises(NonFiniteLossError) as error:
        run_training(
            tiny_gemma,
            tmp_path,
            synthetic_examples(8),
            max_steps=8,
            learning_rate=1e30,
            checkpoint_every_steps=1,
            keep_checkpoints=20,
            lora_targets="all",
        )
    steps = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "epoch" not in r]
    bad = next(r["step"] for r in steps if not math.isfinite(r["step_loss"]))
    message = str(error.value)
    assert f"at step {bad}." in message and "learning_rate=1e+30" in message
    assert "float16" in message and "bad data" in message
    saved = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert saved == [f"step-{s:08d}" for s in range(1, bad)]  # nothing from the bad step
    assert f"step-{bad - 1:08d}" in message
    assert not (tmp_path / "loss_curve.png").exists()


def test_eval_samples_early_stopping_logging_and_progress_bar(
    tiny_gemma, tmp_path, monkeypatch, capsys
):
    scripted = iter([3.0, 2.0, 2.5, 2.6, 1.0])  # the best is the 2nd evaluation

    def fake_evaluate(trainer, dataset):
        loss = next(scripted)
        return {"loss": loss, "perplexity": math.exp(loss), "accuracy": 0.5, "num_tokens": 10}

    monkeypatch.setattr("keras_ft.train.loop.evaluate_tokens", fake_evaluate)  # injected
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # Keras' interactive bar
    examples = synthetic_examples(12)
    cfg = Config(
        preset=str(tiny_gemma),
        output_dir=str(tmp_path),
        batch_size=1,
        max_steps=12,
        learning_rate=1e-2,
        eval_every_steps=2,
        early_stopping_patience=2,
        lora_targets="all",
        checkpoint_every_steps=6,
        sample_every_steps=4,
        sample_prompts=("Hi", "Bye"),
    )
    keras.utils.set_random_seed(0)
    backbone = build_model(cfg).backbone
    data = BatchSequence(examples, 1, 16, 0, 0)
    trainer = build_trainer(cfg, backbone, 12)
    train(
        cfg,
        trainer,
        data,
        BatchSequence(examples[:2], 1, 16, 0, 0, shuffle=False),
        tmp_path,
        callbacks=[Throughput(data)],
        sample_fn=lambda: ["a", "b"],
    )
    bar = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # drop the colours
    # Keras' bar: "3/8 ━━━━━━━━━ 7s 1s/step - ... - tokens_per_s: ..." (7s: the ETA)
    updates = [u for u in re.split(r"[\r\n]", bar) if re.match(r"\s*\d+/12 ━+ (\d+s|\d+:\d\d) ", u)]
    assert updates and all(k in updates[-1] for k in ("step_loss:", "lr:", "tokens_per_s:"))

    steps = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "epoch" not in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6, 7, 8]  # stopped early at 8
    assert [r.get("eval_loss") for r in steps[1::2]] == [3.0, 2.0, 2.5, 2.6]
    assert all({"step_loss", "lr", "tokens_per_s", "examples"} <= set(r) for r in steps)
    (epoch_row,) = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "epoch" in r]
    assert epoch_row["step"] == 8 and epoch_row["val_loss"] == 2.6  # step 8's, not a 5th call
    assert next(scripted) == 1.0
    samples = read_jsonl(tmp_path / "samples.jsonl")
    assert [s["step"] for s in samples] == [4, 8]
    assert samples[0]["samples"] == [
        {"prompt": "Hi", "reply": "a"},
        {"prompt": "Bye", "reply": "b"},
    ]
    # The best adapter (step 4) is restored at the end, not the last weights.
    fresh = build_model(cfg).backbone
    fresh.load_lora_weights(str(tmp_path / "best/adapter.lora.h5"))
    for kept, best in zip(lora_weights(trainer), fresh.trainable_weights):
        np.testing.assert_array_equal(kept, np.asarray(best.value))
    fresh.load_lora_weights(str(tmp_path / "checkpoints/step-00000006/adapter.lora.h5"))
    assert any(
        not np.array_equal(k, np.asarray(w.value))
        for k, w in zip(lora_weights(trainer), fresh.trainable_weights)
    )

    events = _tensorboard_tags(tmp_path / "tensorboard")
    assert {"loss", "learning_rate", "tokens_per_s", "accuracy"} <= events["train"]
    assert {"loss", "perplexity", "accuracy"} <= events["validation"]
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    final = json.loads((tmp_path / "checkpoints/step-00000008/state.json").read_text())
    assert final["state"]["stop_reason"] == "early_stopping"  # a resume will not go on


def test_each_epoch_ends_with_the_held_out_scores_of_its_weights(tiny_gemma, tmp_path):
    # No periodic evaluation: the epoch's end scores the held-out data with
    # the forward that scores base and tuned (evaluate_tokens), under the keys
    # Keras' validation pass writes, and Keras compiles no test step.
    examples = synthetic_examples(6)
    cfg = Config(preset=str(tiny_gemma), output_dir=str(tmp_path), batch_size=2, max_steps=5)
    keras.utils.set_random_seed(0)
    backbone = build_model(cfg).backbone
    data = BatchSequence(examples[:4], 2, 16, 0, 0)  # 2 batches an epoch: epochs of 2, 2, 1
    held_out = BatchSequence(examples[4:], 2, 16, 0, 0, shuffle=False)
    trainer = build_trainer(cfg, backbone, 5)
    history = train(cfg, trainer, data, held_out, tmp_path)
    epochs = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "epoch" in r]
    assert [(r["epoch"], r["step"]) for r in epochs] == [(1, 2), (2, 4), (3, 5)]
    final = evaluate_tokens(trainer, held_out)
    assert epochs[-1]["val_loss"] == pytest.approx(final["loss"], rel=1e-6)
    assert epochs[-1]["val_perplexity"] == pytest.approx(final["perplexity"], rel=1e-6)
    assert epochs[-1]["val_accuracy"] == pytest.approx(final["accuracy"], rel=1e-6)
    assert epochs[0]["val_loss"] != epochs[-1]["val_loss"]  # each epoch's own weights
    assert history.history["val_loss"] == [r["val_loss"] for r in epochs]
    assert trainer.test_function is None  # no Keras validation pass was compiled
    assert _tensorboard_tags(tmp_path / "tensorboard")["validation"] == {"epoch_loss"}


def _tensorboard_tags(log_dir):
    import tensorflow as tf

    tags = {}
    for run in ("train", "validation"):
        tags[run] = {
            value.tag
            for path in (log_dir / run).glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(path))
            for value in event.summary.value
        }
    return tags


@pytest.mark.parametrize("architecture, name", [("gpt2", "GPT2Backbone"), ("opt", "OPTBackbone")])
def test_packing_is_refused_for_learned_absolute_positions(architecture, name):
    from keras_ft.model.packing import segment_attention
    from keras_ft.testing import make_tiny_absolute_position_backbone

    backbone = make_tiny_absolute_position_backbone(architecture)
    cfg = Config(preset="unused", data=("train.jsonl",), packing=True)
    with pytest.raises(
        ValueError,
        match=rf"`packing` is not supported for {name}:.*"
        r"`packing: false`.*--no-packing",
    ):
        build_trainer(cfg, backbone, total_steps=1)
    # The trainer refuses it too when handed packed rows directly.
    with pytest.raises(ValueError, match=name):
        with segment_attention(backbone, np.ones((1, 4), "int32")):
            pass
    # Unpacked, the same backbone trains.
    trainer = build_trainer(Config(preset="unused", data=("train.jsonl",)), backbone, 1)
    assert trainer.backbone is backbone


def test_progress_log_cadence_every_twentieth_of_the_run_or_30_seconds(monkeypatch, caplog):
    from keras_ft.train import callbacks
    from keras_ft.train.checkpoint import TrainState

    clock = [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: clock[0])
    state = TrainState(accumulation=2)  # 2 batches per optimizer step
    progress = callbacks.ProgressLog(state, total_steps=100, every_s=30.0)
    progress.on_train_begin()
    with caplog.at_level("INFO", logger="keras_ft.train.callbacks"):
        for batch in range(200):
            clock[0] += 60.0 if batch == 2 * 11 else 0.5  # one slow batch, in step 12
            state.batches_done += 1
            progress.on_train_batch_end(batch, {"step_loss": 1.25, "tokens_per_s": 80.0})
    steps = [int(re.match(r"step (\d+)/100", r.getMessage())[1]) for r in caplog.records]
    # The first step, every 5th (1/20 of 100), and step 12: 30 s had passed.
    assert steps == [1, 5, 10, 12] + list(range(15, 101, 5)), steps
    assert caplog.records[2].getMessage() == (
        "step 10/100 (10%): loss 1.2500, 80 tokens/s, elapsed 0:00:10, ETA 0:01:30"
    )
    with pytest.raises(ValueError, match="every_s=0"):
        callbacks.ProgressLog(state, 100, every_s=0)


def test_periodic_hooks_run_every_n_steps_never_after_a_non_finite_loss():
    from keras_ft.train import callbacks
    from keras_ft.train.checkpoint import NON_FINITE_LOSS, TrainState

    state, saved = TrainState(accumulation=2), []
    hook = callbacks.PeriodicCheckpoint(state, every=3, save=lambda: saved.append(state.step))
    for batch in range(20):  # 10 optimizer steps of 2 batches
        state.batches_done += 1
        if state.step == 6:
            state.stop_reason = NON_FINITE_LOSS
        hook.on_train_batch_end(batch, {})
    assert saved == [3]  # at step 3's last batch only; not at the bad step 6, nor after it


def test_callbacks_are_built_in_the_order_of_the_logs_they_share(tiny_gemma, tmp_path):
    from keras_ft.train import callbacks
    from keras_ft.train.checkpoint import TrainState
    from keras_ft.train.loop import build_callbacks

    cfg = Config(
        preset=str(tiny_gemma),
        output_dir=str(tmp_path),
        max_steps=4,
        eval_every_steps=2,
        sample_every_steps=2,
        checkpoint_every_steps=2,
    )
    trainer = build_trainer(cfg, build_model(cfg).backbone, 4)
    data, state = BatchSequence(synthetic_examples(4), 1, 16, 0, 0), TrainState()
    built, non_finite = build_callbacks(
        cfg,
        trainer,
        state,
        data,
        data,
        tmp_path,
        save=lambda: None,
        extra=[Throughput(data)],
        sample_fn=lambda: ["a"],
    )
    assert [type(c) for c in built if type(c) is not callbacks.ProgressLog] == list(
        callbacks.ORDER[:-1]
    )
    assert non_finite is built[1]
    swapped = [built[0], built[3], built[2]]  # PeriodicEval before Throughput
    with pytest.raises(ValueError, match="out of order: StepTracker, PeriodicEval, Throughput"):
        callbacks.check_order(swapped)
