"""`keras-ft data stats --data ...`: what is in the data."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from keras_ft.config import load_config

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m keras_ft data stats --data FILE ...`: print and plot stats."""
    from keras_ft.data import stats

    # allow_abbrev=False: a misspelt `--data-weight` is refused, not taken as another flag
    parser = argparse.ArgumentParser(prog="keras-ft data", allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("stats", allow_abbrev=False, help="counts, token lengths, "
                              "labels, duplicates and rendered examples of the data")
    cmd.add_argument("--config", help="experiment YAML; flags override it")
    cmd.add_argument("--data", action="append", help="data spec; repeatable")
    cmd.add_argument("--data-weights", type=float, action="append")
    for flag in ("--fields", "--template", "--preset"):
        cmd.add_argument(flag)
    for flag in ("--sequence-length", "--num-examples", "--seed"):
        cmd.add_argument(flag, type=int)
    for flag in ("--skip-bad-records", "--drop-with-context"):
        cmd.add_argument(flag, action="store_true", default=None)
    cmd.add_argument("--no-tokens", action="store_true",
                     help="skip tokenization (no preset needed)")
    cmd.add_argument("--plot", default="data_stats.png", help="PNG to write ('' = none)")
    cmd.add_argument("--show", type=int, default=3, help="rendered examples to print")
    args = parser.parse_args(argv)
    if args.show < 0:
        parser.error(f"argument --show: must be non-negative. Received: --show {args.show}")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        parser.error(f"argument --plot: must name a .png file ('' = no plot). "
                     f"Received: --plot {args.plot}")
    if args.plot and Path(args.plot).is_dir():
        parser.error(f"argument --plot: {args.plot} is a directory; name a .png file.")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    names = ("data", "data_weights", "fields", "template", "preset", "sequence_length",
             "num_examples", "seed", "skip_bad_records", "drop_with_context")
    overrides = {name: getattr(args, name) for name in names}
    try:
        cfg = load_config(args.config, overrides)
        if args.plot:  # before reading the data: a plot path that cannot be written
            from keras_ft.train.rundir import check_writable_file

            check_writable_file(args.plot, "--plot")
        result = stats.collect_stats(cfg, use_tokenizer=not args.no_tokens,
                                     num_rendered=args.show)
    except ValueError as e:  # DataError included: file, line and field
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(stats.format_stats(result))
    if args.plot:
        try:
            print(f"plot: {stats.plot_stats(result, args.plot)}")
        except OSError as e:
            print(f"error: could not write the plot --plot {args.plot}: "
                  f"{e.strerror or e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
