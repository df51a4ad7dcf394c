"""Loads a causal LM preset, enables LoRA, and saves/loads adapters."""

from __future__ import annotations

import contextlib
import difflib
import gc
import json
import logging
import os
import warnings
from pathlib import Path

import keras

from keras_ft import hub
from keras_ft.config import EMBEDDED_PRESET, Config

log = logging.getLogger(__name__)

ATTENTION_LAYERS = ("query", "key", "value", "attention_output")
ADAPTER_FILE = "adapter.lora.h5"
ADAPTER_CONFIG_FILE = "adapter_config.json"
HF_HOST = "huggingface.co"  # Kaggle's host comes from kagglesdk (hub.kaggle_host)


class PresetUnavailableError(RuntimeError):
    """A preset cannot be loaded here (no network, credentials or cache)."""


def build_model(cfg: Config):
    """Loads `cfg.preset` as a keras-hub CausalLM with LoRA enabled.

    Returns:
        The CausalLM; its backbone is frozen except for the LoRA kernels.
    """
    preset = resolve_preset(cfg.preset)
    check_sequence_length(preset, cfg.sequence_length)  # before loading weights
    causal_lm = load_causal_lm(preset, dtype=cfg.dtype)
    causal_lm.preprocessor.sequence_length = cfg.sequence_length
    quantize_backbone(causal_lm.backbone, cfg.quantize)
    enable_lora(causal_lm.backbone, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    return causal_lm


def load_causal_lm(preset: str, dtype=None):
    """`CausalLM.from_preset(preset, dtype=dtype)` without its random initialisation.

    `from_preset` creates every variable with its initializer, then overwrites
    it from the weights file: on Gemma 3 270M, 268 M random weights (~1 GB)
    made to be thrown away. Here `load_backbone` loads the backbone without
    them and `from_preset` builds the task (preprocessor included) around it.
    The weights, the outputs and the random state afterwards (so a seeded LoRA
    init) are the same bit for bit (tests/test_model.py).

    `dtype=None` (keras-hub then resolves it per preset layout) and presets
    with task weights take `from_preset` as is.
    """
    import keras_hub
    from keras_hub.src.utils import preset_utils

    if dtype is None or preset_utils.check_file_exists(preset, preset_utils.TASK_WEIGHTS_FILE):
        return keras_hub.models.CausalLM.from_preset(preset, dtype=dtype)
    return keras_hub.models.CausalLM.from_preset(
        preset, dtype=dtype, backbone=load_backbone(preset, dtype), load_weights=False)


def load_backbone(preset: str, dtype=None):
    """`Backbone.from_preset(preset, dtype=dtype)` without its random initialisation.

    The backbone is built under `StatelessScope(initialize_variables=False)`,
    which defers each variable, then keras-hub's loader assigns the stored
    values directly. Presets that keras-hub converts on load (e.g. `hf://`
    Transformers checkpoints), other backends and distributed/NNX setups take
    `from_preset` as is.
    """
    import keras_hub
    from keras.src.backend.common.stateless_scope import in_stateless_scope
    from keras_hub.src.utils import preset_utils

    loader = preset_utils.get_preset_loader(preset)
    if (keras.backend.backend() != "jax" or keras.config.is_nnx_enabled()
            or keras.distribution.distribution() is not None or in_stateless_scope()
            or not isinstance(loader, preset_utils.KerasPresetLoader)):
        return keras_hub.models.Backbone.from_preset(preset, dtype=dtype)
    with _deferred_variables() as deferred:
        with keras.StatelessScope(initialize_variables=False):
            backbone = keras_hub.models.Backbone.from_preset(preset, dtype=dtype,
                                                             load_weights=False)
        loader._load_backbone_weights(backbone)  # what from_preset calls
    unset = [v.path for v in deferred if v._value is None]
    if unset:  # load_weights fails on a missing weight, so this is a bug
        raise RuntimeError(f"Loading {preset!r} left variables unset: {unset[:5]}")
    return backbone


@contextlib.contextmanager
def _deferred_variables():
    """Yields the variables created deferred inside the block, and takes them
    off Keras' pending list, so that no later scope initialises them again."""
    from keras.src.backend.common import global_state

    key = "uninitialized_variables"
    before = {id(v) for v in global_state.get_global_attribute(key, []) or []}
    deferred = []
    try:
        yield deferred
    finally:
        pending = global_state.get_global_attribute(key, []) or []
        deferred += [v for v in pending if id(v) not in before]
        global_state.set_global_attribute(key, [v for v in pending if id(v) in before])


def quantize_backbone(backbone, mode: str) -> None:
    """QLoRA's frozen base: quantizes the backbone's weights in place ("" = off).

    Must come before `enable_lora`: Keras then keeps int8/int4 kernels and adds
    float32 LoRA kernels on top (quantizing afterwards would merge them).
    The token embedding stays in float, as bitsandbytes' QLoRA keeps its
    head: it is also the output head, and keras_ft's chunked loss needs it in
    float; quantized, every step would build full [batch, length, vocab]
    logits, which on Gemma 3 270M raised the training peak above float32's
    (benchmarks/RESULTS.md).
    """
    if not mode:
        return
    current = {layer.quantization_mode for layer in backbone._flatten_layers()
               if getattr(layer, "quantization_mode", None)}
    if current == {mode}:
        return  # already quantized the same way
    if current:
        raise ValueError(f"The backbone is already quantized to {sorted(current)}; cannot "
                         f"quantize it to {mode!r}. Load a float preset.")
    embedding = backbone.token_embedding
    # Keras runs a full gc.collect() per quantized layer (0.5 s each with
    # TensorFlow loaded); frozen objects are skipped, so only new ones are scanned.
    gc.freeze()
    try:
        with warnings.catch_warnings():  # Keras warns for each layer it leaves as is
            warnings.filterwarnings("ignore", message=".*does not have a `quantize` method")
            backbone.quantize(mode, filters=lambda layer: layer is not embedding)
    finally:
        gc.unfreeze()


def resolve_preset(preset: str) -> str:
    """Turns a preset spec into something `from_preset` loads, or fails fast.

    Accepts the embedded default, a `.gguf` file, a local preset directory,
    `kaggle://` and `hf://` handles, and keras-hub preset names. A hub preset
    not complete in kagglehub's cache is refused at once under
    `KERAS_FT_OFFLINE=1`, and within `hub.PROBE_TIMEOUT` seconds when its
    host cannot be reached (see `hub`).

    Raises:
        PresetUnavailableError: a hub preset that cannot be reached from here.
        ValueError: an unknown preset name (with close matches).
    """
    if preset == EMBEDDED_PRESET:
        from keras_ft.default_model import embedded_preset_dir

        return str(embedded_preset_dir())
    if preset.endswith(".gguf") and Path(preset).is_file():
        from keras_ft.default_model import converted_preset_dir

        return str(converted_preset_dir(preset))
    if Path(preset).is_dir():
        if not (Path(preset) / "config.json").exists():
            raise ValueError(f"{preset} is a directory but not a keras-hub preset "
                             "(no config.json). Received: preset={preset!r}")
        return preset
    handle = preset
    if "://" not in preset:
        known = _known_presets()
        if preset not in known:
            close = difflib.get_close_matches(preset, list(known), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"Unknown preset {preset!r}.{hint} Pass a keras-hub preset name, "
                "a kaggle:// or hf:// handle, a local preset directory, a .gguf "
                f"file, or {EMBEDDED_PRESET!r} (the offline default).")
        handle = known[preset]
    return _check_reachable(preset, handle)


def _known_presets() -> dict[str, str]:
    import keras_hub

    return {name: meta.get("kaggle_handle", "")
            for name, meta in keras_hub.models.CausalLM.presets.items()}


def _check_reachable(preset: str, handle: str) -> str:
    """`preset` if it can be loaded from here, else a fast, actionable error.

    A Kaggle preset complete in kagglehub's cache needs no network (an
    unversioned one is then loaded from its cached directory, as kagglehub
    would otherwise ask the server for the current version). Otherwise the
    hub is probed with `hub.unreachable`, bounded even when name resolution
    hangs; `KERAS_FT_OFFLINE=1` skips the probe.
    """
    if not handle.startswith(("kaggle://", "hf://")):
        return preset
    cached = _in_local_cache(handle)
    if cached:
        versioned = len(handle[len("kaggle://"):].strip("/").split("/")) == 5
        return preset if versioned else str(cached)
    host = hub.kaggle_host() if handle.startswith("kaggle://") else HF_HOST
    if hub.offline():
        why = f"{hub.OFFLINE_ENV} is set"
    else:
        reason = hub.unreachable(host)
        if reason is None:
            return preset
        why = f"{host} is not reachable ({reason})"
    raise PresetUnavailableError(
        f"Cannot load preset {preset!r}: {why} and the preset is not in the "
        "local cache. Either connect to the network (Kaggle presets also need "
        "credentials: KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json, and "
        "the model's license accepted on kaggle.com), pass a local preset "
        "directory or a .gguf file with --preset, or run without --preset to "
        f"use the offline default model ({EMBEDDED_PRESET}).")


def _in_local_cache(handle: str) -> Path | None:
    """The cached directory of a `kaggle://` preset whose config and weights
    kagglehub has completely downloaded (keras-hub fetches them file by file)."""
    if not handle.startswith("kaggle://"):
        return None
    kaggle_handle = handle[len("kaggle://"):].strip("/")
    for weights in ("model.weights.h5", "model.weights.json"):  # single or sharded
        cached = hub.cached_kaggle("model", kaggle_handle, ("config.json", weights))
        if cached:
            return cached
    return None


CONTEXT_LENGTH_KEY = "context_length"  # in a preset's metadata.json (keras_ft's record)


def preset_context_length(preset: str) -> tuple[int, str] | None:
    """The longest sequence a preset records it was trained for, and where.

    Read from the preset's small JSON files, before any weight is loaded:
    the backbone config's `max_sequence_length` (keras-hub backbones with
    learned positions, e.g. GPT-2), else `context_length` in metadata.json,
    which keras_ft records for presets it converts from GGUF (the file's
    `<arch>.context_length`); for a Transformers checkpoint (`hf://`), its
    config's `max_position_embeddings`. keras-hub's Gemma, Gemma 3 and Llama
    backbone configs record no limit (rotary positions): then None.
    """
    from keras_hub.src.utils import preset_utils

    config = preset_utils.load_json(preset, preset_utils.CONFIG_FILE)
    if "class_name" not in config:  # a Transformers checkpoint (hf://), converted on load
        limit = config.get("max_position_embeddings")
        return (int(limit), "config.json max_position_embeddings") if limit else None
    limit = (config.get("config") or {}).get("max_sequence_length")
    if limit:
        return int(limit), f"{preset_utils.CONFIG_FILE} max_sequence_length"
    if not preset_utils.check_file_exists(preset, preset_utils.METADATA_FILE):
        return None
    metadata = preset_utils.load_json(preset, preset_utils.METADATA_FILE)
    limit = metadata.get(CONTEXT_LENGTH_KEY)
    if limit:
        return int(limit), f"{preset_utils.METADATA_FILE} {CONTEXT_LENGTH_KEY}"
    return None


def record_context_length(preset_dir: str | Path, length: int) -> None:
    """Records `length` as the context length in a preset directory's metadata.json.

    keras-hub writes metadata.json when it saves a preset and never reads it
    back, so an extra key there loads anywhere; its backbone configs (Gemma,
    Gemma 3, Llama) have no field for it.
    """
    path = Path(preset_dir) / "metadata.json"
    metadata = json.loads(path.read_text()) if path.exists() else {}
    metadata[CONTEXT_LENGTH_KEY] = int(length)
    path.write_text(json.dumps(metadata, indent=4))


def check_sequence_length(preset: str, sequence_length: int) -> None:
    """Refuses a `sequence_length` above the context length `preset` records.

    Call it with the resolved preset before loading the model. A preset that
    records no context length is said so in the log, and nothing is refused.
    """
    found = preset_context_length(preset)
    if found is None:
        log.info("Preset %s records no context length (no `max_sequence_length` in "
                 "its config.json, no `%s` in its metadata.json); sequence_length=%d "
                 "is not checked against one.", preset, CONTEXT_LENGTH_KEY, sequence_length)
        return
    limit, where = found
    if sequence_length > limit:
        raise ValueError(
            f"`sequence_length` must be at most the model's context length of {limit} "
            f"({where} of preset {preset}). Received: sequence_length={sequence_length}")


def lora_target_names(backbone, targets: str) -> list[str]:
    """Layer names to LoRA-fy for a target set or a comma-separated list."""
    if targets == "default":
        return list(backbone.default_lora_layer_names())
    if targets == "attention":
        # dict.fromkeys: keep order, drop duplicates (enabling LoRA twice fails)
        return list(dict.fromkeys(ATTENTION_LAYERS + tuple(backbone.default_lora_layer_names())))
    if targets == "all":
        return sorted({layer.name for layer in backbone._flatten_layers(include_self=False)
                       if hasattr(layer, "enable_lora") and layer.weights
                       and not isinstance(layer, keras.layers.Embedding)})
    names = [n.strip() for n in targets.split(",") if n.strip()]
    available = {layer.name for layer in backbone._flatten_layers(include_self=False)}
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"`lora_targets` names layers this model does not have: "
                         f"{missing}. Received: lora_targets={targets!r}")
    return names


