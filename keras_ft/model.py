"""Loads a causal LM preset, enables LoRA, and saves/loads adapters."""

from __future__ import annotations

import contextlib
import difflib
import gc
import json
import logging
import os
import re
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


class CorruptFileError(ValueError):
    """A model file (preset, GGUF or adapter) that cannot be read: truncated,
    damaged or not what its name says. The message names the file and what to do."""


class AdapterMismatchError(ValueError):
    """A LoRA adapter applied to a model it was not trained on; the message
    says what it was trained on and what the model is."""


# URI schemes keras-hub's from_preset loads; anything else with "://" is refused.
PRESET_SCHEMES = ("kaggle", "hf", "gs", "modelscope")


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
        ValueError: an unknown preset name (with close matches), or a URI
            scheme keras-hub does not load (`PRESET_SCHEMES`).
        FileNotFoundError: a `.gguf` file or preset directory that does not exist.
        CorruptFileError: a local preset whose files cannot be read
            (`check_preset_files`), or a GGUF file that is not readable.
    """
    if preset == EMBEDDED_PRESET:
        from keras_ft.default_model import embedded_preset_dir

        return str(embedded_preset_dir())
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", preset)
    if scheme and scheme.group(1).lower() not in PRESET_SCHEMES:
        raise ValueError(
            f"Unsupported scheme {scheme.group(1)}:// in preset {preset!r}; supported: "
            "local preset directories, .gguf files, keras-hub preset names, "
            f"{', '.join(s + '://' for s in PRESET_SCHEMES)}.")
    if preset.endswith(".gguf") and not scheme:
        if not Path(preset).is_file():
            what = "is not a file" if Path(preset).exists() else "does not exist"
            raise FileNotFoundError(f"The GGUF file {preset} {what}. Pass an existing "
                                    f".gguf file. Received: preset={preset!r}")
        from keras_ft.default_model import converted_preset_dir

        return str(converted_preset_dir(preset))
    if Path(preset).is_dir():
        if not (Path(preset) / "config.json").exists():
            raise ValueError(f"{preset} is a directory but not a keras-hub preset "
                             f"(no config.json). Received: preset={preset!r}")
        check_preset_files(preset)
        return preset
    if not scheme and (os.sep in preset or preset.startswith(".")):
        raise FileNotFoundError(f"The preset directory {preset} does not exist. "
                                f"Received: preset={preset!r}")
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


PRESET_REDO = ("Download the preset again, or write it again (keras-hub's "
               "`save_to_preset`, or `python -m keras_ft.convert gguf FILE DIR "
               "--overwrite` for one converted from GGUF).")


def check_preset_files(preset_dir: str | Path) -> None:
    """Refuses a local preset directory whose files cannot be read, naming the file.

    Cheap checks before anything loads (keras-hub would fail later, deep in
    `json` or `h5py`, without saying which preset file is at fault): every
    top-level `*.json` parses; a Keras-format file's `registered_name` is a
    class registered with Keras (keras-hub refuses any other, so a config
    naming e.g. module `os` never loads code); the weights file exists and
    opens as HDF5 (HDF5 records its length, so a truncated file fails here).

    Raises:
        CorruptFileError: naming the file and what to do.
    """
    import h5py
    import keras_hub  # noqa: F401  (registers its classes with Keras)

    directory = Path(preset_dir)
    keras_format = False
    for path in sorted(directory.glob("*.json")):
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptFileError(f"{path} is not valid JSON ({e}): the preset file "
                                   f"is truncated or damaged. {PRESET_REDO}") from None
        if not isinstance(content, dict) or "registered_name" not in content:
            continue
        keras_format = keras_format or path.name == "config.json"
        name = content["registered_name"]
        if name in ("Functional", "Sequential"):  # as keras-hub's check_config_class
            continue
        if not isinstance(name, str) or keras.saving.get_registered_object(name) is None:
            raise CorruptFileError(
                f"{path} names class {name!r} (module {content.get('module')!r}), which "
                "is not a class registered with Keras or keras-hub; keras_ft loads only "
                f"keras-hub presets and refuses it. {PRESET_REDO}")
    if not keras_format:
        return  # a Transformers/timm checkpoint: keras-hub converts it on load
    weights = sorted(directory.glob("*.weights.h5"))
    if not weights and not (directory / "model.weights.json").exists():
        raise CorruptFileError(f"{directory} has no model.weights.h5: the preset is "
                               f"incomplete. {PRESET_REDO}")
    for path in weights:
        try:
            h5py.File(path, "r").close()
        except OSError as e:
            raise CorruptFileError(f"{path} cannot be read ({e}): the weights file is "
                                   f"truncated or damaged. {PRESET_REDO}") from None


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
            "quantize": cfg.quantize, **adapter_record(causal_lm.backbone)}
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
    meta = _read_adapter_config(meta_path) if meta_path.exists() else {}
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
    stored = check_adapter(causal_lm.backbone, path, meta)  # before changing the model
    if quantize:  # the adapter was trained on a quantized base: rebuild that base first
        quantize_backbone(causal_lm.backbone, meta.get("quantize", ""))
    try:
        enable_lora(causal_lm.backbone, int(meta.get("lora_rank", 4)),
                    float(meta.get("lora_alpha", 0)), meta.get("lora_targets", "default"))
    except ValueError as e:  # targets this model does not have
        raise AdapterMismatchError(_mismatch(path, meta, causal_lm.backbone, str(e))) from None
    check_lora_variables(causal_lm.backbone, path, meta, stored)
    causal_lm.backbone.load_lora_weights(str(path))
    return meta


# ------------------------------------------------ does an adapter fit a model

# Backbone config fields that set LoRA weight shapes (and the layer list that
# keras-hub's adapter file indexes), compared before an adapter is applied.
SHAPE_FIELDS = ("vocabulary_size", "num_layers", "hidden_dim", "intermediate_dim",
                "num_query_heads", "num_heads", "num_key_value_heads", "head_dim")


def adapter_record(backbone) -> dict:
    """What `save_adapter` records about the model an adapter was trained on:
    the backbone class, the config fields that set its shapes, and each LoRA
    variable's path and shape (as `adapter.lora.h5` holds them)."""
    config = backbone.get_config()
    variables = {v.path: list(v.shape) for layer in _lora_layers(backbone)
                 for v in layer.weights if v.name.startswith("lora_")}
    return {"backbone": type(backbone).__name__,
            "backbone_config": {k: config[k] for k in SHAPE_FIELDS if k in config},
            "lora_variables": variables}


