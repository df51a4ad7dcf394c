import time

import keras
import keras_hub
import numpy as np
import pytest

from keras_ft.config import Config
from keras_ft.model import (PresetUnavailableError, build_model, count_lora_parameters,
                            enable_lora, load_adapter, load_causal_lm, quantize_backbone,
                            resolve_preset, save_adapter)
from keras_ft.testing import TINY_BACKBONE


def _lora_count(rank, query_heads, kv_heads, hidden, head_dim, layers):
    # EinsumDense LoRA: A has the kernel's shape with the last axis -> rank,
    # B is [rank, last axis]. query kernel [heads, hidden, head_dim].
    query = rank * (query_heads * hidden) + rank * head_dim
    value = rank * (kv_heads * hidden) + rank * head_dim
    return layers * (query + value)


def test_trainable_parameters_match_the_analytic_count(tiny_gemma):
    causal_lm = build_model(Config(preset=str(tiny_gemma), lora_rank=4))
    b = TINY_BACKBONE
    assert count_lora_parameters(causal_lm.backbone) == _lora_count(
        4, b["num_query_heads"], b["num_key_value_heads"], b["hidden_dim"], b["head_dim"],
        b["num_layers"])
    frozen = [w for w in causal_lm.backbone.weights if "lora" not in w.path]
    assert not any(w.trainable for w in frozen)


def test_all_targets_cover_attention_and_mlp(tiny_gemma):
    causal_lm = build_model(Config(preset=str(tiny_gemma), lora_targets="all"))
    names = {w.path.split("/")[-2] for w in causal_lm.backbone.trainable_weights}
    assert {"query", "key", "value", "attention_output", "ffw_gating", "ffw_gating_2",
            "ffw_linear"} <= names


def _logits(causal_lm, token_ids):
    x = {"token_ids": token_ids, "padding_mask": np.ones_like(token_ids, bool)}
    return np.asarray(causal_lm.predict_on_batch(x))


