"""The training loop: Keras `fit` over the data, with the run's callbacks.

`train` drives `fit` one data epoch at a time, from the newest checkpoint when
resuming: Keras cannot start an epoch mid-way, so a resumed run's first `fit`
serves only the rest of its epoch (`BatchSequence.set_span`). The batch order
is a pure function of (seed, epoch), so the position is the whole data state.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Callable

import keras
from keras import ops

from keras_ft.config import Config
from keras_ft.data.batches import BatchSequence
from keras_ft.distribution import mesh
from keras_ft.model.lora import ADAPTER_FILE, save_adapter
from keras_ft.train.callbacks import (
    JsonlLogger,
    PeriodicCheckpoint,
    PeriodicEval,
    ProgressLog,
    SampleText,
    StepTracker,
    StopOnNonFiniteLoss,
    TensorBoardLogger,
    check_order,
    plot_loss_curve,
)
from keras_ft.train.checkpoint import Checkpoints, TrainState
from keras_ft.train.rundir import resume_or_start
from keras_ft.train.trainer import CausalLMTrainer, evaluate_tokens

log = logging.getLogger(__name__)


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite (a ValueError, so the CLI
    reports the message instead of a traceback)."""


def total_batches(cfg: Config, batches_per_epoch: int) -> int:
    """Batches the run consumes: `max_steps` optimizer steps, else all epochs."""
    if cfg.max_steps:
        return cfg.max_steps * cfg.gradient_accumulation_steps
    return cfg.epochs * batches_per_epoch


