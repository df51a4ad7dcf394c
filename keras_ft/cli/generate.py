"""`keras-ft generate`: sampled replies to prompts from a preset (+ adapter)."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("KERAS_BACKEND", "jax")
import click

from keras_ft.cli import errors as cli_errors
from keras_ft.cli.flags import ADAPTER_HELP, config_file, config_options, overrides_from_flags
from keras_ft.config import SAMPLER_FIELDS, load_config
from keras_ft.distribution import placed
from keras_ft.generation.generate import generate
from keras_ft.model.causal_lm import load_causal_lm
from keras_ft.model.lora import read_adapter
from keras_ft.model.presets import resolve_preset

log = logging.getLogger(__name__)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--adapter", default=None, help=ADAPTER_HELP)
@config_file()
@config_options("preset", "template", *SAMPLER_FIELDS, "mesh")
@click.argument("prompt", nargs=-1, required=True)
@cli_errors.reported
def main(adapter, config_path, prompt, **flags):
    """Generate replies to PROMPT from a preset plus an optional LoRA adapter.

    Without --template, the template the adapter was trained with is used.
    """
    overrides = overrides_from_flags(flags)
    with cli_errors.usage_errors():
        cfg = load_config(config_path, overrides)
    if adapter:  # a missing adapter is said before the model loads
        recorded = read_adapter(adapter)[1].get("template")
        if "template" not in overrides and recorded:
            with cli_errors.usage_errors():
                cfg = load_config(config_path, {**overrides, "template": recorded})
    preset = resolve_preset(cfg.preset)
    with placed(cfg, preset):  # `--mesh`: one device unless asked
        causal_lm = load_causal_lm(preset, adapter=adapter or None)
        replies = generate(causal_lm, [" ".join(prompt)], cfg)
    for reply in replies:
        click.echo(reply)


if __name__ == "__main__":
    main()
