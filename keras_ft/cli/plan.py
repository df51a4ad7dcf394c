"""`keras-ft plan`: the memory plan of a run, and where it fits, loading no weights."""

from __future__ import annotations

import click

from keras_ft.cli import errors as cli_errors
from keras_ft.cli.flags import config_file, config_options, overrides_from_flags
from keras_ft.config import load_config
from keras_ft.distribution import memory


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_file()
@config_options()
@cli_errors.reported
def main(config_path, **flags):
    """Estimate a run's memory per device (weights, LoRA and AdamW state,
    activations, the loss chunk) from the preset's config.json alone, and say
    whether it fits the devices present and a T4, TPU v3-8 / v5e-8, A100,
    H100 and this CPU's RAM; when it does not, the cheapest change that does."""
    with cli_errors.usage_errors():
        cfg = load_config(config_path, overrides_from_flags(flags))
    click.echo(str(memory.plan_run(cfg)))


if __name__ == "__main__":
    main()
