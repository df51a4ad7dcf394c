"""Exports of a tuned model into formats other tools open."""

from keras_ft.export.card import model_card
from keras_ft.export.gguf import export_gguf, export_preset_gguf
from keras_ft.export.hf import export_hf, export_preset_hf
from keras_ft.export.merged import export_merged, export_preset_merged, merge_lora
from keras_ft.export.peft import export_peft, export_preset_peft
from keras_ft.export.source import export_preset, load_tuned

__all__ = [
    "export_gguf",
    "export_hf",
    "export_merged",
    "export_peft",
    "export_preset",
    "export_preset_gguf",
    "export_preset_hf",
    "export_preset_merged",
    "export_preset_peft",
    "load_tuned",
    "merge_lora",
    "model_card",
]
