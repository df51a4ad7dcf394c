"""Export commands: turn a preset (+ LoRA adapter) into other formats.

    python -m keras_ft.export gguf --preset P [--adapter X.lora.h5] OUT.gguf --dtype f16
"""

import logging
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import click  # noqa: E402

_GGUF_DTYPES = ["f32", "f16", "bf16", "q8_0"]


def load_causal_lm(preset: str, adapter: Path | None = None):
    """Loads a causal LM preset and, if given, its LoRA adapter.

    Args:
        preset: A keras-hub preset name or directory, or `EMBEDDED_PRESET`.
        adapter: A `.lora.h5` file written by `backbone.save_lora_weights`.

    Returns:
        The `keras_hub.models.CausalLM`, LoRA-enabled when `adapter` is given.

    Raises:
        ValueError: If `adapter` does not end in `.lora.h5`.
    """
    import keras_hub

    from keras_ft.default_model import resolve_embedded

    if adapter is not None and not str(adapter).endswith(".lora.h5"):
        raise ValueError(f"The adapter must end in `.lora.h5`. Received: adapter={adapter}")
    causal_lm = keras_hub.models.CausalLM.from_preset(resolve_embedded(preset))
    if adapter is not None:
        causal_lm.backbone.load_lora_weights(str(adapter))
    return causal_lm


@click.group()
def main() -> None:
    """Export fine-tuned models."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@main.command("gguf")
@click.option("--preset", required=True, help="Preset name or directory, or embedded:gemma3_270m.")
@click.option(
    "--adapter",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="LoRA adapter (.lora.h5) to merge into the weights.",
)
@click.argument("out_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dtype", type=click.Choice(_GGUF_DTYPES), default="f16", show_default=True)
@click.option(
    "--chat-template",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File with a Jinja chat template (default: Gemma's turn template).",
)
def gguf_command(
    preset: str, adapter: Path | None, out_path: Path, dtype: str, chat_template: Path | None
) -> None:
    """Write PRESET (+ ADAPTER, merged) as a llama.cpp GGUF file OUT_PATH."""
    from keras_ft.gguf_export import export_gguf

    causal_lm = load_causal_lm(preset, adapter)
    template = chat_template.read_text() if chat_template else None
    export_gguf(causal_lm, out_path, dtype=dtype, chat_template=template)
    click.echo(str(out_path))


if __name__ == "__main__":
    main()
