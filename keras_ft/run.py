"""`python -m keras_ft.run`: CLI flags -> Config -> finetune(). Nothing else.

Every Config field has a flag (`lora_rank` <-> `--lora-rank`), generated from
the dataclass; flags default to None so only the ones given override.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import typing

os.environ.setdefault("KERAS_BACKEND", "jax")

import click

from keras_ft import cli_errors
from keras_ft.config import Config, field_docs, field_types, load_config


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


@config_options
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path",  # load_config names a missing/odd path
              default=None, help="Experiment YAML file; flags override its keys.")
@cli_errors.reported
def main(config_path, **flags):
    """Fine-tune a causal LM with LoRA (default: the embedded Gemma 3 270M)."""
    # keras_ft's INFO lines; other libraries' warnings only (JAX logs its failed
    # accelerator probes, e.g. "Unable to initialize backend 'tpu'", as INFO).
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    logging.getLogger("keras_ft").setLevel(logging.INFO)
    with cli_errors.usage_errors():
        cfg = load_config(config_path, overrides_from_flags(flags))
    from keras_ft.model import PresetUnavailableError
    from keras_ft.pipeline import finetune

    try:
        result = finetune(cfg)
    except (PresetUnavailableError, ValueError, FileNotFoundError) as e:
        raise cli_errors.to_click(e) from None  # not the disk message below
    except OSError as e:  # a disk that fills or turns read-only mid-run
        where = f": {e.filename}" if e.filename else ""
        raise click.ClickException(
            f"{e.strerror or e}{where}. Check the disk and the permissions of "
            f"--output-dir ({cfg.output_dir}) and --tokenized-cache-dir "
            f"({cfg.tokenized_cache_dir or 'off'}).") from None
    click.echo(f"Run directory: {result.run_dir}")


if __name__ == "__main__":
    main()
