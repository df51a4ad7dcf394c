import logging
import socket
import time
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest

from keras_ft.config import Config
from keras_ft.model.causal_lm import build_model, load_causal_lm, quantize_backbone
from keras_ft.model.lora import count_lora_parameters, enable_lora, load_adapter, save_adapter
from keras_ft.model.presets import PresetUnavailableError, check_sequence_length, resolve_preset
from keras_ft.preset_files import preset_context_length
from keras_ft.testing import TINY_BACKBONE, make_tiny_preset


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
        4,
        b["num_query_heads"],
        b["num_key_value_heads"],
        b["hidden_dim"],
        b["head_dim"],
        b["num_layers"],
    )
    frozen = [w for w in causal_lm.backbone.weights if "lora" not in w.path]
    assert not any(w.trainable for w in frozen)


def test_all_targets_cover_attention_and_mlp(tiny_gemma):
    causal_lm = build_model(Config(preset=str(tiny_gemma), lora_targets="all"))
    names = {w.path.split("/")[-2] for w in causal_lm.backbone.trainable_weights}
    assert {
        "query",
        "key",
        "value",
        "attention_output",
        "ffw_gating",
        "ffw_gating_2",
        "ffw_linear",
    } <= names


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


def test_load_causal_lm_applies_the_adapter_in_the_dtype_asked(tiny_gemma3, tmp_path):
    cfg = Config(preset=str(tiny_gemma3), lora_rank=2, lora_targets="all")
    tuned = build_model(cfg)
    for w in tuned.backbone.trainable_weights:  # stand-in for training
        w.assign(np.random.default_rng(0).normal(size=w.shape).astype("float32") * 0.1)
    save_adapter(tuned, tmp_path, cfg)
    token_ids = np.array([[2, 10, 11, 12, 13, 14]], np.int32)
    tuned.preprocessor = None
    expected = _logits(tuned, token_ids)

    loaded = load_causal_lm(str(tiny_gemma3), dtype="float32", adapter=tmp_path)
    loaded.preprocessor = None
    assert loaded.backbone._lora_enabled_layers == tuned.backbone._lora_enabled_layers
    np.testing.assert_allclose(_logits(loaded, token_ids), expected, rtol=1e-5, atol=1e-5)
    half = load_causal_lm(str(tiny_gemma3), dtype="bfloat16", adapter=tmp_path)
    assert {w.dtype for w in half.backbone.weights if "lora" not in w.path} == {"bfloat16"}
    plain = load_causal_lm(str(tiny_gemma3))
    assert not any("lora" in w.path for w in plain.backbone.weights)


def test_lora_alpha_scales_the_update(tiny_gemma):
    outputs = {}
    for alpha in (4.0, 8.0):
        causal_lm = build_model(Config(preset=str(tiny_gemma), lora_rank=4, lora_alpha=alpha))
        causal_lm.preprocessor = None
        for w in causal_lm.backbone.trainable_weights:
            w.assign(np.full(w.shape, 0.05, "float32"))
        query = [x for x in causal_lm.backbone._flatten_layers() if x.name == "query"][0]
        outputs[alpha] = np.asarray(query(np.ones((1, 3, 16), "float32")))
        base = np.einsum(
            "btd,ndh->btnh", np.ones((1, 3, 16)), np.asarray(query._kernel)
        )  # without LoRA
    np.testing.assert_allclose(outputs[8.0] - base, 2 * (outputs[4.0] - base), rtol=1e-4)


def test_unknown_preset_name_suggests_close_matches():
    with pytest.raises(ValueError, match="Did you mean 'gemma_2b_en'"):
        resolve_preset("gemma_2b_enn")


def _slow_getaddrinfo(*args, **kwargs):
    time.sleep(10)  # a resolver that hangs: socket timeouts do not bound this
    raise socket.gaierror("the slow resolver gave up")


