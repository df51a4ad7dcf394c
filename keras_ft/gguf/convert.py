"""GGUF checkpoint -> keras-hub preset directory (Gemma, Gemma 2, Gemma 3, Llama 3).

`convert_gguf(path, out_dir)` reads a llama.cpp GGUF file tensor by tensor,
dequantizes each one to float32, maps it onto a freshly built keras-hub
backbone, rebuilds the tokenizer (SentencePiece for Gemma, byte-level BPE for
Llama 3) and saves a preset that plain `keras_hub.models.CausalLM.from_preset`
loads. The file's `<arch>.context_length` is recorded as `context_length` in
the preset's metadata.json, where `model.check_sequence_length` reads it.

Architectures are rows of `ARCHITECTURES`, keyed on `general.architecture`
(llama.cpp's names: `gemma`, `gemma2`, `gemma3`, `llama`): a metadata ->
backbone-config function and a table of llama.cpp tensors (gguf-py's
`MODEL_TENSOR`, named as llama.cpp's convert_hf_to_gguf.py names them) ->
keras variable paths with a layout. The exporter (`keras_ft.export.gguf`)
walks the same table the other way. gemma3 was checked against llama.cpp on
Gemma 3 270M (tests/gguf/test_convert.py); gemma2, gemma3 and llama files
that keras_ft exports load in transformers' GGUF reader with keras' logits
(tests/export/test_gguf_export.py). What keras-hub cannot express (Gemma 2
and 3 27B's query scale, non-linear rope scaling, other rope bases) is
refused, and so is any other architecture, naming the supported ones.

    python -m keras_ft.convert gguf model.gguf out_dir/
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gguf
import keras
import keras_hub
import numpy as np

from keras_ft.files import CorruptFileError, replace_dir, sha256_file, write_json
from keras_ft.gguf import tokenizer as gguf_tokenizer
from keras_ft.preset_files import record_context_length

logger = logging.getLogger(__name__)


SOURCE_FILENAME = "gguf_source.json"  # provenance + file sizes, for caching


class UnsupportedModelError(NotImplementedError, ValueError):
    """A GGUF file keras_ft cannot convert (architecture or a setting of it).

    A ValueError too, so that callers reporting bad input (`keras-ft
    --preset x.gguf`) show its message instead of a traceback.
    """


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one tensor is laid out in GGUF (numpy order) versus keras.

    Attributes:
        gguf_shape: Keras variable shape -> expected GGUF numpy shape.
        to_keras: GGUF array, keras shape -> keras array.
        to_gguf: Keras array -> GGUF array.
    """

    gguf_shape: Callable[[tuple], tuple]
    to_keras: Callable[[np.ndarray, tuple], np.ndarray]
    to_gguf: Callable[[np.ndarray], np.ndarray]


