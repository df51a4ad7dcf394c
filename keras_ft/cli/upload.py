"""Upload commands: an export directory to Kaggle Models or the Hugging Face Hub.

    python -m keras_ft upload kaggle OUT_DIR --handle owner/model/keras/variant
    python -m keras_ft upload hf OUT_DIR --repo owner/name

Credentials are checked first, then that the host answers (a few seconds);
either failing stops the command with what to do, before anything is sent.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from keras_ft.cli import errors as cli_errors
from keras_ft.export.upload import upload_hf, upload_kaggle

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group()
def main() -> None:
    """Upload exported models."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@main.command("kaggle", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("directory", type=_DIR)
@click.option(
    "--handle",
    required=True,
    help="owner/model/framework/variation, e.g. me/gemma-steps/keras/2b.",
)
@click.option("--license", "license_name", help="License of a new model (kagglehub's names).")
@click.option("--notes", default="", help="Version notes.")
@cli_errors.reported
def kaggle_command(directory: Path, handle: str, license_name: str | None, notes: str) -> None:
    """Upload DIRECTORY (an export) as a Kaggle model variation (kagglehub.model_upload).

    Needs KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json.
    """
    click.echo(upload_kaggle(directory, handle, license_name=license_name, version_notes=notes))


@main.command("hf", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("directory", type=_DIR)
@click.option("--repo", required=True, help="Hugging Face model repo, owner/name.")
@click.option("--token", default=None, help="Write token (default: HF_TOKEN or `hf auth login`).")
@click.option("--private", is_flag=True, help="Create the repo private.")
@cli_errors.reported
def hf_command(directory: Path, repo: str, token: str | None, private: bool) -> None:
    """Upload DIRECTORY (an export) to a Hugging Face model repo (HfApi.upload_folder).

    Needs HF_TOKEN, a stored `hf auth login`, or --token.
    """
    click.echo(upload_hf(directory, repo, token=token, private=private))


if __name__ == "__main__":
    main()
