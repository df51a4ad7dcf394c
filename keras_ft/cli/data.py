"""`keras-ft data stats|split --data ...`: what is in the data, and its split."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from keras_ft.cli import errors as cli_errors
from keras_ft.cli.flags import config_file, config_options, overrides_from_flags
from keras_ft.config import load_config
from keras_ft.data import stats
from keras_ft.data.split import write_split
from keras_ft.data.tokenizer import TextTokenizer
from keras_ft.model.presets import PresetUnavailableError, resolve_preset
from keras_ft.train.rundir import check_writable_file


class _Group(click.Group):
    """A flag before the command (`keras-ft data --data x`) says to name it."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            e.message = (
                f"{e.message.rstrip('.')}; name the command first: "
                f"{ctx.command_path} stats {e.option_name} ..."
            )
            raise


@click.group(
    cls=_Group, no_args_is_help=False, context_settings={"help_option_names": ["-h", "--help"]}
)
def main() -> None:
    """What is in the data, before training."""


@main.command("stats", context_settings={"help_option_names": ["-h", "--help"]})
@config_file()
@config_options(
    "data",
    "data_weights",
    "fields",
    "skip_bad_records",
    "drop_with_context",
    "keep_matching",
    "num_examples",
    "seed",
    "template",
    "completion_only_loss",
    "preset",
    "sequence_length",
)
@click.option("--no-tokens", is_flag=True, help="Skip tokenization (no preset needed).")
@click.option(
    "--plot", default="data_stats.png", show_default=True, help="PNG to write ('' = none)."
)
@click.option("--show", type=int, default=3, show_default=True, help="Rendered examples to print.")
@cli_errors.reported
def stats_command(config_path, no_tokens, plot, show, **flags):
    """Counts, token lengths, labels, duplicates and rendered examples of the data."""
    if show < 0:
        raise click.UsageError(f"argument --show: must be non-negative. Received: --show {show}")
    if plot and Path(plot).suffix.lower() != ".png":
        raise click.UsageError(
            f"argument --plot: must name a .png file ('' = no plot). Received: --plot {plot}"
        )
    if plot and Path(plot).is_dir():
        raise click.UsageError(f"argument --plot: {plot} is a directory; name a .png file.")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with cli_errors.usage_errors():  # a bad flag or YAML value, or data: file, line, field
        cfg = load_config(config_path, overrides_from_flags(flags))
        if plot:  # before reading the data: a plot path that cannot be written
            check_writable_file(plot, "--plot")
        tokenizer = None if no_tokens else _tokenizer(cfg.preset)
        result = stats.collect_stats(cfg, tokenizer, num_rendered=show)
    click.echo(stats.format_stats(result))
    if plot:
        try:
            click.echo(f"plot: {stats.plot_stats(result, plot)}")
        except OSError as e:
            raise click.ClickException(
                f"could not write the plot --plot {plot}: {e.strerror or e}"
            ) from None


def _tokenizer(preset: str) -> TextTokenizer:
    """`preset`'s tokenizer, as training loads it; else a ValueError saying what to pass."""
    try:
        return TextTokenizer.from_preset(resolve_preset(preset))
    except (ImportError, OSError, ValueError, PresetUnavailableError) as e:
        raise ValueError(
            f"Could not load the tokenizer of preset {preset!r} ({type(e).__name__}: "
            f"{e}). Pass --preset with a local preset directory or a reachable "
            "preset, or --no-tokens to skip the token statistics."
        ) from None


@main.command("split", context_settings={"help_option_names": ["-h", "--help"]})
@config_file()
@config_options(
    "data",
    "data_weights",
    "validation_data",
    "validation_fraction",
    "fields",
    "skip_bad_records",
    "drop_with_context",
    "keep_matching",
    "num_examples",
    "shuffle",
    "seed",
)
@click.option(
    "--split-dir",
    required=True,
    help="Writes train.jsonl and validation.jsonl here (not a run's --output-dir).",
)
@cli_errors.reported
def split_command(config_path, split_dir, **flags):
    """Writes the run's train/validation split as two JSONL files.

    They hold exactly what training and validation read (filters,
    --num-examples, seeded shuffle, split), so a learning-rate search can
    split train.jsonl again and never touch validation.jsonl.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with cli_errors.usage_errors():
        cfg = load_config(config_path, overrides_from_flags(flags))
        result = write_split(cfg, split_dir)
    click.echo(
        f"wrote {result['num_train']} training examples to {result['train']} and "
        f"{result['num_validation']} validation examples to {result['validation']}"
    )


if __name__ == "__main__":
    main()
