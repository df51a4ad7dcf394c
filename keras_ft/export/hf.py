"""Tuned model -> Hugging Face transformers safetensors, via keras-hub's exporter.

keras-hub ships a transformers exporter (`CausalLM.export_to_transformers`,
that is `hf_exporter.export_to_safetensors`: config.json, model.safetensors,
the tokenizer files) for the backbones in its `MODEL_CONFIGS`; keras_ft merges the LoRA update first (keras-hub's Gemma
exporter reads the base kernels, not the merged `kernel` property), then adds
what the exporter leaves out: the trained template as `chat_template` in
tokenizer_config.json, its stop tokens as `eos_token_id` in
generation_config.json, keras_ft's template record and the model card.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from keras_hub.src.utils.transformers.export import hf_exporter

from keras_ft.data.tokenizer import TextTokenizer
from keras_ft.export import card
from keras_ft.export.merged import export_dir, merge_lora, write_extras
from keras_ft.export.source import load_tuned
from keras_ft.files import write_json
from keras_ft.templates import get_template

logger = logging.getLogger(__name__)


# Backbone settings transformers' model always has and keras-hub's exporter
# does not write: a backbone without them would load with other logits.
_HF_NEEDS = {
    "Gemma3Backbone": {
        "use_query_key_norm": True,
        "use_post_attention_norm": True,
        "use_post_ffw_norm": True,
        "final_logit_soft_cap": None,
        "attention_logit_soft_cap": None,
    },
}


def supported_backbones() -> list[str]:
    """The backbone classes keras-hub's transformers exporter writes."""
    return sorted(set(hf_exporter.MODEL_CONFIGS) & set(hf_exporter.MODEL_EXPORTERS))


def check_supported(causal_lm) -> None:
    """Refuses a model keras-hub's transformers exporter cannot write (right).

    Raises:
        ValueError: naming the backbone (or tokenizer) class and what is
            supported.
    """
    backbone = causal_lm.backbone
    name = type(backbone).__name__
    if name not in supported_backbones():
        raise ValueError(
            f"keras-hub cannot export a {name} to Hugging Face transformers; its exporter "
            f"supports {supported_backbones()}. Export a keras-hub preset instead "
            "(`keras-ft export preset`)."
        )
    tokenizer = causal_lm.preprocessor.tokenizer if causal_lm.preprocessor else None
    tokenizer_name = type(tokenizer).__name__
    if tokenizer is None or tokenizer_name not in hf_exporter.MODEL_TOKENIZER_CONFIGS:
        raise ValueError(
            f"keras-hub cannot export the tokenizer {tokenizer_name} to Hugging Face "
            f"transformers; its exporter supports {sorted(hf_exporter.MODEL_TOKENIZER_CONFIGS)}."
        )
    for field, value in _HF_NEEDS.get(name, {}).items():
        if getattr(backbone, field) != value:
            raise ValueError(
                f"transformers' {name.removesuffix('Backbone')} model needs {field}={value!r}, "
                f"which keras-hub's exporter assumes; this {name} has "
                f"{field}={getattr(backbone, field)!r}. Export a keras-hub preset instead "
                "(`keras-ft export preset`)."
            )
    # keras-hub's Gemma (1) exporter writes key/value head 0 only (`weights[0][0]`):
    # right for Gemma 2B's one key/value head, wrong for more.
    if name == "GemmaBackbone" and backbone.num_key_value_heads != 1:
        raise ValueError(
            "keras-hub's transformers exporter writes one key/value head of a "
            f"GemmaBackbone; this one has num_key_value_heads={backbone.num_key_value_heads}. "
            "Export a keras-hub preset instead (`keras-ft export preset`)."
        )


def stop_token_ids(template: str, keras_tokenizer) -> list[int]:
    """The vocabulary ids of `template`'s stop tokens (generation's eos).

    Raises:
        ValueError: the vocabulary lacks one (transformers would never stop).
    """
    tokenizer = TextTokenizer(keras_tokenizer)
    ids = []
    for token in get_template(template).stop_tokens:
        try:
            ids.append(tokenizer.special_id(token))
        except ValueError:
            raise ValueError(
                f"The template's stop token {token!r} is not in this model's vocabulary, "
                f"so generation would not stop on it. Received: template={template!r}"
            ) from None
    return ids


def _update_json(path: Path, **values) -> None:
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data.update(values)
    write_json(path, data)


def export_hf(
    causal_lm,
    out_dir: str | os.PathLike,
    template: str | None = None,
    model_card: str | None = None,
) -> Path:
    """Writes `causal_lm`, LoRA merged (in place), as transformers safetensors.

    Args:
        causal_lm: A keras-hub causal LM with its preprocessor, of a backbone
            keras-hub's exporter supports (`supported_backbones()`).
        out_dir: The directory `AutoModelForCausalLM.from_pretrained` and
            `AutoTokenizer.from_pretrained` load; written beside it, then
            renamed over it.
        template: The keras_ft template it was tuned with: its Jinja form
            becomes tokenizer_config.json's `chat_template` and its stop
            tokens generation_config.json's `eos_token_id`. None leaves
            keras-hub's files as they are.
        model_card: The `README.md` text; None writes a minimal card.

    Returns:
        `out_dir` as a `Path`.

    Raises:
        ValueError: an unsupported backbone or tokenizer (`check_supported`),
            or a template whose stop tokens the vocabulary lacks.
    """
    out_dir = Path(out_dir)
    check_supported(causal_lm)
    tokenizer = causal_lm.preprocessor.tokenizer
    record = card.template_record(template)
    stops = stop_token_ids(template, tokenizer) if template else []
    merge_lora(causal_lm.backbone)
    if model_card is None:
        model_card = card.model_card("hf", causal_lm.backbone.name, template=template)
    with export_dir(out_dir) as tmp:
        causal_lm.export_to_transformers(str(tmp))  # keras-hub's hf_exporter
        if record.get("chat_template"):
            _update_json(tmp / "tokenizer_config.json", chat_template=record["chat_template"])
        if stops:
            ids = {
                "bos_token_id": getattr(tokenizer, "start_token_id", None),
                "pad_token_id": getattr(tokenizer, "pad_token_id", None),
            }
            _update_json(
                tmp / "generation_config.json",
                eos_token_id=stops,
                **{k: int(v) for k, v in ids.items() if v is not None},
            )
        write_extras(tmp, model_card, template)
    logger.info("Wrote the transformers model %s", out_dir)
    return out_dir


def export_preset_hf(
    preset: str | None,
    out_dir: str | os.PathLike,
    adapter: str | os.PathLike | None = None,
) -> Path:
    """`preset` (else the adapter's) with `adapter` merged, as transformers
    safetensors; without `adapter`, the base (what a PEFT export applies to).

    A QLoRA adapter is merged into the FLOAT base (`source.load_tuned`).
    """
    tuned = load_tuned(preset, adapter)
    check_supported(tuned.causal_lm)  # before the card reads anything
    text = tuned.card("hf", out_dir)
    return export_hf(tuned.causal_lm, out_dir, template=tuned.template, model_card=text)
