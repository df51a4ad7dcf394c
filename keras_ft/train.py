"""Training through Keras `fit`: a loss-efficient model around the backbone.

`CausalLMTrainer` shares the causal LM's backbone (and so its LoRA weights)
and returns, instead of `[batch, length, vocab]` logits, per-example loss
statistics computed by `keras_ft.loss`. The loss is the mean cross-entropy
over loss-bearing tokens, so padding never changes it (Keras'
`sum_over_batch_size` would divide by padded positions too).

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
from typing import Callable, Sequence

import keras
import numpy as np
from keras import ops

from keras_ft.callbacks import (JsonlLogger, PeriodicCheckpoint, PeriodicEval, ProgressLog,
                                SampleText, StepTracker, StopOnNonFiniteLoss,
                                TensorBoardLogger, plot_loss_curve)
from keras_ft.checkpoint import Checkpoints, resume_or_start
from keras_ft.config import Config
from keras_ft.loss import output_projection, reference_token_loss_stats, token_loss_stats
from keras_ft.model import ADAPTER_FILE, save_adapter
from keras_ft.packing import check_packing, segment_attention
from keras_ft.tokens import (TokenizedExample, fitted_bucket_lengths, make_packed_batch,
                             pack_rows)

log = logging.getLogger(__name__)

NO_DECAY = ["bias", "scale", "norm", "embeddings"]  # AdamW exclusions by path


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite (a ValueError, so the CLI
    reports the message instead of a traceback)."""


class TokenAccuracy(keras.metrics.Metric):
    """Next-token accuracy over loss-bearing tokens (weighted, as keras-hub's)."""

    def __init__(self, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable((), initializer="zeros", name="correct")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, stats):
        self.correct.assign_add(ops.sum(stats[:, 2]))
        self.count.assign_add(ops.sum(stats[:, 1]))

    def result(self):
        return self.correct / ops.maximum(self.count, 1.0)