def steps_plan(cfg: Config, batches_per_epoch: int) -> tuple[int, int]:
    """(epochs, total optimizer steps) for `cfg.epochs` and `cfg.max_steps`."""
    batches = total_batches(cfg, batches_per_epoch)
    return (
        math.ceil(batches / batches_per_epoch),
        max(batches // cfg.gradient_accumulation_steps, 1),
    )


def epoch_spans(start: int, stop: int, batches_per_epoch: int) -> list[tuple[int, int, int]]:
    """(epoch, first batch, end batch) per epoch for global batches [start, stop)."""
    spans = []
    while start < stop:
        epoch, first = divmod(start, batches_per_epoch)
        end = min(batches_per_epoch, first + stop - start)
        spans.append((epoch, first, end))
        start += end - first
    return spans


def checkpoint_data(train_data: BatchSequence, fingerprint: dict[str, str] | None = None) -> dict:
    """The data as checkpoints record it; resuming refuses data that differs."""
    data = {
        "num_examples": len(train_data.examples),
        "batches_per_epoch": train_data.batches_per_epoch,
    }
    if fingerprint is not None:
        data["fingerprint"] = dict(fingerprint)
    return data


def train(
    cfg: Config,
    trainer: CausalLMTrainer,
    train_data: BatchSequence,
    validation_data: BatchSequence | None,
    run_dir: str | Path,
    callbacks=(),
    sample_fn: Callable[[], list[str]] | None = None,
    data_fingerprint: dict[str, str] | None = None,
):
    """Trains with `fit` from the newest checkpoint in `run_dir` (or the start).

    Writes to `run_dir`: checkpoints (every `checkpoint_every_steps` and at
    the end), metrics.jsonl, TensorBoard events, samples.jsonl (every
    `sample_every_steps`, from `sample_fn`), best/ (the best adapter under
    early stopping, restored at the end) and loss_curve.png.

    Args:
        callbacks: extra callbacks, run before evaluation and logging (e.g.
            `Throughput`, whose `tokens_per_s` then reaches the logs).
        data_fingerprint: `data.data_fingerprint(cfg)` ({spec: hash}); kept in
            each checkpoint, so resuming on an edited data file is refused.

    Returns:
        The Keras History of the epochs this call trained.

    Raises:
        NonFiniteLossError: the loss became NaN/Inf; the last good checkpoint
            is kept.
        CheckpointError: resuming a checkpoint written with other settings.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.eval_every_steps and validation_data is None:
        raise ValueError(
            "`eval_every_steps` needs held-out data: set "
            "`validation_fraction` > 0 or `validation_data`. Received: "
            f"eval_every_steps={cfg.eval_every_steps}, no validation split"
        )
    data = checkpoint_data(train_data, data_fingerprint)
    checkpoints = Checkpoints(run_dir / "checkpoints", cfg.keep_checkpoints)
    state = resume_or_start(cfg, trainer, checkpoints, run_dir, data)
    start = state.batches_done
    save = lambda: checkpoints.save(trainer, state, cfg, data)
    loop, non_finite = build_callbacks(
        cfg, trainer, state, train_data, validation_data, run_dir, save, callbacks, sample_fn
    )
    stop = total_batches(cfg, train_data.batches_per_epoch)
    history = _fit_epochs(trainer, train_data, loop, state, stop)
    if non_finite.failure:
        raise NonFiniteLossError(_non_finite_message(non_finite.failure, cfg, checkpoints.latest()))
    best = run_dir / "best" / ADAPTER_FILE
    if cfg.early_stopping_patience and best.exists():
        trainer.backbone.load_lora_weights(str(best))  # keep the best, not the last
        log.info("Restored the best adapter (validation loss %.4f).", state.best_loss)
    if state.batches_done > start or checkpoints.latest() is None:
        save()
    plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png")
    return history


def build_callbacks(
    cfg: Config,
    trainer: CausalLMTrainer,
    state: TrainState,
    train_data: BatchSequence,
    validation_data: BatchSequence | None,
    run_dir: Path,
    save: Callable[[], Path],
    extra=(),
    sample_fn: Callable[[], list[str]] | None = None,
) -> tuple[list[keras.callbacks.Callback], StopOnNonFiniteLoss]:
    """The run's callbacks in `callbacks.ORDER`, and the one that sees a bad loss.

    They share one logs dict per batch, each reading what the ones before it
    wrote: StepTracker (step_loss, lr) -> StopOnNonFiniteLoss -> `extra`
    (e.g. Throughput: tokens_per_s; before evaluation, sampling and
    checkpointing, so its per-batch timing leaves those out) -> PeriodicEval
    (eval_*) -> SampleText -> JsonlLogger -> TensorBoardLogger ->
    PeriodicCheckpoint -> ProgressLog. The order is checked (`check_order`).
    """
    tracker = StepTracker(state, train_data, learning_rate_logger(trainer))
    non_finite = StopOnNonFiniteLoss(state, tracker)
    loop = [tracker, non_finite, *extra]
    if validation_data is not None:  # every `eval_every_steps` and at each epoch's end
        loop.append(
            PeriodicEval(
                state,
                cfg.eval_every_steps,
                lambda: evaluate_tokens(trainer, validation_data),
                cfg.early_stopping_patience,
                lambda: _save_best(trainer, run_dir, cfg),
            )
        )
    if cfg.sample_every_steps and sample_fn:
        loop.append(
            SampleText(
                state,
                cfg.sample_every_steps,
                list(cfg.sample_prompts),
                sample_fn,
                run_dir / "samples.jsonl",
            )
        )
    loop += [
        JsonlLogger(run_dir / "metrics.jsonl", state, tracker),
        TensorBoardLogger(run_dir / "tensorboard", state),
    ]
    if cfg.checkpoint_every_steps:
        loop.append(PeriodicCheckpoint(state, cfg.checkpoint_every_steps, save))
    if not sys.stdout.isatty():  # Keras prints one line per epoch there (verbose=2)
        stop = total_batches(cfg, train_data.batches_per_epoch)
        loop.append(ProgressLog(state, max(stop // cfg.gradient_accumulation_steps, 1)))
    check_order(loop)
    return loop, non_finite


def learning_rate_logger(trainer: CausalLMTrainer) -> Callable[[int], float]:
    """The learning rate used at a (0-based) optimizer step, for the logs."""
    optimizer = trainer.optimizer
    schedule = optimizer._learning_rate  # the float or the schedule we passed
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        k = optimizer.gradient_accumulation_steps or 1
        return lambda step: float(ops.convert_to_numpy(schedule(step * k)))
    value = float(ops.convert_to_numpy(optimizer.learning_rate))
    return lambda step: value


def _fit_epochs(trainer, train_data, callbacks, state, stop):
    """One `fit` per (partial) data epoch; returns their merged History.

    The held-out data is scored by `PeriodicEval` at each epoch's end (its
    `val_*` logs), not by `fit(validation_data=...)`.
    """
    history = keras.callbacks.History()
    history.history, history.epoch = {}, []
    if state.stop_reason:  # an early-stopped run that is already finished
        return history
    verbose = 1 if sys.stdout.isatty() else 2
    num_epochs = math.ceil(stop / train_data.batches_per_epoch)
    # `epochs=num_epochs` so the bar reads "Epoch 2/3"; this ends each fit after one.
    one_epoch = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: setattr(trainer, "stop_training", True)
    )
    for epoch, first, end in epoch_spans(state.batches_done, stop, train_data.batches_per_epoch):
        train_data.set_span(epoch, first, end)
        # shuffle=False: Keras would otherwise permute a PyDataset's batches with
        # Python's global RNG; BatchSequence already shuffles from (seed, epoch).
        part = trainer.fit(
            train_data,
            epochs=num_epochs,
            initial_epoch=epoch,
            callbacks=callbacks + [one_epoch],
            shuffle=False,
            verbose=verbose,
        )
        history.epoch += part.epoch
        for key, values in part.history.items():
            history.history.setdefault(key, []).extend(values)
        if state.stop_reason:
            break
    train_data.set_span(0)
    return history


def _save_best(trainer, run_dir: Path, cfg: Config) -> None:
    trainer.jax_state_sync()
    if not mesh.is_writer():
        return
    save_adapter(trainer, run_dir / "best", cfg)  # uses only `trainer.backbone`


def _non_finite_message(failure: dict, cfg: Config, last_good: Path | None) -> str:
    kept = (
        f"The last good checkpoint, {last_good}, is kept (its adapter loads with "
        "load_adapter); re-running the same command resumes from it and "
        "will fail the same way, so change the settings and start over "
        "with --no-resume."
        if last_good
        else "No checkpoint had been written yet (see checkpoint_every_steps)."
    )
    return (
        f"Training stopped: the loss became {failure['loss']} at step {failure['step']}. "
        f"{kept} Likely causes: a learning rate too high (learning_rate="
        f"{cfg.learning_rate}; try it 10x lower, warmup_steps or clip_norm); float16 "
        f"overflow (dtype={cfg.dtype}; use bfloat16 or float32); or bad data in the "
        f"step's examples (positions {failure['examples'][:16]} of the training "
        "split; metrics.jsonl lists every step's)."
    )
