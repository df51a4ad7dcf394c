"""keras-hub LoRA adapter -> a PEFT adapter for the transformers export of its base.

`adapter_model.safetensors` + `adapter_config.json`, which
`peft.PeftModel.from_pretrained(base, OUT)` applies to the base exported by
`keras-ft export hf --preset BASE` (keras-hub's transformers exporter), giving
the tuned model's logits.

Keras' LoRA factors follow the kernel's einsum layout: `lora_kernel_a` has the
kernel's shape with its last axis replaced by the rank, `lora_kernel_b` is
(rank, last axis). For a query/key/value kernel (hidden, heads, head_dim) or
(heads, hidden, head_dim), A is therefore per head and B shared by the heads:
`delta[head] = A[head] @ B`. PEFT's Linear factors are one (r, in) A and one
(out, r) B. An exact conversion stacks the heads' A factors into a rank
heads * r A and puts B on the block diagonal of a (heads * head_dim,
heads * r) B; those modules get that rank (`rank_pattern`) and alpha * heads
(`alpha_pattern`), so PEFT's scale alpha / r stays Keras' lora_alpha /
lora_rank. Dense and output-projection factors convert with a transpose.
"""

from __future__ import annotations

import logging
import os
import re
import string
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from keras_ft.export import card
from keras_ft.export.hf import check_supported
from keras_ft.export.merged import export_dir, lora_layers, write_extras
from keras_ft.export.source import load_tuned
from keras_ft.files import write_json

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"

_ATTENTION = {
    "query": "self_attn.q_proj",
    "key": "self_attn.k_proj",
    "value": "self_attn.v_proj",
    "attention_output": "self_attn.o_proj",
}
# keras-hub layer name -> transformers module below `model.layers.{i}`, per
# backbone: the same modules keras-hub's transformers exporter writes.
MODULES = {
    "GemmaBackbone": {
        **_ATTENTION,
        "ffw_gating": "mlp.gate_proj",
        "ffw_gating_2": "mlp.up_proj",
        "ffw_linear": "mlp.down_proj",
    },
    "Llama3Backbone": {
        **_ATTENTION,
        "feedforward_gate_dense": "mlp.gate_proj",
        "feedforward_intermediate_dense": "mlp.up_proj",
        "feedforward_output_dense": "mlp.down_proj",
    },
}
MODULES["Gemma3Backbone"] = MODULES["GemmaBackbone"]


def _equation(layer) -> tuple[str, str, str]:
    """(input, kernel, output) axes of a LoRA layer's einsum; a Dense is
    `...i,io->...o`."""
    equation = getattr(layer, "equation", None) or "bi,io->bo"
    inputs, output = equation.split("->")
    x, kernel = inputs.split(",")
    return x, kernel, output


def peft_factors(layer) -> tuple[np.ndarray, np.ndarray, int]:
    """(A (R, in), B (out, R), blocks) of one Keras LoRA layer, in the layout of
    transformers' Linear weight (out, in) as keras-hub's exporter flattens it:
    input axes in the input's order, output axes in the output's order.

    `blocks` is the number of heads the factors were per head over (1 for a
    plain Dense); R = blocks * lora_rank, and
    B @ A == the Keras update (A_keras @ B_keras) in that layout.
    """
    x, kernel, output = _equation(layer)
    last = kernel[-1]
    in_axes = [c for c in x if c in kernel]
    out_axes = [c for c in output if c in kernel]
    blocks = [c for c in kernel[:-1] if c in out_axes]
    if last not in out_axes or sorted(in_axes + out_axes) != sorted(kernel):
        raise NotImplementedError(
            f"Cannot convert the LoRA factors of {layer.path!r} (equation "
            f"{layer.equation!r}) to a Linear layer's."
        )
    a = np.asarray(layer.lora_kernel_a.numpy(), np.float32)
    b = np.asarray(layer.lora_kernel_b.numpy(), np.float32)
    rank = b.shape[0]
    sizes = dict(zip(kernel[:-1], a.shape[:-1]))
    sizes[last] = b.shape[1]
    block_size = int(np.prod([sizes[c] for c in blocks], dtype=np.int64))
    free = [c for c in string.ascii_letters if c not in kernel]
    r, copies = free[0], free[1 : 1 + len(blocks)]  # the rank axis; blocks' copies
    g, gc = "".join(blocks), "".join(copies)
    a_peft = np.einsum(f"{kernel[:-1]}{r}->{g}{r}{''.join(in_axes)}", a)
    a_peft = a_peft.reshape(block_size * rank, -1)
    # delta over the block axes: B_peft[(..blocks..), (block copies, r)]
    eye = np.eye(block_size, dtype=np.float32).reshape(
        [sizes[c] for c in blocks] * 2 if blocks else []
    )
    b_peft = np.einsum(f"{g}{gc},{r}{last}->{''.join(out_axes)}{gc}{r}", eye, b)
    b_peft = b_peft.reshape(-1, block_size * rank)
    # Contiguous copies: safetensors writes an array's buffer, not its view.
    return np.ascontiguousarray(a_peft), np.ascontiguousarray(b_peft), block_size


def _module_name(layer, modules: dict) -> str:
    found = re.search(r"_(\d+)/", layer.path)
    if layer.name not in modules or found is None:
        raise NotImplementedError(
            f"No transformers module for the LoRA layer {layer.path!r}; the PEFT export "
            f"maps {sorted(modules)}."
        )
    return f"model.layers.{found.group(1)}.{modules[layer.name]}"


def export_peft(
    causal_lm,
    out_dir: str | os.PathLike,
    base_model: str = "",
    template: str | None = None,
    model_card: str | None = None,
) -> Path:
    """Writes `causal_lm`'s LoRA layers as a PEFT LoRA adapter.

    Args:
        causal_lm: A keras-hub causal LM with LoRA enabled (an adapter
            loaded), of a backbone in `MODULES` that keras-hub exports to
            transformers; left unchanged.
        out_dir: The adapter directory; written beside it, then renamed.
        base_model: `base_model_name_or_path` in adapter_config.json (the
            keras-hub preset; PEFT's own loader takes the base model as given).
        template: The keras_ft template it was tuned with (record and card).
        model_card: The `README.md` text; None writes a minimal card.

    Returns:
        `out_dir` as a `Path`.

    Raises:
        ValueError: no LoRA layers, or an unsupported backbone.
    """
    check_supported(causal_lm)
    backbone = causal_lm.backbone
    name = type(backbone).__name__
    if name not in MODULES or getattr(backbone, "vision_encoder", None) is not None:
        raise ValueError(
            f"The PEFT export maps the modules of text-only {sorted(MODULES)}. "
            f"Received: {name}" + (" with a vision encoder" if name in MODULES else "")
        )
    layers = lora_layers(backbone)
    if not layers:
        raise ValueError("The model has no LoRA layers: load an adapter to export it as PEFT.")
    tensors, ranks, alphas, targets = {}, {}, {}, []
    rank, alpha = int(layers[0].lora_rank), float(layers[0].lora_alpha)
    for layer in layers:
        module = _module_name(layer, MODULES[name])
        a, b, blocks = peft_factors(layer)
        tensors[f"base_model.model.{module}.lora_A.weight"] = a
        tensors[f"base_model.model.{module}.lora_B.weight"] = b
        suffix = module.rsplit(".", 1)[1]  # q_proj: the same in every block
        if suffix not in targets:
            targets.append(suffix)
        if blocks != 1 or layer.lora_rank != rank or layer.lora_alpha != alpha:
            ranks[suffix] = int(blocks * layer.lora_rank)
            alphas[suffix] = float(blocks * layer.lora_alpha)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": targets,
        "rank_pattern": ranks,
        "alpha_pattern": alphas,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    if model_card is None:
        model_card = card.model_card("peft", base_model or backbone.name, template=template)
    with export_dir(out_dir) as tmp:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        write_json(tmp / PEFT_CONFIG, config)
        write_extras(tmp, model_card, template)
    logger.info("Wrote the PEFT adapter %s", out_dir)
    return Path(out_dir)


def export_preset_peft(
    preset: str | None,
    out_dir: str | os.PathLike,
    adapter: str | os.PathLike | None = None,
) -> Path:
    """`adapter` (on `preset`, else its own) as a PEFT adapter for the base's
    transformers export (`keras-ft export hf --preset BASE`).

    A QLoRA adapter's factors apply to the FLOAT base.
    """
    if adapter is None:
        raise ValueError("Pass --adapter: a PEFT export converts an adapter.")
    tuned = load_tuned(preset, adapter)
    check_supported(tuned.causal_lm)
    text = tuned.card("peft", out_dir)
    return export_peft(
        tuned.causal_lm, out_dir, base_model=tuned.preset, template=tuned.template, model_card=text
    )
