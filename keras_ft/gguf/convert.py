"""GGUF checkpoint -> keras-hub preset directory (Gemma 3 text models only).

`convert_gguf(path, out_dir)` reads a llama.cpp GGUF file tensor by tensor,
dequantizes each one to float32, maps it onto a freshly built keras-hub
backbone, rebuilds the SentencePiece tokenizer and saves a preset that plain
`keras_hub.models.Gemma3CausalLM.from_preset(out_dir)` loads. The file's
`<arch>.context_length` is recorded as `context_length` in the preset's
metadata.json, where `model.check_sequence_length` reads it.

Architectures are rows of `ARCHITECTURES`, keyed on `general.architecture`:
a metadata -> backbone-config function and a table of GGUF tensor names ->
keras variable paths with a layout. Only `gemma3` is supported (checked
against llama.cpp on Gemma 3 270M, tests/test_convert.py; 27B's query scale
and non-linear rope scaling are refused); any other architecture (`gemma`,
`gemma2`, `llama`, ...) is refused with the list of supported ones. Adding one means a new row: Gemma 1/2 could reuse most of
the Gemma 3 names (without the q/k norms); Llama would also need a layout
that undoes llama.cpp's q/k rope permutation and a byte-level BPE tokenizer.

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


LAYOUTS = {
    "same": Layout(lambda s: s, lambda x, s: x, lambda x: x),
    # Gemma RMSNorm computes x * (1 + w); llama.cpp stores 1 + w.
    "norm": Layout(lambda s: s, lambda x, s: x - 1.0, lambda x: x + 1.0),
    # (out, in) matrix -> keras (in, out).
    "dense": Layout(lambda s: s[::-1], lambda x, s: x.T, lambda x: x.T),
    # (heads * head_dim, hidden) -> keras (heads, hidden, head_dim).
    "heads_in": Layout(
        lambda s: (s[0] * s[2], s[1]),
        lambda x, s: x.reshape(s[0], s[2], s[1]).transpose(0, 2, 1),
        lambda x: x.transpose(0, 2, 1).reshape(-1, x.shape[1]),
    ),
    # (hidden, heads * head_dim) -> keras (heads, head_dim, hidden).
    "heads_out": Layout(
        lambda s: (s[2], s[0] * s[1]),
        lambda x, s: x.reshape(s[2], s[0], s[1]).transpose(1, 2, 0),
        lambda x: x.transpose(2, 0, 1).reshape(x.shape[2], -1),
    ),
}


# GGUF name (with `{i}` for the block) -> (keras variable path, layout). The
# path's first part is a backbone layer name, the rest are attributes.
_GEMMA3_TENSORS = {
    "token_embd.weight": ("token_embedding.embeddings", "same"),
    "output_norm.weight": ("final_normalization.scale", "norm"),
    "blk.{i}.attn_norm.weight": ("decoder_block_{i}.pre_attention_norm.scale", "norm"),
    "blk.{i}.attn_q.weight": ("decoder_block_{i}.attention.query_dense.kernel", "heads_in"),
    "blk.{i}.attn_k.weight": ("decoder_block_{i}.attention.key_dense.kernel", "heads_in"),
    "blk.{i}.attn_v.weight": ("decoder_block_{i}.attention.value_dense.kernel", "heads_in"),
    "blk.{i}.attn_q_norm.weight": ("decoder_block_{i}.attention.query_norm.scale", "norm"),
    "blk.{i}.attn_k_norm.weight": ("decoder_block_{i}.attention.key_norm.scale", "norm"),
    "blk.{i}.attn_output.weight": ("decoder_block_{i}.attention.output_dense.kernel", "heads_out"),
    "blk.{i}.post_attention_norm.weight": ("decoder_block_{i}.post_attention_norm.scale", "norm"),
    "blk.{i}.ffn_norm.weight": ("decoder_block_{i}.pre_ffw_norm.scale", "norm"),
    # ffn_gate is the GELU branch: gelu(x @ gate) * (x @ up).
    "blk.{i}.ffn_gate.weight": ("decoder_block_{i}.gating_ffw.kernel", "dense"),
    "blk.{i}.ffn_up.weight": ("decoder_block_{i}.gating_ffw_2.kernel", "dense"),
    "blk.{i}.ffn_down.weight": ("decoder_block_{i}.ffw_linear.kernel", "dense"),
    "blk.{i}.post_ffw_norm.weight": ("decoder_block_{i}.post_ffw_norm.scale", "norm"),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One supported `general.architecture`.

    Attributes:
        causal_lm_cls: The keras-hub task class.
        build_config: GGUF metadata -> backbone constructor kwargs.
        tensors: GGUF tensor name template -> (keras path template, layout).
    """

    causal_lm_cls: type
    build_config: Callable[[Mapping[str, Any]], dict]
    tensors: Mapping[str, tuple[str, str]]


