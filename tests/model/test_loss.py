import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from keras_ft.config import LORA_TARGET_SETS, Config
from keras_ft.data.batches import make_batch
from keras_ft.data.tokenizer import TokenizedExample
from keras_ft.model.lora import enable_lora, lora_target_names
from keras_ft.model.loss import (
    LossStats,
    output_projection,
    reference_token_loss_stats,
    token_loss_stats,
)
from keras_ft.testing import TINY_BACKBONE


def test_loss_stats_name_the_columns_both_loss_functions_return():
    # Example 0: 2 loss tokens (one predicted right); example 1: 1 token, wrong.
    labels = jnp.asarray([[1, 2, 3], [0, 1, 0]])
    weights = jnp.asarray([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    hidden = jax.nn.one_hot(jnp.asarray([[1, 0, 3], [0, 2, 0]]), 4) * 10.0  # logits: argmax
    ref = reference_token_loss_stats(hidden, lambda h: h, labels, weights)
    fast = token_loss_stats(hidden, jnp.eye(4), labels, weights, chunk_size=8)
    for stats in (ref, fast):
        total = LossStats.summed(stats)
        assert float(total.weight_sum) == 3.0 and float(total.correct_sum) == 1.0
        loss = -jax.nn.log_softmax(hidden, axis=-1)
        picked = jnp.take_along_axis(loss, labels[..., None], axis=-1)[..., 0]
        assert float(total.loss_sum) == pytest.approx(float((picked * weights).sum()), rel=1e-5)
        assert float(total.mean_loss()) == pytest.approx(float(total.loss_sum) / 3.0)
    assert float(LossStats.summed(jnp.zeros((2, 3))).mean_loss()) == 0.0  # no loss tokens


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
    g_ref = jax.grad(
        lambda h: mean_loss(reference_token_loss_stats(h, logits_fn, labels, weights))
    )(hidden)
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
        float(accuracy.result()), rel=1e-6
    )


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


@pytest.mark.parametrize("soft_cap", [None, 30.0])
def test_chunked_gradient_wrt_a_trained_head_equals_the_straightforward_one(soft_cap):
    # A tied head under LoRA: matrix = frozen + a @ b, and a, b train.
    rng = np.random.default_rng(3)
    hidden = jnp.asarray(rng.normal(size=(3, 21, 8)), jnp.float32)
    frozen = jnp.asarray(rng.normal(size=(50, 8)) * 3, jnp.float32)
    a = jnp.asarray(rng.normal(size=(50, 2)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(2, 8)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 50, (3, 21)))
    weights = jnp.asarray(rng.random((3, 21)) > 0.5, jnp.float32)
    # Unequal per-example factors: each row's loss cotangent differs.
    example_factor = jnp.asarray([0.5, 1.0, 2.0])

    def objective(stats):
        return (stats[:, 0] * example_factor).sum() / stats[:, 1].sum()

    def ref(h, a, b):
        matrix = frozen + a @ b

        def logits_fn(x):
            z = x @ matrix.T
            return jnp.tanh(z / soft_cap) * soft_cap if soft_cap else z

        return objective(reference_token_loss_stats(h, logits_fn, labels, weights))

    def fast(h, a, b):
        return objective(token_loss_stats(h, frozen + a @ b, labels, weights, soft_cap, 8))

    value_ref, g_ref = jax.value_and_grad(ref, argnums=(0, 1, 2))(hidden, a, b)
    value, g_fast = jax.jit(jax.value_and_grad(fast, argnums=(0, 1, 2)))(hidden, a, b)
    assert float(value) == pytest.approx(float(value_ref), rel=1e-5)
    for name, x, y in zip(("hidden", "a", "b"), g_fast, g_ref):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=name)


# Every kind of `lora_targets` the CLI accepts: the named sets, and
# comma-separated layer lists, here the tied embedding (which is also the
# output head) alone and every LoRA-able layer at once.
TARGETS = LORA_TARGET_SETS + ("token_embedding,", "every layer")


