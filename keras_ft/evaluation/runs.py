"""A finished run directory: its Config, and the adapter it wrote."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
from keras_ft.config import Config, load_config
from keras_ft.model.lora import read_adapter
from keras_ft.train.checkpoint import STATE_FILE, read_state
from keras_ft.train.rundir import MARKER

log = logging.getLogger(__name__)


def load_run_config(source: str | Path | Config | dict, overrides: dict | None = None) -> Config:
    """A run's resolved `config.json` (or a Config / dict of its values), plus
    overrides.

    Read as JSON, not through the YAML loader: YAML 1.1 reads JSON's `5e-05`
    as a string.
    """
    if isinstance(source, Config):
        values = dataclasses.asdict(source)
    elif isinstance(source, dict):
        values = dict(source)
    else:
        try:
            values = json.loads(Path(source).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(
                f"{source} is not valid JSON ({e}): the run's resolved "
                "config is damaged. Pass --config with the experiment's "
                "YAML instead, or train the run again."
            ) from None
    return load_config(
        None, {**values, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    )


def resolve_run(adapter: str) -> tuple[Path | None, Config | None]:
    """(run directory, the config of the run that wrote `adapter`), else (None, None).

    The config is the one stored with the adapter: a checkpoint
    (`checkpoints/step-N/` or a file in it) carries its run's config in its
    `state.json`; a run directory's adapter (or its `best/` one) has the run's
    `config.json`, which keras_ft writes only once a run is accepted (a
    refused rerun leaves it as it was) and whose fresh start first deletes
    the previous run's adapter.
    """
    path = Path(adapter)
    directory = path if path.is_dir() else path.parent
    if (directory / STATE_FILE).is_file():
        run_dir = directory.parent.parent if directory.parent.name == "checkpoints" else directory
        return run_dir, load_run_config(read_state(directory)["config"])
    if directory.name == "best" and (directory.parent / MARKER).is_file():
        directory = directory.parent
    if (directory / "config.json").exists():
        return directory, load_run_config(directory / "config.json")
    return None, None


def adapter_defaults(adapter: str) -> dict:
    """preset, template and sequence_length recorded beside an adapter file."""
    meta = read_adapter(adapter)[1]  # names a damaged adapter_config.json
    return {k: meta[k] for k in ("preset", "template", "sequence_length") if k in meta}
