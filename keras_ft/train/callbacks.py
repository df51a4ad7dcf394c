"""Keras callbacks of a training run, and the loss-curve plot.

They share one logs dict per batch and each reads what the ones before it
added, so they run in the order of `ORDER` (`loop.build_callbacks` builds
them so and `check_order` refuses another):

StepTracker (position, step_loss, lr) -> StopOnNonFiniteLoss -> Throughput
(tokens_per_s) -> PeriodicEval (eval_*) -> SampleText -> JsonlLogger ->
TensorBoardLogger -> PeriodicCheckpoint -> ProgressLog (not on a TTY) ->
Keras' progress bar.

No callback imports the trainer or the generator: what they run is handed
in (`evaluate_fn`, `generate_fn`, `save`), as tunix's hooks do.

In a multi-host run every process runs every callback (evaluation and
sampling are collectives), and only the writer (`mesh.is_writer()`, process
0) writes metrics.jsonl, samples.jsonl, TensorBoard events and the plot.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from keras_ft.distribution import mesh
from keras_ft.files import to_plain
from keras_ft.train.checkpoint import NON_FINITE_LOSS, TrainState
from keras_ft.train.tensorboard_events import EventFileWriter

log = logging.getLogger(__name__)


class StepTracker(keras.callbacks.Callback):
    """Advances the data position; adds `step_loss` and `lr` at each step's end.

    `step_loss` is the mean of the step's batch losses (what the optimizer
    averaged); the Keras `loss` is a running mean over the epoch. The example
    indices of the step are kept in `step_examples` for the metrics log.
    """

    def __init__(self, state: TrainState, dataset, learning_rate: Callable[[int], float]):
        super().__init__()
        self.state, self.dataset, self.learning_rate = state, dataset, learning_rate
        self.step_examples: list[int] = []
        self._losses: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        logs = logs if logs is not None else {}
        if self.state.batches_done % self.state.accumulation == 0:
            self.step_examples, self._losses = [], []
        self.step_examples += [int(i) for i in self.dataset.batch_indices(batch)]
        self._losses.append(float(logs.get("batch_loss", math.nan)))
        self.state.batches_done += 1
        if self.state.at_step_end:
            logs["step_loss"] = float(np.mean(self._losses))
            logs["lr"] = self.learning_rate(self.state.step - 1)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite.

    `train.train` then raises `NonFiniteLossError` naming the step; later
    callbacks see `state.stop_reason` and write no checkpoint of it.
    """

    def __init__(self, state: TrainState, tracker: StepTracker):
        super().__init__()
        self.state, self.tracker = state, tracker
        self.failure: dict | None = None

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("batch_loss", 0.0))
        if math.isfinite(loss) or self.failure:
            return
        self.failure = {
            "step": (self.state.batches_done - 1) // self.state.accumulation + 1,
            "loss": loss,
            "examples": list(self.tracker.step_examples),
        }
        self.state.stop_reason = NON_FINITE_LOSS
        self.model.stop_training = True


class Periodic(keras.callbacks.Callback):
    """Runs `on_step(logs)` at the end of every `every`-th optimizer step
    (`every=0`: never).

    The one every-N gate of the run (levanter's `add_hook(hook, every=N)`):
    never at a batch inside an accumulated step, and never once the loss went
    non-finite, so no evaluation, sample or checkpoint is made of a broken
    step. Subclasses implement `on_step`.
    """

    def __init__(self, state: TrainState, every: int):
        super().__init__()
        self.state, self.every = state, every

    def on_train_batch_end(self, batch, logs=None):
        state = self.state
        if (
            self.every
            and state.at_step_end
            and state.step % self.every == 0
            and state.stop_reason != NON_FINITE_LOSS
        ):
            self.on_step(logs)

    def on_step(self, logs: dict | None) -> None:
        raise NotImplementedError


