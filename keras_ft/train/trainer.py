"""The loss-efficient training model around a causal LM's backbone.

`CausalLMTrainer` shares the causal LM's backbone (and so its LoRA weights)
and returns, instead of `[batch, length, vocab]` logits, per-example loss
statistics computed by `keras_ft.model.loss`. The loss is the mean
cross-entropy over loss-bearing tokens, so padding never changes it (Keras'
`sum_over_batch_size` would divide by padded positions too).
"""

from __future__ import annotations

import math

import jax
import keras
import numpy as np
from keras import ops

from keras_ft.config import Config
from keras_ft.model.loss import (
    LossStats,
    output_projection,
    reference_token_loss_stats,
    token_loss_stats,
)
from keras_ft.model.packing import check_packing, segment_attention
from keras_ft.train.optimizer import build_optimizer


class TokenAccuracy(keras.metrics.Metric):
    """Next-token accuracy over loss-bearing tokens (weighted, as keras-hub's)."""

    def __init__(self, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable((), initializer="zeros", name="correct")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, stats):
        totals = LossStats.summed(stats)
        self.correct.assign_add(totals.correct_sum)
        self.count.assign_add(totals.weight_sum)

    def result(self):
        return self.correct / ops.maximum(self.count, 1.0)


class BatchLoss(keras.metrics.Metric):
    """The latest batch's loss (Keras' `loss` is a running mean per epoch)."""

    def __init__(self, name="batch_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable((), initializer="zeros", name="value")

    def update_state(self, stats):
        self.value.assign(LossStats.summed(stats).mean_loss())

    def result(self):
        return ops.convert_to_tensor(self.value)


class CausalLMTrainer(keras.Model):
    """Trains a keras-hub backbone on `data.batches.BatchSequence` batches
    (`make_packed_batch`: token_ids, padding_mask, labels, loss_weights and,
    packed, segment_ids); returns per-example `LossStats`, not logits."""

    def __init__(self, backbone, use_chunked_loss: bool = True, chunk_size: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.chunk_size = chunk_size
        self.use_chunked_loss = (
            use_chunked_loss
            and keras.backend.backend() == "jax"
            and not getattr(backbone.token_embedding, "quantization_mode", None)
        )
        self.token_accuracy = TokenAccuracy()
        self.batch_loss = BatchLoss()
        self._eval_forward = None  # made by `eval_forward`
        self.built = True  # the backbone is built; this wrapper adds no weights

    def call(self, inputs, training=False):
        backbone_inputs = {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}
        if "segment_ids" in inputs:  # packed rows: attend within each example
            with segment_attention(self.backbone, inputs["segment_ids"]):
                hidden = self.backbone(backbone_inputs, training=training)
        else:
            hidden = self.backbone(backbone_inputs, training=training)
        labels, weights = inputs["labels"], inputs["loss_weights"]
        if self.use_chunked_loss:
            matrix, soft_cap = output_projection(self.backbone)
            return token_loss_stats(
                hidden, ops.convert_to_tensor(matrix), labels, weights, soft_cap, self.chunk_size
            )
        head = lambda h: self.backbone.token_embedding(h, reverse=True)
        return reference_token_loss_stats(hidden, head, labels, weights)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return LossStats.summed(y_pred).mean_loss()  # y_pred: the per-example stats

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.token_accuracy.update_state(y_pred)
        self.batch_loss.update_state(y_pred)
        return self.get_metrics_result()

    def eval_forward(self):
        """The jitted forward pass of `evaluate_tokens`: (trainable values,
        non-trainable values, x) -> per-example `LossStats` columns.

        Made once per trainer and kept: a new `jax.jit(lambda)` per call would
        compile every shape again (seconds to minutes each on CPU). The
        variables are arguments, so it stays exact as the weights train.
        """
        if self._eval_forward is None:
            self._eval_forward = jax.jit(lambda t, f, x: self.stateless_call(t, f, x)[0])
        return self._eval_forward


def build_trainer(cfg: Config, backbone, total_steps: int) -> CausalLMTrainer:
    if cfg.packing:
        check_packing(backbone)  # only architectures proven equal to unpacked
    trainer = CausalLMTrainer(backbone)
    trainer.compile(optimizer=build_optimizer(cfg, total_steps))
    return trainer


def evaluate_tokens(trainer: CausalLMTrainer, dataset) -> dict[str, float]:
    """Exact token-level metrics of `trainer` on every batch of `dataset`.

    The loss is summed over all loss-bearing tokens and divided once, so it is
    not a mean of per-batch means. The forward pass is one jitted
    `stateless_call` (Keras' `predict_on_batch` costs seconds more per call),
    made once per trainer (`CausalLMTrainer.eval_forward`): periodic
    evaluations reuse its compiled shapes. Under a mesh the weights stay where
    the distribution placed them; in a multi-host run each process hands in
    its rows of every batch (`BatchSequence(shard=...)`) and all of them get
    the whole batch's statistics back (`_global_rows`, `_gather_rows`).

    Returns:
        {"loss", "perplexity", "accuracy", "num_tokens"}.
    """
    trainable = [v.value for v in trainer.trainable_variables]
    frozen = [v.value for v in trainer.non_trainable_variables]
    forward = trainer.eval_forward()
    totals = np.zeros(len(LossStats._fields))  # float64 sums over the whole dataset
    for index in range(len(dataset)):
        stats = forward(trainable, frozen, _global_rows(dataset[index]))
        totals += _gather_rows(stats).sum(axis=0)
    total = LossStats(*totals)
    loss = total.loss_sum / max(total.weight_sum, 1.0)
    return {
        "loss": float(loss),
        "perplexity": float(math.exp(min(loss, 50.0))),
        "accuracy": float(total.correct_sum / max(total.weight_sum, 1.0)),
        "num_tokens": int(total.weight_sum),
    }


def _global_rows(x: dict) -> dict:
    """A multi-host process's rows of a batch -> the global batch, laid out
    along the data axis as `fit` lays it (one process: `x` as it is)."""
    distribution = keras.distribution.distribution()
    if distribution is None or jax.process_count() == 1:
        return x
    return {
        key: jax.make_array_from_process_local_data(
            distribution.get_data_layout(value.shape).backend_layout, value
        )
        for key, value in x.items()
    }


def _gather_rows(stats) -> np.ndarray:
    """Per-example statistics as one host array on every process (a
    collective in a multi-host run, where no process holds all rows)."""
    if jax.process_count() == 1:
        return np.asarray(stats)
    from jax.experimental import multihost_utils  # heavy: jax.experimental, multi-host only

    return np.asarray(multihost_utils.process_allgather(stats, tiled=True))
