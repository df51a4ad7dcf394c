"""What keras_ft checks and records in a keras-hub preset directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras

from keras_ft.files import CorruptFileError

log = logging.getLogger(__name__)


PRESET_REDO = (
    "Download the preset again, or write it again (keras-hub's "
    "`save_to_preset`, or `python -m keras_ft.convert gguf FILE DIR "
    "--overwrite` for one converted from GGUF)."
)


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
    import h5py  # heavy: h5py
    import keras_hub  # noqa: F401  heavy: keras_hub (registers its classes with Keras)

    directory = Path(preset_dir)
    keras_format = False
    for path in sorted(directory.glob("*.json")):
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptFileError(
                f"{path} is not valid JSON ({e}): the preset file "
                f"is truncated or damaged. {PRESET_REDO}"
            ) from None
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
                f"keras-hub presets and refuses it. {PRESET_REDO}"
            )
    if not keras_format:
        return  # a Transformers/timm checkpoint: keras-hub converts it on load
    weights = sorted(directory.glob("*.weights.h5"))
    if not weights and not (directory / "model.weights.json").exists():
        raise CorruptFileError(
            f"{directory} has no model.weights.h5: the preset is incomplete. {PRESET_REDO}"
        )
    for path in weights:
        try:
            h5py.File(path, "r").close()
        except OSError as e:
            raise CorruptFileError(
                f"{path} cannot be read ({e}): the weights file is "
                f"truncated or damaged. {PRESET_REDO}"
            ) from None


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
    from keras_hub.src.utils import preset_utils  # heavy: keras_hub

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
