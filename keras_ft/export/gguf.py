"""keras-hub causal LM -> GGUF file that llama.cpp loads.

The inverse of `keras_ft.convert`: the same architecture table maps keras
variables to GGUF tensor names and layouts. LoRA is folded in because each
EinsumDense's `kernel` property already returns
`W + (lora_alpha / lora_rank) * A @ B` when LoRA is enabled.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gguf
import keras
import numpy as np

from keras_ft.data.tokenizer import TextTokenizer
from keras_ft.files import atomic_path
from keras_ft.gguf import convert
from keras_ft.gguf import tokenizer as gguf_tokenizer
from keras_ft.model.causal_lm import load_causal_lm
from keras_ft.model.lora import recorded_template
from keras_ft.model.presets import resolve_preset
from keras_ft.templates import TEMPLATES, Message, get_template

logger = logging.getLogger(__name__)


# The default chat template: keras_ft's `gemma` turn format (a system message
# goes first in the first user turn, as in Google's template; Gemma has no
# system role). An adapter's own template replaces it (`template`).
GEMMA_CHAT_TEMPLATE = TEMPLATES["gemma"].chat_template()


_QTYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
GGUF_TYPES = tuple(_QTYPES)  # what `dtype` (the CLI's --outtype) may be


def export_gguf(
    causal_lm: keras.Model,
    out_path: str | os.PathLike,
    dtype: str = "f16",
    chat_template: str | None = None,
    context_length: int = 32768,
    template: str | None = None,
) -> Path:
    """Writes a (LoRA-merged) causal LM and its tokenizer as a GGUF file.

    Args:
        causal_lm: A keras-hub causal LM of a supported architecture (Gemma 3),
            with its preprocessor; LoRA-enabled layers are merged.
        out_path: The `.gguf` file to write (atomically: temp file, rename).
        dtype: Matrix storage type: `"f32"`, `"f16"`, `"bf16"` or `"q8_0"`.
            Norm vectors are always f32, as in llama.cpp.
        chat_template: Jinja chat template for `tokenizer.chat_template`;
            `None` writes `template`'s.
        context_length: Training context written as `<arch>.context_length`.
        template: The keras_ft template the model was tuned with (a name or
            a custom format, as in `Config.template` and an adapter's
            `adapter_config.json`), written as Jinja
            (`Template.chat_template`) that llama.cpp and transformers render
            as keras_ft does. `None`: Gemma's `<start_of_turn>` format.

    Returns:
        `out_path` as a `Path`.

    Raises:
        ValueError: If `dtype` or `template` is unknown, or the model has no
            tokenizer.
        NotImplementedError: If the architecture or quantization is unsupported.
    """
    if dtype not in _QTYPES:
        raise ValueError(f"dtype must be one of {sorted(_QTYPES)}. Received: dtype={dtype!r}")
    arch_name = _architecture_name(causal_lm)
    if causal_lm.preprocessor is None:
        raise ValueError("The causal LM needs a preprocessor with a tokenizer to export.")
    if chat_template is None:
        chat_template = GEMMA_CHAT_TEMPLATE
        if template:
            chat_template = get_template(template).chat_template()
            _check_template_tokens(template, causal_lm.preprocessor.tokenizer)
    backbone = causal_lm.backbone
    _check_not_quantized(backbone)
    qtype, file_type = _QTYPES[dtype]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:  # the writer creates it: a new file's mode
        writer = gguf.GGUFWriter(tmp, arch=arch_name)
        writer.add_name(f"keras_ft {arch_name}")
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _HPARAM_WRITERS[arch_name](writer, backbone, context_length)
        _write_tokenizer(writer, causal_lm.preprocessor.tokenizer.proto)
        writer.add_chat_template(chat_template)
        _add_tensors(writer, backbone, convert.ARCHITECTURES[arch_name], qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    logger.info("Wrote %s (%s)", out_path, dtype)
    return out_path


def export_preset_gguf(
    preset: str,
    out_path: str | os.PathLike,
    adapter: str | os.PathLike | None = None,
    dtype: str = "f16",
    chat_template: str | None = None,
) -> Path:
    """Writes `preset`, with `adapter` merged into its FLOAT weights, as GGUF.

    `preset` is a name or directory as `export.source.export_preset` gives it;
    a QLoRA adapter is merged into the float base, not quantized again. The
    chat template is `chat_template`, else the keras_ft template recorded
    with `adapter` (see `export_gguf`).

    Returns:
        `out_path` as a `Path`.
    """
    causal_lm = load_causal_lm(resolve_preset(preset), adapter=adapter, quantize=False)
    return export_gguf(
        causal_lm,
        out_path,
        dtype=dtype,
        chat_template=chat_template,
        template=recorded_template(adapter),
    )


def _check_template_tokens(template: str, keras_tokenizer) -> None:
    """Refuses a template whose special tokens this vocabulary lacks."""
    tokenizer = TextTokenizer(keras_tokenizer)
    probe = [Message("system", "s"), Message("user", "u"), Message("assistant", "a")]
    for segment in get_template(template).render(probe):
        if segment.special:
            try:
                tokenizer.special_id(segment.text)
            except ValueError:
                raise ValueError(
                    f"The template uses the token {segment.text!r}, which this model's "
                    "vocabulary lacks; llama.cpp would read it as plain text. Received: "
                    f"template={template!r}"
                ) from None


def _architecture_name(causal_lm: keras.Model) -> str:
    for name, arch in convert.ARCHITECTURES.items():
        if isinstance(causal_lm, arch.causal_lm_cls):
            return name
    raise NotImplementedError(
        f"GGUF export supports {sorted(convert.ARCHITECTURES)}. "
        f"Received: {type(causal_lm).__name__}"
    )


def _check_not_quantized(backbone) -> None:
    for layer in backbone._flatten_layers(include_self=False):
        if getattr(layer, "quantization_mode", None):
            raise NotImplementedError(
                "Export a float model; keras-quantized layers are not supported. "
                f"Received: layer {layer.name!r} with "
                f"quantization_mode={layer.quantization_mode!r}"
            )


def _write_gemma3_hparams(writer, backbone, context_length: int) -> None:
    """llama.cpp's gemma3 keys; refuses what its gemma3 graph cannot run."""
    needed = {
        "vision_encoder": None,
        "use_query_key_norm": True,
        "use_post_attention_norm": True,
        "use_post_ffw_norm": True,
        # Without it keras-hub puts 1M rope on every layer; llama.cpp's
        # gemma3 always alternates 5 local (10k rope) : 1 global.
        "use_sliding_window_attention": True,
        "local_rope_scaling_factor": 1.0,
    }
    for name, value in needed.items():
        if getattr(backbone, name) != value:
            raise NotImplementedError(
                f"llama.cpp's gemma3 needs {name}={value!r}. "
                f"Received: {name}={getattr(backbone, name)!r}"
            )
    writer.add_context_length(context_length)
    _add_fields(writer, backbone, _GEMMA3_FIELDS)
    writer.add_rope_freq_base(1_000_000.0)  # keras-hub's global-layer rope
    writer.add_sliding_window(backbone.sliding_window_size)
    if backbone.global_rope_scaling_factor != 1.0:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(backbone.global_rope_scaling_factor)
    if backbone.final_logit_soft_cap:
        writer.add_final_logit_softcapping(backbone.final_logit_soft_cap)
    if backbone.attention_logit_soft_cap:
        writer.add_attn_logit_softcapping(backbone.attention_logit_soft_cap)


