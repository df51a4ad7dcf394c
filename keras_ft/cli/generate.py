"""`keras-ft generate`: sampled replies to prompts from a preset (+ adapter)."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("KERAS_BACKEND", "jax")
import click

from keras_ft.cli import errors as cli_errors
from keras_ft.generation.generate import generate

log = logging.getLogger(__name__)


@click.command()
@click.option("--preset", default=None, help="Base preset (default: the config's).")
@click.option("--adapter", default=None, help="A .lora.h5 file or a run directory.")
@click.option("--config", "config_path", default=None, help="Experiment YAML file.")
@click.option("--template", default=None, help="Template name or format string.")
@click.option("--sampler", default=None)
@click.option("--max-new-tokens", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.argument("prompt", nargs=-1, required=True)
@cli_errors.reported
def main(preset, adapter, config_path, template, sampler, max_new_tokens, seed, prompt):
    """Generate replies to PROMPT from a preset plus an optional LoRA adapter."""
    from keras_ft.config import load_config
    from keras_ft.model.causal_lm import load_causal_lm
    from keras_ft.model.lora import load_adapter, read_adapter
    from keras_ft.model.presets import resolve_preset

    overrides = dict(preset=preset, template=template, sampler=sampler,
                     max_new_tokens=max_new_tokens, seed=seed)
    with cli_errors.usage_errors():
        cfg = load_config(config_path, overrides)
    if adapter:
        read_adapter(adapter)  # a missing adapter is said before the model loads
    causal_lm = load_causal_lm(resolve_preset(cfg.preset))
    if adapter:
        meta = load_adapter(causal_lm, adapter)
        if template is None and meta.get("template"):
            with cli_errors.usage_errors():
                cfg = load_config(config_path, {**overrides, "template": meta["template"]})
    for reply in generate(causal_lm, [" ".join(prompt)], cfg):
        click.echo(reply)


if __name__ == "__main__":
    main()