def test_hub_preset_fails_fast_with_a_resolver_that_hangs(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    monkeypatch.delenv("KERAS_FT_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "getaddrinfo", _slow_getaddrinfo)
    start = time.monotonic()
    with pytest.raises(PresetUnavailableError) as error:
        resolve_preset("gemma_2b_en")
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert "kaggle.com is not reachable (no answer within 3 s)" in message
    assert "KAGGLE_USERNAME" in message and "local preset directory" in message
    assert "embedded:gemma3_270m" in message


def test_offline_switch_refuses_a_hub_preset_without_probing(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    monkeypatch.setenv("KERAS_FT_OFFLINE", "1")
    monkeypatch.setattr(socket, "getaddrinfo", _slow_getaddrinfo)
    start = time.monotonic()
    with pytest.raises(
        PresetUnavailableError,
        match="KERAS_FT_OFFLINE is set and the preset is not in the local cache",
    ):
        resolve_preset("gemma_2b_en")
    assert time.monotonic() - start < 1


def _cache_preset_files(handle, files):
    """Marks files complete in kagglehub's cache, as `model_download(handle, f)` does."""
    from kagglehub.cache import Cache, get_cached_path
    from kagglehub.handle import parse_model_handle

    parsed = parse_model_handle(handle.removeprefix("kaggle://"))
    for name in files:
        path = Path(get_cached_path(parsed, name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        Cache().mark_as_complete(parsed, name)


def test_cached_kaggle_preset_is_used_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path))
    monkeypatch.setenv("KERAS_FT_OFFLINE", "1")
    handle = keras_hub.models.CausalLM.presets["gemma_2b_en"]["kaggle_handle"]
    _cache_preset_files(handle, ["config.json"])
    with pytest.raises(PresetUnavailableError):  # the weights are not cached
        resolve_preset("gemma_2b_en")
    _cache_preset_files(handle, ["model.weights.h5"])
    assert resolve_preset("gemma_2b_en") == "gemma_2b_en"  # versioned: kagglehub serves it
    unversioned = handle.rsplit("/", 1)[0]
    assert resolve_preset(unversioned) == str(Path(_cached_dir(handle)))


def _cached_dir(handle):
    from kagglehub.cache import get_cached_path
    from kagglehub.handle import parse_model_handle

    return get_cached_path(parse_model_handle(handle.removeprefix("kaggle://")))


def test_sequence_length_above_the_recorded_context_length_is_refused_before_loading(
    tmp_path, monkeypatch
):
    preset = str(make_tiny_preset(tmp_path / "p", "gemma3", context_length=32))

    def refuse(*args, **kwargs):
        raise AssertionError("the weights were loaded before sequence_length was checked")

    with monkeypatch.context() as patched:
        patched.setattr(keras_hub.models.CausalLM, "from_preset", refuse)
        patched.setattr(keras_hub.models.Backbone, "from_preset", refuse)
        with pytest.raises(
            ValueError,
            match=r"context length of 32 \(metadata.json "
            r"context_length of preset .*\)\. Received: "
            r"sequence_length=33",
        ):
            build_model(Config(preset=preset, sequence_length=33))
    assert build_model(Config(preset=preset, sequence_length=32)).preprocessor.sequence_length == 32


def _tiny_exportable_gemma3():
    """A 2-layer Gemma 3 with the norms llama.cpp's gemma3 graph needs."""
    import io

    import sentencepiece

    from keras_ft.testing import GEMMA_SPECIALS, TINY_CORPUS

    proto = io.BytesIO()  # with Gemma's 256 byte pieces, as the GGUF tokenizer has
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TINY_CORPUS * 4),
        model_writer=proto,
        vocab_size=420,
        model_type="BPE",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=GEMMA_SPECIALS + ["<mask>", "\n"],
        add_dummy_prefix=False,
        byte_fallback=True,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    tokenizer = keras_hub.models.Gemma3Tokenizer(proto=proto.getvalue(), has_vision_tokens=False)
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        image_size=None,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        use_sliding_window_attention=True,
        sliding_window_size=16,
        **TINY_BACKBONE,
    )
    preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(tokenizer=tokenizer)
    return keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=preprocessor)