class BatchLoss(keras.metrics.Metric):
    """The latest batch's loss (Keras' `loss` is a running mean per epoch)."""

    def __init__(self, name="batch_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable((), initializer="zeros", name="value")

    def update_state(self, stats):
        self.value.assign(ops.sum(stats[:, 0]) / ops.maximum(ops.sum(stats[:, 1]), 1.0))

    def result(self):
        return ops.convert_to_tensor(self.value)


class CausalLMTrainer(keras.Model):
    """Trains a keras-hub backbone on batches from `tokens.make_batch`."""

    def __init__(self, backbone, use_chunked_loss: bool = True, chunk_size: int = 128,
                 **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.chunk_size = chunk_size
        self.use_chunked_loss = (use_chunked_loss and keras.backend.backend() == "jax"
                                 and not getattr(backbone.token_embedding,
                                                 "quantization_mode", None))
        self.token_accuracy = TokenAccuracy()
        self.batch_loss = BatchLoss()
        self.built = True  # the backbone is built; this wrapper adds no weights

    def call(self, inputs, training=False):
        backbone_inputs = {"token_ids": inputs["token_ids"],
                           "padding_mask": inputs["padding_mask"]}
        if "segment_ids" in inputs:  # packed rows: attend within each example
            with segment_attention(self.backbone, inputs["segment_ids"]):
                hidden = self.backbone(backbone_inputs, training=training)
        else:
            hidden = self.backbone(backbone_inputs, training=training)
        labels, weights = inputs["labels"], inputs["loss_weights"]
        if self.use_chunked_loss:
            matrix, soft_cap = output_projection(self.backbone)
            return token_loss_stats(hidden, ops.convert_to_tensor(matrix), labels,
                                    weights, soft_cap, self.chunk_size)
        head = lambda h: self.backbone.token_embedding(h, reverse=True)
        return reference_token_loss_stats(hidden, head, labels, weights)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return ops.sum(y_pred[:, 0]) / ops.maximum(ops.sum(y_pred[:, 1]), 1.0)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.token_accuracy.update_state(y_pred)
        self.batch_loss.update_state(y_pred)
        return self.get_metrics_result()


class BatchSequence(keras.utils.PyDataset):
    """Batches of tokenized examples, reshuffled per epoch from the seed.

    A batch holds `batch_size` rows. A row is one example, or with `packing`
    several examples laid end to end (`tokens.pack_rows`: fixed for the run,
    attention kept within each example by the trainer). Rows are padded to
    the nearest bucket length (`num_buckets` fixed shapes, default 4, or 2
    when packing; fitted to the lengths of epoch 0's batches), so little
    compute goes to padding and XLA compiles only a few programs. Batch `b`
    of epoch `e` holds `example_indices(e, b)`, a pure function of (seed, e,
    b). It serves the span of one epoch set by `set_span` (by default all of
    epoch 0).
    """

    def __init__(self, examples: Sequence[TokenizedExample], batch_size: int,
                 sequence_length: int, pad_id: int, seed: int, shuffle: bool = True,
                 num_buckets: int | None = None, buckets: Sequence[int] | None = None,
                 packing: bool = False):
        super().__init__()
        if not examples:
            raise ValueError("No examples to batch: the dataset is empty after "
                             "filtering and truncation.")
        self.examples = examples  # a Sequence; may be memory-mapped
        self.batch_size = batch_size
        self.pad_id, self.seed, self.shuffle, self.packing = pad_id, seed, shuffle, packing
        sizes = (examples.sizes() if hasattr(examples, "sizes")
                 else np.asarray([len(e.token_ids) for e in examples]))
        # Rows as slices of one index array: row r holds members[bounds[r]:bounds[r+1]].
        if packing:
            rows = pack_rows(sizes - 1, sequence_length, seed)
            self.members = np.concatenate(rows)
            self.bounds = np.cumsum([0] + [len(r) for r in rows])
        else:
            self.members, self.bounds = np.arange(len(sizes)), np.arange(len(sizes) + 1)
        row_lengths = np.add.reduceat(sizes[self.members] - 1, self.bounds[:-1])
        self.num_rows = len(row_lengths)
        self.batches_per_epoch = math.ceil(self.num_rows / batch_size)
        longest = np.maximum.reduceat(row_lengths[self.order(0)],
                                      np.arange(0, self.num_rows, batch_size))
        # Later epochs batch other rows together; their longest still fits the
        # last bucket, which covers the longest row. Packed rows are nearly
        # full: 2 buckets pad Dolly 1.013x (4: 1.009x) at half the compiles.
        num_buckets = num_buckets or (2 if packing else 4)
        self.buckets = list(buckets) if buckets else fitted_bucket_lengths(
            np.append(longest, row_lengths.max()), num_buckets, sequence_length)
        if self.buckets[-1] < row_lengths.max():
            raise ValueError(f"buckets={self.buckets} do not fit the longest row "
                             f"({row_lengths.max()} tokens).")
        self.span = (0, 0, self.batches_per_epoch)

    def set_span(self, epoch: int, start: int = 0, stop: int | None = None) -> None:
        """Serves batches [start, stop) of `epoch` (a resumed run starts mid-epoch)."""
        stop = self.batches_per_epoch if stop is None else stop
        if not 0 <= start < stop <= self.batches_per_epoch:
            raise ValueError(f"Bad span [{start}, {stop}) of an epoch of "
                             f"{self.batches_per_epoch} batches.")
        self.span = (epoch, start, stop)

    def __len__(self):
        return self.span[2] - self.span[1]

    def order(self, epoch: int) -> np.ndarray:
        """The order of rows in `epoch`."""
        if not self.shuffle:
            return np.arange(self.num_rows)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_rows)

    def batch_rows(self, epoch: int, batch: int) -> list[np.ndarray]:
        """Example indices of each row of batch `batch` of epoch `epoch`."""
        rows = self.order(epoch)[batch * self.batch_size:(batch + 1) * self.batch_size]
        return [self.members[self.bounds[r]:self.bounds[r + 1]] for r in rows]

    def example_indices(self, epoch: int, batch: int) -> np.ndarray:
        """Indices of the examples in batch `batch` of epoch `epoch`."""
        return np.concatenate(self.batch_rows(epoch, batch))

    def batch_indices(self, index: int) -> np.ndarray:
        """Example indices of batch `index` of the current span."""
        epoch, start, _ = self.span
        return self.example_indices(epoch, start + index)

    def __getitem__(self, index):
        epoch, start, _ = self.span
        rows = [[self.examples[i] for i in row]
                for row in self.batch_rows(epoch, start + index)]
        x, _, _ = make_packed_batch(rows, self.buckets, self.pad_id, segments=self.packing)
        return x

    def num_real_tokens(self, index: int) -> int:
        return sum(len(self.examples[i].token_ids) - 1 for i in self.batch_indices(index))


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then constant, cosine or linear decay towards 0.

    Keras calls a schedule with its batch counter, which counts every batch
    under gradient accumulation; dividing by `accumulation` gives the
    optimizer step, so warmup and decay are in optimizer steps.
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int,
                 decay: str = "cosine", accumulation: int = 1):
        self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, total_steps
        self.decay, self.accumulation = decay, accumulation

    def __call__(self, iterations):
        step = ops.cast(ops.floor_divide(iterations, self.accumulation), "float32")
        warmup = (step + 1.0) / max(self.warmup_steps, 1)  # step 0 already learns
        progress = ops.clip((step - self.warmup_steps)
                            / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        if self.decay == "cosine":
            factor = 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.decay == "linear":
            factor = 1.0 - progress
        else:
            factor = ops.ones_like(progress)
        return self.peak * ops.where(step < self.warmup_steps, warmup, factor)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "decay": self.decay,
                "accumulation": self.accumulation}