def enable_lora(backbone, rank: int, alpha: float = 0.0, targets: str = "default") -> None:
    """keras-hub's `enable_lora`, plus an alpha (scale alpha / rank).

    keras-hub has no alpha setting (its scale is 1); Keras' LoRA layers
    do, so we set it on the layers keras-hub enabled. alpha 0 means alpha=rank.
    """
    backbone.enable_lora(rank, target_layer_names=lora_target_names(backbone, targets))
    if not backbone._lora_enabled_layers:
        raise ValueError(f"No layer matched `lora_targets`={targets!r} in this model.")
    for layer in _lora_layers(backbone):
        layer.lora_alpha = float(alpha or rank)


def _lora_layers(backbone):
    layers = [lyr for lyr in backbone._flatten_layers(include_self=False) if lyr.weights]
    return [layers[i] for i in backbone._lora_enabled_layers]


def count_lora_parameters(backbone) -> int:
    return sum(int(w.numpy().size) for w in backbone.trainable_weights)


def save_adapter(causal_lm, directory: str | Path, cfg: Config) -> Path:
    """Writes `adapter.lora.h5` and its hyperparameters, each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ("tmp-" + ADAPTER_FILE)
    causal_lm.backbone.save_lora_weights(str(tmp))
    os.replace(tmp, directory / ADAPTER_FILE)
    meta = {"lora_rank": cfg.lora_rank, "lora_alpha": cfg.lora_alpha or cfg.lora_rank,
            "lora_targets": cfg.lora_targets, "preset": cfg.preset,
            "template": cfg.template, "sequence_length": cfg.sequence_length,
            "quantize": cfg.quantize}
    tmp_meta = directory / (ADAPTER_CONFIG_FILE + ".tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp_meta, directory / ADAPTER_CONFIG_FILE)
    return directory / ADAPTER_FILE


def read_adapter(path: str | Path) -> tuple[Path, dict]:
    """The adapter file that `path` (a file or run directory) names, and its
    recorded hyperparameters (`adapter_config.json` beside it; {} if absent)."""
    path = Path(path)
    if path.is_dir():
        path = next((p for p in (path / ADAPTER_FILE, path / "adapter" / ADAPTER_FILE)
                     if p.exists()), path / ADAPTER_FILE)
    if not path.exists():
        raise FileNotFoundError(f"No adapter at {path}; expected a `.lora.h5` file "
                                "or a run directory holding one.")
    meta_path = path.parent / ADAPTER_CONFIG_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return path, meta


def load_adapter(causal_lm, path: str | Path, quantize: bool = True) -> dict:
    """Applies a saved adapter (file or run directory) to a fresh base model.

    Args:
        quantize: rebuild the base the adapter was trained on (its recorded
            `quantize` mode) first. False applies it to the float base as it
            is, e.g. to merge a QLoRA adapter into float weights for export:
            that base is then not the one it was trained on.

    Returns:
        The adapter's recorded hyperparameters.
    """
    path, meta = read_adapter(path)
    if quantize:  # the adapter was trained on a quantized base: rebuild that base first
        quantize_backbone(causal_lm.backbone, meta.get("quantize", ""))
    enable_lora(causal_lm.backbone, int(meta.get("lora_rank", 4)),
                float(meta.get("lora_alpha", 0)), meta.get("lora_targets", "default"))
    causal_lm.backbone.load_lora_weights(str(path))
    return meta
