"""What an export loads: the preset (given, or recorded with the adapter).

A QLoRA adapter (trained on a quantized base) is merged into the FLOAT base
weights: GGUF stores float (or its own q8_0) matrices, not Keras' int8/int4
kernels, so the exported model is float base + LoRA, not the quantized base
it was trained on. `export_preset` says so in its note.
"""

from __future__ import annotations

from pathlib import Path

from keras_ft.model.lora import ADAPTER_CONFIG_FILE, read_adapter


def export_preset(preset: str | None, adapter: Path | None) -> tuple[str, str]:
    """(preset to load, note on the base) for an export: `preset`, else the
    one recorded with `adapter`. The note says when a QLoRA adapter is
    merged into the float base instead of the quantized one it was trained on.

    Raises:
        ValueError: `adapter` holds no adapter, or no preset is given or
            recorded (the message names the flag to pass).
    """
    meta = {}
    if adapter is not None:
        try:
            adapter_file, meta = read_adapter(adapter)
        except FileNotFoundError as e:
            raise ValueError(f"--adapter {adapter}: {e}") from None
    preset = preset or meta.get("preset")
    if not preset:
        where = (
            f"{adapter_file.parent / ADAPTER_CONFIG_FILE} records none"
            if adapter is not None
            else "no --adapter given"
        )
        raise ValueError(f"Pass --preset: {where}.")
    note = ""
    if meta.get("quantize"):
        note = (
            f"The adapter was trained on {meta.get('preset', preset)} quantized "
            f"{meta['quantize']} (QLoRA); it is merged into the FLOAT base "
            f"{preset}, not the quantized base it was trained on."
        )
    return preset, note
