"""LoRA on a backbone, and adapters: saved, read, checked and loaded."""

from __future__ import annotations

import gc
import json
import logging
import os
import warnings
from pathlib import Path

import h5py
import keras

from keras_ft.config import Config
from keras_ft.files import CorruptFileError, atomic_path, write_json

log = logging.getLogger(__name__)


ATTENTION_LAYERS = ("query", "key", "value", "attention_output")


ADAPTER_FILE = "adapter.lora.h5"


ADAPTER_CONFIG_FILE = "adapter_config.json"


class AdapterMismatchError(ValueError):
    """A LoRA adapter applied to a model it was not trained on; the message
    says what it was trained on and what the model is."""


def lora_target_names(backbone, targets: str) -> list[str]:
    """Layer names to LoRA-fy for a target set or a comma-separated list."""
    if targets == "default":
        return list(backbone.default_lora_layer_names())
    if targets == "attention":
        # dict.fromkeys: keep order, drop duplicates (enabling LoRA twice fails)
        return list(dict.fromkeys(ATTENTION_LAYERS + tuple(backbone.default_lora_layer_names())))
    if targets == "all":
        return sorted(
            {
                layer.name
                for layer in backbone._flatten_layers(include_self=False)
                if hasattr(layer, "enable_lora")
                and layer.weights
                and not isinstance(layer, keras.layers.Embedding)
            }
        )
    names = [n.strip() for n in targets.split(",") if n.strip()]
    available = {layer.name for layer in backbone._flatten_layers(include_self=False)}
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(
            f"`lora_targets` names layers this model does not have: "
            f"{missing}. Received: lora_targets={targets!r}"
        )
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
    with atomic_path(directory / ADAPTER_FILE) as tmp:  # its name ends with .lora.h5
        causal_lm.backbone.save_lora_weights(str(tmp))
    meta = {
        "lora_rank": cfg.lora_rank,
        "lora_alpha": cfg.lora_alpha or cfg.lora_rank,
        "lora_targets": cfg.lora_targets,
        "preset": cfg.preset,
        "template": cfg.template,
        "sequence_length": cfg.sequence_length,
        "quantize": cfg.quantize,
        **adapter_record(causal_lm.backbone),
    }
    write_json(directory / ADAPTER_CONFIG_FILE, meta)
    return directory / ADAPTER_FILE


def read_adapter(path: str | Path) -> tuple[Path, dict]:
    """The adapter file that `path` (a file or run directory) names, and its
    recorded hyperparameters (`adapter_config.json` beside it; {} if absent)."""
    path = Path(path)
    if path.is_dir():
        path = next(
            (p for p in (path / ADAPTER_FILE, path / "adapter" / ADAPTER_FILE) if p.exists()),
            path / ADAPTER_FILE,
        )
    if not path.exists():
        raise FileNotFoundError(
            f"No adapter at {path}; expected a `.lora.h5` file or a run directory holding one."
        )
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
        enable_lora(
            causal_lm.backbone,
            int(meta.get("lora_rank", 4)),
            float(meta.get("lora_alpha", 0)),
            meta.get("lora_targets", "default"),
        )
    except ValueError as e:  # targets this model does not have
        raise AdapterMismatchError(_mismatch(path, meta, causal_lm.backbone, str(e))) from None
    check_lora_variables(causal_lm.backbone, path, meta, stored)
    causal_lm.backbone.load_lora_weights(str(path))
    return meta


# Backbone config fields that set LoRA weight shapes (and the layer list that
# keras-hub's adapter file indexes), compared before an adapter is applied.
SHAPE_FIELDS = (
    "vocabulary_size",
    "num_layers",
    "hidden_dim",
    "intermediate_dim",
    "num_query_heads",
    "num_heads",
    "num_key_value_heads",
    "head_dim",
)


def adapter_record(backbone) -> dict:
    """What `save_adapter` records about the model an adapter was trained on:
    the backbone class, the config fields that set its shapes, and each LoRA
    variable's path and shape (as `adapter.lora.h5` holds them)."""
    config = backbone.get_config()
    variables = {
        v.path: list(v.shape)
        for layer in _lora_layers(backbone)
        for v in layer.weights
        if v.name.startswith("lora_")
    }
    return {
        "backbone": type(backbone).__name__,
        "backbone_config": {k: config[k] for k in SHAPE_FIELDS if k in config},
        "lora_variables": variables,
    }