def _permute_rope(x: np.ndarray, head_dim: int, inverse: bool = False) -> np.ndarray:
    """llama.cpp's rope layout for Llama q/k rows (convert_hf_to_gguf.py's
    `LlamaModel.permute`) on the last axis of `x`, one head at a time.

    keras-hub (like Hugging Face) rotates the two halves of each head
    (`rotate_half`); llama.cpp's `llama` graph rotates adjacent pairs, so its
    converter interleaves the halves: position `2 i + k` of a head holds
    `k * head_dim / 2 + i`. `inverse` undoes it.
    """
    lead = x.shape[:-1]
    halves = (head_dim // 2, 2) if inverse else (2, head_dim // 2)
    return x.reshape(*lead, *halves).swapaxes(-1, -2).reshape(*lead, head_dim)


LAYOUTS = {
    "same": Layout(lambda s: s, lambda x, s: x, lambda x: x),
    # Gemma RMSNorm computes x * (1 + w); llama.cpp stores 1 + w.
    "norm": Layout(lambda s: s, lambda x, s: x - 1.0, lambda x: x + 1.0),
    # (out, in) matrix -> keras (in, out).
    "dense": Layout(lambda s: s[::-1], lambda x, s: x.T, lambda x: x.T),
    # (heads * head_dim, hidden) -> keras (heads, hidden, head_dim): Gemma q/k/v.
    "heads_in": Layout(
        lambda s: (s[0] * s[2], s[1]),
        lambda x, s: x.reshape(s[0], s[2], s[1]).transpose(0, 2, 1),
        lambda x: x.transpose(0, 2, 1).reshape(-1, x.shape[1]),
    ),
    # (hidden, heads * head_dim) -> keras (heads, head_dim, hidden): Gemma and
    # Llama attention output.
    "heads_out": Layout(
        lambda s: (s[2], s[0] * s[1]),
        lambda x, s: x.reshape(s[2], s[0], s[1]).transpose(1, 2, 0),
        lambda x: x.transpose(2, 0, 1).reshape(x.shape[2], -1),
    ),
    # (heads * head_dim, hidden) -> keras (hidden, heads, head_dim): Llama v.
    "in_heads": Layout(
        lambda s: (s[1] * s[2], s[0]),
        lambda x, s: x.T.reshape(s),
        lambda x: x.reshape(x.shape[0], -1).T,
    ),
    # As "in_heads", rows in llama.cpp's rope order: Llama q and k.
    "rope_in_heads": Layout(
        lambda s: (s[1] * s[2], s[0]),
        lambda x, s: _permute_rope(x.T.reshape(s), s[2], inverse=True),
        lambda x: _permute_rope(x, x.shape[2]).reshape(x.shape[0], -1).T,
    ),
}


_T = gguf.MODEL_TENSOR

# llama.cpp tensor -> (keras variable path, layout). The path's first part is a
# backbone layer name (`{i}` the block), the rest are attributes; the GGUF name
# is gguf-py's `TENSOR_NAMES[tensor]` + ".weight".
_GEMMA_TENSORS = {
    _T.TOKEN_EMBD: ("token_embedding.embeddings", "same"),
    _T.OUTPUT_NORM: ("final_normalization.scale", "norm"),
    _T.ATTN_NORM: ("decoder_block_{i}.pre_attention_norm.scale", "norm"),
    _T.ATTN_Q: ("decoder_block_{i}.attention.query_dense.kernel", "heads_in"),
    _T.ATTN_K: ("decoder_block_{i}.attention.key_dense.kernel", "heads_in"),
    _T.ATTN_V: ("decoder_block_{i}.attention.value_dense.kernel", "heads_in"),
    _T.ATTN_OUT: ("decoder_block_{i}.attention.output_dense.kernel", "heads_out"),
    _T.FFN_NORM: ("decoder_block_{i}.pre_ffw_norm.scale", "norm"),
    # ffn_gate is the GELU branch: gelu(x @ gate) * (x @ up).
    _T.FFN_GATE: ("decoder_block_{i}.gating_ffw.kernel", "dense"),
    _T.FFN_UP: ("decoder_block_{i}.gating_ffw_2.kernel", "dense"),
    _T.FFN_DOWN: ("decoder_block_{i}.ffw_linear.kernel", "dense"),
}  # fmt: skip
# gguf-py names Gemma 2/3's pre-FFN norm FFN_PRE_NORM (the same `ffn_norm`).
_GEMMA2_TENSORS = {
    **{t: v for t, v in _GEMMA_TENSORS.items() if t != _T.FFN_NORM},
    _T.FFN_PRE_NORM: _GEMMA_TENSORS[_T.FFN_NORM],
    _T.ATTN_POST_NORM: ("decoder_block_{i}.post_attention_norm.scale", "norm"),
    _T.FFN_POST_NORM: ("decoder_block_{i}.post_ffw_norm.scale", "norm"),
}  # fmt: skip
_GEMMA3_TENSORS = {
    **_GEMMA2_TENSORS,
    _T.ATTN_Q_NORM: ("decoder_block_{i}.attention.query_norm.scale", "norm"),
    _T.ATTN_K_NORM: ("decoder_block_{i}.attention.key_norm.scale", "norm"),
}  # fmt: skip
_LLAMA_ATTENTION = "transformer_layer_{i}._self_attention_layer"
_LLAMA_TENSORS = {
    _T.TOKEN_EMBD: ("token_embedding.embeddings", "same"),
    _T.OUTPUT_NORM: ("sequence_output_layernorm.scale", "same"),
    _T.ATTN_NORM: ("transformer_layer_{i}._self_attention_layernorm.scale", "same"),
    _T.ATTN_Q: (f"{_LLAMA_ATTENTION}._query_dense.kernel", "rope_in_heads"),
    _T.ATTN_K: (f"{_LLAMA_ATTENTION}._key_dense.kernel", "rope_in_heads"),
    _T.ATTN_V: (f"{_LLAMA_ATTENTION}._value_dense.kernel", "in_heads"),
    _T.ATTN_OUT: (f"{_LLAMA_ATTENTION}._output_dense.kernel", "heads_out"),
    _T.FFN_NORM: ("transformer_layer_{i}._feedforward_layernorm.scale", "same"),
    # ffn_gate is the SiLU branch: silu(x @ gate) * (x @ up).
    _T.FFN_GATE: ("transformer_layer_{i}._feedforward_gate_dense.kernel", "dense"),
    _T.FFN_UP: ("transformer_layer_{i}._feedforward_intermediate_dense.kernel", "dense"),
    _T.FFN_DOWN: ("transformer_layer_{i}._feedforward_output_dense.kernel", "dense"),
}  # fmt: skip
# Written only when the output projection is not the token embedding
# (llama.cpp and transformers read a file without it as tied).
_LLAMA_UNTIED_TENSORS = {_T.OUTPUT: ("token_embedding.reverse_embeddings", "dense")}
# Llama 3.1+ rope scaling: llama.cpp stores the per-frequency factors as a
# tensor; the converter reads them into the config (`_llama3_rope_config`).
ROPE_FREQS = gguf.TENSOR_NAMES[_T.ROPE_FREQS] + ".weight"


def tensor_name(tensor: gguf.MODEL_TENSOR, block: int | None = None) -> str:
    """llama.cpp's name of one weight tensor, e.g. `blk.0.attn_q.weight`."""
    return gguf.TENSOR_NAMES[tensor].format(bid=block) + ".weight"


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One supported `general.architecture`.

    Attributes:
        name: llama.cpp's architecture name (`general.architecture`).
        causal_lm_cls: The keras-hub task class.
        build_config: (GGUF metadata, tensor name -> GGUF reader tensor) ->
            backbone constructor kwargs.
        tensors: llama.cpp tensor -> (keras path template, layout).
        tokenizer: `"sentencepiece"` (GGUF `llama` vocabulary) or `"bpe"`
            (GGUF `gpt2`: byte-level BPE with merges).
        untied_tensors: Further tensors present only when the backbone's
            `tie_word_embeddings` is False.
        matches: backbone -> whether this row exports it (rows sharing a
            keras class, gemma and gemma2, tell them apart).
    """

    name: str
    causal_lm_cls: type
    build_config: Callable[..., dict]
    tensors: Mapping[gguf.MODEL_TENSOR, tuple[str, str]]
    tokenizer: str = "sentencepiece"
    untied_tensors: Mapping[gguf.MODEL_TENSOR, tuple[str, str]] = dataclasses.field(
        default_factory=dict
    )
    matches: Callable[[Any], bool] = lambda backbone: True


class _Meta:
    """Reads one architecture's GGUF metadata through gguf-py's `Keys`."""

    def __init__(self, meta: Mapping[str, Any], arch: str):
        self.meta, self.arch = meta, arch

    def name(self, key: str) -> str:
        return key.format(arch=self.arch)

    def __call__(self, key: str) -> Any:
        return _require(self.meta, self.name(key))

    def get(self, key: str, default: Any = None) -> Any:
        return self.meta.get(self.name(key), default)

    def epsilon(self) -> float:
        # Stored as float32 (9.99999997e-07); round back to 1e-06.
        return float(str(np.float32(self(gguf.Keys.Attention.LAYERNORM_RMS_EPS))))

    def check_fixed(self, fixed: Mapping[str, Any], backbone: str) -> None:
        for key, expected in fixed.items():
            value = self.get(key, expected)
            if value != expected:
                raise UnsupportedModelError(
                    f"keras-hub's {backbone} hard-codes {self.name(key)}={expected}. "
                    f"Received: {value!r}"
                )


_K = gguf.Keys


def _gemma_common(meta: _Meta) -> dict:
    """The backbone kwargs Gemma, Gemma 2 and Gemma 3 read alike."""
    head_dim = int(meta(_K.Attention.KEY_LENGTH))
    if int(meta(_K.Attention.VALUE_LENGTH)) != head_dim:
        raise ValueError(
            f"{meta.arch} needs key_length == value_length. Received: "
            f"{head_dim} and {meta(_K.Attention.VALUE_LENGTH)}"
        )
    return {
        "vocabulary_size": len(_require(meta.meta, _K.Tokenizer.LIST)),
        "num_layers": int(meta(_K.LLM.BLOCK_COUNT)),
        "num_query_heads": int(meta(_K.Attention.HEAD_COUNT)),
        "num_key_value_heads": int(meta(_K.Attention.HEAD_COUNT_KV)),
        "hidden_dim": int(meta(_K.LLM.EMBEDDING_LENGTH)),
        "head_dim": head_dim,
        "layer_norm_epsilon": meta.epsilon(),
    }


def _gemma_config(meta: Mapping[str, Any], tensors: Mapping = {}) -> dict:
    """Gemma (1) backbone kwargs: keras-hub's GemmaBackbone without Gemma 2's
    extras; queries scaled by 1/sqrt(head_dim), rope base 10k as llama.cpp's."""
    key = _Meta(meta, "gemma")
    key.check_fixed({_K.Rope.FREQ_BASE: 10_000.0}, "GemmaBackbone")
    config = _gemma_common(key)
    # keras-hub's GemmaBackbone counts both halves of the gated FFN.
    return {**config, "intermediate_dim": 2 * int(key(_K.LLM.FEED_FORWARD_LENGTH))}


def _gemma2_config(meta: Mapping[str, Any], tensors: Mapping = {}) -> dict:
    """Gemma 2 backbone kwargs (keras-hub's GemmaBackbone with Gemma 2 settings).

    llama.cpp's gemma2 graph, like keras-hub, slides the window on even layers
    (default 4096) and soft-caps attention and final logits where the file
    says; 27B (46 layers) scales queries by 1/sqrt(hidden_dim / num_heads),
    which keras-hub's GemmaDecoderBlock cannot express, so it is refused.
    """
    key = _Meta(meta, "gemma2")
    key.check_fixed({_K.Rope.FREQ_BASE: 10_000.0}, "GemmaBackbone")
    config = _gemma_common(key)
    if config["num_layers"] == 46:
        raise UnsupportedModelError(
            "Gemma 2 27B scales queries by 1/sqrt(hidden_dim / num_heads), which keras-hub's "
            "GemmaDecoderBlock cannot express (it always uses 1/sqrt(head_dim)). Received: "
            "block_count=46"
        )
    return {
        **config,
        "intermediate_dim": 2 * int(key(_K.LLM.FEED_FORWARD_LENGTH)),
        "query_head_dim_normalize": True,
        "use_post_ffw_norm": True,
        "use_post_attention_norm": True,
        "attention_logit_soft_cap": key.get(_K.LLM.ATTN_LOGIT_SOFTCAPPING),
        "final_logit_soft_cap": key.get(_K.LLM.FINAL_LOGIT_SOFTCAPPING),
        "use_sliding_window_attention": True,
        "sliding_window_size": int(key.get(_K.Attention.SLIDING_WINDOW, 4096)),
    }


def _gemma3_config(meta: Mapping[str, Any], tensors: Mapping = {}) -> dict:
    """Gemma 3 backbone kwargs from GGUF metadata.

    keras-hub's Gemma3Backbone hard-codes what llama.cpp also hard-codes for
    gemma3 (rope bases 10k local / 1M global, every 6th layer global, query
    scale 1/sqrt(head_dim)); files that say otherwise are refused.
    """
    key = _Meta(meta, "gemma3")
    config = _gemma_common(key)
    num_layers = config["num_layers"]
    fixed = {
        _K.Rope.FREQ_BASE: 1_000_000.0,
        _K.Rope.FREQ_BASE_SWA: 10_000.0,
        _K.Attention.SLIDING_WINDOW_PATTERN: 6,
    }
    if isinstance(key.get(_K.Attention.SLIDING_WINDOW_PATTERN), list):
        fixed[_K.Attention.SLIDING_WINDOW_PATTERN] = [i % 6 < 5 for i in range(num_layers)]
    key.check_fixed(fixed, "Gemma3Backbone")
    if num_layers == 62:  # llama.cpp scales 27B queries by 1/sqrt(hidden / heads)
        raise UnsupportedModelError(
            "Gemma 3 27B scales queries by 1/sqrt(hidden_dim / num_heads), which keras-hub's "
            f"Gemma3DecoderBlock cannot express. Received: block_count={num_layers}"
        )
    rope_type = key.get(_K.Rope.SCALING_TYPE, "none")
    if rope_type not in ("none", "linear"):
        raise UnsupportedModelError(
            "Only linear rope scaling is supported for gemma3. "
            f"Received: gemma3.rope.scaling.type={rope_type!r}"
        )
    window = key.get(_K.Attention.SLIDING_WINDOW)
    return {
        **config,
        "image_size": None,
        "intermediate_dim": int(key(_K.LLM.FEED_FORWARD_LENGTH)),
        "query_head_dim_normalize": True,
        "use_query_key_norm": True,
        "use_post_ffw_norm": True,
        "use_post_attention_norm": True,
        "attention_logit_soft_cap": key.get(_K.LLM.ATTN_LOGIT_SOFTCAPPING),
        "final_logit_soft_cap": key.get(_K.LLM.FINAL_LOGIT_SOFTCAPPING),
        "use_sliding_window_attention": window is not None,
        "sliding_window_size": int(window or 4096),
        "local_rope_scaling_factor": 1.0,
        "global_rope_scaling_factor": float(key.get(_K.Rope.SCALING_FACTOR, 1.0)),
    }


# Llama 3.1+'s rope scaling as llama.cpp's converter assumes it where a
# config leaves it out; every Llama 3.1/3.2/3.3 release uses these (factor 8
# or 32), so a file's factors are matched against them (`_llama3_rope_config`).
LLAMA3_ROPE_DEFAULTS = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original": 8192}


def llama3_rope_factors(
    theta: float, head_dim: int, factor: float, low: float, high: float, original: int
) -> np.ndarray:
    """llama.cpp's `rope_freqs` tensor for Llama 3.1+ rope scaling (float32).

    As convert_hf_to_gguf.py's `LlamaModel.generate_extra_tensors`: each
    rotary frequency is divided by 1 (short wavelengths), `factor` (long)
    or a smooth blend in between; keras-hub's LlamaRotaryEmbedding computes
    the same division from `rope_frequency_adjustment_factor`,
    `rope_low_freq_factor`, `rope_high_freq_factor` and
    `rope_pretraining_sequence_length`.
    """
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    wavelen = 2 * np.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    blend = 1 / ((1 - smooth) / factor + smooth)
    factors = np.where(
        wavelen < original / high, 1.0, np.where(wavelen > original / low, factor, blend)
    )
    return factors.astype(np.float32)


def _llama3_rope_config(meta: _Meta, tensors: Mapping, head_dim: int) -> dict:
    """The backbone's Llama 3.1+ rope kwargs from a `rope_freqs` tensor, if any."""
    if ROPE_FREQS not in tensors:
        return {}
    tensor = tensors[ROPE_FREQS]
    found = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(-1)
    theta = float(meta.get(_K.Rope.FREQ_BASE, 10_000.0))
    defaults = LLAMA3_ROPE_DEFAULTS
    factor = _llama3_rope_factor(found, theta, head_dim, defaults)
    expected = llama3_rope_factors(
        theta, head_dim, factor, defaults["low_freq_factor"], defaults["high_freq_factor"],
        defaults["original"],
    )  # fmt: skip
    if found.shape != expected.shape or not np.allclose(found, expected, rtol=1e-5):
        raise UnsupportedModelError(
            f"The file's {ROPE_FREQS} is not Llama 3.1+ rope scaling with low/high "
            f"frequency factors 1 and 4 and an original context of 8192 (keras_ft derives "
            f"keras-hub's rope settings from those). Received: {found[:8].tolist()}..."
        )
    return {
        "rope_frequency_adjustment_factor": factor,
        "rope_low_freq_factor": defaults["low_freq_factor"],
        "rope_high_freq_factor": defaults["high_freq_factor"],
        "rope_pretraining_sequence_length": defaults["original"],
    }


def _llama3_rope_factor(found: np.ndarray, theta: float, head_dim: int, defaults) -> float:
    """The scaling factor behind llama.cpp's `rope_freqs` values.

    Long wavelengths carry it as it is; if the head has none, a blended one
    gives it (`1 / r = (1 - s) / factor + s`); if neither, it changes nothing.
    """
    low, high, original = (
        defaults["low_freq_factor"], defaults["high_freq_factor"], defaults["original"]
    )  # fmt: skip
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    wavelen = (2 * np.pi / freqs)[: found.size]
    if (wavelen > original / low).any():
        return float(found[wavelen > original / low][0])
    smooth = (original / wavelen - low) / (high - low)
    blended = (wavelen >= original / high) & (smooth < 1)
    if blended.any():
        s, r = float(smooth[blended][0]), float(found[blended][0])
        return (1 - s) / (1 / r - s)
    return 1.0


def _llama_config(meta: Mapping[str, Any], tensors: Mapping = {}) -> dict:
    """Llama 3 backbone kwargs (keras-hub's Llama3Backbone).

    keras-hub's LlamaAttention uses head_dim = hidden_dim / num_heads and
    rotates every dimension; files that say otherwise, or scale rope other
    than Llama 3.1's way (`rope_freqs`), are refused.
    """
    key = _Meta(meta, "llama")
    hidden, heads = int(key(_K.LLM.EMBEDDING_LENGTH)), int(key(_K.Attention.HEAD_COUNT))
    head_dim = hidden // heads
    for name in (_K.Rope.DIMENSION_COUNT, _K.Attention.KEY_LENGTH, _K.Attention.VALUE_LENGTH):
        if key.get(name, head_dim) != head_dim:
            raise UnsupportedModelError(
                f"keras-hub's Llama3Backbone needs {key.name(name)} == embedding_length / "
                f"head_count = {head_dim}. Received: {key.get(name)}"
            )
    rope_type = key.get(_K.Rope.SCALING_TYPE, "none")
    if rope_type != "none":
        raise UnsupportedModelError(
            "keras_ft converts llama files without rope.scaling.type (Llama 3.1+ scaling comes "
            f"as a {ROPE_FREQS} tensor). Received: llama.rope.scaling.type={rope_type!r}"
        )
    if key.get(_K.LLM.EXPERT_COUNT):
        raise UnsupportedModelError(
            "Mixture-of-experts llama files cannot be converted. Received: "
            f"llama.expert_count={key.get(_K.LLM.EXPERT_COUNT)}"
        )
    return {
        "vocabulary_size": len(_require(meta, _K.Tokenizer.LIST)),
        "num_layers": int(key(_K.LLM.BLOCK_COUNT)),
        "num_query_heads": heads,
        "num_key_value_heads": int(key(_K.Attention.HEAD_COUNT_KV)),
        "hidden_dim": hidden,
        "intermediate_dim": int(key(_K.LLM.FEED_FORWARD_LENGTH)),
        "rope_max_wavelength": float(key.get(_K.Rope.FREQ_BASE, 10_000.0)),
        "layer_norm_epsilon": key.epsilon(),
        # llama.cpp writes `output.weight` only when it is not the embedding.
        "tie_word_embeddings": tensor_name(_T.OUTPUT) not in tensors,
        **_llama3_rope_config(key, tensors, head_dim),
    }


def _require(meta: Mapping[str, Any], name: str) -> Any:
    if name not in meta:
        raise ValueError(f"The GGUF file lacks the `{name}` metadata field.")
    return meta[name]


def _is_gemma2(backbone) -> bool:
    return bool(backbone.use_post_ffw_norm or backbone.use_post_attention_norm)


ARCHITECTURES = {
    arch.name: arch
    for arch in (
        Architecture(
            "gemma", keras_hub.models.GemmaCausalLM, _gemma_config, _GEMMA_TENSORS,
            matches=lambda backbone: not _is_gemma2(backbone),
        ),
        Architecture(
            "gemma2", keras_hub.models.GemmaCausalLM, _gemma2_config, _GEMMA2_TENSORS,
            matches=_is_gemma2,
        ),
        Architecture("gemma3", keras_hub.models.Gemma3CausalLM, _gemma3_config, _GEMMA3_TENSORS),
        Architecture(
            "llama", keras_hub.models.Llama3CausalLM, _llama_config, _LLAMA_TENSORS,
            tokenizer="bpe", untied_tensors=_LLAMA_UNTIED_TENSORS,
        ),
    )
}  # fmt: skip
# What each row is, for messages and the README's table.
SUPPORTED = "gemma (Gemma), gemma2 (Gemma 2), gemma3 (Gemma 3 text), llama (Llama 3)"


def read_metadata(reader: gguf.GGUFReader) -> dict[str, Any]:
    """Returns every GGUF metadata field as a Python value."""
    return {name: field.contents() for name, field in reader.fields.items()}


def open_gguf(gguf_path: str | os.PathLike) -> tuple[gguf.GGUFReader, dict[str, Any]]:
    """(reader, metadata) of a GGUF file.

    Raises:
        CorruptFileError: the file is empty, truncated or not GGUF (gguf's
            reader fails with an IndexError or a bare ValueError), naming it.
    """
    try:
        reader = gguf.GGUFReader(gguf_path)
        return reader, read_metadata(reader)
    except (IndexError, ValueError, KeyError, struct.error) as e:
        size = os.path.getsize(gguf_path)
        raise CorruptFileError(
            f"{gguf_path} is not a readable GGUF file ({size} bytes; gguf says: "
            f"{type(e).__name__}: {e}): it is truncated, damaged or not GGUF. Download "
            "it again (or export it again) and check its size or checksum."
        ) from None


def get_architecture(meta: Mapping[str, Any], source: Any = "the GGUF file") -> Architecture:
    """Looks up the `ARCHITECTURES` row for a GGUF file's metadata.

    Raises:
        UnsupportedModelError: naming the file's architecture and the supported ones.
    """
    name = meta.get("general.architecture")
    if name not in ARCHITECTURES:
        raise UnsupportedModelError(
            f"{source}: GGUF architecture {name!r} cannot be converted; keras_ft "
            f"converts only {SUPPORTED}. Use a GGUF file of one of those, or a keras-hub "
            "preset of this model "
            f"(--preset NAME or a preset directory). Received: general.architecture={name!r}"
        )
    return ARCHITECTURES[name]


def expand_tensor_names(arch: Architecture, num_layers: int, tied: bool = True) -> dict:
    """GGUF tensor name -> (keras variable path, Layout), all blocks expanded.

    Args:
        arch: The `ARCHITECTURES` row.
        num_layers: The backbone's blocks.
        tied: Whether the output projection is the token embedding; if not,
            `arch.untied_tensors` are included.
    """
    tensors = {**arch.tensors, **({} if tied else arch.untied_tensors)}
    names = {}
    for tensor, (path, layout) in tensors.items():
        blocks = range(num_layers) if "{bid}" in gguf.TENSOR_NAMES[tensor] else [None]
        for i in blocks:
            names[tensor_name(tensor, i)] = (path.format(i=i), LAYOUTS[layout])
    return names


def get_variable(backbone: keras_hub.models.Backbone, path: str):
    """Resolves `"layer.attr.attr"` to a variable (or merged LoRA kernel)."""
    layer_name, *attrs = path.split(".")
    value = backbone.get_layer(layer_name)
    for attr in attrs:
        value = getattr(value, attr)
    return value


def load_weights(backbone, reader: gguf.GGUFReader, names: Mapping) -> None:
    """Dequantizes every GGUF tensor into its keras variable, one at a time.

    `rope_freqs` (Llama 3.1+ rope scaling) is no weight: `build_config` read it.

    Raises:
        ValueError: If a GGUF tensor is unmapped, missing or misshapen.
    """
    tensors = [t for t in reader.tensors if t.name != ROPE_FREQS]
    unmapped = [t.name for t in tensors if t.name not in names]
    if unmapped:
        raise ValueError(
            f"GGUF tensor {unmapped[0]!r} has no keras mapping "
            f"({len(unmapped)} unmapped in all: {unmapped[:5]})."
        )
    missing = sorted(set(names) - {t.name for t in tensors})
    if missing:
        raise ValueError(f"The GGUF file lacks tensors {missing[:5]} (of {len(missing)}).")
    for tensor in tensors:
        path, layout = names[tensor.name]
        variable = get_variable(backbone, path)
        shape = tuple(int(d) for d in reversed(tensor.shape))
        expected = tuple(layout.gguf_shape(tuple(variable.shape)))
        if shape != expected:
            raise ValueError(
                f"GGUF tensor {tensor.name!r} has shape {shape} but keras "
                f"`{path}` {tuple(variable.shape)} needs {expected}."
            )
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        variable.assign(layout.to_keras(array.reshape(shape), variable.shape))
        del array


def convert_gguf(
    gguf_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Converts a GGUF checkpoint into a keras-hub preset directory.

    The preset is built in a temporary directory next to `out_dir` and
    renamed into place, so `out_dir` is either complete or absent.

    Args:
        gguf_path: The `.gguf` file.
        out_dir: The preset directory to create.
        dtype: Weight dtype of the saved preset (`"float32"`, `"bfloat16"`).
        overwrite: Replace an existing `out_dir`.

    Returns:
        `out_dir` as a `Path`.

    Raises:
        FileExistsError: If `out_dir` exists and `overwrite` is False.
        UnsupportedModelError: If the architecture is not one of `ARCHITECTURES`
            or uses what its keras-hub backbone cannot express.
        ValueError: If a tensor is unmapped, missing or misshapen.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(
            f"The preset directory exists; pass overwrite=True. Received: {out_dir}"
        )
    reader, meta = open_gguf(gguf_path)
    arch = get_architecture(meta, gguf_path)
    try:
        config = arch.build_config(meta, {t.name: t for t in reader.tensors})
        logger.info("Converting %s (%s): %s", gguf_path, meta["general.architecture"], config)
        causal_lm = _build_causal_lm(arch, config, reader, dtype)
    except ValueError as e:  # a missing field or tensor: say which file
        raise type(e)(f"{gguf_path}: {e}") from None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        causal_lm.save_to_preset(str(tmp_dir))
        del causal_lm
        _record_context_length(tmp_dir, meta)
        _write_source(tmp_dir, gguf_path)
        tmp_dir.chmod(0o755)  # mkdtemp makes it owner-only
        replace_dir(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("Wrote preset %s", out_dir)
    return out_dir


def _build_causal_lm(arch, config, reader, dtype):
    # Variables cast on assign, so only one float32 tensor is alive at a time.
    tied = config.get("tie_word_embeddings", True)
    untie = bool(arch.untied_tensors) and tied
    if untie:
        # keras-hub's LlamaBackbone.get_config leaves tie_word_embeddings out,
        # so a tied preset would load untied and miss a variable: store the
        # output projection as its own copy of the embedding (same logits).
        config = {**config, "tie_word_embeddings": False}
    backbone = arch.causal_lm_cls.backbone_cls(**config, dtype=dtype)
    load_weights(backbone, reader, expand_tensor_names(arch, config["num_layers"], tied))
    if untie:
        embedding = backbone.token_embedding
        embedding.reverse_embeddings.assign(keras.ops.transpose(embedding.embeddings))
    preprocessor_cls = arch.causal_lm_cls.preprocessor_cls
    preprocessor = preprocessor_cls(tokenizer=build_tokenizer(arch, reader))
    return arch.causal_lm_cls(backbone=backbone, preprocessor=preprocessor)


def build_tokenizer(arch: Architecture, reader: gguf.GGUFReader):
    """The keras-hub tokenizer of a GGUF file's vocabulary (`arch.tokenizer`)."""
    tokenizer_cls = arch.causal_lm_cls.preprocessor_cls.tokenizer_cls
    if arch.tokenizer == "bpe":
        vocab = gguf_tokenizer.read_gguf_bpe_vocab(reader)
        return tokenizer_cls(**gguf_tokenizer.keras_bpe_arguments(vocab))
    proto = gguf_tokenizer.build_sentencepiece_proto(gguf_tokenizer.read_gguf_vocab(reader))
    if arch.name == "gemma3":
        return tokenizer_cls(proto=proto, has_vision_tokens=False)
    return tokenizer_cls(proto=proto)


def _record_context_length(preset_dir: Path, meta: Mapping[str, Any]) -> None:
    """Records the GGUF's `<arch>.context_length` in the preset's metadata.json
    (keras-hub's Gemma and Llama configs have no field for it; see
    `preset_files.record_context_length`)."""
    arch = meta["general.architecture"]
    length = meta.get(gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=arch))
    if not length:
        logger.info(
            "%s records no %s.context_length; the preset records none either.",
            meta.get("general.name", "The GGUF file"),
            arch,
        )
        return
    record_context_length(preset_dir, int(length))


def _write_source(preset_dir: Path, gguf_path: Path) -> None:
    sizes = {
        str(p.relative_to(preset_dir)): p.stat().st_size
        for p in sorted(preset_dir.rglob("*"))
        if p.is_file()
    }
    source = {
        "gguf_file": gguf_path.name,
        "gguf_sha256": sha256_file(gguf_path),
        "file_sizes": sizes,
    }
    write_json(preset_dir / SOURCE_FILENAME, source)
