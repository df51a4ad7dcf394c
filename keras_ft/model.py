"""Loads a causal LM preset, enables LoRA, and saves/loads adapters."""

from __future__ import annotations

import contextlib
import difflib
import gc
import json
import logging
import os
import socket
import warnings
from pathlib import Path

import keras

from keras_ft.config import EMBEDDED_PRESET, Config

log = logging.getLogger(__name__)

ATTENTION_LAYERS = ("query", "key", "value", "attention_output")
ADAPTER_FILE = "adapter.lora.h5"
ADAPTER_CONFIG_FILE = "adapter_config.json"
HUB_HOSTS = {"kaggle://": "www.kaggle.com", "hf://": "huggingface.co"}


class PresetUnavailableError(RuntimeError):
    """A preset cannot be loaded here (no network, credentials or cache)."""


def build_model(cfg: Config):
    """Loads `cfg.preset` as a keras-hub CausalLM with LoRA enabled.

    Returns:
        The CausalLM; its backbone is frozen except for the LoRA kernels.
    """
    preset = resolve_preset(cfg.preset)
    causal_lm = load_causal_lm(preset, dtype=cfg.dtype)
    check_sequence_length(causal_lm, cfg.sequence_length)
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
    `kaggle://` and `hf://` handles, and keras-hub preset names.

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
    _check_reachable(preset, handle)
    return preset


def _known_presets() -> dict[str, str]:
    import keras_hub

    return {name: meta.get("kaggle_handle", "")
            for name, meta in keras_hub.models.CausalLM.presets.items()}


def _check_reachable(preset: str, handle: str) -> None:
    scheme = next((s for s in HUB_HOSTS if handle.startswith(s)), None)
    if scheme is None or _in_local_cache(handle) or _host_reachable(HUB_HOSTS[scheme]):
        return
    raise PresetUnavailableError(
        f"Cannot load preset {preset!r}: {HUB_HOSTS[scheme]} is not reachable "
        "from this machine and the preset is not in the local cache. Either "
        "connect to the network (Kaggle presets also need credentials: "
        "KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json, and the model's "
        "license accepted on kaggle.com), pass a local preset directory or a "
        f".gguf file with --preset, or run without --preset to use the "
        f"offline default model ({EMBEDDED_PRESET}).")


def _in_local_cache(handle: str) -> bool:
    if not handle.startswith("kaggle://"):
        return False
    root = Path(os.environ.get("KAGGLEHUB_CACHE", Path.home() / ".cache" / "kagglehub"))
    owner, model, framework, variation, *version = handle[len("kaggle://"):].split("/")
    path = root / "models" / owner / model / framework / variation
    return (path / version[0]).is_dir() if version else path.is_dir()


def _host_reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_sequence_length(causal_lm, sequence_length: int) -> None:
    """Refuses a sequence length above what the model was built for."""
    backbone = causal_lm.backbone
    limit = getattr(backbone, "max_sequence_length", None)
    if limit and sequence_length > limit:
        raise ValueError(
            f"`sequence_length` must be at most the model's maximum of {limit}. "
            f"Received: sequence_length={sequence_length}")


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
