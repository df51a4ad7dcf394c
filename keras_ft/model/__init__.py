"""The keras-hub adapter: presets resolved and loaded, LoRA, the loss, packing.

`presets` (a name -> a local preset directory), `causal_lm` (a preset -> a
loaded CausalLM), `lora` (LoRA and adapters), `loss` (the chunked
output-head loss) and `packing` (segment-masked attention).
"""

from keras_ft.model.causal_lm import build_model, load_backbone, load_causal_lm
from keras_ft.model.lora import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_FILE,
    AdapterMismatchError,
    enable_lora,
    load_adapter,
    read_adapter,
    save_adapter,
)
from keras_ft.model.presets import PresetUnavailableError, resolve_preset

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_FILE",
    "AdapterMismatchError",
    "PresetUnavailableError",
    "build_model",
    "enable_lora",
    "load_adapter",
    "load_backbone",
    "load_causal_lm",
    "read_adapter",
    "resolve_preset",
    "save_adapter",
]
