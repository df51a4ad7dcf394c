"""`keras-ft run` / `python -m keras_ft.run`: flags -> Config -> finetune()."""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import click

from keras_ft.cli import errors as cli_errors
from keras_ft.cli.flags import config_file, config_options, overrides_from_flags
from keras_ft.config import load_config
from keras_ft.model.presets import PresetUnavailableError
from keras_ft.pipeline import finetune


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_file()
@config_options()
@cli_errors.reported
def main(config_path, **flags):
    """Fine-tune a causal LM with LoRA (default: the embedded Gemma 3 270M)."""
    # keras_ft's INFO lines; other libraries' warnings only (JAX logs its failed
    # accelerator probes, e.g. "Unable to initialize backend 'tpu'", as INFO).
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    logging.getLogger("keras_ft").setLevel(logging.INFO)
    with cli_errors.usage_errors():
        cfg = load_config(config_path, overrides_from_flags(flags))
    try:
        result = finetune(cfg)
    except (PresetUnavailableError, ValueError, FileNotFoundError) as e:
        raise cli_errors.to_click(e) from None  # not the disk message below
    except OSError as e:  # a disk that fills or turns read-only mid-run
        where = f": {e.filename}" if e.filename else ""
        raise click.ClickException(
            f"{e.strerror or e}{where}. Check the disk and the permissions of "
            f"--output-dir ({cfg.output_dir}) and --tokenized-cache-dir "
            f"({cfg.tokenized_cache_dir or 'off'})."
        ) from None
    click.echo(f"Run directory: {result.run_dir}")


if __name__ == "__main__":
    main()
