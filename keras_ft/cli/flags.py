"""Click options generated from `Config`: one flag per field, one meaning.

A Config field's flag (`lora_rank` <-> `--lora-rank`) is generated from the
dataclass, with the field's type and its trailing comment as help, in every
command that takes it; flags default to None so only the ones given override.
A command's own flags (`--adapter`, `--eval-examples`, ...) use names no
Config field has, so one flag name never means two things.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Mapping

os.environ.setdefault("KERAS_BACKEND", "jax")
import click

from keras_ft.config import Config, field_docs, field_types

ADAPTER_HELP = "A .lora.h5 file or a run directory holding one."


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option_for(field: dataclasses.Field, tp, doc: str, default=None, note=None):
    """(declarations, attributes) of `field`'s click option."""
    shown = field.default if default is None else default
    shown = ", ".join(map(str, shown)) if isinstance(shown, tuple) else shown
    help_text = f"{doc} [{note or f'default: {shown!r}'}]".strip()
    flag = _flag_name(field.name)
    if tp is bool:
        return [f"{flag}/--no-{flag[2:]}", field.name], dict(default=default, help=help_text)
    if typing.get_origin(tp) is tuple:
        return [flag, field.name], dict(
            multiple=True,
            type=typing.get_args(tp)[0],
            default=default,
            help=help_text + " (repeatable)",
        )
    return [flag, field.name], dict(type=tp, default=default, help=help_text)


def config_options(
    *names: str, defaults: Mapping[str, Any] | None = None, notes: Mapping[str, str] | None = None
):
    """Decorates a click command's function with one option per Config field.

    Args:
        names: the fields to add (default: every field), in `--help` order.
        defaults: a command's own default for some fields (e.g. evaluate's
            greedy `sampler`), applied as if given and shown in `--help`.
        notes: `--help`'s bracket for some fields, instead of the dataclass
            default (e.g. "default: the preset recorded with --adapter").
    """
    fields = {f.name: f for f in dataclasses.fields(Config)}
    defaults, notes = dict(defaults or {}), dict(notes or {})
    unknown = sorted((set(names) | set(defaults) | set(notes)) - set(fields))
    if unknown:
        raise ValueError(f"Not Config fields: {unknown}")
    types, docs = field_types(), field_docs()

    def decorate(function):
        for name in reversed(names or tuple(fields)):  # click lists options bottom-up
            declarations, attributes = _option_for(
                fields[name], types[name], docs.get(name, ""), defaults.get(name), notes.get(name)
            )
            function = click.option(*declarations, **attributes)(function)
        return function

    return decorate


def config_file(help_text: str = "Experiment YAML file; flags override its keys."):
    """The `--config` option of every command (a plain string, so that
    `load_config` names a bad path)."""
    return click.option("--config", "config_path", default=None, help=help_text)


def overrides_from_flags(values: dict) -> dict:
    """Keeps only the flags that were given (None/() mean not given)."""
    return {k: v for k, v in values.items() if v is not None and v != ()}
