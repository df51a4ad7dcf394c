"""Evaluation: base vs tuned on held-out data, text metrics, reports, and
comparisons of several presets."""

from keras_ft.evaluation.heldout import HeldOut, load_heldout
from keras_ft.evaluation.scoring import compare_base_and_tuned

__all__ = ["HeldOut", "compare_base_and_tuned", "load_heldout"]
