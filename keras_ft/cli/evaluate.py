"""`keras-ft evaluate`: base vs tuned on held-out data, written as a report."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
import click

from keras_ft.cli import errors as cli_errors
from keras_ft.cli.flags import ADAPTER_HELP, config_file, config_options, overrides_from_flags
from keras_ft.config import load_config
from keras_ft.evaluation.heldout import load_heldout
from keras_ft.evaluation.report import write_report
from keras_ft.evaluation.runs import adapter_defaults, load_run_config, resolve_run
from keras_ft.evaluation.scoring import CHECKS, compare_base_and_tuned
from keras_ft.model.lora import read_adapter

log = logging.getLogger(__name__)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--adapter", required=True, help=ADAPTER_HELP)
@config_file("Experiment YAML (when the adapter is not in a run directory).")
@config_options(
    "preset",
    "validation_data",
    "fields",
    "template",
    "sequence_length",
    "sampler",
    "top_k",
    "top_p",
    "temperature",
    "max_new_tokens",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "mesh",
    defaults={"sampler": "greedy"},
)
@click.option(
    "--skip-examples",
    type=int,
    default=0,
    show_default=True,
    help="Skip this many usable examples of --validation-data first.",
)
@click.option(
    "--eval-examples",
    type=int,
    default=200,
    show_default=True,
    help="Held-out examples for loss (0 = all).",
)
@click.option(
    "--num-generate",
    type=int,
    default=32,
    show_default=True,
    help="Of those, how many to generate for.",
)
@click.option(
    "--eval-batch-size",
    type=int,
    default=8,
    show_default=True,
    help="Held-out examples per batch, for loss and generation.",
)
@click.option(
    "--checks",
    default="length",
    show_default=True,
    help=f"Comma-separated task checks: {', '.join(CHECKS)}.",
)
@click.option("--latency/--no-latency", default=True, show_default=True)
@click.option(
    "--report-dir", default=None, help="Report directory (default: <run>/eval, or eval_report)."
)
@cli_errors.reported
def main(
    adapter,
    config_path,
    skip_examples,
    eval_examples,
    num_generate,
    eval_batch_size,
    checks,
    latency,
    report_dir,
    **flags,
):
    """Compare a base preset and its LoRA-tuned version on held-out data.

    Settings not given come from the adapter's run (its config.json), or
    --config, or the adapter's record. Held-out data: --validation-data,
    else the run's validation split. Generation is greedy unless --sampler.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    names = tuple(c.strip() for c in checks.split(",") if c.strip())
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise click.UsageError(
            f"Unknown check(s) {unknown}; choose from {list(CHECKS)}. Received: --checks {checks}"
        )
    if num_generate < 1 or eval_batch_size < 1 or eval_examples < 0 or skip_examples < 0:
        raise click.UsageError(
            "--num-generate and --eval-batch-size must be positive, --eval-examples and "
            f"--skip-examples non-negative. Received: --num-generate {num_generate} "
            f"--eval-batch-size {eval_batch_size} --eval-examples {eval_examples} "
            f"--skip-examples {skip_examples}"
        )
    read_adapter(adapter)  # a missing adapter is said before any data or model loads
    run_dir, run_cfg = resolve_run(adapter)
    overrides = overrides_from_flags(flags)
    if not run_dir and not config_path:  # a bare adapter file: its own record
        overrides = {**adapter_defaults(adapter), **overrides}
    with cli_errors.usage_errors():  # a flag or YAML value that does not validate
        cfg = (
            load_run_config(run_cfg, overrides)
            if run_dir and not config_path
            else load_config(config_path, overrides)
        )
    heldout = load_heldout(cfg, flags["validation_data"], skip_examples, eval_examples, run_cfg)
    results = compare_base_and_tuned(
        cfg, adapter, heldout, names, num_generate, eval_batch_size, latency
    )
    results["setup"]["command"] = command_line(sys.argv)
    out = Path(report_dir or (run_dir / "eval" if run_dir else "eval_report"))
    for path in write_report(results, out):
        click.echo(path)


def command_line(argv: list[str]) -> str:
    """The command that ran, as `python -m keras_ft evaluate ARGS` (quoted).

    `argv` is `sys.argv`: `[__main__.py, "evaluate", ...]` from
    `python -m keras_ft`, `[keras-ft, "evaluate", ...]` from the script.
    """
    args = list(argv[1:])
    if args[:1] == ["evaluate"]:
        args = args[1:]
    return shlex.join(["python", "-m", "keras_ft", "evaluate", *args])


if __name__ == "__main__":
    main()
