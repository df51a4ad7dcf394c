"""Training: the trainer model, its optimizer, the epoch loop, callbacks,
checkpoints and the run directory they are written to."""

from keras_ft.train.checkpoint import CheckpointError, Checkpoints
from keras_ft.train.loop import NonFiniteLossError, steps_plan, train
from keras_ft.train.trainer import CausalLMTrainer, build_trainer, evaluate_tokens

__all__ = [
    "CausalLMTrainer",
    "CheckpointError",
    "Checkpoints",
    "NonFiniteLossError",
    "build_trainer",
    "evaluate_tokens",
    "steps_plan",
    "train",
]
