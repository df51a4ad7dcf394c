"""`keras-ft plan`: the memory plan of a run, and where it fits, loading no weights."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
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
    config = memory.backbone_config(cfg.preset)
    present = memory.present_devices()
    data, model, reason = memory.resolve_mesh(cfg, config, present)
    plan = memory.plan_for_config(cfg, config, (data, model), present)
    click.echo(f"Preset {cfg.preset}: {config['class_name']}, "
               f"{plan.num_params / 1e6:,.0f} M parameters")
    click.echo(f"Mesh {data}x{model}: {reason}")
    click.echo(memory.format_plan(plan))
    click.echo("Fits:")
    devices = [present] + ([] if present.platform == "cpu" else [memory.this_cpu()])
    for device in devices + list(memory.NAMED_DEVICES):
        click.echo(f"  {memory.fits(plan, device, config)}")


if __name__ == "__main__":
    main()
