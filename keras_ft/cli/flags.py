"""Click options generated from `Config`: one flag per field, one meaning.

Every Config field has a flag (`lora_rank` <-> `--lora-rank`), generated from
the dataclass; flags default to None so only the ones given override.
"""

from __future__ import annotations

import dataclasses
import os
import typing

os.environ.setdefault("KERAS_BACKEND", "jax")
import click

from keras_ft.config import Config, field_docs, field_types


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option_for(field: dataclasses.Field, tp, doc: str) -> click.Option:
    default = field.default
    shown = ", ".join(map(str, default)) if isinstance(default, tuple) else default
    help_text = f"{doc} [default: {shown!r}]" if doc else f"[default: {shown!r}]"
    if tp is bool:
        flag = _flag_name(field.name)
        return click.Option([f"{flag}/--no-{flag[2:]}", field.name], default=None,
                            help=help_text)
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        return click.Option([_flag_name(field.name), field.name], multiple=True,
                            type=item, default=None, help=help_text + " (repeatable)")
    return click.Option([_flag_name(field.name), field.name], type=tp, default=None,
                        help=help_text)


def config_options(command):
    """Adds one click option per Config field to `command`."""
    types, docs = field_types(), field_docs()
    for field in dataclasses.fields(Config):
        command.params.append(_option_for(field, types[field.name], docs.get(field.name, "")))
    return command


def overrides_from_flags(values: dict) -> dict:
    """Keeps only the flags that were given (None/() mean not given)."""
    return {k: v for k, v in values.items() if v is not None and v != ()}