def _gemma3_config(meta: Mapping[str, Any]) -> dict:
    """Gemma 3 backbone kwargs from GGUF metadata.

    keras-hub's Gemma3Backbone hard-codes what llama.cpp also hard-codes for
    gemma3 (rope bases 10k local / 1M global, every 6th layer global, query
    scale 1/sqrt(head_dim)); files that say otherwise are refused.
    """
    key = lambda name: _require(meta, f"gemma3.{name}")  # noqa: E731
    num_layers, head_dim = int(key("block_count")), int(key("attention.key_length"))
    fixed = {
        "rope.freq_base": 1_000_000.0,
        "rope.freq_base_swa": 10_000.0,
        "attention.sliding_window_pattern": 6,
    }
    if isinstance(meta.get("gemma3.attention.sliding_window_pattern"), list):
        fixed["attention.sliding_window_pattern"] = [i % 6 < 5 for i in range(num_layers)]
    for name, expected in fixed.items():
        value = meta.get(f"gemma3.{name}", expected)
        if value != expected:
            raise UnsupportedModelError(
                f"keras-hub's Gemma3Backbone hard-codes gemma3.{name}="
                f"{expected}. Received: {value!r}"
            )
    if num_layers == 62:  # llama.cpp scales 27B queries by 1/sqrt(hidden / heads)
        raise UnsupportedModelError(
            "Gemma 3 27B scales queries by 1/sqrt(hidden_dim / num_heads), which keras-hub's "
            f"Gemma3DecoderBlock cannot express. Received: block_count={num_layers}"
        )
    rope_type = meta.get("gemma3.rope.scaling.type", "none")
    if rope_type not in ("none", "linear"):
        raise UnsupportedModelError(
            "Only linear rope scaling is supported for gemma3. "
            f"Received: gemma3.rope.scaling.type={rope_type!r}"
        )
    if int(key("attention.value_length")) != head_dim:
        raise ValueError(
            "gemma3 needs key_length == value_length. Received: "
            f"{head_dim} and {key('attention.value_length')}"
        )
    window = meta.get("gemma3.attention.sliding_window")
    return {
        "vocabulary_size": len(_require(meta, "tokenizer.ggml.tokens")),
        "image_size": None,
        "num_layers": num_layers,
        "num_query_heads": int(key("attention.head_count")),
        "num_key_value_heads": int(key("attention.head_count_kv")),
        "hidden_dim": int(key("embedding_length")),
        "intermediate_dim": int(key("feed_forward_length")),
        "head_dim": head_dim,
        "query_head_dim_normalize": True,
        "use_query_key_norm": True,
        "use_post_ffw_norm": True,
        "use_post_attention_norm": True,
        "attention_logit_soft_cap": meta.get("gemma3.attn_logit_softcapping"),
        "final_logit_soft_cap": meta.get("gemma3.final_logit_softcapping"),
        "use_sliding_window_attention": window is not None,
        "sliding_window_size": int(window or 4096),
        "local_rope_scaling_factor": 1.0,
        "global_rope_scaling_factor": float(meta.get("gemma3.rope.scaling.factor", 1.0)),
        # Stored as float32 (9.99999997e-07); round back to 1e-06.
        "layer_norm_epsilon": float(str(np.float32(key("attention.layer_norm_rms_epsilon")))),
    }


def _require(meta: Mapping[str, Any], name: str) -> Any:
    if name not in meta:
        raise ValueError(f"The GGUF file lacks the `{name}` metadata field.")
    return meta[name]


ARCHITECTURES = {
    "gemma3": Architecture(keras_hub.models.Gemma3CausalLM, _gemma3_config, _GEMMA3_TENSORS),
}


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
            f"converts only {', '.join(sorted(ARCHITECTURES))} (Gemma 3 text models). "
            "Use a Gemma 3 GGUF file, or a keras-hub preset of this model "
            f"(--preset NAME or a preset directory). Received: general.architecture={name!r}"
        )
    return ARCHITECTURES[name]


def expand_tensor_names(arch: Architecture, num_layers: int) -> dict:
    """GGUF tensor name -> (keras variable path, Layout), all blocks expanded."""
    names = {}
    for gguf_name, (path, layout) in arch.tensors.items():
        blocks = range(num_layers) if "{i}" in gguf_name else [None]
        for i in blocks:
            names[gguf_name.format(i=i)] = (path.format(i=i), LAYOUTS[layout])
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

    Raises:
        ValueError: If a GGUF tensor is unmapped, missing or misshapen.
    """
    unmapped = [t.name for t in reader.tensors if t.name not in names]
    if unmapped:
        raise ValueError(
            f"GGUF tensor {unmapped[0]!r} has no keras mapping "
            f"({len(unmapped)} unmapped in all: {unmapped[:5]})."
        )
    missing = sorted(set(names) - {t.name for t in reader.tensors})
    if missing:
        raise ValueError(f"The GGUF file lacks tensors {missing[:5]} (of {len(missing)}).")
    for tensor in reader.tensors:
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
        UnsupportedModelError: If the architecture is not gemma3 (see
            `ARCHITECTURES`) or uses what keras-hub's Gemma3Backbone cannot express.
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
        config = arch.build_config(meta)
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
    backbone = arch.causal_lm_cls.backbone_cls(**config, dtype=dtype)
    load_weights(backbone, reader, expand_tensor_names(arch, config["num_layers"]))
    proto = gguf_tokenizer.build_sentencepiece_proto(gguf_tokenizer.read_gguf_vocab(reader))
    preprocessor_cls = arch.causal_lm_cls.preprocessor_cls
    tokenizer = preprocessor_cls.tokenizer_cls(proto=proto, has_vision_tokens=False)
    preprocessor = preprocessor_cls(tokenizer=tokenizer)
    return arch.causal_lm_cls(backbone=backbone, preprocessor=preprocessor)


def _record_context_length(preset_dir: Path, meta: Mapping[str, Any]) -> None:
    """Records the GGUF's `<arch>.context_length` in the preset's metadata.json
    (keras-hub's Gemma 3 config has no field for it; see
    `model.record_context_length`)."""
    arch = meta["general.architecture"]
    length = meta.get(f"{arch}.context_length")
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
