"""`keras-ft convert gguf FILE.gguf OUT_DIR`: a GGUF file -> a keras-hub preset."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from keras_ft.cli import errors as cli_errors
from keras_ft.gguf.convert import convert_gguf


@click.group()
def main() -> None:
    """Convert checkpoints into keras-hub preset directories."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@main.command("gguf", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("gguf_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--outtype",
    type=click.Choice(["float32", "bfloat16", "float16"]),
    default="float32",
    show_default=True,
    help="Dtype of the preset's saved weights.",
)
@click.option("--replace", is_flag=True, help="Replace an existing OUT_DIR.")
@cli_errors.reported
def gguf_command(gguf_path: Path, out_dir: Path, outtype: str, replace: bool) -> None:
    """Convert GGUF_PATH (a llama.cpp checkpoint) into the preset OUT_DIR.

    `general.architecture` gemma, gemma2, gemma3 (text) and llama (Llama 3)
    convert; others are refused, naming it.
    """
    try:
        convert_gguf(gguf_path, out_dir, dtype=outtype, overwrite=replace)
    except FileExistsError:
        raise click.UsageError(f"OUT_DIR {out_dir} exists; pass --replace to replace it.") from None
    click.echo(str(out_dir))


if __name__ == "__main__":
    main()
