"""keras-hub causal LM -> GGUF file that llama.cpp loads.

The inverse of `keras_ft.gguf.convert`: the same architecture table maps
keras variables to GGUF tensor names and layouts, for Gemma (llama.cpp
`gemma`), Gemma 2 (`gemma2`), Gemma 3 (`gemma3`) and Llama 3 (`llama`, q/k
rows in llama.cpp's rope order, byte-level BPE as `gpt2` with merges). The
metadata keys are the ones llama.cpp's convert_hf_to_gguf.py writes for each
architecture (gguf-py's `GGUFWriter.add_*`). LoRA is folded in because each
EinsumDense's `kernel` property already returns
`W + (lora_alpha / lora_rank) * A @ B` when LoRA is enabled.

transformers' GGUF reader (`from_pretrained(dir, gguf_file=...)`) loads the
gemma2, gemma3 and llama files with keras' logits (tests/export); it has no
`gemma` (Gemma 1) reader, ignores `rope_freqs` (Llama 3.1+ rope scaling:
llama.cpp applies it, transformers does not), and takes Gemma 2's query
scale as 1/sqrt(256) and its soft caps as 50/30 without reading them (right
for Gemma 2 2B and 9B).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gguf
import keras
import numpy as np

from keras_ft.data.tokenizer import TextTokenizer
from keras_ft.export.card import model_card
from keras_ft.files import atomic_path, write_text
from keras_ft.gguf import convert
from keras_ft.gguf import tokenizer as gguf_tokenizer
from keras_ft.model.causal_lm import load_causal_lm
from keras_ft.model.lora import recorded_template
from keras_ft.model.presets import resolve_preset
from keras_ft.preset_files import preset_context_length
from keras_ft.templates import TEMPLATES, Message, get_template

logger = logging.getLogger(__name__)


# The default chat template: keras_ft's `gemma` turn format (a system message
# goes first in the first user turn, as in Google's template; Gemma has no
# system role), or `llama3`'s header format for Llama 3. An adapter's own
# template replaces it (`template`).
GEMMA_CHAT_TEMPLATE = TEMPLATES["gemma"].chat_template()
_DEFAULT_TEMPLATES = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "llama": "llama3"}


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
    context_length: int | None = None,
    template: str | None = None,
) -> Path:
    """Writes a (LoRA-merged) causal LM and its tokenizer as a GGUF file.

    Args:
        causal_lm: A keras-hub causal LM of a supported architecture (Gemma,
            Gemma 2, Gemma 3, Llama 3), with its preprocessor; LoRA-enabled
            layers are merged.
        out_path: The `.gguf` file to write (atomically: temp file, rename).
        dtype: Matrix storage type: `"f32"`, `"f16"`, `"bf16"` or `"q8_0"`.
            Norm vectors are always f32, as in llama.cpp.
        chat_template: Jinja chat template for `tokenizer.chat_template`;
            `None` writes `template`'s.
        context_length: Training context written as `<arch>.context_length`;
            `None`: the model family's (`default_context_length`).
        template: The keras_ft template the model was tuned with (a name or
            a custom format, as in `Config.template` and an adapter's
            `adapter_config.json`), written as Jinja
            (`Template.chat_template`) that llama.cpp and transformers render
            as keras_ft does. `None`: Gemma's `<start_of_turn>` format, or
            `llama3`'s for a Llama 3 model.

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
        chat_template = TEMPLATES[_DEFAULT_TEMPLATES[arch_name]].chat_template()
        if template:
            chat_template = get_template(template).chat_template()
            _check_template_tokens(template, causal_lm.preprocessor.tokenizer)
    backbone = causal_lm.backbone
    _check_not_quantized(backbone)
    if context_length is None:
        context_length = default_context_length(backbone, arch_name)
    qtype, file_type = _QTYPES[dtype]
    arch = convert.ARCHITECTURES[arch_name]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:  # the writer creates it: a new file's mode
        writer = gguf.GGUFWriter(tmp, arch=arch_name)
        writer.add_name(f"keras_ft {arch_name}")
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_context_length(context_length)
        _HPARAM_WRITERS[arch_name](writer, backbone)
        _write_tokenizer(writer, arch, causal_lm)
        writer.add_chat_template(chat_template)
        _add_tensors(writer, backbone, arch, qtype)
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
    a QLoRA adapter is merged into the float base, not quantized again. Its
    model card (`export.card`) goes beside it, `card_path(out_path)`. The
    chat template is `chat_template`, else the keras_ft template recorded
    with `adapter` (see `export_gguf`). The context length is the one the
    preset records (`preset_files.preset_context_length`: a preset converted
    from GGUF keeps its file's), else the model family's.

    Returns:
        `out_path` as a `Path`.
    """
    resolved = resolve_preset(preset)
    causal_lm = load_causal_lm(resolved, adapter=adapter, quantize=False)
    recorded = preset_context_length(resolved)
    out_path = export_gguf(
        causal_lm,
        out_path,
        dtype=dtype,
        chat_template=chat_template,
        template=recorded_template(adapter),
        context_length=recorded[0] if recorded else None,
    )
    # The model card beside the file (a GGUF holds no README): OUT.gguf.README.md.
    text = model_card(
        "gguf",
        preset,
        adapter=adapter,
        path=out_path.name,
        backbone=type(causal_lm.backbone).__name__,
    )
    write_text(card_path(out_path), text)
    return out_path


def card_path(out_path: str | os.PathLike) -> Path:
    """Where `export_preset_gguf` writes the model card of `out_path`."""
    return Path(f"{out_path}.README.md")


def default_context_length(backbone, arch_name: str) -> int:
    """The context a model family was trained for, where its config cannot say.

    keras-hub's Gemma, Gemma 3 and Llama configs record no maximum length
    (rotary positions), so it follows from the family and its rope scaling:
    Gemma and Gemma 2 8192; Gemma 3 32768 (270M, 1B) or, with scaled global
    rope (4B and up), 131072; Llama 3 8192, or with Llama 3.1+ rope scaling
    131072.
    """
    if arch_name == "gemma3":
        return 131072 if backbone.global_rope_scaling_factor != 1.0 else 32768
    if arch_name == "llama":
        return 131072 if backbone.rope_frequency_adjustment_factor else 8192
    return 8192


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
        if isinstance(causal_lm, arch.causal_lm_cls) and arch.matches(causal_lm.backbone):
            return name
    raise NotImplementedError(
        f"GGUF export supports {convert.SUPPORTED} (keras-hub GemmaCausalLM, "
        f"Gemma3CausalLM, Llama3CausalLM). Received: {type(causal_lm).__name__}"
    )


def _check_not_quantized(backbone) -> None:
    for layer in backbone._flatten_layers(include_self=False):
        if getattr(layer, "quantization_mode", None):
            raise NotImplementedError(
                "Export a float model; keras-quantized layers are not supported. "
                f"Received: layer {layer.name!r} with "
                f"quantization_mode={layer.quantization_mode!r}"
            )


def _require(backbone, arch_name: str, needed: dict) -> None:
    """Refuses a backbone setting that llama.cpp's `arch_name` graph cannot run."""
    for name, value in needed.items():
        if getattr(backbone, name) != value:
            raise NotImplementedError(
                f"llama.cpp's {arch_name} needs {name}={value!r}. "
                f"Received: {name}={getattr(backbone, name)!r}"
            )


def _write_gemma_hparams(writer, backbone) -> None:
    """llama.cpp's gemma keys (convert_hf_to_gguf.py's GemmaModel)."""
    _require(
        backbone,
        "gemma",
        {
            "use_sliding_window_attention": False,
            "attention_logit_soft_cap": None,
            "final_logit_soft_cap": None,
        },
    )
    writer.add_feed_forward_length(backbone.intermediate_dim // 2)
    _add_fields(writer, backbone, _GEMMA_FIELDS)


def _write_gemma2_hparams(writer, backbone) -> None:
    """llama.cpp's gemma2 keys (convert_hf_to_gguf.py's Gemma2Model).

    llama.cpp's gemma2 graph always has both post norms, slides the window
    on even layers as keras-hub does, and soft-caps (50 / 30 where a file
    says nothing), so keras models without those are refused; so is 27B
    (46 layers), whose queries llama.cpp scales by 1/sqrt(hidden / heads)
    where keras-hub uses 1/sqrt(head_dim).
    """
    _require(
        backbone,
        "gemma2",
        {
            "use_post_attention_norm": True,
            "use_post_ffw_norm": True,
            "use_sliding_window_attention": True,
        },
    )
    for name in ("attention_logit_soft_cap", "final_logit_soft_cap"):
        if not getattr(backbone, name):
            raise NotImplementedError(
                f"llama.cpp's gemma2 soft-caps logits whatever the file says; set {name} "
                f"(Gemma 2: 50.0 attention, 30.0 final). Received: {name}=None"
            )
    if backbone.num_layers == 46:
        raise NotImplementedError(
            "llama.cpp scales Gemma 2 27B (46 layers) queries by 1/sqrt(hidden_dim / "
            "num_heads), keras-hub by 1/sqrt(head_dim): the file would compute another model."
        )
    writer.add_feed_forward_length(backbone.intermediate_dim // 2)
    _add_fields(writer, backbone, _GEMMA_FIELDS)
    writer.add_attn_logit_softcapping(backbone.attention_logit_soft_cap)
    writer.add_final_logit_softcapping(backbone.final_logit_soft_cap)
    writer.add_sliding_window(backbone.sliding_window_size)


def _write_gemma3_hparams(writer, backbone) -> None:
    """llama.cpp's gemma3 keys; refuses what its gemma3 graph cannot run."""
    _require(
        backbone,
        "gemma3",
        {
            "vision_encoder": None,
            "use_query_key_norm": True,
            "use_post_attention_norm": True,
            "use_post_ffw_norm": True,
            # Without it keras-hub puts 1M rope on every layer; llama.cpp's
            # gemma3 always alternates 5 local (10k rope) : 1 global.
            "use_sliding_window_attention": True,
            "local_rope_scaling_factor": 1.0,
        },
    )
    writer.add_feed_forward_length(backbone.intermediate_dim)
    _add_fields(writer, backbone, _GEMMA_FIELDS)
    writer.add_rope_freq_base(1_000_000.0)  # keras-hub's global-layer rope
    writer.add_sliding_window(backbone.sliding_window_size)
    if backbone.global_rope_scaling_factor != 1.0:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(backbone.global_rope_scaling_factor)
    if backbone.final_logit_soft_cap:
        writer.add_final_logit_softcapping(backbone.final_logit_soft_cap)
    if backbone.attention_logit_soft_cap:
        writer.add_attn_logit_softcapping(backbone.attention_logit_soft_cap)


def _write_llama_hparams(writer, backbone) -> None:
    """llama.cpp's llama keys (convert_hf_to_gguf.py's LlamaModel); Llama 3.1+
    rope scaling is the `rope_freqs` tensor (`_add_tensors`)."""
    _require(backbone, "llama", {"rope_position_scaling_factor": 1.0})
    writer.add_feed_forward_length(backbone.intermediate_dim)
    _add_fields(writer, backbone, _LLAMA_FIELDS)
    writer.add_rope_freq_base(float(backbone.rope_max_wavelength))
    writer.add_rope_dimension_count(backbone.hidden_dim // backbone.num_query_heads)


_HPARAM_WRITERS = {
    "gemma": _write_gemma_hparams,
    "gemma2": _write_gemma2_hparams,
    "gemma3": _write_gemma3_hparams,
    "llama": _write_llama_hparams,
}

# (GGUF key as in `GGUFWriter.add_<key>`, the attribute that holds its value)
_GEMMA_FIELDS = (
    ("embedding_length", "hidden_dim"),
    ("block_count", "num_layers"),
    ("head_count", "num_query_heads"),
    ("head_count_kv", "num_key_value_heads"),
    ("key_length", "head_dim"),
    ("value_length", "head_dim"),
    ("layer_norm_rms_eps", "layer_norm_epsilon"),
)
_LLAMA_FIELDS = (
    ("embedding_length", "hidden_dim"),
    ("block_count", "num_layers"),
    ("head_count", "num_query_heads"),
    ("head_count_kv", "num_key_value_heads"),
    ("layer_norm_rms_eps", "layer_norm_epsilon"),
    ("vocab_size", "vocabulary_size"),
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


def _write_tokenizer(writer, arch, causal_lm) -> None:
    tokenizer = causal_lm.preprocessor.tokenizer
    if arch.tokenizer == "bpe":
        _write_bpe_tokenizer(writer, tokenizer, causal_lm.backbone.vocabulary_size)
        return
    vocab = gguf_tokenizer.build_gguf_vocab(tokenizer.proto)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    _add_fields(writer, vocab, _VOCAB_FIELDS)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)


def _write_bpe_tokenizer(writer, tokenizer, vocabulary_size: int) -> None:
    """Llama 3's byte-level BPE as llama.cpp's `_set_vocab_gpt2` writes it
    (no scores; keras-hub's Llama 3 preprocessor adds the start token)."""
    vocab = gguf_tokenizer.build_gguf_bpe_vocab(
        tokenizer.vocabulary,
        tokenizer.merges,
        tokenizer.special_tokens,
        tokenizer.start_token,
        tokenizer.end_token,
        size=vocabulary_size,
    )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)


def _add_tensors(writer, backbone, arch, qtype) -> None:
    tied = getattr(backbone, "tie_word_embeddings", True)
    names = convert.expand_tensor_names(arch, backbone.num_layers, tied)
    if getattr(backbone, "rope_frequency_adjustment_factor", None):
        writer.add_tensor(convert.ROPE_FREQS, _llama3_rope_factors(backbone))
    for name, (path, layout) in names.items():
        value = keras.ops.convert_to_numpy(convert.get_variable(backbone, path))
        array = np.ascontiguousarray(layout.to_gguf(value.astype(np.float32)))
        data, raw_dtype = _encode(array, qtype)
        writer.add_tensor(name, data, raw_dtype=raw_dtype)


def _llama3_rope_factors(backbone) -> np.ndarray:
    return convert.llama3_rope_factors(
        float(backbone.rope_max_wavelength),
        backbone.hidden_dim // backbone.num_query_heads,
        float(backbone.rope_frequency_adjustment_factor),
        float(backbone.rope_low_freq_factor),
        float(backbone.rope_high_freq_factor),
        int(backbone.rope_pretraining_sequence_length),
    )


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
