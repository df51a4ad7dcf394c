"""Tuned model -> a merged keras-hub preset that plain keras-hub loads.

The LoRA update is folded into each base kernel (`merge_lora`) and the task
saved with keras-hub's own `save_to_preset`, so
`keras_hub.models.CausalLM.from_preset(OUT)` loads it with no keras_ft
installed. keras_ft's template goes beside it (`card.TEMPLATE_FILE`) and into
the card (`README.md`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from keras_ft.export import card
from keras_ft.export.source import load_tuned
from keras_ft.files import replace_dir, write_json, write_text

logger = logging.getLogger(__name__)


def lora_layers(backbone) -> list:
    """The backbone's LoRA-enabled layers (Keras `Dense`/`EinsumDense`)."""
    return [
        layer
        for layer in backbone._flatten_layers(include_self=False)
        if getattr(layer, "lora_enabled", False)
    ]


def merge_lora(backbone) -> int:
    """Folds each LoRA layer's update into its base kernel, in place.

    The kernel becomes `kernel + (lora_alpha / lora_rank) * lora_kernel_a @
    lora_kernel_b` (Keras' own formula, `EinsumDense.kernel`), computed in
    float32 and stored in the kernel's dtype; the LoRA factors are then
    zeroed, so the model computes what it did and every reader of the base
    kernel (keras-hub's transformers exporter reads `weights[0]`, not the
    merged `kernel` property) sees the tuned weights. Keras' `save_own_variables`
    also merges, but only when saving Keras' own format.

    Returns:
        The number of layers merged (0 for a model without LoRA).

    Raises:
        ValueError: a LoRA layer sits on a quantized kernel (QLoRA loaded on
            its int8/int4 base): load it on the float base to export
            (`load_adapter(..., quantize=False)`).
    """
    layers = lora_layers(backbone)
    for layer in layers:
        if layer.quantization_mode:
            raise ValueError(
                f"Layer {layer.path!r} is quantized ({layer.quantization_mode}); LoRA can "
                "only be merged into float kernels. Load the adapter on the float base "
                "(load_causal_lm(..., quantize=False)), as `keras-ft export` does."
            )
        kernel = next(v for v in layer.weights if v.name == "kernel")
        a = np.asarray(layer.lora_kernel_a.numpy(), np.float32)
        b = np.asarray(layer.lora_kernel_b.numpy(), np.float32)
        update = (layer.lora_alpha / layer.lora_rank) * np.tensordot(a, b, axes=1)
        merged = np.asarray(keras.ops.convert_to_numpy(kernel.value), np.float32) + update
        kernel.assign(keras.ops.cast(merged, kernel.dtype))
        layer.lora_kernel_a.assign(np.zeros(a.shape, np.float32))
        layer.lora_kernel_b.assign(np.zeros(b.shape, np.float32))
    return len(layers)


@contextlib.contextmanager
def export_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yields a fresh temporary directory beside `out_dir`; on success it
    replaces `out_dir` (`files.replace_dir`), on an exception it is removed
    and `out_dir` is left as it was."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp.", dir=out_dir.parent))
    try:
        yield tmp
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_extras(directory: Path, model_card: str, template: str | None) -> None:
    """The card and keras_ft's template record, in a finished export's directory."""
    write_text(directory / card.CARD_FILE, model_card)
    record = card.template_record(template)
    if record:
        write_json(directory / card.TEMPLATE_FILE, record)


def export_merged(
    causal_lm,
    out_dir: str | os.PathLike,
    template: str | None = None,
    model_card: str | None = None,
) -> Path:
    """Writes `causal_lm`, LoRA merged (in place), as a keras-hub preset.

    Args:
        causal_lm: A keras-hub causal LM with its preprocessor (the
            tokenizer is saved with it); its LoRA layers are merged into the
            base kernels in place (`merge_lora`).
        out_dir: The preset directory; written beside it, then renamed over
            it (`files.replace_dir`), so a failed export leaves it as it was.
        template: The keras_ft template it was tuned with, written to
            `card.TEMPLATE_FILE` and the card.
        model_card: The `README.md` text; None writes a minimal card.

    Returns:
        `out_dir` as a `Path`.
    """
    out_dir = Path(out_dir)
    if causal_lm.preprocessor is None:
        raise ValueError("The causal LM needs a preprocessor with a tokenizer to export.")
    merge_lora(causal_lm.backbone)
    if model_card is None:
        model_card = card.model_card("preset", causal_lm.backbone.name, template=template)
    with export_dir(out_dir) as tmp:
        causal_lm.save_to_preset(str(tmp))
        write_extras(tmp, model_card, template)
    logger.info("Wrote the merged keras-hub preset %s", out_dir)
    return out_dir


def export_preset_merged(
    preset: str | None,
    out_dir: str | os.PathLike,
    adapter: str | os.PathLike | None = None,
) -> Path:
    """`preset` (else the adapter's) with `adapter` merged, as a keras-hub preset.

    A QLoRA adapter is merged into the FLOAT base (`source.load_tuned`); the
    card says so. The template recorded with the adapter goes beside it.
    """
    tuned = load_tuned(preset, adapter)
    text = tuned.card("preset", out_dir)
    return export_merged(tuned.causal_lm, out_dir, template=tuned.template, model_card=text)
