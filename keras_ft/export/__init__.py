"""Exports of a tuned model into formats other tools open."""

from keras_ft.export.gguf import export_gguf, export_preset_gguf
from keras_ft.export.source import export_preset

__all__ = ["export_gguf", "export_preset", "export_preset_gguf"]
