"""Export commands: turn a preset (+ LoRA adapter) into other formats.

    python -m keras_ft export gguf --preset P [--adapter X.lora.h5] OUT.gguf --outtype f16
    python -m keras_ft export gguf --adapter RUN_DIR OUT.gguf   # the run's preset
    python -m keras_ft export preset --adapter RUN_DIR OUT_DIR  # merged keras-hub preset
    python -m keras_ft export hf --adapter RUN_DIR OUT_DIR      # transformers safetensors
    python -m keras_ft export hf --preset P BASE_DIR            # the base, for a PEFT adapter
    python -m keras_ft export peft --adapter RUN_DIR OUT_DIR    # PEFT LoRA adapter

A QLoRA adapter is merged into the FLOAT base weights (`keras_ft.export.source`);
the command says so on stderr. Every export directory carries a README.md
model card (`keras_ft.export.card`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from keras_ft.cli import errors as cli_errors
from keras_ft.cli.flags import config_options
from keras_ft.export.gguf import GGUF_TYPES, export_preset_gguf
from keras_ft.export.hf import export_preset_hf
from keras_ft.export.merged import export_preset_merged
from keras_ft.export.peft import export_preset_peft
from keras_ft.export.source import export_preset


@click.group()
def main() -> None:
    """Export fine-tuned models."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@main.command("gguf", context_settings={"help_option_names": ["-h", "--help"]})
@config_options("preset", notes={"preset": "default: the preset recorded with --adapter"})
@click.option(
    "--adapter",
    type=click.Path(exists=True, path_type=Path),
    help="LoRA adapter (.lora.h5 or run directory) to merge into the weights.",
)
@click.argument("out_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--outtype",
    type=click.Choice(GGUF_TYPES),
    default="f16",
    show_default=True,
    help="Type of the GGUF's weight matrices (as llama.cpp's convert_hf_to_gguf.py).",
)
@click.option(
    "--chat-template",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File with a Jinja chat template (default: the keras_ft template recorded "
    "with --adapter, as Jinja; without one, Gemma's turn template).",
)
@cli_errors.reported
def gguf_command(
    preset: str | None,
    adapter: Path | None,
    out_path: Path,
    outtype: str,
    chat_template: Path | None,
) -> None:
    """Write PRESET (+ ADAPTER, merged) as a llama.cpp GGUF file OUT_PATH.

    A QLoRA adapter is merged into the float base weights (said on stderr).
    """
    with cli_errors.usage_errors():
        preset, note = export_preset(preset, adapter)
    if note:
        click.echo(note, err=True)
    template = _read_chat_template(chat_template) if chat_template else None
    export_preset_gguf(preset, out_path, adapter=adapter, dtype=outtype, chat_template=template)
    click.echo(str(out_path))


def _read_chat_template(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise click.UsageError(
            f"--chat-template {path} is not UTF-8 text ({e}); save the Jinja template as UTF-8."
        ) from None


def _directory_export(
    name: str, help_text: str, adapter_help: str, function, adapter_required: bool = False
):
    """`keras-ft export NAME [--preset P] [--adapter A] OUT_DIR` calling
    `function(preset, out_dir, adapter=adapter)`."""

    @main.command(name, help=help_text, context_settings={"help_option_names": ["-h", "--help"]})
    @config_options("preset", notes={"preset": "default: the preset recorded with --adapter"})
    @click.option(
        "--adapter",
        type=click.Path(exists=True, path_type=Path),
        required=adapter_required,
        help=adapter_help,
    )
    @click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
    @cli_errors.reported
    def command(preset: str | None, adapter: Path | None, out_dir: Path) -> None:
        with cli_errors.usage_errors():
            _, note = export_preset(preset, adapter)  # a bad --adapter/--preset: exit 2
        if note:
            click.echo(note, err=True)
        function(preset, out_dir, adapter=adapter)
        click.echo(str(out_dir))

    return command


preset_command = _directory_export(
    "preset",
    "Write PRESET + ADAPTER, merged, as a keras-hub preset OUT_DIR that "
    "keras_hub.models.CausalLM.from_preset loads without keras_ft (with the "
    "tokenizer, the trained template and a README.md model card).",
    "LoRA adapter (.lora.h5 or run directory) to merge into the weights.",
    export_preset_merged,
)
hf_command = _directory_export(
    "hf",
    "Write PRESET (+ ADAPTER, merged) as Hugging Face transformers safetensors "
    "OUT_DIR (keras-hub's exporter; the trained template as chat_template, its stop "
    "tokens as eos, a README.md model card).",
    "LoRA adapter (.lora.h5 or run directory) to merge into the weights; without "
    "one, the base model (the base a `peft` export applies to).",
    export_preset_hf,
)
peft_command = _directory_export(
    "peft",
    "Write ADAPTER as a PEFT LoRA adapter OUT_DIR for the base exported by "
    "`export hf --preset PRESET` (PeftModel.from_pretrained(base, OUT_DIR)).",
    "LoRA adapter (.lora.h5 or run directory) to convert.",
    export_preset_peft,
    adapter_required=True,
)


if __name__ == "__main__":
    main()
