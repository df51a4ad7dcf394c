"""Loads a causal LM preset lean (no initializers), optionally quantized."""

from __future__ import annotations

import contextlib
import logging
import os

import keras
import keras_hub
from keras.src.backend.common import global_state
from keras.src.backend.common.stateless_scope import in_stateless_scope
from keras_hub.src.utils import preset_utils

from keras_ft.config import Config
from keras_ft.model.lora import enable_lora, load_adapter, quantize_backbone
from keras_ft.model.presets import check_sequence_length, resolve_preset

log = logging.getLogger(__name__)


def build_model(cfg: Config, preset_dir: str | None = None, tokenizer=None):
    """Loads `cfg.preset` as a keras-hub CausalLM with LoRA enabled.

    Args:
        preset_dir: `resolve_preset(cfg.preset)`, when the caller has resolved
            it already (resolving may probe the network); None resolves it here.
        tokenizer: the preset's keras-hub tokenizer, when the caller loaded it
            already (to tokenize the data before the model loads): the
            model's preprocessor then uses it instead of loading it again.

    Returns:
        The CausalLM; its backbone is frozen except for the LoRA kernels.
    """
    preset = preset_dir or resolve_preset(cfg.preset)
    check_sequence_length(preset, cfg.sequence_length)  # before loading weights
    causal_lm = load_causal_lm(preset, dtype=cfg.dtype, tokenizer=tokenizer)
    causal_lm.preprocessor.sequence_length = cfg.sequence_length
    quantize_backbone(causal_lm.backbone, cfg.quantize)
    enable_lora(causal_lm.backbone, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    return causal_lm


def load_causal_lm(
    preset_dir: str,
    dtype=None,
    adapter: str | os.PathLike | None = None,
    quantize: bool = True,
    tokenizer=None,
):
    """The one loader of a causal LM: `preset_dir`, optionally with a LoRA adapter.

    Args:
        preset_dir: A preset as `resolve_preset` returns it (resolve it once
            per run and hand it down).
        dtype: The weights' dtype (`cfg.dtype`); None lets keras-hub choose
            per preset.
        adapter: A `.lora.h5` file or a run directory holding one, applied
            with `load_adapter` (its rank, alpha, targets and quantization come
            from the `adapter_config.json` beside it).
        quantize: With `adapter`, rebuild the quantized base a QLoRA adapter
            was trained on first; False applies it to the float base (export).
        tokenizer: the preset's keras-hub tokenizer, if loaded already: the
            preprocessor is built around it (the tokenizer is loaded once).

    Returns:
        The `keras_hub.models.CausalLM`, LoRA-enabled when `adapter` is given.
    """
    causal_lm = _load_lean(preset_dir, dtype, tokenizer)
    if adapter is not None:
        load_adapter(causal_lm, adapter, quantize=quantize)
    return causal_lm


def _load_lean(preset: str, dtype=None, tokenizer=None):
    """`CausalLM.from_preset(preset, dtype=dtype)` without its random initialisation.

    `from_preset` creates every variable with its initializer, then overwrites
    it from the weights file: on Gemma 3 270M, 268 M random weights (~1 GB)
    made to be thrown away. Here `load_backbone` loads the backbone without
    them and `from_preset` builds the task (preprocessor included) around it.
    The weights, the outputs and the random state afterwards (so a seeded LoRA
    init) are the same bit for bit (tests/test_model.py).

    `dtype=None` (keras-hub then resolves it per preset layout) and presets
    with task weights take `from_preset` as is. With `tokenizer`, the
    preprocessor is keras-hub's own for the preset, built around it.
    """
    extra = {}
    if tokenizer is not None:
        extra["preprocessor"] = keras_hub.models.CausalLMPreprocessor.from_preset(
            preset, tokenizer=tokenizer
        )
    if dtype is None or preset_utils.check_file_exists(preset, preset_utils.TASK_WEIGHTS_FILE):
        return keras_hub.models.CausalLM.from_preset(preset, dtype=dtype, **extra)
    return keras_hub.models.CausalLM.from_preset(
        preset, dtype=dtype, backbone=load_backbone(preset, dtype), load_weights=False, **extra
    )


def load_backbone(preset: str, dtype=None):
    """`Backbone.from_preset(preset, dtype=dtype)` without its random initialisation.

    The backbone is built under `StatelessScope(initialize_variables=False)`,
    which defers each variable, then keras-hub's loader assigns the stored
    values directly. Under a `keras.distribution` (a mesh), each deferred
    variable is first given the layout the distribution assigns it (what
    Keras' own variable initialisation does), so each value is placed
    sharded as it is read: the host holds one variable at a time, not a
    random copy of the model (Gemma 160 MB float32 over 1x8: 228 MB host
    peak, 452 MB through `from_preset`). Presets that keras-hub converts on
    load (e.g. `hf://` Transformers checkpoints), other backends and NNX
    setups take `from_preset` as is.
    """
    loader = preset_utils.get_preset_loader(preset)
    if (
        keras.backend.backend() != "jax"
        or keras.config.is_nnx_enabled()
        or in_stateless_scope()
        or not isinstance(loader, preset_utils.KerasPresetLoader)
    ):
        return keras_hub.models.Backbone.from_preset(preset, dtype=dtype)
    with _deferred_variables() as deferred:
        with keras.StatelessScope(initialize_variables=False):
            backbone = keras_hub.models.Backbone.from_preset(
                preset, dtype=dtype, load_weights=False
            )
        distribution = keras.distribution.distribution()
        if distribution is not None:  # place each value sharded as it is assigned
            for variable in backbone.weights:
                if variable._layout is None:
                    variable._layout = distribution.get_variable_layout(variable)
        loader._load_backbone_weights(backbone)  # what from_preset calls
    unset = [v.path for v in deferred if v._value is None]
    if unset:  # load_weights fails on a missing weight, so this is a bug
        raise RuntimeError(f"Loading {preset!r} left variables unset: {unset[:5]}")
    return backbone


@contextlib.contextmanager
def _deferred_variables():
    """Yields the variables created deferred inside the block, and takes them
    off Keras' pending list, so that no later scope initialises them again."""
    key = "uninitialized_variables"
    before = {id(v) for v in global_state.get_global_attribute(key, []) or []}
    deferred = []
    try:
        yield deferred
    finally:
        pending = global_state.get_global_attribute(key, []) or []
        deferred += [v for v in pending if id(v) not in before]
        global_state.set_global_attribute(key, [v for v in pending if id(v) in before])