def _backbone(request, architecture):
    """A tiny backbone; Gemma 2 (soft-capped logits) and tied Llama 3 built here."""
    import keras_hub

    keras.utils.set_random_seed(0)
    if architecture == "gemma2":  # GemmaBackbone with Gemma 2's soft caps
        return keras_hub.models.GemmaBackbone(
            vocabulary_size=160,
            final_logit_soft_cap=30.0,
            attention_logit_soft_cap=50.0,
            query_head_dim_normalize=False,
            use_post_ffw_norm=True,
            use_post_attention_norm=True,
            use_sliding_window_attention=True,
            sliding_window_size=16,
            **TINY_BACKBONE,
        )
    if architecture == "llama3_tied":  # Llama 3.2 1B/3B tie their embeddings
        return keras_hub.models.Llama3Backbone(
            vocabulary_size=160,
            num_layers=2,
            num_query_heads=2,
            num_key_value_heads=1,
            hidden_dim=16,
            intermediate_dim=32,
            tie_word_embeddings=True,
        )
    preset = request.getfixturevalue(f"tiny_{architecture}")
    return keras_hub.models.Backbone.from_preset(str(preset))


def _lora_layer(variable):
    """The layer name of a LoRA variable's path, e.g. decoder_block_0/query/lora_kernel_a."""
    return variable.path.split("/")[-2]


@pytest.mark.parametrize("architecture", ["gemma", "gemma2", "gemma3", "llama3", "llama3_tied"])
def test_trainer_loss_and_lora_gradients_equal_full_logits(request, architecture):
    """For every target set: the trainer's chunked loss and LoRA gradients equal
    its full-logits reference path (`reference_token_loss_stats`).

    One compile per architecture: LoRA is enabled on the union of all target
    sets; for target set T, LoRA weights outside T are zero (the model is then
    exactly LoRA on T) and frozen, and the gradient is taken w.r.t. T's. The
    head's LoRA is thus differentiated only where T holds `token_embedding`,
    which is what selects the loss's frozen-head or trained-head gradient.
    """
    from keras_ft.train.trainer import CausalLMTrainer

    backbone = _backbone(request, architecture)
    every = ",".join(lora_target_names(backbone, "all") + ["token_embedding"])
    enable_lora(backbone, 2, 4.0, every)
    rng = np.random.default_rng(3)
    values = [
        rng.normal(size=v.shape).astype("float32") * 0.05  # non-zero A and B
        for v in backbone.trainable_variables
    ]
    examples = [
        TokenizedExample(rng.integers(5, 150, n + 1).astype(np.int32), np.arange(n + 1) >= p, n + 1)
        for n, p in ((13, 4), (30, 9), (7, 2))
    ]
    x, _, _ = make_batch(examples, [32], pad_id=0)
    fast = CausalLMTrainer(backbone, chunk_size=16)
    reference = CausalLMTrainer(backbone, use_chunked_loss=False)
    assert fast.use_chunked_loss and not reference.use_chunked_loss
    lora = list(fast.trainable_variables)
    frozen = [v.value for v in fast.non_trainable_variables]
    picks = {}
    for targets in TARGETS:
        names = every if targets == "every layer" else targets
        Config(lora_targets=names, data=("train.jsonl",))  # the CLI accepts it
        layers = set(lora_target_names(backbone, names))
        picks[targets] = [i for i, v in enumerate(lora) if _lora_layer(v) in layers]
        assert picks[targets], targets
    assert any(_lora_layer(lora[i]) == "token_embedding" for i in picks["token_embedding,"])

    def loss_and_grads(trainer, pick):
        def loss(trained):
            weights = [jnp.zeros(v.shape, v.dtype) for v in lora]  # LoRA off outside T
            for i, w in zip(pick, trained):
                weights[i] = w
            stats = trainer.stateless_call(weights, frozen, x)[0]
            return stats[:, 0].sum() / stats[:, 1].sum()

        return jax.value_and_grad(loss)([jnp.asarray(values[i]) for i in pick])

    results = jax.jit(
        lambda: {
            t: (loss_and_grads(fast, pick), loss_and_grads(reference, pick))
            for t, pick in picks.items()
        }
    )()
    for targets, ((loss, grads), (ref_loss, ref_grads)) in results.items():
        assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5), targets
        for i, a, b in zip(picks[targets], grads, ref_grads):
            np.testing.assert_allclose(
                a, b, rtol=1e-4, atol=1e-6, err_msg=f"{targets}: {lora[i].path}"
            )
    if architecture == "gemma2":  # the soft cap is on the path under test
        assert output_projection(backbone)[1] == 30.0
