"""Bucketed batches keep XLA to a fixed set of shapes: no recompiling per step.

Counts `jit(train_step)` compilations through `jax.log_compiles` over two
epochs of `fit` on a tiny Gemma 3 and examples of many lengths.
"""

import contextlib
import logging

import jax
import keras
import numpy as np
import pytest

from keras_ft.data.tokenizer import TokenizedExample


class CompileLog(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def count(self, name):
        return sum(m.startswith(f"Finished XLA compilation of jit({name})") for m in self.messages)


@contextlib.contextmanager
def capture_jax_log(handler: logging.Handler):
    """Routes JAX's debug log (compilation messages) to `handler`."""
    logger = logging.getLogger("jax")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.mark.parametrize("packing", [False, True])
def test_train_step_compiles_at_most_once_per_bucket(tiny_gemma3, packing):
    import keras_hub

    from keras_ft.data.batches import BatchSequence
    from keras_ft.train.trainer import CausalLMTrainer

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.Backbone.from_preset(str(tiny_gemma3))
    backbone.enable_lora(2)
    trainer = CausalLMTrainer(backbone, chunk_size=16)
    trainer.compile(optimizer=keras.optimizers.AdamW(1e-3))
    rng = np.random.default_rng(0)
    examples = []
    for n in (3, 5, 9, 14, 15, 16, 17, 22, 31, 32, 7, 11):  # 12 distinct lengths
        mask = np.arange(n + 1) > n // 3
        examples.append(TokenizedExample(rng.integers(5, 150, n + 1).astype(np.int32), mask, n + 1))
    data = BatchSequence(
        examples, batch_size=2, sequence_length=32, pad_id=0, seed=0, num_buckets=2, packing=packing
    )
    assert len(data.buckets) <= 2 and data.buckets[-1] >= 32  # fitted, covers the longest
    assert data.batches_per_epoch == (3 if packing else 6)  # 182 tokens: 6 rows of 32

    log = CompileLog()
    with capture_jax_log(log), jax.log_compiles(True):
        trainer.fit(data, epochs=2, verbose=0)
    compiles = log.count("train_step")
    assert 1 <= compiles <= len(data.buckets), log.messages