def _read_adapter_config(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(
            f"{path} is not valid JSON ({e}): the adapter's record is "
            "damaged. Use the run's adapter_config.json of the same "
            "run, or train the adapter again."
        ) from None
    if not isinstance(meta, dict):
        raise CorruptFileError(
            f"{path} must hold a JSON object (the adapter's "
            f"hyperparameters). Received: {type(meta).__name__}"
        )
    return meta


def read_lora_file(path: str | Path) -> tuple[int, dict[int, dict[str, tuple]]]:
    """(rank, {layer index: {variable name: shape}}) of a `.lora.h5` file.

    The layout is the one keras-hub's `Backbone.save_lora_weights` writes
    through Keras' H5 store: `lora/vars/rank`, and `lora/<index>/vars/<name>`
    for each LoRA layer, indexed in the backbone's list of layers with weights.

    Raises:
        CorruptFileError: the file is truncated, damaged or not a LoRA file.
    """
    try:
        with h5py.File(path, "r") as file:
            lora = file["lora"]
            rank = int(lora["vars"]["rank"][()])
            layers = {
                int(k): {name: tuple(d.shape) for name, d in lora[k]["vars"].items()}
                for k in lora
                if k.isdigit()
            }
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise CorruptFileError(
            f"Adapter file {path} cannot be read as a keras-hub LoRA file ({e}): it is "
            "truncated, damaged or not an adapter. Train the adapter again, or use one "
            "of the run's checkpoints (checkpoints/step-N/)."
        ) from None
    return rank, layers


def _model_description(backbone) -> str:
    config = backbone.get_config()
    dims = ", ".join(f"{k} {config[k]}" for k in SHAPE_FIELDS if k in config)
    return f"{type(backbone).__name__} ({dims})"


def _mismatch(path, meta: dict, backbone, detail: str) -> str:
    """The one sentence: what the adapter was trained on, what the model is, why."""
    recorded = [
        f"rank {meta['lora_rank']}" if "lora_rank" in meta else "",
        f"targets {meta['lora_targets']}" if "lora_targets" in meta else "",
    ]
    trained = meta.get("backbone") or "another model"
    preset = meta.get("preset")
    inside = ", ".join(x for x in [str(preset) if preset else "", *recorded] if x)
    again = f" Apply it to the preset it was trained on (--preset {preset})." if preset else ""
    return (
        f"Adapter {path} was trained on {trained}"
        + (f" ({inside})" if inside else "")
        + f" but the model is {_model_description(backbone)}"
        + (f": {detail}" if detail else "")
        + f".{again}"
    )


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
    differ = [
        f"{k} {v} in the adapter's model, {config[k]} in this one"
        for k, v in (meta.get("backbone_config") or {}).items()
        if k in config and config[k] != v
    ]
    if differ:
        raise AdapterMismatchError(_mismatch(path, meta, backbone, "; ".join(differ)))
    if "lora_rank" in meta and int(meta["lora_rank"]) != stored[0]:
        raise CorruptFileError(
            f"{Path(path).parent / ADAPTER_CONFIG_FILE} records lora_rank "
            f"{meta['lora_rank']} but {path} holds rank {stored[0]}: the two files come "
            "from different runs. Keep each adapter.lora.h5 with its own "
            f"{ADAPTER_CONFIG_FILE}."
        )
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
        detail = (
            f"its LoRA layers are not this model's (the file holds layers "
            f"{sorted(in_file)[:8]}, by index among the backbone's layers with "
            f"weights; here its targets are layers {sorted(layers)[:8]})"
        )
        raise AdapterMismatchError(_mismatch(path, meta, backbone, detail))
    for index, layer in layers.items():
        model = {v.name: tuple(v.shape) for v in layer.weights if v.name.startswith("lora_")}
        if model != in_file[index]:
            detail = (
                f"layer {layer.path} has LoRA weights {in_file[index]} in the "
                f"adapter but {model} in this model"
            )
            raise AdapterMismatchError(_mismatch(path, meta, backbone, detail))


def recorded_template(adapter: str | os.PathLike | None) -> str | None:
    """The keras_ft template an adapter was trained with (its
    `adapter_config.json`), or None without an adapter or a record."""
    if adapter is None:
        return None
    return read_adapter(adapter)[1].get("template")


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
    current = {
        layer.quantization_mode
        for layer in backbone._flatten_layers()
        if getattr(layer, "quantization_mode", None)
    }
    if current == {mode}:
        return  # already quantized the same way
    if current:
        raise ValueError(
            f"The backbone is already quantized to {sorted(current)}; cannot "
            f"quantize it to {mode!r}. Load a float preset."
        )
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
