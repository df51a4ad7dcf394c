"""A preset name -> a local preset directory, or an actionable error."""

from __future__ import annotations

import difflib
import logging
import os
import re
from pathlib import Path

import keras_hub

from keras_ft import hub
from keras_ft.config import EMBEDDED_PRESET
from keras_ft.preset_files import (
    CONTEXT_LENGTH_KEY,
    check_preset_files,
    preset_context_length,
)

log = logging.getLogger(__name__)


HF_HOST = "huggingface.co"  # Kaggle's host comes from kagglesdk (hub.kaggle_host)


class PresetUnavailableError(RuntimeError):
    """A preset cannot be loaded here (no network, credentials or cache)."""


# URI schemes keras-hub's from_preset loads; anything else with "://" is refused.
PRESET_SCHEMES = ("kaggle", "hf", "gs", "modelscope")


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
        from keras_ft.gguf.embedded import resolve_embedded  # heavy: gguf, keras_hub

        return resolve_embedded(preset)
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", preset)
    if scheme and scheme.group(1).lower() not in PRESET_SCHEMES:
        raise ValueError(
            f"Unsupported scheme {scheme.group(1)}:// in preset {preset!r}; supported: "
            "local preset directories, .gguf files, keras-hub preset names, "
            f"{', '.join(s + '://' for s in PRESET_SCHEMES)}."
        )
    if preset.endswith(".gguf") and not scheme:
        if not Path(preset).is_file():
            what = "is not a file" if Path(preset).exists() else "does not exist"
            raise FileNotFoundError(
                f"The GGUF file {preset} {what}. Pass an existing "
                f".gguf file. Received: preset={preset!r}"
            )
        from keras_ft.gguf.embedded import converted_preset_dir  # heavy: gguf, keras_hub

        return str(converted_preset_dir(preset))
    if Path(preset).is_dir():
        if not (Path(preset) / "config.json").exists():
            raise ValueError(
                f"{preset} is a directory but not a keras-hub preset "
                f"(no config.json). Received: preset={preset!r}"
            )
        check_preset_files(preset)
        return preset
    if not scheme and (os.sep in preset or preset.startswith(".")):
        raise FileNotFoundError(
            f"The preset directory {preset} does not exist. Received: preset={preset!r}"
        )
    handle = preset
    if "://" not in preset:
        known = _known_presets()
        if preset not in known:
            close = difflib.get_close_matches(preset, list(known), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"Unknown preset {preset!r}.{hint} Pass a keras-hub preset name, "
                "a kaggle:// or hf:// handle, a local preset directory, a .gguf "
                f"file, or {EMBEDDED_PRESET!r} (the offline default)."
            )
        handle = known[preset]
    return _check_reachable(preset, handle)


def _known_presets() -> dict[str, str]:
    return {
        name: meta.get("kaggle_handle", "")
        for name, meta in keras_hub.models.CausalLM.presets.items()
    }


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
        versioned = len(handle[len("kaggle://") :].strip("/").split("/")) == 5
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
        f"use the offline default model ({EMBEDDED_PRESET})."
    )


def _in_local_cache(handle: str) -> Path | None:
    """The cached directory of a `kaggle://` preset whose config and weights
    kagglehub has completely downloaded (keras-hub fetches them file by file)."""
    if not handle.startswith("kaggle://"):
        return None
    kaggle_handle = handle[len("kaggle://") :].strip("/")
    for weights in ("model.weights.h5", "model.weights.json"):  # single or sharded
        cached = hub.cached_kaggle("model", kaggle_handle, ("config.json", weights))
        if cached:
            return cached
    return None


def check_sequence_length(preset: str, sequence_length: int) -> None:
    """Refuses a `sequence_length` above the context length `preset` records.

    Call it with the resolved preset before loading the model. A preset that
    records no context length is said so in the log, and nothing is refused.
    """
    found = preset_context_length(preset)
    if found is None:
        log.info(
            "Preset %s records no context length (no `max_sequence_length` in "
            "its config.json, no `%s` in its metadata.json); sequence_length=%d "
            "is not checked against one.",
            preset,
            CONTEXT_LENGTH_KEY,
            sequence_length,
        )
        return
    limit, where = found
    if sequence_length > limit:
        raise ValueError(
            f"`sequence_length` must be at most the model's context length of {limit} "
            f"({where} of preset {preset}). Received: sequence_length={sequence_length}"
        )