def _read_adapter_config(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(f"{path} is not valid JSON ({e}): the adapter's record is "
                               "damaged. Use the run's adapter_config.json of the same "
                               "run, or train the adapter again.") from None
    if not isinstance(meta, dict):
        raise CorruptFileError(f"{path} must hold a JSON object (the adapter's "
                               f"hyperparameters). Received: {type(meta).__name__}")
    return meta


def read_lora_file(path: str | Path) -> tuple[int, dict[int, dict[str, tuple]]]:
    """(rank, {layer index: {variable name: shape}}) of a `.lora.h5` file.

    The layout is the one keras-hub's `Backbone.save_lora_weights` writes
    through Keras' H5 store: `lora/vars/rank`, and `lora/<index>/vars/<name>`
    for each LoRA layer, indexed in the backbone's list of layers with weights.

    Raises:
        CorruptFileError: the file is truncated, damaged or not a LoRA file.
    """
    import h5py

    try:
        with h5py.File(path, "r") as file:
            lora = file["lora"]
            rank = int(lora["vars"]["rank"][()])
            layers = {int(k): {name: tuple(d.shape) for name, d in lora[k]["vars"].items()}
                      for k in lora if k.isdigit()}
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise CorruptFileError(
            f"Adapter file {path} cannot be read as a keras-hub LoRA file ({e}): it is "
            "truncated, damaged or not an adapter. Train the adapter again, or use one "
            "of the run's checkpoints (checkpoints/step-N/).") from None
    return rank, layers


def _model_description(backbone) -> str:
    config = backbone.get_config()
    dims = ", ".join(f"{k} {config[k]}" for k in SHAPE_FIELDS if k in config)
    return f"{type(backbone).__name__} ({dims})"


def _mismatch(path, meta: dict, backbone, detail: str) -> str:
    """The one sentence: what the adapter was trained on, what the model is, why."""
    recorded = [f"rank {meta['lora_rank']}" if "lora_rank" in meta else "",
                f"targets {meta['lora_targets']}" if "lora_targets" in meta else ""]
    trained = meta.get("backbone") or "another model"
    preset = meta.get("preset")
    inside = ", ".join(x for x in [str(preset) if preset else "", *recorded] if x)
    again = f" Apply it to the preset it was trained on (--preset {preset})." if preset else ""
    return (f"Adapter {path} was trained on {trained}" + (f" ({inside})" if inside else "")
            + f" but the model is {_model_description(backbone)}"
            + (f": {detail}" if detail else "") + f".{again}")


def check_adapter(backbone, path: str | Path, meta: dict) -> tuple[int, dict]:
    """Refuses an adapter recorded as trained on another model, before any change.

    Compares the recorded backbone class and shape fields (`adapter_record`)
    with `backbone`'s, and the recorded rank with the file's; adapters saved
    before these were recorded are checked by `check_lora_variables` alone.

    Returns:
        `read_lora_file(path)`, for `check_lora_variables`.

    Raises:
        AdapterMismatchError: one sentence, what was trained on what.
        CorruptFileError: the adapter file cannot be read.
    """
    stored = read_lora_file(path)
    trained, have = meta.get("backbone"), type(backbone).__name__
    if trained and trained != have:
        raise AdapterMismatchError(_mismatch(path, meta, backbone, ""))
    config = backbone.get_config()
    differ = [f"{k} {v} in the adapter's model, {config[k]} in this one"
              for k, v in (meta.get("backbone_config") or {}).items()
              if k in config and config[k] != v]
    if differ:
        raise AdapterMismatchError(_mismatch(path, meta, backbone, "; ".join(differ)))
    if "lora_rank" in meta and int(meta["lora_rank"]) != stored[0]:
        raise CorruptFileError(
            f"{Path(path).parent / ADAPTER_CONFIG_FILE} records lora_rank "
            f"{meta['lora_rank']} but {path} holds rank {stored[0]}: the two files come "
            "from different runs. Keep each adapter.lora.h5 with its own "
            f"{ADAPTER_CONFIG_FILE}.")
    return stored


def check_lora_variables(backbone, path: str | Path, meta: dict, stored: tuple) -> None:
    """After `enable_lora`: the model's LoRA layers and variable shapes must be
    the file's, else keras-hub's `load_lora_weights` fails deep in h5py
    (`KeyError: 'lora_kernel_a'`) or in an assign (a shape dump).

    Raises:
        AdapterMismatchError: naming the first layer or variable that differs.
    """
    _, in_file = stored
    layers = dict(zip(backbone._lora_enabled_layers, _lora_layers(backbone)))
    if set(layers) != set(in_file):
        detail = (f"its LoRA layers are not this model's (the file holds layers "
                  f"{sorted(in_file)[:8]}, by index among the backbone's layers with "
                  f"weights; here its targets are layers {sorted(layers)[:8]})")
        raise AdapterMismatchError(_mismatch(path, meta, backbone, detail))
    for index, layer in layers.items():
        model = {v.name: tuple(v.shape) for v in layer.weights
                 if v.name.startswith("lora_")}
        if model != in_file[index]:
            detail = (f"layer {layer.path} has LoRA weights {in_file[index]} in the "
                      f"adapter but {model} in this model")
            raise AdapterMismatchError(_mismatch(path, meta, backbone, detail))
