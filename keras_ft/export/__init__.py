"""Exports of a tuned model into formats other tools open."""

from keras_ft.export.gguf import export_gguf

__all__ = ["export_gguf"]