def learning_rate_schedule(cfg: Config, total_steps: int) -> float | WarmupDecay:
    """`cfg.learning_rate` itself, or a WarmupDecay when warmup/decay are set."""
    if cfg.lr_schedule == "constant" and not cfg.warmup_steps:
        return cfg.learning_rate
    return WarmupDecay(cfg.learning_rate, cfg.warmup_steps, total_steps, cfg.lr_schedule,
                       cfg.gradient_accumulation_steps)


def build_optimizer(cfg: Config, total_steps: int):
    """AdamW as in the design card; no decay on biases, norms, embeddings.

    Gradient accumulation and clipping are Keras' own: the optimizer averages
    `gradient_accumulation_steps` batches' gradients, clips their global norm
    to `clip_norm`, then updates.
    """
    accumulation = cfg.gradient_accumulation_steps
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate_schedule(cfg, total_steps),
        weight_decay=cfg.weight_decay, global_clipnorm=cfg.clip_norm or None,
        gradient_accumulation_steps=accumulation if accumulation > 1 else None)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer


def total_batches(cfg: Config, batches_per_epoch: int) -> int:
    """Batches the run consumes: `max_steps` optimizer steps, else all epochs."""
    if cfg.max_steps:
        return cfg.max_steps * cfg.gradient_accumulation_steps
    return cfg.epochs * batches_per_epoch


