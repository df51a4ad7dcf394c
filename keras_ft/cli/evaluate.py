"""`keras-ft evaluate`: base vs tuned on held-out data, written as a report."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
import click

from keras_ft.cli import errors as cli_errors
from keras_ft.config import load_config
from keras_ft.evaluation.heldout import load_heldout
from keras_ft.evaluation.runs import adapter_defaults, load_run_config, resolve_run
from keras_ft.evaluation.scoring import CHECKS, compare_base_and_tuned

log = logging.getLogger(__name__)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--adapter", required=True, help="A .lora.h5 file or a run directory.")
@click.option("--preset", default=None, help="Base preset (default: the run's).")
@click.option("--data", default=None, help="Held-out data file or spec "
              "(default: the run's validation split).")
@click.option("--skip-examples", type=int, default=0, show_default=True,
              help="Skip this many usable examples of --data first.")
@click.option("--num-examples", type=int, default=200, show_default=True,
              help="Held-out examples for loss (0 = all).")
@click.option("--num-generate", type=int, default=32, show_default=True,
              help="Of those, how many to generate for.")
@click.option("--checks", default="length", show_default=True,
              help=f"Comma-separated task checks: {', '.join(CHECKS)}.")
@click.option("--config", "config_path", default=None,
              help="Experiment YAML (when the adapter is not in a run directory).")
@click.option("--template", default=None)
@click.option("--fields", default=None)
@click.option("--sequence-length", type=int, default=None)
@click.option("--max-new-tokens", type=int, default=None)
@click.option("--sampler", default="greedy", show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--latency/--no-latency", default=True, show_default=True)
@click.option("--output-dir", default=None, help="Report directory "
              "(default: <run>/eval, or eval_report).")
@cli_errors.reported
def main(adapter, preset, data, skip_examples, num_examples, num_generate, checks,
         config_path, template, fields, sequence_length, max_new_tokens, sampler,
         batch_size, latency, output_dir):
    """Compare a base preset and its LoRA-tuned version on held-out data."""
    from keras_ft.evaluation.report import write_report

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    names = tuple(c.strip() for c in checks.split(",") if c.strip())
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise click.UsageError(f"Unknown check(s) {unknown}; choose from {list(CHECKS)}. "
                               f"Received: --checks {checks}")
    if num_generate < 1 or batch_size < 1 or num_examples < 0 or skip_examples < 0:
        raise click.UsageError(
            "--num-generate and --batch-size must be positive, --num-examples and "
            f"--skip-examples non-negative. Received: --num-generate {num_generate} "
            f"--batch-size {batch_size} --num-examples {num_examples} "
            f"--skip-examples {skip_examples}")
    from keras_ft.model.lora import read_adapter

    read_adapter(adapter)  # a missing adapter is said before any data or model loads
    run_dir, run_cfg = resolve_run(adapter)
    overrides = {"preset": preset, "template": template, "fields": fields,
                 "sequence_length": sequence_length, "max_new_tokens": max_new_tokens,
                 "sampler": sampler}
    if not run_dir and not config_path:  # a bare adapter file: its own record
        overrides = {**adapter_defaults(adapter),
                     **{k: v for k, v in overrides.items() if v is not None}}
    with cli_errors.usage_errors():  # a flag or YAML value that does not validate
        cfg = (load_run_config(run_cfg, overrides)
               if run_dir and not config_path else load_config(config_path, overrides))
    heldout = load_heldout(cfg, data, skip_examples, num_examples, run_cfg)
    results = compare_base_and_tuned(cfg, adapter, heldout, names, num_generate,
                                     batch_size, latency)
    results["setup"]["command"] = "python -m keras_ft evaluate " + " ".join(sys.argv[1:])
    out = Path(output_dir or (run_dir / "eval" if run_dir else "eval_report"))
    for path in write_report(results, out):
        click.echo(path)


if __name__ == "__main__":
    main()