class PeriodicEval(Periodic):
    """Held-out loss, perplexity and accuracy every `every` optimizer steps
    (`eval_*` in the step's logs; `every=0`: none) and at every epoch's end
    (`val_loss`, `val_perplexity`, `val_accuracy`, the keys Keras' own
    `fit(validation_data=...)` writes).

    `evaluate_fn()` returns {"loss", "perplexity", "accuracy", "num_tokens"}
    of the current weights (`trainer.evaluate_tokens` on the held-out data).
    The epoch's evaluation replaces Keras' validation pass: that one compiles
    a second forward (the test step) on every run, while `evaluate_tokens`
    reuses the compiled forward that scores the base and the tuned model; an
    epoch that ends on a periodic evaluation's step reuses its figures.
    With `patience`, stops after that many periodic evaluations without a
    lower loss; every new best is handed to `save_best` (the run keeps the
    best adapter).
    """

    def __init__(
        self,
        state: TrainState,
        every: int,
        evaluate_fn: Callable[[], dict[str, float]],
        patience: int = 0,
        save_best: Callable[[], None] | None = None,
    ):
        super().__init__(state, every)
        self.evaluate_fn, self.patience, self.save_best = evaluate_fn, patience, save_best
        self._last = None  # (step, metrics) of the newest evaluation

    def on_epoch_end(self, epoch, logs=None):
        if self.state.stop_reason == NON_FINITE_LOSS:
            return
        metrics = self._evaluate()
        if logs is not None:
            logs.update({f"val_{k}": v for k, v in metrics.items() if k != "num_tokens"})

    def _evaluate(self) -> dict[str, float]:
        step = self.state.step
        if self._last is None or self._last[0] != step:
            self.model.jax_state_sync()  # fit holds the newest weights in its JAX state
            self._last = (step, self.evaluate_fn())
        return self._last[1]

    def on_step(self, logs):
        state = self.state
        metrics = self._evaluate()
        if logs is not None:
            logs.update({f"eval_{k}": v for k, v in metrics.items() if k != "num_tokens"})
        log.info(
            "step %d: validation loss %.4f, perplexity %.2f, accuracy %.3f",
            state.step,
            metrics["loss"],
            metrics["perplexity"],
            metrics["accuracy"],
        )
        if not self.patience:
            return
        if state.best_loss is None or metrics["loss"] < state.best_loss:
            state.best_loss, state.evals_since_best = metrics["loss"], 0
            if self.save_best:
                self.save_best()
            return
        state.evals_since_best += 1
        if state.evals_since_best >= self.patience:
            log.info(
                "Early stopping at step %d: no better validation loss than %.4f in %d evaluations.",
                state.step,
                state.best_loss,
                self.patience,
            )
            state.stop_reason = "early_stopping"
            self.model.stop_training = True


class Throughput(keras.callbacks.Callback):
    """Adds useful (non-padding) `tokens_per_s` to each step's logs.

    Put it before the progress bar (user callbacks run first), so the bar
    shows it. The first step includes XLA compilation; its time is reported
    as `compile_s` instead of dragging the average.
    """

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset
        self.tokens = 0
        self.seconds = 0.0
        self.compile_s = None
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        elapsed = time.perf_counter() - self._start
        tokens = self.dataset.num_real_tokens(batch)
        if self.compile_s is None:
            self.compile_s = elapsed
        else:
            self.tokens += tokens
            self.seconds += elapsed
        if logs is not None:
            logs["tokens_per_s"] = self.tokens_per_s

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # the epoch line of a non-interactive progress log
            logs["tokens_per_s"] = self.tokens_per_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class SampleText(Periodic):
    """Generates for the fixed prompts every `every` steps (to samples.jsonl)."""

    def __init__(
        self,
        state: TrainState,
        every: int,
        prompts: list[str],
        generate_fn: Callable[[], list[str]],
        path: str | Path,
    ):
        super().__init__(state, every)
        self.prompts, self.generate_fn, self.path = prompts, generate_fn, Path(path)

    def on_step(self, logs):
        state = self.state
        self.model.jax_state_sync()
        replies = self.generate_fn()
        for prompt, reply in zip(self.prompts, replies):
            log.info("step %d sample: %s -> %s", state.step, prompt, reply)
        _append_json(
            self.path,
            {
                "step": state.step,
                "samples": [{"prompt": p, "reply": r} for p, r in zip(self.prompts, replies)],
            },
        )


