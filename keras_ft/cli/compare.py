"""`keras-ft compare`: one experiment, several presets, one report."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
import click

from keras_ft.cli import errors as cli_errors
from keras_ft.cli.flags import config_file, config_options, overrides_from_flags
from keras_ft.config import load_config
from keras_ft.evaluation.compare import launch, plan_runs, run_worker
from keras_ft.evaluation.report import write_comparison
from keras_ft.evaluation.runs import load_run_config

log = logging.getLogger(__name__)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@config_file()
@click.option("--presets", default=None, help="Comma-separated presets to compare.")
@click.option(
    "--templates", default=None, help="Comma-separated template per preset (default: the config's)."
)
@click.option("--vary", default=None, help="Also vary one field: FIELD=V1,V2.")
@click.option("--timeout", type=float, default=None, help="Seconds per run.")
@click.option("--worker", default=None, hidden=True)
@config_options()
@cli_errors.reported
def main(config_path, presets, templates, vary, timeout, worker, **flags):
    """Run one experiment over several presets; write one table and plots."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if worker:
        run_worker(load_run_config(worker))
        return
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise click.UsageError(
            f"--timeout must be a positive number of seconds. Received: --timeout {timeout}"
        )
    overrides = overrides_from_flags(flags)
    if not _split(presets) or "preset" in overrides:
        raise click.UsageError("Pass the presets as --presets a,b (not --preset).")
    varied = None
    if vary:
        name, sep, values = vary.partition("=")
        if not sep or not values:
            raise click.UsageError(f"--vary must look like FIELD=V1,V2. Received: {vary}")
        varied = (name.strip().replace("-", "_"), [v.strip() for v in values.split(",")])
    try:
        cfg = load_config(config_path, overrides)
        out = Path(cfg.output_dir)
        runs = plan_runs(cfg, _split(presets), _split(templates), varied, out)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    records = [launch(run, timeout) for run in runs]
    command = "python -m keras_ft compare " + " ".join(sys.argv[1:])
    for path in write_comparison(records, out, command):
        click.echo(path)


def _split(text: str | None) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


if __name__ == "__main__":
    main()