def steps_plan(cfg: Config, batches_per_epoch: int) -> tuple[int, int]:
    """(epochs, total optimizer steps) for `cfg.epochs` and `cfg.max_steps`."""
    batches = total_batches(cfg, batches_per_epoch)
    return (math.ceil(batches / batches_per_epoch),
            max(batches // cfg.gradient_accumulation_steps, 1))


def epoch_spans(start: int, stop: int, batches_per_epoch: int) -> list[tuple[int, int, int]]:
    """(epoch, first batch, end batch) per epoch for global batches [start, stop)."""
    spans = []
    while start < stop:
        epoch, first = divmod(start, batches_per_epoch)
        end = min(batches_per_epoch, first + stop - start)
        spans.append((epoch, first, end))
        start += end - first
    return spans


def build_trainer(cfg: Config, backbone, total_steps: int) -> CausalLMTrainer:
    if cfg.packing:
        check_packing(backbone)  # only architectures proven equal to unpacked
    trainer = CausalLMTrainer(backbone)
    trainer.compile(optimizer=build_optimizer(cfg, total_steps))
    return trainer


def checkpoint_data(train_data: BatchSequence,
                    fingerprint: dict[str, str] | None = None) -> dict:
    """The data as checkpoints record it; resuming refuses data that differs."""
    data = {"num_examples": len(train_data.examples),
            "batches_per_epoch": train_data.batches_per_epoch}
    if fingerprint is not None:
        data["fingerprint"] = dict(fingerprint)
    return data


def train(cfg: Config, trainer: CausalLMTrainer, train_data: BatchSequence,
          validation_data: BatchSequence | None, run_dir: str | Path,
          callbacks=(), sample_fn: Callable[[], list[str]] | None = None,
          data_fingerprint: dict[str, str] | None = None):
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
        raise ValueError("`eval_every_steps` needs held-out data: set "
                         "`validation_fraction` > 0 or `validation_data`. Received: "
                         f"eval_every_steps={cfg.eval_every_steps}, no validation split")
    data = checkpoint_data(train_data, data_fingerprint)
    checkpoints = Checkpoints(run_dir / "checkpoints", cfg.keep_checkpoints)
    state = resume_or_start(cfg, trainer, checkpoints, run_dir, data)
    start = state.batches_done
    save = lambda: checkpoints.save(trainer, state, cfg, data)
    tracker = StepTracker(state, train_data, learning_rate_logger(trainer))
    non_finite = StopOnNonFiniteLoss(state, tracker)
    # Extra callbacks (e.g. Throughput) run before evaluation, sampling and
    # checkpointing, so their per-batch timing leaves those out.
    loop = [tracker, non_finite, *callbacks]
    if cfg.eval_every_steps:
        loop.append(PeriodicEval(state, validation_data, cfg.eval_every_steps,
                                 cfg.early_stopping_patience,
                                 lambda: _save_best(trainer, run_dir, cfg)))
    if cfg.sample_every_steps and sample_fn:
        loop.append(SampleText(state, cfg.sample_every_steps, list(cfg.sample_prompts),
                               sample_fn, run_dir / "samples.jsonl"))
    loop += [JsonlLogger(run_dir / "metrics.jsonl", state, tracker),
             TensorBoardLogger(run_dir / "tensorboard", state)]
    if cfg.checkpoint_every_steps:
        loop.append(PeriodicCheckpoint(state, cfg.checkpoint_every_steps, save))
    stop = total_batches(cfg, train_data.batches_per_epoch)
    if not sys.stdout.isatty():  # Keras prints one line per epoch there (verbose=2)
        loop.append(ProgressLog(state, max(stop // cfg.gradient_accumulation_steps, 1)))

    history = _fit_epochs(trainer, train_data, validation_data, loop, state, stop)
    if non_finite.failure:
        raise NonFiniteLossError(_non_finite_message(non_finite.failure, cfg,
                                                     checkpoints.latest()))
    best = run_dir / "best" / ADAPTER_FILE
    if cfg.early_stopping_patience and best.exists():
        trainer.backbone.load_lora_weights(str(best))  # keep the best, not the last
        log.info("Restored the best adapter (validation loss %.4f).", state.best_loss)
    if state.batches_done > start or checkpoints.latest() is None:
        save()
    plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png")
    return history


def learning_rate_logger(trainer: CausalLMTrainer) -> Callable[[int], float]:
    """The learning rate used at a (0-based) optimizer step, for the logs."""
    optimizer = trainer.optimizer
    schedule = optimizer._learning_rate  # the float or the schedule we passed
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        k = optimizer.gradient_accumulation_steps or 1
        return lambda step: float(ops.convert_to_numpy(schedule(step * k)))
    value = float(ops.convert_to_numpy(optimizer.learning_rate))
    return lambda step: value


def _fit_epochs(trainer, train_data, validation_data, callbacks, state, stop):
    """One `fit` per (partial) data epoch; returns their merged History."""
    history = keras.callbacks.History()
    history.history, history.epoch = {}, []
    if state.stop_reason:  # an early-stopped run that is already finished
        return history
    verbose = 1 if sys.stdout.isatty() else 2
    num_epochs = math.ceil(stop / train_data.batches_per_epoch)
    # `epochs=num_epochs` so the bar reads "Epoch 2/3"; this ends each fit after one.
    one_epoch = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: setattr(trainer, "stop_training", True))
    for epoch, first, end in epoch_spans(state.batches_done, stop,
                                         train_data.batches_per_epoch):
        train_data.set_span(epoch, first, end)
        # shuffle=False: Keras would otherwise permute a PyDataset's batches with
        # Python's global RNG; BatchSequence already shuffles from (seed, epoch).
        part = trainer.fit(train_data, validation_data=validation_data, epochs=num_epochs,
                           initial_epoch=epoch, callbacks=callbacks + [one_epoch],
                           shuffle=False, verbose=verbose)
        history.epoch += part.epoch
        for key, values in part.history.items():
            history.history.setdefault(key, []).extend(values)
        if state.stop_reason:
            break
    train_data.set_span(0)
    return history


def _save_best(trainer, run_dir: Path, cfg: Config) -> None:
    trainer.jax_state_sync()
    save_adapter(trainer, run_dir / "best", cfg)  # uses only `trainer.backbone`


def _non_finite_message(failure: dict, cfg: Config, last_good: Path | None) -> str:
    kept = (f"The last good checkpoint, {last_good}, is kept (its adapter loads with "
            "load_adapter); re-running the same command resumes from it and "
            "will fail the same way, so change the settings and start over "
            "with --no-resume." if last_good else
            "No checkpoint had been written yet (see checkpoint_every_steps).")
    return (
        f"Training stopped: the loss became {failure['loss']} at step {failure['step']}. "
        f"{kept} Likely causes: a learning rate too high (learning_rate="
        f"{cfg.learning_rate}; try it 10x lower, warmup_steps or clip_norm); float16 "
        f"overflow (dtype={cfg.dtype}; use bfloat16 or float32); or bad data in the "
        f"step's examples (positions {failure['examples'][:16]} of the training "
        "split; metrics.jsonl lists every step's).")