class JsonlLogger(keras.callbacks.Callback):
    """Appends one JSON line per optimizer step, and one per epoch, to `path`.

    Step lines hold `step`, the logs and `examples`: the indices of the
    training examples the step consumed. Epoch lines also hold `epoch`.
    """

    def __init__(self, path: str | Path, state: TrainState, tracker: StepTracker):
        super().__init__()
        self.path, self.state, self.tracker = Path(path), state, tracker

    def on_train_batch_end(self, batch, logs=None):
        if self.state.at_step_end:
            _append_json(
                self.path,
                {
                    "step": self.state.step,
                    **_plain_logs(logs),
                    "examples": self.tracker.step_examples,
                },
            )

    def on_epoch_end(self, epoch, logs=None):
        _append_json(self.path, {"step": self.state.step, "epoch": epoch + 1, **_plain_logs(logs)})


class TensorBoardLogger(keras.callbacks.Callback):
    """TensorBoard curves: `train/` (loss, accuracy, learning rate, tokens/s)
    per optimizer step and `validation/` (loss, perplexity, accuracy) per
    evaluation, at the same step numbers so the curves overlay."""

    TRAIN = {
        "step_loss": "loss",
        "accuracy": "accuracy",
        "lr": "learning_rate",
        "tokens_per_s": "tokens_per_s",
    }
    VALIDATION = {"eval_loss": "loss", "eval_perplexity": "perplexity", "eval_accuracy": "accuracy"}

    def __init__(self, log_dir: str | Path, state: TrainState):
        super().__init__()
        self.log_dir, self.state = Path(log_dir), state
        self._writers = {}

    def on_train_batch_end(self, batch, logs=None):
        if self.state.at_step_end and logs:
            self._write("train", logs, self.TRAIN)
            self._write("validation", logs, self.VALIDATION)

    def on_epoch_end(self, epoch, logs=None):
        self._write("validation", logs or {}, {"val_loss": "epoch_loss"})  # PeriodicEval's

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.flush()

    def _write(self, run: str, logs: dict, tags: dict) -> None:
        values = {tag: float(logs[key]) for key, tag in tags.items() if key in logs}
        if not values or not mesh.is_writer():
            return
        # Written without TensorFlow (tensorboard_events: the records
        # `tf.summary.write` writes), so training never imports it.
        if run not in self._writers:
            self._writers[run] = EventFileWriter(self.log_dir / run)
        self._writers[run].write(self.state.step, values)


class PeriodicCheckpoint(Periodic):
    """Calls `save()` every `every` optimizer steps (never after a bad loss)."""

    def __init__(self, state: TrainState, every: int, save: Callable[[], Path]):
        super().__init__(state, every)
        self.save = save

    def on_step(self, logs):
        self.save()


