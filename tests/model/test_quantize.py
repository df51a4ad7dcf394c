import keras
import keras_hub
import numpy as np
import pytest
from helpers import synthetic_examples

from keras_ft.config import Config
from keras_ft.data.batches import BatchSequence
from keras_ft.model.causal_lm import build_model, quantize_backbone
from keras_ft.model.lora import load_adapter, save_adapter
from keras_ft.train.loop import train
from keras_ft.train.trainer import build_trainer

TOKEN_IDS = np.array([[2, 10, 11, 12, 13, 14, 15, 16]], np.int32)


def logits(causal_lm):
    # Eagerly: op by op, compiled once per session for every model (a jitted
    # predict would compile again for each model instance).
    x = {"token_ids": TOKEN_IDS, "padding_mask": np.ones_like(TOKEN_IDS, bool)}
    return np.asarray(causal_lm(x))


# Four rows of 16 random ids: 64 positions for the closeness bounds below.
BATCH = np.random.default_rng(0).integers(5, 150, (4, 16)).astype(np.int32)
# Measured on tiny_gemma (2 layers, hidden 16, random weights): int8 relative
# error 0.018 with top-1 agreement 0.98; int4 0.16 and 0.89. Every quantized
# kernel scale off by x1.25 gives 0.41 / 0.61 (int8) and 0.38 / 0.56 (int4).
CLOSENESS = {"int8": (0.05, 0.95), "int4": (0.25, 0.80)}  # max rel. error, min top-1


def closeness(causal_lm, reference):
    """(relative L2 error of the logits, top-1 agreement) on BATCH."""
    x = {"token_ids": BATCH, "padding_mask": np.ones_like(BATCH, bool)}
    out = np.asarray(causal_lm(x))
    error = float(np.linalg.norm(out - reference) / np.linalg.norm(reference))
    return error, float((out.argmax(-1) == reference.argmax(-1)).mean())


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_logits_stay_close_to_the_float_models(tiny_gemma, mode):
    max_error, min_top1 = CLOSENESS[mode]
    base = keras_hub.models.CausalLM.from_preset(str(tiny_gemma))
    x = {"token_ids": BATCH, "padding_mask": np.ones_like(BATCH, bool)}
    reference = np.asarray(base(x))
    tuned = build_model(Config(preset=str(tiny_gemma), quantize=mode, lora_rank=4))
    error, top1 = closeness(tuned, reference)
    assert error < max_error and top1 >= min_top1, (mode, error, top1)
    # The bounds catch a quantization that is off: every scale 25 % too large.
    quantized = [
        layer
        for layer in tuned.backbone._flatten_layers()
        if getattr(layer, "quantization_mode", None) == mode
    ]
    assert len(quantized) == 2 * 7  # q, k, v, o, gate, up, down per block
    for layer in quantized:
        layer.kernel_scale.assign(np.asarray(layer.kernel_scale) * 1.25)
    broken_error, broken_top1 = closeness(tuned, reference)
    assert broken_error > max_error and broken_top1 < min_top1, (broken_error, broken_top1)


def weight_bytes(layer):
    """Bytes of the base weights (LoRA kernels left out)."""
    return sum(np.asarray(w.value).nbytes for w in layer.weights if "lora_kernel" not in w.path)


@pytest.mark.parametrize("mode, rank, alpha", [("int8", 4, 8.0), ("int4", 64, 16.0)])
def test_lora_trains_on_a_quantized_base_and_reapplies_to_a_fresh_one(
    tiny_gemma, tmp_path, mode, rank, alpha
):
    cfg = Config(
        preset=str(tiny_gemma),
        quantize=mode,
        lora_rank=rank,
        lora_alpha=alpha,
        lora_targets="all",
        max_steps=2,
        batch_size=2,
        learning_rate=1e-2,
        output_dir=str(tmp_path),
    )
    keras.utils.set_random_seed(0)
    tuned = build_model(cfg)
    backbone = tuned.backbone
    layers = {layer.name: layer for layer in backbone._flatten_layers()}
    for name in ("query", "key", "attention_output", "ffw_gating", "ffw_linear"):
        assert layers[name].quantization_mode == mode
    assert layers["token_embedding"].quantization_mode is None  # the head stays float
    assert layers["query"]._kernel.dtype == "int8"  # int4 is packed two per byte
    assert not any(w.trainable for w in backbone.non_trainable_weights)
    assert all(w.dtype == "float32" and "lora_kernel" in w.path for w in backbone.trainable_weights)
    data = BatchSequence(synthetic_examples(4), 2, 16, 0, 0)
    trainer = build_trainer(cfg, backbone, 2)
    assert trainer.use_chunked_loss
    history = train(cfg, trainer, data, None, tmp_path)
    assert np.isfinite(history.history["loss"]).all()
    save_adapter(tuned, tmp_path / "adapter", cfg)
    expected = logits(tuned)

    # A fresh float base: load_adapter reads rank, alpha, targets and the
    # quantization from adapter_config.json; nothing is entered again.
    fresh = keras_hub.models.CausalLM.from_preset(str(tiny_gemma))
    float_bytes = weight_bytes(fresh.backbone)
    meta = load_adapter(fresh, tmp_path / "adapter")
    assert (meta["quantize"], meta["lora_rank"], meta["lora_alpha"]) == (mode, rank, alpha)
    embedding_bytes = weight_bytes(fresh.backbone.token_embedding)
    blocks = weight_bytes(fresh.backbone) - embedding_bytes
    assert blocks < {"int8": 0.45, "int4": 0.35}[mode] * (float_bytes - embedding_bytes)
    np.testing.assert_allclose(logits(fresh), expected, rtol=1e-5, atol=1e-5)

    for w in fresh.backbone.trainable_weights:  # LoRA off: the quantized base alone
        if w.path.endswith("lora_kernel_b"):
            w.assign(np.zeros(w.shape, "float32"))
    assert np.abs(logits(fresh) - expected).max() > 1e-4  # the adapter matters

    quantize_backbone(fresh.backbone, mode)  # already so: nothing to do
    other = {"int8": "int4", "int4": "int8"}[mode]
    with pytest.raises(ValueError, match=rf"already quantized to \['{mode}'\].*'{other}'"):
        quantize_backbone(fresh.backbone, other)
