"""AdamW with warmup and decay, and its exclusions from weight decay."""

from __future__ import annotations

import logging
import math

import keras
from keras import ops

from keras_ft.config import Config

log = logging.getLogger(__name__)


NO_DECAY = ["bias", "scale", "norm", "embeddings"]  # AdamW exclusions by path


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then constant, cosine or linear decay towards 0.

    Keras calls a schedule with its batch counter, which counts every batch
    under gradient accumulation; dividing by `accumulation` gives the
    optimizer step, so warmup and decay are in optimizer steps.
    """

    def __init__(
        self,
        peak: float,
        warmup_steps: int,
        total_steps: int,
        decay: str = "cosine",
        accumulation: int = 1,
    ):
        self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, total_steps
        self.decay, self.accumulation = decay, accumulation

    def __call__(self, iterations):
        step = ops.cast(ops.floor_divide(iterations, self.accumulation), "float32")
        warmup = (step + 1.0) / max(self.warmup_steps, 1)  # step 0 already learns
        progress = ops.clip(
            (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0
        )
        if self.decay == "cosine":
            factor = 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.decay == "linear":
            factor = 1.0 - progress
        else:
            factor = ops.ones_like(progress)
        return self.peak * ops.where(step < self.warmup_steps, warmup, factor)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "decay": self.decay,
            "accumulation": self.accumulation,
        }


def learning_rate_schedule(cfg: Config, total_steps: int) -> float | WarmupDecay:
    """`cfg.learning_rate` itself, or a WarmupDecay when warmup/decay are set."""
    if cfg.lr_schedule == "constant" and not cfg.warmup_steps:
        return cfg.learning_rate
    return WarmupDecay(
        cfg.learning_rate,
        cfg.warmup_steps,
        total_steps,
        cfg.lr_schedule,
        cfg.gradient_accumulation_steps,
    )


def build_optimizer(cfg: Config, total_steps: int):
    """AdamW as in the design card; no decay on biases, norms, embeddings.

    Gradient accumulation and clipping are Keras' own: the optimizer averages
    `gradient_accumulation_steps` batches' gradients, clips their global norm
    to `clip_norm`, then updates.
    """
    accumulation = cfg.gradient_accumulation_steps
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate_schedule(cfg, total_steps),
        weight_decay=cfg.weight_decay,
        global_clipnorm=cfg.clip_norm or None,
        gradient_accumulation_steps=accumulation if accumulation > 1 else None,
    )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer
