import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from keras_ft.loss import reference_token_loss_stats, token_loss_stats


@pytest.mark.parametrize("soft_cap", [None, 30.0])
def test_chunked_loss_and_gradient_equal_the_straightforward_ones(soft_cap):
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.normal(size=(3, 21, 8)), jnp.float32)
    matrix = jnp.asarray(rng.normal(size=(50, 8)) * 3, jnp.float32)
    labels = jnp.asarray(rng.integers(0, 50, (3, 21)))
    weights = jnp.asarray(rng.random((3, 21)) > 0.5, jnp.float32)

    def logits_fn(h):
        z = h @ matrix.T
        return jnp.tanh(z / soft_cap) * soft_cap if soft_cap else z

    def mean_loss(stats):
        return stats[:, 0].sum() / stats[:, 1].sum()

    ref = reference_token_loss_stats(hidden, logits_fn, labels, weights)
    fast = jax.jit(lambda h: token_loss_stats(h, matrix, labels, weights, soft_cap, 8))
    np.testing.assert_allclose(fast(hidden), ref, rtol=1e-5, atol=1e-4)
    g_ref = jax.grad(lambda h: mean_loss(reference_token_loss_stats(h, logits_fn, labels,
                                                                     weights)))(hidden)
    g_fast = jax.grad(lambda h: mean_loss(fast(h)))(hidden)
    np.testing.assert_allclose(g_fast, g_ref, rtol=1e-4, atol=1e-6)


def test_reference_equals_keras_sparse_categorical_crossentropy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 7)).astype("float32")
    labels = rng.integers(0, 7, (2, 5))
    weights = (rng.random((2, 5)) > 0.3).astype("float32")
    stats = reference_token_loss_stats(logits, lambda h: h, labels, weights)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    expected = float(loss_fn(labels, logits, sample_weight=weights)) / weights.sum()
    assert float(stats[:, 0].sum() / stats[:, 1].sum()) == pytest.approx(expected, rel=1e-5)
    accuracy = keras.metrics.SparseCategoricalAccuracy()
    accuracy.update_state(labels, logits, sample_weight=weights)
    assert float(stats[:, 2].sum() / stats[:, 1].sum()) == pytest.approx(
        float(accuracy.result()), rel=1e-6)


def test_rows_without_loss_contribute_nothing():
    rng = np.random.default_rng(2)
    hidden = jnp.asarray(rng.normal(size=(1, 16, 4)), jnp.float32)
    matrix = jnp.asarray(rng.normal(size=(9, 4)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 9, (1, 16)))
    weights = jnp.zeros((1, 16)).at[0, 3].set(1.0)
    stats = token_loss_stats(hidden, matrix, labels, weights, None, 4)
    ref = reference_token_loss_stats(hidden, lambda h: h @ matrix.T, labels, weights)
    np.testing.assert_allclose(stats, ref, rtol=1e-5)
    assert float(stats[0, 1]) == 1.0