_HPARAM_WRITERS = {"gemma3": _write_gemma3_hparams}

# (GGUF key as in `GGUFWriter.add_<key>`, the attribute that holds its value)
_GEMMA3_FIELDS = (
    ("embedding_length", "hidden_dim"),
    ("block_count", "num_layers"),
    ("feed_forward_length", "intermediate_dim"),
    ("head_count", "num_query_heads"),
    ("head_count_kv", "num_key_value_heads"),
    ("key_length", "head_dim"),
    ("value_length", "head_dim"),
    ("layer_norm_rms_eps", "layer_norm_epsilon"),
)
_VOCAB_FIELDS = (
    ("token_list", "tokens"),
    ("token_scores", "scores"),
    ("token_types", "token_types"),
    ("bos_token_id", "bos_id"),
    ("eos_token_id", "eos_id"),
    ("unk_token_id", "unk_id"),
    ("pad_token_id", "pad_id"),
)


def _add_fields(writer, source, fields) -> None:
    """`writer.add_<key>(source.<attribute>)` for each (key, attribute), in order."""
    for key, attribute in fields:
        getattr(writer, f"add_{key}")(getattr(source, attribute))


def _write_tokenizer(writer, proto: bytes) -> None:
    vocab = gguf_tokenizer.build_gguf_vocab(proto)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    _add_fields(writer, vocab, _VOCAB_FIELDS)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)


def _add_tensors(writer, backbone, arch, qtype) -> None:
    names = convert.expand_tensor_names(arch, backbone.num_layers)
    for name, (path, layout) in names.items():
        value = keras.ops.convert_to_numpy(convert.get_variable(backbone, path))
        array = np.ascontiguousarray(layout.to_gguf(value.astype(np.float32)))
        data, raw_dtype = _encode(array, qtype)
        writer.add_tensor(name, data, raw_dtype=raw_dtype)


def _encode(array: np.ndarray, qtype) -> tuple[np.ndarray, object]:
    """Stores vectors as f32 and matrices as `qtype` (f16 if rows don't fit)."""
    if array.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
        return array, None
    block_size, _ = gguf.GGML_QUANT_SIZES[qtype]
    if array.shape[-1] % block_size:
        logger.warning(
            "Row size %d is not a multiple of %d; storing f16.", array.shape[-1], block_size
        )
        qtype = gguf.GGMLQuantizationType.F16
    if qtype == gguf.GGMLQuantizationType.F16:
        return array.astype(np.float16), None
    return gguf.quants.quantize(array, qtype), qtype