class ProgressLog(keras.callbacks.Callback):
    """Progress as log lines, for output that is not a terminal.

    Under nohup, tee, CI or a notebook, `fit` runs with `verbose=2`: one line
    per epoch, so a long epoch is silent. This logs `step 12/400 (3%): loss
    2.3456, 812 tokens/s, elapsed 0:01:02, ETA 0:31:10` at the first step,
    every `1/lines` of the run, whenever `every_s` seconds passed since the
    last line, and at the last step. The ETA is timed from the end of the
    first step of this process, so XLA compilation does not inflate it.

    Args:
        state: the run's position (`StepTracker` advances it, before this).
        total_steps: optimizer steps of the whole run (a resumed run included).
        every_s: the longest silence, in seconds.
        lines: about how many step-count lines the whole run gets.
    """

    def __init__(self, state: TrainState, total_steps: int, every_s: float = 30.0, lines: int = 20):
        super().__init__()
        if every_s <= 0 or lines <= 0:
            raise ValueError(
                "ProgressLog needs every_s > 0 and lines > 0. Received: "
                f"every_s={every_s}, lines={lines}"
            )
        self.state, self.total_steps, self.every_s = state, total_steps, every_s
        self.every_steps = max(1, total_steps // lines)
        self._start = None  # when the first `fit` (of one per epoch) began
        self._first = None  # (time, step) at the end of this process's first step
        self._last_line = 0.0

    def on_train_begin(self, logs=None):
        if self._start is None:
            self._start = self._last_line = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        state = self.state
        if not state.at_step_end:
            return
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, state.step)
        elif not (
            state.step % self.every_steps == 0
            or state.step >= self.total_steps
            or now - self._last_line >= self.every_s
        ):
            return
        self._last_line = now
        log.info("%s", self.line(state.step, now, logs or {}))

    def line(self, step: int, now: float, logs: dict) -> str:
        parts = [f"step {step}/{self.total_steps} ({100 * step // self.total_steps}%):"]
        loss = logs.get("step_loss", logs.get("loss"))
        parts.append(f"loss {float(loss):.4f}," if loss is not None else "loss -,")
        tokens_per_s = float(logs.get("tokens_per_s", 0.0))
        parts.append(f"{tokens_per_s:.0f} tokens/s," if tokens_per_s else "tokens/s -,")
        parts.append(f"elapsed {_clock(now - self._start)},")
        first_time, first_step = self._first
        if step > first_step:
            per_step = (now - first_time) / (step - first_step)
            parts.append(f"ETA {_clock(per_step * (self.total_steps - step))}")
        else:  # the first step compiled; its time says nothing about the rest
            parts.append(f"ETA - (first step, with compilation: {now - self._start:.1f} s)")
        return " ".join(parts)

    def on_test_begin(self, logs=None):  # fit's own validation, at an epoch's end
        log.info("step %d: validation loss at the end of the epoch...", self.state.step)


# The order the callbacks run in (see the module docstring). Callbacks of
# other types (a caller's) may come anywhere.
ORDER = (
    StepTracker,
    StopOnNonFiniteLoss,
    Throughput,
    PeriodicEval,
    SampleText,
    JsonlLogger,
    TensorBoardLogger,
    PeriodicCheckpoint,
    ProgressLog,
)


def check_order(callbacks) -> None:
    """Raises ValueError when `callbacks` break `ORDER` (a logs-dict reader
    would run before the callback that writes what it reads)."""
    known = [type(c) for c in callbacks if type(c) in ORDER]
    if known != sorted(known, key=ORDER.index):
        raise ValueError(
            "Training callbacks out of order: "
            f"{', '.join(t.__name__ for t in known)}. They share one logs dict "
            f"and must run as {' -> '.join(t.__name__ for t in ORDER)}."
        )


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def plot_loss_curve(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """Plots step loss and validation loss from metrics.jsonl into a PNG.

    Returns:
        The PNG path, or None when the log holds no step yet (or this
        process is not the writer).
    """
    metrics_path = Path(metrics_path)
    if not mesh.is_writer() or not metrics_path.exists():
        return None
    records = [json.loads(line) for line in metrics_path.open()]
    steps = [r for r in records if "epoch" not in r and "step_loss" in r]
    if not steps:
        return None
    # A bare Figure renders with Agg and leaves pyplot's backend (a notebook's) alone.
    from matplotlib.figure import Figure  # heavy: matplotlib

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(
        [r["step"] for r in steps], [r["step_loss"] for r in steps], label="train loss", linewidth=1
    )
    evals = [r for r in steps if "eval_loss" in r]
    if evals:
        ax.plot(
            [r["step"] for r in evals],
            [r["eval_loss"] for r in evals],
            "o-",
            label="validation loss",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (loss-bearing tokens)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return Path(png_path)


def _append_json(path: Path, record: dict) -> None:
    if not mesh.is_writer():  # every process logs; one writes
        return
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _plain_logs(logs) -> dict:
    return {k: to_plain(v) for k, v in (logs or {}).items()}