def test_a_converted_gguf_preset_records_the_gguf_context_length(tmp_path, monkeypatch):
    from keras_ft.export.gguf import export_gguf

    monkeypatch.setenv("KERAS_FT_CACHE", str(tmp_path / "cache"))
    export_gguf(_tiny_exportable_gemma3(), tmp_path / "tiny.gguf", dtype="f32", context_length=48)
    preset = resolve_preset(str(tmp_path / "tiny.gguf"))
    assert preset_context_length(preset) == (48, "metadata.json context_length")
    check_sequence_length(preset, 48)
    with pytest.raises(ValueError, match="context length of 48 .* sequence_length=49"):
        check_sequence_length(preset, 49)


def test_a_backbone_with_a_maximum_length_is_checked_from_its_config(tmp_path):
    keras_hub.models.GPT2Backbone(
        vocabulary_size=8,
        num_layers=1,
        num_heads=1,
        hidden_dim=4,
        intermediate_dim=8,
        max_sequence_length=16,
    ).save_to_preset(str(tmp_path))
    assert preset_context_length(str(tmp_path)) == (16, "config.json max_sequence_length")
    with pytest.raises(ValueError, match="context length of 16 .* sequence_length=17"):
        check_sequence_length(str(tmp_path), 17)


@pytest.mark.parametrize("architecture", ["tiny_gemma", "tiny_gemma3", "tiny_llama3"])
def test_a_preset_without_a_context_length_says_so(request, architecture, caplog):
    preset = str(request.getfixturevalue(architecture))
    assert preset_context_length(preset) is None  # keras-hub's configs record none
    with caplog.at_level(logging.INFO, logger="keras_ft.model"):
        check_sequence_length(preset, 1_000_000)
    assert f"Preset {preset} records no context length" in caplog.text


def test_local_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a keras-hub preset"):
        resolve_preset(str(tmp_path))


def test_attention_targets_enable_each_projection_once(tiny_gemma3):
    causal_lm = build_model(Config(preset=str(tiny_gemma3), lora_targets="attention"))
    names = [w.path.split("/")[-2] for w in causal_lm.backbone.trainable_weights]
    assert sorted(set(names)) == ["attention_output", "key", "query", "value"]
    assert len(names) == 2 * 4 * TINY_BACKBONE["num_layers"]  # A and B per layer


def _base_weights(causal_lm):
    return {
        w.path: np.asarray(w.numpy()) for w in causal_lm.backbone.weights if "lora" not in w.path
    }


def _eager_logits(causal_lm, token_ids):
    return np.asarray(
        causal_lm({"token_ids": token_ids, "padding_mask": np.ones_like(token_ids, bool)})
    )


def _trainer_loss(causal_lm, cfg, token_ids):
    from keras_ft.train.trainer import build_trainer

    trainer = build_trainer(cfg, causal_lm.backbone, total_steps=10)
    weights = np.ones(token_ids[:, 1:].shape, "float32")
    weights[:, :2] = 0.0  # a prompt
    stats = np.asarray(
        trainer(
            {
                "token_ids": token_ids[:, :-1],
                "padding_mask": np.ones_like(token_ids[:, :-1], bool),
                "labels": token_ids[:, 1:],
                "loss_weights": weights,
            }
        )
    )
    return stats[:, 0].sum() / stats[:, 1].sum()


@pytest.mark.parametrize(
    "architecture, dtype, quantize",
    [
        ("tiny_gemma", "float32", ""),
        ("tiny_gemma3", "float32", ""),
        ("tiny_llama3", "float32", ""),
        ("tiny_gemma3", "bfloat16", ""),
        ("tiny_gemma", "mixed_bfloat16", "int8"),
        ("tiny_gemma3", "float32", "int4"),
    ],
)
def test_build_model_equals_from_preset(request, architecture, dtype, quantize):
    preset = str(request.getfixturevalue(architecture))
    cfg = Config(preset=preset, dtype=dtype, quantize=quantize, lora_rank=2, lora_targets="all")
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
    np.testing.assert_array_equal(
        _eager_logits(built, token_ids), _eager_logits(reference, token_ids)
    )
    assert _trainer_loss(built, cfg, token_ids) == _trainer_loss(reference, cfg, token_ids)
    with keras.StatelessScope():  # on exit Keras initialises pending variables:
        pass  # none of the loaded ones may still be pending
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
