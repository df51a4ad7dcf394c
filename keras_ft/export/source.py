"""What an export loads: the preset (given, or recorded with the adapter),
and the tuned model itself (`load_tuned`).

A QLoRA adapter (trained on a quantized base) is merged into the FLOAT base
weights: GGUF stores float (or its own q8_0) matrices, not Keras' int8/int4
kernels, so the exported model is float base + LoRA, not the quantized base
it was trained on. `export_preset` says so in its note.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from keras_ft.export.card import model_card
from keras_ft.model.causal_lm import load_causal_lm
from keras_ft.model.lora import ADAPTER_CONFIG_FILE, read_adapter
from keras_ft.model.presets import resolve_preset


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


@dataclasses.dataclass
class Tuned:
    """A tuned model loaded for an export, and what the export records of it.

    Attributes:
        causal_lm: The float base with the adapter applied (LoRA enabled),
            or the plain base without an adapter.
        preset: The base preset, as given or recorded with the adapter.
        adapter: The adapter path as given (file or run directory), or None.
        meta: The adapter's recorded hyperparameters (`adapter_config.json`).
        template: The keras_ft template it was trained with, or None.
        note: `export_preset`'s note on a QLoRA adapter ("" otherwise).
    """

    causal_lm: Any
    preset: str
    adapter: Path | None
    meta: dict
    template: str | None
    note: str

    def card(self, fmt: str, path: str | os.PathLike) -> str:
        """The model card of this model exported as `fmt` to `path` (`card.model_card`)."""
        return model_card(
            fmt,
            self.preset,
            adapter=self.adapter,
            template=self.template,
            path=str(path),
            backbone=type(self.causal_lm.backbone).__name__,
            notes=self.note,
        )


def load_tuned(preset: str | None, adapter: str | os.PathLike | None) -> Tuned:
    """Loads the float base `preset` (else the adapter's) with `adapter` applied.

    A QLoRA adapter is applied to the FLOAT base (`quantize=False`): every
    export writes float weights; `Tuned.note` says so.

    Raises:
        ValueError: as `export_preset` (no adapter there, no preset), or the
            adapter does not fit the preset (`AdapterMismatchError`).
    """
    adapter = Path(adapter) if adapter is not None else None
    preset, note = export_preset(preset, adapter)
    meta = read_adapter(adapter)[1] if adapter is not None else {}
    causal_lm = load_causal_lm(resolve_preset(preset), adapter=adapter, quantize=False)
    return Tuned(causal_lm, preset, adapter, meta, meta.get("template"), note)
