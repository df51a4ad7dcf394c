"""Keras callbacks: throughput in the progress bar, and a metrics log file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras


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
            logs["tokens_per_s"] = self.tokens / self.seconds if self.seconds else 0.0


class JsonlLogger(keras.callbacks.Callback):
    """Appends one JSON line per step (and per epoch) to `path`."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.step = 0

    def on_train_begin(self, logs=None):
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self._write({"step": self.step, **(logs or {})})

    def on_epoch_end(self, epoch, logs=None):
        self._write({"step": self.step, "epoch": epoch + 1, **(logs or {})})

    def _write(self, record: dict) -> None:
        record = {k: _plain(v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _plain(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