def test_saved_adapter_reproduces_the_tuned_logits(tiny_gemma3, tmp_path):
    cfg = Config(preset=str(tiny_gemma3), lora_rank=2, lora_alpha=8.0, lora_targets="all")
    tuned = build_model(cfg)
    tuned.preprocessor = None
    for w in tuned.backbone.trainable_weights:  # stand-in for training
        w.assign(np.random.default_rng(0).normal(size=w.shape).astype("float32") * 0.1)
    token_ids = np.array([[2, 10, 11, 12, 13, 14]], np.int32)
    expected = _logits(tuned, token_ids)
    save_adapter(tuned, tmp_path, cfg)

    fresh = keras_hub.models.CausalLM.from_preset(str(tiny_gemma3))
    fresh.preprocessor = None
    base = _logits(fresh, token_ids)
    meta = load_adapter(fresh, tmp_path)
    assert meta["lora_alpha"] == 8.0 and meta["lora_rank"] == 2
    reloaded = _logits(fresh, token_ids)
    np.testing.assert_allclose(reloaded, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(reloaded - base).max() > 1e-3  # the adapter changed the model


def test_lora_alpha_scales_the_update(tiny_gemma):
    outputs = {}
    for alpha in (4.0, 8.0):
        causal_lm = build_model(Config(preset=str(tiny_gemma), lora_rank=4, lora_alpha=alpha))
        causal_lm.preprocessor = None
        for w in causal_lm.backbone.trainable_weights:
            w.assign(np.full(w.shape, 0.05, "float32"))
        query = [l for l in causal_lm.backbone._flatten_layers() if l.name == "query"][0]
        outputs[alpha] = np.asarray(query(np.ones((1, 3, 16), "float32")))
        base = np.einsum("btd,ndh->btnh", np.ones((1, 3, 16)), np.asarray(query._kernel))  # without LoRA
    np.testing.assert_allclose(outputs[8.0] - base, 2 * (outputs[4.0] - base), rtol=1e-4)


def test_unknown_preset_name_suggests_close_matches():
    with pytest.raises(ValueError, match="Did you mean 'gemma_2b_en'"):
        resolve_preset("gemma_2b_enn")


def test_hub_preset_fails_fast_and_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    monkeypatch.setattr("keras_ft.model._host_reachable", lambda host, timeout=3.0: False)
    start = time.monotonic()
    with pytest.raises(PresetUnavailableError) as error:
        resolve_preset("gemma_2b_en")
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert "KAGGLE_USERNAME" in message and "local preset directory" in message
    assert "embedded:gemma3_270m" in message


def test_cached_kaggle_preset_is_used_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    monkeypatch.setattr("keras_ft.model._host_reachable", lambda host, timeout=3.0: False)
    (tmp_path / "models/keras/gemma/keras/gemma_2b_en/3").mkdir(parents=True)
    handle = keras_hub.models.CausalLM.presets["gemma_2b_en"]["kaggle_handle"]
    if handle.rstrip("/").split("/")[-1] != "3":
        (tmp_path / "models/keras/gemma/keras/gemma_2b_en" /
         handle.rstrip("/").split("/")[-1]).mkdir()
    assert resolve_preset("gemma_2b_en") == "gemma_2b_en"


def test_local_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a keras-hub preset"):
        resolve_preset(str(tmp_path))


def test_attention_targets_enable_each_projection_once(tiny_gemma3):
    causal_lm = build_model(Config(preset=str(tiny_gemma3), lora_targets="attention"))
    names = [w.path.split("/")[-2] for w in causal_lm.backbone.trainable_weights]
    assert sorted(set(names)) == ["attention_output", "key", "query", "value"]
    assert len(names) == 2 * 4 * TINY_BACKBONE["num_layers"]  # A and B per layer


def _base_weights(causal_lm):
    return {w.path: np.asarray(w.numpy()) for w in causal_lm.backbone.weights
            if "lora" not in w.path}


def _eager_logits(causal_lm, token_ids):
    return np.asarray(causal_lm({"token_ids": token_ids,
                                 "padding_mask": np.ones_like(token_ids, bool)}))


def _trainer_loss(causal_lm, cfg, token_ids):
    from keras_ft.train import build_trainer

    trainer = build_trainer(cfg, causal_lm.backbone, total_steps=10)
    weights = np.ones(token_ids[:, 1:].shape, "float32")
    weights[:, :2] = 0.0  # a prompt
    stats = np.asarray(trainer({"token_ids": token_ids[:, :-1],
                                "padding_mask": np.ones_like(token_ids[:, :-1], bool),
                                "labels": token_ids[:, 1:], "loss_weights": weights}))
    return stats[:, 0].sum() / stats[:, 1].sum()


@pytest.mark.parametrize("architecture, dtype, quantize", [
    ("tiny_gemma", "float32", ""), ("tiny_gemma3", "float32", ""),
    ("tiny_llama3", "float32", ""), ("tiny_gemma3", "bfloat16", ""),
    ("tiny_gemma", "mixed_bfloat16", "int8"), ("tiny_gemma3", "float32", "int4")])
def test_build_model_equals_from_preset(request, architecture, dtype, quantize):
    preset = str(request.getfixturevalue(architecture))
    cfg = Config(preset=preset, dtype=dtype, quantize=quantize, lora_rank=2,
                 lora_targets="all")
    keras.utils.set_random_seed(0)
    built = build_model(cfg)
    keras.utils.set_random_seed(0)
    reference = keras_hub.models.CausalLM.from_preset(preset, dtype=dtype)
    quantize_backbone(reference.backbone, quantize)
    enable_lora(reference.backbone, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)

    # The same random LoRA init too: a seeded run trains exactly as before.
    assert len(built.backbone.trainable_weights) == len(reference.backbone.trainable_weights)
    for w, v in zip(built.backbone.trainable_weights, reference.backbone.trainable_weights):
        assert w.path == v.path
        np.testing.assert_array_equal(np.asarray(w.numpy()), np.asarray(v.numpy()))
    expected, actual = _base_weights(reference), _base_weights(built)
    assert sorted(actual) == sorted(expected)
    for path, value in expected.items():
        assert actual[path].dtype == value.dtype, path
        np.testing.assert_array_equal(actual[path], value, err_msg=path)
    assert built.backbone.dtype_policy.name == reference.backbone.dtype_policy.name
    token_ids = np.array([[2, 10, 11, 12, 13, 14, 15, 16]], np.int32)
    np.testing.assert_array_equal(_eager_logits(built, token_ids),
                                  _eager_logits(reference, token_ids))
    assert _trainer_loss(built, cfg, token_ids) == _trainer_loss(reference, cfg, token_ids)
    with keras.StatelessScope():  # on exit Keras initialises pending variables:
        pass                      # none of the loaded ones may still be pending
    after = _base_weights(built)
    assert all(np.array_equal(after[path], value) for path, value in expected.items())


def test_load_causal_lm_never_runs_the_backbone_initializers(tiny_gemma3, monkeypatch):
    initialized = []
    variable_class = type(keras.Variable(0.0))
    original = variable_class._initialize_with_initializer

    def spy(self, initializer):
        initialized.append(self)
        return original(self, initializer)

    monkeypatch.setattr(variable_class, "_initialize_with_initializer", spy)
    reference = keras_hub.models.CausalLM.from_preset(str(tiny_gemma3), dtype="float32")
    backbone_ids = {id(v) for v in reference.backbone.variables}
    # The spy sees from_preset randomly initialise every backbone weight.
    assert backbone_ids <= {id(v) for v in initialized}
    initialized.clear()
    causal_lm = load_causal_lm(str(tiny_gemma3), dtype="float32")
    backbone_ids = {id(v) for v in causal_lm.backbone.variables}
    assert not backbone_ids & {id(v) for v in initialized}
    assert all(v._value is not None for v in causal_lm.backbone.variables)
