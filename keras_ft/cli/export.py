"""Export commands: turn a preset (+ LoRA adapter) into other formats.

    python -m keras_ft export gguf --preset P [--adapter X.lora.h5] OUT.gguf --outtype f16
    python -m keras_ft export gguf --adapter RUN_DIR OUT.gguf   # the run's preset

A QLoRA adapter (trained on a quantized base) is merged into the FLOAT base
weights: GGUF stores float (or its own q8_0) matrices, not Keras' int8/int4
kernels, so the exported model is float base + LoRA, not the quantized base
it was trained on. The command says so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from keras_ft.cli import errors as cli_errors
from keras_ft.cli.flags import config_options
from keras_ft.export.gguf import export_gguf
from keras_ft.model.causal_lm import load_causal_lm
from keras_ft.model.lora import ADAPTER_CONFIG_FILE, read_adapter, recorded_template
from keras_ft.model.presets import resolve_preset

_GGUF_DTYPES = ["f32", "f16", "bf16", "q8_0"]


def export_preset(preset: str | None, adapter: Path | None) -> tuple[str, str]:
    """(preset to load, note on the base) for an export: `preset`, else the
    one recorded with `adapter`. The note says when a QLoRA adapter is
    merged into the float base instead of the quantized one it was trained on."""
    meta = {}
    if adapter is not None:
        try:
            adapter_file, meta = read_adapter(adapter)
        except FileNotFoundError as e:
            raise click.UsageError(f"--adapter {adapter}: {e}") from None
    preset = preset or meta.get("preset")
    if not preset:
        where = (f"{adapter_file.parent / ADAPTER_CONFIG_FILE} records none"
                 if adapter is not None else "no --adapter given")
        raise click.UsageError(f"Pass --preset: {where}.")
    note = ""
    if meta.get("quantize"):
        note = (f"The adapter was trained on {meta.get('preset', preset)} quantized "
                f"{meta['quantize']} (QLoRA); it is merged into the FLOAT base "
                f"{preset}, not the quantized base it was trained on.")
    return preset, note


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
@click.option("--outtype", type=click.Choice(_GGUF_DTYPES), default="f16", show_default=True,
              help="Type of the GGUF's weight matrices (as llama.cpp's convert_hf_to_gguf.py).")
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
    preset, note = export_preset(preset, adapter)
    if note:
        click.echo(note, err=True)
    template = _read_chat_template(chat_template) if chat_template else None
    # float base: a QLoRA adapter is merged into float weights, not quantized again
    causal_lm = load_causal_lm(resolve_preset(preset), adapter=adapter, quantize=False)
    export_gguf(causal_lm, out_path, dtype=outtype, chat_template=template,
                template=recorded_template(adapter))
    click.echo(str(out_path))


def _read_chat_template(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise click.UsageError(f"--chat-template {path} is not UTF-8 text ({e}); save the "
                               "Jinja template as UTF-8.") from None


if __name__ == "__main__":
    main()
