"""Training through Keras `fit`: a loss-efficient model around the backbone.

`CausalLMTrainer` shares the causal LM's backbone (and so its LoRA weights)
and returns, instead of `[batch, length, vocab]` logits, per-example loss
statistics computed by `keras_ft.loss`. The loss is the mean cross-entropy
over loss-bearing tokens, so padding never changes it (Keras'
`sum_over_batch_size` would divide by padded positions too).
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
from keras import ops

from keras_ft.config import Config
from keras_ft.loss import output_projection, reference_token_loss_stats, token_loss_stats
from keras_ft.tokens import TokenizedExample, bucket_lengths, make_batch

NO_DECAY = ["bias", "scale", "norm", "embeddings"]  # AdamW exclusions by path


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
        self.built = True  # the backbone is built; this wrapper adds no weights

    def call(self, inputs, training=False):
        hidden = self.backbone({"token_ids": inputs["token_ids"],
                                "padding_mask": inputs["padding_mask"]}, training=training)
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
        return self.get_metrics_result()


class BatchSequence(keras.utils.PyDataset):
    """Batches of tokenized examples, reshuffled per epoch from the seed.

    Examples are padded to the nearest bucket length (`num_buckets` fixed
    shapes), so little compute goes to padding and XLA compiles only a few
    programs. Batch `i` of epoch `e` depends only on (seed, e, i).
    """

    def __init__(self, examples: Sequence[TokenizedExample], batch_size: int,
                 sequence_length: int, pad_id: int, seed: int, shuffle: bool = True,
                 num_buckets: int = 4):
        super().__init__()
        if not examples:
            raise ValueError("No examples to batch: the dataset is empty after "
                             "filtering and truncation.")
        self.examples = examples  # a Sequence; may be memory-mapped
        self.batch_size = batch_size
        self.buckets = bucket_lengths(sequence_length, num_buckets)
        self.pad_id, self.seed, self.shuffle = pad_id, seed, shuffle
        self.epoch = 0

    def __len__(self):
        return math.ceil(len(self.examples) / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.examples))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))

    def batch_indices(self, index: int, epoch: int | None = None) -> np.ndarray:
        order = self.order(self.epoch if epoch is None else epoch)
        return order[index * self.batch_size:(index + 1) * self.batch_size]

    def __getitem__(self, index):
        x, _, _ = make_batch([self.examples[i] for i in self.batch_indices(index)],
                             self.buckets, self.pad_id)
        return x

    def num_real_tokens(self, index: int) -> int:
        return sum(len(self.examples[i].token_ids) - 1 for i in self.batch_indices(index))

    def on_epoch_end(self):
        self.epoch += 1


def build_optimizer(cfg: Config, total_steps: int):
    """AdamW as in the design card; no decay on biases, norms, embeddings."""
    optimizer = keras.optimizers.AdamW(learning_rate=cfg.learning_rate,
                                       weight_decay=cfg.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer


def steps_plan(cfg: Config, batches_per_epoch: int) -> tuple[int, int]:
    """(epochs, total optimizer steps) for `cfg.epochs` and `cfg.max_steps`."""
    total = cfg.epochs * batches_per_epoch
    if cfg.max_steps:
        total = cfg.max_steps
    return math.ceil(total / batches_per_epoch), total


def build_trainer(cfg: Config, backbone, total_steps: int) -> CausalLMTrainer:
    trainer = CausalLMTrainer(backbone)
    trainer.compile(optimizer=build_optimizer(cfg, total_steps))
    return trainer


def train(cfg: Config, trainer: CausalLMTrainer, train_data: BatchSequence,
          validation_data: BatchSequence | None, callbacks=()):
    """Runs `fit`, stopping after `cfg.max_steps` when set.

    Returns:
        The Keras History.
    """
    epochs, total = steps_plan(cfg, len(train_data))
    callbacks = list(callbacks) + [StopAtStep(total)]
    return trainer.fit(train_data, validation_data=validation_data, epochs=epochs,
                       callbacks=callbacks, verbose=2 if _quiet() else 1)


def _quiet() -> bool:
    import sys

    return not sys.stdout.isatty()


class StopAtStep(keras.callbacks.Callback):
    """Ends training after a given number of optimizer steps."""

    def __init__(self, total_steps: int):
        super().__init__()
        self.total_steps, self.step = total_steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step >= self.total_steps:
            self.model.stop_training = True
