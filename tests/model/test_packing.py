"""Packing: several examples per row, each attending only to itself.

The loss and LoRA gradients of a packed batch equal those of the same
examples unpacked (one per row), for every architecture packing admits
(`packing.PACKING_BACKBONES`): Gemma, Gemma 2 (soft caps, sliding window),
Gemma 3 (sliding window shorter than the rows), Llama and Llama 3; without
the segment mask they do not.
"""

import jax
import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_ft.data.batches import BatchSequence, make_batch, make_packed_batch, pack_rows
from keras_ft.data.tokenizer import TokenizedExample
from keras_ft.model.packing import PACKING_BACKBONES, supports_packing
from keras_ft.testing import TINY_BACKBONE

# The equivalence cases of each admitted backbone class: a tiny preset fixture
# or an in-process configuration. Admitting a class needs an entry here.
EQUIVALENCE_CASES = {
    "GemmaBackbone": ("tiny_gemma", "gemma2"),
    "Gemma3Backbone": ("tiny_gemma3",),
    "LlamaBackbone": ("llama",),
    "Llama3Backbone": ("tiny_llama3",),
}


def _example(rng, n, prompt):
    ids = rng.integers(5, 150, n + 1).astype(np.int32)
    return TokenizedExample(ids, np.arange(n + 1) >= prompt, n + 1)


@pytest.fixture(scope="module")
def examples():
    rng = np.random.default_rng(0)
    # 30 tokens: longer than tiny Gemma 3's 16-token sliding window.
    return [_example(rng, n, p) for n, p in ((13, 4), (30, 9), (7, 2), (11, 11))]


def _backbone(request, case):
    import keras_hub

    keras.utils.set_random_seed(0)
    if case == "gemma2":  # GemmaBackbone in Gemma 2's configuration
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
    if case == "llama":  # Llama 2 / TinyLlama
        return keras_hub.models.LlamaBackbone(
            vocabulary_size=160,
            num_layers=2,
            num_query_heads=2,
            num_key_value_heads=1,
            hidden_dim=16,
            intermediate_dim=32,
        )
    return keras_hub.models.Backbone.from_preset(str(request.getfixturevalue(case)))


def _trainer(backbone):
    from keras_ft.train.trainer import CausalLMTrainer

    keras.utils.set_random_seed(0)
    backbone.enable_lora(2)
    for v in backbone.trainable_variables:  # non-zero B: gradients reach A
        v.assign(np.random.default_rng(3).normal(size=v.shape).astype("float32") * 0.05)
    return CausalLMTrainer(backbone, chunk_size=16)


def _loss_and_grads(trainer, x):
    trainable = [v.value for v in trainer.trainable_variables]
    frozen = [v.value for v in trainer.non_trainable_variables]

    def loss(t):
        stats = trainer.stateless_call(t, frozen, x)[0]
        return stats[:, 0].sum() / stats[:, 1].sum()

    return jax.jit(jax.value_and_grad(loss))(trainable)


def test_every_admitted_architecture_has_an_equivalence_case():
    assert sorted(EQUIVALENCE_CASES) == sorted(PACKING_BACKBONES)


@pytest.mark.parametrize(
    "backbone_class, case",
    [
        (name, case)
        for name in PACKING_BACKBONES
        for case in EQUIVALENCE_CASES.get(name, ("missing",))
    ],
)
def test_packed_loss_and_gradients_equal_unpacked(request, backbone_class, case, examples):
    if case == "missing":
        pytest.fail(f"{backbone_class} is admitted for packing without an equivalence case")
    backbone = _backbone(request, case)
    assert type(backbone).__name__ == backbone_class and supports_packing(backbone)
    trainer = _trainer(backbone)
    unpacked, _, _ = make_batch(examples, [32], pad_id=0)
    # Two rows: [13 + 30 tokens], [7 + 11 tokens], padded to 48.
    packed, _, _ = make_packed_batch([examples[:2], examples[2:]], [48], pad_id=0)
    assert packed["token_ids"].shape == (2, 48)
    loss, grads = _loss_and_grads(trainer, unpacked)
    packed_loss, packed_grads = _loss_and_grads(trainer, packed)
    assert float(packed_loss) == pytest.approx(float(loss), rel=1e-5)
    for a, b in zip(packed_grads, grads):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)

    # The segment mask is what makes them equal: attending across examples
    # changes the later examples' loss and gradients.
    leaky = {k: v for k, v in packed.items() if k != "segment_ids"}
    leaky_loss, leaky_grads = _loss_and_grads(trainer, leaky)
    assert float(leaky_loss) != pytest.approx(float(loss), rel=1e-5)
    assert (
        max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(leaky_grads, grads)) > 1e-2
    )


def test_packed_batch_keeps_each_examples_prompt_mask_and_labels(examples):
    x, _, _ = make_packed_batch([examples[:2]], [48], pad_id=0)
    a, b = examples[0], examples[1]
    na, nb = len(a.token_ids) - 1, len(b.token_ids) - 1
    np.testing.assert_array_equal(
        x["token_ids"][0, : na + nb], np.concatenate([a.token_ids[:-1], b.token_ids[:-1]])
    )
    np.testing.assert_array_equal(
        x["labels"][0, : na + nb], np.concatenate([a.token_ids[1:], b.token_ids[1:]])
    )
    np.testing.assert_array_equal(
        x["loss_weights"][0, : na + nb], np.concatenate([a.loss_mask[1:], b.loss_mask[1:]])
    )
    np.testing.assert_array_equal(x["segment_ids"][0], [1] * na + [2] * nb + [0] * (48 - na - nb))
    assert not x["padding_mask"][0, na + nb :].any() and not x["loss_weights"][0, na + nb :].any()


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 64), min_size=1, max_size=80), seed=st.integers(0, 3))
def test_pack_rows_places_every_example_once_within_the_row_length(lengths, seed):
    rows = pack_rows(lengths, 64, seed)
    placed = np.sort(np.concatenate(rows))
    np.testing.assert_array_equal(placed, np.arange(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    # Best fit never leaves two rows that could have been one.
    fill = sorted(sum(lengths[i] for i in row) for row in rows)
    assert len(rows) == 1 or fill[0] + fill[1] > 64
    assert [r.tolist() for r in pack_rows(lengths, 64, seed)] == [r.tolist() for r in rows]


def test_pack_rows_rejects_an_example_longer_than_a_row():
    with pytest.raises(ValueError, match="70 tokens"):
        pack_rows([10, 70], 64, 0)


def test_packed_batch_sequence_serves_every_example_once_per_epoch(examples):
    rng = np.random.default_rng(1)
    many = [_example(rng, int(n), 2) for n in rng.integers(3, 40, 60)]
    data = BatchSequence(many, batch_size=2, sequence_length=64, pad_id=0, seed=5, packing=True)
    plain = BatchSequence(many, batch_size=2, sequence_length=64, pad_id=0, seed=5)
    assert data.batches_per_epoch < plain.batches_per_epoch / 2
    for epoch in (0, 1):
        data.set_span(epoch)
        seen, real = [], 0
        for b in range(len(data)):
            x = data[b]
            assert x["token_ids"].shape[1] in data.buckets
            seen += data.batch_indices(b).tolist()
            real += int(x["padding_mask"].sum())
            assert int(x["padding_mask"].sum()) == data.num_real_tokens(b)
        assert sorted(seen) == list(range(len(many)))
        assert real == sum(len(e.token_ids) - 1 for e in many)
    padded = sum(data[b]["token_ids"].size for b in range(len(data)))
    assert padded < 1.15 * real  # few padded positions left
