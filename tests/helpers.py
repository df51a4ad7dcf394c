"""Test data shared by several test folders (tests/ is on sys.path via conftest.py)."""

import numpy as np

from keras_ft.data.tokenizer import TokenizedExample


def synthetic_examples(n, length=12, loss_tokens=6, seed=0):
    """Equal lengths and equal loss-bearing counts: every batch's mean loss then
    weighs each token alike, whatever the batch size."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(length, bool)
    mask[-loss_tokens:] = True
    return [
        TokenizedExample(rng.integers(4, 150, length).astype(np.int32), mask, length)
        for _ in range(n)
    ]
